"""Repeated augmentation (Hoffer et al. 2020; Berman et al. 2019): each image k times an epoch,
each copy with its own augmentation, the epoch as long as without (DeiT, torchvision's recipe).

No library ships a sampler for it (timm's and DeiT's ``RASampler`` are training-script code, not
an installable API), so :func:`repeated_order` is written here, shared by the DataLoader path
(:class:`RepeatedAugmentationSampler`) and the fast path
(:class:`~classicnets.data.fast.DeviceLoader`), so both see the same order. An epoch's
permutation is drawn from ``seed`` and the epoch, every index is repeated k times in a row, the
list is padded by wrapping to a multiple of the world size and dealt round-robin to the ranks —
so with k <= world size the copies of an image go to k different ranks in the same step — and
each rank keeps the first ``ceil(n / world size)`` of its share: the epoch length of a sampler
without repeats. An epoch then sees about n / k distinct images, each k times.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

__all__ = ["RepeatedAugmentationSampler", "epoch_permutation", "repeated_order"]


def epoch_permutation(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> Tensor:
    """The epoch's order of ``n`` samples (the fast path's and the sampler's)."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def repeated_order(n: int, *, repeats: int, num_replicas: int, rank: int, seed: int,
                   epoch: int, shuffle: bool = True) -> Tensor:
    """Rank ``rank``'s indices for the epoch: ``ceil(n / num_replicas)`` of them."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is not in 0 .. {num_replicas - 1}")
    order = epoch_permutation(n, seed=seed, epoch=epoch, shuffle=shuffle)
    order = order.repeat_interleave(repeats)
    total = math.ceil(len(order) / num_replicas) * num_replicas
    if total > len(order):  # pad by wrapping, as DistributedSampler does
        order = torch.cat([order, order[: total - len(order)]])
    return order[rank::num_replicas][: math.ceil(n / num_replicas)]


class RepeatedAugmentationSampler(DistributedSampler):
    """A DataLoader sampler over ``len(dataset)`` indices, each ``repeats`` times an epoch,
    sharded over ``num_replicas`` ranks, the epoch length kept (:func:`repeated_order`).

    A :class:`~torch.utils.data.DistributedSampler` so that Lightning keeps it under DDP
    instead of wrapping it in a second distributed sampler, and calls :meth:`set_epoch`.
    """

    def __init__(self, dataset: object, *, repeats: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.repeats = int(repeats)
        self.num_samples = math.ceil(len(dataset) / num_replicas)  # type: ignore[arg-type]
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        order = repeated_order(len(self.dataset), repeats=self.repeats,  # type: ignore[arg-type]
                               num_replicas=self.num_replicas, rank=self.rank, seed=self.seed,
                               epoch=self.epoch, shuffle=self.shuffle)
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_samples

"""The fast data path: an in-memory dataset kept on the training device, batched there.

A 2-core host running per-image PIL/tensor transforms in DataLoader workers feeds a few
thousand small images per second; a GPU trains CIFAR networks ten times faster than that. Here
the whole uint8 dataset is one tensor on the device, an epoch is one permutation, and crop,
flip, resize and normalisation run on the whole batch at once (:class:`BatchTransform`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from classicnets.data.catalogue import ArrayData
from classicnets.data.repeated import epoch_permutation, repeated_order
from classicnets.data.transforms import BatchTransform

__all__ = ["DeviceLoader", "pair_to_device"]


class DeviceLoader:
    """Iterate over ``(images, labels)`` batches of an in-memory split on ``device``.

    * ``shuffle``: a new permutation every epoch from ``seed`` and the epoch number, so a run is
      reproducible and a resumed run sees the same order it would have seen;
    * DDP: rank ``r`` of ``world_size`` takes positions ``r, r + W, ...`` of the permutation,
      padded to equal length like :class:`~torch.utils.data.DistributedSampler`, so shards are
      disjoint (up to that padding) and every rank runs the same number of steps;
    * augmentation draws come from a per-rank generator seeded from ``seed``, epoch and rank;
    * ``repeats`` k > 1 (training): repeated augmentation, each image k times an epoch with its
      own draws, the epoch length kept (:func:`~classicnets.data.repeated.repeated_order`, the
      order the DataLoader path's sampler gives too).

    ``set_epoch`` is called by Lightning through the ``sampler`` attribute (as for a sampler).
    ``state_dict``/``load_state_dict`` make it a resumable loader for Lightning: a checkpoint
    saved mid-epoch records how many batches of which epoch were served, and the restored loader
    serves only the rest of that epoch, after drawing (and discarding) the augmentation of the
    skipped batches so the remaining ones get exactly the draws of an uninterrupted run.
    """

    def __init__(self, data: ArrayData, *, batch_size: int, transform: BatchTransform,
                 device: torch.device | str = "cpu", shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, rank: int = 0,
                 world_size: int = 1, repeats: int = 1) -> None:
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size, self.transform = batch_size, transform
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.repeats = int(repeats)
        self.epoch = 0
        self._served = 0  # batches of the current epoch handed out so far (skipped ones too)
        self._resume: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint
        self.sampler = self  # Lightning calls dataloader.sampler.set_epoch(epoch)
        self.batch_sampler = None  # (and inspects this like a DataLoader's)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return math.ceil(len(self.labels) / self.world_size)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def indices(self) -> Tensor:
        """This rank's sample order for the current epoch."""
        n = len(self.labels)
        if self.repeats > 1:
            return repeated_order(n, repeats=self.repeats, num_replicas=self.world_size,
                                  rank=self.rank, seed=self.seed, epoch=self.epoch,
                                  shuffle=self.shuffle).to(self.device)
        order = epoch_permutation(n, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)
        total = self.num_samples * self.world_size
        if total > n:  # pad by wrapping around, as DistributedSampler does
            order = torch.cat([order, order[: total - n]])
        return order[self.rank :: self.world_size].to(self.device)

    def state_dict(self) -> dict[str, int]:
        """Where this loader is in its epoch (Lightning stores it in the checkpoint)."""
        return {"epoch": self.epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume inside the epoch ``state`` was saved in: its served batches are skipped."""
        self._resume = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # a generator: the body runs at the first batch, after Lightning's set_epoch
        gen = torch.Generator(device=self.device)
        gen.manual_seed((self.seed * 1_000_003 + self.epoch) * 4099 + self.rank)
        skip = 0
        if self._resume is not None:
            epoch, served = self._resume
            self._resume = None  # once: later epochs start from their first batch
            if epoch == self.epoch and 0 < served < len(self):
                skip = served
        order = self.indices()
        self._served = 0
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            self._served = i + 1
            if i < skip:
                self.transform.skip(len(idx), gen)
                continue
            yield self.transform(self.images[idx], gen), self.labels[idx]


def pair_to_device(batch: Any, device: torch.device) -> Any | None:
    """An ``(images, labels)`` tuple or list of plain tensors moved to ``device``, else ``None``.

    The Trainer's generic mover walks any collection with ``isinstance`` checks against
    abstract classes every step; a pair of tensors needs one ``to`` each (a no-op when the
    fast path already made them there). Non-blocking except to cpu/mps, as Lightning does.
    """
    if type(batch) not in (tuple, list) or not all(type(t) is Tensor for t in batch):
        return None
    non_blocking = device.type not in ("cpu", "mps")
    return type(batch)(t.to(device, non_blocking=non_blocking) for t in batch)

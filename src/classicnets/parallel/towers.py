"""AlexNet's two towers on two processes (Krizhevsky, Sutskever & Hinton, NIPS 2012, §3.2).

The paper put half of the kernels of every layer on each of two GPUs. Each GPU's conv2, conv4
and conv5 read only the kernel maps of its own GPU; conv3 and the fully connected layers read
the maps of both, so activations cross between the GPUs only on the way into conv3, FC6, FC7
and FC8. :class:`TowerAlexNet` runs exactly that across the two ranks of a tower group:

* it takes the layers of an :class:`~classicnets.models.alexnet.AlexNet` with ``groups=2`` and
  turns every weight and bias into a :class:`~torch.distributed.tensor.DTensor` sharded along
  its first (output) dimension over the tower mesh — in the paper's network that *is* the
  split into towers, since the grouped layers' weights are stacked group by group; each rank
  keeps half of every layer (30,482,612 of the 60,965,224 parameters at 227 px);
* its forward computes on the local halves and all-gathers the activations along the channel
  dimension only where the paper's do: before conv3, FC6, FC7 and FC8, and once more for the
  1000-way softmax, whose logits both towers need.

Because the parameters are DTensors, Lightning's ``ModelParallelStrategy`` gathers them into one
full state dict whose keys and shapes are those of the single-device ``alexnet``, so a tower
run's checkpoint loads into one device and a single-device checkpoint starts a tower run.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from classicnets.models.alexnet import AlexNet, TowerLRN

__all__ = ["TOWERS", "TowerAlexNet", "average_gradients", "gather_channels", "local_numel"]

TOWERS = 2  # the paper's two GPUs


def _chunk_sizes(total: int, parts: int) -> list[int]:
    """Sizes of ``torch.chunk(total, parts)`` — the split DTensor's ``Shard`` uses."""
    step = -(-total // parts)
    return [max(0, min(step, total - i * step)) for i in range(parts)]


def _all_gather_dim1(x: Tensor, group: dist.ProcessGroup, sizes: list[int]) -> Tensor:
    """Concatenate every rank's ``x`` along dim 1 (rank order); ranks may hold unequal sizes."""
    width = max(sizes)
    if x.shape[1] < width:  # pad to a common size: all_gather needs equal shapes
        x = F.pad(x.movedim(1, -1), (0, width - x.shape[1])).movedim(-1, 1)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat([p.narrow(1, 0, n) for p, n in zip(parts, sizes)], dim=1)


def _my_slice(full: Tensor, group: dist.ProcessGroup, sizes: list[int]) -> Tensor:
    rank = dist.get_rank(group)
    return full.narrow(1, sum(sizes[:rank]), sizes[rank]).contiguous()


class _GatherSumGrad(torch.autograd.Function):
    """All-gather along channels; backward sums the gradient over the group (each rank's next
    layer holds different weights, so every rank contributes to the gradient of every input
    channel) and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup, sizes: list[int]) -> Tensor:
        ctx.group, ctx.sizes = group, sizes
        return _all_gather_dim1(x, group, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return _my_slice(grad, ctx.group, ctx.sizes), None, None


class _GatherSliceGrad(_GatherSumGrad):
    """All-gather along channels for a computation every rank repeats identically (the loss on
    the full logits); backward keeps this rank's slice of the — identical — gradient."""

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return _my_slice(grad, ctx.group, ctx.sizes), None, None


def gather_channels(x: Tensor, group: dist.ProcessGroup, sizes: list[int], *,
                    replicated_after: bool = False) -> Tensor:
    """All-gather ``x`` along dim 1 over ``group`` (autograd-aware).

    ``replicated_after``: every rank computes the same function of the result (then the
    backward must not sum the ranks' identical gradients).
    """
    fn = _GatherSliceGrad if replicated_after else _GatherSumGrad
    return fn.apply(x, group, sizes)


def local_numel(module: nn.Module) -> int:
    """Parameters this process holds (a DTensor counts only its local shard)."""
    return sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel()
               for p in module.parameters())


@torch.no_grad()
def average_gradients(params: Iterable[Tensor], group: dist.ProcessGroup) -> None:
    """Average the (local) gradients over ``group`` — the data-parallel replicas — in one flat
    all-reduce; what DDP does during backward, done once after it."""
    grads = [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
             for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat.div_(dist.get_world_size(group))
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _local(p: Tensor | None) -> Tensor | None:
    return p.to_local() if isinstance(p, DTensor) else p


class TowerAlexNet(nn.Module):
    """The two-tower AlexNet with each tower on its own rank of ``mesh`` (a 1-D mesh of 2).

    ``net`` must be an :class:`AlexNet` with ``groups=2``; its layers are taken over (not
    copied), their parameters replaced by shards. Module names and state-dict keys are those of
    ``net``. Every rank of the mesh must build ``net`` with the same weights (same seed), or
    the weights of the mesh's first rank are used.
    """

    def __init__(self, net: AlexNet, mesh: DeviceMesh) -> None:
        super().__init__()
        if not isinstance(net, AlexNet) or net.groups != TOWERS:
            raise TypeError(
                f"TowerAlexNet needs the paper's two-tower AlexNet (model=alexnet with "
                f"model.groups=2), got {type(net).__name__}"
                f"{f' with groups={net.groups}' if isinstance(net, AlexNet) else ''}")
        if mesh.ndim != 1 or mesh.size() != TOWERS:
            raise ValueError(f"the tower mesh must be 1-D with {TOWERS} ranks, got shape "
                             f"{tuple(mesh.shape)}")
        self.mesh = mesh
        self.features = net.features
        self.classifier = net.classifier
        self.groups = net.groups
        for layer in self._weighted():
            for name, param in list(layer.named_parameters(recurse=False)):
                shard = distribute_tensor(param.detach(), mesh, [Shard(0)])
                setattr(layer, name, nn.Parameter(shard, requires_grad=param.requires_grad))

    def _weighted(self) -> list[nn.Module]:
        return [m for m in (*self.features, *self.classifier)
                if isinstance(m, nn.Conv2d | nn.Linear)]

    @property
    def tower(self) -> int:
        """Which tower this rank holds (0 or 1)."""
        return self.mesh.get_local_rank()

    def forward(self, x: Tensor) -> Tensor:
        group = self.mesh.get_group()
        split = False  # is `x` split into the towers' halves along dim 1?

        def gather(t: Tensor, width: int, last: bool = False) -> Tensor:
            return gather_channels(t, group, _chunk_sizes(width, TOWERS), replicated_after=last)

        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                within_tower = layer.groups == self.groups
                if split and not within_tower:  # conv3: reads both towers' maps
                    x = gather(x, layer.in_channels)
                x = F.conv2d(x, _local(layer.weight), _local(layer.bias), layer.stride,
                             layer.padding, layer.dilation, 1)
                split = True
            elif isinstance(layer, TowerLRN):  # normalises within the tower: the local maps
                x = layer.lrn(x) if layer.groups == self.groups else layer(x)
            else:  # ReLU, max-pooling: per channel
                x = layer(x)
        x = x.flatten(1)  # channel-major, so gathering the flat halves = flattening the whole
        width = 0
        for layer in self.classifier:
            if isinstance(layer, nn.Linear):
                x = gather(x, layer.in_features)  # FC6, FC7, FC8 read both towers
                x = F.linear(x, _local(layer.weight), _local(layer.bias))
                width = layer.out_features
            else:  # ReLU, dropout: per unit, on this tower's half
                x = layer(x)
        return gather(x, width, last=True)  # the softmax over all classes

"""Model parallelism: AlexNet's two towers on two devices, on a (replicas × towers) mesh."""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from classicnets.parallel.strategy import TowerConfigError, TowerStrategy
from classicnets.parallel.towers import TOWERS, TowerAlexNet, local_numel

__all__ = ["TOWERS", "TowerAlexNet", "TowerConfigError", "TowerStrategy", "local_numel",
           "parallelize"]


def parallelize(net: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """Split ``net`` over the tower dimension of ``mesh`` (``ModelParallelStrategy``'s 2-D mesh
    of ``("data_parallel", "tensor_parallel")``). Already split: returned unchanged."""
    if isinstance(net, TowerAlexNet):
        return net
    from classicnets.models.alexnet import AlexNet

    if not isinstance(net, AlexNet) or net.groups != TOWERS:
        raise TowerConfigError(
            f"{type(net).__name__} has no towers to put on separate devices; model parallelism "
            f"(trainer=towers) is AlexNet's: use model=alexnet with model.groups={TOWERS}, or "
            f"trainer=ddp for data parallelism")
    return TowerAlexNet(net, mesh["tensor_parallel"])

"""The Lightning strategy for tower (model) parallelism × data parallelism.

``TowerStrategy`` is Lightning's :class:`~lightning.pytorch.strategies.ModelParallelStrategy`
with the device mesh fixed to ``(data-parallel replicas, 2 towers)``: ranks ``2k`` and
``2k + 1`` hold the two towers of replica ``k``. The network is split in
``ImageClassifier.configure_model`` (through :func:`classicnets.parallel.parallelize`), the data
is sharded over the replicas only (both towers of a replica see the same batch), replicas
average their gradients after each backward, and checkpoints are one full file that a single
device loads.
"""

from __future__ import annotations

from datetime import timedelta

import lightning as L
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import Tensor, nn
from torchmetrics import Metric

from classicnets.models.alexnet import AlexNet
from classicnets.parallel.towers import TOWERS, TowerAlexNet, average_gradients

__all__ = ["TowerConfigError", "TowerStrategy"]


class TowerConfigError(ValueError):
    """A world size or network that tower parallelism cannot run."""


class TowerStrategy(ModelParallelStrategy):
    """AlexNet's towers on their own devices, ``world_size / 2`` data-parallel replicas.

    ``trainer.devices × trainer.num_nodes`` must be a multiple of 2. Checkpoints are saved as
    one full state dict (``save_distributed_checkpoint=False``): its keys and shapes are the
    single-device network's.
    """

    strategy_name = "towers"

    def __init__(self, process_group_backend: str | None = None,
                 timeout: timedelta | None = default_pg_timeout) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=TOWERS,
                         save_distributed_checkpoint=False,
                         process_group_backend=process_group_backend, timeout=timeout)

    @property
    def replicas(self) -> int:
        """Data-parallel replicas: the world size over the number of towers."""
        return self.num_nodes * self.num_processes // TOWERS

    def _configure_launcher(self) -> None:
        # runs when the Trainer is built, before any process starts: check the world size here
        world = self.num_nodes * self.num_processes
        if world % TOWERS:
            raise TowerConfigError(
                f"trainer=towers needs an even number of processes (one per tower, {TOWERS} "
                f"towers per replica), got {self.num_processes} device(s) × {self.num_nodes} "
                f"node(s) = {world}; set trainer.devices to a multiple of {TOWERS} (e.g. "
                f"trainer.devices={TOWERS} for one pair, 4 for two data-parallel pairs)")
        self._data_parallel_size = world // TOWERS
        super()._configure_launcher()

    def connect(self, model: L.LightningModule) -> None:
        self.validate_module(model)
        super().connect(model)

    def validate_module(self, model: nn.Module) -> None:
        """Refuse a model without towers (the pipeline calls this before any process starts)."""
        if not any(isinstance(m, TowerAlexNet) or (isinstance(m, AlexNet) and m.groups == TOWERS)
                   for m in model.modules()):
            nets = sorted({type(m).__name__ for m in model.children()
                           if not isinstance(m, Metric)})
            raise TowerConfigError(
                f"trainer=towers splits AlexNet's two towers over two devices, but this model "
                f"({', '.join(nets) or type(model).__name__}) has no towers; use model=alexnet "
                f"(model.groups=2), or trainer=ddp / trainer=ddp_sim for data parallelism of "
                f"any network")

    def setup_environment(self) -> None:
        self._data_parallel_size = self.replicas
        super().setup_environment()

    def post_backward(self, closure_loss: Tensor) -> None:
        """Average the gradients over the data-parallel replicas."""
        super().post_backward(closure_loss)
        if self.replicas > 1:
            assert self.lightning_module is not None
            average_gradients(self.lightning_module.parameters(),
                              self.device_mesh["data_parallel"].get_group())

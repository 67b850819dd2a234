"""A callback for the zoo test (tests/models/test_zoo.py): what one network did in a training run.

Put in a run's config as ``callbacks.zoo._target_=zoo_probe.ZooProbe``; the instance the run made
is ``ZooProbe.last``. It keeps the network, every output of the network's forward (training
mode or not, plain tensor or :class:`ClassifierOutput` with auxiliary heads, shapes, finite),
and after the first backward the trainable parameters that got no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from classicnets.models import ClassifierOutput


@dataclass(frozen=True)
class Output:
    training: bool
    plain: bool  # a plain tensor (not a ClassifierOutput)
    shape: tuple[int, ...]  # of the (main) logits
    aux_shapes: tuple[tuple[int, ...], ...]
    finite: bool  # main and auxiliary logits


class ZooProbe(Callback):
    last: ClassVar[ZooProbe | None] = None

    def __init__(self) -> None:
        self.net: nn.Module | None = None
        self.outputs: list[Output] = []
        self.no_grad: list[str] | None = None  # None: no backward seen
        self._hook: Any = None
        ZooProbe.last = self

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.net is None:
            self.net = pl_module.net
            self._hook = self.net.register_forward_hook(self._record)

    def _record(self, module: nn.Module, args: Any, out: Any) -> None:
        aux = tuple(out.aux_logits) if isinstance(out, ClassifierOutput) else ()
        logits = out.logits if isinstance(out, ClassifierOutput) else out
        self.outputs.append(Output(
            training=module.training, plain=isinstance(out, torch.Tensor),
            shape=tuple(logits.shape), aux_shapes=tuple(tuple(a.shape) for a in aux),
            finite=bool(all(torch.isfinite(t).all() for t in (logits, *aux)))))

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.no_grad is None:
            self.no_grad = [n for n, p in pl_module.net.named_parameters()
                            if p.requires_grad and p.grad is None]

    def release(self) -> nn.Module | None:
        """Unhook and forget the network; it is returned (None if the run never set up)."""
        if self._hook is not None:
            self._hook.remove()
        net, self.net = self.net, None
        if ZooProbe.last is self:
            ZooProbe.last = None
        return net

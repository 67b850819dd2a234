"""An exponential moving average (EMA) of the network's weights, kept beside the trained ones.

A :class:`~lightning.pytorch.callbacks.WeightAveraging` of Lightning 2.6 (its interface:
``should_update(step_idx)``, called after each optimizer step, with Lightning's
``EMAWeightAveraging`` semantics for ``update_every_n_steps``), averaging with torch's
:class:`~torch.optim.swa_utils.AveragedModel` and :func:`~torch.optim.swa_utils.
get_ema_multi_avg_fn` (the foreach EMA update). Lightning's own hooks are overridden, because
what this project needs differs from its ``EMAWeightAveraging``:

* the average is of the **network** (``pl_module.net``), not of the LightningModule: its keys
  are the network's own, and ``torch.compile`` (which this project keeps outside the module
  tree) cannot put ``_orig_mod.`` in them — the compiled network trains the very parameters
  the average reads, so it never silently stops updating;
* validation runs **both**: ``val/acc`` (the trained weights) and ``val/acc_ema`` (the
  average) are logged side by side — Lightning's swaps the average in and logs it as
  ``val/acc``; the best checkpoint can be chosen by either (``model_checkpoint.monitor``);
* the checkpoint's ``state_dict`` stays the trained weights (a resume, ``ckpt_path=`` and
  every loader read it as before); the average goes under ``checkpoint["ema"]`` as plain
  tensors (``state_dict``, ``n_averaged``, ``latest_update_step``), so the file still loads
  weights-only. ``test_weights=ema`` tests the tested checkpoint's average; ``predict`` and
  ``export`` take ``weights=ema`` (:func:`ema_state_dict`);
* a warm-up of the decay (``warmup=true``: ``min(decay, (1 + n) / (10 + n))`` after ``n``
  updates, TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), and a start epoch
  (torchvision's reference recipe keeps the average equal to the weights during the
  learning-rate warm-up: ``start_epoch`` = its warm-up epochs).

Under DDP every rank holds the same weights after each step, so every rank's average is the
same; the ``val/acc_ema`` metric is synchronised like ``val/acc``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics.classification import MulticlassAccuracy

from classicnets.checkpoints import CheckpointError, load_file

__all__ = ["EMA", "TEST_WEIGHTS", "apply_ema_weights", "ema_state_dict"]

TEST_WEIGHTS = ("ema", "model")


class EMA(WeightAveraging):
    """EMA of the weights: ``avg = decay·avg + (1 − decay)·weights`` every
    ``update_every_n_steps`` optimizer steps, from ``start_step``/``start_epoch`` on.

    Args:
        decay: per update, in (0, 1).
        update_every_n_steps: optimizer steps between updates (torchvision's
            ``--model-ema-steps``).
        start_step: first optimizer step (0-based) that updates; before it the average is a
            copy of the weights.
        start_epoch: first epoch that updates (the later of the two starts counts).
        warmup: ramp the decay up as ``min(decay, (1 + n) / (10 + n))``.
        test_weights: ``ema`` (test the average) or ``model`` (the trained weights).
        device: where the average lives (``None``: the network's device).
    """

    def __init__(self, *, decay: float = 0.9999, update_every_n_steps: int = 1,
                 start_step: int = 0, start_epoch: int = 0, warmup: bool = False,
                 test_weights: str = "ema", device: str | None = None) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"callbacks.ema.decay={decay} must be in (0, 1) (e.g. 0.9999)")
        if int(update_every_n_steps) < 1:
            raise ValueError(f"callbacks.ema.update_every_n_steps={update_every_n_steps} must "
                             f"be >= 1")
        if int(start_step) < 0 or int(start_epoch) < 0:
            raise ValueError(f"callbacks.ema.start_step={start_step} and start_epoch="
                             f"{start_epoch} must be >= 0")
        if test_weights not in TEST_WEIGHTS:
            raise ValueError(f"callbacks.ema.test_weights={test_weights!r} is not one of "
                             f"{', '.join(TEST_WEIGHTS)}")
        super().__init__(device=device, use_buffers=True)
        # our own state (Lightning's private attributes of WeightAveraging are not used: every
        # hook that reads them is overridden here)
        self._avg: AveragedModel | None = None
        self._avg_device = torch.device(device) if isinstance(device, str) else device
        self._last_step = 0  # the optimizer step of the last update
        self.decay, self.update_every_n_steps = float(decay), int(update_every_n_steps)
        self.start_step, self.start_epoch = int(start_step), int(start_epoch)
        self.warmup, self.test_weights = bool(warmup), test_weights
        self.updates = 0  # on the host: the warm-up decay never reads the device
        self.val_acc: MulticlassAccuracy | None = None
        self._swapped = False
        self._saved: dict[str, Tensor] = {}  # the trained weights while testing the average

    # ------------------------------------------------------------------ averaging
    @property
    def average(self) -> AveragedModel | None:
        """The averaged network (an ``AveragedModel``; ``.module`` is the network)."""
        return self._avg

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None:
            return False  # per step only
        return step_idx >= self.start_step and step_idx % self.update_every_n_steps == 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        net = self._net(pl_module)
        if stage == "fit" and self._avg is None:
            self._avg = AveragedModel(net, device=self._avg_device, use_buffers=True,
                                                multi_avg_fn=get_ema_multi_avg_fn(self.decay))
        num_classes = int(getattr(pl_module, "num_classes", 0) or 0)
        if num_classes and self.val_acc is None:
            self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro",
                                              validate_args=False)

    @staticmethod
    def _net(pl_module: L.LightningModule) -> nn.Module:
        net = getattr(pl_module, "net", None)
        if not isinstance(net, nn.Module):
            raise TypeError("callbacks.ema averages pl_module.net; this module has none")
        return net

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if any(hasattr(p, "to_local") for p in self._net(pl_module).parameters()):
            # trainer=towers shards the network after setup; the average is a plain copy
            raise ValueError("callbacks.ema averages a whole network on each process and does "
                             "not support a model-parallel trainer (trainer=towers); drop "
                             "callbacks=ema or train with trainer=ddp")
        # the strategy has moved the network to its device by now (after setup)
        if self._avg is not None and self._avg_device is None:
            self._avg.to(pl_module.device)
        if self.val_acc is not None:
            self.val_acc.to(pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._update_if_due(trainer, pl_module)

    def _update_if_due(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The update for the optimizer step just taken, once. Also called when a checkpoint
        is written: a callback that saves in its own ``on_train_batch_end`` before this one's
        (the guard at a signal, a step-based checkpoint) then stores the average of the
        weights it stores, and the resumed run goes on exactly."""
        avg = self._avg
        if avg is None or trainer.global_step <= self._last_step:
            return
        step_idx = trainer.global_step - 1
        if trainer.current_epoch < self.start_epoch or not self.should_update(step_idx=step_idx):
            return
        # the first update copies the weights; later ones use this update's decay
        avg.multi_avg_fn = get_ema_multi_avg_fn(self.current_decay())
        avg.update_parameters(self._net(pl_module))
        self.updates += 1
        self._last_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        return  # per step only (WeightAveraging would ask should_update per epoch too)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        return  # the trained weights stay the module's; the average is in the checkpoints

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule
                                  ) -> None:
        if self.val_acc is not None:
            self.val_acc.to(pl_module.device).reset()

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        avg = self._avg
        if avg is None or self.val_acc is None:
            return
        x, y = batch[0], batch[1]
        net = avg.module
        net.eval()
        with torch.no_grad():
            if pl_module.hparams.get("channels_last", False) and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = net(x.to(next(net.parameters()).device))
        self.val_acc.update(logits.to(y.device), y)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule
                                ) -> None:
        if self._avg is None or self.val_acc is None:
            return
        if self.val_acc.update_count == 0:  # no validation batch (limit_val_batches=0)
            return
        pl_module.log("val/acc_ema", self.val_acc.compute(), prog_bar=True)
        self.val_acc.reset()

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.test_weights != "ema":
            return
        path = trainer.ckpt_path
        if path:  # the tested checkpoint's average (the best one, after fitting)
            state = ema_state_dict(path)
        elif self._avg is not None:
            state = _net_state(self._avg)
        else:
            return
        net = self._net(pl_module)
        self._saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(state)
        self._swapped = True

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._swapped:
            self._net(pl_module).load_state_dict(self._saved)
            self._swapped, self._saved = False, {}

    # ------------------------------------------------------------------ checkpoints
    # The whole state is in checkpoint["ema"] (on_save_checkpoint): Lightning takes the
    # callbacks' state_dict before on_save_checkpoint, i.e. before a pending update is caught up
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        avg = self._avg
        if avg is None:
            return
        if trainer.training:  # saved mid-step, before this callback's batch-end hook
            self._update_if_due(trainer, pl_module)
        checkpoint["ema"] = {
            "state_dict": {k: v.detach().clone() for k, v in _net_state(avg).items()},
            "n_averaged": avg.n_averaged.detach().cpu().clone(),
            "latest_update_step": int(self._last_step),
            "updates": int(self.updates), "decay": self.decay,
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        avg = self._avg
        saved = checkpoint.get("ema")
        if avg is None:
            return
        if not isinstance(saved, Mapping):  # a run without EMA before: start from its weights
            net_state = {k[len("net."):]: v for k, v in checkpoint["state_dict"].items()
                         if k.startswith("net.")}
            avg.module.load_state_dict(net_state)
            return
        avg.module.load_state_dict(saved["state_dict"])
        avg.n_averaged.copy_(saved["n_averaged"])
        self._last_step = int(saved.get("latest_update_step", 0))
        self.updates = int(saved.get("updates", 0))


def _net_state(avg: AveragedModel) -> dict[str, Tensor]:
    return dict(avg.module.state_dict())


def ema_state_dict(path: str | os.PathLike, *, trust: bool | None = None) -> dict[str, Tensor]:
    """The network's EMA weights stored in a training checkpoint (read weights-only)."""
    ckpt = load_file(path, trust=trust, mmap=True)
    saved = ckpt.get("ema") if isinstance(ckpt, dict) else None
    if not isinstance(saved, Mapping) or not isinstance(saved.get("state_dict"), Mapping):
        raise CheckpointError(
            f"{path} holds no EMA weights (it was trained without callbacks=ema or a recipe "
            f"with EMA); use weights=model")
    return {str(k): v for k, v in saved["state_dict"].items()}


def apply_ema_weights(net: nn.Module, path: str | os.PathLike, *,
                      trust: bool | None = None) -> nn.Module:
    """Load the checkpoint's EMA weights into ``net`` (the checkpoint's network)."""
    state = ema_state_dict(path, trust=trust)
    missing = set(net.state_dict()) ^ set(state)
    if missing:
        raise CheckpointError(f"{path}: its EMA weights do not match its network (differing "
                              f"keys: {', '.join(sorted(missing)[:5])})")
    net.load_state_dict(state)
    return net

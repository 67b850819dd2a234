"""module.lean_loop: the lean training step is Lightning's step — the same weights, hooks in
the same order with the same arguments, progress counters, logged metrics — and hands over
to Lightning's own step where it cannot promise that."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from classicnets.training.lean_loop import _STEP_HOOKS, LeanTrainingEpochLoop, lean_step_blocker
from classicnets.training.module import ImageClassifier

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05, "momentum": 0.9,
       "weight_decay": 1e-4}
# stepped every batch: the lean step must step it exactly as Lightning does
ONECYCLE = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True,
            "max_lr": 0.1, "total_steps": 40}
MODULE_HOOKS = ("on_train_batch_start", "on_before_zero_grad", "optimizer_zero_grad",
                "on_before_backward", "backward", "on_after_backward",
                "on_before_optimizer_step", "configure_gradient_clipping",
                "on_train_batch_end")


class Data(L.LightningDataModule):
    def __init__(self, n: int = 72, batch_size: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 6, 6, generator=g)
        self.y = torch.randint(0, 4, (n,), generator=g)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size,
                          shuffle=True, generator=torch.Generator().manual_seed(1))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x[:16], self.y[:16]), batch_size=8)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(108, 16), nn.ReLU(), nn.Linear(16, 4))


class Recorder(Callback):
    """Records every step hook of the callbacks' kind with what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def _record(self, name: str, *args: Any) -> None:
        def describe(a: Any) -> Any:
            if isinstance(a, torch.Tensor):
                return ("tensor", tuple(a.shape), round(float(a.detach().float().sum()), 4))
            if isinstance(a, dict):
                return ("dict", sorted(a), *(describe(v) for _, v in sorted(a.items())))
            if isinstance(a, (list, tuple)):
                return tuple(describe(v) for v in a)
            if isinstance(a, torch.optim.Optimizer):
                return "optimizer"
            return a
        self.calls.append((name, *(describe(a) for a in args)))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._record("cb.on_train_batch_start", batch, batch_idx)

    def on_before_zero_grad(self, trainer, pl_module, optimizer):
        self._record("cb.on_before_zero_grad", optimizer)

    def on_before_backward(self, trainer, pl_module, loss):
        self._record("cb.on_before_backward", loss)

    def on_after_backward(self, trainer, pl_module):
        self._record("cb.on_after_backward",
                     [round(float(p.grad.sum()), 4) for p in pl_module.parameters()])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._record("cb.on_before_optimizer_step", optimizer, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._record("cb.on_train_batch_end", outputs, batch, batch_idx, trainer.global_step,
                     trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_start(self, trainer, pl_module):
        self._record("cb.on_validation_start", trainer.global_step)


class Probe(ImageClassifier):
    """ImageClassifier recording its own step hooks; optionally logging per step or returning
    a dict with an extra key or skipping some batches (None)."""

    def __init__(self, *args: Any, mode: str = "plain", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mode, self.calls = mode, []

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self.calls.append(("training_step", batch_idx))
        loss = super().training_step(batch, batch_idx)
        if self.mode == "log":
            self.log("probe/loss", loss, on_step=True, on_epoch=True)
        if self.mode == "dict":
            return {"loss": loss, "double": 2 * loss.detach()}
        if self.mode == "skip" and batch_idx % 3 == 1:
            return None
        return loss


def _recording(name: str) -> Any:
    def hook(self: Probe, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((name, self._current_fx_name))
        return getattr(ImageClassifier, name)(self, *args, **kwargs)
    return hook


for _name in MODULE_HOOKS:
    setattr(Probe, _name, _recording(_name))


def _fit(lean: bool, mode: str = "plain", **trainer_kwargs: Any) -> tuple[Probe, L.Trainer,
                                                                          Recorder]:
    torch.manual_seed(0)
    module = Probe(model=_net(), optimizer=SGD, scheduler=ONECYCLE, num_classes=4,
                   lean_loop=lean, mode=mode)
    recorder = Recorder()
    kwargs = dict(accelerator="cpu", devices=1, max_epochs=4, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, gradient_clip_val=0.5, log_every_n_steps=2,
                  val_check_interval=4, num_sanity_val_steps=0, callbacks=[recorder])
    kwargs.update(trainer_kwargs)
    trainer = L.Trainer(**kwargs)
    with pytest.MonkeyPatch.context() as mp:
        used: list[str] = []
        original = LeanTrainingEpochLoop.advance

        def spy(self: LeanTrainingEpochLoop, fetcher: Any) -> None:
            used.append("lean" if self._lean is not None and not self.restarting else "own")
            original(self, fetcher)

        mp.setattr(LeanTrainingEpochLoop, "advance", spy)
        trainer.fit(module, datamodule=Data())
    trainer.steps_run = used  # type: ignore[attr-defined]
    return module, trainer, recorder


def _same_run(a: tuple[Probe, L.Trainer, Recorder], b: tuple[Probe, L.Trainer, Recorder]
              ) -> None:
    (ma, ta, ra), (mb, tb, rb) = a, b
    for (name, pa), (_, pb) in zip(ma.state_dict().items(), mb.state_dict().items(),
                                   strict=True):
        assert torch.equal(pa, pb), name
    assert ta.global_step == tb.global_step
    assert ta.fit_loop.state_dict() == tb.fit_loop.state_dict()
    assert ra.calls == rb.calls
    assert ma.calls == mb.calls
    assert set(ta.callback_metrics) == set(tb.callback_metrics)
    for key, value in ta.callback_metrics.items():
        assert torch.equal(value, tb.callback_metrics[key]), key


@pytest.mark.parametrize("mode", ["plain", "log", "dict", "skip"])
def test_the_lean_step_is_lightnings_step(mode: str) -> None:
    """Weights, global step, loop progress, every hook's arguments (gradients, lr after the
    scheduler, the outputs given to on_train_batch_end, validation points), the module's hook
    order with its current hook name, and the metrics, step for step."""
    lean, own = _fit(True, mode), _fit(False, mode)
    assert set(lean[1].steps_run) == {"lean"} and own[1].steps_run == []
    assert type(lean[1].fit_loop.epoch_loop) is _TrainingEpochLoop  # given back after fit
    _same_run(lean, own)
    names = [c[0] for c in lean[2].calls]
    assert names.count("cb.on_validation_start") == 4 * 2  # val_check_interval=4, 9 batches
    step = lean[0].calls[:10]
    assert [c[0] for c in step] == ["on_train_batch_start", "training_step",
                                    "on_before_zero_grad", "optimizer_zero_grad",
                                    "on_before_backward", "backward", "on_after_backward",
                                    "on_before_optimizer_step", "configure_gradient_clipping",
                                    "on_train_batch_end"]
    if mode == "dict":
        end = next(c for c in lean[2].calls if c[0] == "cb.on_train_batch_end")
        assert end[1][1] == ["double", "loss"]
    if mode == "log":
        assert "probe/loss_step" in lean[1].callback_metrics


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"accumulate_grad_batches": 2}, "gradient accumulation"),
    ({"profiler": "simple"}, "a profiler"),
])
def test_other_configurations_take_lightnings_own_step(
        kwargs: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="classicnets.training.lean_loop"):
        lean = _fit(True, **kwargs)
    assert set(lean[1].steps_run) == {"own"}
    assert f"the lean step does not apply: {reason}" in caplog.text
    _same_run(lean, _fit(False, **kwargs))


def test_the_blocker_names_manual_optimization() -> None:
    class Manual(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
    trainer.strategy.connect(Manual())
    assert lean_step_blocker(trainer) == "manual optimization"


def test_another_lightning_release_takes_lightnings_own_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
    trainer.strategy.connect(ImageClassifier(model=_net(), num_classes=4))
    assert "Lightning" not in lean_step_blocker(trainer)  # (not fitted: "0 optimizers")
    monkeypatch.setattr(L, "__version__", "2.7.0")
    assert lean_step_blocker(trainer) == "Lightning 2.7.0; the lean step reproduces 2.6.x's"


def test_the_step_hooks_list_is_the_callback_api() -> None:
    """Every hook the lean step dispatches exists on Callback and LightningModule."""
    for name in _STEP_HOOKS:
        assert hasattr(Callback, name) and hasattr(L.LightningModule, name)

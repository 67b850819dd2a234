"""A training step with Lightning's semantics and a fraction of its host time.

Lightning's training loop spends ~0.6 ms of host time per step on a CPU (measured: a do-nothing
LightningModule adds as much over a hand-written loop as :class:`ImageClassifier` does): every
hook of every callback and of the module is called through a dispatcher that opens a profiler
context and swaps the current hook name, whether anyone overrides the hook or not, and the
optimizer step goes through four layers of wrappers and closures. A GPU step bound by kernel
launches waits for all of it.

:class:`LeanTrainingEpochLoop` runs the same step — the same hooks in the same order with the
same arguments, the same progress counters (so checkpoints, resumption and ``global_step`` are
Lightning's), the precision plugin's autocast, gradient clipping, learning-rate schedulers,
``self.log`` — but decides once per epoch which hooks anyone overrides and calls only those,
directly. Where it cannot promise Lightning's semantics it hands the step to Lightning's own
``advance``, decided per epoch: several optimizers, manual optimization, gradient accumulation,
a distributed or model-parallel strategy, a precision plugin other than 32-bit and autocast
without a gradient scaler (bf16), an overridden ``optimizer_step``, a real profiler, a dataloader
iterator passed to ``training_step``, a Lightning release other than the one it was checked
against (:data:`CHECKED_LIGHTNING`); and per step: a restart in the middle of an epoch.
``module.lean_loop=false`` uses Lightning's loop throughout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loops.fetchers import _DataLoaderIterDataFetcher
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import WarningCache

__all__ = ["LeanTrainingEpochLoop", "install", "lean_step_blocker", "uninstall"]

log = logging.getLogger(__name__)

# the Lightning release (major, minor) whose training step this module reproduces, compared
# step for step by tests/test_lean_loop.py; under any other, Lightning's own step runs
CHECKED_LIGHTNING = (2, 6)
_warnings = WarningCache()  # each message once, as Lightning's loop warns

# callback and module hooks of one automatic-optimization training step, in Lightning's order
_STEP_HOOKS = ("on_train_batch_start", "on_before_zero_grad", "on_before_backward",
               "on_after_backward", "on_before_optimizer_step", "on_train_batch_end")


@dataclass
class _Plan:
    """Who overrides what, decided at the start of an epoch."""

    callbacks: dict[str, list[Callback]] = field(default_factory=dict)
    module_hooks: dict[str, bool] = field(default_factory=dict)
    before_transfer: Any = None  # the owner of each batch hook, None where it is the default
    transfer: Any = None
    after_transfer: Any = None
    zero_grad_hook: bool = False
    backward_hook: bool = False
    clipping_hook: bool = False
    schedulers: bool = False  # any scheduler other than ReduceLROnPlateau (stepped here)


def lean_step_blocker(trainer: L.Trainer, fetcher: Any = None) -> str | None:
    """Why the lean step cannot run this epoch (None: it can)."""
    version = L.__version__
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) != CHECKED_LIGHTNING:
        return (f"Lightning {version}; the lean step reproduces "
                f"{'.'.join(map(str, CHECKED_LIGHTNING))}.x's")
    module = trainer.lightning_module
    if not module.automatic_optimization:
        return "manual optimization"
    if len(trainer.optimizers) != 1:
        return f"{len(trainer.optimizers)} optimizers"
    if trainer.accumulate_grad_batches != 1:
        return "gradient accumulation"
    if type(trainer.strategy) is not SingleDeviceStrategy:
        return f"strategy {type(trainer.strategy).__name__}"
    plugin = trainer.precision_plugin
    if type(plugin) not in (Precision, MixedPrecision) or (
            type(plugin).convert_input is not Precision.convert_input):
        return f"precision plugin {type(plugin).__name__}"
    if getattr(plugin, "scaler", None) is not None:
        return "a gradient scaler (16-mixed)"
    if trainer.strategy.model is not module:
        return "a wrapped model"
    if trainer.fit_loop.epoch_loop.automatic_optimization._skip_backward:
        return "backward skipped by the strategy"
    if not isinstance(trainer.profiler, PassThroughProfiler):
        return "a profiler"
    if is_overridden("optimizer_step", module, L.LightningModule):
        return "an overridden optimizer_step"
    if isinstance(fetcher, _DataLoaderIterDataFetcher):
        return "a dataloader iterator in training_step"
    return None


def _batch_hook_owner(trainer: L.Trainer, name: str) -> Any:
    """The module or datamodule whose batch hook Lightning calls, None for the default
    before/after hooks (they return the batch unchanged)."""
    owner = trainer._data_connector._datahook_selector.get_instance(name)
    base = L.LightningModule if isinstance(owner, L.LightningModule) else L.LightningDataModule
    if name != "transfer_batch_to_device" and not is_overridden(name, owner, base):
        return None
    return owner


def _plan(trainer: L.Trainer) -> _Plan:
    module = trainer.lightning_module
    callbacks = {name: [cb for cb in trainer.callbacks if is_overridden(name, cb, Callback)]
                 for name in _STEP_HOOKS}
    hooks = {name: is_overridden(name, module, L.LightningModule) for name in _STEP_HOOKS}
    return _Plan(
        callbacks=callbacks, module_hooks=hooks,
        before_transfer=_batch_hook_owner(trainer, "on_before_batch_transfer"),
        transfer=_batch_hook_owner(trainer, "transfer_batch_to_device"),
        after_transfer=_batch_hook_owner(trainer, "on_after_batch_transfer"),
        zero_grad_hook=is_overridden("optimizer_zero_grad", module, L.LightningModule),
        backward_hook=is_overridden("backward", module, L.LightningModule),
        clipping_hook=is_overridden("configure_gradient_clipping", module, L.LightningModule),
        schedulers=any(not c.reduce_on_plateau for c in trainer.lr_scheduler_configs),
    )


class LeanTrainingEpochLoop(_TrainingEpochLoop):
    """Lightning's training epoch loop with :meth:`advance` replaced by the lean step where it
    applies (see the module docstring); everything else is the parent's."""

    _lean: _Plan | None = None

    def on_run_start(self, data_fetcher: Any) -> None:
        super().on_run_start(data_fetcher)
        blocker = lean_step_blocker(self.trainer, data_fetcher)
        if blocker and not getattr(self, "_told", False):
            log.info("training with Lightning's own step (the lean step does not apply: %s)",
                     blocker)
            self._told = True
        self._lean = None if blocker else _plan(self.trainer)

    def advance(self, data_fetcher: Any) -> None:
        plan = self._lean
        if plan is None or self.restarting:
            return super().advance(data_fetcher)
        trainer = self.trainer
        module = trainer.lightning_module
        if self.val_loop._restarting:  # as the parent: we train first (the setter walks
            self.val_loop.restarting = False  # the loop's attributes: not at every step)

        batch, _, _ = next(data_fetcher)
        batch_idx = self.batch_idx + 1
        progress = self.batch_progress
        progress.is_last_batch = data_fetcher.done
        # (the precision plugins allowed here convert no input: Precision.convert_input)
        batch = self._transfer(plan, module, trainer, batch)
        progress.increment_ready()
        trainer._logger_connector.on_batch_start(batch)

        output: dict[str, Any] | None = None
        skip_rest = False
        if batch is None:
            _warnings.warn("train_dataloader yielded None. If this was on purpose, ignore this "
                           "warning...")
        else:
            response = self._hook(plan, module, trainer, "on_train_batch_start", batch,
                                  batch_idx)
            skip_rest = response == -1
            if skip_rest:
                progress.increment_by(0, is_last_batch=True)
            else:
                progress.increment_started()
                output = self._optimize(plan, module, trainer, batch, batch_idx)

        progress.increment_processed()
        if plan.schedulers:
            self.update_lr_schedulers("step", update_plateau_schedulers=False)
            if self._num_ready_batches_reached():
                self.update_lr_schedulers("epoch", update_plateau_schedulers=False)
        if skip_rest:
            raise StopIteration
        self._hook(plan, module, trainer, "on_train_batch_end", output, batch, batch_idx)
        results = trainer._results
        if _logs_on_step(results):
            trainer._logger_connector.on_batch_end()
            progress.increment_completed()
            trainer._logger_connector.update_train_step_metrics()
        else:  # nothing logged per step: no step metrics to collect, nothing to send
            results.batch = None
            results.batch_size = None
            progress.increment_completed()

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _hook(plan: _Plan, module: L.LightningModule, trainer: L.Trainer, name: str,
              *args: Any) -> Any:
        """The callbacks' then the module's hook ``name``, where overridden (as Lightning's
        ``_call_callback_hooks`` + ``_call_lightning_module_hook``, current hook name
        included: ``self.log`` inside a hook checks it)."""
        callbacks, own = plan.callbacks[name], plan.module_hooks[name]
        if not callbacks and not own:
            return None
        previous = module._current_fx_name
        module._current_fx_name = name
        try:
            for cb in callbacks:
                getattr(cb, name)(trainer, module, *args)
            return getattr(module, name)(*args) if own else None
        finally:
            module._current_fx_name = previous

    @staticmethod
    def _transfer(plan: _Plan, module: L.LightningModule, trainer: L.Trainer, batch: Any) -> Any:
        device = trainer.strategy.root_device
        if plan.before_transfer is not None:
            batch = plan.before_transfer.on_before_batch_transfer(batch, 0)
        batch = plan.transfer.transfer_batch_to_device(batch, device, 0)
        if plan.after_transfer is not None:
            batch = plan.after_transfer.on_after_batch_transfer(batch, 0)
        return batch

    def _optimize(self, plan: _Plan, module: L.LightningModule, trainer: L.Trainer, batch: Any,
                  batch_idx: int) -> dict[str, Any]:
        """Lightning's automatic optimization of one batch: the optimizer's ``step`` runs the
        closure (training step, zero grad, backward), then the pre-step hooks and clipping,
        then the update (Lightning's ``Closure`` and ``Precision.optimizer_step``)."""
        optimizer = trainer.optimizers[0]
        progress = self.automatic_optimization.optim_progress.optimizer
        plugin = trainer.precision_plugin
        hook = self._hook
        # 32-bit: no autocast, so no context to enter (its train_step_context does nothing)
        context = None if type(plugin) is Precision else plugin.train_step_context
        outcome: dict[str, Any] = {}

        def closure() -> torch.Tensor | None:
            with torch.enable_grad():
                previous = module._current_fx_name
                module._current_fx_name = "training_step"
                try:
                    if context is None:
                        out = module.training_step(batch, batch_idx)
                    else:
                        with context():
                            out = module.training_step(batch, batch_idx)
                finally:
                    module._current_fx_name = previous
                loss, extra = _split_output(out)
                # Lightning clones the detached loss so that a gradient scaler cannot change
                # it; without a scaler (see lean_step_blocker) nothing writes to the loss
                outcome["loss"] = None if loss is None else loss.detach()
                outcome["extra"] = extra
                if loss is None:
                    _warnings.warn("`training_step` returned `None`. If this was on purpose, "
                                   "ignore this warning...")
                progress.zero_grad.increment_ready()
                hook(plan, module, trainer, "on_before_zero_grad", optimizer)
                progress.zero_grad.increment_started()
                if plan.zero_grad_hook:
                    _call(module, "optimizer_zero_grad", trainer.current_epoch, batch_idx,
                          optimizer)
                else:
                    optimizer.zero_grad()
                progress.zero_grad.increment_completed()
                if loss is not None:
                    hook(plan, module, trainer, "on_before_backward", loss)
                    if plan.backward_hook:
                        _call(module, "backward", loss)
                    else:
                        loss.backward()
                    hook(plan, module, trainer, "on_after_backward")
                return outcome["loss"]

        def step_closure() -> torch.Tensor | None:
            out = closure()
            hook(plan, module, trainer, "on_before_optimizer_step", optimizer)
            clip, algorithm = trainer.gradient_clip_val, trainer.gradient_clip_algorithm
            if plan.clipping_hook or clip:
                _call(module, "configure_gradient_clipping", optimizer,
                      gradient_clip_val=clip, gradient_clip_algorithm=algorithm)
            return out

        progress.step.increment_ready()
        optimizer.step(closure=step_closure)
        progress.step.increment_completed()
        if outcome.get("loss") is None:
            return {}
        return {"loss": outcome["loss"], **outcome["extra"]}


def _logs_on_step(results: Any) -> bool:
    """Whether anything in the epoch's results was logged with ``on_step=True`` (else the
    logger connector's per-step metrics are empty: the epoch-level values are read only at
    the epoch's end)."""
    return any(item.meta.on_step for item in results.values() if not item.has_reset)


def _call(module: L.LightningModule, name: str, *args: Any, **kwargs: Any) -> Any:
    """The module's hook ``name`` with the current hook name set, as Lightning calls it."""
    previous = module._current_fx_name
    module._current_fx_name = name
    try:
        return getattr(module, name)(*args, **kwargs)
    finally:
        module._current_fx_name = previous


def _split_output(out: Any) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """``training_step``'s output as Lightning's ``ClosureResult`` reads it: a loss tensor, a
    mapping with ``loss`` (its other keys go to ``on_train_batch_end``), or None (the batch is
    skipped: gradients zeroed, no backward)."""
    if isinstance(out, Mapping):
        loss = out.get("loss")
        if loss is None:
            raise MisconfigurationException("In automatic_optimization, when `training_step` "
                                            "returns a dict, the 'loss' key needs to be present")
        return loss, {k: v for k, v in out.items() if k != "loss"}
    if isinstance(out, torch.Tensor):
        return out, {}
    if out is not None:
        raise MisconfigurationException("In automatic optimization, `training_step` must return "
                                        "a Tensor, a dict, or None (where the step will be "
                                        "skipped).")
    return None, {}


def install(trainer: L.Trainer) -> bool:
    """Make the Trainer's training epoch loop lean (in place: its state and progress stay)."""
    loop = trainer.fit_loop.epoch_loop
    if type(loop) is _TrainingEpochLoop:
        loop.__class__ = LeanTrainingEpochLoop
        return True
    return isinstance(loop, LeanTrainingEpochLoop)


def uninstall(trainer: L.Trainer) -> None:
    """Give the Trainer Lightning's own loop back (after ``fit``)."""
    loop = trainer.fit_loop.epoch_loop
    if type(loop) is LeanTrainingEpochLoop:
        loop.__class__ = _TrainingEpochLoop

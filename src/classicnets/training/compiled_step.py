"""``module.compile=step``: the whole training step under ``torch.compile``.

``module.compile=true`` (or ``network``) compiles the network alone; the loss, the optimizer
update and everything between them still launch eagerly, kernel by kernel. ``step`` compiles
the three parts that do the arithmetic of a step:

* forward and loss as one graph (the network, the cross-entropy with label smoothing and the
  auxiliary heads), whose backward AOTAutograd compiles with it;
* the optimizer update (``optimizer.step``: SGD, Adam, ... traced into fused/foreach kernels).

Lightning's automatic optimization still runs the step around them: zero_grad, backward,
``on_before_optimizer_step`` hooks (``nan_policy=skip``, the dashboard's gradient norm),
gradient clipping (``trainer.gradient_clip_val``), gradient accumulation, 16-bit loss scaling,
learning-rate schedules and the global step all behave as without compile, and the loop state
in a checkpoint is the same, so a checkpoint moves freely between compiled and eager runs.

On CUDA the default mode is ``reduce-overhead``: each compiled part replays as a CUDA graph, so
a step costs a few graph launches instead of hundreds of kernel launches. Two things make that
work: every training step starts a new CUDA-graph generation
(``torch.compiler.cudagraph_mark_step_begin``), and hyperparameters a schedule changes at every
step (the learning rate; Adam's betas under one-cycle) live in tensors that the scheduler
updates in place, because a changed Python float is a new constant to the compiler and would
recompile the update at every step.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["COMPILE_CHOICES", "COMPILE_MODES", "CompiledOptimizerStep", "check_trainer",
           "compile_target", "plain_hyperparameters", "resolve_mode", "uses_cudagraphs"]

COMPILE_CHOICES = "false, true (= network), network, step"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# hyperparameters held in tensors: a float here is baked into the compiled update as a
# constant (SGD's momentum is not: the compiler keeps it symbolic, and a tensor there would
# be a data-dependent branch that drops the update back to eager)
_HELD = ("lr", "betas")


def compile_target(value: Any) -> str | None:
    """What ``module.compile`` compiles: ``None`` (nothing), ``"network"`` or ``"step"``."""
    if value is False or value is None:
        return None
    if value is True:
        return "network"
    if isinstance(value, str) and value in ("network", "step"):
        return value
    raise ValueError(f"module.compile={value!r} is not one of {COMPILE_CHOICES}: "
                     f"module.compile=step compiles the whole training step, "
                     f"module.compile=true the network alone")


def resolve_mode(mode: str | None, target: str | None, device_type: str) -> str | None:
    """The ``torch.compile`` mode: ``module.compile_mode`` when set, else ``reduce-overhead``
    (CUDA graphs) for a compiled step on CUDA, else torch's default."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"module.compile_mode={mode!r} is not one of "
                         f"{', '.join(COMPILE_MODES)} (or null: reduce-overhead for "
                         f"module.compile=step on CUDA, else default)")
    if mode is None and target == "step" and device_type == "cuda":
        return "reduce-overhead"
    return mode


def uses_cudagraphs(mode: str | None, device_type: str) -> bool:
    """Whether inductor replays the compiled parts as CUDA graphs in this mode."""
    return device_type == "cuda" and mode in ("reduce-overhead", "max-autotune")


def check_trainer(trainer: Any, mode: str | None, device_type: str) -> None:
    """Refuse what a compiled step cannot do under the Trainer's settings."""
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    if accumulate != 1 and uses_cudagraphs(mode, device_type):
        # a CUDA graph's outputs (the gradients of one micro-batch) are overwritten by the
        # next replay, so they cannot be summed over several batches
        raise ValueError(
            f"trainer.accumulate_grad_batches={accumulate} cannot be used with CUDA graphs "
            f"(module.compile=step, compile mode {mode}); set "
            f"module.compile_mode=max-autotune-no-cudagraphs (or default), or use "
            f"module.compile=true, or a larger data.batch_size instead of accumulating")


class CompiledOptimizerStep:
    """Makes ``optimizer.step`` run its update compiled.

    Installed before the learning-rate scheduler is built (the scheduler wraps the step it
    finds). Lightning calls ``step(closure)``: the closure (forward, loss, backward, the
    ``on_before_optimizer_step`` hooks, gradient clipping) runs eagerly first, then the
    compiled update.
    """

    def __init__(self, optimizer: Optimizer, mode: str | None) -> None:
        self.optimizer = optimizer
        # the class's step bound to this optimizer, before anything wraps it
        self._update: Callable[[], Any] = torch.compile(optimizer.step, mode=mode)
        self._held: list[dict[str, Any]] | None = None
        step = self._step

        def wrapped(opt: Optimizer, closure: Callable[[], Any] | None = None) -> Any:
            return step(closure)

        # a bound method: torch's schedulers wrap `optimizer.step` through its __func__
        optimizer.step = types.MethodType(wrapped, optimizer)  # type: ignore[method-assign]

    def _step(self, closure: Callable[[], Any] | None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._hold_hyperparameters()
        self._update()
        return loss

    def _hold_hyperparameters(self) -> None:
        """Put the groups' learning rates (and betas) into tensors kept from step to step.

        A scheduler that writes a Python float (LambdaLR's first step, one-cycle's betas, a
        loaded optimizer state) has it copied into the held tensor, which goes back into the
        group; schedulers that find a tensor fill it in place. Either way the compiled update
        sees the same tensor objects at every step and never recompiles for a new value."""
        groups = self.optimizer.param_groups
        if self._held is None or len(self._held) != len(groups):
            self._held = [{} for _ in groups]
        for group, held in zip(groups, self._held):
            for key in _HELD:
                value = group.get(key)
                if value is None:
                    continue
                tensor = held.get(key)
                if isinstance(value, tuple):
                    if tensor is None:
                        device = group["params"][0].device
                        tensor = held[key] = tuple(
                            torch.tensor(float(v), dtype=torch.float64, device=device)
                            for v in value)
                    if value is not tensor:
                        for t, v in zip(tensor, value):
                            if t is not v:
                                t.fill_(float(v))
                        group[key] = tensor
                elif value is not tensor:
                    if tensor is None:
                        device = group["params"][0].device
                        held[key] = torch.tensor(float(value), dtype=torch.float64,
                                                 device=device)
                    else:
                        tensor.fill_(float(value))
                    group[key] = held[key]


def _plain(value: Any) -> Any:
    if isinstance(value, Tensor) and value.ndim == 0 and value.is_floating_point():
        return float(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def plain_hyperparameters(checkpoint: dict[str, Any]) -> None:
    """Turn the held hyperparameter tensors in a checkpoint's optimizer and scheduler states
    back into floats, so the file is the same as an eager run's (and loads into one)."""
    for state in checkpoint.get("optimizer_states") or []:
        for group in state.get("param_groups") or []:
            for key in _HELD:
                if key in group:
                    group[key] = _plain(group[key])
    for state in checkpoint.get("lr_schedulers") or []:
        for key, value in state.items():
            if key != "optimizer":
                state[key] = _plain(value)

"""Optimizer parameter groups and learning-rate schedules built from their config groups."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.optim import lr_scheduler as lrs

__all__ = ["SCHEDULERS", "WarmupCosine", "build_scheduler", "param_groups"]

SCHEDULERS = ("cosine", "step", "multistep", "onecycle", "plateau", "none")


def param_groups(model: nn.Module, weight_decay: float, *, no_decay_norm_bias: bool
                 ) -> list[dict[str, Any]]:
    """Parameters in one group, or two when norm weights and biases skip weight decay.

    Parameters with fewer than two dimensions are exactly the biases and the norm layers'
    scales/shifts, whose decay only shrinks them towards zero without regularising anything.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_norm_bias:
        return [{"params": params}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class WarmupCosine:
    """LR factor: linear warm-up from ``start_factor`` over ``warmup`` steps, then a half
    cosine down to ``final_factor`` at ``total`` steps (a picklable ``LambdaLR`` lambda)."""

    def __init__(self, warmup: int, total: int, start_factor: float, final_factor: float):
        self.warmup, self.total = warmup, max(total, 1)
        self.start_factor, self.final_factor = start_factor, final_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        cos = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final_factor + (1.0 - self.final_factor) * cos


def build_scheduler(optimizer: Optimizer, cfg: Mapping[str, Any] | None, *, total_steps: int,
                    max_epochs: int) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` dict from a ``scheduler`` config (``name`` + options).

    Per-step schedules (cosine, onecycle) use ``total_steps``; epoch schedules use epochs.
    """
    cfg = dict(cfg or {})
    name = cfg.pop("name", "none")
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler.name={name!r} is not one of {', '.join(SCHEDULERS)}")
    if name == "none":
        return None
    base_lr = optimizer.param_groups[0]["lr"]
    if name == "cosine":
        steps_per_epoch = max(1, total_steps // max(1, max_epochs))
        warmup = round(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch)
        final = float(cfg.get("min_lr", 0.0)) / base_lr if base_lr else 0.0
        fn = WarmupCosine(warmup, total_steps, float(cfg.get("warmup_start_factor", 0.01)), final)
        return {"scheduler": lrs.LambdaLR(optimizer, fn), "interval": "step"}
    if name == "step":
        sched = lrs.StepLR(optimizer, int(cfg.get("step_size", 30)), float(cfg.get("gamma", 0.1)))
        return {"scheduler": sched, "interval": "epoch"}
    if name == "multistep":
        milestones = [int(m) for m in cfg.get("milestones", [30, 60, 80])]
        sched = lrs.MultiStepLR(optimizer, milestones, float(cfg.get("gamma", 0.1)))
        return {"scheduler": sched, "interval": "epoch"}
    if name == "onecycle":
        max_lr = float(cfg.get("max_lr") or base_lr)
        # groups with their own rates (fine-tuning's backbone) keep their ratio to the first
        peaks = [max_lr * g["lr"] / base_lr for g in optimizer.param_groups] if base_lr else max_lr
        sched = lrs.OneCycleLR(optimizer, max_lr=peaks, total_steps=max(1, total_steps),
                               pct_start=float(cfg.get("pct_start", 0.3)))
        return {"scheduler": sched, "interval": "step"}
    # plateau
    sched = lrs.ReduceLROnPlateau(optimizer, mode=cfg.get("mode", "min"),
                                  factor=float(cfg.get("factor", 0.1)),
                                  patience=int(cfg.get("patience", 10)))
    return {"scheduler": sched, "interval": "epoch", "monitor": cfg.get("monitor", "val/loss")}

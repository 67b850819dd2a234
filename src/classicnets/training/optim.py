"""Optimizer parameter groups and learning-rate schedules built from their config groups."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim import lr_scheduler as lrs

__all__ = ["NO_DECAY_NAMES", "RESUME_SCHEDULES", "SCHEDULERS", "HorizonSchedule",
           "WarmupCosine", "build_scheduler", "lamb", "lars", "no_decay", "param_groups"]

log = logging.getLogger(__name__)

SCHEDULERS = ("cosine", "step", "multistep", "onecycle", "plateau", "none")
# what a resumed run does when its horizon (max_epochs, max_steps) differs from the one its
# per-step schedule was built for (module.resume_schedule; see HorizonSchedule)
RESUME_SCHEDULES = ("auto", "stretch", "keep", "restart")


# parameters that weight decay only pulls towards zero without regularising anything, besides
# biases and norm scales/shifts (ndim <= 1): the ViT's class token and position embedding (timm's
# and DeiT's `no_weight_decay()` set) and BoTNet's relative position embeddings
NO_DECAY_NAMES = ("cls_token", "pos_embed", "rel_h", "rel_w")


def no_decay(name: str, param: Tensor) -> bool:
    """Whether ``no_weight_decay_norm_bias`` exempts this parameter: a bias, a norm layer's
    scale or shift (all the 1-d parameters), or a token/position embedding by name."""
    return param.ndim <= 1 or name.rpartition(".")[2] in NO_DECAY_NAMES


# the layers torchvision's recipe exempts with norm_weight_decay=0 (no_weight_decay_norm_bias=norm)
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm,
    nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float, *,
                 no_decay_norm_bias: bool | str) -> list[dict[str, Any]]:
    """Parameters in one group, or two when some skip weight decay: ``True``: biases, norm
    weights and embeddings (:func:`no_decay`); ``"norm"``: the norm layers' parameters only
    (torchvision's ``norm_weight_decay=0``).

    Parameters with fewer than two dimensions are exactly the biases and the norm layers'
    scales/shifts, whose decay only shrinks them towards zero without regularising anything;
    the ViT's class token and position embedding are exempt as in DeiT/timm.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    if not no_decay_norm_bias:
        return [{"params": params}]
    if no_decay_norm_bias == "norm":
        norm = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS)
                for p in m.parameters(recurse=False)}
        exempt_ids = {id(p) for p in params if id(p) in norm}
    elif no_decay_norm_bias is True:
        exempt_ids = {id(p) for n, p in named if no_decay(n, p)}
    else:
        raise ValueError(f"module.no_weight_decay_norm_bias={no_decay_norm_bias!r} is not one of "
                         f"false, true, norm")
    return [{"params": [p for p in params if id(p) not in exempt_ids],
             "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) in exempt_ids], "weight_decay": 0.0}]


TIMM_MISSING = ("optimizer={name} needs timm (timm.optim.{cls}): pip install 'classicnets[timm]'")


def _timm_optimizer(name: str, cls: str) -> Any:
    try:
        import timm.optim
    except ImportError:
        raise ImportError(TIMM_MISSING.format(name=name, cls=cls)) from None
    return getattr(timm.optim, cls)


def lamb(params: Any, *, lr: float = 1e-3, betas: tuple[float, float] | list[float] = (0.9, 0.999),
         eps: float = 1e-6, weight_decay: float = 0.01, grad_averaging: bool = True,
         max_grad_norm: float | None = 1.0, trust_clip: bool = False,
         always_adapt: bool = False) -> Optimizer:
    """LAMB (You et al., "Large Batch Optimization for Deep Learning", ICLR 2020) as
    ``timm.optim.Lamb``: the optimizer of "ResNet strikes back". torch has none."""
    return _timm_optimizer("lamb", "Lamb")(
        params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
        grad_averaging=grad_averaging, max_grad_norm=max_grad_norm, trust_clip=trust_clip,
        always_adapt=always_adapt)


def lars(params: Any, *, lr: float = 1.0, momentum: float = 0.9, dampening: float = 0.0,
         weight_decay: float = 0.0, nesterov: bool = False, trust_coeff: float = 0.001,
         eps: float = 1e-8, trust_clip: bool = False, always_adapt: bool = False) -> Optimizer:
    """LARS (You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017)
    as ``timm.optim.Lars``; ``always_adapt=false`` skips the trust ratio for parameter groups
    without weight decay, as timm does. torch has none."""
    return _timm_optimizer("lars", "Lars")(
        params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
        nesterov=nesterov, trust_coeff=trust_coeff, eps=eps, trust_clip=trust_clip,
        always_adapt=always_adapt)


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


class HorizonSchedule(lrs.LRScheduler):
    """A per-step schedule that knows the horizon (total steps) it was built for, and goes on
    the way ``policy`` says when a resumed run has another horizon:

    * ``stretch``: the rest of the schedule is spread over the new horizon from the step
      reached — step ``t`` runs the old schedule at ``s + (t - s)(T_old - s)/(T_new - s)`` —
      so the rate goes on smoothly from where it was and reaches the end at the new horizon;
    * ``keep``: the old schedule as it was, its last rate held after its end;
    * ``restart``: a warm restart (SGDR-style): the schedule built afresh over the steps left;
    * ``auto`` (the default): ``stretch`` while the old schedule has steps left, ``restart``
      once it has ended (stretching an ended schedule would hold its final rate, often 0).

    Without a change of horizon it steps exactly as the schedule it wraps, and its state
    (the wrapped schedule's, the step count and any stretches) resumes bit-exact.
    """

    def __init__(self, optimizer: Optimizer, build: Callable[[int], lrs.LRScheduler],
                 total: int, policy: str = "auto") -> None:
        if policy not in RESUME_SCHEDULES:
            raise ValueError(f"module.resume_schedule={policy!r} is not one of "
                             f"{', '.join(RESUME_SCHEDULES)}")
        # not LRScheduler.__init__: the wrapped schedule has set the optimizer's rates
        self.optimizer, self._build_fn, self.policy = optimizer, build, policy
        # the optimizer's own rates, before any schedule set them: each build starts there
        self._base = [(g["lr"], g.get("initial_lr")) for g in optimizer.param_groups]
        self.total = max(1, int(total))  # the run's horizon, in scheduler steps
        self.inner, self.inner_total = build(self.total), self.total
        self.t = 0  # scheduler steps taken in this run
        self.offset = 0  # restart: the run step where the wrapped schedule's step 0 is
        self.end = self.total  # run step where the schedule ends (keep holds it after)
        self.stretches: list[list[float]] = []  # [s, old end, new end], oldest first
        self.note: str | None = None  # what the last resume with another horizon did
        self.base_lrs = list(self.inner.base_lrs)
        self.last_epoch = 0
        self._last_lr = self.inner.get_last_lr()

    def _build(self, total: int) -> lrs.LRScheduler:
        """The wrapped schedule for ``total`` steps, built on the optimizer's own rates."""
        for group, (lr, initial) in zip(self.optimizer.param_groups, self._base):
            group["lr"] = lr
            if initial is None:
                group.pop("initial_lr", None)
            else:
                group["initial_lr"] = initial
        return self._build_fn(total)

    def _position(self, t: int) -> float:
        """Where run step ``t`` falls on the wrapped schedule's own steps."""
        x: float = min(t, self.end)
        for s, old, new in reversed(self.stretches):
            if x > s:
                x = s + (x - s) * (old - s) / (new - s)
        return x - self.offset

    def step(self, epoch: int | None = None) -> None:  # LRScheduler's signature; epoch unused
        self.t += 1
        self.last_epoch = self.t
        position = self._position(self.t)
        self.inner.last_epoch = position - 1  # its step() adds the 1
        self.inner.step()
        self._last_lr = self.inner.get_last_lr()

    def get_last_lr(self) -> list[float]:
        return self._last_lr

    def get_lr(self) -> list[float]:
        return self._last_lr

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "inner_total": self.inner_total,
                "total": self.total, "t": self.t, "offset": self.offset, "end": self.end,
                "stretches": [list(map(float, st)) for st in self.stretches],
                "note": self.note, "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "inner_total" not in state:  # a checkpoint from before: the bare schedule's state
            state = {"inner": state, "inner_total": _bare_total(state),
                     "t": int(state.get("last_epoch", 0))}
            state.update(total=state["inner_total"], offset=0, end=state["inner_total"],
                         stretches=[], note=None)
        new_total = self.total
        self.inner_total, self.t = int(state["inner_total"]), int(state["t"])
        self.offset, self.end = int(state["offset"]), float(state["end"])
        self.stretches = [list(st) for st in state["stretches"]]
        self.note = state.get("note")
        restored = [g["lr"] for g in self.optimizer.param_groups]  # the optimizer's state
        self.inner = self._build(self.inner_total)
        self.inner.load_state_dict(state["inner"])
        for group, lr in zip(self.optimizer.param_groups, restored):
            group["lr"] = lr  # building set the start rate; the run is at the saved one
        self.total = int(state["total"])
        self.last_epoch = self.t
        self._last_lr = list(state.get("_last_lr") or self.inner.get_last_lr())
        if new_total != self.total:
            self._new_horizon(new_total)

    def _new_horizon(self, new_total: int) -> None:
        old_total, s, ended = self.total, self.t, self.t >= self.end
        policy = self.policy
        if policy == "auto":
            policy = "restart" if ended else "stretch"
        lr_before = self._last_lr[0]
        if policy == "stretch" and new_total > s and not ended:
            self.stretches.append([float(s), float(self.end), float(new_total)])
            self.end = new_total
        elif policy == "restart" and new_total > s:
            self.inner_total = new_total - s
            self.inner = self._build(self.inner_total)  # sets the optimizer's rates to its start
            self.offset, self.end, self.stretches = s, new_total, []
        else:  # keep (or a horizon already passed): the schedule as it was
            policy = "keep" if policy == "keep" or new_total <= s else f"{policy} (as keep)"
        self.total = new_total
        self._last_lr = self.inner.get_last_lr()
        self.note = (f"resume at scheduler step {s}: the horizon changed from {old_total} to "
                     f"{new_total} steps; the schedule {'had ended' if ended else 'was running'}"
                     f" (lr {lr_before:.4g}); module.resume_schedule={self.policy} -> {policy}")
        log.warning("%s", self.note)


def _bare_total(state: Mapping[str, Any]) -> int:
    """The horizon a bare schedule's state was built for (a checkpoint from before
    :class:`HorizonSchedule`)."""
    if "total_steps" in state:  # OneCycleLR
        return int(state["total_steps"])
    lambdas = state.get("lr_lambdas") or [{}]
    return int((lambdas[0] or {}).get("total", state.get("last_epoch", 1)))


def build_scheduler(optimizer: Optimizer, cfg: Mapping[str, Any] | None, *, total_steps: int,
                    max_epochs: int, resume: str = "auto") -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` dict from a ``scheduler`` config (``name`` + options).

    Per-step schedules (cosine, onecycle) use ``total_steps`` and go on over another horizon
    on resume as ``resume`` says (:class:`HorizonSchedule`); epoch schedules use epochs.
    """
    cfg = dict(cfg or {})
    name = cfg.get("name", "none")
    if name in ("cosine", "onecycle"):
        steps_per_epoch = max(1, total_steps // max(1, max_epochs))

        def build(total: int) -> lrs.LRScheduler:
            epochs = max(1, round(total / steps_per_epoch))
            return _build(optimizer, cfg, total_steps=total, max_epochs=epochs)["scheduler"]

        return {"scheduler": HorizonSchedule(optimizer, build, total_steps, resume),
                "interval": "step"}
    return _build(optimizer, cfg, total_steps=total_steps, max_epochs=max_epochs)


def _build(optimizer: Optimizer, cfg: Mapping[str, Any], *, total_steps: int,
           max_epochs: int) -> dict[str, Any] | None:
    cfg = dict(cfg)
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

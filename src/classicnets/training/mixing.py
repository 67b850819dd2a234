"""Mixup and CutMix on a training batch, on its device, with soft targets.

Mixup (Zhang et al., ICLR 2018) blends two images and their labels with a weight drawn from
Beta(α, α); CutMix (Yun et al., ICCV 2019) pastes a box of one image into another, the labels
weighted by the box's area. The controls are timm's ``Mixup`` (batch mode): ``mixup_alpha``,
``cutmix_alpha``, ``prob`` (how often a batch is mixed at all), ``switch_prob`` (CutMix rather
than Mixup when both are on) and label smoothing folded into the one-hot targets before they
are mixed. Each batch is mixed with itself reversed (``x.flip(0)``), as timm does.

Why our own ~80 lines: ``timm.data.Mixup`` draws from NumPy's global generator and
``torchvision.transforms.v2.MixUp``/``CutMix`` from torch's, so neither is reproducible at
a mid-epoch resume, and torchvision's has no probability, switch probability or folded
smoothing. Here every draw comes from a generator seeded by (seed, rank, step, batch index):
a resumed run mixes its batches exactly as the uninterrupted run did, and nothing is read back
from the device (the draws are a few host scalars; the box is applied by slicing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["MixConfig", "Mixer", "one_hot_targets"]


def one_hot_targets(y: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """One-hot float targets with label smoothing folded in: ``smoothing / num_classes`` off
    the label, ``1 - smoothing + smoothing / num_classes`` on it (as cross-entropy's
    ``label_smoothing`` defines it)."""
    off = smoothing / num_classes
    target = torch.full((y.shape[0], num_classes), off, dtype=torch.float32, device=y.device)
    return target.scatter_(1, y.long().view(-1, 1), 1.0 - smoothing + off)


@dataclass(frozen=True)
class MixConfig:
    """``module.mixup``: the Mixup/CutMix controls (timm's names and defaults, all off)."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5

    @classmethod
    def parse(cls, cfg: Mapping[str, Any] | None) -> MixConfig:
        """Validated from the config mapping, naming a bad key or value and the valid ones."""
        cfg = dict(cfg or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            raise ValueError(f"module.mixup.{unknown[0]} is not an option of module.mixup; "
                             f"valid keys: {', '.join(known)}")
        values = {k: float(v) for k, v in cfg.items()}
        for key in ("mixup_alpha", "cutmix_alpha"):
            v = values.get(key, 0.0)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"module.mixup.{key}={v} must be >= 0 (the Beta(α, α) "
                                 f"parameter; 0 turns it off)")
        for key in ("prob", "switch_prob"):
            v = values.get(key, getattr(cls, key))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"module.mixup.{key}={v} must be a probability in [0, 1]")
        return cls(**values)

    @property
    def active(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0


class Mixer:
    """Mixes a batch and returns it with soft targets (rows summing to 1).

    Args:
        cfg: the controls (:class:`MixConfig`).
        num_classes: width of the targets.
        smoothing: label smoothing folded into the one-hot targets before mixing.
    """

    def __init__(self, cfg: MixConfig, num_classes: int, smoothing: float = 0.0) -> None:
        if cfg.active and num_classes < 2:
            raise ValueError(f"module.mixup mixes labels of two images, but the dataset has "
                             f"{num_classes} class; set module.mixup.mixup_alpha=0 and "
                             f"module.mixup.cutmix_alpha=0 (or use a dataset with >= 2 classes)")
        self.cfg, self.num_classes, self.smoothing = cfg, num_classes, smoothing

    def draw(self, key: tuple[int, ...], height: int, width: int
             ) -> tuple[str, float, tuple[int, int, int, int] | None]:
        """What to do with the batch of ``key``: (``none``/``mixup``/``cutmix``, the weight of
        the batch itself, the CutMix box as (top, bottom, left, right))."""
        cfg = self.cfg
        rng = np.random.default_rng([abs(int(k)) for k in key])
        if not cfg.active or rng.random() >= cfg.prob:
            return "none", 1.0, None
        if cfg.mixup_alpha > 0 and cfg.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < cfg.switch_prob)
        else:
            use_cutmix = cfg.cutmix_alpha > 0
        if not use_cutmix:
            return "mixup", float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha)), None
        lam = float(rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha))
        # a box of area (1 - lam) of the image, centred uniformly, clipped at the borders;
        # the weight is then corrected to the area actually pasted (timm's correct_lam)
        ratio = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
        return "cutmix", lam, (top, bottom, left, right)

    def __call__(self, x: Tensor, y: Tensor, key: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """The mixed batch and its soft targets (``y``: class indices)."""
        target = one_hot_targets(y, self.num_classes, self.smoothing)
        kind, lam, box = self.draw(key, x.shape[-2], x.shape[-1])
        if kind == "none":
            return x, target
        if kind == "mixup":
            x = x * lam + x.flip(0) * (1.0 - lam)
        else:
            assert box is not None
            top, bottom, left, right = box
            x = x.clone()
            x[..., top:bottom, left:right] = x.flip(0)[..., top:bottom, left:right]
        return x, target * lam + target.flip(0) * (1.0 - lam)

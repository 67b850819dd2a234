"""The benchmark's settings: the composed ``conf/benchmark.yaml`` over its device profile."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from classicnets.benchmark.sections import SECTIONS

__all__ = ["PRECISIONS", "resolve_device", "resolve_settings"]

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_GLOBAL_KNOBS = (
    "device",
    "sections",
    "precision",
    "channels_last",
    "compile",
    "threads",
    "host_memory",
    "matmul_precision",
    "cudnn_benchmark",
    "rounds",
    "warmup_steps",
    "window_steps",
    "min_window_s",
)
_TIMING_KNOBS = ("rounds", "warmup_steps", "window_steps", "min_window_s")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def resolve_device(name: str) -> torch.device:
    """``auto`` (cuda when available), ``cpu``, ``cuda`` / ``cuda:N`` (``gpu`` = ``cuda``)."""
    name = str(name).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "gpu":
        name = "cuda"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name} but torch.cuda.is_available() is False; use "
                "device=cpu (or device=auto)"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device={name!r} is not one of auto, cpu, cuda (cuda:N)")


def resolve_settings(cfg: DictConfig) -> DictConfig:
    """The benchmark's settings: ``per_device.<cpu|cuda>`` overlaid with every non-null value
    of the config, and the global ``rounds``/``warmup_steps``/``window_steps``/``min_window_s``
    (when set) copied into each section."""
    device = resolve_device(cfg.get("device", "auto"))
    profiles = OmegaConf.to_container(cfg.get("per_device") or {}, resolve=True)
    profile = profiles.get(device.type, {})
    user: dict[str, Any] = {}
    for key in (*_GLOBAL_KNOBS, *SECTIONS):
        if key in cfg:
            value = cfg[key]
            user[key] = (
                OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            )
    # every key of the config (nulls included), then the device's values, then the given ones
    s = OmegaConf.merge(
        OmegaConf.create(user), OmegaConf.create(profile), OmegaConf.create(_drop_none(user))
    )
    s.device = str(device)
    for knob in _TIMING_KNOBS:
        if s.get(knob) is not None:
            for section in SECTIONS:
                if section in s and knob in s[section]:
                    s[section][knob] = s[knob]
    sections = list(s.get("sections") or [])
    unknown = [x for x in sections if x not in SECTIONS]
    if unknown:
        raise ValueError(f"sections={unknown} unknown; choose from {', '.join(SECTIONS)}")
    if s.get("precision") not in PRECISIONS:
        raise ValueError(f"precision={s.get('precision')!r} is not one of {', '.join(PRECISIONS)}")
    for section in sections:
        sec = s.get(section) or {}
        for knob in _TIMING_KNOBS[:3]:
            if knob in sec and (sec[knob] is None or int(sec[knob]) < (knob != "warmup_steps")):
                raise ValueError(
                    f"{section}.{knob}={sec[knob]} must be a "
                    f"{'non-negative' if knob == 'warmup_steps' else 'positive'} "
                    "integer"
                )
        if float(sec.get("min_window_s") or 0.0) < 0:
            raise ValueError(f"{section}.min_window_s={sec.min_window_s} must be >= 0")
    if "template" in sections and int(s.template.warmup_steps) < 1:
        raise ValueError("template.warmup_steps must be >= 1 (the Trainer's first step sets up)")
    return s

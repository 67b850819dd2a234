"""Section ``twins``: our networks vs torchvision's (or timm's) of the same name.

Forward+backward time on the same input, windows of the two alternated, and each one's peak
memory on GPU.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from classicnets.benchmark.device import Bench
from classicnets.benchmark.measure import alternate, summarise
from classicnets.benchmark.sections.common import Context, logits, param_count, state_bytes
from classicnets.benchmark.tables import (
    Row,
    SectionReport,
    fmt,
    fmt_estimate,
    paired_fields,
    table,
)

__all__ = ["measure"]

log = logging.getLogger(__name__)

TITLE = "Twins: ours vs the reference implementation (forward + backward)"
# reference / ours speed below which a twin is flagged
TARGET_SPEED = 0.95


def _reference(name: str, size: int, timm_name: str | None) -> nn.Module:
    if timm_name:
        import timm

        return timm.create_model(timm_name, pretrained=False, num_classes=1000)
    import torchvision

    kwargs: dict[str, Any] = {"weights": None, "num_classes": 1000}
    if name in ("inception_v3", "googlenet"):
        kwargs.update(aux_logits=False, init_weights=False)
    if name.startswith("vit_"):
        kwargs["image_size"] = size
    return getattr(torchvision.models, name)(**kwargs)


class _ForwardBackward:
    def __init__(self, net: nn.Module, x: Tensor, y: Tensor, bench: Bench) -> None:
        self.module, self.net = net, bench.compiled(net)
        self.x, self.y, self.autocast = x, y, bench.autocast

    def step(self) -> None:
        self.module.zero_grad(set_to_none=True)
        with self.autocast():
            loss = F.cross_entropy(logits(self.net(self.x)).float(), self.y)
        loss.backward()


def _twin_rows(
    name: str, timm_name: str | None, size: int, bs: int, bench: Bench, w: DictConfig
) -> list[Row]:
    """Build our ``name`` and its reference, time forward+backward alternately, and measure
    each one's peak memory on GPU."""
    from classicnets.models import create_model

    extra = {"aux_logits": False} if name == "inception_v3" else {}
    nets = {
        "ours": create_model(name, num_classes=1000, input_size=size, **extra),
        "reference": _reference(name, size, timm_name),
    }
    params = {k: param_count(v) for k, v in nets.items()}
    state = {k: state_bytes(v) for k, v in nets.items()}
    x = bench.images(bs, size)
    y = torch.randint(0, 1000, (bs,), device=bench.device)
    runners = {k: _ForwardBackward(bench.place(v).train(), x, y, bench) for k, v in nets.items()}
    peak: dict[str, float] = dict.fromkeys(runners, 0.0 if bench.cuda else math.nan)
    base = {"bytes": 0}

    def before(k: str) -> None:
        if bench.cuda:
            bench.sync()
            torch.cuda.reset_peak_memory_stats(bench.device)
            base["bytes"] = torch.cuda.memory_allocated(bench.device)

    def after(k: str) -> None:
        runners[k].module.zero_grad(set_to_none=True)  # the other twin's window starts bare
        if bench.cuda:
            # this network alone: its weights and buffers plus what its steps added
            used = torch.cuda.max_memory_allocated(bench.device) - base["bytes"] + state[k]
            peak[k] = max(peak[k], used / 2**20)

    windows = alternate(
        {k: r.step for k, r in runners.items()},
        rounds=int(w.rounds),
        warmup=dict.fromkeys(runners, int(w.warmup_steps)),
        window=int(w.window_steps),
        min_window_s=float(w.get("min_window_s") or 0.0),
        sync=bench.sync,
        label=f"twins {name}",
        batch=bs,
        before=before,
        after=after,
    )
    ref_label = f"timm {timm_name}" if timm_name else f"torchvision {name}"
    note = (
        ""
        if params["ours"] == params["reference"]
        else f"parameter counts differ ({params['ours']:,} vs {params['reference']:,})"
    )
    rows = [
        Row(
            section="twins",
            case=name,
            variant=k,
            model=name if k == "ours" else ref_label,
            batch_size=bs,
            image_size=size,
            precision=bench.precision,
            peak_mem_mib=peak[k],
            params=params[k],
            note=note,
            **summarise(windows[k], bs),
            **paired_fields(windows[k], windows["reference"]),
        )
        for k in runners
    ]
    log.info(
        "twins %s (%d px, batch %d): ours %.1f ms, %s %.1f ms, speed ratio %.3f",
        name,
        size,
        bs,
        rows[0].ms_per_step,
        ref_label,
        rows[1].ms_per_step,
        rows[0].ratio,
    )
    return rows


def _render(rows: list[Row], bench: Bench) -> list[str]:
    body = [
        "same input (random, batch × size below), train mode, cross-entropy, "
        f"{bench.precision}; time ratio = ours / reference; speed ratio = reference / "
        f"ours (≥ {TARGET_SPEED}: ours is no slower; [low, high]: 95 % bootstrap interval)"
        + ("; peak = the network's weights + the step's extra memory" if bench.cuda else ""),
        "",
    ]
    head = [
        "model",
        "reference",
        "input",
        "ours ms",
        "ref ms",
        "time ratio",
        "speed ratio",
        "params",
    ]
    if bench.cuda:
        head += ["ours MiB", "ref MiB"]
    lines = []
    for ours, ref in zip(rows[0::2], rows[1::2]):
        line = [
            ours.case,
            ref.model,
            f"{ours.batch_size}×{ours.image_size}²",
            fmt(ours.ms_per_step, ".1f"),
            fmt(ref.ms_per_step, ".1f"),
            fmt(1.0 / ours.ratio, ".3f"),
            fmt_estimate(ours.estimate("ratio"), ".3f")
            + ("" if ours.ratio >= TARGET_SPEED else " ⚠"),
            f"{ours.params / 1e6:.2f} M"
            + ("" if ours.params == ref.params else f" vs {ref.params / 1e6:.2f} M"),
        ]
        if bench.cuda:
            line += [fmt(ours.peak_mem_mib, ",.0f"), fmt(ref.peak_mem_mib, ",.0f")]
        lines.append(line)
    body += table(head, lines)
    slow = [r.case for r in rows[0::2] if r.ratio < TARGET_SPEED]
    body += [
        "",
        f"{len(rows) // 2 - len(slow)} of {len(rows) // 2} at speed ratio ≥ {TARGET_SPEED}"
        + (f"; below: {', '.join(slow)}" if slow else ""),
    ]
    return body


def measure(ctx: Context) -> SectionReport:
    from classicnets.models import get_model_info

    w, bench = ctx.settings.twins, ctx.bench
    sizes, batches = dict(w.get("sizes") or {}), dict(w.get("batch_sizes") or {})
    pairs: list[tuple[str, str | None]] = [(m, None) for m in w.models or []]
    timm_map = dict(w.get("timm") or {})
    if timm_map:
        try:
            import timm  # noqa: F401
        except ImportError:
            log.warning(
                "twins: timm is not installed (pip install -e '.[bench]'): skipping %s",
                ", ".join(timm_map),
            )
            timm_map = {}
    pairs += [(ours, str(ref)) for ours, ref in timm_map.items()]
    rows: list[Row] = []
    for name, timm_name in pairs:
        size = int(sizes.get(name) or w.get("image_size") or get_model_info(name).input_size)
        bs = int(batches.get(name) or w.batch_size)
        rows += _twin_rows(name, timm_name, size, bs, bench, w)
        bench.free()
    return SectionReport(rows, TITLE, _render(rows, bench))

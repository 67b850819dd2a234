"""What a run writes: the rows of ``benchmark.csv``, the Markdown around the sections' own
tables (``benchmark.md``), and the machine it ran on."""

from __future__ import annotations

import csv
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from classicnets.benchmark.device import Bench
from classicnets.benchmark.measure import (
    Estimate,
    Window,
    median_interval,
    paired_differences,
    paired_ratios,
)

__all__ = [
    "CSV_COLUMNS",
    "Row",
    "SectionReport",
    "fmt",
    "fmt_estimate",
    "machine_info",
    "paired_fields",
    "render_markdown",
    "table",
    "verdict",
    "write_csv",
]


@dataclass
class Row:
    """One measured variant: a line of ``benchmark.csv``.

    Comparisons are against the case's baseline variant (whose ratio is 1), round by round:
    ``ratio`` is the median of the per-round throughput ratios, ``ratio_low``/``ratio_high`` its
    95 % percentile bootstrap interval; ``cpu_*`` the same from the main thread's CPU time;
    ``delta_us*`` the microseconds per step this variant takes beyond the baseline."""

    section: str
    case: str
    variant: str
    model: str = ""
    batch_size: int = 0
    image_size: int = 0
    precision: str = ""
    windows: int = 0
    steps: int = 0  # timed steps (batches) per window
    seconds: float = math.nan  # median window (or the epoch's) wall seconds
    images_per_s: float = math.nan
    ms_per_step: float = math.nan
    cpu_ms_per_step: float = math.nan  # main thread's CPU time (time.thread_time), median
    spread_pct: float = math.nan  # (max - min) / median of the windows' images/s
    ratio: float = math.nan  # images/s relative to the case's baseline variant (paired rounds)
    ratio_low: float = math.nan
    ratio_high: float = math.nan
    cpu_ratio: float = math.nan  # the same from CPU time per step
    cpu_ratio_low: float = math.nan
    cpu_ratio_high: float = math.nan
    delta_us: float = math.nan  # wall µs per step beyond the baseline (paired rounds)
    delta_us_low: float = math.nan
    delta_us_high: float = math.nan
    cpu_delta_us: float = math.nan  # CPU µs per step beyond the baseline
    cpu_delta_us_low: float = math.nan
    cpu_delta_us_high: float = math.nan
    peak_mem_mib: float = math.nan
    params: int = 0
    param_mib: float = math.nan  # parameters held by one process (towers section)
    optimizer_mib: float = math.nan  # optimizer state held by one process (towers section)
    note: str = ""
    window_images_per_s: str = ""  # every window's images/s, in order ("a;b;c")
    window_cpu_ms_per_step: str = ""  # every window's CPU ms per step, in order

    def estimate(self, name: str) -> Estimate:
        """``ratio``, ``cpu_ratio``, ``delta_us`` or ``cpu_delta_us`` with its interval."""
        return Estimate(
            getattr(self, name), getattr(self, f"{name}_low"), getattr(self, f"{name}_high")
        )


CSV_COLUMNS = [f.name for f in fields(Row)]


@dataclass
class SectionReport:
    """What a section hands back: its rows, and its Markdown part (a title, numbered by the
    report from the section's place in the registry, and the lines below it)."""

    rows: list[Row]
    title: str
    body: list[str] = field(default_factory=list)


def paired_fields(
    windows: Sequence[Window], baseline: Sequence[Window], *, deltas: bool = False
) -> dict[str, float]:
    """The comparison columns of a variant's :class:`Row` against the baseline's windows (paired
    by round): ratios of throughput on both clocks, and (``deltas``) the µs per step added."""
    out: dict[str, float] = {}
    pairs: list[tuple[str, list[float]]] = [
        ("ratio", paired_ratios(windows, baseline, "wall")),
        ("cpu_ratio", paired_ratios(windows, baseline, "cpu")),
    ]
    if deltas:
        pairs += [
            ("delta_us", [1e6 * d for d in paired_differences(windows, baseline, "wall")]),
            ("cpu_delta_us", [1e6 * d for d in paired_differences(windows, baseline, "cpu")]),
        ]
    for name, values in pairs:
        e = median_interval(values)
        out.update({name: e.value, f"{name}_low": e.low, f"{name}_high": e.high})
    return out


# ---------------------------------------------------------------------------- formatting
def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or an en dash when it was not measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def fmt_estimate(e: Estimate, spec: str) -> str:
    """``0.951 [0.932, 0.968]``: a median and its interval."""
    if not e.known:
        return "–"
    return f"{format(e.value, spec)} [{format(e.low, spec)}, {format(e.high, spec)}]"


def table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


def verdict(value: float | Estimate, target: float) -> str:
    """Against a target: a plain value is met or not; an estimate is met only when its whole
    interval clears the target, and undecided when the interval straddles it."""
    if isinstance(value, Estimate):
        if value.above(target):
            return "met"
        if value.below(target):
            return "**not met**"
        return "undecided: the interval contains it"
    return "met" if value >= target else "**not met**"


# ---------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(bench: Bench) -> dict[str, str]:
    """CPU, GPU, software versions and the load average at the start of the run."""
    import lightning
    import torchvision

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": f"{_cpu_model()} ({cores} cores, {torch.get_num_threads()} torch threads)",
        "gpu": torch.cuda.get_device_name(bench.device) if bench.cuda else "none",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, lightning {lightning.__version__}",
    }
    if hasattr(os, "getloadavg"):
        info["load"] = f"{os.getloadavg()[0]:.2f}"
    if bench.cuda:
        info["software"] += f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    try:
        import timm

        info["software"] += f", timm {timm.__version__}"
    except ImportError:
        pass
    return info


# ---------------------------------------------------------------------------- the files
def render_markdown(
    parts: Sequence[tuple[int, SectionReport]], s: DictConfig, bench: Bench, info: dict[str, str]
) -> str:
    """The header (machine, software, settings, method) and each section's numbered part."""
    md = [
        "# classicnets benchmark",
        "",
        f"- machine: {info['cpu']}; GPU: {info['gpu']}"
        + (
            f"; load average {info['load']} at start, {os.getloadavg()[0]:.2f} at this table "
            "(other processes skew CPU figures)"
            if "load" in info
            else ""
        ),
        f"- {info['software']}",
        f"- device {bench.device}, precision {bench.precision}, channels_last "
        f"{bench.channels_last}, compile {bench.compile}"
        + (
            f", matmul precision {s.get('matmul_precision')}, cudnn.benchmark "
            f"{bench.cudnn_benchmark}"
            if bench.cuda
            else ""
        ),
        "- each figure: median over timed windows (each after untimed warm-up steps, and at "
        "least min_window_s long); variants alternate window by window; ratios are medians of "
        "per-round ratios, [low, high] their 95 % percentile bootstrap interval; CPU = the main "
        "thread's CPU time (time.thread_time), which leaves out time spent waiting for a core "
        "(but also other threads' work: compare it with 1 torch thread); spread = (max - min) "
        "/ median of the windows' images/s",
        "",
    ]
    for number, part in parts:
        if not part.rows:  # e.g. twins with an empty list of models
            continue
        md += [f"## {number}. {part.title}", "", *part.body]
        if part.body and part.body[-1] != "":
            md.append("")
    return "\n".join(md)


def write_csv(rows: Sequence[Row], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            out: dict[str, Any] = {}
            for key in CSV_COLUMNS:
                value = getattr(row, key)
                if isinstance(value, float):
                    value = "" if math.isnan(value) else f"{value:.6g}"
                out[key] = value
            writer.writerow(out)

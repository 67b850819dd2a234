"""Timing and its statistics, shared by the benchmark's sections and the zoo report.

Nothing here knows about networks or sections: a *step* is any callable, a *sync* is whatever
makes queued device work finish (``torch.cuda.synchronize``, or nothing on the CPU).

* :func:`timed_window` times ``steps`` calls after ``warmup`` untimed ones and returns a
  :class:`Window` holding both the wall time and the CPU time of the calling thread
  (``time.thread_time``): on a machine shared with other work the wall clock also counts the
  time the thread waited for a core, the CPU clock does not.
* :func:`calibrated_steps` lengthens a window to last a given time.
* :func:`alternate` runs the variants round by round (A window, B window, A, B, ...) so slow
  drift of the machine hits every variant alike and each round yields a *paired* comparison.
* :func:`summarise` reduces a variant's windows to medians and a spread;
  :func:`paired_ratios` / :func:`paired_differences` compare two variants round by round, and
  :func:`median_interval` gives the median of those per-round values with a percentile
  bootstrap interval — the figure to quote, and how far the machine's noise lets one trust it.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Estimate",
    "Window",
    "alternate",
    "bootstrap_median_interval",
    "calibrated_steps",
    "median_interval",
    "paired_differences",
    "paired_ratios",
    "summarise",
    "timed_window",
]

log = logging.getLogger(__name__)

Clock = Literal["wall", "cpu"]

# enough resamples that the 2.5 / 97.5 % percentiles move by well under the interval's width
# from one seed to another, few enough to cost milliseconds for tens of rounds
DEFAULT_RESAMPLES = 2000


def _no_sync() -> None:
    return None


@dataclass(frozen=True)
class Window:
    """One timed window: ``steps`` calls, their wall seconds and the calling thread's CPU
    seconds (NaN when unknown, e.g. a window timed in another process)."""

    wall_s: float
    steps: int
    cpu_s: float = math.nan

    def per_step(self, clock: Clock = "wall") -> float:
        """Seconds per step on the given clock."""
        return (self.wall_s if clock == "wall" else self.cpu_s) / self.steps


@dataclass(frozen=True)
class Estimate:
    """A median with the low and high ends of its interval (all NaN when there is no data)."""

    value: float
    low: float
    high: float

    @property
    def known(self) -> bool:
        return not math.isnan(self.value)

    def below(self, target: float) -> bool:
        """Is the whole interval below ``target``?"""
        return self.high < target

    def above(self, target: float) -> bool:
        """Is the whole interval at or above ``target``?"""
        return self.low >= target


NAN_ESTIMATE = Estimate(math.nan, math.nan, math.nan)


# ---------------------------------------------------------------------------- timing
def timed_window(
    step: Callable[[], Any], warmup: int, steps: int, sync: Callable[[], None] = _no_sync
) -> Window:
    """Run ``warmup`` untimed steps, then time ``steps`` steps (wall and thread CPU time).

    ``sync`` runs before each clock read so queued device work counts in the window it was
    issued in."""
    for _ in range(warmup):
        step()
    sync()
    c0, t0 = time.thread_time(), time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return Window(wall_s=time.perf_counter() - t0, steps=steps, cpu_s=time.thread_time() - c0)


def calibrated_steps(
    step: Callable[[], Any],
    sync: Callable[[], None],
    warmup: int,
    window: int,
    seconds: float,
    limit: int = 100_000,
) -> int:
    """Steps per window: at least ``window``, and enough to last ``seconds`` at the speed of one
    step timed after ``warmup`` untimed ones (a window of a few microseconds measures the
    scheduler, not the step)."""
    if seconds <= 0:
        return window
    one = timed_window(step, warmup, 1, sync).wall_s
    return max(window, min(limit, math.ceil(seconds / max(one, 1e-6))))


def alternate(
    runners: Mapping[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: Mapping[str, int],
    window: int,
    min_window_s: float = 0.0,
    sync: Callable[[], None] = _no_sync,
    label: str = "",
    batch: int = 1,
    before: Callable[[str], None] | None = None,
    after: Callable[[str], None] | None = None,
) -> dict[str, list[Window]]:
    """Round by round, one timed window of each runner in turn, each after its own warm-up.

    The steps per window are calibrated once per runner (:func:`calibrated_steps`) so every
    window of a runner is equally long; ``before`` / ``after`` run around each window, outside
    the clocks (memory statistics, clean-up)."""
    missing = [k for k in runners if k not in warmup]
    if missing:
        raise ValueError(f"alternate: no warm-up steps given for {missing}")
    steps = {
        k: calibrated_steps(f, sync, warmup[k], window, min_window_s) for k, f in runners.items()
    }
    windows: dict[str, list[Window]] = {k: [] for k in runners}
    for r in range(rounds):
        for k, step in runners.items():
            if before is not None:
                before(k)
            windows[k].append(timed_window(step, warmup[k], steps[k], sync))
            if after is not None:
                after(k)
        rates = ", ".join(f"{k} {batch / windows[k][-1].per_step():,.0f}" for k in runners)
        log.info("%s round %d/%d: %s images/s", label, r + 1, rounds, rates)
    return windows


# ---------------------------------------------------------------------------- statistics
def _median_or_nan(values: Sequence[float]) -> float:
    if not values or any(math.isnan(v) for v in values):
        return math.nan
    return statistics.median(values)


def summarise(windows: Sequence[Window], batch: int) -> dict[str, Any]:
    """A variant's windows as medians: wall seconds per window, images/s, ms per step (wall and
    CPU), and the spread (max - min) / median of the windows' images/s, in percent."""
    if not windows:
        raise ValueError("summarise: no windows to summarise")
    per_step = [w.per_step() for w in windows]
    cpu_per_step = [w.per_step("cpu") for w in windows]
    rates = [batch / p for p in per_step]
    median_step = statistics.median(per_step)
    rate = batch / median_step
    return {
        "seconds": statistics.median(w.wall_s for w in windows),
        "images_per_s": rate,
        "ms_per_step": 1e3 * median_step,
        "cpu_ms_per_step": 1e3 * _median_or_nan(cpu_per_step),
        "spread_pct": 100.0 * (max(rates) - min(rates)) / rate,
        "windows": len(windows),
        "steps": windows[0].steps,
        "window_images_per_s": ";".join(f"{r:.6g}" for r in rates),
        "window_cpu_ms_per_step": ""
        if any(math.isnan(c) for c in cpu_per_step)
        else ";".join(f"{1e3 * c:.6g}" for c in cpu_per_step),
    }


def _paired(a: Sequence[Window], b: Sequence[Window]) -> list[tuple[Window, Window]]:
    if len(a) != len(b):
        raise ValueError(f"paired rounds need as many windows on each side, got {len(a)} and "
                         f"{len(b)}")
    return list(zip(a, b))


def paired_ratios(
    windows: Sequence[Window], baseline: Sequence[Window], clock: Clock = "wall"
) -> list[float]:
    """Per round, the throughput of ``windows`` over that of ``baseline`` (> 1: faster), from
    time per step on ``clock``; NaN where that clock was not measured."""
    return [b.per_step(clock) / w.per_step(clock) for w, b in _paired(windows, baseline)]


def paired_differences(
    windows: Sequence[Window], baseline: Sequence[Window], clock: Clock = "wall"
) -> list[float]:
    """Per round, the seconds per step ``windows`` take beyond ``baseline`` (> 0: slower)."""
    return [w.per_step(clock) - b.per_step(clock) for w, b in _paired(windows, baseline)]


def bootstrap_median_interval(
    values: Sequence[float],
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values``.

    Resamples ``values`` with replacement ``resamples`` times and returns the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled medians.
    Seeded, so a report is reproducible from its raw windows. With one value the interval is
    that value: one round says nothing about the noise — run more rounds."""
    if not values:
        raise ValueError("bootstrap_median_interval: no values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1")
    if resamples < 1:
        raise ValueError(f"resamples={resamples} must be a positive integer")
    if len(values) == 1:
        return float(values[0]), float(values[0])
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    alpha = (1.0 - confidence) / 2.0
    # nearest-rank quantiles of the sorted medians
    lo = medians[max(0, math.ceil(alpha * resamples) - 1)]
    hi = medians[min(resamples - 1, math.ceil((1.0 - alpha) * resamples) - 1)]
    return float(lo), float(hi)


def median_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES
) -> Estimate:
    """The median of ``values`` with its percentile bootstrap interval; NaN throughout when
    ``values`` is empty or holds a NaN (a clock that was not measured)."""
    if not values or any(math.isnan(v) for v in values):
        return NAN_ESTIMATE
    low, high = bootstrap_median_interval(values, confidence, resamples)
    return Estimate(float(statistics.median(values)), low, high)

"""PNG plots of runs (and sweeps) from the files they wrote.

A run's curves come from its ``csv/metrics.csv`` (Lightning's CSV logger, on by default): loss
and accuracy per epoch, train against validation, and the learning rate. ``train.py`` draws
them into ``<run>/plots/`` when it finishes;

    python src/plots.py <run dir | sweep dir> [...]

redraws them for any past run, or for every job of a sweep (and the sweep's own plot).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PLOTS_DIR", "SweepPoint", "plot_pareto", "plot_path", "plot_run", "plot_sweep",
           "read_metrics"]

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
# (file name, title, y label, [(metric key, legend label)])
_FIGURES = (
    ("loss.png", "loss", "cross-entropy", [("train/loss", "train"), ("val/loss", "val")]),
    ("accuracy.png", "top-1 accuracy", "accuracy",
     [("train/acc", "train"), ("val/acc", "val"), ("val/acc_best", "val best")]),
)


def read_metrics(csv_path: Path) -> tuple[dict[str, list[tuple[int, float]]],
                                          dict[str, list[tuple[int, float]]]]:
    """``({metric: [(epoch, value)]}, {lr key: [(step, value)]})`` from a Lightning
    ``metrics.csv``, whose rows hold the columns logged at one step (empty cells: not logged
    then). Learning rates are logged by step (``lr-<optimizer>``), the rest once per epoch."""
    epochs: dict[str, dict[int, float]] = {}
    steps: dict[str, dict[int, float]] = {}
    with csv_path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            for key, text in row.items():
                if key in ("epoch", "step") or not text:
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if not math.isfinite(value):
                    continue
                if key.startswith("lr-") and row.get("step"):
                    steps.setdefault(key, {})[int(float(row["step"]))] = value
                elif row.get("epoch"):
                    epochs.setdefault(key, {})[int(float(row["epoch"]))] = value  # the last
    return ({k: sorted(v.items()) for k, v in epochs.items()},
            {k: sorted(v.items()) for k, v in steps.items()})


def _pyplot() -> Any:  # matplotlib.pyplot, imported late: most commands never draw
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers, no GUI thread
    import matplotlib.pyplot as plt

    return plt


def plot_path(run_dir: Path) -> Path:
    return Path(run_dir) / PLOTS_DIR


def plot_run(run_dir: Path) -> list[Path]:
    """Draw a run's loss, accuracy and learning-rate curves into ``<run_dir>/plots/``.

    Returns the files written; raises ``FileNotFoundError`` naming the fix when the run has
    no ``csv/metrics.csv``.
    """
    run_dir = Path(run_dir)
    metrics_csv = run_dir / "csv" / "metrics.csv"
    if not metrics_csv.is_file():
        raise FileNotFoundError(
            f"{metrics_csv} not found: run plots are drawn from the CSV logger's file; train "
            "with logger=csv (the default) or logger=many")
    series, lrs = read_metrics(metrics_csv)
    plt = _pyplot()
    out = plot_path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    figures = [(name, title, ylabel, "epoch", [(series.get(k), label) for k, label in keys])
               for name, title, ylabel, keys in _FIGURES]
    if lrs:
        figures.append(("lr.png", "learning rate", "learning rate", "step",
                        [(lrs[k], k.removeprefix("lr-")) for k in sorted(lrs)]))
    for name, title, ylabel, xlabel, curves in figures:
        present = [(points, label) for points, label in curves if points]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for points, label in present:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(xs) < 60 else None, markersize=3, label=label)
        ax.set_xlabel(xlabel)
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs and steps are whole
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} — {run_dir.name}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / name
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


# ------------------------------------------------------------------ sweeps (classicnets.runs.sweep)


@dataclass(frozen=True)
class SweepPoint:
    """One finished trial (or grid job) of a sweep: its number, the optimised metric's value and
    the values it took for the swept parameters."""

    number: int
    value: float
    params: Mapping[str, Any] = field(default_factory=dict)
    # stopped early by the study's pruner: its value is the last one it reported
    pruned: bool = False


def _sweep_categories(values: Sequence[Any]) -> list[Any]:
    """The distinct values of a categorical parameter: in numeric order when all are numbers
    (batch sizes), else in the order they first appear."""
    distinct = list(dict.fromkeys(values))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct):
        return sorted(distinct)
    return distinct


def plot_sweep(path: Path, metric: str, points: Sequence[SweepPoint],
               scales: Mapping[str, str], best: int | None = None,
               title: str | None = None, numbered: str = "trial") -> Path | None:
    """Draw ``metric`` against each swept parameter (one panel each) into the PNG ``path``.

    ``scales`` maps each parameter to ``log`` (log x axis), ``linear`` or ``categorical``; the
    colour of a point is its number (early to late: where the sampler went; ``numbered`` says
    what the numbers are), and the point numbered ``best`` is a red star. Returns None,
    drawing nothing, without points or parameters.
    """
    names = [n for n in scales if any(n in p.params for p in points)]
    if not points or not names:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    ncols = {1: 1, 2: 2, 4: 2}.get(len(names), 3)
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + 1, 3.4 * nrows), dpi=100,
                             squeeze=False, sharey=True, layout="constrained")
    numbers = [p.number for p in points]
    colour = {"cmap": "viridis", "vmin": min(numbers), "vmax": max(max(numbers), 1)}
    scatter = None
    for ax, name in zip(axes.flat, names):
        have = [p for p in points if p.params.get(name) is not None]
        xs: list[float] = [p.params[name] for p in have]
        if scales[name] == "categorical":
            categories = _sweep_categories(xs)
            # spread equal values a little (fixed, by number) so that they do not hide each other
            xs = [categories.index(x) + 0.06 * (p.number % 5 - 2) for x, p in zip(xs, have)]
            ax.set_xticks(range(len(categories)), [str(c) for c in categories])
            ax.set_xlim(-0.5, len(categories) - 0.5)
        elif scales[name] == "log":
            ax.set_xscale("log")
        ys = [p.value for p in have]
        full = [i for i, p in enumerate(have) if not p.pruned]
        scatter = ax.scatter([xs[i] for i in full], [ys[i] for i in full],
                             c=[have[i].number for i in full], s=30, edgecolors="none", **colour)
        cut = [i for i, p in enumerate(have) if p.pruned]
        if cut:  # pruned trials: the value they had when they were stopped
            ax.scatter([xs[i] for i in cut], [ys[i] for i in cut], marker="x", s=30,
                       c=[have[i].number for i in cut], label="pruned (value when stopped)",
                       **colour)
        for x, p in zip(xs, have):
            if p.number == best:
                ax.scatter([x], [p.value], marker="*", s=260, c="red", edgecolors="black",
                           linewidths=0.6, zorder=3, label=f"best (#{p.number})")
        ax.set_xlabel(name + (" (log)" if scales[name] == "log" else ""))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(metric)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    if best is not None or any(p.pruned for p in points):
        axes[0, 0].legend(loc="best", fontsize="small")
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=axes.ravel().tolist(), label=numbered, shrink=0.9)
        bar.locator = MaxNLocator(integer=True)  # trial numbers are whole
        bar.update_ticks()
    fig.suptitle(title or f"{metric} against the swept parameters")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_pareto(path: Path, metrics: Sequence[str], directions: Sequence[str],
                points: Sequence[tuple[int, Sequence[float]]], front: set[int],
                title: str | None = None) -> Path | None:
    """The trials of a multi-objective study in objective space, the first objective against
    each other one: every complete trial a dot, the Pareto front (``front``: trial numbers) red
    and joined in order. Returns None without at least two objectives and one point."""
    if len(metrics) < 2 or not points:
        return None
    plt = _pyplot()
    pairs = len(metrics) - 1
    fig, axes = plt.subplots(1, pairs, figsize=(5.2 * pairs, 4.2), dpi=100, squeeze=False,
                             layout="constrained")
    for k, ax in enumerate(axes.flat, start=1):
        xs = [v[k] for _, v in points]
        ys = [v[0] for _, v in points]
        ax.scatter(xs, ys, s=24, c="tab:gray", alpha=0.7, edgecolors="none", label="trial")
        members = sorted(((v[k], v[0], n) for n, v in points if n in front))
        if members:
            ax.plot([m[0] for m in members], [m[1] for m in members], "-o", c="tab:red", ms=6,
                    label="Pareto front")
            for x, y, n in members:
                ax.annotate(f"#{n}", (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize="x-small")
        if all(x > 0 for x in xs) and max(xs) / max(min(xs), 1e-300) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"{metrics[k]} ({directions[k]})")
        ax.set_ylabel(f"{metrics[0]} ({directions[0]})")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(title or "Pareto front")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

"""Multiruns: check an Optuna search before its first trial, and tabulate and plot any sweep
at its end (the Hydra callback ``SweepSummary``).

A grid multirun is summarised from its job directories: one row per job, its overrides and
final metrics. An Optuna search (``hparams_search=...``) is summarised from its study database:
one row per trial of the study, from every launch that added to it, with the trial's state,
parameters and value, the best trial marked, and the metrics its job wrote to
``<sweep dir>/<trial number>/metrics.json``. Both also get ``sweep_plot.png``: the optimised
metric against each swept parameter.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from classicnets.studies import (
    EPOCHS_ATTR,
    MAX_EPOCHS_ATTR,
    PRUNED_ATTR,
    SweepConfigError,
    load_study,
    redact_url,
)

__all__ = ["EPOCHS_ATTR", "INTERRUPTED_ATTR", "MAX_EPOCHS_ATTR", "PLOT_NAME", "PRUNED_ATTR",
           "SURPLUS_ATTR", "SweepConfigError", "SweepSummary", "check_sweep",
           "metric_direction", "summarise_study", "summarise_sweep"]

log = logging.getLogger(__name__)
COLUMNS = ("train/loss", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc",
           "test/acc_top5")
PLOT_NAME = "sweep_plot.png"
# study attribute that ties a study to the metric its values measure, across launches
METRIC_ATTR = "optimized_metric"
# trial attribute of a trial stopped by Ctrl-C (set by the sweeper, which then fails the trial)
INTERRUPTED_ATTR = "interrupted"
# a trial asked after the study reached hydra.sweeper.max_trials (failed without running)
SURPLUS_ATTR = "surplus"


def metric_direction(metric: str | None) -> str | None:
    """``maximize`` for accuracies, ``minimize`` for losses and errors, None when the name
    says neither."""
    leaf = (metric or "").rsplit("/", 1)[-1].lower()
    if "acc" in leaf or leaf.startswith("top"):
        return "maximize"
    if "loss" in leaf or "err" in leaf:
        return "minimize"
    return None


# ------------------------------------------------------------------ checks before the first job


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` (dotted) names a node of ``cfg``, without resolving anything: the
    master config of a multirun holds interpolations (``${hydra:runtime.output_dir}``) that
    only resolve inside a job, and ``???`` values still name keys that a sweep may set."""
    node: Any = cfg
    for part in key.split("."):
        # keys(), not `in node`: DictConfig's `in` says no for a ??? value
        if isinstance(node, DictConfig) and part in node.keys():  # noqa: SIM118
            if OmegaConf.is_interpolation(node, part):
                return True  # its target's keys are only known once resolved
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return False
    return True


def _key_error(cfg: DictConfig, key: str, where: str) -> SweepConfigError:
    """The error for a swept key the config lacks, listing the keys next to where it points."""
    parts = key.split(".")
    parent = ""
    for i in range(len(parts) - 1, 0, -1):
        if _has_key(cfg, ".".join(parts[:i])):
            parent = ".".join(parts[:i])
            break
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig):
        valid = sorted(str(k) for k in node if not (parent == "" and k == "hydra"))
    else:
        valid = []
    if not parent:
        groups = cfg.hydra.runtime.choices.keys() if "hydra" in cfg else []
        valid = sorted(set(valid) | {str(g) for g in groups if "/" not in str(g)})
    return SweepConfigError(
        f"{where} names '{key}', which the config does not have. Valid keys of "
        f"{parent or 'the root config'}: {', '.join(valid) or '(none)'}. Fix the name; a key "
        f"new to the config takes a '+' (+{key}).")


def _group_options(cfg: DictConfig, group: str) -> list[str] | None:
    """The options of config group ``group`` in the file config sources; None when no file
    source has the group (packaged or structured configs: left to Hydra)."""
    sources = cfg.hydra.runtime.get("config_sources") or []
    found: set[str] | None = None
    for source in sources:
        if source.get("schema") != "file" or not source.get("path"):
            continue
        folder = Path(source.path) / group
        if folder.is_dir():
            found = (found or set()) | {p.relative_to(folder).with_suffix("").as_posix()
                                        for p in folder.rglob("*.yaml")}
    return sorted(found) if found is not None else None


def _values(override: Override) -> list[str]:
    """The values a swept key takes, as text; [] for intervals (a continuum, no names)."""
    if override.is_interval_sweep():
        return []
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def _swept(cfg: DictConfig) -> list[tuple[Override, str]]:
    """Every swept key, with where it was set: the sweeper's ``params`` and the command line's
    sweeps (``key=a,b``). The command line's fixed overrides were applied when the config was
    composed, so Hydra has already checked them."""
    parser = OverridesParser.create()
    swept: list[tuple[Override, str]] = []
    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    if isinstance(params, DictConfig):
        for key, value in params.items():
            text = f"{key}={value}"
            swept += [(o, f"hydra.sweeper.params ({text})") for o in parser.parse_overrides([text])]
    task = [str(o) for o in cfg.hydra.overrides.task]
    swept += [(o, f"the sweep override {o.input_line}") for o in parser.parse_overrides(task)
              if o.is_sweep_override()]
    return swept


def check_sweep(cfg: DictConfig) -> None:
    """Raise ``SweepConfigError`` when a swept key is not in the config, a swept group option
    does not exist, or the sweeper's direction contradicts ``optimized_metric``."""
    choices = cfg.hydra.runtime.choices
    for override, where in _swept(cfg):
        if override.is_add() or override.is_force_add() or override.is_delete():
            continue  # '+key' adds what does not exist yet; '~key' removes
        key = override.key_or_group
        if key in choices:
            options = _group_options(cfg, key)
            bad = [v for v in _values(override) if v != "null" and options is not None
                   and v not in options]
            if bad:
                raise SweepConfigError(
                    f"{where}: config group '{key}' has no option {', '.join(bad)}; its "
                    f"options: {', '.join(options or [])}")
        elif override.package is None and not _has_key(cfg, key):
            raise _key_error(cfg, key, where)
    direction = _direction(cfg)
    metric = cfg.get("optimized_metric")
    if isinstance(metric, ListConfig) and isinstance(
            OmegaConf.select(cfg, "hydra.sweeper.direction"), ListConfig):
        directions = [str(d).lower() for d in cfg.hydra.sweeper.direction]
        for i, (one, way) in enumerate(zip(metric, directions)):
            expected = metric_direction(one)
            if expected and way != expected:
                raise SweepConfigError(
                    f"hydra.sweeper.direction[{i}]={way}, but optimized_metric[{i}]={one} is "
                    f"to {expected}: give each metric its own direction, in the same order")
        return
    expected = metric_direction(metric if isinstance(metric, str) else None)
    if direction and expected and direction != expected:
        raise SweepConfigError(
            f"hydra.sweeper.direction={direction}, but optimized_metric={metric} is to "
            f"{expected}; set hydra.sweeper.direction={expected} (or optimize another metric)")


def _direction(cfg: DictConfig) -> str | None:
    """The sweeper's one direction, ``maximize`` or ``minimize``; None for several objectives
    (each names its own: nothing to compare with one metric) or a sweeper without one."""
    direction = OmegaConf.select(cfg, "hydra.sweeper.direction")
    if direction is None or isinstance(direction, ListConfig | list):
        return None
    return str(getattr(direction, "name", direction)).lower()  # the plugin's enum, or text


def _study_ref(cfg: DictConfig) -> tuple[str, str] | None:
    """``(storage URL, study name)`` of an Optuna sweep kept in a database, else None."""
    storage = OmegaConf.select(cfg, "hydra.sweeper.storage")
    name = OmegaConf.select(cfg, "hydra.sweeper.study_name")
    if isinstance(storage, str) and storage and name:
        return storage, str(name)
    return None


# ------------------------------------------------------------------ summary tables and plots


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _write_tables(sweep_dir: Path, fields: list[str], rows: list[dict[str, Any]],
                  header: list[str]) -> None:
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [*header, "", "| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(_cell(r.get(f)) for f in fields) + " |" for r in rows]
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")


def _job_record(job: Path) -> tuple[list[str], dict[str, Any] | None]:
    """A job's overrides, and its ``metrics.json`` (None: it crashed or never finished)."""
    path = job / "metrics.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return list(data.get("overrides", [])), data
    saved = job / ".hydra" / "overrides.yaml"
    return (list(OmegaConf.load(saved)) if saved.exists() else []), None


def _common(overrides: Iterable[list[str]]) -> set[str]:
    sets = [set(o) for o in overrides]
    return set.intersection(*sets) if sets else set()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _grid_params(swept: list[dict[str, str]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each job's swept values, typed, and how to draw each key: numbers spanning more than a
    factor 20 (0.1, 0.01, 0.001) on a log axis, other numbers on a linear one, anything else
    (model names, null) as categories."""
    typed: list[dict[str, Any]] = [dict(p) for p in swept]
    scales: dict[str, str] = {}
    for key in sorted({k for p in swept for k in p}):
        parsed = {i: _number(p[key]) for i, p in enumerate(swept) if key in p}
        numbers = {i: n for i, n in parsed.items() if n is not None}
        if len(numbers) < len(parsed):
            scales[key] = "categorical"
            continue
        for i, n in numbers.items():
            typed[i][key] = n
        low, high = min(numbers.values()), max(numbers.values())
        scales[key] = "log" if low > 0 and high / low > 20 else "linear"
    return typed, scales


def _draw(sweep_dir: Path, **kwargs: Any) -> Path | None:
    """Draw the sweep plot; a finished sweep must not fail on a figure, so say why instead."""
    from classicnets.runs.plots import plot_sweep

    try:
        path = plot_sweep(sweep_dir / PLOT_NAME, **kwargs)
    except Exception as err:
        log.warning("sweep plot failed (%s: %s)", type(err).__name__, err)
        return None
    if path is not None:
        log.info("sweep plot: %s", path)
    return path


def summarise_sweep(sweep_dir: Path, metric: str | None = None) -> list[dict[str, Any]]:
    """Write ``sweep_summary.csv`` and ``.md`` from each job's ``metrics.json``, and the plot.

    A job that crashed has no metrics file; it still gets a row, marked ``failed``. The best
    job by ``metric`` (default: each job's ``optimized_metric``) is marked when the metric's
    name says which way is better.
    """
    from classicnets.runs.plots import SweepPoint

    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))
    rows: list[dict[str, Any]] = []
    overrides: list[list[str]] = []
    values: list[float | None] = []
    for job in jobs:
        job_overrides, data = _job_record(job)
        overrides.append(job_overrides)
        row: dict[str, Any] = {"job": job.name, "status": "ok" if data else "failed"}
        value = None
        if data:
            row.update({k: data["metrics"].get(k) for k in COLUMNS})
            metric = metric or data.get("optimized_metric")
            value = data["metrics"].get(metric) if metric else None
        values.append(value if value is not None and math.isfinite(value) else None)
        rows.append(row)
    # the swept values tell jobs apart; overrides every job shares go in the header
    common = _common(overrides)
    swept: list[dict[str, str]] = []
    for row, job_overrides in zip(rows, overrides):
        own = [o for o in job_overrides if o not in common]
        row["overrides"] = " ".join(own)
        swept.append(dict(o.lstrip("+~").split("=", 1) for o in own if "=" in o))
    direction = metric_direction(metric)
    scored = [(v, i) for i, v in enumerate(values) if v is not None]
    best = None
    if scored and direction:
        pick = max if direction == "maximize" else min
        best = pick(scored, key=lambda p: p[0])[1]  # the first of equals
    for i, row in enumerate(rows):
        row["best"] = "yes" if i == best else ""
    fields = ["job", "overrides", "status", *COLUMNS, "best"]
    header = [f"Sweep {sweep_dir.name}; every job: {' '.join(sorted(common)) or '(nothing else)'}"]
    if best is not None:
        header.append(f"Best ({direction} {metric}): job {rows[best]['job']}, "
                      f"{metric} = {_cell(values[best])}")
    _write_tables(sweep_dir, fields, rows, header)
    params, scales = _grid_params(swept)
    points = [SweepPoint(int(r["job"]), v, p) for r, v, p in zip(rows, values, params)
              if v is not None]
    if metric and points and scales:
        _draw(sweep_dir, metric=metric, points=points, scales=scales, numbered="job",
              best=int(rows[best]["job"]) if best is not None else None,
              title=f"sweep {sweep_dir.name}: {metric}")
    return rows


def _distribution_scale(distribution: Any) -> str:
    """``log``, ``linear`` or ``categorical``, for Optuna 2's and later distributions alike."""
    name = type(distribution).__name__
    if name == "CategoricalDistribution":
        return "categorical"
    if "LogUniform" in name or getattr(distribution, "log", False):
        return "log"
    return "linear"


PARETO_PLOT = "pareto_front.png"


def _metric_names(metric: Any, n: int) -> list[str]:
    if isinstance(metric, ListConfig | list | tuple):
        return [str(m) for m in metric]
    return [str(metric or "value")] if n == 1 else [f"value {i}" for i in range(n)]


def summarise_study(sweep_dir: Path, storage: str, study_name: str,
                    metric: Any = None) -> list[dict[str, Any]]:
    """Write ``sweep_summary.csv`` and ``.md`` for every trial of an Optuna study, and the plot
    (and, for several objectives, ``pareto_front.png``).

    Each row: trial number, state, value(s), whether it is the best (one objective) or on the
    Pareto front (several), its parameters, the epochs it trained (a pruned trial stopped
    early), and the metrics its job wrote to ``<sweep_dir>/<trial number>/metrics.json``.
    Trials of every launch and worker that added to the study are listed; ``running`` ones are
    in progress elsewhere, or their worker was killed (a heartbeat storage fails them later).
    """
    import optuna

    from classicnets.runs.plots import SweepPoint, plot_pareto

    State = optuna.trial.TrialState
    study = load_study(storage, study_name)
    trials = study.get_trials(deepcopy=False)
    directions = [d.name.lower() for d in study.directions]
    metrics = _metric_names(metric or study.user_attrs.get(METRIC_ATTR), len(directions))
    complete = [t for t in trials if t.state == State.COMPLETE]
    if not complete:
        best: set[int] = set()
    elif len(directions) == 1:
        best = {study.best_trial.number}  # one: the first of equals
    else:
        best = {t.number for t in study.best_trials}  # the Pareto front
    params: dict[str, str] = {}  # searched name -> scale (log, linear, categorical)
    for t in trials:
        for name, distribution in t.distributions.items():
            params.setdefault(name, _distribution_scale(distribution))
    rows: list[dict[str, Any]] = []
    overrides: list[list[str]] = []
    for t in trials:
        job_overrides, data = _job_record(sweep_dir / str(t.number))
        if job_overrides:
            overrides.append(job_overrides)
        duration = t.duration.total_seconds() if t.duration is not None else None
        state = t.state.name.lower()
        for attr in (INTERRUPTED_ATTR, SURPLUS_ATTR):
            if t.user_attrs.get(attr) and t.state == State.FAIL:
                state = attr
        values = t.values if t.values is not None else [None] * len(directions)
        row = {"trial": t.number, "state": state,
               **({"value": t.value} if len(directions) == 1 else
                  dict(zip(metrics, values))),
               ("best" if len(directions) == 1 else "pareto"): "yes" if t.number in best else "",
               **{p: t.params.get(p) for p in params},
               "epochs": t.user_attrs.get(EPOCHS_ATTR),
               **({k: data["metrics"].get(k) for k in COLUMNS} if data else {}),
               "duration_s": round(duration, 1) if duration is not None else None}
        with warnings.catch_warnings():  # "experimental" in Optuna 5: said once is enough
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry_of = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
        if retry_of is not None:  # queued again after its worker stopped beating
            row["state"] += f" (retry of {retry_of})"
        rows.append(row)
    states: dict[str, int] = {}
    for row in rows:
        key = str(row["state"]).split(" (", 1)[0]
        states[key] = states.get(key, 0) + 1
    fixed = sorted(o for o in _common(overrides) if o.split("=", 1)[0] not in params)
    running = " (running: in progress, or its worker was killed)" if "running" in states else ""
    aims = (f"{directions[0]} {metrics[0]}" if len(metrics) == 1 else
            ", ".join(f"{d} {m}" for d, m in zip(directions, metrics)))
    header = [f"Study {study_name} ({aims}) in {redact_url(storage)}",
              f"{len(rows)} trials: "
              + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + running,
              f"Every trial: {' '.join(fixed) or '(nothing else)'}"]
    header += _pruning_lines(trials)
    if len(directions) == 1 and complete:
        top = study.best_trial
        header.append(f"Best: trial {top.number}, {metrics[0]} = {_cell(top.value)} with "
                      + " ".join(f"{k}={_cell(v)}" for k, v in top.params.items()))
    elif complete:
        header.append(f"Pareto front ({len(best)} of {len(complete)} complete trials, "
                      f"column pareto): trials {', '.join(str(n) for n in sorted(best))}")
    value_fields = ["value", "best"] if len(directions) == 1 else [*metrics, "pareto"]
    fields = ["trial", "state", *value_fields, *params, "epochs",
              *(c for c in COLUMNS if c not in value_fields), "duration_s"]
    _write_tables(sweep_dir, fields, rows, header)
    pruned = [t for t in trials if t.state == State.PRUNED and t.value is not None]
    if len(directions) == 1 and (complete or pruned):
        points = [SweepPoint(t.number, float(t.value), t.params, t.state == State.PRUNED)
                  for t in sorted([*complete, *pruned], key=lambda t: t.number)]
        _draw(sweep_dir, metric=metrics[0], points=points, scales=params,
              best=study.best_trial.number if complete else None,
              title=f"study {study_name}: {metrics[0]} ({directions[0]}), "
                    f"{len(complete)} of {len(rows)} trials complete"
                    + (f", {len(pruned)} pruned" if pruned else ""))
    elif complete:
        try:
            path = plot_pareto(sweep_dir / PARETO_PLOT, metrics, directions,
                               [(t.number, t.values) for t in complete], best,
                               title=f"study {study_name}: Pareto front, {len(best)} of "
                                     f"{len(complete)} complete trials")
            if path is not None:
                log.info("Pareto front plot: %s", path)
        except Exception as err:
            log.warning("Pareto plot failed (%s: %s)", type(err).__name__, err)
    return rows


def _pruning_lines(trials: Sequence[Any]) -> list[str]:
    """The compute pruning saved: epochs trained against epochs configured, over the trials
    that reported both (the trial's callback records them)."""
    import optuna

    ran = [t for t in trials if t.user_attrs.get(EPOCHS_ATTR) is not None
           and t.user_attrs.get(MAX_EPOCHS_ATTR) not in (None, -1)]
    n_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    if not n_pruned:
        return []
    trained = sum(int(t.user_attrs[EPOCHS_ATTR]) for t in ran)
    budget = sum(int(t.user_attrs[MAX_EPOCHS_ATTR]) for t in ran)
    saved = f", {budget - trained} saved ({(budget - trained) / budget:.0%})" if budget else ""
    return [f"Pruned: {n_pruned} trial(s); epochs trained {trained} of {budget}{saved}"]


def redraw_sweep(sweep_dir: Path) -> None:
    """Write a finished sweep's summary and plot again from its files (``multirun.yaml``, the
    jobs' ``metrics.json``, the study database): ``python src/plots.py <sweep dir>``."""
    saved = sweep_dir / "multirun.yaml"
    cfg = OmegaConf.load(saved) if saved.is_file() else OmegaConf.create({})
    with open_dict(cfg):  # the directory as it is now: the sweep may have been moved
        OmegaConf.update(cfg, "hydra.sweep.dir", str(sweep_dir), force_add=True)
        db = sweep_dir / "optuna.db"  # a search directory (conf/hparams_search) keeps its study
        if db.is_file() and _study_ref(cfg) is None:
            import optuna

            storage = f"sqlite:///{db}"
            names = [st.study_name for st in optuna.get_all_study_summaries(storage)]
            if sweep_dir.name not in names and len(names) != 1:
                raise SweepConfigError(f"{db} holds studies {names}; none is named after the "
                                       f"directory ({sweep_dir.name}), so which one to draw?")
            name = sweep_dir.name if sweep_dir.name in names else names[0]
            OmegaConf.update(cfg, "hydra.sweeper.storage", storage, force_add=True)
            OmegaConf.update(cfg, "hydra.sweeper.study_name", name, force_add=True)
        if not cfg.get("optimized_metric"):  # as the jobs recorded it
            for job in sorted(sweep_dir.glob("*/metrics.json")):
                cfg.optimized_metric = json.loads(job.read_text()).get("optimized_metric")
                break
    SweepSummary().on_multirun_end(cfg)


class SweepSummary(Callback):
    """At the end of a multirun, summarise it (and plot it) in the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        metric = config.get("optimized_metric")
        ref = _study_ref(config)
        if ref is not None:
            summarise_study(sweep_dir, *ref, metric=metric)
        else:
            summarise_sweep(sweep_dir, metric=metric)
        log.info("sweep summary: %s", sweep_dir / "sweep_summary.md")

"""Optuna studies for ``hparams_search=...``: the search space and objectives of classicnets'
sweeper (``src/hydra_plugins/classicnets_optuna_sweeper``), and the study a launch creates or
continues, each checked before the first trial.

The search space is written in Hydra's override grammar (``interval(...)``, ``choice(...)``,
``range(...)``, ``tag(log, ...)``), which Hydra parses; :func:`distributions` turns each parsed
sweep into an Optuna distribution. A study stores the space it was created with, so that a
relaunch over another space is told what differs (:func:`space_changes`). Storages and pruners:
``classicnets.studies``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from omegaconf import DictConfig, ListConfig, OmegaConf

from classicnets.runs.sweep import METRIC_ATTR
from classicnets.studies import (
    ENV_PRUNER,
    ENV_STUDY,
    ENV_TRIAL,
    SweepConfigError,
    open_storage,
    redact_url,
)

__all__ = ["SPACE_ATTR", "check_objectives", "check_study", "distributions",
           "open_study", "space_changes", "sweeper_storage", "trial_env",
           "trial_overrides"]

log = logging.getLogger(__name__)

# study attribute: the search space it was created with (JSON of each distribution), so that a
# relaunch with another space is told what differs instead of mixing two searches
SPACE_ATTR = "search_space"
# ------------------------------------------------------------------ search space


def _encoded(override: Override) -> list[Any]:
    choices = list(override.sweep_iterator(transformer=Transformer.encode))
    for value in choices:
        if not isinstance(value, str | int | float | bool | type(None)):
            raise SweepConfigError(f"{override.input_line}: a choice takes numbers, text, "
                                   f"true/false or null, not {type(value).__name__} ({value!r})")
    return choices


def _distribution(override: Override) -> Any:
    """The Optuna distribution of one swept key (None for a fixed value)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    log_scale = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(_encoded(override))
    if isinstance(value, RangeSweep):
        if value.shuffle:
            return CategoricalDistribution(_encoded(override))
        start, stop, step = value.start, value.stop, value.step
        # both ends included, as Hydra's Optuna sweeper had it (a study it began continues
        # over the same space), though Hydra's own range() stops before `stop`
        if any(isinstance(v, float) for v in (start, stop, step)):
            return FloatDistribution(float(start), float(stop), step=float(step))
        return IntDistribution(int(start), int(stop), step=int(step))
    if isinstance(value, IntervalSweep):
        start, end = value.start, value.end
        if isinstance(start, int) and isinstance(end, int):
            return IntDistribution(start, end, log=log_scale)
        return FloatDistribution(float(start), float(end), log=log_scale)
    if override.is_sweep_override():
        raise SweepConfigError(f"{override.input_line}: not a sweep Optuna can sample; use "
                               "choice(...), range(...) or interval(...), tag(log, ...) for a "
                               "log scale")
    return None


def distributions(params: Mapping[str, Any] | None, arguments: Sequence[str] = ()
                  ) -> tuple[dict[str, Any], list[str]]:
    """The search space (key -> Optuna distribution) of ``hydra.sweeper.params`` and the
    command line, and the command line's fixed overrides (passed to every trial)."""
    texts = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides(texts):
        try:
            found = _distribution(override)
        except ValueError as err:  # Optuna's own: low > high, log with low <= 0
            raise SweepConfigError(f"{override.input_line}: {err}") from err
        key = override.get_key_element()
        if found is None:
            fixed.append(override.input_line)
            space.pop(key, None)  # a fixed value on the command line wins over the space
        else:
            space[key] = found
    return space, fixed


def trial_overrides(params: Mapping[str, Any], fixed: Sequence[str]) -> list[str]:
    """A trial's overrides: each sampled value in Hydra's syntax (None as null, booleans as
    true/false; strings came from the grammar already escaped), then the fixed ones."""
    out = []
    for key, value in params.items():
        if value is None:
            text = "null"
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        out.append(f"{key}={text}")
    return [*out, *fixed]


def _space_json(space: Mapping[str, Any]) -> str:
    from optuna.distributions import distribution_to_json

    return json.dumps({k: json.loads(distribution_to_json(d)) for k, d in sorted(space.items())},
                      sort_keys=True)


def space_changes(stored: str, space: Mapping[str, Any]) -> list[str]:
    """What differs between the space a study was created with and this launch's, in words."""
    from optuna.distributions import json_to_distribution

    was = {k: json_to_distribution(json.dumps(v)) for k, v in json.loads(stored).items()}
    changes = [f"{k} is new ({space[k]})" for k in sorted(set(space) - set(was))]
    changes += [f"{k} is no longer searched (was {was[k]})" for k in sorted(set(was) - set(space))]
    changes += [f"{k}: {was[k]} -> {space[k]}" for k in sorted(set(was) & set(space))
                if was[k] != space[k]]
    return changes


# ------------------------------------------------------------------ objectives and pruner


def objectives(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """``optimized_metric`` and ``hydra.sweeper.direction``, each as a list."""
    metric = cfg.get("optimized_metric")
    metrics = [str(m) for m in metric] if isinstance(metric, ListConfig | list) else (
        [str(metric)] if metric else [])
    direction = OmegaConf.select(cfg, "hydra.sweeper.direction")
    if isinstance(direction, ListConfig | list):
        directions = [str(d).lower() for d in direction]
    else:
        directions = [str(direction).lower()] if direction is not None else ["minimize"]
    return metrics, directions


def check_objectives(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """The metrics and directions, refused when they do not fit each other or the pruner."""
    metrics, directions = objectives(cfg)
    bad = [d for d in directions if d not in ("minimize", "maximize")]
    if bad:
        raise SweepConfigError(f"hydra.sweeper.direction={bad[0]}: each direction is maximize "
                               "or minimize")
    if metrics and len(metrics) != len(directions):
        raise SweepConfigError(
            f"optimized_metric names {len(metrics)} metric(s) ({', '.join(metrics)}) but "
            f"hydra.sweeper.direction has {len(directions)} ({', '.join(directions)}); give one "
            "direction per metric, e.g. hydra.sweeper.direction=[maximize,minimize]")
    pruner = str(OmegaConf.select(cfg, "hydra.sweeper.pruner") or "none")
    if pruner != "none" and len(directions) > 1:
        raise SweepConfigError(
            f"hydra.sweeper.pruner={pruner} with {len(directions)} objectives: Optuna prunes "
            "single-objective studies only (a trial reports one value per step). Use "
            "hydra.sweeper.pruner=none, or optimize one metric")
    return metrics, directions


def trial_env(study_name: str, number: int, pruner: str = "none",
              pruner_args: Mapping[str, Any] | None = None) -> list[str]:
    """Overrides that hand a trial's job its study, trial number and pruner (environment
    variables Hydra sets for the job, inherited by every process it starts)."""
    pruning = json.dumps({"name": pruner, "args": dict(pruner_args or {})}, sort_keys=True)
    # not the storage URL: it may hold a password, and the launcher logs every override; the
    # job reads it from its own hydra.sweeper.storage
    return [f"++hydra.job.env_set.{ENV_STUDY}='{study_name}'",
            f"++hydra.job.env_set.{ENV_TRIAL}='{number}'",
            f"++hydra.job.env_set.{ENV_PRUNER}='{pruning}'"]


def check_study(storage: Any, url: str, name: str, metrics: Sequence[str],
                directions: Sequence[str], space: Mapping[str, Any]) -> int:
    """Create the study, or check the one a relaunch continues (same directions, metric and
    search space); the number of trials it holds."""
    import optuna

    existing = {s.study_name: s for s in optuna.study.get_all_study_summaries(storage)}
    where = f"study '{name}' in {redact_url(url)}"
    fix = "or start a new study with hydra.sweeper.study_name=<new name>"
    if name not in existing:
        study = optuna.create_study(study_name=name, storage=storage,
                                    directions=list(directions), load_if_exists=True)
        if metrics:
            study.set_user_attr(METRIC_ATTR, metrics[0] if len(metrics) == 1 else list(metrics))
        study.set_user_attr(SPACE_ATTR, _space_json(space))
        log.info("new %s", where)
        return 0
    summary = existing[name]
    stored = [d.name.lower() for d in summary.directions]
    if stored != list(directions):
        raise SweepConfigError(f"{where} was created to {'/'.join(stored)}; this launch asks to "
                               f"{'/'.join(directions)}. Keep the direction, {fix}")
    was = summary.user_attrs.get(METRIC_ATTR)
    now = metrics[0] if len(metrics) == 1 else list(metrics)
    if metrics and was and was != now:
        raise SweepConfigError(f"{where} optimizes {was}; this launch optimizes {now}. Keep "
                               f"optimized_metric, {fix}")
    space_was = summary.user_attrs.get(SPACE_ATTR)
    if space_was:
        changes = space_changes(space_was, space)
        if changes:
            raise SweepConfigError(
                f"{where} was created with another search space: {'; '.join(changes)}. Keep "
                f"hydra.sweeper.params as they were, {fix}")
    log.info("continuing %s (%d trials so far)", where, summary.n_trials)
    return summary.n_trials


def sweeper_storage(cfg: DictConfig) -> Any:
    """The storage ``hydra.sweeper`` names, with its heartbeat settings."""
    sweeper = cfg.hydra.sweeper
    return open_storage(str(sweeper.storage), sweeper.get("heartbeat_interval"),
                        sweeper.get("grace_period"), int(sweeper.get("retries") or 0))


def open_study(cfg: DictConfig, space: Mapping[str, Any] | None = None) -> int:
    """Create the sweep's study or check the one a relaunch continues (directions, metric,
    search space); the trials it already holds (0 without a storage: an in-memory study)."""
    import optuna

    sweeper = cfg.hydra.sweeper
    if not sweeper.get("storage") or not sweeper.get("study_name"):
        return 0
    metrics, directions = check_objectives(cfg)
    if space is None:
        space = distributions(sweeper.get("params"))[0]
    # Optuna's INFO lines repeat the sweeper's; alembic lists every step it sets up
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return check_study(sweeper_storage(cfg), str(sweeper.storage), str(sweeper.study_name),
                       metrics, directions, space)

"""The search loop of classicnets' Optuna sweeper (``hparams_search=...``).

Each of ``n_jobs`` threads asks the study for a trial as soon as its previous one ended (no
batches that wait for their slowest trial), launches the trial's job through Hydra's launcher
(basic, ``parallel``, ``slurm``) and tells the study how it ended. With an RDB storage and
``hydra.sweeper.heartbeat_interval``, a heartbeat is recorded while each trial runs and, before
each ask, Optuna's ``fail_stale_trials`` fails a dead worker's trial and queues it again, as
``Study.optimize`` does (whose loop this is not: see ``_Search._next_trial``). Independent
worker processes (N shells, N SLURM jobs) running the same command share the study through its
storage; ``hydra.sweeper.max_trials`` stops them all once the study holds that many finished
trials.

A trial's job learns its study and trial number through environment variables (set by Hydra for
the job: ``hydra.job.env_set``); ``classicnets.callbacks.search.OptunaTrialReport`` reports
``optimized_metric`` after every validation and, when the pruner says so, stops the run there
and marks the trial; the job then returns normally and the trial is told PRUNED here.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from classicnets.runs.study import (
    check_objectives,
    check_study,
    distributions,
    sweeper_storage,
    trial_env,
    trial_overrides,
)
from classicnets.runs.sweep import (
    INTERRUPTED_ATTR,
    PRUNED_ATTR,
    SURPLUS_ATTR,
    SweepConfigError,
    check_sweep,
    summarise_study,
)
from classicnets.studies import make_pruner, redact_url

__all__ = ["SearchSettings", "run_search", "sampler_seed", "suggest"]

log = logging.getLogger(__name__)
# the callback the trials need for pruning (conf/callbacks/default.yaml)
REPORT_CALLBACK = "callbacks.optuna_trial"
_DONE_STATES = ("COMPLETE", "PRUNED")


class SearchSettings:
    """What the sweeper was configured with (``hydra.sweeper``, conf/hydra/sweeper/study.yaml)."""

    def __init__(self, *, n_trials: int, n_jobs: int, max_failure_rate: float,
                 max_trials: int | None, worker: int) -> None:
        for key, value, low in (("n_trials", n_trials, 0), ("n_jobs", n_jobs, 1),
                                ("worker", worker, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SweepConfigError(f"hydra.sweeper.{key}={value}: an integer >= {low}")
        if max_trials is not None and (isinstance(max_trials, bool) or not isinstance(
                max_trials, int) or max_trials < 1):
            raise SweepConfigError(f"hydra.sweeper.max_trials={max_trials}: a positive integer "
                                   "(trials the study should hold) or null")
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise SweepConfigError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: "
                                   "between 0 and 1")
        self.n_trials, self.n_jobs, self.max_trials, self.worker = (n_trials, n_jobs,
                                                                    max_trials, worker)
        self.max_failure_rate = float(max_failure_rate)


def sampler_seed(seed: int | None, trials_so_far: int, worker: int) -> int | None:
    """The sampler's seed for this launch: ``seed`` for a new study; a relaunch adds the trials
    already drawn (a seeded sampler would otherwise replay its random start-up draws), and
    worker ``k`` of several sharing a study adds ``1000 * k`` (they would draw alike)."""
    if seed is None:
        return None
    return int(seed) + trials_so_far + 1000 * worker


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    """Draw ``name`` from ``distribution`` through the trial's public ``suggest_*`` API (an
    enqueued or retried trial gets its fixed value back)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    d = distribution
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    raise TypeError(f"{name}: no suggest_* for {type(d).__name__}")


class _Surplus(Exception):
    """A trial asked after the study reached max_trials (another worker took the last one)."""


class _Search:
    """One launch's search: the study, the launcher, the trials in flight."""

    def __init__(self, config: DictConfig, launcher: Any, settings: SearchSettings,
                 arguments: Sequence[str]) -> None:
        import optuna
        from hydra.utils import instantiate

        self.config, self.launcher, self.settings = config, launcher, settings
        sweeper = config.hydra.sweeper
        check_sweep(config)
        self.metrics, self.directions = check_objectives(config)
        self.space, self.fixed = distributions(sweeper.get("params"), arguments)
        if not self.space:
            raise SweepConfigError("hydra.sweeper.params is empty and the command line sweeps "
                                   "nothing: there is nothing to search")
        self.pruner_name = str(sweeper.get("pruner") or "none")
        args = sweeper.get("pruner_args")
        self.pruner_args: dict[str, Any] = (
            OmegaConf.to_container(args, resolve=True) if isinstance(args, DictConfig) else {})
        pruner = make_pruner(self.pruner_name, self.pruner_args)
        self.url = str(sweeper.storage) if sweeper.get("storage") else None
        self.name = str(sweeper.get("study_name") or "search")
        if self.pruner_name != "none":
            self._check_pruning()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        if self.url:
            self.storage = sweeper_storage(config)
            done = check_study(self.storage, self.url, self.name, self.metrics,
                               self.directions, self.space)
        else:
            self.storage, done = None, 0
        sampler_cfg = sweeper.get("sampler")
        sampler = None
        if sampler_cfg is not None:
            seed = sampler_seed(sampler_cfg.get("seed"), done, settings.worker)
            sampler = (instantiate(sampler_cfg, seed=seed) if "seed" in sampler_cfg
                       else instantiate(sampler_cfg))
            if seed is not None and seed != sampler_cfg.get("seed"):
                log.info("study %s has %d trials (worker %d): sampler seed %s", self.name, done,
                         settings.worker, seed)
        self.study = optuna.create_study(study_name=self.name, storage=self.storage,
                                         sampler=sampler, pruner=pruner,
                                         directions=self.directions, load_if_exists=True)
        self.lock = threading.Lock()
        self.ask_lock = threading.Lock()  # one ask at a time (see _next_trial)
        self.stop = threading.Event()
        self.asked = 0
        self.in_flight: dict[int, Any] = {}
        self.finished = self.failed = 0
        self.failure: BaseException | None = None
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def _check_pruning(self) -> None:
        if not self.url:
            raise SweepConfigError(
                f"hydra.sweeper.pruner={self.pruner_name} needs a study storage (the trials "
                "report to it from their own processes): set hydra.sweeper.storage, e.g. "
                "sqlite:///${hydra.sweep.dir}/optuna.db")
        report = OmegaConf.select(self.config, REPORT_CALLBACK)
        if not isinstance(report, DictConfig) or "_target_" not in report:
            raise SweepConfigError(
                f"hydra.sweeper.pruner={self.pruner_name}: the trials report to Optuna through "
                f"the callback {REPORT_CALLBACK} (conf/callbacks/default.yaml), which this "
                "config has not got (callbacks=... or debug=fdr replaced them). Add it: "
                "+callbacks.optuna_trial._target_=classicnets.callbacks.search.OptunaTrialReport")

    # ---------------------------------------------------------------- one trial
    def _held(self, exclude: int) -> int:
        """Trials the study holds toward max_trials: finished, or running before ``exclude``."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=states)
                   if t.state != TrialState.RUNNING or t.number < exclude)

    def objective(self, trial: Any) -> Any:
        import optuna

        if self.settings.max_trials is not None and self._held(trial.number) >= (
                self.settings.max_trials):
            trial.set_user_attr(SURPLUS_ATTR, True)
            self.stop.set()
            raise _Surplus(f"trial {trial.number}: the study already holds max_trials="
                           f"{self.settings.max_trials} trials (another worker took the last)")
        params = {name: suggest(trial, name, d) for name, d in self.space.items()}
        overrides = trial_overrides(params, self.fixed)
        overrides.append(f"hydra.sweep.subdir={trial.number}")
        if self.url:
            overrides += trial_env(self.name, trial.number, self.pruner_name,
                                   self.pruner_args)
        with self.lock:
            self.in_flight[trial.number] = trial
        try:
            ret = self.launcher.launch([overrides], initial_job_idx=trial.number)[0]
            value = ret.return_value  # a failed job raises its error here
        except Exception:
            raise
        except BaseException as err:  # Ctrl-C; Lightning turns it into SystemExit
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            raise KeyboardInterrupt(f"trial {trial.number} interrupted") from err
        finally:
            with self.lock:
                self.in_flight.pop(trial.number, None)
        pruned = self._attrs(trial.number).get(PRUNED_ATTR) if self.url else None
        if pruned is not None:
            raise optuna.TrialPruned(f"pruned after epoch {pruned}")
        return self._values(trial.number, value)

    def _attrs(self, number: int) -> dict[str, Any]:
        """A trial's user attributes as its job left them, read from the storage itself (the
        trial object here caches what this process wrote)."""
        storage = self.storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.name), number)
        return dict(storage.get_trial_user_attrs(trial_id))

    def _values(self, number: int, value: Any) -> Any:
        many = len(self.directions) > 1
        values = list(value) if many and isinstance(value, list | tuple) else [value]
        if len(values) != len(self.directions) or any(
                not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v)
                for v in values):
            raise ValueError(
                f"trial {number} returned {value!r}; it must return {len(self.directions)} "
                f"finite number(s), one per optimized_metric ({', '.join(self.metrics)}): a "
                "diverged run or a metric that was not logged")
        return [float(v) for v in values] if many else float(values[0])

    def after_trial(self, study: Any, trial: Any) -> None:
        """Optuna's callback after each trial: the failure rate, and max_trials."""
        from optuna.trial import TrialState

        if trial.user_attrs.get(SURPLUS_ATTR):
            return
        with self.lock:
            self.finished += 1
            self.failed += trial.state == TrialState.FAIL
            rate = self.failed / self.finished
        if trial.state == TrialState.FAIL and rate > self.settings.max_failure_rate:
            self.failure = RuntimeError(
                f"{self.failed} of {self.finished} trials failed, more than "
                f"hydra.sweeper.max_failure_rate={self.settings.max_failure_rate}; each "
                f"trial's log is in {self.sweep_dir}/<trial number>/")
            self.stop.set()
        if self.settings.max_trials is not None:
            done = len(study.get_trials(deepcopy=False, states=tuple(
                getattr(TrialState, s) for s in _DONE_STATES)))
            if done >= self.settings.max_trials:
                self.stop.set()

    # ---------------------------------------------------------------- the search
    def run(self) -> None:
        import optuna

        n_trials: int | None = self.settings.n_trials
        if self.settings.max_trials is not None:
            held = self._held(exclude=-1) + len(self.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
            if held >= self.settings.max_trials:
                log.info("study %s already holds %d of max_trials=%d: nothing to run",
                         self.name, held, self.settings.max_trials)
                return
            n_trials = None  # until the study holds max_trials (after_trial stops it)
        jobs = self.settings.n_jobs
        if jobs > 1 and type(self.launcher).__name__ == "BasicLauncher":
            log.warning("hydra.sweeper.n_jobs=%d with Hydra's basic launcher, which runs one "
                        "job at a time in this process: trials run one by one (for %d at once: "
                        "hydra/launcher=parallel, or slurm)", jobs, jobs)
            jobs = 1
        log.info("Study %s in %s: %s %s, %s trials, %d at once, pruner %s", self.name,
                 redact_url(self.url) if self.url else "memory", "/".join(self.directions),
                 ", ".join(self.metrics) or "the returned value",
                 n_trials if n_trials is not None
                 else f"up to max_trials={self.settings.max_trials}", jobs, self.pruner_name)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.n_trials = n_trials
        try:
            if jobs == 1:  # in this thread: an in-process job (basic launcher) gets the signals
                self._worker()
            else:
                threads = [threading.Thread(target=self._worker, name=f"trial-slot-{k}",
                                            daemon=True) for k in range(jobs)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    while thread.is_alive():
                        thread.join(timeout=0.5)  # wakes for Ctrl-C
        except BaseException:
            self.stop.set()
            self._fail_unfinished()
            self._stop_launcher()
            self._summarise()
            raise
        if self.failure is not None:
            self._summarise()
            raise self.failure
        self._results()

    def _next_trial(self) -> Any:
        """The next trial, or None when this launch is done. Asks are serialised: two threads
        asking at once can both pop the same queued trial (an enqueued or re-queued one) from an
        SQLite storage, which has no row locks, and would run it twice. Optuna's own
        ``Study.optimize`` has no hook for that lock, so the loop here is ours; it does what
        optimize does around each trial: stale trials failed (and re-queued) first, and a
        heartbeat while the trial runs."""
        import warnings

        import optuna

        with self.ask_lock:
            if self.stop.is_set() or (self.n_trials is not None and self.asked >= self.n_trials):
                return None
            with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize"
                warnings.simplefilter("ignore")
                if self._beats():
                    optuna.storages.fail_stale_trials(self.study)
                trial = self.study.ask()
            self.asked += 1
            return trial

    def _beats(self) -> bool:
        """Whether the storage keeps heartbeats (an RDB one with heartbeat_interval)."""
        interval = getattr(self.storage, "get_heartbeat_interval", None)
        return bool(self.url and callable(interval) and interval())

    def _heartbeat(self, number: int) -> tuple[threading.Event, threading.Thread] | None:
        """Beat for the trial every heartbeat_interval s while it runs (RDB storages)."""
        if not self._beats():
            return None
        storage = self.storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.name), number)
        interval = float(storage.get_heartbeat_interval())
        done = threading.Event()

        def beat() -> None:
            while True:
                storage.record_heartbeat(trial_id)
                if done.wait(interval):
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-{number}", daemon=True)
        thread.start()
        return done, thread

    def _worker(self) -> None:
        """One slot: ask a trial, run it, tell how it ended; again until the launch is done."""
        import optuna
        from optuna.trial import TrialState

        while True:
            trial = self._next_trial()
            if trial is None:
                return
            beating = self._heartbeat(trial.number)
            value, state = None, TrialState.COMPLETE
            try:
                value = self.objective(trial)
            except optuna.TrialPruned as err:
                state = TrialState.PRUNED
                log.info("trial %d pruned (%s)", trial.number, err)
            except Exception as err:  # a failed trial; the search goes on
                state = TrialState.FAIL
                log.warning("trial %d failed with parameters %s: %s: %s", trial.number,
                            trial.params, type(err).__name__, err,
                            exc_info=not isinstance(err, _Surplus))
            except BaseException:  # Ctrl-C: the trial failed (marked interrupted), then stop
                self.stop.set()
                try:
                    self.study.tell(trial, state=TrialState.FAIL)
                except Exception as err:  # told already
                    log.debug("trial %d: %s", trial.number, err)
                raise
            finally:
                if beating is not None:
                    beating[0].set()
                    beating[1].join()
            frozen = self.study.tell(trial, value, state=state)
            if state == TrialState.COMPLETE:
                log.info("trial %d finished with value %s", trial.number, value)
            self.after_trial(self.study, frozen)

    def _stop_launcher(self) -> None:
        stop = getattr(self.launcher, "stop_all", None)
        if callable(stop):
            stop()

    def _fail_unfinished(self) -> None:
        """Trials still in flight when the search stops (Ctrl-C): failed and marked
        interrupted; left running, they would look in progress for ever."""
        from optuna.trial import TrialState

        with self.lock:
            trials = list(self.in_flight.values())
        for trial in trials:
            try:
                trial.set_user_attr(INTERRUPTED_ATTR, True)
                self.study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d interrupted: recorded as failed", trial.number)
            except Exception as err:  # already told (Optuna failed it on KeyboardInterrupt)
                log.debug("trial %d: %s", trial.number, err)

    def _summarise(self) -> None:
        if not self.url:
            return
        try:
            summarise_study(self.sweep_dir, self.url, self.name, self.config.get(
                "optimized_metric"))
        except Exception as err:
            log.warning("no sweep summary (%s: %s)", type(err).__name__, err)

    def _results(self) -> None:
        """``optimization_results.yaml``, as Hydra's Optuna sweeper wrote it, and the log."""
        from optuna.trial import TrialState

        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            self._summarise()
            raise RuntimeError(
                f"no trial of study '{self.name}' completed; the summary "
                f"({self.sweep_dir}/sweep_summary.md) lists them, each trial's log is in "
                f"{self.sweep_dir}/<trial number>/")
        if len(self.directions) == 1:
            best = self.study.best_trial
            results: dict[str, Any] = {"name": "optuna", "best_params": best.params,
                                       "best_value": best.value}
            log.info("Best parameters: %s", best.params)
            log.info("Best value: %s", best.value)
        else:
            front = self.study.best_trials
            results = {"name": "optuna", "solutions": [
                {"number": t.number, "params": t.params, "values": t.values} for t in front]}
            log.info("Pareto front: %d trials: %s", len(front),
                     ", ".join(f"{t.number} {t.values}" for t in front))
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")


def run_search(config: DictConfig, launcher: Any, settings: SearchSettings,
               arguments: Sequence[str]) -> None:
    """Check the search, open its study, run its trials (see the module docstring)."""
    _Search(config, launcher, settings, arguments).run()

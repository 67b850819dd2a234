"""Hydra's Optuna sweeper, with every trial's job directory named by its Optuna trial number.

Hydra numbers the jobs of each launch from 0, so a study continued by a second launch, or shared
by several launchers, would write its new trials into the directories of earlier ones. The trial
number is the study's own stable id; each trial's job gets ``hydra.sweep.subdir=<number>``, and
its Hydra job number follows the trial number too (the log then names trials, not launch slots).

A seeded sampler would also start its random sequence again on every launch: a search
interrupted during its random start-up trials would repeat them when relaunched. A launch that
continues a study seeds the sampler with ``seed + trials already in the study`` instead, which
is as reproducible and draws new points. And before the first trial, the search space is
checked against the config (``classicnets.runs.sweep.check_sweep``: a misspelt key fails at once,
listing the valid ones, rather than at the first trial) and the study is opened or checked
(``open_study``). Sampling, storage, failures and results stay the plugin's own.

Hydra imports this module whenever it scans for plugins: nothing heavy (optuna) at module level.
No ``from __future__ import annotations``: Hydra's plugin scan runs this module outside
``sys.modules``.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

__all__ = ["TrialDirOptunaSweeper", "trial_overrides"]

log = logging.getLogger(__name__)


def trial_overrides(numbers: Sequence[int], overrides: Sequence[Sequence[str]]
                    ) -> list[tuple[str, ...]]:
    """Each trial's overrides plus the job directory named by its trial number."""
    return [(*job, f"hydra.sweep.subdir={number}") for number, job in zip(numbers, overrides)]


class TrialDirOptunaSweeper(OptunaSweeper):
    """``hydra_plugins.hydra_optuna_sweeper``'s sweeper; trial N runs in ``<sweep dir>/N``, and
    a relaunch does not replay the seeded sampler's draws."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        impl = self.sweeper
        configure = impl._configure_trials

        # the plugin asks a batch of trials, turns them into overrides here, then launches them
        # with initial_job_idx=impl.job_idx: the one place where trials and jobs meet
        def configure_trials(trials: Sequence[Any], *args: Any) -> list[tuple[str, ...]]:
            overrides = configure(trials, *args)
            if trials:
                impl.job_idx = trials[0].number
            self._launched = list(trials)
            return trial_overrides([t.number for t in trials], overrides)

        impl._configure_trials = configure_trials
        self._launched: list[Any] = []

    def sweep(self, arguments: list[str]) -> None:
        # before the first trial (Hydra's callbacks cannot stop a multirun: they only warn)
        from classicnets.runs.sweep import check_sweep, open_study

        check_sweep(self.sweeper.config)
        open_study(self.sweeper.config)
        self._reseed_for_continuation()
        try:
            return super().sweep(arguments)
        except BaseException as err:  # Ctrl-C (Lightning turns it into SystemExit) or a crash
            self._fail_unfinished()
            # the summary callback runs only after a sweep that ended well; what ran is worth it
            sweep_dir = self._summarise()
            if isinstance(err, ValueError) and self._launched and not self._any_complete():
                # the plugin's study.best_trial, after a search whose every trial failed
                raise RuntimeError(
                    f"no trial of study '{self.sweeper.study_name}' completed; the summary "
                    f"({sweep_dir}/sweep_summary.md) lists them, each trial's log is in "
                    f"{sweep_dir}/<trial number>/") from err
            raise

    def _any_complete(self) -> bool:
        from optuna.trial import TrialState

        study = self._launched[0].study
        return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def _summarise(self) -> str:
        config = self.sweeper.config
        sweep_dir = str(config.hydra.sweep.dir)
        try:
            from classicnets.runs.sweep import summarise_study

            if self.sweeper.storage and self.sweeper.study_name:
                summarise_study(Path(sweep_dir), str(self.sweeper.storage),
                                str(self.sweeper.study_name), config.get("optimized_metric"))
        except Exception as err:
            log.warning("no sweep summary (%s: %s)", type(err).__name__, err)
        return sweep_dir

    def _fail_unfinished(self) -> None:
        """Mark the trials of the batch in flight as failed (and interrupted): left running,
        they would look in progress for ever, to the summary and to other launchers."""
        from optuna.trial import TrialState

        from classicnets.runs.sweep import INTERRUPTED_ATTR

        if not self._launched:
            return
        try:
            study = self._launched[0].study
            running = {t.number for t in study.get_trials(deepcopy=False,
                                                          states=(TrialState.RUNNING,))}
            for trial in self._launched:
                if trial.number in running:
                    trial.set_user_attr(INTERRUPTED_ATTR, True)
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning("trial %d interrupted: recorded as failed", trial.number)
        except Exception as err:  # the error that stopped the sweep matters more than this one
            log.warning("could not record the interrupted trials as failed: %s", err)

    def _reseed_for_continuation(self) -> None:
        impl = self.sweeper
        sampler_cfg = impl.config.hydra.sweeper.get("sampler")
        seed = sampler_cfg.get("seed") if sampler_cfg is not None else None
        if seed is None or not impl.storage or not impl.study_name:
            return
        import optuna
        from hydra.utils import instantiate

        summaries = optuna.study.get_all_study_summaries(impl.storage)
        done = next((s.n_trials for s in summaries if s.study_name == impl.study_name), 0)
        if done:
            impl.sampler = instantiate(sampler_cfg, seed=int(seed) + done)
            log.info("study %s has %d trials: sampler seed %d + %d", impl.study_name, done,
                     seed, done)

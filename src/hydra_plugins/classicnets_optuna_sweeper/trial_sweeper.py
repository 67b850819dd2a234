"""classicnets' Optuna sweeper (``hydra/sweeper=study``, used by ``conf/hparams_search``): a
Hydra sweeper of our own on current Optuna, where Hydra's ``hydra-optuna-sweeper`` 1.3 holds
Optuna below 3.

What it does beyond sampling, and why:

* every trial's job runs in ``<sweep dir>/<trial number>`` with the trial number as its Hydra
  job number: the study's own id, stable across relaunches and across workers sharing a study;
* a launch that continues a study seeds the sampler with ``seed + trials so far`` (a seeded
  sampler would replay its random start-up draws), worker ``k`` adds ``1000 * k``;
* trials start as soon as a slot is free (``n_jobs`` threads, each asking a trial and launching
  its job alone), not in batches that wait for their slowest trial;
* the search space, objectives, pruner and storage are checked before the first trial.

The loop itself is ``classicnets.runs.search``. Hydra imports this module whenever it scans for
plugins: nothing heavy (optuna, torch) at module level, and no ``from __future__ import
annotations`` (Hydra's plugin scan runs this module outside ``sys.modules``).
"""

import logging
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

__all__ = ["TrialDirOptunaSweeper"]

log = logging.getLogger(__name__)


class TrialDirOptunaSweeper(Sweeper):
    """Optuna search over ``params`` (Hydra's sweep grammar); trial N runs in
    ``<sweep dir>/N``. Settings: ``conf/hydra/sweeper/study.yaml``."""

    def __init__(self, sampler: Any = None, direction: Any = "minimize",
                 storage: Any = None, study_name: Any = None, n_trials: int = 20,
                 n_jobs: int = 1, max_failure_rate: float = 1.0,
                 params: Any = None, pruner: str = "none", pruner_args: Any = None,
                 max_trials: Any = None, heartbeat_interval: Any = None,
                 grace_period: Any = None, retries: int = 0, worker: int = 0) -> None:
        from classicnets.runs.search import SearchSettings

        # the rest is read from the config in sweep() (interpolations resolved there)
        self.settings = SearchSettings(n_trials=n_trials, n_jobs=n_jobs,
                                       max_failure_rate=max_failure_rate,
                                       max_trials=max_trials, worker=int(worker))
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        from classicnets.runs.search import run_search

        assert self.config is not None and self.launcher is not None
        run_search(self.config, self.launcher, self.settings, arguments)

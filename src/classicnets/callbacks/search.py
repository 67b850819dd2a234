"""A trial of an Optuna search reports to its study after every validation, and stops early
when the study's pruner says so (``hydra.sweeper.pruner``, classicnets' sweeper).

Why not optuna-integration's ``PyTorchLightningPruningCallback``: it needs the ``optuna.Trial``
object in the training process and stops a pruned run by raising ``TrialPruned`` out of
``Trainer.fit`` (no test of the best checkpoint, no metrics.json, a failed job to the launcher).
Here the trial's job runs in a process of its own (any launcher, DDP ranks, SLURM tasks), finds
its trial through environment variables the sweeper sets for the job, and a pruned run stops the
way Lightning's ``EarlyStopping`` stops one: ``trainer.should_stop`` after that validation, every
rank together (rank 0 asks the study and broadcasts the answer), so the epoch's checkpoint, the
test and metrics.json all happen and the job returns normally. The sweeper then tells the study
the trial was pruned (its value: the last one reported).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from classicnets.studies import (
    ENV_PRUNER,
    ENV_STORAGE,
    ENV_STUDY,
    ENV_TRIAL,
    EPOCHS_ATTR,
    MAX_EPOCHS_ATTR,
    PRUNED_ATTR,
    make_pruner,
    open_storage,
)

__all__ = ["OptunaTrialReport"]

log = logging.getLogger(__name__)


def _storage_url() -> str:
    """The study's storage: the job's own ``hydra.sweeper.storage`` (the sweeper does not put
    the URL, which may hold a password, in the job's logged overrides)."""
    url = os.environ.get(ENV_STORAGE)
    if url:
        return url
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().sweeper.storage)


class OptunaTrialReport(Callback):
    """Report ``monitor`` to this job's Optuna trial after every validation (step: the number
    of validations so far) and stop training when the trial should be pruned.

    Does nothing outside a search (no ``CLASSICNETS_OPTUNA_TRIAL`` in the environment); for
    several objectives it records the epochs trained and reports nothing (Optuna prunes
    single-objective studies only).

    Args:
        monitor: the logged metric the study optimizes (``optimized_metric``).
    """

    def __init__(self, monitor: str | Sequence[str] | None = None) -> None:
        self.monitor = monitor
        self._trial: Any = None
        self._active = self._reports = False
        self._validations = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        number = os.environ.get(ENV_TRIAL)
        self._active = stage == "fit" and number is not None
        # several objectives: the epochs are recorded, nothing is reported (no pruning)
        self._reports = isinstance(self.monitor, str) and bool(self.monitor)
        self._validations = 0
        if not self._active or not trainer.is_global_zero:
            return
        import optuna

        storage = open_storage(_storage_url())
        pruning = json.loads(os.environ.get(ENV_PRUNER) or '{"name": "none"}')
        study = optuna.load_study(study_name=os.environ[ENV_STUDY], storage=storage,
                                  pruner=make_pruner(pruning.get("name"), pruning.get("args")))
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), int(number))
        self._trial = optuna.trial.Trial(study, trial_id)
        self._trial.set_user_attr(MAX_EPOCHS_ATTR, trainer.max_epochs)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active or not self._reports or trainer.sanity_checking:
            return
        self._validations += 1
        prune = False
        if self._trial is not None:
            value = trainer.callback_metrics.get(str(self.monitor))
            if value is not None and math.isfinite(float(value)):
                self._trial.report(float(value), step=self._validations)
                prune = bool(self._trial.should_prune())
            if prune:
                self._trial.set_user_attr(PRUNED_ATTR, trainer.current_epoch + 1)
                log.info("Optuna trial %d pruned after epoch %d (%s = %.4g)",
                         self._trial.number, trainer.current_epoch + 1, self.monitor,
                         float(value))
        # every rank learns rank 0's answer and stops with it
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            trainer.should_stop = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._trial is not None:
            self._trial.set_user_attr(EPOCHS_ATTR, trainer.current_epoch)

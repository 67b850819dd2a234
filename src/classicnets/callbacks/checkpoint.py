"""Checkpoints of a run: the best by the monitored metric, and ``last.ckpt``, the newest state.

Lightning 2.6's ``ModelCheckpoint(monitor=..., save_last=True)`` (re)writes ``last.ckpt`` only at
a step where it wrote a top-k checkpoint, i.e. only on a new best: after an epoch that did not
improve, ``last.ckpt`` is older than the run, and a resume from it repeats epochs. A second,
unmonitored ModelCheckpoint would fix that but registers twice with the loggers (W&B's
``log_model`` then tags the wrong file "best"); this subclass keeps one callback instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

__all__ = ["BestAndLastCheckpoint", "last_checkpoint_path"]


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is rewritten at every save point (epoch end, or
    validation end when validation runs inside epochs), best-k or not. Best-k tracking, file
    names and every argument are ModelCheckpoint's, except ties: a later epoch that equals the
    k-th best replaces it (``newer_wins_ties``). Accuracy on a small validation split ties
    often (digits: 144 images, steps of 0.7 %), and with a decaying learning rate the later of
    two equal epochs is the better trained one; ModelCheckpoint would keep the earlier.
    """

    def __init__(self, *args: Any, newer_wins_ties: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.newer_wins_ties = newer_wins_ties

    def check_monitor_top_k(self, trainer: L.Trainer, current: Tensor | None = None) -> bool:
        if (not self.newer_wins_ties or current is None or self.save_top_k == -1
                or len(self.best_k_models) < self.save_top_k):
            return super().check_monitor_top_k(trainer, current)
        op = torch.le if self.mode == "min" else torch.ge
        better = bool(op(current, self.best_k_models[self.kth_best_model_path]))
        return trainer.strategy.reduce_boolean_decision(better)  # ranks agree, as Lightning's

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def _save_last_if_stale(self, trainer: L.Trainer) -> None:
        # skipped when this step was saved already (a new best wrote last.ckpt too), in the
        # sanity check, outside fitting and with fast_dev_run
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def last_checkpoint_path(trainer: L.Trainer) -> tuple[ModelCheckpoint, Path] | None:
    """The checkpoint callback that keeps ``last.ckpt`` and that file's path (which need not
    exist yet); None when no callback keeps one (``debug=fdr``, ``callbacks=null``)."""
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath:
            return cb, Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
    return None

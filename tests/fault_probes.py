"""Callbacks for the fault tests: one marks a step and holds the run there (so a test's signal
surely lands inside that epoch), one makes chosen training batches produce a NaN loss."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class PauseAtStep(Callback):
    """At global step ``step`` write ``marker`` (the epoch and step) and sleep ``pause_s``.

    Touches no RNG and no training state: a run with it trains exactly as one without."""

    def __init__(self, marker: str, step: int, pause_s: float = 3.0) -> None:
        self.marker, self.step, self.pause_s = Path(marker), step, pause_s

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            self.marker.write_text(f"{trainer.current_epoch} {trainer.global_step}")
            time.sleep(self.pause_s)  # the test's signal arrives now


class NaNBatches(Callback):
    """Put a NaN into the first image of the training batches at the given global steps: their
    loss is NaN (a damaged sample, an overflow)."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = set(steps)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if trainer.global_step in self.steps:
            batch[0][0].fill_(float("nan"))

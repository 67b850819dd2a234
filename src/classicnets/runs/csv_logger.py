"""Lightning's CSVLogger, except that it keeps a metrics.csv it finds in the run directory.

Lightning's writer deletes an existing ``metrics.csv`` when it starts. A run that goes on in its
own directory (a requeued SLURM job resuming from its checkpoint) would lose the rows of every
epoch before the requeue; this one appends below them, under the same header.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

__all__ = ["CSVLogger"]


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # instead of deleting the file: adopt its header, so that new rows go below the old ones
        # and a new metric name rewrites the file with both (Lightning's own path for new keys)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = sorted(next(csv.reader(fh), []))


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends to an existing metrics.csv."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

"""A test-only callback that records, per process, what the scale-out tests need to see.

Added to a run as ``+callbacks.probe._target_=rank_probe.RankProbe +callbacks.probe.out_dir=DIR``
(with ``tests/`` on PYTHONPATH). Each process writes ``<run dir name>-rank<global rank>.json``
and ``.pt`` (its final weights) into DIR, outside the run directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class RankProbe(Callback):
    """Records rank, world, threads, GPUs, samples trained, validation metrics and times."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict[str, Any] = {"val": [], "train_samples": []}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record.update(
            fit_start=time.time(), global_rank=trainer.global_rank,
            world_size=trainer.world_size, num_nodes=trainer.num_nodes,
            threads=torch.get_num_threads(), pid=os.getpid(),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            run_dir=str(trainer.default_root_dir))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["train_samples"].append(0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self.record["train_samples"][-1] += int(batch[1].shape[0])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation of this epoch has run: its (rank-synchronised) metrics are in place
        self.record["val"].append({k: float(v) for k, v in trainer.callback_metrics.items()
                                   if k.startswith("val/")})
        group = trainer.optimizers[0].param_groups[0]
        self.record["lr"] = group.get("initial_lr", group["lr"])  # before any schedule

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["fit_end"] = time.time()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{Path(trainer.default_root_dir).name}-rank{trainer.global_rank}"
        torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()},
                   self.out_dir / f"{stem}.pt")
        (self.out_dir / f"{stem}.json").write_text(json.dumps(self.record, indent=1))

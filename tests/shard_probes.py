"""A test-only callback for tests/test_shards.py: which training samples each step saw.

``+callbacks.seen._target_=shard_probes.SampleLog +callbacks.seen.out=FILE`` appends one JSON
line per training batch (epoch, the global step it makes, a key per sample) to FILE as the batch
starts, so a run killed by a signal leaves what it trained on. The key is the image's pixel sum
and position-weighted sum: with augmentation off, the same sample always gives the same key
(noise images: no two alike)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class SampleLog(Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        # at the start: the batch a signal lands in is trained to its end (the run stops after
        # that step), but callbacks after the one that stops it never see its end
        flat = batch[0].double().flatten(1)
        weights = torch.arange(flat.shape[1], dtype=torch.float64, device=flat.device)
        keys = [f"{s:.3f}/{w:.1f}" for s, w in zip(flat.sum(1).tolist(),
                                                     (flat * weights).sum(1).tolist())]
        with open(self.out, "a") as fh:
            fh.write(json.dumps({"epoch": trainer.current_epoch,
                                 "step": trainer.global_step + 1, "keys": keys}) + "\n")

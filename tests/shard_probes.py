"""A test-only callback for tests/test_shards.py: which training samples each step saw.

``+callbacks.seen._target_=shard_probes.SampleLog +callbacks.seen.out=FILE`` appends one JSON
line per training batch (epoch, global step, a key per sample) to FILE, as the batch runs, so a
run killed by a signal leaves what it trained on. The key is the image's pixel sum: with
augmentation off, the same sample always gives the same key (noise images: no two alike)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class SampleLog(Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        keys = [round(float(v), 2) for v in batch[0].double().flatten(1).sum(1)]
        with open(self.out, "a") as fh:
            fh.write(json.dumps({"epoch": trainer.current_epoch,
                                 "step": trainer.global_step, "keys": keys}) + "\n")

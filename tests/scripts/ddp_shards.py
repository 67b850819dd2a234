"""Run by tests/test_fast_loader.py: 2 CPU processes (DDP, gloo) each record the sample ids the
fast loader gives them in one epoch and write them to <out>/rank<r>.json. Optional arguments:
the loader (fast | torch) and data.repeated_augmentation (tests/test_augment_policies.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn

from classicnets.data import ImageDataModule


class Recorder(L.LightningModule):
    """Records the sample ids each rank trains on, per epoch (the last element of a batch)."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.out, self.seen = out, []

    def training_step(self, batch, batch_idx):
        x, ids = batch[0], batch[-1]  # (images, ids) here; (images, labels, ids) for shards
        self.seen += ids.tolist()
        return self.layer(x.mean((1, 2, 3))[:, None]).sum()

    def on_train_epoch_end(self) -> None:
        path = self.out / f"rank{self.global_rank}_epoch{self.current_epoch}.json"
        path.write_text(json.dumps(self.seen))
        self.seen = []

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class IdData(ImageDataModule):
    """Synthetic data whose labels are the sample ids."""

    def setup(self, stage=None):
        super().setup(stage)
        self.train_set.labels = torch.arange(len(self.train_set))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    loader = sys.argv[2] if len(sys.argv) > 2 else "fast"
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    dm = IdData("synthetic", num_classes=4, num_samples=64, val_fraction=0.0, batch_size=8,
                loader=loader, seed=3, num_workers=0, repeated_augmentation=repeats)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2,
                        limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Recorder(out), datamodule=dm)

"""Run by tests/test_shards.py: 2 CPU processes (DDP, gloo), 2 DataLoader workers each, stream
shards of synthetic data through the real ShardDataModule loaders and record, per rank and
epoch, the sample positions they trained on (<out>/rank<r>_epoch<e>.json).

``ddp_shard_ids.py <out>``: one node, Lightning starts the 2 processes (as trainer=ddp_sim);
``ddp_shard_ids.py <out> nodes``: started by torchrun once per "node" (2 nodes × 1 process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
from ddp_shards import Recorder  # the same recorder (this script's folder is on sys.path)

from classicnets.data import ImageDataModule
from classicnets.data.shards import ShardDataModule, write_shards


class IdShards(ShardDataModule):
    """The real loaders, whose training samples also carry their position in the split."""

    def setup(self, stage=None):
        super().setup(stage)
        tf = self.train_set.transform  # litdata keeps it in a list
        (tf[0] if isinstance(tf, list) else tf).with_index = True


if __name__ == "__main__":
    out = Path(sys.argv[1])
    shards = out / "shards"
    if not (shards / "manifest.json").is_file():  # written once, before the processes start
        src = ImageDataModule("synthetic", num_classes=4, num_samples=80, seed=3)
        write_shards(src, shards, data_config={"name": "synthetic", "num_samples": 80})
        (out / "n_train.json").write_text(json.dumps(len(src.train_set)))
    nodes = len(sys.argv) > 2 and sys.argv[2] == "nodes"
    dm = IdShards(shards, batch_size=8, num_workers=2, seed=3)  # 72 train samples: 9 × 8
    trainer = L.Trainer(accelerator="cpu", devices=1 if nodes else 2, num_nodes=2 if nodes else 1,
                        strategy="ddp", max_epochs=2,
                        limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Recorder(out), datamodule=dm)

"""A test-only callback: each process writes its EMA callback's average and its own trained
weights to ``<out_dir>/ema-rank<global rank>.pt`` when training ends (``tests/`` on PYTHONPATH:
``+callbacks.ema_probe._target_=ema_probe.EMAProbe +callbacks.ema_probe.out_dir=DIR``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from classicnets.callbacks.ema import EMA


class EMAProbe(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
        assert ema.average is not None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"ema": {k: v.cpu() for k, v in ema.average.module.state_dict().items()},
                    "net": {k: v.cpu() for k, v in pl_module.net.state_dict().items()},
                    "updates": ema.updates},
                   self.out_dir / f"ema-rank{trainer.global_rank}.pt")

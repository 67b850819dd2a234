"""The device every variant of a run shares: precision, memory format, compile, the Trainer."""

from __future__ import annotations

import gc
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Bench"]


@dataclass
class Bench:
    """Device, precision and network preparation shared by every variant."""

    device: torch.device
    precision: str
    channels_last: bool
    compile: bool
    cudnn_benchmark: bool
    out_dir: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def free(self) -> None:
        """Drop the previous case's garbage (and cached device blocks) before the next one."""
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def autocast(self) -> AbstractContextManager[Any]:
        if self.precision == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.precision == "16-mixed":
            return torch.autocast(self.device.type, dtype=torch.float16)
        return nullcontext()

    def place(self, net: nn.Module) -> nn.Module:
        net = net.to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    def compiled(self, net: nn.Module) -> nn.Module:
        return torch.compile(net) if self.compile else net  # type: ignore[return-value]

    def images(self, batch: int, size: int, channels: int = 3) -> Tensor:
        x = torch.randn(batch, channels, size, size, device=self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def trainer(self, **kwargs: Any) -> Any:
        """A Lightning Trainer with everything that is not training switched off."""
        import lightning as L

        if self.cuda:
            accelerator, devices = "gpu", [self.device.index or 0]
        else:
            accelerator, devices = "cpu", 1
        return L.Trainer(
            accelerator=accelerator,
            devices=devices,
            precision=self.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            deterministic=False,
            benchmark=self.cudnn_benchmark if self.cuda else None,
            log_every_n_steps=50,
            default_root_dir=str(self.out_dir),
            **kwargs,
        )


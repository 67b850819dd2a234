"""What more than one section uses: the run's context, the plain training loop, the
DataModule of the data and epoch sections, and quiet Lightning."""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from classicnets.benchmark.device import Bench
from classicnets.benchmark.measure import alternate

__all__ = [
    "Context",
    "TrainLoop",
    "datamodule",
    "device_batches",
    "logits",
    "param_count",
    "prefetched_batches",
    "quiet_lightning",
    "sgd",
    "state_bytes",
]


@dataclass
class Context:
    """What every section is given: the resolved settings (one block per section, plus the
    global knobs), the device, the data root and the run's seed."""

    settings: DictConfig
    bench: Bench
    data_root: str
    seed: int


def logits(out: Any) -> Tensor:
    """The logits of a network's output: a tensor, our ClassifierOutput or torchvision's
    namedtuples (training-mode Inception/GoogLeNet)."""
    if isinstance(out, Tensor):
        return out
    value = getattr(out, "logits", None)
    if isinstance(value, Tensor):
        return value
    return out[0]


def param_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def state_bytes(net: nn.Module) -> int:
    return sum(
        t.numel() * t.element_size() for t in itertools.chain(net.parameters(), net.buffers())
    )


def sgd(t: DictConfig) -> dict[str, Any]:
    """The ImageClassifier's optimizer config for the section's SGD settings."""
    return {
        "_target_": "torch.optim.SGD",
        "_partial_": True,
        "lr": float(t.lr),
        "momentum": float(t.momentum),
        "weight_decay": float(t.weight_decay),
    }


class TrainLoop:
    """The minimal PyTorch training step: zero_grad, forward, cross-entropy, backward, step."""

    def __init__(
        self,
        net: nn.Module,
        batches: Iterator[tuple[Tensor, Tensor]],
        bench: Bench,
        *,
        lr: float,
        momentum: float,
        weight_decay: float,
    ) -> None:
        self.net = bench.compiled(net)
        self.batches, self.autocast = batches, bench.autocast
        self.opt = torch.optim.SGD(
            net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        self.scaler = (
            torch.amp.GradScaler(bench.device.type) if bench.precision == "16-mixed" else None
        )

    def step(self) -> None:
        x, y = next(self.batches)
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = F.cross_entropy(logits(self.net(x)), y)
        if self.scaler is None:
            loss.backward()
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's per-Trainer banners ("GPU available ...") off; warnings stay on."""
    levels = {
        "lightning.pytorch": logging.WARNING,
        "lightning.fabric": logging.WARNING,
        "lightning": logging.WARNING,
        "classicnets.data.datamodule": logging.ERROR,
    }
    saved = {n: logging.getLogger(n).level for n in levels}
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*val_dataloader.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def datamodule(
    bench: Bench,
    root: str,
    seed: int,
    *,
    name: str,
    loader: str,
    num_samples: int,
    batch_size: int,
    image_size: int,
    num_workers: int | None,
    **options: Any,
) -> Any:
    """An :class:`ImageDataModule` for training only (no validation split); ``options``: more
    DataModule arguments (augmentation policy, random erasing)."""
    from classicnets.data import ImageDataModule, get_spec

    spec = get_spec(name)
    return ImageDataModule(
        name=name,
        root=root,
        batch_size=batch_size,
        num_workers=num_workers,
        val_fraction=0.0,
        image_size=image_size,
        num_classes=10 if spec.num_classes is None else None,
        loader=loader,
        num_samples=num_samples,
        seed=seed,
        channels_last=bench.channels_last,
        **options,
    )


def device_batches(loader: Any, bench: Bench) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches on the device in the network's memory format, epoch after epoch."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for x, y in loader:
            if x.device != bench.device:
                x = x.to(bench.device, non_blocking=True)
                y = y.to(bench.device, non_blocking=True)
            if bench.channels_last and not x.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
        epoch += 1


def prefetched_batches(loader: Any) -> int:
    """Batches a DataLoader's workers hold ready while another variant runs."""
    workers = int(getattr(loader, "num_workers", 0) or 0)
    return workers * int(getattr(loader, "prefetch_factor", 0) or 0) if workers else 0


def alternate_loaders(loaders: dict[str, Any], bench: Bench, d: DictConfig, *, label: str,
                      batch: int) -> dict[str, Any]:
    """Training batches of each loader on the device, timed in alternating windows
    (:func:`~classicnets.benchmark.measure.alternate`; ``d``: the section's ``rounds``,
    ``warmup_steps``, ``window_steps``, ``min_window_s``): the data sections' comparison."""
    # a path's prefetch queue is full when its turn comes: its warm-up drains it, so its
    # window sees steady-state throughput only
    warm = {k: max(int(d.warmup_steps), prefetched_batches(v) + 1) for k, v in loaders.items()}
    streams = {k: device_batches(v, bench) for k, v in loaders.items()}
    last_batch_s = dict.fromkeys(loaders, 0.0)

    def fetch(k: str) -> Callable[[], None]:
        def step() -> None:
            t0 = time.perf_counter()
            next(streams[k])
            last_batch_s[k] = time.perf_counter() - t0
        return step

    def settle(k: str) -> None:
        # after its window a path's workers refill their queue; on a machine with few cores
        # that work would compete with the next path's window (and the dearer path's refill
        # would slow the cheaper path most): wait it out, untimed
        time.sleep(1.5 * sum(prefetched_batches(loaders[j]) * last_batch_s[j]
                             for j in loaders if j != k))

    try:
        return alternate({k: fetch(k) for k in loaders}, rounds=int(d.rounds), warmup=warm,
                         window=int(d.window_steps),
                         min_window_s=float(d.get("min_window_s") or 0.0), sync=bench.sync,
                         label=label, batch=batch, before=settle)
    finally:
        streams.clear()  # the streams hold their loaders' iterators (and workers)

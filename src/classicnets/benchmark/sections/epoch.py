"""Section ``epoch``: one full epoch of synthetic CIFAR-sized images through the Trainer.

The fast loader feeds it; reported are the steady epoch's wall seconds and images/s, the cold
first epoch's (when ``epoch.warmup_epochs`` > 0), and the whole ``fit`` with its setup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from classicnets.benchmark.sections.common import (
    Context,
    datamodule,
    param_count,
    quiet_lightning,
    sgd,
)
from classicnets.benchmark.tables import Row, SectionReport, fmt, table

__all__ = ["measure"]

TITLE = "One epoch through the Trainer (fast loader)"
# CIFAR-sized images
IMAGE_SIZE = 32


def _epoch_timer(sync: Callable[[], None]) -> Any:
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.t0, self.images = 0.0, 0
            self.epochs: list[tuple[float, int]] = []  # (seconds, images) per epoch

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            sync()
            self.t0, self.images = time.perf_counter(), 0

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            self.images += int(batch[1].shape[0])

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            sync()
            self.epochs.append((time.perf_counter() - self.t0, self.images))

    return EpochTimer()


def _render(rows: list[Row], ctx: Context) -> list[str]:
    first = rows[0]
    body = [
        f"{first.model}, batch {first.batch_size}, {first.image_size} px, "
        f"{first.precision}, data=synthetic num_samples={ctx.settings.epoch.num_samples} "
        "val_fraction=0, validation off",
        "",
    ]
    body += table(
        ["", "wall s", "images/s", "ms/step", "note"],
        [
            [
                r.variant,
                fmt(r.seconds, ".2f"),
                fmt(r.images_per_s, ",.0f"),
                fmt(r.ms_per_step, ".2f"),
                r.note,
            ]
            for r in rows
        ],
    )
    return body


def measure(ctx: Context) -> SectionReport:
    from classicnets.models import create_model
    from classicnets.training.module import ImageClassifier

    s, bench = ctx.settings, ctx.bench
    e, t = s.epoch, s.template
    bs, size, n = int(e.batch_size), IMAGE_SIZE, int(e.num_samples)
    warm = int(e.warmup_epochs or 0)
    start = time.perf_counter()
    with quiet_lightning():
        dm = datamodule(
            bench,
            ctx.data_root,
            ctx.seed,
            name="synthetic",
            loader="fast",
            num_samples=n,
            batch_size=bs,
            image_size=size,
            num_workers=None,
        )
        net = create_model(e.model, num_classes=10, in_channels=3, input_size=size)
        module = ImageClassifier(
            model=net,
            optimizer=sgd(t),
            scheduler=None,
            compile=bench.compile,
            channels_last=bench.channels_last,
            num_classes=10,
        )
        timer = _epoch_timer(bench.sync)
        trainer = bench.trainer(max_epochs=warm + 1, callbacks=[timer])
        trainer.fit(module, datamodule=dm)
    bench.sync()
    total = time.perf_counter() - start
    common = {
        "section": "epoch",
        "model": str(e.model),
        "batch_size": bs,
        "image_size": size,
        "precision": bench.precision,
        "params": param_count(net),
        "windows": 1,
    }
    seconds, images = timer.epochs[-1]
    rows = [
        Row(
            case=f"synthetic {n} images",
            variant="epoch",
            seconds=seconds,
            images_per_s=images / seconds,
            ms_per_step=1e3 * seconds / max(1, images // bs),
            note=f"steady epoch ({images} images, Trainer, fast loader, no validation)",
            **common,
        )
    ]
    if warm:
        first_s, first_n = timer.epochs[0]
        rows.append(
            Row(
                case=f"synthetic {n} images",
                variant="first epoch",
                seconds=first_s,
                images_per_s=first_n / first_s,
                ms_per_step=1e3 * first_s / max(1, first_n // bs),
                note="cold: first steps"
                + (", cudnn autotuning" if bench.cuda else "")
                + (", torch.compile" if bench.compile else ""),
                **common,
            )
        )
    done = sum(k for _, k in timer.epochs)
    rows.append(
        Row(
            case=f"synthetic {n} images",
            variant="fit total",
            seconds=total,
            images_per_s=done / total,
            note=(f"{len(timer.epochs)} epoch(s) incl. data generation and setup"),
            **common,
        )
    )
    return SectionReport(rows, TITLE, _render(rows, ctx))

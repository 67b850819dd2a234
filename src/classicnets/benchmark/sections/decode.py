"""Section ``decode``: folder images through the PIL path vs the torchvision-decoder path.

Images/s each ``data.decoder`` of :class:`ImageDataModule` delivers from an image folder of
JPEG files the section writes itself (photograph-like ``width × height`` images: a smooth random
picture with sensor-like noise, landscape and every fourth one portrait), with the ImageNet
training transform (random-resized-crop to ``image_size`` + flip), batches normalised floats on
the device. ``pil`` is the ordinary per-image path (PIL decode, float transform per image in the
workers); ``torchvision`` decodes with ``torchvision.io``, augments uint8 tensors, ships uint8
batches and normalises whole batches on the device — in the main process on the CPU
(:mod:`classicnets.data.decode`). Same workers for both.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from classicnets.benchmark.measure import summarise
from classicnets.benchmark.sections.common import (
    Context,
    alternate_loaders,
    quiet_lightning,
)
from classicnets.benchmark.tables import (
    Row,
    SectionReport,
    fmt,
    fmt_estimate,
    paired_fields,
    table,
    verdict,
)

__all__ = ["measure", "write_jpeg_folder"]

TITLE = "Folder images: torchvision decoder vs PIL (data.decoder)"
DECODERS = ("pil", "torchvision")  # the first is the baseline
TARGET = 2.0


def write_jpeg_folder(base: Path, n: int, width: int, height: int, quality: int,
                      seed: int = 0) -> None:
    """``base/{train,val}/{a,b}/<i>.jpg``: ``n`` training JPEGs (two classes) and two for
    validation, photograph-like so that they decode like photographs (smooth content alone
    compresses to a fraction of a real photo's size and decodes faster)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", 2)):
        for i in range(count):
            w, h = (height, width) if i % 4 == 3 else (width, height)  # some portrait
            small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
            arr = np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.int16)
            arr = arr + rng.integers(-16, 17, arr.shape, dtype=np.int16)
            d = base / split / "ab"[i % 2]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(d / f"{i}.jpg",
                                                                     quality=quality)


def _render(rows: list[Row], ctx: Context, mean_kib: float, workers: int) -> list[str]:
    d = ctx.settings.decode
    body = [
        f"{d.num_images} JPEG files of {d.width}×{d.height} px (quality {d.quality}, "
        f"{mean_kib:.0f} KiB on average), RandomResizedCrop {d.image_size} + flip, batch "
        f"{d.batch_size}, {workers} DataLoader worker(s) for both paths; data only = iterate "
        "the training loader, normalised float batches on the device",
        "",
    ]
    body += table(
        ["decoder", "images/s", "ms/batch", "windows", "spread", "torchvision / pil", "note"],
        [
            [
                r.variant,
                fmt(r.images_per_s, ",.0f"),
                fmt(r.ms_per_step, ".1f"),
                f"{r.windows} × {r.steps}",
                fmt(r.spread_pct, ".1f") + " %",
                fmt_estimate(r.estimate("ratio"), ".2f") if r.variant == "torchvision" else "",
                r.note,
            ]
            for r in rows
        ],
    )
    ours = next(r for r in rows if r.variant == "torchvision")
    body += ["", f"**torchvision / pil = {ours.ratio:.2f}×** (target ≥ {TARGET:g}×: "
             f"{verdict(ours.estimate('ratio'), TARGET)})"]
    return body


def measure(ctx: Context) -> SectionReport:
    from classicnets.data import ImageDataModule

    s, bench = ctx.settings, ctx.bench
    d = s.decode
    bs, size = int(d.batch_size), int(d.image_size)
    loaders: dict[str, Any] = {}
    base = Path(tempfile.mkdtemp(prefix="classicnets-decode-"))
    try:
        write_jpeg_folder(base, int(d.num_images), int(d.width), int(d.height), int(d.quality),
                          seed=ctx.seed)
        files = list((base / "train").rglob("*.jpg"))
        mean_kib = sum(f.stat().st_size for f in files) / len(files) / 1024
        with quiet_lightning():
            device_trainer = bench.trainer()  # the DataModule asks its trainer for the device
            for decoder in DECODERS:
                dm = ImageDataModule("imagefolder", path=base, num_classes=2, batch_size=bs,
                                     image_size=size, num_workers=d.get("num_workers"),
                                     decoder=decoder, seed=ctx.seed,
                                     channels_last=bench.channels_last)
                dm.trainer = device_trainer
                dm.setup("fit")
                loaders[decoder] = dm.train_dataloader()
        workers = int(loaders["pil"].num_workers)
        windows = alternate_loaders(loaders, bench, d, label="decode", batch=bs)
    finally:
        # the persistent workers go with the last reference to their loader; they must not
        # be reading (prefetching) files when the folder is removed
        loaders.clear()
        gc.collect()
        shutil.rmtree(base, ignore_errors=True)
    note = {
        "pil": "PIL decode, per-image float transform in the workers",
        "torchvision": "torchvision.io decode, uint8 transform and batch in the workers, "
        "per-batch normalisation on the device" + ("" if bench.cuda else " (the main process)"),
    }
    common = {"section": "decode", "case": "train transform (RRC + flip)", "batch_size": bs,
              "image_size": size}
    rows = [
        Row(variant=k, note=note[k], **common, **summarise(windows[k], bs),
            **paired_fields(windows[k], windows["pil"]))
        for k in DECODERS
    ]
    return SectionReport(rows, TITLE, _render(rows, ctx, mean_kib, workers))

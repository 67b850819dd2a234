"""Section ``shards``: the same JPEGs streamed from litdata shards vs read from an image folder,
and (CUDA only) decoded on the GPU vs in the CPU workers.

The section writes photograph-like JPEG files (as the ``decode`` section does) to a temporary
folder, converts that folder to shards with :func:`~classicnets.data.shards.write_shards` (the
files' bytes as they are, in litdata chunks), and times the training loader of each at
``image_size`` with the training augmentation (random-resized-crop + flip, normalised float
batches on the device): ``folder`` (``data=imagefolder``, ``data.decoder=torchvision``, the
baseline) and ``shards`` (``data=shards``, the same decoder and transform in its workers). On a
CUDA device two more rows: ``folder, gpu`` and ``shards, gpu`` (``data.decoder=gpu``: nvJPEG
batches and GPU crop/resize/flip) against their CPU-decoding twins. Same workers for all.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from pathlib import Path
from typing import Any

from classicnets.benchmark.measure import summarise
from classicnets.benchmark.sections.common import (
    Context,
    alternate_loaders,
    quiet_lightning,
)
from classicnets.benchmark.sections.decode import write_jpeg_folder
from classicnets.benchmark.tables import (
    Row,
    SectionReport,
    fmt,
    fmt_estimate,
    paired_fields,
    table,
)

__all__ = ["measure"]

TITLE = "Sharded streaming (litdata) vs image folder; GPU vs CPU JPEG decoding"
CPU_VARIANTS = ("folder", "shards")  # the first is the baseline
GPU_VARIANTS = ("folder, gpu", "shards, gpu")  # each against its CPU-decoding twin
NO_GPU = "GPU decode rows skipped: no CUDA device (data.decoder=gpu needs nvJPEG)"


def _render(rows: list[Row], ctx: Context, mean_kib: float, workers: int, n: int) -> list[str]:
    d = ctx.settings.shards
    body = [
        f"{n} JPEG files of {d.width}×{d.height} px (quality {d.quality}, {mean_kib:.0f} KiB "
        f"on average), read from an image folder and from litdata shards of the same bytes; "
        f"RandomResizedCrop {d.image_size} + flip, batch {d.batch_size}, {workers} DataLoader "
        "worker(s) for every path; data only = iterate the training loader, normalised float "
        "batches on the device",
        "",
    ]
    body += table(
        ["case", "path", "images/s", "ms/batch", "windows", "spread", "ratio", "note"],
        [[r.case, r.variant, fmt(r.images_per_s, ",.0f"), fmt(r.ms_per_step, ".1f"),
          f"{r.windows} × {r.steps}", fmt(r.spread_pct, ".1f") + " %",
          fmt_estimate(r.estimate("ratio"), ".2f") if r.variant != "folder" else "", r.note]
         for r in rows],
    )
    shards = next(r for r in rows if r.variant == "shards")
    body += ["", f"**shards / folder = {shards.ratio:.2f}×** (CPU decoding in the workers)"]
    gpu = [r for r in rows if "gpu" in r.variant]
    if gpu:
        body += [f"**{r.variant.split(',')[0]}: gpu / torchvision decoder = {r.ratio:.2f}×**"
                 for r in gpu]
    else:
        body += ["", NO_GPU]
    return body


def measure(ctx: Context) -> SectionReport:
    from classicnets.data import ImageDataModule
    from classicnets.data.shards import ShardDataModule, write_shards

    s, bench = ctx.settings, ctx.bench
    d = s.shards
    bs, size = int(d.batch_size), int(d.image_size)
    variants = CPU_VARIANTS + (GPU_VARIANTS if bench.cuda else ())
    loaders: dict[str, Any] = {}
    base = Path(tempfile.mkdtemp(prefix="classicnets-shards-"))
    try:
        write_jpeg_folder(base / "images", int(d.num_images), int(d.width), int(d.height),
                          int(d.quality), seed=ctx.seed)
        files = list((base / "images" / "train").rglob("*.jpg"))
        mean_kib = sum(f.stat().st_size for f in files) / len(files) / 1024
        common = dict(batch_size=bs, image_size=size, num_workers=d.get("num_workers"),
                      seed=ctx.seed, channels_last=bench.channels_last)
        with quiet_lightning():
            source = ImageDataModule("imagefolder", path=base / "images", num_classes=2,
                                     **common)
            write_shards(source, base / "shards",
                         data_config={"name": "imagefolder", "path": str(base / "images")})
            device_trainer = bench.trainer()  # the DataModules ask their trainer the device
            for v in variants:
                decoder = "gpu" if "gpu" in v else "torchvision"
                if v.startswith("folder"):
                    dm: Any = ImageDataModule("imagefolder", path=base / "images",
                                              num_classes=2, decoder=decoder, **common)
                else:
                    dm = ShardDataModule(base / "shards", decoder=decoder, **common)
                dm.trainer = device_trainer
                dm.setup("fit")
                loaders[v] = dm.train_dataloader()
        workers = int(loaders["folder"].num_workers)
        windows = alternate_loaders(loaders, bench, d, label="shards", batch=bs)
    finally:
        loaders.clear()  # workers go with their loaders, before their files do
        gc.collect()
        shutil.rmtree(base, ignore_errors=True)
    note = {
        "folder": "data=imagefolder, torchvision.io decode in the workers (baseline)",
        "shards": "data=shards (litdata chunks of the same files), same decode and transform",
        "folder, gpu": "data.decoder=gpu: nvJPEG batch + GPU crop/resize/flip, vs folder",
        "shards, gpu": "data=shards data.decoder=gpu, vs shards",
    }
    baseline = {"folder": "folder", "shards": "folder", "folder, gpu": "folder",
                "shards, gpu": "shards"}
    rows = [
        Row(section="shards", case="gpu decode" if "gpu" in k else "train transform (RRC + flip)",
            variant=k, note=note[k], batch_size=bs, image_size=size,
            **summarise(windows[k], bs), **paired_fields(windows[k], windows[baseline[k]]))
        for k in variants
    ]
    return SectionReport(rows, TITLE, _render(rows, ctx, mean_kib, workers, int(d.num_images)))

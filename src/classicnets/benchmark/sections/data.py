"""Section ``data``: the fast on-device loader vs the ordinary DataLoader.

Images/s each data path of :class:`ImageDataModule` delivers (``loader=fast`` vs
``loader=torch``, batches moved to the device), and (``data.train``) training images/s of the
plain loop fed by each; and (``data.ingredients``) fast-path training images/s with the
heaviest augmentation of the modern recipes — RandAugment m9-mstd0.5 (2 ops) and random erasing
0.25, every image its own draws (:mod:`classicnets.data.policies`) — against crop+flip only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from classicnets.benchmark.measure import alternate, summarise
from classicnets.benchmark.sections.common import (
    Context,
    TrainLoop,
    datamodule,
    device_batches,
    param_count,
    prefetched_batches,
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

__all__ = ["measure"]

TITLE = "Data paths: fast (on-device) vs torch (DataLoader)"
PATHS = ("fast", "torch")
# the ingredients rows: baseline first
INGREDIENTS = {
    "crop+flip": {},
    "randaugment+erasing": {"policy": "randaugment",
                            "policy_options": {"num_ops": 2, "magnitude": 9,
                                               "magnitude_std": 0.5},
                            "random_erasing": 0.25},
}
INGREDIENTS_CASE = "ingredients (training, fast path)"


def _render(rows: list[Row], ctx: Context) -> list[str]:
    s = ctx.settings
    d = s.data
    body = [
        f"data={d.name}, {d.num_samples} samples, {d.image_size} px, crop+flip "
        f"augmentation, batch {d.batch_size}; data only = iterate the training loader "
        "(batches on the device); training = plain PyTorch loop on "
        f"{s.template.model} fed by each loader",
        "",
    ]
    paths = [r for r in rows if r.case != INGREDIENTS_CASE]
    body += table(
        ["case", "path", "images/s", "ms/batch", "windows", "spread", "fast / torch", "note"],
        [
            [
                r.case,
                r.variant,
                fmt(r.images_per_s, ",.0f"),
                fmt(r.ms_per_step, ".2f"),
                f"{r.windows} × {r.steps}",
                fmt(r.spread_pct, ".1f") + " %",
                fmt_estimate(r.estimate("ratio"), ".2f") if r.variant == "fast" else "",
                r.note,
            ]
            for r in paths
        ],
    )
    fast = next(r for r in rows if r.case == "data only" and r.variant == "fast")
    body += [
        "",
        f"**data only: fast / torch = {fast.ratio:.1f}×** (target ≥ 10×: "
        f"{verdict(fast.ratio, 10.0)})",
    ]
    heavy = [r for r in rows if r.case == INGREDIENTS_CASE]
    if heavy:
        body += ["", "Ingredients: training images/s of the plain loop on the fast path, "
                 "the heaviest recipe augmentation against crop+flip only (same network, "
                 "same batch):", ""]
        body += table(
            ["augmentation", "images/s", "ms/batch", "windows", "spread", "/ crop+flip", "note"],
            [[r.variant, fmt(r.images_per_s, ",.0f"), fmt(r.ms_per_step, ".2f"),
              f"{r.windows} × {r.steps}", fmt(r.spread_pct, ".1f") + " %",
              fmt_estimate(r.estimate("ratio"), ".2f"), r.note] for r in heavy],
        )
        last = heavy[-1]
        judged = (verdict(last.estimate("ratio"), 0.9) if ctx.bench.cuda
                  else "not judged: measured on the CPU")
        body += ["", f"**ingredients: {last.variant} / crop+flip = {last.ratio:.2f}** (target "
                 f"≥ 0.9 on a GPU: {judged})"]
    return body


def measure(ctx: Context) -> SectionReport:
    from classicnets.models import create_model

    s, bench = ctx.settings, ctx.bench
    d, t = s.data, s.template
    rounds, warmup, window = int(d.rounds), int(d.warmup_steps), int(d.window_steps)
    min_window_s = float(d.get("min_window_s") or 0.0)
    bs, size = int(d.batch_size), int(d.image_size)
    loaders: dict[str, Any] = {}
    with quiet_lightning():
        device_trainer = bench.trainer()  # the DataModule asks its trainer for the device
        for path in PATHS:
            dm = datamodule(
                bench,
                ctx.data_root,
                ctx.seed,
                name=str(d.name),
                loader=path,
                num_samples=int(d.num_samples),
                batch_size=bs,
                image_size=size,
                num_workers=d.get("num_workers"),
            )
            dm.trainer = device_trainer
            dm.setup("fit")
            loaders[path] = dm.train_dataloader()
    workers = int(getattr(loaders["torch"], "num_workers", 0))
    # the ordinary loader's workers fill their prefetch queue during the other path's window:
    # its warm-up drains that queue so its timed window sees only steady-state throughput
    warm = {
        p: max(warmup, prefetched_batches(loaders[p]) + 1 if prefetched_batches(loaders[p]) else 0)
        for p in PATHS
    }
    streams = {p: device_batches(loaders[p], bench) for p in PATHS}

    def fetch(it: Iterator[Any]) -> Callable[[], None]:
        return lambda: next(it)  # type: ignore[return-value]

    timing: dict[str, Any] = {
        "rounds": rounds,
        "warmup": warm,
        "window": window,
        "min_window_s": min_window_s,
        "sync": bench.sync,
        "batch": bs,
    }
    windows = alternate({p: fetch(streams[p]) for p in PATHS}, label="data", **timing)
    common = {"section": "data", "batch_size": bs, "image_size": size, "precision": ""}
    note = {
        "fast": "on-device batches, batched crop+flip",
        "torch": f"DataLoader, {workers} worker(s), per-image transforms"
        + (", to device" if bench.cuda else ""),
    }
    rows = [
        Row(
            case="data only",
            variant=p,
            note=note[p],
            **common,
            **summarise(windows[p], bs),
            **paired_fields(windows[p], windows["torch"]),
        )
        for p in PATHS
    ]

    if d.get("train", True):
        net = create_model(t.model, num_classes=10, in_channels=3, input_size=size)
        params = param_count(net)
        loops = {
            p: TrainLoop(
                bench.place(copy.deepcopy(net)),
                streams[p],
                bench,
                lr=float(t.lr),
                momentum=float(t.momentum),
                weight_decay=float(t.weight_decay),
            )
            for p in PATHS
        }
        train = alternate({p: loops[p].step for p in PATHS}, label="data/training", **timing)
        rows += [
            Row(
                case="training (plain loop)",
                variant=p,
                model=str(t.model),
                params=params,
                note=note[p],
                **{**common, "precision": bench.precision},
                **summarise(train[p], bs),
                **paired_fields(train[p], train["torch"]),
            )
            for p in PATHS
        ]
    if d.get("ingredients", True):
        rows += _ingredients(ctx, timing)
    return SectionReport(rows, TITLE, _render(rows, ctx))


def _ingredients(ctx: Context, timing: dict[str, Any]) -> list[Row]:
    """Fast-path training with each augmentation of :data:`INGREDIENTS`, alternated."""
    from classicnets.models import create_model

    s, bench = ctx.settings, ctx.bench
    d, t = s.data, s.template
    bs, size = int(d.batch_size), int(d.image_size)
    streams = {}
    with quiet_lightning():
        device_trainer = bench.trainer()
        for name, options in INGREDIENTS.items():
            dm = datamodule(bench, ctx.data_root, ctx.seed, name=str(d.name), loader="fast",
                            num_samples=int(d.num_samples), batch_size=bs, image_size=size,
                            num_workers=d.get("num_workers"), **options)
            dm.trainer = device_trainer
            dm.setup("fit")
            streams[name] = device_batches(dm.train_dataloader(), bench)
    net = create_model(t.model, num_classes=10, in_channels=3, input_size=size)
    loops = {name: TrainLoop(bench.place(copy.deepcopy(net)), streams[name], bench,
                             lr=float(t.lr), momentum=float(t.momentum),
                             weight_decay=float(t.weight_decay)) for name in INGREDIENTS}
    timing = {**timing, "warmup": dict.fromkeys(INGREDIENTS, int(d.warmup_steps))}
    train = alternate({n: loops[n].step for n in INGREDIENTS}, label="data/ingredients",
                      **timing)
    base = next(iter(INGREDIENTS))
    note = {"crop+flip": "the dataset's standard augmentation only",
            "randaugment+erasing": "+ RandAugment n2 m9-mstd0.5, random erasing 0.25"}
    return [
        Row(section="data", case=INGREDIENTS_CASE, variant=n, model=str(t.model),
            params=param_count(net), note=note[n], batch_size=bs, image_size=size,
            precision=bench.precision, **summarise(train[n], bs),
            **paired_fields(train[n], train[base]))
        for n in INGREDIENTS
    ]

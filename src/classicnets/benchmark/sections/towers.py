"""Section ``towers``: AlexNet's two towers on two processes vs DDP on the same two.

The processes are run by :mod:`classicnets.benchmark.tower_processes`; each holds both
layouts and times their windows alternately. Reported: step time (the slower process of each
window) and the parameters and optimizer state one process holds.
"""

from __future__ import annotations

import logging

from classicnets.benchmark.measure import Window, summarise
from classicnets.benchmark.sections.common import Context
from classicnets.benchmark.tables import Row, SectionReport, fmt, paired_fields, table

__all__ = ["measure"]

log = logging.getLogger(__name__)

TITLE = "AlexNet's towers vs DDP (2 processes)"
VARIANTS = ("towers", "ddp")


def _render(rows: list[Row]) -> list[str]:
    first = rows[0]
    body = [
        f"{first.model} at {first.image_size} px, global batch {first.batch_size}, "
        f"{first.precision}, SGD with momentum; towers: half of every layer per process, "
        "the whole batch through both; ddp: the whole network per process, half the batch",
        "",
    ]
    body += table(
        ["", "params / process", "param MiB", "optimizer MiB", "ms/step", "images/s",
         "speed vs ddp"],
        [[r.variant, f"{r.params:,}", fmt(r.param_mib, ",.0f"), fmt(r.optimizer_mib, ",.0f"),
          fmt(r.ms_per_step, ".1f"), fmt(r.images_per_s, ",.1f"), fmt(r.ratio, ".3f")]
         for r in rows],
    )
    return body


def measure(ctx: Context) -> SectionReport:
    """AlexNet's towers vs DDP, two processes each holding both layouts (alternated windows)."""
    from classicnets.benchmark.tower_processes import measure_towers

    t, bench = ctx.settings.towers, ctx.bench
    settings = {"device": bench.device.type, "precision": bench.precision,
                "image_size": t.image_size, "batch_size": t.batch_size,
                "num_classes": t.num_classes, "lr": t.lr, "rounds": t.rounds,
                "warmup_steps": t.warmup_steps, "window_steps": t.window_steps,
                "threads": t.threads}
    log.info("towers: AlexNet at %d px, global batch %d, 2 processes", t.image_size,
             t.batch_size)
    per_process = measure_towers(settings)
    first = per_process[0]  # the processes hold the same amounts (the towers' halves differ
    # only in FC8 with an odd class count); time: the slower process of each window (its CPU
    # time stays in the worker, so only the wall clock is known here)
    windows = {
        k: [Window(wall_s=max(p[k]["seconds"][i] for p in per_process),
                   steps=int(first[k]["steps"]))
            for i in range(len(first[k]["seconds"]))]
        for k in VARIANTS
    }
    rows = []
    for variant in VARIANTS:
        r = first[variant]
        rows.append(Row(
            section="towers", case="alexnet, 2 processes", variant=variant, model="alexnet",
            batch_size=int(t.batch_size), image_size=int(t.image_size),
            precision=bench.precision, params=int(r["params"]),
            param_mib=r["param_bytes"] / 2**20, optimizer_mib=r["optimizer_bytes"] / 2**20,
            note=f"grads {r['grad_bytes'] / 2**20:,.0f} MiB per process",
            **summarise(windows[variant], int(t.batch_size)),
            **paired_fields(windows[variant], windows["ddp"]),
        ))
    return SectionReport(rows, TITLE, _render(rows))

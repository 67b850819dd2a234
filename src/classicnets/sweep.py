"""Hydra callback that tabulates a multirun: one row per job, its overrides and final metrics."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

__all__ = ["SweepSummary", "summarise_sweep"]

log = logging.getLogger(__name__)
COLUMNS = ("train/loss", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc",
           "test/acc_top5")


def summarise_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write ``sweep_summary.csv`` and ``sweep_summary.md`` from each job's ``metrics.json``.

    A job that crashed has no metrics file; it still gets a row, marked ``failed``.
    """
    rows: list[dict[str, Any]] = []
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))
    overrides: list[list[str]] = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.name}
        path = job / "metrics.json"
        if path.is_file():
            data = json.loads(path.read_text())
            overrides.append(list(data.get("overrides", [])))
            row["status"] = "ok"
            row.update({k: data["metrics"].get(k) for k in COLUMNS})
        else:
            saved = job / ".hydra" / "overrides.yaml"
            overrides.append(list(OmegaConf.load(saved)) if saved.exists() else [])
            row["status"] = "failed"
        rows.append(row)
    # the swept values tell jobs apart; overrides every job shares go in the header
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    for row, job_overrides in zip(rows, overrides):
        row["overrides"] = " ".join(o for o in job_overrides if o not in common)
    fields = ["job", "overrides", "status", *COLUMNS]
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = [f"Sweep {sweep_dir.name}; every job: {' '.join(sorted(common)) or '(nothing else)'}",
             "", "| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(cell(r.get(f)) for f in fields) + " |" for r in rows]
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    return rows


class SweepSummary(Callback):
    """At the end of a multirun, summarise it in the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            summarise_sweep(sweep_dir)
            log.info("sweep summary: %s", sweep_dir / "sweep_summary.md")

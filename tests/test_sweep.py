"""The multirun summary table, from job directories as Hydra leaves them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from classicnets.runs.sweep import summarise_sweep


def _job(sweep: Path, num: int, overrides: list[str], acc: float | None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if acc is not None:
        (job / "metrics.json").write_text(json.dumps(
            {"overrides": overrides, "metrics": {"test/acc": acc, "val/acc_best": acc + 0.01}}))


def test_summary_lists_swept_values_and_failed_jobs(tmp_path: Path) -> None:
    _job(tmp_path, 0, ["model=lenet5", "optimizer.lr=0.1", "seed=1"], 0.9)
    _job(tmp_path, 1, ["model=lenet5", "optimizer.lr=0.01", "seed=1"], 0.8)
    _job(tmp_path, 10, ["model=resnet20", "optimizer.lr=0.1", "seed=1"], None)  # crashed
    rows = summarise_sweep(tmp_path)
    assert [r["job"] for r in rows] == ["0", "1", "10"]  # numeric order, not text order
    with open(tmp_path / "sweep_summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["overrides"] for r in table] == [
        "model=lenet5 optimizer.lr=0.1", "model=lenet5 optimizer.lr=0.01",
        "model=resnet20 optimizer.lr=0.1"]
    assert [r["status"] for r in table] == ["ok", "ok", "failed"]
    assert float(table[0]["test/acc"]) == 0.9 and table[2]["test/acc"] == ""
    md = (tmp_path / "sweep_summary.md").read_text()
    assert "every job: seed=1" in md and "| 1 | model=lenet5 optimizer.lr=0.01 | ok |" in md

"""Run plots: read back from the CSV logger's file, drawn at the end of training, redrawn by
`python src/plots.py` for runs and sweeps."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from PIL import Image

from classicnets.runs.pipeline import train
from classicnets.runs.plots import plot_run, read_metrics
from conftest import REPO

MakeCfg = Callable[..., DictConfig]
QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar", "~callbacks.model_summary",
         "trainer.enable_progress_bar=false")
CSV = """epoch,lr-SGD,step,train/loss,val/acc,val/loss
,0.01,0,,,
0,,9,,0.5,1.5
0,,9,2.0,,
,0.02,10,,,
1,,19,,0.75,1.0
1,,19,1.25,,
"""


def _valid_png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_metrics_are_read_per_epoch_and_learning_rates_per_step(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(CSV)
    epochs, lrs = read_metrics(tmp_path / "m.csv")
    assert epochs["train/loss"] == [(0, 2.0), (1, 1.25)]
    assert epochs["val/acc"] == [(0, 0.5), (1, 0.75)]
    assert lrs == {"lr-SGD": [(0, 0.01), (10, 0.02)]}


def test_training_draws_the_run_plots(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("trainer.max_epochs=3", "data.batch_size=256", *QUIET)
    train(cfg)
    plots = Path(cfg.paths.output_dir) / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["accuracy.png", "loss.png", "lr.png"]
    for png in plots.iterdir():
        width, height = _valid_png(png)
        assert width >= 400 and height >= 300


def test_cli_redraws_a_sweep_and_names_the_fix_for_bad_input(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        (sweep / job / "csv").mkdir(parents=True)
        (sweep / job / "csv" / "metrics.csv").write_text(CSV)
    proc = subprocess.run([sys.executable, str(REPO / "src" / "plots.py"), str(sweep)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for job in ("0", "1"):
        for name in ("loss.png", "accuracy.png", "lr.png"):
            _valid_png(sweep / job / "plots" / name)
    assert (sweep / "sweep_summary.md").is_file()  # the sweep's own table, drawn again
    (tmp_path / "nolog").mkdir()
    proc = subprocess.run([sys.executable, str(REPO / "src" / "plots.py"), str(tmp_path / "nolog"),
                           str(tmp_path / "missing")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "logger=csv" in proc.stderr and "not a directory" in proc.stderr


def test_plot_run_without_metrics_names_the_logger(tmp_path: Path) -> None:


    with pytest.raises(FileNotFoundError, match="logger=csv"):
        plot_run(tmp_path)

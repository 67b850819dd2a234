"""Runs that do what was asked (issue 21, parts 2 and 3 and its "also"): a refused secret
leaves no copy in the run directory, every logger choice keeps csv/metrics.csv and the plots,
and trainer=gpu on a machine without CUDA says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from classicnets.runs.config_check import ConfigError
from classicnets.runs.pipeline import train
from conftest import REPO, compose_config
from trained import QUIET

SECRET = "cnfake1secret8Rz0YwWc3Ml5No9Qs2Tu7Vy4Xz6Ab1Cd8Ef"  # unique, 48 characters


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY=SECRET, WANDB_MODE="offline", WANDB_SILENT="true",
               HOME=str(tmp_path), PROJECT_ROOT=str(tmp_path))
    return env


def _holding(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "multirun"])
def test_a_refused_secret_leaves_no_copy(multirun: bool, tmp_path: Path) -> None:
    out = tmp_path / "out"
    where = (f"hydra.sweep.dir={out}" if multirun else f"hydra.run.dir={out}")
    args = [sys.executable, str(REPO / "src" / "train.py"), *(["-m"] if multirun else []),
            f"+tags=[{SECRET}]", where, "trainer.max_epochs=1"]
    proc = subprocess.run(args, capture_output=True, text=True, env=_env(tmp_path),
                          cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode != 0
    assert "the config holds a secret: tags[0] (the value of $WANDB_API_KEY)" in proc.stderr
    assert "redacted there" in proc.stderr and "overrides.yaml" in proc.stderr
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in written)  # Hydra did write its copies
    if multirun:
        assert (out / "multirun.yaml").is_file()
    assert not _holding(out), "the secret is still in the run directory"
    assert "<redacted $WANDB_API_KEY>" in next(out.rglob("overrides.yaml")).read_text()


@pytest.mark.parametrize("logger", ["tensorboard", "csv"])
def test_every_logger_choice_keeps_csv_and_plots(logger: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    quiet = [q for q in QUIET if q not in ("logger=[]", "test=false")]
    cfg = compose_config([*quiet, f"logger={logger}", "trainer.max_epochs=2",
                          "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2"], out)
    try:
        train(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert (out / "csv" / "metrics.csv").is_file()
    assert {p.name for p in (out / "plots").iterdir()} >= {"loss.png", "accuracy.png", "lr.png"}
    if logger == "tensorboard":
        assert any((out / "tensorboard").rglob("events.out.tfevents.*"))


def test_csv_off_is_explicit(tmp_path: Path) -> None:
    """~logger.csv (or logger=[]) is how a run goes without CSV: then no plots, said in the log."""
    cfg = compose_config(["logger=tensorboard", "~logger.csv"], tmp_path)
    try:
        assert list(cfg.logger) == ["tensorboard"]
        assert list(compose_config(["logger=[]"], tmp_path).get("logger") or {}) == []
        assert sorted(compose_config(["logger=many"], tmp_path).logger) == [
            "csv", "tensorboard", "wandb"]
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_cuda_names_the_override(trainer: str, tmp_path: Path) -> None:
    cfg = compose_config([*QUIET, f"trainer={trainer}"], tmp_path / "run")
    try:
        with pytest.raises(ConfigError, match=r"trainer.accelerator=gpu asks for a CUDA GPU, but "
                                              r"this machine has none .*Use trainer=cpu, or "
                                              r"trainer=default"):
            train(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert not (tmp_path / "run" / "checkpoints").exists()

"""The training and evaluation pipeline, composed from conf/ exactly as the entry points do."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from classicnets.checkpoints import CheckpointError
from classicnets.data import DatasetError
from classicnets.models import UnknownModelError
from classicnets.runs.pipeline import evaluate, train

REPO = Path(__file__).resolve().parents[1]
QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar",
         "~callbacks.model_summary", "trainer.enable_progress_bar=false")
MakeCfg = Callable[..., DictConfig]


def _run_dir_metrics(path: Path) -> list[dict[str, str]]:
    with open(path / "csv" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_train_writes_run_directory_and_returns_metric(make_cfg: MakeCfg, tmp_path: Path
                                                       ) -> None:
    cfg = make_cfg("trainer.max_epochs=2", "data.batch_size=128", *QUIET)
    value, metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert value == metrics["val/acc_best"] and 0 < value <= 1
    assert (run / "config_resolved.yaml").is_file()
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and len(ckpts) == 2
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["optimized_value"] == pytest.approx(value)
    rows = _run_dir_metrics(run)
    assert any(r.get("val/acc") for r in rows) and any(r.get("lr-SGD") for r in rows)


def test_resume_continues_epochs_and_optimizer_state(make_cfg: MakeCfg) -> None:
    first = make_cfg("trainer.max_epochs=1", "data.batch_size=256", "test=false", *QUIET,
                     out="first")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    state1 = torch.load(last, weights_only=True)
    assert state1["epoch"] == 0
    second = make_cfg("trainer.max_epochs=2", "data.batch_size=256", "test=false",
                      f"ckpt_path={last}", *QUIET, out="second")
    train(second)
    state2 = torch.load(Path(second.paths.output_dir) / "checkpoints" / "last.ckpt",
                        weights_only=True)
    assert state2["epoch"] == 1
    steps = state1["global_step"]
    assert state2["global_step"] == 2 * steps
    mom1 = state1["optimizer_states"][0]["state"]
    mom2 = state2["optimizer_states"][0]["state"]
    assert set(mom1) == set(mom2)
    assert not torch.equal(mom1[0]["momentum_buffer"], mom2[0]["momentum_buffer"])
    # the schedule continued over the longer horizon: the 1-epoch cosine had ended, so
    # module.resume_schedule=auto restarted it over the second epoch (issue 21)
    sched = state2["lr_schedulers"][0]
    assert sched["t"] == 2 * steps and sched["offset"] == steps
    assert sched["inner"]["last_epoch"] == steps and "-> restart" in sched["note"]


def test_eval_reproduces_the_train_time_test_accuracy(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("trainer.max_epochs=2", *QUIET, out="train")
    _, metrics = train(cfg)
    best = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    ecfg = make_cfg(f"ckpt_path={best['best_checkpoint']}", "extras.print_config=false",
                    "trainer.enable_progress_bar=false", config_name="eval", out="eval")
    again = evaluate(ecfg)
    assert abs(again["test/acc"] - metrics["test/acc"]) < 1e-3
    assert (Path(ecfg.paths.output_dir) / "metrics.json").is_file()


def test_eval_refuses_mismatched_data(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("trainer.max_epochs=1", "test=false", *QUIET, out="train")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ecfg = make_cfg(f"ckpt_path={last}", "data=synthetic", "data.num_classes=4",
                    "data.in_channels=1", config_name="eval", out="eval")
    with pytest.raises(ValueError, match="num_classes=10 but data gives num_classes=4"):
        evaluate(ecfg)


def test_wandb_offline_run_keeps_its_files(make_cfg: MakeCfg, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg("logger=wandb", "trainer.max_epochs=2", "data.batch_size=256", *QUIET)
    train(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = {p.name for p in runs[0].rglob("*")}
    assert any(name.endswith(".wandb") for name in files)  # what `wandb sync` uploads
    blob = next(runs[0].glob("*.wandb")).read_bytes()
    for key in (b"val/acc", b"train/loss", b"model/params_total", b"optimizer"):
        assert key in blob, key


# ------------------------------------------------------------------ bad input


def test_unknown_model_lists_close_names(make_cfg: MakeCfg) -> None:
    from classicnets.models import create_model

    with pytest.raises(UnknownModelError, match="Did you mean: resnet18"):
        create_model("resnet81")
    proc = subprocess.run([sys.executable, "src/train.py", "model=resnet81"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Could not find 'model/resnet81'" in proc.stderr
    assert "resnet18" in proc.stderr  # Hydra lists the available options


def test_unknown_data_option_is_named(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("data.loader=turbo", *QUIET)
    with pytest.raises(DatasetError, match="data.loader='turbo' is not one of"):
        train(cfg)


def test_missing_dataset_offline(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("data=cifar10", "data.download=false", f"data.root={tmp_path / 'none'}",
                   "model=resnet20", *QUIET)
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py but it does not exist.*data.root"):
        train(cfg)


def test_batch_not_divisible_by_world_size(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("trainer=ddp_sim", "data.batch_size=33", *QUIET)
    with pytest.raises(DatasetError, match="not divisible by the world size 2"):
        # the check runs in setup on every rank; here before processes are launched
        from hydra.utils import instantiate

        dm = instantiate(cfg.data)

        class Two:
            world_size = 2

        dm.trainer = Two()
        dm.setup("fit")


def test_missing_checkpoint_path(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}", *QUIET)
    with pytest.raises(CheckpointError, match="nope.ckpt does not exist"):
        train(cfg)
    ecfg = make_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}", config_name="eval", out="eval")
    with pytest.raises(CheckpointError, match="does not exist; pass ckpt_path"):
        evaluate(ecfg)


# ------------------------------------------------------------------ processes


def _run(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {"PROJECT_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    import os

    return subprocess.run([sys.executable, str(REPO / "src" / "train.py"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


@pytest.mark.slow
def test_ddp_sim_trains_two_processes_into_one_run_dir(tmp_path: Path) -> None:
    proc = _run(["trainer=ddp_sim", "trainer.max_epochs=1", "data.batch_size=64", *QUIET],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert 0 <= metrics["metrics"]["test/acc"] <= 1
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_multirun_two_by_two_writes_summary(tmp_path: Path) -> None:
    proc = _run(["-m", "model=lenet5,resnet20", "optimizer.lr=0.1,0.01", "trainer.max_epochs=1",
                 "data.batch_size=256", *QUIET], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = list((tmp_path / "logs" / "train" / "multiruns").iterdir())
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1", "2", "3"]
    with open(sweep / "sweep_summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert {r["overrides"] for r in rows} == {  # the swept values; the rest is common
        f"model={m} optimizer.lr={lr}" for m in ("lenet5", "resnet20") for lr in ("0.1", "0.01")}
    assert all(0 <= float(r["test/acc"]) <= 1 for r in rows)
    assert "| job | overrides |" in (sweep / "sweep_summary.md").read_text()


@pytest.mark.slow
def test_main_job_reaches_98_percent_on_digits(tmp_path: Path) -> None:
    proc = _run([], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = list((tmp_path / "logs" / "train" / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    # 98.89 % measured at the default seed (99.45 % mean over seeds 1-9, lowest 98.61 %)
    assert metrics["test/acc"] >= 0.98

"""Real SLURM jobs through ``hydra/launcher=slurm``: a sweep of 2-task DDP jobs, and a job that
is signalled as at its time limit (USR1), requeued, and finishes from its checkpoint.

Needs a SLURM cluster: ``tests/scripts/slurm_cluster.sh`` starts one on this machine (``.ci/run``
does). Without one the cluster tests skip with the reason; the refusal tests run anywhere.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from classicnets.parallel.slurm import SlurmConfigError, SlurmUnavailableError
from hydra_plugins.classicnets_slurm_launcher.slurm_launcher import (
    check_cluster,
)

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "src" / "train.py")
# Hydra 1.4's basic sweeper rewrites `~key` as `~key=null`, which fails: null them instead
SWEEP_QUIET = ("extras.print_config=false", "callbacks.rich_progress_bar=null",
               "callbacks.model_summary=null", "trainer.enable_progress_bar=false")
# one CPU per task: two 2-task jobs fit the test cluster's node at once
SLURM = ("hydra/launcher=slurm", "trainer=ddp_sim", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.timeout_min=10")


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not on PATH); start one with tests/scripts/slurm_cluster.sh"
    try:
        check_cluster(timeout_s=10)
    except SlurmUnavailableError as err:
        return str(err)
    return None


PROBLEM = _cluster_problem()
needs_cluster = pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           # sbatch passes this environment on: rank_probe is importable in every task
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "tests"),
                                                     os.environ.get("PYTHONPATH")) if p)}
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT",
                "CLASSICNETS_RUN_NAME"):
        env.pop(key, None)
    return {**env, **extra}


def _train(args: list[str], tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, TRAIN, *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=_env(tmp_path, **env))


def _job_ids(tmp_path: Path) -> list[str]:
    """SLURM ids of the jobs a test submitted (``<array>_<index>``, or one plain id)."""
    return sorted(p.parent.name for p in tmp_path.glob(
        "logs/train/multiruns/*/.submitit/*/*_submitted.pkl"))


def _stop(proc: subprocess.Popen[str], tmp_path: Path) -> None:
    """Leave no process and no SLURM job of this test behind."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
    for job in _job_ids(tmp_path):
        subprocess.run(["scancel", job], capture_output=True)


def _finish(proc: subprocess.Popen[str], tmp_path: Path, timeout: float) -> str:
    """Wait for the sweep (its output); whatever happens, stop what is left of it."""
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        _stop(proc, tmp_path)


def _wait_for(what: str, ready: Any, proc: subprocess.Popen[str], timeout: float) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = ready()
        if value:
            return value
        assert proc.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {timeout:.0f} s")


def _squeue(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True,
                         text=True)
    return out.stdout.strip()


def _summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "sweep_summary.csv") as fh:
        return list(csv.DictReader(fh))


def _records(probe: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(probe.glob("*.json"))}


def _val_rows(job_dir: Path) -> list[tuple[int, int]]:
    """(epoch, step) of each validation row in the job's metrics.csv."""
    with open(job_dir / "csv" / "metrics.csv") as fh:
        return [(int(r["epoch"]), int(r["step"])) for r in csv.DictReader(fh) if r["val/acc"]]


# ------------------------------------------------------------------ refusals (no cluster needed)


def test_no_slurm_client_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no scontrol
    with pytest.raises(SlurmUnavailableError, match=r"not installed.*slurm_cluster\.sh.*"
                                                    r"hydra/launcher=submitit_local"):
        check_cluster()


@pytest.mark.skipif(shutil.which("scontrol") is None, reason="no SLURM client (scontrol)")
def test_controller_that_does_not_answer_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    # a cluster config whose controller listens nowhere: what a stopped slurmctld looks like
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=gone\nSlurmctldHost=localhost\nSlurmctldPort=9\n"
                    "AuthType=auth/none\nNodeName=localhost CPUs=1\n"
                    "PartitionName=p Nodes=localhost Default=YES\n")
    proc = _train(["-m", *SLURM, "optimizer.lr=0.1,0.2", *SWEEP_QUIET], tmp_path,
                  SLURM_CONF=str(conf))
    out = _finish(proc, tmp_path, timeout=120)
    assert proc.returncode == 1, out[-3000:]
    assert "the SLURM controller does not answer (scontrol ping:" in out
    assert "tests/scripts/slurm_cluster.sh" in out and "Traceback" not in out
    assert not (tmp_path / "logs").exists()


def test_devices_slurm_cannot_allocate_are_refused() -> None:
    from omegaconf import OmegaConf

    from hydra_plugins.classicnets_slurm_launcher.slurm_launcher import job_shape

    cfg = OmegaConf.create({"trainer": {"devices": -1, "accelerator": "gpu"},
                            "hydra": {"runtime": {"choices": {"hydra/launcher": "slurm"}}}})
    with pytest.raises(SlurmConfigError, match=r"not -1 .*trainer.devices=4"):
        job_shape({"tasks_per_node": -1}, cfg)
    cfg.trainer.devices = 2
    assert job_shape({"tasks_per_node": 2}, cfg) == {"tasks_per_node": 2, "gpus_per_node": 2}
    assert job_shape({"tasks_per_node": 2, "gpus_per_node": 1}, cfg) == {"tasks_per_node": 2}
    cfg.trainer.accelerator = "cpu"
    assert job_shape({"tasks_per_node": 2}, cfg)["gpus_per_node"] is None


# ------------------------------------------------------------------ resume in place (no cluster)


def test_requeued_job_resumes_from_the_newest_checkpoint_of_its_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import ModelCheckpoint

    from classicnets.parallel.slurm import requeued_checkpoint

    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer: Any = SimpleNamespace(default_root_dir=str(tmp_path), checkpoint_callbacks=[ckpt])
    (tmp_path / "checkpoints").mkdir()
    last, hpc1, hpc2 = (tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt",
                        tmp_path / "hpc_ckpt_2.ckpt")

    def write(path: Path, at: int) -> None:
        path.write_bytes(b"x")
        os.utime(path, ns=(at * 10**9, at * 10**9))

    write(last, 100)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeued_checkpoint(trainer) is None  # a first start trains as configured
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_checkpoint(trainer) == str(last)  # preempted by SIGTERM: the last epoch
    write(hpc1, 200)
    assert requeued_checkpoint(trainer) == str(hpc1)  # saved at the signal, after that epoch
    write(last, 300)
    assert requeued_checkpoint(trainer) == str(last)  # later epochs of the resumed run
    write(hpc2, 400)
    assert requeued_checkpoint(trainer) == str(hpc2)


def test_csv_logger_keeps_the_rows_of_a_run_that_goes_on_in_its_directory(
        tmp_path: Path) -> None:
    from classicnets.runs.csv_logger import CSVLogger

    first = CSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"val/acc": 0.5}, step=9)
    first.save()
    again = CSVLogger(tmp_path, name="csv", version="")  # the requeued job, same directory
    again.log_metrics({"val/acc": 0.7}, step=19)
    again.log_metrics({"test/acc": 0.8}, step=20)  # a new column: the file is rewritten
    again.save()
    with open(tmp_path / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["step"], r["val/acc"], r["test/acc"]) for r in rows] == [
        ("9", "0.5", ""), ("19", "0.7", ""), ("20", "", "0.8")]


@pytest.mark.slow
def test_submitit_local_runs_a_job_as_one_ddp_group_without_a_cluster(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    proc = _train(["-m", "hydra/launcher=submitit_local", "trainer=ddp_sim",
                   "trainer.max_epochs=1", "data.batch_size=128", *SWEEP_QUIET,
                   "+callbacks.probe._target_=rank_probe.RankProbe",
                   f"+callbacks.probe.out_dir={probe}"], tmp_path)
    out = _finish(proc, tmp_path, timeout=300)
    assert proc.returncode == 0, out[-3000:]
    (sweep,) = list((tmp_path / "logs" / "train" / "multiruns").iterdir())
    # submitit's two processes, not two Lightning started: one group of 2, in the job's dir
    r0, r1 = (_records(probe)[f"0-rank{r}"] for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2 and r0["pid"] != r1["pid"]
    assert r0["run_dir"] == r1["run_dir"] == str(sweep / "0")
    assert r0["val"] == r1["val"]
    assert [r["status"] for r in _summary(sweep)] == ["ok"]
    assert len(list(tmp_path.rglob("metrics.json"))) == 1


# ------------------------------------------------------------------ on the cluster


# the cluster tests share the node's CPUs: one after the other, on one xdist worker
@pytest.mark.slow
@needs_cluster
@pytest.mark.xdist_group("slurm")
def test_sweep_runs_each_job_as_a_two_task_slurm_job(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    proc = _train(["-m", *SLURM, "optimizer.lr=0.05,0.1", "trainer.max_epochs=2",
                   "data.batch_size=128", *SWEEP_QUIET,
                   "+callbacks.probe._target_=rank_probe.RankProbe",
                   f"+callbacks.probe.out_dir={probe}"], tmp_path)
    out = _finish(proc, tmp_path, timeout=300)
    assert proc.returncode == 0, out[-3000:]

    logs = tmp_path / "logs" / "train"
    assert [p.name for p in logs.iterdir()] == ["multiruns"]  # no stray runs of single ranks
    (sweep,) = list((logs / "multiruns").iterdir())
    assert {"0", "1", ".submitit", "sweep_summary.csv"} <= {p.name for p in sweep.iterdir()}
    assert not [p for p in sweep.iterdir() if p.is_dir() and p.name not in ("0", "1",
                                                                             ".submitit")]
    # one SLURM job (an array task) per Hydra job, each with two tasks that logged
    jobs = _job_ids(tmp_path)
    assert len(jobs) == 2 and len({j.split("_")[0] for j in jobs}) == 1, jobs
    for job in jobs:
        logs_of = {p.name for p in (sweep / ".submitit" / job).glob("*_log.out")}
        assert logs_of == {f"{job}_0_log.out", f"{job}_1_log.out"}

    records = _records(probe)
    assert set(records) == {"0-rank0", "0-rank1", "1-rank0", "1-rank1"}
    rows = _summary(sweep)
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        ("0", "ok", "optimizer.lr=0.05"), ("1", "ok", "optimizer.lr=0.1")]
    for (job, lr), row in zip((("0", 0.05), ("1", 0.1)), rows):
        run = sweep / job
        # both ranks trained this job together (one DDP group of 2), into this directory
        r0, r1 = records[f"{job}-rank0"], records[f"{job}-rank1"]
        assert (r0["lr"], r1["lr"]) == (lr, lr)
        assert r0["world_size"] == r1["world_size"] == 2
        assert r0["run_dir"] == r1["run_dir"] == str(run)
        assert r0["val"] == r1["val"] and len(r0["val"]) == 2
        saved = json.loads((run / "metrics.json").read_text())
        assert f"optimizer.lr={lr}" in saved["overrides"]
        assert float(row["test/acc"]) == pytest.approx(saved["metrics"]["test/acc"])
        best = Path(saved["best_checkpoint"])
        assert best.parent == run / "checkpoints" and best.is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert not list(run.glob("hpc_ckpt_*.ckpt"))  # nobody was signalled
        assert [e for e, _ in _val_rows(run)] == [0, 1]
        assert (run / "config_resolved.yaml").is_file()
    assert len(list(tmp_path.rglob("metrics.json"))) == 2


@pytest.mark.slow
@needs_cluster
@pytest.mark.xdist_group("slurm")
def test_usr1_checkpoints_requeues_once_and_the_job_finishes_from_there(tmp_path: Path) -> None:
    epochs = 12
    # batches of 16 (8 per rank): about a second per epoch, long enough to be signalled mid-run
    proc = _train(["-m", *SLURM, f"trainer.max_epochs={epochs}", "data.batch_size=16",
                   *SWEEP_QUIET], tmp_path)
    try:
        last = _wait_for("first epoch", lambda: next(iter(tmp_path.glob(
            "logs/train/multiruns/*/0/checkpoints/last.ckpt")), None), proc, timeout=180)
        (job,) = _job_ids(tmp_path)
        # what SLURM sends signal_delay_s before the time limit (sbatch --signal=USR1@90)
        subprocess.run(["scancel", "--signal=USR1", job], check=True)
        _wait_for("requeue", lambda: _squeue(job).startswith("PENDING"), proc, timeout=120)
        # SLURM holds a requeued job for two minutes; the test need not wait for that
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    except BaseException:
        _stop(proc, tmp_path)
        raise
    out = _finish(proc, tmp_path, timeout=300)
    assert proc.returncode == 0, out[-3000:]

    run = last.parents[1]
    sweep = run.parent
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [".submitit", "0"]
    assert len(list(tmp_path.rglob("metrics.json"))) == 1  # no second run directory
    # requeued exactly once, by the callback (one checkpoint at the signal)
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
    assert re.search(r"Restarts=1\b", show.stdout), show.stdout
    (hpc,) = run.glob("hpc_ckpt_*.ckpt")
    state = torch.load(hpc, map_location="cpu", weights_only=True)
    assert 0 < state["epoch"] < epochs - 1, "the signal did not land mid-run"
    task0 = (sweep / ".submitit" / job / f"{job}_0_log.err").read_text()
    assert f"SLURM job {job} requeued at SIGUSR1; it resumes from {hpc}" in task0
    assert f"Restoring states from the checkpoint path at {hpc}" in task0
    assert task0.count("Restoring states from the checkpoint path at") == 2  # resume + test

    # every epoch once, the same number of steps in each: nothing lost, nothing trained twice
    rows = _val_rows(run)
    assert [e for e, _ in rows] == list(range(epochs))
    steps = rows[0][1] + 1
    assert [s for _, s in rows] == [(e + 1) * steps - 1 for e in range(epochs)]
    assert state["global_step"] > rows[state["epoch"] - 1][1]  # saved inside its epoch

    saved = json.loads((run / "metrics.json").read_text())
    assert 0.5 < saved["metrics"]["test/acc"] <= 1
    best = torch.load(saved["best_checkpoint"], map_location="cpu", weights_only=True)
    last_state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=True)
    assert best["epoch"] <= last_state["epoch"] < epochs
    (row,) = _summary(sweep)
    assert row["status"] == "ok"


@pytest.mark.slow
@needs_cluster
@pytest.mark.xdist_group("slurm")
def test_search_prunes_a_trial_that_runs_as_a_two_task_slurm_job(tmp_path: Path) -> None:
    """classicnets' Optuna sweeper with hydra/launcher=slurm: each trial a 2-task DDP job; the
    hopeless one (lr 1e-7, after a trial that learns) is pruned after its first validation,
    both tasks stop together, and the job ends normally."""
    import optuna

    conf = tmp_path / "myconf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "lr.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /optimizer: sgd\n  - override /hydra/sweeper: study\n"
        "optimized_metric: val/acc_best\n"
        "hydra:\n  sweep:\n"
        "    dir: ${paths.log_dir}/${task_name}/search/${hydra.sweeper.study_name}\n"
        "  sweeper:\n    study_name: lr\n    direction: maximize\n"
        "    params:\n      optimizer.lr: choice(1.0e-7, 0.2)\n")
    sweep = tmp_path / "logs" / "train" / "search" / "lr"
    sweep.mkdir(parents=True)
    study = optuna.create_study(study_name="lr", storage=f"sqlite:///{sweep}/optuna.db",
                                direction="maximize")
    for lr in (0.2, 1e-7):
        study.enqueue_trial({"optimizer.lr": lr})
    proc = _train(["-m", "--config-dir", str(tmp_path / "myconf"), "hparams_search=lr", *SLURM,
                   "trainer.devices=2", *SWEEP_QUIET, "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.pruner=median", "+hydra.sweeper.pruner_args.n_startup_trials=1",
                   "trainer.max_epochs=3", "+trainer.limit_train_batches=10",
                   "+trainer.limit_val_batches=4", "logger=csv", "data.num_workers=0"], tmp_path)
    out = _finish(proc, tmp_path, timeout=400)
    assert proc.returncode == 0, out[-3000:]
    rows = _summary(sweep)
    assert [(r["state"], r["epochs"]) for r in rows] == [("complete", "3"), ("pruned", "1")]
    assert (sweep / "1" / "metrics.json").is_file()  # the pruned job tested and recorded

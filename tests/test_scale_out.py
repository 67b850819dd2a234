"""Scaling out: torchrun nodes, several sweep jobs at once on one machine, DDP inside a multirun.

The process tests run the entry points as a user does; `rank_probe.RankProbe` (a test-only
callback, added by override) records what every process saw, outside the run directories.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from classicnets.parallel.launch import (
    RUN_NAME_ENV,
    LaunchConfigError,
    agree_run_name,
    check_world_matches,
    single_run_argv,
)
from classicnets.runs.pipeline import _is_rank_zero
from hydra_plugins.classicnets_parallel_launcher.parallel_launcher import (
    ParallelLauncher,
    Slot,
    job_env,
    plan_slots,
    visible_gpus,
)

REPO = Path(__file__).resolve().parents[1]
TRAIN, EVAL = str(REPO / "src" / "train.py"), str(REPO / "src" / "eval.py")
QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar",
         "~callbacks.model_summary", "trainer.enable_progress_bar=false")
# Hydra 1.4's basic sweeper rewrites `~key` as `~key=null`, which fails: null them instead
SWEEP_QUIET = ("extras.print_config=false", "callbacks.rich_progress_bar=null",
               "callbacks.model_summary=null", "trainer.enable_progress_bar=false")
DIGITS = re.compile(r"digits: (\d+) train / (\d+) val / (\d+) test samples")


# ------------------------------------------------------------------ helpers


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           # rank_probe is importable in every process, the ranks Lightning starts included
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "tests"),
                                                     os.environ.get("PYTHONPATH")) if p)}
    for key in (RUN_NAME_ENV, "RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT"):
        env.pop(key, None)
    return {**env, **extra}


def _probe(out: Path) -> list[str]:
    return ["+callbacks.probe._target_=rank_probe.RankProbe", f"+callbacks.probe.out_dir={out}"]


def _run(script: str, args: list[str], tmp_path: Path, **env: str
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, script, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=400, env=_env(tmp_path, **env))


def _records(probe: Path) -> dict[str, dict[str, Any]]:
    """The probe's record of each process, by `<run dir name>-rank<r>`."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(probe.glob("*.json"))}


def _weights(probe: Path, stem: str) -> dict[str, torch.Tensor]:
    return torch.load(probe / f"{stem}.pt", weights_only=True)


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "sweep_summary.csv") as fh:
        return list(csv.DictReader(fh))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ units


def test_rank_zero_is_the_global_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert _is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")  # torchrun's second node: local 0, global 1
    monkeypatch.setenv("RANK", "1")
    assert not _is_rank_zero()
    monkeypatch.setenv("RANK", "0")
    assert _is_rank_zero()
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "3")  # srun task 3
    assert not _is_rank_zero()
    monkeypatch.setenv("SLURM_PROCID", "0")  # Lightning's rank 1 inside an allocation
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not _is_rank_zero()


def test_torchrun_world_must_match_the_trainer() -> None:
    torchrun = {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1",
                "GROUP_WORLD_SIZE": "2"}
    check_world_matches({"num_nodes": 2, "devices": 1}, torchrun)
    check_world_matches({"num_nodes": 2, "devices": -1}, torchrun)  # Lightning counts
    check_world_matches({"num_nodes": 1, "devices": 2}, {})  # not torchrun: Lightning decides
    with pytest.raises(LaunchConfigError, match=r"--nnodes=2 --nproc_per_node=1.*"
                       r"trainer.num_nodes=1 x trainer.devices=2; add trainer.num_nodes=2 "
                       r"trainer.devices=1"):
        check_world_matches({"num_nodes": 1, "devices": 2}, torchrun)
    with pytest.raises(LaunchConfigError, match="trainer.devices=0,1"):
        check_world_matches({"num_nodes": 2, "devices": "0,1"}, torchrun)


def test_torchrun_processes_agree_on_one_run_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # torchrun's agent
    for key, value in {"TORCHELASTIC_RUN_ID": "none", "TORCHELASTIC_USE_AGENT_STORE": "True",
                       "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(store.port)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(RUN_NAME_ENV, raising=False)
    assert agree_run_name(now="2030-01-01_00-00-00") == "2030-01-01_00-00-00"
    monkeypatch.delenv(RUN_NAME_ENV)  # the other node, a second later
    assert agree_run_name(now="2030-01-01_00-00-01") == "2030-01-01_00-00-00"
    assert os.environ[RUN_NAME_ENV] == "2030-01-01_00-00-00"
    monkeypatch.delenv(RUN_NAME_ENV)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # a restarted attempt: a new run
    assert agree_run_name(now="2030-01-01_00-05-00") == "2030-01-01_00-05-00"
    monkeypatch.delenv(RUN_NAME_ENV)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")  # not torchrun: Hydra's ${now:} as always
    assert agree_run_name() is None and RUN_NAME_ENV not in os.environ


def test_a_ddp_rank_reruns_only_its_own_job() -> None:
    argv = ["/repo/src/train.py", "-m", "--config-name", "train", "trainer=ddp_sim",
            "optimizer.lr=0.01,0.02", "hydra/launcher=parallel", "hydra.job.chdir=true"]
    task = ["trainer=ddp_sim", "optimizer.lr=0.02"]
    hydra = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "hydra.mode=MULTIRUN",
             "hydra.sweep.dir=/x", "hydra.run.dir=/y", "hydra.job.chdir=true"]
    assert single_run_argv(argv, task, hydra) == [
        "/repo/src/train.py", "--config-name", "train", "trainer=ddp_sim", "optimizer.lr=0.02",
        "hydra.job.chdir=true"]


def test_parallel_plan_pins_each_job_to_its_gpus() -> None:
    four = visible_gpus({}, device_count=4)
    assert four == ["0", "1", "2", "3"]
    slots = plan_slots(None, four, cores=16)
    assert [s.devices for s in slots] == [("0",), ("1",), ("2",), ("3",)]
    assert {s.threads for s in slots} == {4}
    pairs = plan_slots(None, four, cores=16, gpus_per_job=2)  # e.g. jobs with trainer=ddp
    assert [s.devices for s in pairs] == [("0", "1"), ("2", "3")] and pairs[0].threads == 8
    # the user's own CUDA_VISIBLE_DEVICES is what gets shared out, ids kept as given
    mine = visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5,GPU-ab12,7"}, device_count=8)
    assert [s.devices for s in plan_slots(None, mine, cores=8)] == [
        ("2",), ("5",), ("GPU-ab12",), ("7",)]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, 4) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, 4) == ["1"]  # as CUDA reads it
    # more jobs than GPUs: they take turns on the GPUs
    assert [s.devices for s in plan_slots(6, four[:2], cores=6)] == [("0",), ("1",)] * 3
    env = job_env({"OMP_NUM_THREADS": "16", "PATH": "/bin"}, slots[2])
    assert env["CUDA_VISIBLE_DEVICES"] == "2" and env["OMP_NUM_THREADS"] == "4"
    assert env["MKL_NUM_THREADS"] == "4" and env["PATH"] == "/bin"
    with pytest.raises(ValueError, match=r"gpus_per_job=8 but 4 GPU\(s\) are visible"):
        plan_slots(None, four, cores=16, gpus_per_job=8)


def test_parallel_plan_splits_the_cores_without_gpus() -> None:
    assert plan_slots(None, [], cores=8) == [Slot((), 4)] * 2  # 2 jobs at once by default
    assert plan_slots(3, [], cores=8) == [Slot((), 2)] * 3
    assert plan_slots(4, [], cores=2) == [Slot((), 1)] * 4  # never below one thread
    assert plan_slots(2, [], cores=8, threads_per_job=1) == [Slot((), 1)] * 2
    assert "CUDA_VISIBLE_DEVICES" not in job_env({}, Slot((), 2))


@pytest.mark.parametrize("key, value", [("n_jobs", 0), ("n_jobs", "two"), ("n_jobs", -1),
                                        ("gpus_per_job", 0), ("threads_per_job", 0)])
def test_parallel_launcher_refuses_bad_counts(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"hydra.launcher.{key}={value}: must be a positive"):
        ParallelLauncher(**{key: value})


def test_parallel_launcher_bad_n_jobs_from_the_command_line(tmp_path: Path) -> None:
    proc = _run(TRAIN, ["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=0",
                        "optimizer.lr=0.1,0.2"], tmp_path)
    assert proc.returncode != 0
    assert "hydra.launcher.n_jobs=0: must be a positive integer (or null" in proc.stderr
    assert not list(tmp_path.glob("logs/train/multiruns/*/0"))  # refused before any job


# ------------------------------------------------------------------ processes


@pytest.mark.slow
def test_torchrun_two_nodes_train_as_one(tmp_path: Path) -> None:
    port, probe = _free_port(), tmp_path / "probe"
    args = ["trainer=ddp_sim", "trainer.devices=1", "trainer.num_nodes=2",
            "trainer.max_epochs=2", "data.batch_size=64", *QUIET, *_probe(probe)]
    procs, logs = [], []
    try:
        for node in (0, 1):  # two "nodes" on the loopback address, started together
            logs.append(tmp_path / f"node{node}.log")
            with open(logs[-1], "w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                     f"--node_rank={node}", "--nproc_per_node=1", "--master_addr=127.0.0.1",
                     f"--master_port={port}", TRAIN, *args],
                    cwd=tmp_path, env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT))
        codes = [p.wait(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)

    # one run directory for both nodes, holding everything rank 0 writes
    (run,) = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert {"config_resolved.yaml", "metrics.json", "checkpoints", ".hydra"} <= {
        p.name for p in run.iterdir()}
    saved = json.loads((run / "metrics.json").read_text())
    records = _records(probe)
    assert set(records) == {f"{run.name}-rank0", f"{run.name}-rank1"}
    r0, r1 = records[f"{run.name}-rank0"], records[f"{run.name}-rank1"]
    assert (r0["world_size"], r0["num_nodes"], r1["world_size"]) == (2, 2, 2)

    # trained together: each rank saw its half of the data and they ended with the same
    # weights (two nodes training alone would each see it all, or differ)
    n_train, _, n_test = map(int, DIGITS.search((run / "train.log").read_text()).groups())
    for rec in (r0, r1):
        assert all(n <= math.ceil(n_train / 2) for n in rec["train_samples"])
    assert r0["train_samples"][0] + r1["train_samples"][0] >= n_train - 64  # drop_last
    assert _same_weights(_weights(probe, f"{run.name}-rank0"),
                         _weights(probe, f"{run.name}-rank1"))
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert _same_weights(last["state_dict"], _weights(probe, f"{run.name}-rank0"))
    assert last["global_step"] == 2 * r0["train_samples"][0] // 32  # 64 split over 2 ranks
    # both log the same (synchronised) validation metrics, which rank 0 saved
    assert r0["val"] == r1["val"]
    assert saved["metrics"]["val/acc"] == pytest.approx(r0["val"][-1]["val/acc"])

    # the best checkpoint, tested in one process, gives the test accuracy metrics.json holds:
    # up to one sample, which the two-rank test pads the odd-sized test set with
    proc = _run(EVAL, [f"ckpt_path={saved['best_checkpoint']}", "extras.print_config=false",
                       "trainer.enable_progress_bar=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ev,) = list((tmp_path / "logs" / "eval" / "runs").iterdir())
    again = json.loads((ev / "metrics.json").read_text())["metrics"]["test/acc"]
    assert abs(again - saved["metrics"]["test/acc"]) <= 1 / n_test + 1e-6


@pytest.mark.slow
def test_parallel_sweep_runs_jobs_at_once_in_their_own_dirs(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    # OMP_NUM_THREADS=3 here: each job must get the launcher's share instead; no GPU jobs
    # 4 epochs: each job's span (below) lasts seconds, longer than the skew of the two jobs'
    # start-ups on a machine busy with other tests (1 epoch, < 1 s, once missed the overlap)
    proc = _run(TRAIN, ["-m", "hydra/launcher=parallel", "optimizer.lr=0.05,0.1",
                        "trainer.max_epochs=4", "data.batch_size=64", *SWEEP_QUIET,
                        *_probe(probe)], tmp_path, OMP_NUM_THREADS="3", CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = tmp_path / "logs" / "train"
    assert [p.name for p in logs.iterdir()] == ["multiruns"]  # no stray single runs
    (sweep,) = list((logs / "multiruns").iterdir())
    assert {p.name for p in sweep.iterdir()} == {"0", "1", "multirun.yaml",
                                                 "sweep_summary.csv", "sweep_summary.md",
                                                 "sweep_plot.png"}
    spans = []
    for job, lr in (("0", 0.05), ("1", 0.1)):
        files = {p.name for p in (sweep / job).iterdir()}
        assert files == {".hydra", "train.log", "config_resolved.yaml", "metrics.json",
                         "checkpoints", "csv", "plots"}
        saved = json.loads((sweep / job / "metrics.json").read_text())
        assert f"optimizer.lr={lr}" in saved["overrides"]
        assert Path(saved["best_checkpoint"]).parent == sweep / job / "checkpoints"
        # from Hydra writing the job's .hydra/ to the job writing its metrics
        spans.append(((sweep / job / ".hydra" / "overrides.yaml").stat().st_mtime,
                      (sweep / job / "metrics.json").stat().st_mtime))
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"ran one after other: {spans}"

    records = _records(probe)
    assert set(records) == {"0-rank0", "1-rank0"}
    assert records["0-rank0"]["pid"] != records["1-rank0"]["pid"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert {r["threads"] for r in records.values()} == {max(1, (cores or 1) // 2)}
    assert [r["lr"] for r in (records["0-rank0"], records["1-rank0"])] == [0.05, 0.1]

    rows = _summary(sweep)
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        ("0", "ok", "optimizer.lr=0.05"), ("1", "ok", "optimizer.lr=0.1")]
    assert all(0 <= float(r["test/acc"]) <= 1 for r in rows)


@pytest.mark.slow
def test_ddp_multirun_keeps_each_job_in_its_own_dir(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    proc = _run(TRAIN, ["-m", "trainer=ddp_sim", "optimizer.lr=0.01,0.02", "logger=wandb",
                        "trainer.max_epochs=1", "data.batch_size=256", *SWEEP_QUIET,
                        *_probe(probe)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = tmp_path / "logs" / "train"
    # Lightning's rank-1 processes used to rerun the whole sweep into a second sweep directory
    assert [p.name for p in logs.iterdir()] == ["multiruns"]
    (sweep,) = list((logs / "multiruns").iterdir())
    assert {p.name for p in sweep.iterdir()} == {"0", "1", "multirun.yaml",
                                                 "sweep_summary.csv", "sweep_summary.md",
                                                 "sweep_plot.png"}
    assert len(list(tmp_path.rglob("multirun.yaml"))) == 1
    assert len(list(tmp_path.rglob("metrics.json"))) == 2
    for job, lr in (("0", 0.01), ("1", 0.02)):
        assert (sweep / job / "metrics.json").is_file()
        assert len(list((sweep / job / "wandb").glob("offline-run-*"))) == 1  # not one per rank
        # both ranks ran this job (its learning rate) together, into this directory
        r0, r1 = (_records(probe)[f"{job}-rank{r}"] for r in (0, 1))
        assert (r0["lr"], r1["lr"]) == (lr, lr)
        assert r0["world_size"] == r1["world_size"] == 2
        assert r0["run_dir"] == r1["run_dir"] == str(sweep / job)
        assert r0["val"] == r1["val"]
        assert _same_weights(_weights(probe, f"{job}-rank0"), _weights(probe, f"{job}-rank1"))
    assert len(_records(probe)) == 4

    rows = _summary(sweep)
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        ("0", "ok", "optimizer.lr=0.01"), ("1", "ok", "optimizer.lr=0.02")]

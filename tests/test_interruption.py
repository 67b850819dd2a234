"""Runs that are interrupted and resumed in place: a real SIGTERM / SIGINT to a real training
process mid-epoch, exit status and resume command, and a resumed run whose final weights equal
an uninterrupted run's bit for bit; last.ckpt as the newest state; the logs and val/acc_best of
a run resumed in its own directory; the fast loader's position within an epoch."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from classicnets.data.catalogue import read_synthetic
from classicnets.data.fast import DeviceLoader
from classicnets.data.transforms import BatchTransform
from classicnets.runs.config_check import ConfigError
from classicnets.runs.loggers import resume_wandb_run
from classicnets.runs.pipeline import train
from classicnets.runs.resume import resume_arguments
from classicnets.training.module import ImageClassifier

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "src" / "train.py")
QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar",
         "~callbacks.model_summary", "trainer.enable_progress_bar=false")
MakeCfg = Callable[..., DictConfig]
# LeNet-5 on synthetic 32-px images: crop/flip augmentation and shuffling, so a resume must
# continue both exactly; 224 training images in batches of 16 = 14 steps an epoch
RUN = ("data=synthetic", "data.num_samples=256", "data.batch_size=16", "trainer.max_epochs=3",
       "trainer.deterministic=true", "test=false", *QUIET)
STEPS_PER_EPOCH = 14
# val rows of metrics.csv that must not depend on wall time
COLUMNS = ("epoch", "step", "val/acc", "val/loss", "val/acc_best", "train/loss", "train/acc")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "tests"),
                                                     os.environ.get("PYTHONPATH")) if p)}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "CLASSICNETS_RUN_NAME"):
        env.pop(key, None)
    return env


def _start(args: list[str], tmp_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, TRAIN, *args], cwd=tmp_path, env=_env(tmp_path),
                                stdout=out, stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text(errors="replace")


def _val_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/acc")]
    # the train/* values of an epoch are logged in the same row as its validation
    return [{k: r.get(k, "") for k in COLUMNS} for r in rows]


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_signal_mid_epoch_then_resume_in_place_equals_the_uninterrupted_run(
        tmp_path: Path) -> None:
    ref, runs = tmp_path / "ref", {"SIGTERM": (tmp_path / "term", 20),
                                    "SIGINT": (tmp_path / "int", 33)}
    procs = {"ref": _start([*RUN, f"hydra.run.dir={ref}"], tmp_path, tmp_path / "ref.log")}
    for name, (run, step) in runs.items():
        probe = ["+callbacks.probe._target_=fault_probes.PauseAtStep",
                 f"+callbacks.probe.marker={tmp_path / name}", f"+callbacks.probe.step={step}"]
        procs[name] = _start([*RUN, f"hydra.run.dir={run}", *probe], tmp_path,
                             tmp_path / f"{name}.log")
    try:
        pending = dict(runs)
        end = time.monotonic() + 240
        while pending and time.monotonic() < end:  # a real signal once a run is mid-epoch
            for name in list(pending):
                if (tmp_path / name).is_file():
                    procs[name].send_signal(getattr(signal, name))
                    del pending[name]
                assert procs[name].poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            time.sleep(0.1)
        assert not pending, f"no marker from {list(pending)}"
        outs = {name: _wait(proc, tmp_path / f"{name}.log") for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert procs["ref"].returncode == 0, outs["ref"][-3000:]

    for name, (run, step) in runs.items():
        out = outs[name]
        code = procs[name].returncode
        assert code == 128 + getattr(signal, name), out[-3000:]  # not 0: a scheduler sees it
        assert f"{name}: training stopped in epoch {step // STEPS_PER_EPOCH}" in out
        assert f"saved {run / 'checkpoints' / 'last.ckpt'}" in out
        assert f"python src/train.py resume={run}" in out
        saved = _state(run)  # saved inside the epoch: the loader holds its place in it
        (position,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
        assert saved["global_step"] == step + 1  # the signal took effect at the next step
        assert 0 < position["batches"] < STEPS_PER_EPOCH
        assert not (run / "metrics.json").exists()

    # resume each in its own directory, from nothing but that directory
    resumed = {name: _start([f"resume={run}"], tmp_path, tmp_path / f"{name}-resume.log")
               for name, (run, _) in runs.items()}
    for name, proc in resumed.items():
        out = _wait(proc, tmp_path / f"{name}-resume.log")
        assert proc.returncode == 0, out[-3000:]
        assert "resuming from" in out and "not resumable" not in out

    want = _state(ref)
    for name, (run, _) in runs.items():
        got = _state(run)
        assert got["global_step"] == want["global_step"] == 3 * STEPS_PER_EPOCH
        for key, value in want["state_dict"].items():
            assert torch.equal(got["state_dict"][key], value), (name, key)
        for i, moments in want["optimizer_states"][0]["state"].items():
            assert torch.equal(got["optimizer_states"][0]["state"][i]["momentum_buffer"],
                               moments["momentum_buffer"]), (name, i)
        # every epoch once, the rows before the interruption kept, the same values
        assert _val_rows(run) == _val_rows(ref), name
        metrics = json.loads((run / "metrics.json").read_text())["metrics"]
        assert metrics["val/acc_best"] == json.loads(
            (ref / "metrics.json").read_text())["metrics"]["val/acc_best"]
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
            p.name for p in (ref / "checkpoints").iterdir())


@pytest.mark.parametrize(("newer_wins_ties", "best"), [(False, 0), (True, 2)])
def test_last_ckpt_is_the_newest_epoch_and_best_is_kept(
    make_cfg: MakeCfg, newer_wins_ties: bool, best: int
) -> None:
    # lr 0: val/acc is the same every epoch; ModelCheckpoint keeps epoch 0 as the best, ours by
    # default lets each later equal epoch take its place (only one best file either way)
    cfg = make_cfg("data=synthetic", "data.num_samples=128", "data.batch_size=32",
                   "trainer.max_epochs=3", "optimizer.lr=0.0", "test=false",
                   f"callbacks.model_checkpoint.newer_wins_ties={newer_wins_ties}", *QUIET)
    train(cfg)
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [f"epoch_{best:03d}.ckpt", "last.ckpt"]
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 3 * 3
    (best_state,) = [v for k, v in last["callbacks"].items() if "val/acc" in k]
    assert Path(best_state["best_model_path"]).name == f"epoch_{best:03d}.ckpt"


def test_resume_in_place_keeps_the_logs_and_the_best_so_far(make_cfg: MakeCfg) -> None:
    first = make_cfg("trainer.max_epochs=2", "data.batch_size=128", "test=false", *QUIET)
    train(first)
    run = Path(first.paths.output_dir)
    again = make_cfg("trainer.max_epochs=3", "data.batch_size=128", "test=false",
                     f"resume={run}", *QUIET)  # the same run directory, as the CLI makes it
    value, metrics = train(again)
    rows = _val_rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # epochs 0 and 1 kept, 2 appended
    accs = [float(r["val/acc"]) for r in rows]
    assert [float(r["val/acc_best"]) for r in rows] == [max(accs[: i + 1]) for i in range(3)]
    assert value == metrics["val/acc_best"] == max(accs)
    assert _state(run)["epoch"] == 2
    assert len(list((run / "checkpoints").glob("*.ckpt"))) == 2  # best-k tracking went on


def test_resume_must_run_in_its_own_directory(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg(f"resume={tmp_path / 'elsewhere'}", *QUIET)
    with pytest.raises(ConfigError, match=r"continues a run in its own directory.*"
                                          r"python src/train.py resume="):
        train(cfg)


def test_val_acc_best_survives_a_checkpoint_round_trip() -> None:
    model = {"_target_": "classicnets.models.create_model", "name": "lenet5", "num_classes": 10,
             "in_channels": 1, "input_size": 32}
    before = ImageClassifier(model=model)
    before.val_acc_best.update(torch.tensor(0.9))
    ckpt: dict = {}
    before.on_save_checkpoint(ckpt)
    after = ImageClassifier(model=model)
    after.on_load_checkpoint(ckpt)
    after.on_train_start()  # resets the sanity check's values, keeps the restored best
    after.val_acc_best.update(torch.tensor(0.5))
    assert after.val_acc_best.compute().item() == pytest.approx(0.9)


def test_resume_arguments_take_the_runs_own_overrides(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "logs" / "train" / "runs"
    old, new = runs / "2026-01-01_00-00-00", runs / "2026-01-02_00-00-00"
    for i, run in enumerate((old, new)):
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(
            "- model=resnet20\n- trainer.max_epochs=10\n- ckpt_path=/x.ckpt\n")
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
        os.utime(run / "checkpoints" / "last.ckpt", ns=((i + 1) * 10**9,) * 2)
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    assert resume_arguments(["model=vgg11"]) == ["model=vgg11"]  # nothing to resume
    # the run's overrides, then the ones given now (they win), then its directory
    assert resume_arguments([f"resume={old}", "trainer.max_epochs=20"]) == [
        "model=resnet20", "trainer.max_epochs=20", f"resume={old}", f"hydra.run.dir={old}"]
    # ckpt_path=last: the run of this task with the newest checkpoint
    assert resume_arguments(["ckpt_path=last"])[-2:] == [f"resume={new}",
                                                         f"hydra.run.dir={new}"]
    with pytest.raises(ConfigError, match="resume=<sweep dir>/<job number>"):
        resume_arguments(["-m", f"resume={old}"])
    with pytest.raises(ConfigError, match=r"overrides.yaml does not exist.*runs/<time>"):
        resume_arguments([f"resume={tmp_path}"])


def test_a_resumed_run_logs_on_into_its_wandb_run(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("logger=wandb", *QUIET)
    run = Path(cfg.paths.output_dir)
    for name in ("offline-run-20260101_000000-first1", "offline-run-20260102_000000-abc123"):
        (run / "wandb" / name).mkdir(parents=True)
        time.sleep(0.01)  # the newer one by modification time too
    resume_wandb_run(cfg, run)
    assert (cfg.logger.wandb.id, cfg.logger.wandb.resume) == ("abc123", "allow")


def _loader(seed: int = 42) -> DeviceLoader:
    data = read_synthetic(Path("."), "train", num_samples=100)  # generated: no files read
    tf = BatchTransform("crop_flip", train=True, native_size=32, image_size=32,
                        mean=(0.5,) * 3, std=(0.25,) * 3)
    return DeviceLoader(data, batch_size=8, transform=tf, shuffle=True, drop_last=False,
                        seed=seed)


def test_fast_loader_resumes_inside_an_epoch_with_the_same_draws() -> None:
    full = _loader()
    full.set_epoch(3)
    batches = list(full)
    assert full.state_dict() == {"epoch": 3, "batches": len(batches)}
    for served in (1, 5, len(batches) - 1):
        part = _loader()
        part.load_state_dict({"epoch": 3, "batches": served})
        part.set_epoch(3)  # Lightning sets the epoch after restoring the state
        rest = list(part)
        assert len(rest) == len(batches) - served
        for (x, y), (x2, y2) in zip(batches[served:], rest):
            assert torch.equal(x, x2) and torch.equal(y, y2)  # same images, same crops/flips
        part.set_epoch(4)  # the next epoch is whole again
        assert len(list(part)) == len(batches)
    # a state saved at an epoch's end (or of another epoch) skips nothing
    for state in ({"epoch": 3, "batches": len(batches)}, {"epoch": 2, "batches": 5}):
        other = _loader()
        other.load_state_dict(state)
        other.set_epoch(3)
        assert len(list(other)) == len(batches)

"""Dashboards, logger set-up and secrets: runs on digits, read back from the files they wrote.

W&B runs offline (no account): its transaction log is parsed by ``wandb_records``; TensorBoard's
event files by TensorBoard's own EventAccumulator.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from classicnets.callbacks.dashboard import _Shard, render_confusion_matrix
from classicnets.runs.loggers import LoggerConfigError, check_logger_config, flatten
from classicnets.runs.pipeline import train
from wandb_records import OfflineRun, offline_runs, read_run

REPO = Path(__file__).resolve().parents[1]
MakeCfg = Callable[..., DictConfig]
QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar",
         "~callbacks.model_summary", "trainer.enable_progress_bar=false")
TEST_SIZE = 359  # digits' test split: odd, so two DDP ranks see one padded repeat
VAL_SIZE = 144
FAKE_KEY = "cnfake0secret7Qz9XwVb2Lk4Mn8Pr1St6Uv3Yx5Za0Bc7De"  # 48 characters, unique


def _tensorboard(run: Path) -> object:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def _matrix(table: dict, names: list[str]) -> torch.Tensor:
    """The W&B confusion-matrix table (Actual, Predicted, nPredictions rows) as a tensor."""
    index = {n: i for i, n in enumerate(names)}
    cm = torch.zeros(len(names), len(names), dtype=torch.int64)
    for actual, predicted, count in table["data"]:
        cm[index[actual], index[predicted]] += int(count)
    return cm


def _env_without_wandb(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


# ------------------------------------------------------------------ W&B and TensorBoard, one run
@pytest.fixture(scope="module")
def many_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float], Path]:
    """logger=many, 2 epochs, matrix every epoch, gradient norm, best checkpoint uploaded."""
    from hydra.core.global_hydra import GlobalHydra

    from conftest import compose_config

    base = tmp_path_factory.mktemp("many")
    data_dir = base / "wandb_data"  # W&B stages table and model artifacts here
    saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_DATA_DIR")}
    os.environ.update(WANDB_MODE="offline", WANDB_DATA_DIR=str(data_dir))
    try:
        cfg = compose_config(["logger=many", "trainer.max_epochs=2", "data.batch_size=128",
                              "callbacks.dashboard.confusion_every_n_epochs=1",
                              "callbacks.dashboard.log_grad_norm=true",
                              "logger.wandb.log_model=true", *QUIET], base / "run")
        _, metrics = train(cfg)
    finally:
        GlobalHydra.instance().clear()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Path(cfg.paths.output_dir), metrics, data_dir


@pytest.fixture(scope="module")
def wandb_run(many_run: tuple[Path, dict[str, float], Path]) -> OfflineRun:
    runs = offline_runs(many_run[0])
    assert len(runs) == 1
    return read_run(runs[0])


def test_wandb_config_is_flat_with_overrides_and_group(wandb_run: OfflineRun) -> None:
    config = wandb_run.config
    # flattened keys, named as on the command line: the parallel-coordinates axes
    assert config["optimizer.lr"] == pytest.approx(0.05) and config["model.name"] == "lenet5"
    assert config["data.batch_size"] == 128
    assert "callbacks.dashboard.log_grad_norm=true" in config["overrides"]
    assert config["model/params_total"] == 61706  # logged by the module at train start
    assert wandb_run.run.run_group == "train"  # a single run: grouped by its task


def test_wandb_per_epoch_scalars(wandb_run: OfflineRun) -> None:
    for key in ("train/loss", "val/acc", "lr-SGD", "time/epoch_s", "time/images_per_s",
                "train/grad_norm"):
        values = wandb_run.column(key)
        assert len(values) == 2, key  # once per epoch
        assert all(v > 0 for v in values), key


def test_wandb_confusion_matrices_match_accuracy(
        wandb_run: OfflineRun, many_run: tuple[Path, dict[str, float], Path]) -> None:
    metrics = many_run[1]
    names = [str(i) for i in range(10)]
    test = _matrix(wandb_run.table("test/confusion_matrix"), names)
    assert int(test.sum()) == TEST_SIZE
    assert float(test.trace()) / TEST_SIZE == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert wandb_run.summary["test/acc"] == pytest.approx(metrics["test/acc"])
    # the validation matrix every epoch (confusion_every_n_epochs=1), over the whole split
    for epoch in (0, 1):
        val = _matrix(wandb_run.table("val/confusion_matrix", epoch), names)
        assert int(val.sum()) == VAL_SIZE
    assert float(val.trace()) / VAL_SIZE == pytest.approx(metrics["val/acc"], abs=1e-6)
    per_class = wandb_run.table("test/per_class_accuracy")
    assert per_class["columns"] == ["class", "accuracy", "support"]
    for name, acc, support in per_class["data"]:
        i = names.index(name)
        assert support == int(test[i].sum())
        assert acc == pytest.approx(float(test[i, i]) / support)
    chart = wandb_run.config["_wandb"]["visualize"]["test/confusion_matrix"]
    assert chart["panel_config"]["panelDefId"] == "wandb/confusion_matrix/v1"


def test_wandb_predictions_table_and_mistakes(wandb_run: OfflineRun) -> None:
    table = wandb_run.table("test/predictions")
    assert table["columns"][:5] == ["index", "image", "label", "prediction", "correct"]
    rows = table["data"]
    assert len(rows) == 32
    # a fixed sample of the test set, drawn from the seed (42): the same images every run
    positions = [row[0] for row in rows]
    drawn = torch.randperm(TEST_SIZE, generator=torch.Generator().manual_seed(42))[:32]
    assert positions == sorted(drawn.tolist())
    artifact = next(a for a in wandb_run.artifacts if a.name.startswith(
        f"run-{wandb_run.run.run_id}-testpredictions"))
    for row in rows:
        _, image, label, prediction, correct, *top = row
        assert correct == (label == prediction) and top[0] == prediction
        probs = top[1::2]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
        png = wandb_run.artifact_file(artifact, image["path"])
        assert Image.open(png).size == (96, 96)
    mistakes = next(row["test/worst_mistakes"] for row in wandb_run.history
                    if "test/worst_mistakes" in row)
    assert 0 < mistakes["count"] <= 16
    confidences = [float(c.rsplit("(", 1)[1].rstrip(")")) for c in mistakes["captions"]]
    assert confidences == sorted(confidences, reverse=True)
    for caption in mistakes["captions"]:  # "#12: true 3, predicted 8 (0.912)": wrong ones only
        true, predicted = caption.split("true ")[1].split(", predicted ")
        assert true != predicted.split(" ")[0]
    for name in mistakes["filenames"]:
        assert (wandb_run.files / name).is_file()


def test_wandb_best_checkpoint_artifact(wandb_run: OfflineRun,
                                        many_run: tuple[Path, dict[str, float], Path]) -> None:
    run_dir = many_run[0]
    models = [a for a in wandb_run.artifacts if a.type == "model"]
    best = next(a for a in models if "best" in a.aliases)
    meta = json.loads(best.metadata)
    assert meta["original_filename"] == json.loads(
        (run_dir / "metrics.json").read_text())["best_checkpoint"].rsplit("/", 1)[1]
    staged = wandb_run.artifact_file(best, "model.ckpt")
    assert staged.is_relative_to(many_run[2])  # WANDB_DATA_DIR, until `wandb sync` uploads it
    state = torch.load(staged, map_location="cpu", weights_only=True)
    assert "state_dict" in state


def test_tensorboard_scalars_and_images(many_run: tuple[Path, dict[str, float], Path]) -> None:
    run_dir, metrics, _ = many_run
    acc = _tensorboard(run_dir)
    scalars = set(acc.Tags()["scalars"])
    assert {"time/epoch_s", "time/images_per_s", "train/grad_norm", "lr-SGD"} <= scalars
    assert {f"test/class_acc/{i}" for i in range(10)} <= scalars
    per_class = [acc.Scalars(f"test/class_acc/{i}")[-1].value for i in range(10)]
    assert min(per_class) <= metrics["test/acc"] <= max(per_class)
    assert len(acc.Images("val/confusion_matrix")) == 2  # every epoch
    for tag, least in (("test/confusion_matrix", 300), ("test/predictions", 700),
                       ("test/worst_mistakes", 700)):
        event = acc.Images(tag)[-1]
        image = _png(event.encoded_image_string)
        assert image.size == (event.width, event.height) and min(image.size) >= 200, tag
        assert max(image.size) >= least, tag


# ------------------------------------------------------------------ without W&B / TensorBoard
def test_no_logger_trains(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("logger=[]", "trainer.max_epochs=1", "data.batch_size=256", *QUIET)
    _, metrics = train(cfg)  # the LR monitor would raise: the pipeline leaves it out
    run = Path(cfg.paths.output_dir)
    assert 0 <= metrics["test/acc"] <= 1
    assert not any((run / name).exists() for name in ("csv", "tensorboard", "wandb"))


def test_csv_gets_speed_scalars(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("trainer.max_epochs=1", "data.batch_size=256", *QUIET)
    train(cfg)
    header = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "time/epoch_s" in header and "time/images_per_s" in header
    assert "train/grad_norm" not in header  # off by default


# ------------------------------------------------------------------ W&B key, secrets
def test_missing_wandb_key_fails_at_start_without_a_prompt(tmp_path: Path) -> None:
    env = _env_without_wandb(HOME=str(tmp_path))  # no key, no ~/.netrc, online by default
    env.pop("NETRC", None)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "src" / "train.py"), "logger=wandb",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    for hint in ("WANDB_API_KEY", ".env", "WANDB_MODE=offline"):
        assert hint in proc.stderr, hint
    assert not (tmp_path / "run" / "wandb").exists()  # nothing was built
    assert not (tmp_path / "run" / "config_resolved.yaml").exists()
    assert time.monotonic() - start < 60


def test_wandb_key_check(make_cfg: MakeCfg, monkeypatch: pytest.MonkeyPatch,
                         tmp_path: Path) -> None:
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    cfg = make_cfg("logger=wandb")
    with pytest.raises(LoggerConfigError, match="WANDB_MODE=offline"):
        check_logger_config(cfg)
    check_logger_config(make_cfg("logger=wandb", "logger.wandb.offline=true"))
    check_logger_config(make_cfg("logger=csv"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_logger_config(cfg)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    check_logger_config(cfg)


def test_a_secret_in_the_config_is_refused(make_cfg: MakeCfg,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    cfg = make_cfg("+note=${oc.env:WANDB_API_KEY}", *QUIET)
    with pytest.raises(LoggerConfigError, match=r"note \(the value of \$WANDB_API_KEY\)"):
        train(cfg)
    assert not any(Path(cfg.paths.output_dir).iterdir())  # nothing written
    assert not any("oc.env:" in line and any(s in line.upper() for s in ("KEY", "TOKEN",
                                                                         "SECRET"))
                   for p in (REPO / "conf").rglob("*.yaml") for line in p.read_text().splitlines())


def test_env_secret_is_written_nowhere(tmp_path: Path) -> None:
    """The key from .env reaches no file of the run: configs, logs, checkpoints, W&B's files."""
    (tmp_path / ".env").write_text(f"WANDB_API_KEY={FAKE_KEY}\nWANDB_MODE=offline\n")
    data_dir = tmp_path / "wandb_data"
    env = _env_without_wandb(HOME=str(tmp_path), WANDB_DATA_DIR=str(data_dir))
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "src" / "train.py"), "logger=many",
                           "logger.wandb.log_model=true", "trainer.max_epochs=1",
                           "data.batch_size=256", f"hydra.run.dir={run}", *QUIET],
                          cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(offline_runs(run)) == 1  # WANDB_MODE=offline came from .env
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".env"]
    assert any(p.suffix == ".ckpt" for p in written) and any(p.suffix == ".wandb"
                                                             for p in written)
    assert any(p.is_relative_to(data_dir) for p in written)  # W&B's staged artifacts
    leaked = [p for p in written if FAKE_KEY.encode() in p.read_bytes()]
    assert not leaked
    assert FAKE_KEY not in proc.stdout + proc.stderr


# ------------------------------------------------------------------ DDP, multirun
def _subprocess_train(args: list[str], tmp_path: Path, timeout: int = 600
                      ) -> subprocess.CompletedProcess:
    env = _env_without_wandb(WANDB_MODE="offline", WANDB_SILENT="true",
                             WANDB_DATA_DIR=str(tmp_path / "wandb_data"))
    proc = subprocess.run([sys.executable, "src/train.py", *args, *QUIET], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_ddp_sim_test_matrix_covers_the_whole_test_set(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _subprocess_train(["trainer=ddp_sim", "logger=many", "trainer.max_epochs=1",
                       "data.batch_size=64", f"hydra.run.dir={run}"], tmp_path)
    runs = offline_runs(run)
    assert len(runs) == 1  # one W&B run, not one per rank
    wb = read_run(runs[0])
    cm = _matrix(wb.table("test/confusion_matrix"), [str(i) for i in range(10)])
    # both shards, without the padded repeat (DistributedSampler gives each rank 180 samples)
    assert int(cm.sum()) == TEST_SIZE
    test_acc = json.loads((run / "metrics.json").read_text())["metrics"]["test/acc"]
    # torchmetrics' test/acc counts the repeat: 360 samples
    assert abs(float(cm.trace()) / TEST_SIZE - test_acc) <= 1 / TEST_SIZE + 1e-6
    assert len(wb.table("test/predictions")["data"]) == 32  # gathered from both ranks
    acc = _tensorboard(run)
    assert len(acc.Images("test/confusion_matrix")) == 1


@pytest.mark.slow
def test_multirun_jobs_grouped_by_sweep_with_swept_values(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _subprocess_train(["-m", "optimizer.lr=0.05,0.02", "logger=wandb", "trainer.max_epochs=1",
                       "data.batch_size=256", "callbacks.dashboard.num_predictions=0",
                       f"hydra.sweep.dir={sweep}"], tmp_path)
    seen = {}
    for job in ("0", "1"):
        runs = offline_runs(sweep / job)
        assert len(runs) == 1
        wb = read_run(runs[0])
        assert wb.run.run_group == "train-sweep"  # <task>-<sweep dir name>
        seen[wb.config["optimizer.lr"]] = wb.config["overrides"]
    assert set(seen) == {0.05, 0.02}
    assert "optimizer.lr=0.05" in seen[0.05] and "optimizer.lr=0.02" in seen[0.02]


# ------------------------------------------------------------------ pieces
def test_shard_drops_the_padded_repeats() -> None:
    # 5 samples over 2 ranks: rank 0 gets positions 0, 2, 4; rank 1 gets 1, 3 and a repeat
    rank0, rank1 = _Shard(5, 2, 0), _Shard(5, 2, 1)
    assert rank0.advance(2) == (0, 2) and rank0.advance(1) == (2, 1)
    assert rank1.advance(2) == (0, 2) and rank1.advance(1) == (2, 0)
    assert _Shard(None, 2, 1).advance(3) == (0, 3)


def test_render_confusion_matrix_sizes() -> None:
    small = render_confusion_matrix(torch.eye(3, dtype=torch.int64) * 5, ["cat", "dog", "emu"])
    assert small.ndim == 3 and small.shape[2] == 3
    big = render_confusion_matrix(torch.eye(500, dtype=torch.int64), [str(i) for i in range(500)])
    assert big.shape[0] >= 500 and big.shape[1] >= 500  # one pixel per cell at least


def test_flatten_keeps_lists() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": {}}


# ------------------------------------------------------------------ GPU: the fast path stays fast
@pytest.mark.gpu
@pytest.mark.parametrize("deterministic", [False, True])
def test_dashboard_batch_hooks_never_wait_for_the_gpu(
        deterministic: bool, make_cfg: MakeCfg, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Every per-step hook runs under CUDA's sync debug mode "error": a read-back would raise."""
    from classicnets.callbacks import Dashboard

    def strict(hook: Callable[..., object]) -> Callable[..., object]:
        def run(*args: object, **kwargs: object) -> object:
            torch.cuda.set_sync_debug_mode("error")
            try:
                return hook(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return run

    for name in ("on_train_batch_end", "on_before_optimizer_step", "on_validation_batch_end",
                 "on_test_batch_end"):
        monkeypatch.setattr(Dashboard, name, strict(getattr(Dashboard, name)))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    cfg = make_cfg("trainer=gpu", "logger=many", "trainer.max_epochs=2",
                   f"trainer.deterministic={str(deterministic).lower()}",
                   "callbacks.dashboard.confusion_every_n_epochs=1",
                   "callbacks.dashboard.log_grad_norm=true", *QUIET)
    _, metrics = train(cfg)
    wb = read_run(offline_runs(Path(cfg.paths.output_dir))[0])
    cm = _matrix(wb.table("test/confusion_matrix"), [str(i) for i in range(10)])
    assert int(cm.sum()) == TEST_SIZE
    assert float(cm.trace()) / TEST_SIZE == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert len(wb.table("test/predictions")["data"]) == 32
    assert len(wb.column("train/grad_norm")) == 2

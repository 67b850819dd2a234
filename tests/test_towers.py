"""AlexNet's two towers on two processes (trainer=towers_sim): equal to the grouped network on
one process, checkpoints that cross between the two, and refusals that name the fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from classicnets.parallel import TowerConfigError
from classicnets.runs.pipeline import evaluate, train
from conftest import compose_config

REPO = Path(__file__).resolve().parents[1]
MakeCfg = Callable[..., DictConfig]
QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar", "~callbacks.model_summary",
         "trainer.enable_progress_bar=false")
# AlexNet on digits at 32 px (stride-1 conv1), no dropout or augmentation: two runs that see
# the same data take the same steps, whatever the layout
SMALL = ("model=alexnet", "data.image_size=32", "model.dropout=0", "model.init=kaiming",
         "data.augment=false", "data.batch_size=64", "optimizer.lr=0.01",
         "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2",
         "+trainer.limit_test_batches=2", *QUIET)
TOL = 1e-5  # largest difference relative to the tensor's largest magnitude (fp32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _equivalence(tmp_path: Path, nproc: int, *args: str) -> list[dict]:
    out = tmp_path / "eq"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           str(REPO / "tests" / "scripts" / "towers_equivalence.py"), str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


def _assert_equal_to_reference(results: list[dict]) -> None:
    for r in results:
        assert r["logits"] <= TOL, r["logits"]
        assert len(r["grads"]) == 16  # weight and bias of 5 convolutions and 3 FC layers
        bad = {k: v for k, v in r["grads"].items() if not v <= TOL}
        assert not bad, f"gradients differ: {bad}"
        bad = {k: v for k, v in r["weights"].items() if not v <= TOL}
        assert not bad, f"weights after one SGD step differ: {bad}"


@pytest.mark.slow
def test_tower_pair_equals_grouped_alexnet_and_holds_half(tmp_path: Path) -> None:
    results = _equivalence(tmp_path, 2)  # the paper's network at 227 px, 1000 classes
    _assert_equal_to_reference(results)
    assert [r["tower"] for r in results] == [0, 1]
    for r in results:
        assert r["full_params"] == 60_965_224
        assert r["local_params"] == 30_482_612  # exactly half on each process
        # activations cross only into conv3, FC6, FC7, FC8, and for the 1000-way softmax
        assert r["crossings"] == [256, 256 * 6 * 6, 4096, 4096, 1000]


@pytest.mark.slow
def test_two_replicas_of_two_towers_equal_grouped_alexnet(tmp_path: Path) -> None:
    results = _equivalence(tmp_path, 4, "--size", "67", "--batch", "4")
    _assert_equal_to_reference(results)
    assert [(r["replica"], r["tower"]) for r in results] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_odd_class_count_splits_unevenly(tmp_path: Path) -> None:
    results = _equivalence(tmp_path, 2, "--size", "32", "--classes", "5", "--batch", "4")
    _assert_equal_to_reference(results)
    assert sum(r["local_params"] for r in results) == results[0]["full_params"]
    assert results[0]["crossings"][-1] == 5


# ------------------------------------------------------------------ through src/train.py


def _train(tmp_path: Path, name: str, *args: str) -> Path:
    """A tower run: src/train.py in its own process (Lightning starts the others from it)."""
    run = tmp_path / name
    cmd = [sys.executable, str(REPO / "src" / "train.py"), *SMALL, f"hydra.run.dir={run}", *args]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**_env(), "PROJECT_ROOT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run


def _train_here(run: Path, *args: str, config_name: str = "train") -> Path:
    """A one-device run (or evaluation) in this process, composed as src/train.py composes it:
    what the tower runs are compared with, without a process start of its own."""
    cfg = compose_config([*(SMALL if config_name == "train" else ()), *args], run, config_name)
    try:
        (train if config_name == "train" else evaluate)(cfg)
    finally:
        GlobalHydra.instance().clear()
    return run


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of two steps on one device: the reference of the fresh tower runs and the
    checkpoint the crossing runs start from (the tests that use it share one xdist worker)."""
    return _train_here(tmp_path_factory.mktemp("towers") / "one", "trainer=cpu",
                       "trainer.max_epochs=1", "test=false")


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _assert_same_weights(a: dict, b: dict) -> None:
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].shape == sb[k].shape, k
        diff = float((sa[k] - sb[k]).abs().max() / sb[k].abs().max().clamp_min(1e-12))
        assert diff <= TOL, (k, diff)
    ma, mb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert ma.keys() == mb.keys()
    for i in ma:
        torch.testing.assert_close(ma[i]["momentum_buffer"], mb[i]["momentum_buffer"],
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.xdist_group("towers")
def test_tower_run_steps_like_one_device(one_epoch: Path, tmp_path: Path) -> None:
    """One epoch of two steps: towers (1 replica) and towers × 2 replicas end with the weights
    and momentum of the single-device run that saw the same global batches."""
    one = _state(one_epoch)
    pair = _state(_train(tmp_path, "pair", "trainer=towers_sim", "trainer.max_epochs=1",
                         "test=false"))
    assert pair["global_step"] == one["global_step"] == 2
    _assert_same_weights(pair, one)
    hybrid = _state(_train(tmp_path, "hybrid", "trainer=towers_sim", "trainer.devices=4",
                           "trainer.max_epochs=1", "test=false"))
    _assert_same_weights(hybrid, one)


@pytest.mark.slow
@pytest.mark.xdist_group("towers")
def test_checkpoints_cross_between_towers_and_one_device(one_epoch: Path, tmp_path: Path
                                                         ) -> None:
    ckpt = one_epoch / "checkpoints" / "last.ckpt"
    # a single-device checkpoint starts a tower run; it continues exactly as on one device
    towers = _train(tmp_path, "towers", "trainer=towers_sim", "trainer.max_epochs=2",
                    f"ckpt_path={ckpt}")
    alone = _train_here(tmp_path / "alone", "trainer=cpu", "trainer.max_epochs=2",
                        f"ckpt_path={ckpt}", "test=false")
    t, a = _state(towers), _state(alone)
    assert t["epoch"] == a["epoch"] == 1 and t["global_step"] == a["global_step"] == 4
    _assert_same_weights(t, a)
    # the tower run's checkpoint is one file for one device: evaluation reproduces its test
    # score (eval.py's own process start is tests/test_scale_out.py's)
    metrics = json.loads((towers / "metrics.json").read_text())
    _train_here(tmp_path / "ev", f"ckpt_path={metrics['best_checkpoint']}", "data.image_size=32",
                "+trainer.limit_test_batches=2", "extras.print_config=false",
                "trainer.enable_progress_bar=false", config_name="eval")
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert evaluated["test/acc"] == pytest.approx(metrics["metrics"]["test/acc"], abs=1e-6)
    # ... and resumes on one device
    resumed = _state(_train_here(tmp_path / "resumed", "trainer=cpu", "trainer.max_epochs=3",
                                 f"ckpt_path={towers / 'checkpoints' / 'last.ckpt'}",
                                 "test=false"))
    assert resumed["epoch"] == 2 and resumed["global_step"] == 6


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("model", [("model=lenet5",), ("model=alexnet", "model.groups=1"),
                                   ("model=zfnet",)])
def test_network_without_towers_is_refused_before_processes_start(
        model: tuple[str, ...], make_cfg: MakeCfg) -> None:
    cfg = make_cfg(*model, "trainer=towers_sim", "data.image_size=32", *QUIET)
    with pytest.raises(TowerConfigError, match="has no towers; use model=alexnet"):
        train(cfg)


@pytest.mark.parametrize("devices", [1, 3])
def test_odd_world_size_is_refused(devices: int, make_cfg: MakeCfg) -> None:
    cfg = make_cfg("model=alexnet", "trainer=towers_sim", f"trainer.devices={devices}",
                   "data.image_size=32", *QUIET)
    with pytest.raises(TowerConfigError, match=r"set trainer.devices to a multiple of 2"):
        train(cfg)

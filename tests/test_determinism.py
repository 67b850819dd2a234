"""``trainer.deterministic=true`` with the same seed gives the same run twice on the CPU: on the
fast data path, on the ordinary DataLoader path (with a worker process), and under DDP
(``trainer=ddp_sim``). Synthetic 32-px data, so crop/flip augmentation and shuffling are in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from classicnets.runs.pipeline import train

REPO = Path(__file__).resolve().parents[1]
QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar",
         "~callbacks.model_summary", "trainer.enable_progress_bar=false")
RUN = ("data=synthetic", "data.num_samples=256", "data.batch_size=32", "trainer.max_epochs=2",
       "trainer.deterministic=true", "seed=7", *QUIET)
MakeCfg = Callable[..., DictConfig]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)["state_dict"]


def _same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("loader", ["fast", "torch"])
def test_same_seed_same_run(make_cfg: MakeCfg, loader: str) -> None:
    runs = []
    for out in ("first", "second"):
        cfg = make_cfg(*RUN, f"data.loader={loader}", "data.num_workers=1", out=out)
        _, metrics = train(cfg)
        runs.append((Path(cfg.paths.output_dir), metrics))
    (first, m1), (second, m2) = runs
    timing = {k for k in m1 if k.startswith("time/")}  # wall-clock speed, not a result
    assert {k: v for k, v in m1.items() if k not in timing} == {
        k: v for k, v in m2.items() if k not in timing}
    assert {"train/loss", "val/acc", "test/acc"} <= set(m1)
    _same(first, second)


@pytest.mark.slow
def test_same_seed_same_run_under_ddp(tmp_path: Path) -> None:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "offline"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "CLASSICNETS_RUN_NAME"):
        env.pop(key, None)
    runs = [tmp_path / "first", tmp_path / "second"]
    procs = [subprocess.Popen([sys.executable, str(REPO / "src" / "train.py"), *RUN,
                               "trainer=ddp_sim", f"hydra.run.dir={run}"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for run in runs]
    outs = [proc.communicate(timeout=300)[0] for proc in procs]
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-3000:]
    m1, m2 = (json.loads((run / "metrics.json").read_text())["metrics"] for run in runs)
    timing = {k for k in m1 if k.startswith("time/")}
    assert {k: v for k, v in m1.items() if k not in timing} == {
        k: v for k, v in m2.items() if k not in timing}
    _same(*runs)

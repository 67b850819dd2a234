"""Shared pytest fixtures and marker handling."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------- Hydra composition helpers
import os  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
os.environ.setdefault("PROJECT_ROOT", str(REPO))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_config(overrides: list[str], out_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose `conf/<config_name>.yaml` as Hydra would, with the run directory at `out_dir`."""
    GlobalHydra.instance().clear()
    if config_name in ("train", "benchmark"):
        # a test process runs many trainings, small and huge: glibc's default returns a huge
        # model's memory (host_memory=retain would keep the largest footprint for the rest of
        # the worker's life); tests of retain itself run in their own processes
        overrides = ["host_memory=system", *overrides]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.num = 0
        cfg.paths.log_dir = str(out_dir / "logs")
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    def make(*overrides: str, config_name: str = "train", out: str = "run") -> DictConfig:
        return compose_config(list(overrides), tmp_path / out, config_name)

    yield make
    GlobalHydra.instance().clear()

# One intra-op thread per test process: the suite runs under pytest-xdist on small machines,
# where oversubscribed BLAS threads make every test many times slower.
torch.set_num_threads(1)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what the imports and the collection made (~550k objects: torch, Lightning, Hydra,
    the test modules) into the collector's permanent generation. A full collection walks every
    tracked object, ~0.6 s with those; frozen, the collection after each test below walks only
    what tests made since, in ~1 ms (it cost ~1 s per test, a third of the suite's time). What
    is frozen stays as long as the process: modules, classes, parametrize lists; a test's own
    objects, its models and trainers, are made later and are collected as before."""
    import gc

    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _free_huge_models() -> Iterator[None]:
    """Collect right after every test: Lightning's trainer/module reference cycles would
    otherwise keep their tensors alive until the next automatic collection — ~10 GB after a
    huge-model test, and several GB piled up by the many small in-process runs of a worker
    (a worker at 8.4 GB beside one running ViT-H was OOM-killed on a 24 GB machine)."""
    yield
    import gc

    gc.collect()

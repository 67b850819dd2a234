"""Console scripts (`classicnets-train`, `classicnets-eval`, `classicnets-benchmark`)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from classicnets.parallel.launch import agree_run_name, ddp_children_run_this_job
from classicnets.pipeline import REPO_ROOT, load_env

CONFIG_DIR = REPO_ROOT / "conf"


def _hydra_entry(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    @functools.wraps(task)
    def job(cfg: DictConfig) -> Any:
        with ddp_children_run_this_job():
            return task(cfg)

    def run() -> Any:
        if not (CONFIG_DIR / f"{config_name}.yaml").is_file():
            sys.exit(f"classicnets: configs not found at {CONFIG_DIR}; install from a clone "
                     "(pip install -e .) or run python src/train.py from the repository")
        load_env()
        agree_run_name()  # torchrun nodes: one run directory name for all
        return hydra.main(version_base="1.3", config_path=str(CONFIG_DIR),
                          config_name=config_name)(job)()

    return run


def _train(cfg: DictConfig) -> float | None:
    from classicnets.pipeline import train

    return train(cfg)[0]


def _eval(cfg: DictConfig) -> None:
    from classicnets.pipeline import evaluate

    evaluate(cfg)


def _benchmark(cfg: DictConfig) -> None:
    from classicnets.benchmark import run_benchmark

    run_benchmark(cfg)


train_main = _hydra_entry("train", _train)
eval_main = _hydra_entry("eval", _eval)
benchmark_main = _hydra_entry("benchmark", _benchmark)
__all__ = ["CONFIG_DIR", "benchmark_main", "eval_main", "train_main"]

"""Console scripts (`classicnets-train`, `classicnets-eval`, `classicnets-benchmark`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from classicnets.pipeline import REPO_ROOT, load_env

CONFIG_DIR = REPO_ROOT / "conf"


def _hydra_entry(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    def run() -> Any:
        if not (CONFIG_DIR / f"{config_name}.yaml").is_file():
            sys.exit(f"classicnets: configs not found at {CONFIG_DIR}; install from a clone "
                     "(pip install -e .) or run python src/train.py from the repository")
        load_env()
        return hydra.main(version_base="1.3", config_path=str(CONFIG_DIR),
                          config_name=config_name)(task)()

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

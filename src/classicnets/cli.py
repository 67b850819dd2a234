"""Console scripts (`classicnets-train`, `-eval`, `-benchmark`, `-predict`, `-export`,
`-report`, `-visualize`)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from classicnets.config_check import ConfigError, explain_override_error
from classicnets.parallel.launch import agree_run_name, ddp_children_run_this_job
from classicnets.pipeline import REPO_ROOT, load_env, resume_arguments

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
        if config_name == "train":  # resume=<run dir>: that run's overrides and directory
            try:
                sys.argv[1:] = resume_arguments(sys.argv[1:])
            except ConfigError as err:
                sys.exit(f"classicnets: {err}")
        agree_run_name()  # torchrun nodes: one run directory name for all
        try:
            return hydra.main(version_base="1.3", config_path=str(CONFIG_DIR),
                              config_name=config_name)(job)()
        except SystemExit as stop:
            # Hydra names a misspelled key but not the valid ones: add them (only on failure,
            # so a good command composes its config once)
            if stop.code == 1:
                hint = explain_override_error(config_name, sys.argv[1:])
                if hint:
                    print(f"classicnets: {hint}", file=sys.stderr)
            raise

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


def _predict(cfg: DictConfig) -> None:
    from classicnets.predict import predict

    predict(cfg)


def _export(cfg: DictConfig) -> None:
    from classicnets.export import export

    export(cfg)


def _visualize(cfg: DictConfig) -> None:
    from classicnets.analysis.visualize import visualize

    visualize(cfg)


def _report(cfg: DictConfig) -> None:
    from classicnets.report import run_report

    run_report(cfg)


train_main = _hydra_entry("train", _train)
eval_main = _hydra_entry("eval", _eval)
benchmark_main = _hydra_entry("benchmark", _benchmark)
predict_main = _hydra_entry("predict", _predict)
export_main = _hydra_entry("export", _export)
report_main = _hydra_entry("report", _report)
visualize_main = _hydra_entry("visualize", _visualize)
__all__ = ["CONFIG_DIR", "benchmark_main", "eval_main", "export_main", "predict_main",
           "report_main", "train_main", "visualize_main"]

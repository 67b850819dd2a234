"""Console scripts (`classicnets-train`, `-eval`, `-benchmark`, `-predict`, `-export`,
`-report`, `-visualize`, `-plots`, `-checkpoint`, `-shard`): the top of the import graph;
nothing in the package imports this module."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from classicnets.checkpoints import trusting
from classicnets.parallel.launch import agree_run_name, ddp_children_run_this_job
from classicnets.paths import CONFIG_DIR
from classicnets.runs.config_check import ConfigError, explain_override_error
from classicnets.runs.pipeline import load_env
from classicnets.runs.resume import resume_arguments


def _hydra_entry(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    @functools.wraps(task)
    def job(cfg: DictConfig) -> Any:
        # trust_checkpoint=true: the one, logged, way past the weights-only loader
        with ddp_children_run_this_job(), trusting(bool(cfg.get("trust_checkpoint", False))):
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
    from classicnets.runs.pipeline import train

    return train(cfg)[0]


def _eval(cfg: DictConfig) -> None:
    from classicnets.runs.pipeline import evaluate

    evaluate(cfg)


def _benchmark(cfg: DictConfig) -> None:
    from classicnets.benchmark import run_benchmark

    run_benchmark(cfg)


def _predict(cfg: DictConfig) -> None:
    from classicnets.inference.predict import predict

    predict(cfg)


def _export(cfg: DictConfig) -> None:
    from classicnets.inference.export import export

    export(cfg)


def _visualize(cfg: DictConfig) -> None:
    from classicnets.analysis.visualize import visualize

    visualize(cfg)


def _report(cfg: DictConfig) -> None:
    from classicnets.analysis.zoo_report import run_report

    run_report(cfg)


def _shard(cfg: DictConfig) -> None:
    from classicnets.data.shards import shard_dataset

    shard_dataset(cfg)


def _is_sweep(path: Path) -> bool:
    return any(p.is_dir() and p.name.isdigit() for p in path.iterdir())


def plots_main(argv: Sequence[str] | None = None) -> int:
    """``python src/plots.py <run or sweep dir>...``: redraw the PNG plots of runs
    (``<run>/plots/``), or of every job of sweeps and the sweep's own summary and plot."""
    from classicnets.runs.plots import plot_run
    from classicnets.runs.sweep import redraw_sweep

    parser = argparse.ArgumentParser(
        prog="python src/plots.py",
        description="Redraw the PNG plots of runs (<run>/plots/) or of every job of sweeps.")
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    args = parser.parse_args(argv)
    status = 0
    for path in args.dirs:
        if not path.is_dir():
            print(f"{path}: not a directory (pass logs/<task>/runs/<time> or a multirun dir)",
                  file=sys.stderr)
            status = 2
            continue
        sweep = _is_sweep(path)
        runs = sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit()),
                      key=lambda p: int(p.name)) if sweep else [path]
        for run in runs:
            try:
                files = plot_run(run)
            except FileNotFoundError as err:
                print(f"{run}: {err}", file=sys.stderr)
                status = 2
                continue
            print(f"{run}: {', '.join(f.name for f in files) or 'no metrics to plot'}")
        if sweep:  # the sweep's own table and plot (every trial of a study)
            redraw_sweep(path)
            print(f"{path}: sweep_summary.md, sweep_plot.png")
    return status


def checkpoint_main(argv: Sequence[str] | None = None) -> int:
    """``python src/checkpoint.py resave <file> [--out <file>]``: re-save a checkpoint you trust
    with plain values only, so it loads weights-only; ``check <file>...``: say whether each
    file loads weights-only, and what it is."""
    from classicnets.checkpoints import CheckpointError, load_file, resave

    parser = argparse.ArgumentParser(prog="python src/checkpoint.py",
                                     description="Check or re-save checkpoint files.")
    sub = parser.add_subparsers(dest="command", required=True)
    res = sub.add_parser("resave", help="unpickle a file you trust in full (it can run code!) "
                         "and write it back with plain values only")
    res.add_argument("file", type=Path)
    res.add_argument("--out", type=Path, default=None, help="where to write (default: in place)")
    chk = sub.add_parser("check", help="load each file weights-only, as every entry point does")
    chk.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "resave":
        try:
            target = resave(args.file, args.out)
        except (CheckpointError, TypeError) as err:
            print(f"classicnets: {err}", file=sys.stderr)
            return 2
        print(f"{target}: re-saved with plain values; it loads weights-only")
        return 0
    status = 0
    for file in args.files:
        try:
            obj = load_file(file, trust=False, mmap=True)
        except CheckpointError as err:
            print(f"{file}: REFUSED: {err}")
            status = 1
            continue
        keys = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, dict) else type(obj).__name__
        print(f"{file}: loads weights-only ({keys})")
    return status


train_main = _hydra_entry("train", _train)
eval_main = _hydra_entry("eval", _eval)
benchmark_main = _hydra_entry("benchmark", _benchmark)
predict_main = _hydra_entry("predict", _predict)
export_main = _hydra_entry("export", _export)
report_main = _hydra_entry("report", _report)
visualize_main = _hydra_entry("visualize", _visualize)
shard_main = _hydra_entry("shard", _shard)
__all__ = ["benchmark_main", "checkpoint_main", "eval_main", "export_main", "plots_main",
           "predict_main", "report_main", "shard_main", "train_main", "visualize_main"]

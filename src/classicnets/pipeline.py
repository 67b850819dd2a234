"""What `train.py` and `eval.py` do, given their composed Hydra config."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from classicnets.data import ImageDataModule
from classicnets.loggers import (
    check_logger_config,
    close_stale_wandb_run,
    drop_callbacks_needing_a_logger,
    log_run_config,
    name_wandb_group,
)
from classicnets.module import CheckpointError, ImageClassifier, instantiate_clean
from classicnets.parallel.launch import check_world_matches
from classicnets.parallel.slurm import requeued_checkpoint

__all__ = ["evaluate", "load_env", "train"]

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


def load_env() -> None:
    """Read `.env` (W&B keys, DATA_DIR, ...) and point PROJECT_ROOT at the repository."""
    from dotenv import load_dotenv

    for candidate in (Path.cwd() / ".env", REPO_ROOT / ".env"):
        if candidate.is_file():
            load_dotenv(candidate, override=False)
            break
    os.environ.setdefault("PROJECT_ROOT", str(REPO_ROOT))


def _output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _extras(cfg: DictConfig) -> None:
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("enforce_tags") and not cfg.get("tags") and os.isatty(0):
        tags = input("Tags for this run (comma separated): ")
        with OmegaConf.open_dict(cfg):
            cfg.tags = [t.strip() for t in tags.split(",") if t.strip()]
    if extras.get("print_config") and _is_rank_zero():
        _print_tree(cfg)


def _is_rank_zero() -> bool:
    """Global rank zero, before Lightning has set up distribution: torchrun sets RANK (not
    NODE_RANK), srun SLURM_PROCID, Lightning's own launcher LOCAL_RANK/NODE_RANK. The ranks
    Lightning starts inherit SLURM_PROCID=0 inside an allocation: those three count together."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    return all(int(os.environ.get(k, 0)) == 0 for k in ("SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"))


def _print_tree(cfg: DictConfig) -> None:
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("config", guide_style="dim")
    order = ["data", "model", "module", "optimizer", "scheduler", "trainer", "callbacks",
             "logger", "paths", "extras"]
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        branch = tree.add(str(key))
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(
            value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)


def _instantiate_many(cfg: DictConfig | None, kind: str) -> list[Any]:
    out: list[Any] = []
    for name, sub in (cfg or {}).items():
        if isinstance(sub, DictConfig) and "_target_" in sub:
            log.info("Instantiating %s <%s>", kind, sub._target_)
            out.append(instantiate(sub))
        elif sub is not None:
            raise ValueError(f"{kind} {name!r} has no _target_; check conf/{kind}s/")
    return out


def _task_overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # no Hydra context (a config composed by hand)
        return []


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _save_resolved(cfg: DictConfig, out_dir: Path) -> None:
    if _is_rank_zero():
        out_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, out_dir / "config_resolved.yaml", resolve=True)


def _metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items()
            if torch.is_tensor(v) and v.numel() == 1}


def build_datamodule(cfg: DictConfig) -> ImageDataModule:
    channels_last = bool(cfg.get("module", {}).get("channels_last", False))
    return instantiate_clean(cfg.data, channels_last=channels_last)


def train(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    """Fit, test the best checkpoint, and return (optimized metric, all final metrics)."""
    check_logger_config(cfg)  # W&B key, secrets: before anything is printed, built or written
    _extras(cfg)
    check_world_matches(cfg.trainer)  # torchrun's processes vs trainer.num_nodes x devices
    out_dir = _output_dir()
    name_wandb_group(cfg, _is_multirun(), out_dir)
    _save_resolved(cfg, out_dir)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    module = ImageClassifier(model=cfg.model, optimizer=cfg.optimizer, scheduler=cfg.scheduler,
                             **cfg.get("module", {}))
    callbacks: list[Callback] = _instantiate_many(cfg.get("callbacks"), "callback")
    close_stale_wandb_run()
    loggers: list[Logger] = _instantiate_many(cfg.get("logger"), "logger")
    callbacks = drop_callbacks_needing_a_logger(callbacks, loggers)
    trainer: L.Trainer = instantiate_clean(cfg.trainer, callbacks=callbacks, logger=loggers)
    # a strategy that runs only some networks (trainer=towers) says so before processes start
    validate = getattr(trainer.strategy, "validate_module", None)
    if callable(validate):
        validate(module)

    log_run_config(loggers, cfg, _task_overrides())

    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path} does not exist; point it at a .ckpt "
                              "file (a run's checkpoints/last.ckpt resumes that run)")
    if cfg.get("train", True):
        # a requeued SLURM job goes on from the newest checkpoint in its own run directory
        ckpt_path = requeued_checkpoint(trainer) or cfg.get("ckpt_path")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = _metrics(trainer)

    extra: dict[str, Any] = {}
    if cfg.get("test", True):
        ckpt = trainer.checkpoint_callback
        best = ckpt.best_model_path if isinstance(ckpt, ModelCheckpoint) else ""
        if best:
            extra["best_checkpoint"] = best
        else:
            log.warning("no best checkpoint (checkpointing off?): testing the current weights")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
        metrics.update(_metrics(trainer))

    name = cfg.get("optimized_metric")
    value = metrics.get(name) if name else None
    if name and value is None:
        log.warning("optimized_metric=%s was not logged (logged: %s); returning None", name,
                    ", ".join(sorted(metrics)))
    elif value is not None and not math.isfinite(value):
        # a diverged run: None makes a sweeper's trial fail (Optuna refuses NaN as a value)
        log.warning("optimized_metric=%s is %s; returning None", name, value)
        value = None
    if trainer.is_global_zero:
        _write_metrics(out_dir, metrics, value, name, extra)
        _draw_plots(out_dir)
    _finish_wandb(loggers)
    return value, metrics


def _write_metrics(out_dir: Path, metrics: dict[str, float], value: float | None,
                   name: str | None, extra: dict[str, Any]) -> None:
    payload = {"overrides": _task_overrides(), "optimized_metric": name,
               "optimized_value": None if value is None or math.isnan(value) else value,
               "metrics": metrics, **extra}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, sort_keys=True))


def _draw_plots(out_dir: Path) -> None:
    """Loss/accuracy/learning-rate PNGs into <run>/plots/ (from the CSV logger's file)."""
    from classicnets.plots import plot_run

    if not (out_dir / "csv" / "metrics.csv").is_file():
        log.info("no csv/metrics.csv (the CSV logger is off): no run plots")
        return
    try:
        files = plot_run(out_dir)
    except Exception as err:  # a finished run must not fail on a figure; say why instead
        log.warning("run plots failed (%s: %s); redraw with python -m classicnets.plots %s",
                    type(err).__name__, err, out_dir)
        return
    log.info("plots: %s", ", ".join(str(f) for f in files))


def _finish_wandb(loggers: list[Logger]) -> None:
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()  # each job of a multirun gets its own W&B run


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint `cfg.ckpt_path` on `cfg.data`."""
    check_logger_config(cfg)
    _extras(cfg)
    check_world_matches(cfg.trainer)
    name_wandb_group(cfg, _is_multirun(), _output_dir())
    _save_resolved(cfg, _output_dir())
    L.seed_everything(cfg.seed, workers=True)
    module = ImageClassifier.load_checkpoint(cfg.ckpt_path)
    datamodule = build_datamodule(cfg)
    model_cfg = module.hparams.get("model") or {}
    for key, data_key in (("num_classes", "num_classes"), ("in_channels", "in_channels"),
                          ("input_size", "image_size")):
        want, have = model_cfg.get(key), getattr(datamodule, data_key)
        if want is not None and want != have:
            raise ValueError(
                f"the checkpoint's network was built for {key}={want} but data gives "
                f"{data_key}={have}; evaluate on the data it was trained on (data=... "
                f"data.{data_key}={want})")
    loggers = _instantiate_many(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers)
    trainer.test(module, datamodule=datamodule)
    metrics = _metrics(trainer)
    if trainer.is_global_zero:
        _write_metrics(_output_dir(), metrics, None, None, {"checkpoint": str(cfg.ckpt_path)})
    return metrics

"""What `train.py` and `eval.py` do, given their composed Hydra config.

A run reads top to bottom in four stages, each a function called once: **check** (everything
the config can be refused for, before anything is built or written), **build** (DataModule,
module, callbacks, loggers, Trainer, each checked against the others as it is made), **run**
(fit, test) and **record** (metrics.json, plots, the W&B run closed).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig, OmegaConf

from classicnets.callbacks.ema import apply_ema_weights
from classicnets.callbacks.guard import TrainingInterrupted
from classicnets.checkpoints import CheckpointError, is_trusted
from classicnets.data import ImageDataModule
from classicnets.instantiate import instantiate_clean
from classicnets.parallel.launch import check_world_matches
from classicnets.parallel.slurm import newest_checkpoint, requeued_checkpoint
from classicnets.paths import REPO_ROOT
from classicnets.runs import host_memory
from classicnets.runs.config_check import ConfigError, check_config
from classicnets.runs.loggers import (
    check_logger_config,
    close_stale_wandb_run,
    drop_callbacks_needing_a_logger,
    log_run_config,
    name_wandb_group,
    resume_wandb_run,
)
from classicnets.runs.preflight import (
    check_accelerator,
    check_checkpoint_fits,
    check_data_fits_model,
    check_free_space,
    check_train_crop_fits,
    check_writable,
)
from classicnets.runs.resume import checkpoint_to_resume, quote, resume_dir
from classicnets.training.module import ImageClassifier
from classicnets.training.optim import HorizonSchedule

__all__ = ["evaluate", "load_env", "train"]

log = logging.getLogger(__name__)


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


def _hydra_written(out_dir: Path) -> list[Path]:
    """What Hydra writes before a job runs: ``<run>/.hydra/``, the job's log and, in a
    multirun, the sweep's ``multirun.yaml`` (checkpoints of a resumed run are not read)."""
    places = [out_dir / ".hydra", *out_dir.glob("*.log")]
    if _is_multirun():
        places.append(Path(HydraConfig.get().sweep.dir) / "multirun.yaml")
    return places


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


def _stopped(stop: BaseException, trainer: L.Trainer, out_dir: Path, testing: bool = False
             ) -> None:
    """A run stopped at a signal: say what was saved and how to go on; exit non-zero."""
    if isinstance(stop, TrainingInterrupted):
        signum, saved, finished = stop.signum, stop.checkpoint, stop.finished
        where = f"in epoch {stop.epoch} at global step {stop.step}"
    else:  # Lightning's own SIGTERM stop (set-up, sanity check, test, or the guard off)
        signum, finished = int(signal.SIGTERM), testing
        saved = newest_checkpoint(trainer) if testing else None
        where = (f"in epoch {trainer.current_epoch} at global step {trainer.global_step}"
                 if trainer.global_step else "before the first training step")
    name = signal.Signals(signum).name
    if finished:
        text = f"{name}: training had finished (saved {saved}); the test did not run."
    elif saved:
        text = f"{name}: training stopped {where}; saved {saved}."
    else:
        newest = newest_checkpoint(trainer)
        text = (f"{name}: training stopped {where}; nothing was saved at the signal"
                + (f" (the newest checkpoint is {newest})." if newest else "."))
    if trainer.is_global_zero:
        log.error("%s Resume this run in its own directory with:\n    python src/train.py "
                  "resume=%s", text, quote(out_dir))
    raise SystemExit(128 + signum) from None


def build_datamodule(cfg: DictConfig) -> ImageDataModule:
    channels_last = bool(cfg.get("module", {}).get("channels_last", False))
    return instantiate_clean(cfg.data, channels_last=channels_last)


def _host_memory(cfg: DictConfig, trainer: L.Trainer) -> None:
    """``host_memory=retain`` on a CPU run: glibc keeps freed memory (no page faults per step;
    see :mod:`classicnets.runs.host_memory`). Accelerators allocate on the device: nothing to do."""
    how = host_memory.checked_choice(cfg.get("host_memory"))
    if how == "retain" and trainer.strategy.root_device.type == "cpu":
        host_memory.retain_freed_memory()


@dataclass
class Checked:
    """What the check stage settled: where the run writes, and the run it continues."""

    out_dir: Path
    resume_dir: Path | None


@dataclass
class Built:
    """What the build stage made for the run stage."""

    datamodule: ImageDataModule
    module: ImageClassifier
    trainer: L.Trainer
    loggers: list[Logger]
    ckpt_path: str | None = None  # the checkpoint fit goes on from


def train(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    """Fit, test the best checkpoint, and return (optimized metric, all final metrics):
    check, build, run, record, each once."""
    checked = check_train(cfg)
    built = build_train(cfg, checked)
    metrics, extra = run_train(cfg, checked, built)
    return record_train(cfg, checked, built, metrics, extra)


def check_train(cfg: DictConfig) -> Checked:
    """Everything the config alone can refuse, before anything is built or written: keys and
    value types, host memory, loggers and secrets, the world size, the run directory and the
    run to resume. Then the run directory gets its resolved config, and the seed is set."""
    check_config(cfg)  # arguments and value types, naming the valid keys
    host_memory.checked_choice(cfg.get("host_memory"))
    out_dir = _output_dir()
    # W&B key, secrets: before anything is printed, built or written (a refused secret is
    # redacted from the copies Hydra wrote before the job started)
    check_logger_config(cfg, _hydra_written(out_dir))
    check_world_matches(cfg.trainer)  # torchrun's processes vs trainer.num_nodes x devices
    check_accelerator(cfg.trainer)
    checked = Checked(out_dir, resume_dir(cfg, out_dir))
    check_writable(out_dir)
    _extras(cfg)
    name_wandb_group(cfg, _is_multirun(), out_dir)
    _save_resolved(cfg, out_dir)
    L.seed_everything(cfg.seed, workers=True)
    return checked


def build_train(cfg: DictConfig, checked: Checked) -> Built:
    """The DataModule, network and module, callbacks, loggers and Trainer, each checked against
    the others as it is made (data vs network, free space, the strategy, the checkpoint to go
    on from) so a mismatch is refused before fitting starts."""
    datamodule = build_datamodule(cfg)
    module = ImageClassifier(model=cfg.model, optimizer=cfg.optimizer, scheduler=cfg.scheduler,
                             **cfg.get("module", {}))
    check_data_fits_model(
        module.hparams.get("model"), datamodule,
        "the model takes it from data= unless overridden: drop the model.{key} override or set "
        "data.{data_key}={want}")
    check_train_crop_fits(module, datamodule)  # FixRes: the network takes the training size
    callbacks: list[Callback] = _instantiate_many(cfg.get("callbacks"), "callback")
    check_free_space(checked.out_dir, module, callbacks)
    close_stale_wandb_run()
    if checked.resume_dir is not None:
        resume_wandb_run(cfg, checked.resume_dir)  # the same W&B run, before a logger starts one
    loggers: list[Logger] = _instantiate_many(cfg.get("logger"), "logger")
    callbacks = drop_callbacks_needing_a_logger(callbacks, loggers)
    trainer: L.Trainer = instantiate_clean(cfg.trainer, callbacks=callbacks, logger=loggers)
    _host_memory(cfg, trainer)
    # a strategy that runs only some networks (trainer=towers) says so before processes start
    validate = getattr(trainer.strategy, "validate_module", None)
    if callable(validate):
        validate(module)
    built = Built(datamodule, module, trainer, loggers)
    if cfg.get("train", True):
        # a requeued SLURM job goes on from the newest checkpoint in its own run directory,
        # and so does a run resumed in place (resume=<run dir>, ckpt_path=last)
        built.ckpt_path = (requeued_checkpoint(trainer) or checkpoint_to_resume(
            cfg, trainer, checked.resume_dir, checked.out_dir))
        if built.ckpt_path:
            check_checkpoint_fits(built.ckpt_path, module)
    elif cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path} does not exist; point it at a .ckpt "
                              "file (a run's checkpoints/last.ckpt resumes that run)")
    log_run_config(loggers, cfg, _task_overrides())
    return built


def run_train(cfg: DictConfig, checked: Checked, built: Built
              ) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit (unless ``train=false``), then test the best checkpoint (unless ``test=false``)."""
    trainer, module, datamodule = built.trainer, built.module, built.datamodule
    if cfg.get("train", True):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=built.ckpt_path,
                        weights_only=not is_trusted())
        except (TrainingInterrupted, SIGTERMException) as stop:
            _stopped(stop, trainer, checked.out_dir)  # exits non-zero with the resume command
    metrics = _metrics(trainer)
    extra: dict[str, Any] = {}
    notes = [c.scheduler.note for c in trainer.lr_scheduler_configs
             if isinstance(c.scheduler, HorizonSchedule) and c.scheduler.note]
    if notes:  # a resume over another horizon: what its schedule did, in metrics.json too
        extra["resume_schedule"] = notes[-1]
    if cfg.get("test", True):
        ckpt = trainer.checkpoint_callback
        best = ckpt.best_model_path if isinstance(ckpt, ModelCheckpoint) else ""
        if best:
            extra["best_checkpoint"] = best
        else:
            log.warning("no best checkpoint (checkpointing off?): testing the current weights")
        try:
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None,
                         weights_only=not is_trusted())
        except SIGTERMException as stop:  # Lightning's own, with exit status 0
            _stopped(stop, trainer, checked.out_dir, testing=True)
        metrics.update(_metrics(trainer))
    return metrics, extra


def record_train(cfg: DictConfig, checked: Checked, built: Built, metrics: dict[str, float],
                 extra: dict[str, Any]) -> tuple[Any, dict[str, float]]:
    """metrics.json and the plots (rank zero), the W&B run closed; the optimized metric (a
    list of values when ``optimized_metric`` is a list)."""
    name = cfg.get("optimized_metric")
    if isinstance(name, ListConfig | list):  # several objectives: one value each, or None
        name = [str(n) for n in name]
        metrics.update(network_size(built, name))
        values = [_objective(metrics, n) for n in name]
        value: Any = None if any(v is None for v in values) else values
    else:
        if name:
            metrics.update(network_size(built, [str(name)]))
        value = _objective(metrics, name) if name else None
    if built.trainer.is_global_zero:
        _write_metrics(checked.out_dir, metrics, value, name, extra)
        _draw_plots(checked.out_dir)
    _finish_wandb(built.loggers)
    return value, metrics


def _objective(metrics: dict[str, float], name: str) -> float | None:
    """The value of one optimized metric; None (the sweeper's trial fails) when it was not
    logged or is not finite (a diverged run: Optuna refuses NaN as a value)."""
    value = metrics.get(name)
    if value is None:
        log.warning("optimized_metric=%s was not logged (logged: %s); returning None", name,
                    ", ".join(sorted(metrics)))
    elif not math.isfinite(value):
        log.warning("optimized_metric=%s is %s; returning None", name, value)
        value = None
    return value


# the network's size, for searches that weigh accuracy against it (optimized_metric lists)
SIZE_METRICS = ("model/params", "model/macs")


def network_size(built: Built, wanted: list[str]) -> dict[str, float]:
    """``model/params`` and ``model/macs`` (multiply-accumulates of one image at the data's
    size, counted as the model docs count them) when an optimized metric asks for them."""
    if not any(n in SIZE_METRICS for n in wanted):
        return {}
    from classicnets.models.table import count_macs

    net = built.module.net
    dm = built.datamodule
    params = sum(p.numel() for p in net.parameters())
    device = next(net.parameters()).device
    x = torch.zeros(1, dm.in_channels, dm.image_size, dm.image_size, device=device)
    return {"model/params": float(params), "model/macs": float(count_macs(net, x))}


def _write_metrics(out_dir: Path, metrics: dict[str, float], value: Any,
                   name: Any, extra: dict[str, Any]) -> None:
    if isinstance(value, float) and math.isnan(value):
        value = None
    payload = {"overrides": _task_overrides(), "optimized_metric": name,
               "optimized_value": value,
               "metrics": metrics, **extra}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, sort_keys=True))


def _draw_plots(out_dir: Path) -> None:
    """Loss/accuracy/learning-rate PNGs into <run>/plots/ (from the CSV logger's file)."""
    from classicnets.runs.plots import plot_run

    if not (out_dir / "csv" / "metrics.csv").is_file():
        log.info("no csv/metrics.csv (the CSV logger is off): no run plots")
        return
    try:
        files = plot_run(out_dir)
    except Exception as err:  # a finished run must not fail on a figure; say why instead
        log.warning("run plots failed (%s: %s); redraw with python src/plots.py %s",
                    type(err).__name__, err, out_dir)
        return
    log.info("plots: %s", ", ".join(str(f) for f in files))


def _finish_wandb(loggers: list[Logger]) -> None:
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()  # each job of a multirun gets its own W&B run


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt_path`` on ``cfg.data``: check, build, run, record."""
    # check
    check_config(cfg)
    weights = str(cfg.get("weights", "model"))
    if weights not in ("model", "ema"):
        raise ConfigError(f"weights={weights!r} is not one of model, ema")
    out_dir = _output_dir()
    check_logger_config(cfg, _hydra_written(out_dir))
    check_world_matches(cfg.trainer)
    check_accelerator(cfg.trainer)
    _extras(cfg)
    name_wandb_group(cfg, _is_multirun(), out_dir)
    _save_resolved(cfg, out_dir)
    L.seed_everything(cfg.seed, workers=True)
    # build
    module = ImageClassifier.load_checkpoint(cfg.ckpt_path)
    if weights == "ema":  # the moving average the checkpoint carries (callbacks=ema)
        apply_ema_weights(module.net, cfg.ckpt_path)
    datamodule = build_datamodule(cfg)
    check_data_fits_model(module.hparams.get("model"), datamodule,
                          "evaluate on the data it was trained on (data=... "
                          "data.{data_key}={want})")
    loggers = _instantiate_many(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate_clean(cfg.trainer, logger=loggers)
    # run
    trainer.test(module, datamodule=datamodule)
    # record
    metrics = _metrics(trainer)
    if trainer.is_global_zero:
        _write_metrics(out_dir, metrics, None, None, {"checkpoint": str(cfg.ckpt_path)})
    return metrics

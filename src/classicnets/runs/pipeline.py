"""What `train.py` and `eval.py` do, given their composed Hydra config."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
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
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

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
    check_checkpoint_fits,
    check_data_fits_model,
    check_free_space,
    check_writable,
)
from classicnets.training.module import ImageClassifier

__all__ = ["evaluate", "load_env", "resume_arguments", "train"]

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


# ------------------------------------------------------------------ resume in place
# overrides that name where a run goes on, not what it is: never carried into its resumption
_RESUME_KEYS = ("resume", "ckpt_path", "hydra.run.dir")


def _override_key(arg: str) -> str:
    return arg.lstrip("+~").split("=", 1)[0]


def _quote(path: Path) -> str:
    text = str(path)
    if re.fullmatch(r"[\w/.:-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _newest_run(values: dict[str, str]) -> Path | None:
    """The run of this task (``logs/<task_name>/runs/*``) with the newest checkpoint."""
    root = Path(values.get("paths.log_dir") or Path(os.environ.get("PROJECT_ROOT", REPO_ROOT))
                / "logs")
    runs: list[tuple[int, Path]] = []
    for run in (root / values.get("task_name", "train") / "runs").glob("*"):
        files = [*run.glob("checkpoints/last.ckpt"), *run.glob("hpc_ckpt_*.ckpt")]
        if files:
            runs.append((max(f.stat().st_mtime_ns for f in files), run))
    return max(runs)[1] if runs else None


def resume_arguments(args: list[str]) -> list[str]:
    """The command line of a run that goes on in its own directory.

    ``resume=<run dir>`` (or ``ckpt_path=last``: the run of this task with the newest
    checkpoint) becomes that run's own overrides (``<run dir>/.hydra/overrides.yaml``), then the
    ones given now, which win (``trainer.max_epochs=40`` trains longer), then
    ``hydra.run.dir=<run dir>``: the same config, the same directory. Other arguments are
    returned as they are.
    """
    values = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-"))
    resume: str | Path | None = values.get("resume")
    if resume in (None, "", "null"):
        if values.get("ckpt_path") != "last":
            return args
        resume = _newest_run(values)
        if resume is None:
            return args  # the pipeline says there is nothing to resume
    if any(a in ("-m", "--multirun") for a in args):
        raise ConfigError("resume= continues one run; resume the jobs of a sweep one by one "
                          "with resume=<sweep dir>/<job number>")
    run_dir = Path(resume).expanduser().resolve()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={resume}: {saved} does not exist. resume= takes the directory "
                          f"of a run started by src/train.py (logs/<task>/runs/<time>/, the one "
                          f"holding checkpoints/ and .hydra/)")
    given = [a for a in args if _override_key(a) not in ("resume", "hydra.run.dir")
             and a != "ckpt_path=last"]
    given_keys = {_override_key(a) for a in given}
    earlier = [str(o) for o in OmegaConf.load(saved)
               if _override_key(str(o)) not in (*_RESUME_KEYS, *given_keys)]
    return [*earlier, *given, f"resume={_quote(run_dir)}", f"hydra.run.dir={_quote(run_dir)}"]


def _resume_dir(cfg: DictConfig, out_dir: Path) -> Path | None:
    """The run directory ``resume=`` names, which must be this run's own."""
    resume = cfg.get("resume")
    if not resume:
        return None
    run_dir = Path(str(resume)).expanduser().resolve()
    if run_dir != out_dir.resolve():
        raise ConfigError(
            f"resume={resume} continues a run in its own directory, but this run writes to "
            f"{out_dir}. Start it as python src/train.py resume={resume} (which sets "
            f"hydra.run.dir for you), or add hydra.run.dir={resume}")
    return run_dir


def _checkpoint_to_resume(cfg: DictConfig, trainer: L.Trainer, resume_dir: Path | None
                          ) -> str | None:
    ckpt = cfg.get("ckpt_path")
    if ckpt and ckpt != "last":
        if not Path(ckpt).exists():  # what an existing non-file is, the preflight read says
            raise CheckpointError(f"ckpt_path={ckpt} does not exist; point it at a .ckpt file, "
                                  "or continue a run in its directory with resume=<run dir>")
        return str(ckpt)
    if not (ckpt == "last" or resume_dir):
        return None
    newest = newest_checkpoint(trainer)
    if newest is not None:
        log.info("resuming from %s", newest)
        return newest
    if resume_dir is not None:
        log.warning("resume=%s: no checkpoint there yet; training starts from the beginning "
                    "in that directory", resume_dir)
        return None
    raise CheckpointError(
        f"ckpt_path=last: no checkpoint in {_output_dir()}, and no run of this task under "
        f"logs/ has one. Continue a run with resume=<run dir>, or name a file with "
        f"ckpt_path=<path>.ckpt")


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
                  "resume=%s", text, _quote(out_dir))
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


def train(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    """Fit, test the best checkpoint, and return (optimized metric, all final metrics)."""
    check_config(cfg)  # arguments and value types, naming the valid keys
    host_memory.checked_choice(cfg.get("host_memory"))
    check_logger_config(cfg)  # W&B key, secrets: before anything is printed, built or written
    _extras(cfg)
    check_world_matches(cfg.trainer)  # torchrun's processes vs trainer.num_nodes x devices
    out_dir = _output_dir()
    resume_dir = _resume_dir(cfg, out_dir)
    check_writable(out_dir)
    name_wandb_group(cfg, _is_multirun(), out_dir)
    _save_resolved(cfg, out_dir)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    module = ImageClassifier(model=cfg.model, optimizer=cfg.optimizer, scheduler=cfg.scheduler,
                             **cfg.get("module", {}))
    check_data_fits_model(
        module.hparams.get("model"), datamodule,
        "the model takes it from data= unless overridden: drop the model.{key} override or set "
        "data.{data_key}={want}")
    callbacks: list[Callback] = _instantiate_many(cfg.get("callbacks"), "callback")
    check_free_space(out_dir, module, callbacks)
    close_stale_wandb_run()
    if resume_dir is not None:
        resume_wandb_run(cfg, resume_dir)  # the same W&B run, before the logger starts one
    loggers: list[Logger] = _instantiate_many(cfg.get("logger"), "logger")
    callbacks = drop_callbacks_needing_a_logger(callbacks, loggers)
    trainer: L.Trainer = instantiate_clean(cfg.trainer, callbacks=callbacks, logger=loggers)
    _host_memory(cfg, trainer)
    # a strategy that runs only some networks (trainer=towers) says so before processes start
    validate = getattr(trainer.strategy, "validate_module", None)
    if callable(validate):
        validate(module)

    log_run_config(loggers, cfg, _task_overrides())

    if cfg.get("train", True):
        # a requeued SLURM job goes on from the newest checkpoint in its own run directory,
        # and so does a run resumed in place (resume=<run dir>, ckpt_path=last)
        ckpt_path = (requeued_checkpoint(trainer)
                     or _checkpoint_to_resume(cfg, trainer, resume_dir))
        if ckpt_path:
            check_checkpoint_fits(ckpt_path, module)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path,
                        weights_only=not is_trusted())
        except (TrainingInterrupted, SIGTERMException) as stop:
            _stopped(stop, trainer, out_dir)  # exits non-zero with the resume command
    elif cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path} does not exist; point it at a .ckpt "
                              "file (a run's checkpoints/last.ckpt resumes that run)")
    metrics = _metrics(trainer)

    extra: dict[str, Any] = {}
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
            _stopped(stop, trainer, out_dir, testing=True)
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
    from classicnets.runs.plots import plot_run

    if not (out_dir / "csv" / "metrics.csv").is_file():
        log.info("no csv/metrics.csv (the CSV logger is off): no run plots")
        return
    try:
        files = plot_run(out_dir)
    except Exception as err:  # a finished run must not fail on a figure; say why instead
        log.warning("run plots failed (%s: %s); redraw with python -m classicnets.runs.plots %s",
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
    check_config(cfg)
    check_logger_config(cfg)
    _extras(cfg)
    check_world_matches(cfg.trainer)
    name_wandb_group(cfg, _is_multirun(), _output_dir())
    _save_resolved(cfg, _output_dir())
    L.seed_everything(cfg.seed, workers=True)
    module = ImageClassifier.load_checkpoint(cfg.ckpt_path)
    datamodule = build_datamodule(cfg)
    check_data_fits_model(module.hparams.get("model"), datamodule,
                           "evaluate on the data it was trained on (data=... "
                           "data.{data_key}={want})")
    loggers = _instantiate_many(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers)
    trainer.test(module, datamodule=datamodule)
    metrics = _metrics(trainer)
    if trainer.is_global_zero:
        _write_metrics(_output_dir(), metrics, None, None, {"checkpoint": str(cfg.ckpt_path)})
    return metrics

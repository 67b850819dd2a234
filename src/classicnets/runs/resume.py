"""Runs that go on: ``resume=<run dir>`` (that run's overrides and directory) and which
checkpoint a run continues from."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from classicnets.checkpoints import CheckpointError
from classicnets.parallel.slurm import newest_checkpoint
from classicnets.paths import REPO_ROOT
from classicnets.runs.config_check import ConfigError

__all__ = ["checkpoint_to_resume", "override_key", "quote", "resume_arguments", "resume_dir"]

log = logging.getLogger(__name__)

# overrides that name where a run goes on, not what it is: never carried into its resumption
_RESUME_KEYS = ("resume", "ckpt_path", "hydra.run.dir")


def override_key(arg: str) -> str:
    return arg.lstrip("+~").split("=", 1)[0]


def quote(path: Path) -> str:
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
    given = [a for a in args if override_key(a) not in ("resume", "hydra.run.dir")
             and a != "ckpt_path=last"]
    given_keys = {override_key(a) for a in given}
    earlier = [str(o) for o in OmegaConf.load(saved)
               if override_key(str(o)) not in (*_RESUME_KEYS, *given_keys)]
    return [*earlier, *given, f"resume={quote(run_dir)}", f"hydra.run.dir={quote(run_dir)}"]


def resume_dir(cfg: DictConfig, out_dir: Path) -> Path | None:
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


def checkpoint_to_resume(cfg: DictConfig, trainer: L.Trainer, resume_dir: Path | None,
                         out_dir: Path) -> str | None:
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
        f"ckpt_path=last: no checkpoint in {out_dir}, and no run of this task under "
        f"logs/ has one. Continue a run with resume=<run dir>, or name a file with "
        f"ckpt_path=<path>.ckpt")

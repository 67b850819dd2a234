"""The pipeline's side of the loggers: checked before a run builds anything, fed the run's config.

* :func:`check_logger_config` fails at start, with the fix, when ``logger=wandb`` would log
  online without an API key (instead of W&B prompting, or failing minutes later), and when the
  resolved config carries a secret from the environment (``.env``), which would otherwise be
  written to ``config_resolved.yaml``, the loggers' configs and every checkpoint;
* :func:`name_wandb_group` groups a multirun's W&B runs by their sweep;
* :func:`log_run_config` gives every logger the resolved config; W&B gets it flattened
  (``optimizer.lr``: the names of the overrides) with the job's overrides, so its runs table and
  parallel-coordinates view compare a sweep's runs by what was swept;
* :func:`drop_callbacks_needing_a_logger`: ``logger=[]`` trains without the LR monitor.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

__all__ = ["LoggerConfigError", "check_logger_config", "close_stale_wandb_run",
           "drop_callbacks_needing_a_logger", "flatten", "log_run_config", "name_wandb_group",
           "resume_wandb_run", "secret_values"]

log = logging.getLogger(__name__)
WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"
# environment variables whose values are never written anywhere
SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
NOT_ONLINE = ("offline", "dryrun", "disabled")
_MIN_SECRET_LEN = 8  # shorter values would match ordinary config values by chance


class LoggerConfigError(RuntimeError):
    """A logger that cannot work as configured (missing key, a secret in the config)."""


def _wandb_configs(cfg: DictConfig) -> list[DictConfig]:
    loggers = cfg.get("logger") or {}
    return [sub for sub in loggers.values()
            if isinstance(sub, DictConfig) and sub.get("_target_") == WANDB_TARGET]


def _wandb_settings() -> Any:
    """W&B's own view of mode, server and key from its settings files (``wandb offline``,
    ``wandb login --host``) and the environment as it is now, or None.

    Read afresh each time: W&B's process-wide settings keep the environment of their first use.
    """
    try:
        import wandb

        settings = wandb.Settings()
        settings.update_from_system_settings()
        settings.update_from_env_vars(dict(os.environ))
        return settings
    except Exception:  # a wandb without these: the environment alone decides
        return None


def _wandb_mode(sub: DictConfig, settings: Any) -> str:
    if sub.get("offline"):
        return "offline"
    mode = sub.get("mode") or os.environ.get("WANDB_MODE")
    if not mode and settings is not None:
        mode = getattr(settings, "mode", None)
    return str(mode or "online").lower()


def _has_wandb_key(settings: Any) -> bool:
    """A key W&B would find: WANDB_API_KEY (or an identity token), its settings, or .netrc."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    if settings is not None and getattr(settings, "api_key", None):
        return True
    base_url = (getattr(settings, "base_url", None) if settings is not None else None) or (
        os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host = urlparse(str(base_url)).hostname or ""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        return path.is_file() and netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_logger_config(cfg: DictConfig, written: Sequence[Path] = ()) -> None:
    """Refuse, before anything is built, a W&B logger without a key and secrets in the config.

    ``written``: files and directories Hydra wrote before the run started (``<run>/.hydra/``,
    a sweep's ``multirun.yaml``): a refused secret is redacted from them, and the message says
    which files were changed."""
    settings = None
    for sub in _wandb_configs(cfg):
        settings = settings or _wandb_settings()
        if _wandb_mode(sub, settings) in NOT_ONLINE or _has_wandb_key(settings):
            continue
        raise LoggerConfigError(
            "logger=wandb logs online but no W&B API key was found: WANDB_API_KEY is not set "
            "(in the environment or in .env) and `wandb login` has stored none. Either put "
            "WANDB_API_KEY=<key from https://wandb.ai/authorize> in .env (copy .env.example), "
            "or log without an account: WANDB_MODE=offline (in .env or the environment; upload "
            "later with `wandb sync <run dir>/wandb/offline-run-*`), or use another logger "
            "(logger=csv or logger=tensorboard).")
    found = list(_secrets_in(OmegaConf.to_container(cfg, resolve=True), secret_values()))
    if found:
        where = ", ".join(f"{key} (the value of ${name})" for key, name in found)
        values = {name: secret_values()[name] for _, name in found}
        changed = redact_secrets(written, values)
        told = (f" Hydra had already written it into {', '.join(map(str, changed))}: "
                f"redacted there." if changed else "")
        raise LoggerConfigError(
            f"the config holds a secret: {where}. It would be written to config_resolved.yaml "
            "and the loggers' configs (and, under model/optimizer, into checkpoints). Keep keys "
            "in .env only (W&B reads WANDB_API_KEY itself) and remove the ${oc.env:...} "
            f"interpolation or override that puts it in the config.{told}")


def redact_secrets(places: Sequence[Path], secrets: Mapping[str, str]) -> list[Path]:
    """Replace every secret value in the files at ``places`` (files, or directories walked
    recursively) with ``<redacted $NAME>``; the files changed."""
    files: list[Path] = []
    for place in places:
        if place.is_dir():
            files += sorted(f for f in place.rglob("*") if f.is_file())
        elif place.is_file():
            files.append(place)
    changed = []
    for file in files:
        data = file.read_bytes()
        new = data
        for name, value in secrets.items():
            new = new.replace(value.encode(), f"<redacted ${name}>".encode())
        if new != data:
            tmp = file.with_name(f".{file.name}.redacting")
            tmp.write_bytes(new)
            os.replace(tmp, file)  # never a half-written copy
            changed.append(file)
    return changed


def secret_values() -> dict[str, str]:
    """Environment variables named like secrets (``*_API_KEY``, ``*TOKEN*``, ...): name → value."""
    return {name: value for name, value in os.environ.items()
            if SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LEN}


def _secrets_in(node: Any, secrets: Mapping[str, str], path: str = ""
                ) -> Iterator[tuple[str, str]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _secrets_in(value, secrets, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _secrets_in(value, secrets, f"{path}[{i}]")
    elif isinstance(node, str):
        for name, value in secrets.items():
            if value in node:
                yield path, name


def name_wandb_group(cfg: DictConfig, multirun: bool, output_dir: Path) -> None:
    """``logger.wandb.group: null`` → the sweep (``<task>-<sweep dir>``) in a multirun, else the
    task name; set in the config, so the saved and logged configs show it."""
    for sub in _wandb_configs(cfg):
        if sub.get("group") is None:
            # each job's directory is <sweep dir>/<job number>: its parent names the sweep
            group = (f"{cfg.task_name}-{output_dir.parent.name}" if multirun
                     else str(cfg.task_name))
            with open_dict(sub):
                sub.group = group


def resume_wandb_run(cfg: DictConfig, run_dir: Path) -> None:
    """A run resumed in its own directory logs on into its W&B run: the id of the newest run
    W&B left under ``<run dir>/wandb/`` (``run-<time>-<id>``, ``offline-run-<time>-<id>``),
    with ``resume="allow"``; set in the config, unless it names an id itself."""
    runs = sorted((run_dir / "wandb").glob("*run-*-*"), key=lambda p: p.stat().st_mtime_ns)
    runs = [p for p in runs if p.is_dir()]
    if not runs:
        return
    run_id = runs[-1].name.rsplit("-", 1)[1]
    for sub in _wandb_configs(cfg):
        with open_dict(sub):
            sub.id = sub.get("id") or run_id
            sub.resume = sub.get("resume") or "allow"
        log.info("W&B: resuming run %s", sub.id)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.1}}`` → ``{"optimizer.lr": 0.1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_run_config(loggers: list[Logger], cfg: DictConfig, overrides: list[str]) -> None:
    """Give each logger the resolved config; W&B flattened, with the job's overrides."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_hyperparams({**flatten(resolved), "overrides": " ".join(overrides)})
        else:
            lg.log_hyperparams(resolved)


def drop_callbacks_needing_a_logger(callbacks: list[Callback], loggers: list[Logger]
                                    ) -> list[Callback]:
    """Without any logger (``logger=[]``) the LR monitor would stop the run: leave it out."""
    if loggers:
        return callbacks
    kept = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    if len(kept) < len(callbacks):
        log.info("no logger (logger=[]): the learning-rate monitor is off")
    return kept


def close_stale_wandb_run() -> None:
    """Close a W&B run that an earlier job of this process left open by crashing (a sweep goes
    on after a failed trial), so that this job gets its own run instead of reusing that one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        log.warning("closing the W&B run %s left open by an earlier job (marked failed)",
                    wandb.run.id)
        wandb.finish(exit_code=1)

"""Optuna studies by storage URL, and the pruners of ``hydra.sweeper.pruner``: what the
sweeper (``classicnets.runs.search``), the study summary and a trial's own callback
(``classicnets.callbacks.search``) share. Nothing heavy at import: optuna is imported inside.

``sqlite:///<file>``: one machine. ``journal:///<file>``: Optuna's journal file (appends with
file locks; made for network file systems a cluster shares, where SQLite corrupts or locks).
Any other SQLAlchemy URL (``postgresql+psycopg://user:password@host:5432/db``): a database
server, for many machines. A missing driver is named with the package to install, an unreachable
server with the URL, and neither message shows the URL's password.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException

__all__ = ["ENV_PRUNER", "ENV_STORAGE", "ENV_STUDY", "ENV_TRIAL", "EPOCHS_ATTR", "JOURNAL_PREFIX",
           "MAX_EPOCHS_ATTR", "PRUNED_ATTR", "PRUNERS", "StorageError", "SweepConfigError",
           "load_study", "make_pruner", "open_storage", "redact_url"]

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal://"
# URL scheme (dialect or dialect+driver) -> (module to import, pip package that provides it)
_DRIVERS = {
    "postgresql": ("psycopg2", "psycopg2-binary (or write postgresql+psycopg:// and install "
                   "classicnets[postgres], i.e. psycopg[binary])"),
    "postgresql+psycopg": ("psycopg", "'classicnets[postgres]' (psycopg[binary])"),
    "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"),
    "mysql": ("MySQLdb", "mysqlclient"),
    "mysql+pymysql": ("pymysql", "pymysql"),
}


# what a trial's job reads (classicnets.callbacks.search.OptunaTrialReport): set by the sweeper
# through hydra.job.env_set, so every process of the job (DDP ranks, SLURM tasks) inherits them
ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_PRUNER = (
    "CLASSICNETS_OPTUNA_STORAGE", "CLASSICNETS_OPTUNA_STUDY", "CLASSICNETS_OPTUNA_TRIAL",
    "CLASSICNETS_OPTUNA_PRUNER")
# trial attributes set by the trial's callback: the epoch after which the pruner stopped it, the
# epochs it trained and the epochs it was configured for
PRUNED_ATTR, EPOCHS_ATTR, MAX_EPOCHS_ATTR = "pruned_after_epoch", "epochs", "max_epochs"
# hydra.sweeper.pruner -> Optuna's pruner class (optuna.pruners)
PRUNERS = {"none": "NopPruner", "median": "MedianPruner",
           "successive_halving": "SuccessiveHalvingPruner", "hyperband": "HyperbandPruner"}


class SweepConfigError(CompactHydraException, ValueError):
    """A sweep that cannot run as configured; raised before its first job. (Hydra prints a
    CompactHydraException as its message alone, without a stack trace.)"""


class StorageError(SweepConfigError):
    """A study storage that cannot be opened (unreachable server, missing driver); raised
    before the first trial."""


def redact_url(url: str) -> str:
    """The storage URL without its password (SQLAlchemy's own rendering)."""
    if url.startswith(JOURNAL_PREFIX) or "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://<redacted>"


def _journal_path(url: str) -> Path:
    return Path(url[len(JOURNAL_PREFIX):])


def _check_driver(url: str) -> None:
    scheme = url.split("://", 1)[0]
    module, package = _DRIVERS.get(scheme, (None, None))
    if module is None:
        return
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise StorageError(
            f"hydra.sweeper.storage={redact_url(url)} needs the Python package '{module}', "
            f"which is not installed: pip install {package}")


def open_storage(url: str, heartbeat_interval: int | None = None,
                 grace_period: int | None = None, retries: int = 0) -> Any:
    """Optuna's storage for ``url``; an RDB storage records heartbeats when
    ``heartbeat_interval`` is set, and a trial whose worker stopped beating is failed and
    queued again (``retries`` times) by Optuna's ``RetryHeartbeatStaleTrialCallback``."""
    import optuna

    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = _journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        if heartbeat_interval:
            log.warning("hydra.sweeper.heartbeat_interval: Optuna's journal storage keeps no "
                        "heartbeats; a dead worker's trial stays running there (use an RDB "
                        "URL: sqlite:/// or postgresql+psycopg://)")
        return JournalStorage(JournalFileBackend(str(path)))
    _check_driver(url)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    callback = (optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
                if heartbeat_interval and retries else None)
    def make() -> Any:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat_interval or None,
            grace_period=grace_period if heartbeat_interval else None,
            heartbeat_stale_trial_callback=callback,
            # a server that does not answer fails in seconds, not after the OS's TCP timeout
            engine_kwargs={"connect_args": {"connect_timeout": 10}}
            if url.startswith(("postgresql", "mysql")) else None)

    try:
        try:
            return make()
        except Exception as err:
            # workers started together on an empty database race to create Optuna's tables:
            # the loser's CREATE fails on what the winner made; the tables are there now
            if type(err).__name__ not in ("IntegrityError", "ProgrammingError"):
                raise
            time.sleep(1.0)
            return make()
    except ImportError as err:
        raise StorageError(f"hydra.sweeper.storage={redact_url(url)}: {err}; install the "
                           "database's driver (PostgreSQL: pip install "
                           "'classicnets[postgres]' and a postgresql+psycopg:// URL)") from err
    except Exception as err:  # sqlalchemy.exc.OperationalError and kin: a server not there
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "://" in url and "@" in url:
            reason = reason.replace(url, redact_url(url))
        raise StorageError(
            f"hydra.sweeper.storage={redact_url(url)} cannot be opened ({type(err).__name__}: "
            f"{reason}). Check that the database server runs and the URL's host, port, user "
            "and database are right") from err




def load_study(url: str, name: str) -> Any:
    """An existing study, by storage URL (journal files included) and name."""
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(url))


def make_pruner(name: str | None, settings: Mapping[str, Any] | None) -> Any:
    """Optuna's pruner for ``hydra.sweeper.pruner`` with ``hydra.sweeper.pruner_args``."""
    import optuna

    name = str(name or "none")
    if name not in PRUNERS:
        raise SweepConfigError(f"hydra.sweeper.pruner={name}: one of {', '.join(PRUNERS)}")
    cls = getattr(optuna.pruners, PRUNERS[name])
    settings = dict(settings or {})
    valid = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise SweepConfigError(
            f"hydra.sweeper.pruner_args.{unknown[0]}: {cls.__name__} (pruner={name}) takes "
            f"{', '.join(valid) or 'no settings'}")
    try:
        return cls(**settings)
    except (TypeError, ValueError) as err:
        raise SweepConfigError(f"hydra.sweeper.pruner={name} with {settings}: {err}") from err

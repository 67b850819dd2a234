"""How the processes of one run start and find their run directory: torchrun nodes, and the
processes Lightning starts for DDP ranks > 0 inside a Hydra multirun."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

__all__ = ["RUN_NAME_ENV", "LaunchConfigError", "agree_run_name", "check_world_matches",
           "ddp_children_run_this_job", "single_run_argv"]

log = logging.getLogger(__name__)

# conf/hydra/default.yaml names run and sweep directories after this variable when it is set
RUN_NAME_ENV = "CLASSICNETS_RUN_NAME"
# what Lightning's launcher leaves in os.environ of the process that started the DDP ranks
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra flags that take a value and must reach a relaunched rank unchanged
_VALUE_FLAGS = frozenset({"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"})
# hydra overrides that belong to the sweep (or that Lightning sets itself), not to one job
_SWEEP_KEYS = ("hydra.mode", "hydra/launcher", "hydra.launcher", "hydra/sweeper",
               "hydra.sweeper", "hydra.sweep", "hydra.run", "hydra.job.num", "hydra.job.id",
               "hydra.job.name", "hydra.output_subdir")


class LaunchConfigError(ValueError):
    """The processes that were started do not match what the trainer config asks for."""


def agree_run_name(now: str | None = None, timeout_s: float = 60.0) -> str | None:
    """Give every torchrun process of a run the same run-directory name (the launch time).

    Each node runs Hydra on its own, and ``${now:}`` may differ by a second between nodes, which
    would split one run over two directories. The first process to reach torchrun's store (the
    TCP store its agent on node 0 serves at MASTER_ADDR:MASTER_PORT) writes its time there; all
    others read that value. The name goes to ``$CLASSICNETS_RUN_NAME``, which
    ``conf/hydra/default.yaml`` uses instead of ``${now:}``. Returns the name, or None where
    there is nothing to agree on (one process, not torchrun, or the name already set).
    """
    if os.environ.get(RUN_NAME_ENV):
        return os.environ[RUN_NAME_ENV]
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        log.warning("torchrun without an agent store: every node names its own run directory; "
                    "pass the same hydra.run.dir=... on every node to keep one directory")
        return None
    from torch.distributed import TCPStore

    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                     timeout=timedelta(seconds=timeout_s))
    # a restarted attempt (torchrun --max-restarts) is a new run, as any relaunch is
    key = f"classicnets/run_name/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    mine = now or time.strftime("%Y-%m-%d_%H-%M-%S")
    name = store.compare_set(key, "", mine).decode()
    os.environ[RUN_NAME_ENV] = name
    return name


def _device_count(devices: Any) -> int | None:
    """Processes per node that ``trainer.devices`` asks for; None when only Lightning knows
    (``-1``/``auto``: every visible device)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        return int(text) if text.isdigit() and int(text) > 0 else None
    if isinstance(devices, Sequence):
        return len(devices)
    return None


def check_world_matches(trainer_cfg: Mapping[str, Any],
                        env: Mapping[str, str] | None = None) -> None:
    """Under torchrun, require ``trainer.num_nodes`` × ``trainer.devices`` to be what torchrun
    started (``--nnodes`` × ``--nproc_per_node``).

    Lightning notices a mismatch only inside ``fit`` and words it as a product of numbers;
    with ``devices=1`` and one node it notices nothing and each process trains alone.
    """
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" not in env:
        return
    world = int(env.get("WORLD_SIZE", "1"))
    local = int(env.get("LOCAL_WORLD_SIZE", world))
    nodes = int(env.get("GROUP_WORLD_SIZE", max(1, world // max(1, local))))
    num_nodes = int(trainer_cfg.get("num_nodes") or 1)
    devices = trainer_cfg.get("devices", 1)
    per_node = _device_count(devices)
    if num_nodes == nodes and per_node in (None, local):
        return
    raise LaunchConfigError(
        f"torchrun started {world} process(es): {nodes} node(s) x {local} per node "
        f"(--nnodes={nodes} --nproc_per_node={local}), but the trainer is set up for "
        f"trainer.num_nodes={num_nodes} x trainer.devices={devices}; add "
        f"trainer.num_nodes={nodes} trainer.devices={local} to the command on every node, or "
        f"start torchrun with --nnodes={num_nodes} --nproc_per_node={per_node or local}")


def _belongs_to_sweep(override: str) -> bool:
    key = override.lstrip("~+").split("=", 1)[0]
    return any(key == k or key.startswith((f"{k}.", f"{k}@")) for k in _SWEEP_KEYS)


def single_run_argv(argv: Sequence[str], task_overrides: Sequence[str],
                    hydra_overrides: Sequence[str]) -> list[str]:
    """The command line that runs one job of a multirun on its own: the script and Hydra's
    config flags from ``argv``, then the job's own overrides instead of the sweep's."""
    flags: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-m", "--multirun"):
            continue
        if arg in _VALUE_FLAGS:
            flags += [arg, next(args, "")]
        elif arg.startswith("-"):
            flags.append(arg)
        # anything else is an override of the sweep; the job's own replace them all
    kept = [o for o in hydra_overrides if not _belongs_to_sweep(o)]
    return [argv[0], *flags, *task_overrides, *kept]


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def ddp_children_run_this_job() -> Iterator[None]:
    """Within a Hydra multirun job, make the processes that Lightning starts for DDP ranks > 0
    run this job, into this job's directory.

    Lightning starts ranks > 0 as ``sys.argv`` plus ``hydra.run.dir=<hydra.run.dir>``. In a
    multirun that is the whole sweep, and the run dir a fresh ``${now:}`` directory: each rank
    would run every job of the sweep, out of step with rank 0, into a stray sweep directory of
    its own. Here ``sys.argv`` becomes this job's single run and ``hydra.run.dir`` this job's
    directory, for the job's duration. Afterwards the launch variables Lightning leaves in
    ``os.environ`` are put back and the job's process group is closed, so that the next job in
    this process starts its own ranks rather than talking to the last job's, which have exited.
    """
    argv = list(sys.argv)
    saved_env = {k: os.environ.get(k) for k in _LAUNCH_ENV}
    try:
        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode == RunMode.MULTIRUN:
                sys.argv = single_run_argv(argv, list(hydra_cfg.overrides.task),
                                           list(hydra_cfg.overrides.hydra))
                with read_write(hydra_cfg.run):
                    hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
        yield
    finally:
        sys.argv = argv
        # LOCAL_RANK appeared: Lightning started this job's ranks from here (not torchrun/srun)
        if saved_env["LOCAL_RANK"] is None and "LOCAL_RANK" in os.environ:
            _close_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

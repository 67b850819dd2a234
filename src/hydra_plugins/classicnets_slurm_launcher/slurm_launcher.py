"""Each job of a Hydra multirun as one SLURM job (``hydra/launcher=slurm``), or as local
processes the same way (``hydra/launcher=submitit_local``).

hydra-submitit-launcher does the submitting; these subclasses add what it leaves to the user:
a clear message when there is no cluster (submitit's is a traceback, after sbatch has retried
for a while), and the job's shape from the trainer: ``trainer.devices`` tasks per node, which
srun starts and Lightning's ``SLURMEnvironment`` joins into one DDP group, one GPU per task for
GPU trainers. The requeue at the time-limit signal is ``classicnets.parallel.slurm``'s.

Hydra imports this module whenever it scans for plugins, in any Hydra application: it imports
nothing heavy at module level, and has no ``from __future__ import annotations`` (the scan runs
it outside ``sys.modules``).
"""

import shutil
import subprocess
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import DictConfig

# defined outside this plugin module, which Hydra's plugin scan executes a second time (the
# classes would then differ from the ones callers import)
from classicnets.parallel.slurm import SlurmConfigError, SlurmUnavailableError

__all__ = ["LocalLauncher", "SlurmConfigError", "SlurmLauncher", "SlurmUnavailableError",
           "check_cluster", "job_shape"]

_FIX = ("start a single-node cluster on this machine with `sudo tests/scripts/slurm_cluster.sh`, "
        "or run the sweep without SLURM: hydra/launcher=submitit_local")


def check_cluster(timeout_s: float = 30.0) -> None:
    """Raise :class:`SlurmUnavailableError`, naming the fix, unless sbatch is installed and the
    SLURM controller answers ``scontrol ping``."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        raise SlurmUnavailableError(
            "hydra/launcher=slurm submits jobs with sbatch, which is not installed here (no "
            f"SLURM client on PATH); {_FIX}")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True,
                              timeout=timeout_s)
        answer = (ping.stdout + ping.stderr).strip().splitlines()
        # one controller up is enough (a backup may be down; scontrol then exits non-zero)
        up = any(line.strip().endswith("is UP") for line in answer)
    except subprocess.TimeoutExpired:
        answer, up = [f"no answer within {timeout_s:.0f} s"], False
    if not up:
        raise SlurmUnavailableError(
            "hydra/launcher=slurm: the SLURM controller does not answer (scontrol ping: "
            f"{answer[0] if answer else 'no output'}); {_FIX}")


def job_shape(params: dict[str, Any], config: DictConfig) -> dict[str, Any]:
    """Tasks and GPUs per node for the launcher's parameters: a clear error for a device count
    that no scheduler can allocate, and one GPU per task for GPU trainers unless
    ``gpus_per_node`` is set."""
    trainer = config.get("trainer") or {}
    tasks = params.get("tasks_per_node")
    try:
        count = int(tasks) if not isinstance(tasks, bool) else 0
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise SlurmConfigError(
            f"hydra/launcher={config.hydra.runtime.choices.get('hydra/launcher')} starts "
            f"trainer.devices processes per node, so trainer.devices must be a number of "
            f"devices, not {trainer.get('devices')!r} (-1/auto mean 'every visible device', "
            "unknown before the job is allocated): add e.g. trainer.devices=4")
    shape: dict[str, Any] = {"tasks_per_node": count}
    if params.get("gpus_per_node") is None:
        gpu = str(trainer.get("accelerator", "")).lower() in ("gpu", "cuda")
        shape["gpus_per_node"] = count if gpu else None
    return shape


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher, after a cluster check, with the job shape taken
    from the trainer."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # here, before the sweep directory exists: a refused launch leaves nothing behind
        check_cluster()
        self.params.update(job_shape(self.params, config))


class LocalLauncher(submitit_launcher.LocalLauncher):
    """submitit's local executor with the SLURM launcher's job shape: ``trainer.devices``
    processes per job, which become one DDP group the way srun's tasks do."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # gpus_per_node becomes the job's CUDA_VISIBLE_DEVICES (none for CPU trainers)
        self.params.update(job_shape(self.params, config))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:
            # RANK, LOCAL_RANK, WORLD_SIZE, MASTER_*: Lightning then takes this process as one
            # rank it did not start (as under srun) instead of starting ranks of its own
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return super().__call__(*args, **kwargs)

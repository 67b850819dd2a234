"""SLURM: the requeue of a run at the signal SLURM sends before its time limit (or at
preemption), and the resume of the requeued job in its own run directory.

Who requeues: :class:`SlurmRequeue`, a callback. ``hydra/launcher=slurm`` asks sbatch for USR1
``signal_delay_s`` before the limit (conf/hydra/launcher/slurm.yaml). submitit listens on USR2
only, so its own checkpoint-and-resubmit never runs; Lightning installs its USR1 handler only
where none is installed yet, so the callback's handler (installed in ``setup``, before
Lightning's) keeps it out. Lightning's handler saves and synchronises inside the signal handler:
under DDP the rank that takes the signal first waits in the checkpoint's barrier while the
others wait in backward's all-reduce, and the job hangs until SLURM kills it. The requeued job
reruns the same Hydra job (same pickled config, same job directory) and resumes from the newest
checkpoint there (:func:`requeued_checkpoint`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from hydra.errors import CompactHydraException
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

__all__ = ["MAX_REQUEUES_ENV", "REQUEUE_SIGNAL", "SlurmRequeue", "newest_checkpoint",
           "requeued_checkpoint"]

# what sbatch --signal sends (conf/hydra/launcher/slurm.yaml); Lightning's default as well
REQUEUE_SIGNAL = signal.SIGUSR1
# set by the launcher's sbatch script from hydra.launcher.max_num_timeout
MAX_REQUEUES_ENV = "CLASSICNETS_MAX_REQUEUES"
_HPC_NAME = re.compile(r"hpc_ckpt_(\d+)\.ckpt")


def _hpc_checkpoints(run_dir: Path) -> dict[int, Path]:
    """Lightning's names for checkpoints saved at a requeue: hpc_ckpt_<n>.ckpt, n from 1."""
    found = {}
    for path in run_dir.glob("hpc_ckpt_*.ckpt"):
        match = _HPC_NAME.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def requeued_checkpoint(trainer: pl.Trainer) -> str | None:
    """The checkpoint a requeued SLURM job resumes from; None on a first start.

    The newest of what the job left in its own run directory: hpc_ckpt_<n>.ckpt from a requeue
    signal, or last.ckpt (of an epoch end, or of the step where the guard callback stopped the
    job at SIGTERM). Lightning would resume from the highest hpc_ckpt only, even where a later
    last.ckpt supersedes it, and never from last.ckpt; an explicit ckpt_path (resume another
    run) is older than both."""
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) == 0:
        return None
    newest = newest_checkpoint(trainer)
    if newest is not None:
        rank_zero_info(f"requeued SLURM job (restart {os.environ['SLURM_RESTART_COUNT']}): "
                       f"resuming from {newest}")
    return newest


def newest_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest resumable checkpoint in the trainer's run directory (hpc_ckpt_<n>.ckpt or the
    checkpoint callback's last.ckpt), or None when there is none yet."""
    found = list(_hpc_checkpoints(Path(trainer.default_root_dir)).values())
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath:
            found.append(Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}")
    found = [p for p in found if p.is_file()]
    if not found:
        return None
    return str(max(found, key=lambda p: p.stat().st_mtime_ns))


class SlurmRequeue(Callback):
    """Under SLURM, turn the requeue signal (USR1) into a checkpoint and a requeue, at a step
    boundary where all ranks agree.

    The signal handler only notes the signal. Every ``check_every_n_steps`` training batches
    the ranks combine their notes (one all-reduce of a flag, which reads the device back: not
    every step, so the GPU's queue keeps running); if any rank was signalled, all save
    ``hpc_ckpt_<n>.ckpt`` into ``trainer.default_root_dir`` (the run directory), global rank 0
    runs ``scontrol requeue``, and every rank exits. A signal during validation acts at the next
    training batch; one during testing is ignored, so the test finishes in the time left.

    Args:
        max_requeues: requeue only while SLURM_RESTART_COUNT is below this; beyond it the
            checkpoint is still saved and the run goes on until SLURM ends it. None: from
            ``$CLASSICNETS_MAX_REQUEUES`` (hydra.launcher.max_num_timeout), else no limit.
        check_every_n_steps: how often the ranks compare notes; this many steps must take well
            under ``hydra.launcher.signal_delay_s``.
    """

    def __init__(self, max_requeues: int | None = None, check_every_n_steps: int = 10) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.max_requeues = max_requeues
        self.check_every_n_steps = check_every_n_steps
        self._signalled = False
        self._previous: Any = None
        self._installed = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # signal handlers can only be set from the main thread
        if (self._installed or not SLURMEnvironment.detect()
                or threading.current_thread() is not threading.main_thread()):
            return
        self._signalled = False
        self._previous = signal.signal(REQUEUE_SIGNAL, self._note_signal)
        self._installed = True

    def _note_signal(self, signum: int, frame: FrameType | None) -> None:
        # no I/O, no collectives here: this may interrupt an all-reduce on one rank only
        self._signalled = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        # batch_idx is the same on every rank, so all ranks join the same collectives
        if (self._installed and batch_idx % self.check_every_n_steps == 0
                and trainer.strategy.reduce_boolean_decision(self._signalled, all=False)):
            self._checkpoint_and_requeue(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._installed:
            signal.signal(REQUEUE_SIGNAL, self._previous
                          if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def _limit(self) -> int | None:
        if self.max_requeues is not None:
            return self.max_requeues
        value = os.environ.get(MAX_REQUEUES_ENV, "").strip()
        return int(value) if value else None

    def _checkpoint_and_requeue(self, trainer: pl.Trainer) -> None:
        self._signalled = False
        run_dir = Path(trainer.default_root_dir)
        path = run_dir / f"hpc_ckpt_{max(_hpc_checkpoints(run_dir), default=0) + 1}.ckpt"
        trainer.save_checkpoint(path)  # every rank: rank 0 writes, then all meet in a barrier
        job = os.environ["SLURM_JOB_ID"]
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        limit = self._limit()
        if limit is not None and restarts >= limit:
            rank_zero_warn(f"SLURM job {job} was requeued {restarts} times, the limit "
                           f"(hydra.launcher.max_num_timeout={limit}): not requeued again; it "
                           f"runs until SLURM ends it. Resume with ckpt_path={path}")
            return
        # SLURM answers the requeue with SIGTERM; Lightning's SIGTERM handler would start a
        # collective inside the handler while the other ranks are exiting
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not trainer.is_global_zero:
            # exit 0: srun may kill the other tasks (KillOnBadExit) when one fails, and rank 0
            # has yet to requeue
            raise SystemExit(0)
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            raise SystemExit(f"classicnets: scontrol requeue {job} failed: "
                             f"{(done.stderr or done.stdout).strip()}; the run stops here, "
                             f"resume it with ckpt_path={path}")
        raise SystemExit(f"classicnets: SLURM job {job} requeued at {REQUEUE_SIGNAL.name}; it "
                         f"resumes from {path}")


class SlurmUnavailableError(CompactHydraException):
    """hydra/launcher=slurm found no SLURM cluster to submit to."""


class SlurmConfigError(CompactHydraException):
    """The trainer config cannot be turned into a SLURM job."""

"""The ``guard`` callback: a run that is interrupted or diverges stops cleanly and resumably.

* **SIGTERM** (``kill``, a cluster's preemption) and **SIGINT** (Ctrl-C): the handler only notes
  the signal. At the next training-step boundary every rank saves the run's ``last.ckpt`` (model,
  optimizer, scheduler, loop position, the data loader's place in its epoch, RNG states) and
  raises :class:`TrainingInterrupted`, whose exit status is 128 + the signal's number; the
  pipeline adds the resume command. A second Ctrl-C stops at once, without a checkpoint. Under
  DDP the ranks agree on the signal every ``check_every_n_steps`` steps (one all-reduce), so a
  signal that reached one rank stops all of them at the same step; on one process, and on the
  CPU, every step. A signal at an epoch's last batch waits for the epoch's validation and
  checkpoint; one after the last epoch skips the test.
* **A NaN or infinite training loss** (``module.nan_policy=stop``): the module keeps a flag on
  the device (:meth:`ImageClassifier.divergence_flag`); the guard reads it back every
  ``check_every_n_steps`` steps (never every step on an accelerator) and before every checkpoint
  the checkpoint callback writes, so a diverged state never overwrites the last good checkpoint.
  A non-finite ``val/loss`` stops the run too. :class:`TrainingDiverged` names the steps and
  that checkpoint.
* **RNG states** (torch, CUDA, NumPy, Python) are the callback's checkpoint state, restored at
  train start: a resumed run draws what the uninterrupted one would have (dropout, DataLoader
  worker seeds).
* **The training loader's place in its epoch**: Lightning saves a resumable loader's
  ``state_dict`` into the checkpoint but restores it only into a loader made after the
  checkpoint was read; ``configure_optimizers`` (``estimated_stepping_batches``) makes the
  loader earlier, so the guard hands the saved state to the loader at train start.

Lightning's own SIGTERM handler is replaced during training: it ends the run with exit status 0
and saves nothing (and under DDP it broadcasts inside the handler). The SLURM requeue callback
(USR1) is separate; after it requeues, it sets SIGTERM to be ignored, which this guard respects.
"""

from __future__ import annotations

import math
import random
import signal
import threading
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch.distributed import ReduceOp

from classicnets.callbacks.checkpoint import last_checkpoint_path

__all__ = ["TrainingDiverged", "TrainingGuard", "TrainingInterrupted"]


class TrainingInterrupted(SystemExit):
    """A run stopped at a signal, on every rank, after saving ``checkpoint`` (None: no
    checkpoint callback). Exit status 128 + the signal's number, as a shell reports a process
    killed by it; ``finished``: training had ended and only the test was left."""

    def __init__(self, signum: int, checkpoint: str | None, epoch: int, step: int,
                 finished: bool = False) -> None:
        super().__init__(128 + signum)
        self.signum, self.checkpoint = signum, checkpoint
        self.epoch, self.step, self.finished = epoch, step, finished

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class TrainingDiverged(RuntimeError):
    """The training (or validation) loss became NaN or infinite; the message says where and
    which checkpoint is the last good one."""


def _rng_states() -> dict[str, Any]:
    # tensors and plain Python values only: a resume loads the checkpoint with weights_only
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(), "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class TrainingGuard(Callback):
    """Stops a run at SIGTERM/SIGINT with a resumable checkpoint, and at a diverged loss
    before a NaN state is saved (see the module docstring).

    Args:
        check_every_n_steps: on an accelerator, how often the non-finite-loss flag is read back
            (and, under DDP, the ranks agree on a signal): each check waits for the device.
            Between checks a signal waits at most this many steps; SLURM's grace between
            SIGTERM and SIGKILL (KillWait, 30 s by default) must cover them and the save.
        signals: the signals that stop the run (names).
    """

    def __init__(self, check_every_n_steps: int = 10,
                 signals: tuple[str, ...] | list[str] = ("SIGTERM", "SIGINT")) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps
        self.signals = [signal.Signals[name] for name in signals]
        self._signum = 0  # the first stopping signal received (0: none)
        self._pending = 0  # a signal agreed on at an epoch's last batch, acted on after it
        self._previous: dict[int, Any] = {}
        self._steps = 0
        self._checked_step = 0  # global step of the last divergence check
        self._rng: dict[str, Any] | None = None
        self._loader_states: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ signals
    def _note(self, signum: int, frame: FrameType | None) -> None:
        # no I/O and no collectives here: this runs between two bytecodes of the main thread,
        # possibly inside a collective or a write
        if self._signum and signum == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, as without the guard
        self._signum = self._signum or signum

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread
        for sig in self.signals:
            current = signal.getsignal(sig)
            if current == self._note or current == signal.SIG_IGN:
                continue  # ours already, or ignored on purpose (the SLURM requeue does that)
            self._previous.setdefault(sig, current)
            signal.signal(sig, self._note)

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._note:  # unless someone replaced ours since
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._signum = self._pending = self._steps = self._checked_step = 0
            self._install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registered its SIGTERM handler after setup (wrapping ours): take it back
        self._install()
        self._checked_step = trainer.global_step
        if self._rng is not None:
            _set_rng_states(self._rng)
            self._rng = None
        if self._loader_states and trainer.train_dataloader is not None:
            # before the epoch's first batch is drawn (loaders iterate lazily); applying a
            # state Lightning applied already sets the same position again
            loaders = [dl for dl in CombinedLoader(trainer.train_dataloader).flattened
                       if callable(getattr(dl, "load_state_dict", None))
                       and callable(getattr(dl, "state_dict", None))]
            if len(loaders) == len(self._loader_states):
                for loader, state in zip(loaders, self._loader_states):
                    loader.load_state_dict(state)
        self._loader_states = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self._restore()

    # ------------------------------------------------------------------ checks
    def _agree(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[int, bool]:
        """(signal number, training loss diverged), the same on every rank: one read-back."""
        flag = getattr(pl_module, "divergence_flag", None)
        diverged = flag() if callable(flag) else None
        if trainer.world_size == 1:
            # one process: the signal is already a Python int here, so only the flag is read
            # back (on the CPU this runs every step: no tensors built around it)
            self._checked_step = trainer.global_step
            return self._signum, diverged is not None and bool(diverged)
        if diverged is None:
            diverged = torch.zeros((), device=pl_module.device)
        both = torch.stack([torch.tensor(float(self._signum), device=diverged.device),
                            diverged.float().reshape(())])
        if trainer.world_size > 1:
            both = trainer.strategy.reduce(both, reduce_op=ReduceOp.MAX)
        signum, bad = both.tolist()
        self._checked_step = trainer.global_step
        return int(signum), bad > 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._steps += 1
        checked_from = self._checked_step
        signum = self._pending  # already agreed by every rank
        # the same decision on every rank: step counts, world size and device type agree
        due = (pl_module.device.type == "cpu" or self._steps % self.check_every_n_steps == 0
               or (trainer.world_size == 1 and self._signum))
        if not signum and due:
            signum, diverged = self._agree(trainer, pl_module)
            if diverged:
                raise self._diverged(trainer, f"the training loss became NaN or infinite in "
                                              f"epoch {trainer.current_epoch}, "
                                              f"{self._steps_text(checked_from, trainer)}")
        if not signum:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # stop after this epoch's validation and checkpoint: a checkpoint saved here would
            # make the resumed run skip them
            self._pending = signum
            return
        self._stop(trainer, signum)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._check_before_checkpoint(trainer, pl_module)
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and not math.isfinite(float(loss)):  # synced: every rank agrees
            raise self._diverged(trainer, f"the validation loss is {float(loss)} after epoch "
                                          f"{trainer.current_epoch} (global step "
                                          f"{trainer.global_step}): the weights are no longer "
                                          f"finite")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_before_checkpoint(trainer, pl_module)

    def _check_before_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule
                                 ) -> None:
        # runs before the checkpoint callback's hook of the same name (Lightning calls
        # checkpoint callbacks last), so a diverged state is never written
        checked_from = self._checked_step
        signum, diverged = self._agree(trainer, pl_module)
        self._pending = self._pending or signum
        if diverged:
            raise self._diverged(trainer, f"the training loss became NaN or infinite in epoch "
                                          f"{trainer.current_epoch}, "
                                          f"{self._steps_text(checked_from, trainer)}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a signal during the last epoch's validation: training is complete and saved
        signum = self._pending
        if not signum:
            signum, _ = self._agree(trainer, pl_module)
        self._restore()  # the test that follows runs with the usual Ctrl-C
        if signum:
            found = last_checkpoint_path(trainer)
            path = str(found[1]) if found and found[1].is_file() else None
            raise TrainingInterrupted(signum, path, trainer.current_epoch, trainer.global_step,
                                      finished=True)

    # ------------------------------------------------------------------ acting
    def _stop(self, trainer: L.Trainer, signum: int) -> None:
        found = last_checkpoint_path(trainer)
        path = None
        if found is not None:
            callback, last = found
            # the file's own record of it, so the resumed callback rewrites this very file
            callback.last_model_path = str(last)
            trainer.save_checkpoint(last)  # every rank: rank 0 writes (atomically), all wait
            path = str(last)
        rank_zero_info(f"{signal.Signals(signum).name}: stopped in epoch {trainer.current_epoch} "
                       f"at global step {trainer.global_step}"
                       + (f"; saved {path}" if path else "; no checkpoint callback, nothing saved"))
        raise TrainingInterrupted(signum, path, trainer.current_epoch, trainer.global_step)

    @staticmethod
    def _steps_text(checked_from: int, trainer: L.Trainer) -> str:
        first, last = checked_from + 1, trainer.global_step
        return (f"at global step {last}" if first >= last
                else f"between global steps {first} and {last}")

    @staticmethod
    def _diverged(trainer: L.Trainer, what: str) -> TrainingDiverged:
        found = last_checkpoint_path(trainer)
        if found is not None and found[1].is_file():
            good = (f"The last good checkpoint is {found[1]} (written before the loss became "
                    f"non-finite; it is kept as it is).")
        else:
            good = "No checkpoint was written before it (it diverged in the first epoch)."
        return TrainingDiverged(
            f"{what}. Training stopped. {good} Start again with a smaller learning rate "
            f"(optimizer.lr=...), a longer warm-up (scheduler.warmup_epochs=...) or gradient "
            f"clipping (trainer.gradient_clip_val=1.0); module.nan_policy=skip skips batches "
            f"with a non-finite loss instead of stopping.")

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # applied at train start: the sanity check and loader set-up come in between
        self._rng = state_dict.get("rng")

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        self._loader_states = (fit_loop.get("state_dict") or {}).get("combined_loader")

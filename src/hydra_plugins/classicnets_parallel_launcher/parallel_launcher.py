"""Run the jobs of a Hydra multirun several at once on this machine, each in a fresh process.

Every job gets a slot: on a GPU machine its own GPU(s), through ``CUDA_VISIBLE_DEVICES`` set in
the environment the job's process starts with (so before anything in it can touch CUDA); and
``cores // n_jobs`` torch/OpenMP threads. A fresh process per job, not a pool of reused
workers: a CUDA context lives as long as its process and stays on the device it was made on.

Hydra imports this module whenever it scans for plugins, in any Hydra application; it imports
nothing heavy at module level. No ``from __future__ import annotations`` here: Hydra's plugin scan
executes this module outside ``sys.modules``, where dataclasses cannot resolve string annotations.
"""

import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

__all__ = ["DEFAULT_CPU_JOBS", "JobSpec", "ParallelLauncher", "Slot", "cpu_cores", "job_env",
           "plan_slots", "visible_gpus"]

log = logging.getLogger(__name__)

# jobs at once on a machine without GPUs, unless hydra.launcher.n_jobs says otherwise
DEFAULT_CPU_JOBS = 2
# the child runs the job from here; `-c` keeps __main__ without a module spec, so that Lightning
# restarts DDP ranks > 0 as `python <script>` from sys.argv (which the child sets to the user's)
_CHILD = ("from hydra_plugins.classicnets_parallel_launcher.job_process import main; "
          "raise SystemExit(main())")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class Slot(NamedTuple):
    """Where one running job goes: its GPUs (``CUDA_VISIBLE_DEVICES``) and its thread count.

    A tuple, so slots compare by value even across the second copy of this module's classes
    that Hydra's plugin scan makes when it executes the module again."""

    devices: tuple[str, ...]
    threads: int

    def describe(self) -> str:
        gpus = f"GPU {','.join(self.devices)}" if self.devices else "CPU"
        return f"{gpus}, {self.threads} thread(s)"


@dataclass
class JobSpec:
    """All a fresh process needs to run one job as Hydra's own launcher would."""

    hydra_context: HydraContext
    task_function: TaskFunction
    config: DictConfig
    singleton_state: dict[Any, Any]
    argv: list[str]


def _check_count(key: str, value: Any, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        default = {"n_jobs": " (or null: one job per visible GPU, 2 without GPUs)",
                   "threads_per_job": " (or null: CPU cores // n_jobs)"}.get(key, "")
        raise ValueError(f"hydra.launcher.{key}={value}: must be a positive integer{default}")


def visible_gpus(env: Mapping[str, str], device_count: int) -> list[str]:
    """The GPUs this launcher may hand out: ``CUDA_VISIBLE_DEVICES`` when it is set (indices,
    UUIDs or MIG names, kept verbatim), else ``0 .. device_count - 1``."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return [str(i) for i in range(device_count)]
    gpus: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break  # CUDA ignores everything from the first invalid entry on ("-1": no GPU)
        gpus.append(item)
    return gpus


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM or taskset share)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def plan_slots(n_jobs: int | None, gpus: Sequence[str], cores: int, gpus_per_job: int = 1,
               threads_per_job: int | None = None) -> list[Slot]:
    """One slot per job that runs at once.

    With GPUs: ``gpus_per_job`` consecutive GPUs per slot, and by default as many slots as
    that gives (``n_jobs`` above it puts several jobs on a GPU, in turn). Without: ``n_jobs``
    slots, 2 by default. Threads: ``threads_per_job``, else the cores shared out evenly.
    """
    _check_count("n_jobs", n_jobs, allow_none=True)
    _check_count("gpus_per_job", gpus_per_job, allow_none=False)
    _check_count("threads_per_job", threads_per_job, allow_none=True)
    if gpus:
        if gpus_per_job > len(gpus):
            raise ValueError(
                f"hydra.launcher.gpus_per_job={gpus_per_job} but {len(gpus)} GPU(s) are visible "
                f"({','.join(gpus)}); lower gpus_per_job or make more GPUs visible")
        groups = [tuple(gpus[i:i + gpus_per_job])
                  for i in range(0, len(gpus) - gpus_per_job + 1, gpus_per_job)]
        count = n_jobs or len(groups)
        devices = [groups[k % len(groups)] for k in range(count)]
    else:
        count = n_jobs or DEFAULT_CPU_JOBS
        devices = [()] * count
    threads = threads_per_job or max(1, cores // count)
    return [Slot(d, threads) for d in devices]


def job_env(base: Mapping[str, str], slot: Slot) -> dict[str, str]:
    """The environment a job's process starts with: its GPUs and its thread count."""
    env = dict(base)
    if slot.devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.devices)
    for var in _THREAD_VARS:
        env[var] = str(slot.threads)
    # the child imports this package from where this process found it (e.g. a src/ checkout)
    here = str(Path(__file__).resolve().parents[2])
    if not any(part in ("site-packages", "dist-packages") for part in Path(here).parts):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


def _cuda_device_count() -> int:
    """GPUs present, counted without creating a CUDA context here (torch asks NVML first)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


class ParallelLauncher(Launcher):
    """Hydra launcher: up to ``n_jobs`` jobs at once, each in a fresh Python process."""

    def __init__(self, n_jobs: int | None = None, gpus_per_job: int = 1,
                 threads_per_job: int | None = None) -> None:
        # checked here: Hydra builds the launcher before the first job starts
        _check_count("n_jobs", n_jobs, allow_none=True)
        _check_count("gpus_per_job", gpus_per_job, allow_none=False)
        _check_count("threads_per_job", threads_per_job, allow_none=True)
        self.n_jobs, self.gpus_per_job, self.threads_per_job = (
            n_jobs, gpus_per_job, threads_per_job)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        # one pool of slots for every launch() of this launcher: classicnets' Optuna sweeper
        # calls launch() from several threads at once (one trial each), and a slot (a GPU) must
        # not be handed to two of them
        self._free: queue.SimpleQueue[Slot] | None = None
        self._n_slots = 0
        self._compose = threading.Lock()  # Hydra's config loader is not made for threads

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        free = self._slots()
        log.info("Launching %d jobs, %d at once, into %s", len(job_overrides), self._n_slots,
                 sweep_dir)
        configs = []
        with self._compose:
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                         list(overrides))
                with open_dict(cfg):
                    cfg.hydra.job.id = str(idx)
                    cfg.hydra.job.num = idx
                configs.append((idx, cfg))

        # job files live outside the sweep directory, which holds only the jobs' own outputs
        with (tempfile.TemporaryDirectory(prefix="classicnets-sweep-") as tmp,
              ThreadPoolExecutor(max_workers=self._n_slots) as pool):
            futures = [pool.submit(self._run, idx, cfg, free, Path(tmp)) for idx, cfg in configs]
            try:
                return [f.result() for f in futures]
            except BaseException:
                self.stop_all()  # Ctrl-C or an error here: leave no job running
                raise

    def _slots(self) -> "queue.SimpleQueue[Slot]":
        """The free slots, planned on the first launch and shared by every later one."""
        with self._lock:
            if self._free is None:
                env_gpus = (None if "CUDA_VISIBLE_DEVICES" in os.environ
                            else _cuda_device_count())
                slots = plan_slots(self.n_jobs, visible_gpus(os.environ, env_gpus or 0),
                                   cpu_cores(), self.gpus_per_job, self.threads_per_job)
                self._free = queue.SimpleQueue()
                for slot in slots:
                    self._free.put(slot)
                self._n_slots = len(slots)
            return self._free

    def _run(self, idx: int, config: DictConfig, free: queue.SimpleQueue[Slot],
             tmp: Path) -> JobReturn:
        import cloudpickle

        assert self.hydra_context is not None and self.task_function is not None
        spec = JobSpec(self.hydra_context, self.task_function, config, Singleton.get_state(),
                       [os.path.abspath(sys.argv[0]), *sys.argv[1:]])
        job_file, result_file = tmp / f"job{idx}.pkl", tmp / f"job{idx}.result.pkl"
        job_file.write_bytes(cloudpickle.dumps(spec))
        slot = free.get()
        try:
            log.info("#%d started (%s)", idx, slot.describe())
            proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(job_file),
                                     str(result_file)], env=job_env(os.environ, slot))
            with self._lock:
                self._procs.add(proc)
            code = proc.wait()
            with self._lock:
                self._procs.discard(proc)
        finally:
            free.put(slot)
        if result_file.is_file():
            result = cloudpickle.loads(result_file.read_bytes())
            assert isinstance(result, JobReturn)
            log.info("#%d finished: %s", idx, result.status.name)
            return result
        log.error("#%d: its process exited with code %s before reporting", idx, code)
        error = RuntimeError(
            f"job #{idx} ({' '.join(filter_overrides(config.hydra.overrides.task))}) exited "
            f"with code {code} before reporting a result (killed? out of memory?); its log is "
            f"in {Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)}")
        task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        return JobReturn(overrides=list(config.hydra.overrides.task), cfg=task_cfg,
                         hydra_cfg=config, working_dir=os.getcwd(),
                         task_name=config.hydra.job.name, status=JobStatus.FAILED,
                         _return_value=error)

    def stop_all(self) -> None:
        """Terminate every job process still running (then kill those that do not stop)."""
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

"""One job of a parallel sweep, in the fresh process the launcher started for it."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the job described by ``argv[1]`` and write its ``JobReturn`` to ``argv[2]``."""
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, run_job, setup_globals

    job_file, result_file = (Path(a) for a in (argv or sys.argv)[1:3])
    spec = cloudpickle.loads(job_file.read_bytes())
    setup_globals()
    Singleton.set_state(spec.singleton_state)
    # the user's command line: what Lightning restarts for DDP ranks > 0 (made per job there)
    sys.argv = list(spec.argv)
    HydraConfig.instance().set_config(spec.config)
    ret: JobReturn = run_job(hydra_context=spec.hydra_context, task_function=spec.task_function,
                             config=spec.config, job_dir_key="hydra.sweep.dir",
                             job_subdir_key="hydra.sweep.subdir")
    try:
        payload = cloudpickle.dumps(ret)
    except Exception as exc:  # a return value that cannot travel: report it, not the job
        ret._return_value = RuntimeError(f"the job's result could not be sent back: {exc!r}")
        ret.status = type(ret.status).FAILED
        payload = cloudpickle.dumps(ret)
    tmp = result_file.with_suffix(".partial")
    tmp.write_bytes(payload)
    tmp.replace(result_file)  # whole or absent: the launcher reads it only after the exit
    return 0

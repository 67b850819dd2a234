"""What `python src/benchmark.py` measures, given its composed Hydra config (conf/benchmark.yaml).

The parts, each in its own module:

* :mod:`~classicnets.benchmark.measure`: timed windows (wall and CPU time), calibration,
  variants alternated round by round, summaries, paired ratios with bootstrap intervals —
  shared with the zoo report;
* :mod:`~classicnets.benchmark.settings`: the config over its device profile;
* :mod:`~classicnets.benchmark.sections`: one module per section (``template``, ``data``,
  ``twins``, ``epoch``, ``towers``) and the registry of them;
* :mod:`~classicnets.benchmark.tables`: the CSV rows, the Markdown, the machine;
* :mod:`~classicnets.benchmark.device`: the device every variant shares.

:func:`run_benchmark` runs the configured sections in order and writes ``benchmark.md`` and
``benchmark.csv`` after each one.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from classicnets.benchmark.device import Bench
from classicnets.benchmark.sections import REGISTRY, SECTIONS, Context
from classicnets.benchmark.settings import resolve_settings
from classicnets.benchmark.tables import (
    CSV_COLUMNS,
    Row,
    SectionReport,
    machine_info,
    render_markdown,
    write_csv,
)
from classicnets.runs.host_memory import checked_choice, retain_freed_memory

__all__ = ["CSV_COLUMNS", "SECTIONS", "Row", "resolve_settings", "run_benchmark"]

log = logging.getLogger(__name__)


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # called outside Hydra
        return Path.cwd()


def _bench(s: DictConfig, out_dir: Path) -> Bench:
    """The device as the settings ask, with torch's global switches set to match."""
    bench = Bench(
        device=torch.device(s.device),
        precision=str(s.precision),
        channels_last=bool(s.channels_last),
        compile=bool(s.compile),
        cudnn_benchmark=bool(s.get("cudnn_benchmark", True)),
        out_dir=out_dir,
    )
    if bench.cuda:
        if bench.device.index is not None:  # plain "cuda" means the current device
            torch.cuda.set_device(bench.device)
        if s.get("matmul_precision"):
            torch.set_float32_matmul_precision(str(s.matmul_precision))
        torch.backends.cudnn.benchmark = bench.cudnn_benchmark
    if s.get("threads"):
        torch.set_num_threads(int(s.threads))
    if bench.device.type == "cpu" and checked_choice(s.get("host_memory")) == "retain":
        # as `python src/train.py` trains on a CPU (host_memory=retain): without it every
        # variant's step page-faults its tensors back in, thousands of faults a step whose
        # number varies from run to run — noise larger than the differences measured here
        retain_freed_memory()
    return bench


def run_benchmark(cfg: DictConfig) -> list[Row]:
    """Run the configured sections; write ``benchmark.md`` and ``benchmark.csv`` to the run
    directory (after every section, so an interrupted run keeps what it measured)."""
    s = resolve_settings(cfg)
    if (cfg.get("extras") or {}).get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    out_dir = _output_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(s, out_dir / "benchmark_settings.yaml")
    bench = _bench(s, out_dir)
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    root = str(cfg.paths.data_dir) if "paths" in cfg else "data"
    ctx = Context(settings=s, bench=bench, data_root=root, seed=seed)
    info = machine_info(bench)
    log.info("benchmark on %s / %s: sections %s", info["cpu"], info["gpu"], list(s.sections))
    numbers = {name: i + 1 for i, name in enumerate(SECTIONS)}
    parts: list[tuple[int, SectionReport]] = []
    rows: list[Row] = []
    md = ""
    for section in s.sections:
        start = time.perf_counter()
        part = REGISTRY[section](ctx)
        parts.append((numbers[section], part))
        rows += part.rows
        bench.free()
        log.info("section %s done in %.1f s", section, time.perf_counter() - start)
        md = render_markdown(parts, s, bench, info)
        (out_dir / "benchmark.md").write_text(md + "\n")
        write_csv(rows, out_dir / "benchmark.csv")
    print(md)
    log.info("wrote %s and %s", out_dir / "benchmark.md", out_dir / "benchmark.csv")
    return rows

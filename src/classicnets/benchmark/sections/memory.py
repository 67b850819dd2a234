"""Section ``memory``: CPU training steps with glibc's default allocator settings vs
``host_memory=retain`` (:mod:`classicnets.runs.host_memory`).

``mallopt`` changes a process for good, so each window is a fresh process: ``rounds`` pairs of
processes, ``system`` and ``retain`` alternating (A, B, B, A, ...), each building the network,
taking ``warmup_steps`` untimed steps and timing ``window_steps`` (wall and CPU time, and the
minor page faults per step). On CUDA the tensors live on the device: nothing to measure.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import textwrap

from omegaconf import DictConfig

from classicnets.benchmark.measure import Window, summarise
from classicnets.benchmark.sections.common import Context
from classicnets.benchmark.tables import (
    Row,
    SectionReport,
    fmt,
    fmt_estimate,
    paired_fields,
    table,
    verdict,
)

__all__ = ["measure"]

log = logging.getLogger(__name__)

TITLE = "Host memory on the CPU: glibc's default vs host_memory=retain"
VARIANTS = ("system", "retain")  # the first is the baseline

# one window in a fresh process: argv = variant model batch size warmup steps threads seed
_WINDOW = textwrap.dedent("""
    import json, sys, time, torch
    import torch.nn.functional as F
    from classicnets.runs.host_memory import minor_faults, retain_freed_memory
    from classicnets.models import create_model
    variant, model, bs, size, warmup, steps, threads, seed = sys.argv[1:9]
    bs, size, warmup, steps, threads = map(int, (bs, size, warmup, steps, threads))
    torch.set_num_threads(threads)
    if variant == "retain":
        retain_freed_memory()
    torch.manual_seed(int(seed))
    net = create_model(model, num_classes=10, in_channels=3, input_size=size)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(bs, 3, size, size), torch.randint(0, 10, (bs,))
    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    for _ in range(warmup):
        step()
    f0, c0, t0 = minor_faults(), time.thread_time(), time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.thread_time() - c0,
                      "faults": (minor_faults() - f0) / steps}))
""")


def _window(variant: str, m: DictConfig, seed: int) -> tuple[Window, float]:
    args = [str(a) for a in (variant, m.model, m.batch_size, m.image_size, m.warmup_steps,
                             m.window_steps, m.threads, seed)]
    out = subprocess.run([sys.executable, "-c", _WINDOW, *args], capture_output=True, text=True,
                         timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"memory: the {variant} process failed:\n{out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    window = Window(wall_s=got["wall_s"], steps=int(m.window_steps), cpu_s=got["cpu_s"])
    return window, float(got["faults"])


def measure(ctx: Context) -> SectionReport:
    m, bench = ctx.settings.memory, ctx.bench
    if bench.cuda:
        return SectionReport([], TITLE, ["CPU training only: on CUDA the tensors live on the "
                                         "device, so this section measures nothing there."])
    windows: dict[str, list[Window]] = {v: [] for v in VARIANTS}
    faults: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(int(m.rounds)):
        for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            window, per_step = _window(variant, m, ctx.seed)
            windows[variant].append(window)
            faults[variant].append(per_step)
            log.info("memory round %d/%d: %s %.1f ms/step, %.0f faults/step", r + 1,
                     int(m.rounds), variant, 1e3 * window.per_step(), per_step)
    bs = int(m.batch_size)
    common = {"section": "memory", "case": f"{m.model} training step", "model": str(m.model),
              "batch_size": bs, "image_size": int(m.image_size), "precision": "32-true"}
    notes = {"system": "glibc's default (freed memory returned to the system)",
             "retain": "host_memory=retain (mallopt: no mmap, no trim)"}
    rows = [Row(variant=v, note=f"{notes[v]}; minor faults/step {min(faults[v]):,.0f}–"
                f"{max(faults[v]):,.0f}", **common, **summarise(windows[v], bs),
                **paired_fields(windows[v], windows["system"]))
            for v in VARIANTS]
    retain = rows[1]
    body = [
        f"{m.model}, batch {bs}, {m.image_size} px, fp32, {m.threads} thread(s); "
        f"{m.rounds} pairs of fresh processes, each timing {m.window_steps} steps after "
        f"{m.warmup_steps} untimed ones",
        "",
        *table(["host memory", "ms/step", "CPU ms/step", "minor faults / step", "note"],
               [[r.variant, fmt(r.ms_per_step, ".1f"), fmt(r.cpu_ms_per_step, ".1f"),
                 f"{statistics.median(faults[r.variant]):,.0f}", notes[r.variant]]
                for r in rows]),
        "",
        f"**retain / system = {fmt_estimate(retain.estimate('ratio'), '.3f')}** images/s "
        f"(wall; CPU time {fmt_estimate(retain.estimate('cpu_ratio'), '.3f')}), median of "
        f"paired rounds; retain faster (interval above 1): "
        f"{verdict(retain.estimate('ratio'), 1.0)}",
    ]
    return SectionReport(rows, TITLE, body)

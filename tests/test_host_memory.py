"""host_memory=retain: glibc keeps freed memory, so a repeated step stops page-faulting."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import lightning as L
import pytest
from omegaconf import OmegaConf

from classicnets.runs import host_memory
from classicnets.runs.config_check import ConfigError
from classicnets.runs.pipeline import _host_memory

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")

# a step that allocates, touches and frees a 48 MiB tensor: above glibc's largest automatic
# mmap threshold (32 MiB), so by default every step maps fresh zero pages and faults them in
_STEPS = textwrap.dedent("""
    import sys, torch
    from classicnets.runs.host_memory import minor_faults, retain_freed_memory
    if sys.argv[1] == "retain":
        assert retain_freed_memory() is True
        assert retain_freed_memory() is True  # once per process; the same answer again
    counts = []
    for _ in range(6):
        before = minor_faults()
        torch.ones(12 * 2**20).sum()
        counts.append(minor_faults() - before)
    print(min(counts[2:]), max(counts[2:]))
""")


def _faults_per_step(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _STEPS, mode], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    return int(out[0]), int(out[1])


@glibc
def test_retained_memory_is_not_faulted_in_again() -> None:
    low, _ = _faults_per_step("system")
    assert low > 10_000  # 48 MiB = 12,288 pages of 4 KiB, faulted in at every step
    _, high = _faults_per_step("retain")
    assert high < 200  # the pages of the step before, reused


def test_host_memory_is_applied_to_cpu_runs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(host_memory, "retain_freed_memory", lambda: calls.append(True) or True)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    _host_memory(OmegaConf.create({"host_memory": "system"}), trainer)
    assert calls == []
    _host_memory(OmegaConf.create({"host_memory": "retain"}), trainer)
    assert calls == [True]
    with pytest.raises(ConfigError, match=r"host_memory=.keep. is not one of retain, system"):
        _host_memory(OmegaConf.create({"host_memory": "keep"}), trainer)

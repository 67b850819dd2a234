"""Keep freed host memory in the process on glibc, so a CPU training step stops page-faulting.

glibc's ``malloc`` hands every allocation above a (self-adjusting) threshold straight to
``mmap`` and gives it back to the kernel when it is freed; the top of its heap is trimmed the
same way. A training step allocates and frees the same activation and gradient tensors every
step, so on a CPU each step faults the same memory in again — thousands of zero-filled pages:
measured on a CIFAR ResNet-20 step at batch 128, 6,000–21,000 minor faults per step, varying
from run to run. :func:`retain_freed_memory` makes ``malloc`` serve every allocation from its
heap and never trim it (``mallopt``: ``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` and ``M_TOP_PAD``
large): the process keeps its peak footprint, as PyTorch's CUDA caching allocator does on a
GPU, and a step reuses the pages of the one before. This is what the jemalloc/tcmalloc advice
for PyTorch on CPUs buys, without preloading another allocator.

Only glibc has ``mallopt``; elsewhere (macOS, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any

from classicnets.runs.config_check import ConfigError

__all__ = ["CHOICES", "checked_choice", "minor_faults", "retain_freed_memory"]

# the values of `host_memory` (train.py and the benchmark): keep freed memory, or glibc's default
CHOICES = ("retain", "system")

log = logging.getLogger(__name__)

# <malloc.h> parameter numbers
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
# a free top of the heap up to this size stays mapped; the heap grows this much beyond a
# request, so a growing step needs fewer brk calls (ints: mallopt takes a C int)
_TRIM_THRESHOLD = 2**31 - 1
_TOP_PAD = 64 * 2**20

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Serve all allocations from glibc's heap and never return freed pages (once per
    process; forked DataLoader workers inherit it). True when applied, False where the C
    library has no ``mallopt`` (not Linux with glibc)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("host memory: no glibc mallopt here; freed memory goes back to the system")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD)))
    if not ok:
        log.warning("host memory: mallopt refused a setting; freed memory may still be "
                    "returned to the system (page faults in every CPU step)")
    _applied = ok
    return ok


def checked_choice(how: Any) -> str:
    """A ``host_memory`` value (None: ``retain``), refused with the choices when it is not one."""
    how = "retain" if how is None else how
    if how not in CHOICES:
        raise ConfigError(f"host_memory={how!r} is not one of {', '.join(CHOICES)}: retain "
                          "(keep freed memory, CPU training) or system (glibc's default), "
                          "e.g. host_memory=system")
    return str(how)


def minor_faults() -> int:
    """Minor page faults of this process so far (what :func:`retain_freed_memory` saves)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

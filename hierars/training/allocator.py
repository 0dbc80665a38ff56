"""Keep freed memory in the process during training (glibc ``malloc`` settings), so a CPU training step does
not page-fault its activations in afresh.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves blocks above its mmap threshold (128
KiB, raised dynamically up to 32 MiB) with a fresh ``mmap`` and returns them to the kernel on ``free``, and
gives the top of the heap back above its trim threshold. A training step allocates and frees the same
activations and gradients (0.1-30 MB each) every step, so without these settings a step keeps touching new
pages. Measured on the pipeline's default step (FPN-64, convnext_atto, 8×10×64×64, BHCCM + HSC + AdamW, 1
thread; ``benchmarks/bench_step_ab.py --lever malloc``: both settings at once in two processes pinned to one core each, cores
swapped every round, 6 rounds of 30 steps, 3 December, ``reports/benchmarks/malloc.json``): per step, minor page
faults 1,612 → 30 and kernel time 3.3 → 0.1 ms (medians over rounds); the whole step 0.190 → 0.174 s, paired
difference −8.6 ms [−23.0, +5.8] (95 % t): no measurable difference in the step as a whole, whose run-to-run
spread is larger than the kernel time this removes (about 2 % of a step). The cost: the process keeps its peak
heap until it exits, which a training process reaches anyway. PyTorch's CPU performance guide recommends a
caching allocator (jemalloc / tcmalloc via ``LD_PRELOAD``) for the same reason; ``mallopt`` gets this part of
the effect without preloading anything.

Only glibc on Linux is changed; elsewhere (macOS, Windows, musl) :func:`retain_freed_memory` does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["retain_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

log = logging.getLogger(__name__)

#: Blocks up to this size come from the heap and are reused after ``free`` (glibc's largest dynamic threshold
#: on 64-bit, ``DEFAULT_MMAP_THRESHOLD_MAX``); larger ones are still mapped and unmapped per allocation.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: The heap is given back to the kernel only when this much is free at its top.
TRIM_THRESHOLD = 1024 * 1024 * 1024

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`) for this process.

    Idempotent; forked workers inherit the setting. Returns whether it is in effect (False off glibc, or if
    ``mallopt`` refused a value; then nothing else changes). A user's own ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` (or ``GLIBC_TUNABLES`` ``glibc.malloc.*_threshold``) setting wins: the call then leaves malloc alone.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if ("MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ
            or "malloc.mmap_threshold" in tunables or "malloc.trim_threshold" in tunables):
        log.info("malloc thresholds left as the environment sets them")
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError off glibc (musl has mallopt as a no-op)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _applied = ok
    if not ok:
        log.info("glibc mallopt refused the thresholds; malloc left as it was")
    return ok

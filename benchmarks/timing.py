"""Timing helpers shared by the benchmarks (run as ``python benchmarks/bench_*.py``, so this folder is on sys.path)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_times(fns: dict[str, Callable[[], None]], warmup: int, steps: int) -> dict[str, list[float]]:
    """Run each function ``warmup`` times, then ``steps`` times interleaved (side by side); per-call wall times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def summary(ts: list[float]) -> dict[str, float]:
    """Median and quartiles of wall times (seconds)."""
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return {"median_s": statistics.median(ts), "q1_s": q[0], "q3_s": q[2], "n": len(ts)}

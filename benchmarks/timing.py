"""Timing helpers shared by the benchmarks (run as ``python benchmarks/bench_*.py``, so this folder is on sys.path)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from hierars.atomic import atomic_write_text
from hierars.project import resolve_path
from hierars.training import TrainConfig, build_optimizer

if TYPE_CHECKING:
    from hierars import Hierarchy


def median_times(fns: dict[str, Callable[[], None]], warmup: int, steps: int,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Run each function ``warmup`` times, then ``steps`` times interleaved (side by side); per-call times.

    ``clock``: ``time.perf_counter`` (wall, the default) or ``time.thread_time`` (CPU time of the calling
    thread: with ``torch.set_num_threads(1)`` all of the work, and not inflated by other processes' CPU use).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            t = clock()
            fn()
            times[name].append(clock() - t)
    return times


def summary(ts: list[float]) -> dict[str, float]:
    """Median and quartiles of times (seconds)."""
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return {"median_s": statistics.median(ts), "q1_s": q[0], "q3_s": q[2], "n": len(ts)}


def random_batch(h: Hierarchy, batch: int, in_ch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded training batch: images ``batch x in_ch x size x size`` (standard normal) and labels
    ``batch x L x size x size`` (random leaves lifted to every level of ``h``)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_ch, size, size, generator=g)
    leaf = torch.randint(0, h.num_classes[-1], (batch, size, size), generator=g)
    return x, torch.stack([h.lift(leaf, lvl) for lvl in range(h.num_levels)], dim=1)


def training_optimizer(model: nn.Module, lr: float, fused: bool = True) -> torch.optim.Optimizer:
    """Training's optimiser for ``model`` (:func:`hierars.training.build_optimizer`: fused AdamW, weight decay 0.01
    on weights, none on biases and norms); ``fused=False``: the same optimiser and groups with PyTorch's
    per-parameter loop, its default on CPU."""
    opt = build_optimizer(model, TrainConfig(lr=lr))
    if not fused:
        for group in opt.param_groups:
            group.update(fused=False, foreach=False)
    return opt


def train_step(model: nn.Module, loss: Callable, x: torch.Tensor, y: torch.Tensor, lr: float,
               fused: bool = True) -> Callable[[], None]:
    """A closure running one training step (zero grad, forward, loss, backward, step) on ``(x, y)`` with
    :func:`training_optimizer` (``fused`` as there)."""
    opt = training_optimizer(model, lr, fused)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        opt.step()
    return step


def write_report(report: dict, path: str) -> None:
    """Write a benchmark's report as indented JSON to ``path`` (relative to the repository root), atomically, and
    say where."""
    out = resolve_path(path)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")

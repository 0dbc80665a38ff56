"""How low can the BHCCM + HSC / flat step-time ratio go at the FPN-64 default without changing the maths?

Issue 14 asks for the training-step ratio BHCCM + HSC / flat + CE <= 1.10 at the pipeline's default setting
(FPN-64, ``tu-convnext_atto``, batch 8 of 10 x 64², one thread). What is left of the overhead is many small
operations on 16 x 16 maps. Part of it is weight-side work that no equation asks for: each step, the head's
parameters (level convs, and for each Merging Block its align, MLP and 7x7 weights and its α) are put together
into the stacked and block-diagonal tensors that the fused stages apply (cats, block-diagonals, expands and their
backwards), and about 50 parameter tensors pass through autograd and the optimiser. Storing the parameters in that
layout (a checkpoint migration) is the lever that would remove it. This script measures the most that any such
re-layout could buy, before anyone pays for it: one arm in which that work does not exist at all.

Arms, interleaved step by step in one process (same batch, same thread; ``time.thread_time``):

- ``flat_ce``: the flat head + CE;
- ``bhccm_hsc``: BHCCM + HSC, the code as it is;
- ``bhccm_hsc_bound``: BHCCM + HSC with the stacked head weights and each fusion stage's block-diagonal weights
  given as ready-made parameters (:meth:`hierars.heads.BHCCM._head_weights` / ``_stage_weights`` replaced on the
  instance) and trained by the optimiser in place of the per-block parameters: the same maths with no weight-side
  operations, a bound that no real layout reaches (it would still have to take its views);
- ``bhccm_ce``: BHCCM with the level CE terms only (HSC with μ = 0), for the share of HSC's path term.

Each round times ``--steps`` steps of every arm; per round the medians and the ratios to ``flat_ce``; over rounds
the mean ratio with a 95 % t interval, and the per-step difference to ``bhccm_hsc`` (the arms' steps are adjacent:
per round the median of the step-by-step differences, then the mean over rounds with a 95 % t interval,
``hierars.comparison``).
Writes ``reports/benchmarks/head_bound.json``.

Usage (from the repo root, on an otherwise idle machine)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_head_bound.py      # 5 rounds x 30 steps, ~4 min
    .venv/bin/python benchmarks/bench_head_bound.py --rounds 2 --steps 2 --out /tmp/b.json   # smoke run
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_head_bound.py --arms flat_ce bhccm_hsc_bound \
        --out /tmp/bound2.json          # two arms only: each arm's ratio measured as bench_bhccm.py measures it

With all four arms (four models and optimisers in memory) every step is slower and the ratios come out higher
than in ``bench_bhccm.py``'s two-arm setting (e.g. 1.136-1.157 for the current code against 1.12-1.13 with two
arms); the differences between arms of one run are what the four-arm run is for.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import random_batch, train_step, write_report  # noqa: E402  (benchmarks/timing.py)

from hierars import Hierarchy  # noqa: E402
from hierars.comparison import paired_difference  # noqa: E402
from hierars.heads import BHCCM  # noqa: E402
from hierars.losses import HierarchicalCELoss, HSCLoss  # noqa: E402
from hierars.models import build_model  # noqa: E402
from hierars.training.allocator import retain_freed_memory  # noqa: E402

ARMS = ("flat_ce", "bhccm_hsc", "bhccm_hsc_bound", "bhccm_ce")


def ready_made_weights(head: BHCCM) -> None:
    """Replace, on this instance, the head's weight-side work by parameters holding what it computes now.

    They are registered on the head (``bound_weights``), so training's optimiser trains them with its own decay
    rule; the parameters they stand for are frozen. β, β' and α_L, which the fusion uses directly, stay trainable."""
    weight, bias = (nn.Parameter(t.detach().clone()) for t in head._head_weights())
    stages: dict[int, tuple[nn.Parameter, ...]] = {}
    made = head._stage_weights

    def stage_weights(groups: list) -> tuple[nn.Parameter, ...]:
        key = id(groups[0][1][0])  # the stage's first Merging Block
        if key not in stages:
            stages[key] = tuple(nn.Parameter(t.detach().clone()) for t in made(groups))
        return stages[key]

    head._head_weights = lambda: (weight, bias)
    head._stage_weights = stage_weights
    with torch.no_grad():  # one forward makes every stage's parameters
        head(torch.zeros(1, head.in_channels, 4, 4))
    used_directly = {id(p) for p in (*head.c2f_beta.values(), *head.f2c_beta.values(), head.f2c_alpha_fine)}
    for p in head.parameters():
        if id(p) not in used_directly:
            p.requires_grad_(False)
    head.bound_weights = nn.ParameterList([weight, bias, *(t for ws in stages.values() for t in ws)])


def make_step(h: Hierarchy, arm: str, x: torch.Tensor, y: torch.Tensor, lr: float = 1e-4) -> Callable[[], None]:
    """One training step for ``arm`` (:func:`timing.train_step`: zero grad, forward, loss, backward, training's AdamW
    step); ``step.param_tensors``: how many parameter tensors it trains, ``step.model``: the model."""
    torch.manual_seed(0)
    model = build_model("fpn", "tu-convnext_atto", x.shape[1], h, head="flat" if arm == "flat_ce" else "bhccm",
                        decoder_channels=64).train()
    loss = {"flat_ce": HierarchicalCELoss(), "bhccm_ce": HSCLoss(h, mu=0.0)}.get(arm) or HSCLoss(h)
    if arm == "bhccm_hsc_bound":
        ready_made_weights(model.segmentation_head.head)
    step = train_step(model, loss, x, y, lr)
    step.param_tensors = sum(p.requires_grad for p in model.parameters())  # type: ignore[attr-defined]
    step.model = model  # type: ignore[attr-defined]
    return step


def check_same_maths(current: torch.nn.Module, bound: torch.nn.Module, x: torch.Tensor) -> float:
    """The bound arm computes what the current code computes: the largest difference of the two models' eval
    outputs on ``x`` and of the gradient, through them, of a random projection of the outputs with respect to the
    encoder's first parameter; raises above 1e-4."""
    for m in (current, bound):
        m.eval()
    outs = [m(x) for m in (current, bound)]
    torch.manual_seed(1)
    proj = [torch.randn_like(z) for z in outs[0]]
    grads = [torch.autograd.grad(sum((z * w).sum() for z, w in zip(o, proj)), next(m.encoder.parameters()))[0]
             for m, o in zip((current, bound), outs)]
    diffs = [float((a - b).abs().max().detach()) for a, b in zip(*outs)] + [float((grads[0] - grads[1]).abs().max())]
    for m in (current, bound):
        m.train()
    if max(diffs) > 1e-4:
        raise SystemExit(f"the bound arm does not compute what the current code computes (max difference {max(diffs)})")
    return max(diffs)


def bench(rounds: int, steps: int, warmup: int, batch: int = 8, size: int = 64, arms: tuple[str, ...] = ARMS) -> dict:
    """Time ``arms`` (``flat_ce`` first: the ratios are to it) interleaved step by step; see the module docstring."""
    if not arms or arms[0] != "flat_ce" or not set(arms) <= set(ARMS) or len(set(arms)) != len(arms):
        raise ValueError(f"arms must start with flat_ce and be distinct ones of {ARMS}, got {arms}")
    h = Hierarchy.builtin("mm5b")
    x, y = random_batch(h, batch, 10, size)
    fns = {arm: make_step(h, arm, x, y) for arm in arms}
    same = None
    if {"bhccm_hsc", "bhccm_hsc_bound"} <= set(arms):
        same = check_same_maths(fns["bhccm_hsc"].model, fns["bhccm_hsc_bound"].model, x)  # type: ignore[attr-defined]
    others = [arm for arm in ("bhccm_hsc_bound", "bhccm_ce") if arm in arms and "bhccm_hsc" in arms]
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    per_round = []
    for r in range(rounds):
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(steps):
            for arm, fn in fns.items():
                t = time.thread_time()
                fn()
                times[arm].append(time.thread_time() - t)
        med = {arm: statistics.median(ts) for arm, ts in times.items()}
        ratios = {arm: med[arm] / med["flat_ce"] for arm in arms[1:]}
        # steps of the arms are adjacent, so per-step differences cancel the machine's drift
        paired = {arm: statistics.median(a - b for a, b in zip(times[arm], times["bhccm_hsc"]))
                  for arm in others}
        per_round.append({"median_step_s": med, "ratio_to_flat": ratios, "median_paired_minus_bhccm_hsc_s": paired})
        print(f"round {r}: flat {med['flat_ce'] * 1e3:.1f} ms | " + " | ".join(
            f"{arm} {med[arm] * 1e3:.1f} ms ({ratios[arm]:.3f})" for arm in arms[1:]), flush=True)
    summary = {}
    for arm in arms[1:]:
        rs = [rd["ratio_to_flat"][arm] for rd in per_round]
        d = paired_difference(rs, [0.0] * len(rs)) if len(rs) >= 2 else None
        summary[arm] = {"mean": statistics.fmean(rs), "lo95": d.lo if d else None, "hi95": d.hi if d else None}
    minus_current = {}
    for arm in others:
        ds = [rd["median_paired_minus_bhccm_hsc_s"][arm] for rd in per_round]
        d = paired_difference(ds, [0.0] * len(ds)) if rounds >= 2 else None
        minus_current[arm] = {"mean": statistics.fmean(ds), "lo95": d.lo if d else None, "hi95": d.hi if d else None,
                              "verdict": d.verdict_as("slower", "faster") if d else None}
    return {
        "what": "training step (forward, loss, backward, fused AdamW), FPN-64 convnext_atto, "
                f"{batch} x 10 x {size}², 1 thread, CPU time (thread_time); arms interleaved step by step",
        "arms": {arm: fns[arm].param_tensors for arm in arms},  # type: ignore[attr-defined]
        "bound_max_abs_difference_to_current": same,
        "rounds": rounds, "steps": steps, "warmup": warmup,
        "ratio_to_flat": summary,
        # per round the median of the per-step differences arm − bhccm_hsc; mean over rounds, 95 % t
        "minus_bhccm_hsc_s": minus_current,
        "target_ratio": 1.10,
        "bound_meets_target": summary["bhccm_hsc_bound"]["mean"] <= 1.10 if "bhccm_hsc_bound" in summary else None,
        "per_round": per_round,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per arm and round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS,
                    help="which arms, flat_ce first (default all four; fewer arms, fewer models in memory)")
    ap.add_argument("--out", default="reports/benchmarks/head_bound.json")
    a = ap.parse_args(argv)
    retain_freed_memory()  # training's malloc setting
    torch.set_num_threads(1)
    report = {"torch": torch.__version__, "machine": platform.machine(), "python": platform.python_version(),
              **bench(a.rounds, a.steps, a.warmup, arms=tuple(a.arms))}
    s = report["ratio_to_flat"]
    print("mean ratio to flat over rounds (95 % t): " + ", ".join(
        f"{arm} {v['mean']:.3f}" + (f" [{v['lo95']:.3f}, {v['hi95']:.3f}]" if v["lo95"] is not None else "")
        for arm, v in s.items()))
    for arm, b in report["minus_bhccm_hsc_s"].items():
        if b["lo95"] is not None:
            print(f"{arm} - bhccm_hsc, per step: {b['mean'] * 1e3:+.2f} ms [{b['lo95'] * 1e3:+.2f}, "
                  f"{b['hi95'] * 1e3:+.2f}] ({b['verdict']})")
    write_report(report, a.out)
    return report


if __name__ == "__main__":
    main()

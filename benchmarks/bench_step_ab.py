"""A/B of one lever of the training step, both arms at once: a setting of training against the alternative.

Levers (``--lever``; arms as baseline, candidate):

- ``malloc``: glibc's defaults (``system``) vs the thresholds training sets (``retained``,
  :mod:`hierars.training.allocator`);
- ``optimizer``: PyTorch's per-parameter AdamW loop, its default on CPU (``for_loop``), vs the fused kernel that
  :func:`hierars.training.build_optimizer` asks for (``fused``); both with training's malloc setting.

A malloc setting is per process and cannot be undone, so the two arms run in separate processes, **at the same
time**, each pinned to its own core (so the machine's drift between runs, 0.14-0.19 s for this step within one
morning, hits both alike; it is also how the pipeline trains, two seeds at once), and the cores are swapped every
round. Each process trains the pipeline's default step (FPN-64, convnext_atto, BHCCM + HSC + AdamW, batch 8 of
10 × 64², 1 thread) and reports per step: CPU time (``time.thread_time``), user and kernel time, and minor page
faults. Prints the medians, the per-round ratio candidate / baseline, the paired difference with its 95 % t
interval, and writes ``reports/benchmarks/<lever>.json``.

Usage (from the repo root, on an otherwise idle 2-core machine, Linux with glibc)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_step_ab.py --lever malloc      # 6 rounds x 30 steps, ~4 min
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_step_ab.py --lever optimizer
    .venv/bin/python benchmarks/bench_step_ab.py --rounds 2 --steps 3 --out /tmp/m.json       # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: per lever: (baseline arm, candidate arm)
LEVERS = {"malloc": ("system", "retained"), "optimizer": ("for_loop", "fused")}


def worker(arm: str, core: int, warmup: int, steps: int) -> dict:
    """One arm in this process: returns per-step times and fault counts."""
    os.sched_setaffinity(0, {core})
    import torch
    from timing import random_batch, train_step  # benchmarks/timing.py (this script's folder)

    from hierars import Hierarchy
    from hierars.losses import HSCLoss
    from hierars.models import build_model
    from hierars.training.allocator import retain_freed_memory

    # the malloc lever's baseline leaves glibc alone; every other arm runs with training's setting
    applied = retain_freed_memory() if arm != "system" else False
    torch.set_num_threads(1)
    h = Hierarchy.builtin("mm5b")
    x, y = random_batch(h, 8, 10, 64)
    torch.manual_seed(0)
    model = build_model("fpn", "tu-convnext_atto", 10, h, head="bhccm", decoder_channels=64).train()
    step = train_step(model, HSCLoss(h), x, y, lr=1e-4, fused=arm != "for_loop")

    for _ in range(warmup):
        step()
    times = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        t = time.thread_time()
        step()
        times.append(time.thread_time() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"arm": arm, "core": core, "applied": applied, "step_s": times,
            "user_s_per_step": (r1.ru_utime - r0.ru_utime) / steps,
            "kernel_s_per_step": (r1.ru_stime - r0.ru_stime) / steps,
            "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps}


def _launch(arm: str, core: int, warmup: int, steps: int) -> subprocess.Popen:
    # MALLOC_* would override the malloc arms' settings (hierars.training.allocator lets the environment win)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    return subprocess.Popen([sys.executable, __file__, "--worker", arm, "--core", str(core), "--warmup", str(warmup),
                             "--steps", str(steps)], stdout=subprocess.PIPE, text=True, env=env)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6, help="pairs of concurrent runs (cores swapped each round)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run")
    ap.add_argument("--lever", choices=sorted(LEVERS), default="malloc")
    ap.add_argument("--out", default=None, help="default: reports/benchmarks/<lever>.json")
    ap.add_argument("--worker", choices=[arm for arms in LEVERS.values() for arm in arms], help=argparse.SUPPRESS)
    ap.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.core, a.warmup, a.steps)))
        return {}
    if not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("bench_step_ab needs Linux and 2 usable cores (one per arm)")
    base, cand = arms = LEVERS[a.lever]
    out_path = a.out or f"reports/benchmarks/{a.lever}.json"
    cores = sorted(os.sched_getaffinity(0))[:2]
    rounds = []
    for r in range(a.rounds):
        pair = {arm: _launch(arm, cores[(i + r) % 2], a.warmup, a.steps) for i, arm in enumerate(arms)}
        res = {}
        for arm, proc in pair.items():
            out, _ = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"the {arm} worker failed (exit {proc.returncode})")
            res[arm] = json.loads(out.strip().splitlines()[-1])
        med = {arm: statistics.median(res[arm]["step_s"]) for arm in arms}
        ratio = med[cand] / med[base]
        print(f"round {r}: " + " | ".join(
            f"{arm} {med[arm]:.4f} s (core {res[arm]['core']}, {res[arm]['minor_faults_per_step']:.0f} faults, kernel "
            f"{res[arm]['kernel_s_per_step'] * 1e3:.1f} ms)" for arm in arms) + f" | ratio {ratio:.3f}", flush=True)
        rounds.append({"median_step_s": med, f"ratio_{cand}_over_{base}": ratio, "runs": res})
    ratios = [rd[f"ratio_{cand}_over_{base}"] for rd in rounds]
    from hierars.comparison import paired_difference  # Student's t on the per-round differences

    diff = paired_difference([rd["median_step_s"][cand] for rd in rounds],
                             [rd["median_step_s"][base] for rd in rounds])
    report = {
        "what": "default training step (FPN-64 convnext_atto BHCCM+HSC+AdamW, 8x10x64x64, 1 thread), CPU time",
        "lever": a.lever, "baseline": base, "candidate": cand,
        "machine": platform.machine(), "python": platform.python_version(), "glibc": platform.libc_ver()[1],
        "rounds": a.rounds, "steps": a.steps, "warmup": a.warmup,
        f"median_ratio_{cand}_over_{base}": statistics.median(ratios), "ratios": ratios,
        f"step_difference_{cand}_minus_{base}_s": {"mean": diff.mean, "lo95": diff.lo, "hi95": diff.hi,
                                                   "verdict": diff.verdict_as("slower", "faster")},
        "median_step_s": {arm: statistics.median(rd["median_step_s"][arm] for rd in rounds) for arm in arms},
        "kernel_s_per_step": {arm: statistics.median(rd["runs"][arm]["kernel_s_per_step"] for rd in rounds)
                              for arm in arms},
        "minor_faults_per_step": {arm: statistics.median(rd["runs"][arm]["minor_faults_per_step"] for rd in rounds)
                                  for arm in arms},
        "per_round": rounds,
    }
    print(f"median over {a.rounds} rounds: {base} {report['median_step_s'][base]:.4f} s, {cand} "
          f"{report['median_step_s'][cand]:.4f} s, ratio {cand}/{base} {statistics.median(ratios):.3f}"
          f" (range {min(ratios):.3f}-{max(ratios):.3f}); {cand} - {base} per step, paired by round: "
          f"{diff.format(scale=1e3, digits=1, verdicts=('slower', 'faster'))} ms")
    from hierars.atomic import atomic_write_text

    atomic_write_text(ROOT / out_path, json.dumps(report, indent=1))  # an absolute --out stays as it is
    return report


if __name__ == "__main__":
    main()

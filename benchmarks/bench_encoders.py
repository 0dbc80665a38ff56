"""Could a cheaper encoder buy the default pipeline its convergence budget? (issue 15)

The default's comparisons flatten at 600-900 iterations (fidelity study), 2.5-3.75x the default's 240; on 2 cores
that only fits the 20-minute target if a training step gets that much cheaper. This measures one flat training step
(the pipeline's flat model, ``hierars.models.build_model("fpn", E, 10, mm5b, head="flat")``, random init, AdamW,
level CE as in training) at the default profile's shape (batch 8 of
10 x 64², 64-channel FPN) for several timm encoders, interleaved (side by side), one torch thread, CPU time of the
thread (``time.thread_time``: not inflated by other processes), and prints each one's cost relative to the default
``tu-convnext_atto``.

Usage (from the repository root)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_encoders.py [--steps 11] [--encoders E ...]

Writes ``reports/benchmarks/encoders.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from timing import median_times, random_batch, summary, train_step  # noqa: E402

from hierars import Hierarchy  # noqa: E402
from hierars.atomic import atomic_write_text  # noqa: E402
from hierars.losses import HierarchicalCELoss  # noqa: E402
from hierars.models import build_model  # noqa: E402

DEFAULT = "tu-convnext_atto"
ENCODERS = [DEFAULT, "tu-mobilenetv2_050", "tu-mobilenetv3_small_100", "tu-regnetx_002", "tu-resnet10t",
            "tu-efficientnet_b0", "tu-resnet18"]  # fmt: skip


def step_fn(encoder: str, h: Hierarchy, batch: int, size: int, bands: int, channels: int):
    """A closure running one training step of the pipeline's flat FPN with ``encoder`` (as ``flat_ce`` in
    ``bench_bhccm.bench_train_step``); and its parameter count."""
    x, y = random_batch(h, batch, bands, size)
    torch.manual_seed(0)
    model = build_model("fpn", encoder, bands, h, head="flat", decoder_channels=channels).train()
    step = train_step(model, HierarchicalCELoss(), x, y, lr=6e-4)
    return step, sum(p.numel() for p in model.parameters())


def bench(encoders: list[str], batch: int = 8, size: int = 64, warmup: int = 3, steps: int = 11) -> dict:
    """Interleaved step times of a flat FPN-64 per encoder (1 thread, thread CPU time) and each one's ratio to
    ``tu-convnext_atto``: ``{"setting": ..., "steps": {encoder: {median_s, q1_s, q3_s, n, params, ratio_to_default}}}``."""
    torch.set_num_threads(1)
    h = Hierarchy.builtin("mm5b")
    encoders = [DEFAULT] + [e for e in encoders if e != DEFAULT]
    fns, params = {}, {}
    for enc in encoders:
        fns[enc], params[enc] = step_fn(enc, h, batch, size, bands=10, channels=64)
    times = median_times(fns, warmup=warmup, steps=steps, clock=time.thread_time)
    rows = {enc: {**summary(ts), "params": params[enc]} for enc, ts in times.items()}
    for row in rows.values():
        row["ratio_to_default"] = row["median_s"] / rows[DEFAULT]["median_s"]
    return {"setting": {"arch": "fpn", "head": "flat", "loss": "level CE", "tree": h.name, "decoder_channels": 64, "batch": batch, "size": size, "bands": 10,
                        "threads": 1, "clock": "thread_time", "interleaved": True},
            "torch": torch.__version__, "steps": rows,
            "needed_ratio": "0.27-0.40 (240 / 600-900 iterations, fidelity study)"}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoders", nargs="+", default=ENCODERS)
    ap.add_argument("--steps", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=BENCH.parent / "reports" / "benchmarks" / "encoders.json")
    args = ap.parse_args(argv)
    result = bench(args.encoders, args.batch, args.size, args.warmup, args.steps)
    for enc, row in result["steps"].items():
        print(f"{enc:28s} {1000 * row['median_s']:7.1f} ms  x{row['ratio_to_default']:.2f}  {row['params'] / 1e6:.2f} M")
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

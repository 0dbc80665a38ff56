"""Real-data check on GID-15 (3/5/15 tree): flat + lifting vs BHCCM + HSC (+ JSPS), same budget, several seeds.

Reads ``../shared/data/gid15`` in place (``hierars.data.build_dataset(..., source="gid15")``: 575 train /
192 val patches, stratified by scene folder), trains both models from random init with the same encoder,
decoder, schedule, batch and seeds (``hierars.training.train_run``), and writes

    models/gid15_compare/<run>/seed<k>/{ckpt.pt, metrics.json, curve.csv}
    reports/gid15_compare/metrics/<run>.json, reports/gid15_compare/plots/<run>_curve.csv
    reports/gid15_compare.json      settings, per-seed and mean ± half-range per-level mIoU + consistency

Defaults: UPerNet ``tu-convnext_atto`` (random init) with a 64-channel decoder, AdamW 6e-4, poly LR, 280
iterations of batch 8 (about 4 epochs), flips/rot90 augmentation, seeds 0 and 1, evaluation (argmax and JSPS)
after the last iteration. ``--decoder-channels 0`` gives smp's 256-channel UPerNet decoder (design.md's reference).

Usage (from the repo root; on this 2-core machine 1.1 s (flat) / 1.4 s (BHCCM) per iteration with 2 threads)::

    nohup .venv/bin/python scripts/gid15_compare.py --jobs 2 > /tmp/gid15_compare.log 2>&1 &

With ``--jobs 2`` the two seeds train side by side in child processes with one thread each (1.64 / 2.05 s per
iteration each, about 17 min for all four trainings vs about 23 min one after the other); the parent then
aggregates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hierars.atomic import atomic_write_text  # noqa: E402
from hierars.data import build_dataset  # noqa: E402
from hierars.project import resolve_path  # noqa: E402
from hierars.training import TrainConfig, train_run  # noqa: E402

RUNS = {
    "flat": {"head": "flat", "loss": "ce"},
    "bhccm_hsc": {"head": "bhccm", "fusion": "bidirectional", "loss": "hsc", "mu": 1.0},
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "gid15"))
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--arch", default="upernet")
    ap.add_argument("--encoder", default="tu-convnext_atto")
    ap.add_argument("--decoder-channels", type=int, default=64,
                    help="decoder width; 0 = smp's default (UPerNet: 256, design.md's reference, ~4x slower on CPU)")
    ap.add_argument("--iterations", type=int, default=280)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--dropout", type=float, default=0.1, help="head dropout")
    ap.add_argument("--no-augment", action="store_true", help="no flips / rot90")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=1,
                    help="train this many seeds at once in child processes (threads split between them), "
                         "then aggregate (2 jobs x 1 thread: ~1.3x faster than 1 x 2 threads on this 2-core machine)")
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--models-dir", default="models/gid15_compare")
    ap.add_argument("--reports-dir", default="reports/gid15_compare")
    ap.add_argument("--out", default="reports/gid15_compare.json")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.jobs < 1:
        ap.error("--jobs must be >= 1")
    if a.jobs > 1 and len(a.seeds) > 1:
        _train_seeds_in_parallel(a)  # the loop below then finds every run finished and only aggregates

    torch.set_num_threads(a.threads)
    data = resolve_path(a.data)
    train_ds = build_dataset(data, "train", source="gid15")
    val_ds = build_dataset(data, "val", source="gid15")
    h = train_ds.hierarchy
    print(f"GID-15 {data}: {len(train_ds)} train / {len(val_ds)} val, tree {h.name} {h.num_classes}", flush=True)
    base = dict(arch=a.arch, encoder=a.encoder, decoder_channels=a.decoder_channels or None, iterations=a.iterations,
                batch_size=a.batch_size, optimizer="adamw", lr=a.lr, weight_decay=a.weight_decay, poly_power=1.0,
                dropout=a.dropout, augment=not a.no_augment, eval_interval=0, jsps=True, seeds=a.seeds, num_workers=a.num_workers,
                num_threads=a.threads, source="gid15", data_dir=str(data), progress=not a.no_progress)
    report: dict = {"data": str(data), "train_samples": len(train_ds), "val_samples": len(val_ds),
                    "hierarchy": h.name, "num_classes": list(h.num_classes), "settings": base,
                    "command": " ".join([sys.executable, *sys.argv]), "runs": {}}
    out = resolve_path(a.out)
    models_dir, reports_dir = resolve_path(a.models_dir), resolve_path(a.reports_dir)
    # seed-major order, so that an interrupted comparison still has both runs for the first seeds;
    # finished (seed, run) pairs are not retrained (fit resumes from their final checkpoint)
    for k in range(1, len(a.seeds) + 1):
        for run in a.runs:
            cfg = TrainConfig(**{**base, **RUNS[run], "seeds": a.seeds[:k]})
            t0 = time.perf_counter()
            res = train_run(run, cfg, h, train_ds, val_ds, models_dir=models_dir, reports_dir=reports_dir)
            agg = res["aggregate"]
            report["runs"][run] = {"config": RUNS[run], "seeds": a.seeds[:k], "per_seed": res["per_seed"],
                                   "aggregate": agg, "wall_seconds_last_call": time.perf_counter() - t0}
            atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    for run in a.runs:
        agg = report["runs"][run]["aggregate"]
        suffix = "_jsps" if run != "flat" else ""
        for sfx, label in (("", "argmax"), (suffix, "JSPS" if suffix else "lifted")):
            levels = " / ".join(f"{100 * agg[f'mIoU_L{lvl}{sfx}']:.1f}±{100 * agg[f'mIoU_L{lvl}{sfx}_hr']:.1f}"
                                for lvl in range(h.num_levels, 0, -1))
            print(f"[{run} {label}] L3/L2/L1 mIoU {levels}; consistency "
                  f"{100 * agg[f'consistency{sfx}']:.1f}±{100 * agg[f'consistency{sfx}_hr']:.1f}%; "
                  f"{agg['seconds_per_iter']:.2f} s/iter; {len(a.seeds)} seeds", flush=True)
    print(f"wrote {out}")
    return report


def _train_seeds_in_parallel(a: argparse.Namespace) -> None:
    """Train each seed in its own child process of this script, ``a.jobs`` at a time; raise if one fails."""
    threads = max(1, a.threads // a.jobs)
    common = ["--data", a.data, "--runs", *a.runs, "--arch", a.arch, "--encoder", a.encoder,
              "--decoder-channels", str(a.decoder_channels), "--iterations", str(a.iterations),
              "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--weight-decay", str(a.weight_decay),
              "--dropout", str(a.dropout), "--threads", str(threads), "--num-workers", str(a.num_workers),
              "--models-dir", a.models_dir, "--reports-dir", a.reports_dir, "--no-progress",
              *(["--no-augment"] if a.no_augment else [])]
    pending, running = list(a.seeds), []
    while pending or running:
        while pending and len(running) < a.jobs:
            seed = pending.pop(0)
            out = Path(tempfile.gettempdir()) / f"gid15_compare_seed{seed}_{os.getpid()}.json"
            cmd = [sys.executable, __file__, *common, "--seeds", str(seed), "--out", str(out)]
            print(f"seed {seed}: {' '.join(cmd)}", flush=True)
            running.append((seed, subprocess.Popen(cmd, cwd=ROOT), out))
        seed, proc, out = running.pop(0)
        if proc.wait() != 0:
            for _, other, _ in running:
                other.terminate()
            raise RuntimeError(f"seed {seed} failed (exit code {proc.returncode})")
        out.unlink(missing_ok=True)  # the per-seed results live in models_dir; the parent aggregates them


if __name__ == "__main__":
    main()

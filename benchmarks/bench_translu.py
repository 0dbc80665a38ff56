"""Benchmark TransLU against the single-branch baseline, side by side in one process (CPU).

For each setting, the models are built from one source model (mm5b tree, random weights: timing does not
depend on training) and trained on the same batch:

- ``single``: the single-branch fine-tuned baseline (Branch 1 alone: source encoder, new decoder, BHCCM for
  the target tree) with ``HSCLoss`` (μ = 1) — what TransLU is compared with;
- ``cdks``: TransLU with CDKS only (ground-truth HSC loss);
- ``cdsa``: TransLU with CDSA only (hybrid-target loss);
- ``translu``: full TransLU (CDKS + CDSA, ``TransLULoss`` with μ = 1).

Measured:

1. **Training step time**: forward + loss + backward + AdamW step (all parameters handed to the
   optimiser; the frozen Branch 2 has no gradients). The models' steps are interleaved (single, cdks, cdsa,
   translu, single, ...) so the shared CPU's load affects all alike; warm-up steps, then the median. The
   reported ratio is median(translu) / median(single). Target: <= 2.0.
2. **Peak training-step memory**: the peak of the running sum of CPU allocation / free events that
   ``torch.profiler`` (``profile_memory=True``) records during one training step, i.e. the peak memory
   allocated *by the step* on top of what existed before it (weights, optimiser state from the warm-up,
   the input batch). It covers activations kept for backward, gradients and temporaries; it does not count
   the weights themselves (TransLU holds both branches' weights: see ``params``).

Settings: the default CPU profile (FPN, ``tu-convnext_atto``, decoder 64, 10 bands, 64×64 tiles, batch 8,
mm5b → crop10m) and a UPerNet 224² RGB setting (``tu-convnext_atto``, smp's default decoder width,
3 bands, batch 8, mm5b → whdld; fewer steps).

Usage (from the repo root)::

    .venv/bin/python benchmarks/bench_translu.py            # both settings, a few minutes on 2 cores
    .venv/bin/python benchmarks/bench_translu.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import median_times, summary, write_report  # noqa: E402  (benchmarks/timing.py)

from hierars import Hierarchy  # noqa: E402
from hierars.losses import HSCLoss  # noqa: E402
from hierars.models import build_model  # noqa: E402
from hierars.transfer import TransLU, TransLULoss, finetune_model  # noqa: E402

#: (name, arch, encoder, in_channels, size, decoder_channels, target tree, mapping, steps factor)
SETTINGS = [
    ("fpn64_convnext_atto_10x64", "fpn", "tu-convnext_atto", 10, 64, 64, "crop10m", "mm5b_to_crop10m", 1.0),
    ("upernet_convnext_atto_3x224", "upernet", "tu-convnext_atto", 3, 224, None, "whdld", "mm5b_to_whdld", 0.4),
]


def _peak_step_bytes(step: Callable[[], None]) -> int:
    """Peak of the running sum of profiler memory events during one call (allocations +, frees −), bytes."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    cur = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def _train_step(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_setting(name: str, arch: str, encoder: str, in_ch: int, size: int, dec: int | None, target: str,
                  mapping: str, batch: int, warmup: int, steps: int) -> dict:
    src_tree, tgt_tree = Hierarchy.builtin("mm5b"), Hierarchy.builtin(target)
    torch.manual_seed(0)
    source = build_model(arch, encoder, in_ch, src_tree, decoder_channels=dec).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_ch, size, size, generator=g)
    leaf = torch.randint(0, tgt_tree.num_classes[-1], (batch, size, size), generator=g)
    y = tgt_tree.lift_all(leaf).permute(1, 0, 2, 3).contiguous()

    single = finetune_model(source, tgt_tree)
    models: dict[str, tuple[nn.Module, nn.Module]] = {"single": (single, HSCLoss(tgt_tree))}
    for key, cdks, cdsa in (("cdks", True, False), ("cdsa", False, True), ("translu", True, True)):
        m = TransLU(source, tgt_tree, mapping, cdks=cdks, cdsa=cdsa)
        models[key] = (m, TransLULoss(m, mu=1.0, hybrid=cdsa))
    steps_fns = {k: _train_step(m, loss, x, y) for k, (m, loss) in models.items()}
    times = median_times(steps_fns, warmup, steps)
    res = {k: summary(v) for k, v in times.items()}
    base = res["single"]["median_s"]
    peaks = {k: _peak_step_bytes(fn) for k, fn in steps_fns.items()}
    translu = models["translu"][0]
    params = {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in models.items()}
    trainable = {k: sum(p.numel() for p in m.parameters() if p.requires_grad) for k, (m, _) in models.items()}
    ratio = res["translu"]["median_s"] / base
    return {
        "arch": arch, "encoder": encoder, "in_channels": in_ch, "size": size, "batch": batch,
        "decoder_channels": dec or "smp default", "source_tree": src_tree.name, "target_tree": tgt_tree.name,
        "mapping": mapping, "biu_count": translu.cdks.num_units, "biu_points": [p.name for p in translu.cdks.points],
        "params": params, "trainable_params": trainable,
        "step": res, "step_ratio_over_single": {k: res[k]["median_s"] / base for k in res},
        "peak_step_MiB": {k: v / 2**20 for k, v in peaks.items()},
        "peak_step_ratio_over_single": {k: v / peaks["single"] for k, v in peaks.items()},
        "ratio_translu_over_single": ratio, "target_ratio": 2.0, "meets_target": ratio <= 2.0,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model (scaled down for UPerNet 224²)")
    ap.add_argument("--settings", nargs="*", default=[s[0] for s in SETTINGS], choices=[s[0] for s in SETTINGS])
    ap.add_argument("--quick", action="store_true", help="1 warm-up, 2 steps, batch 2 (smoke test)")
    ap.add_argument("--out", default="reports/benchmarks/translu.json")
    a = ap.parse_args(argv)
    if a.quick:
        a.warmup, a.steps, a.batch = 1, 2, 2
    torch.set_num_threads(a.threads)
    report: dict = {"threads": a.threads, "torch": torch.__version__, "machine": platform.machine(),
                    "quick": a.quick, "memory_measure": "peak of torch.profiler CPU allocation events during one "
                    "training step (extra memory allocated by the step; weights excluded)", "settings": {}}
    for name, arch, enc, in_ch, size, dec, target, mapping, factor in SETTINGS:
        if name not in a.settings:
            continue
        steps = max(2, round(a.steps * factor))
        r = bench_setting(name, arch, enc, in_ch, size, dec, target, mapping, a.batch, a.warmup, steps)
        report["settings"][name] = r
        print(f"[{name}] single {r['step']['single']['median_s']:.3f}s/step; step ratios "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["step_ratio_over_single"].items())
              + f" (TransLU target <= 2.0: {'ok' if r['meets_target'] else 'MISSED'}); peak step memory "
              + ", ".join(f"{k} {v:.0f} MiB" for k, v in r["peak_step_MiB"].items())
              + f" (TransLU ratio {r['peak_step_ratio_over_single']['translu']:.2f}); {r['biu_count']} BIUs",
              flush=True)
    write_report(report, a.out)
    return report


if __name__ == "__main__":
    main()

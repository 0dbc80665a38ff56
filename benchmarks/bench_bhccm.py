"""Benchmark BHCCM + HSC against the flat baseline, side by side in one process (CPU).

Measures, and writes to ``reports/benchmarks/bhccm.json``:

1. **Training step time** (forward + loss + backward + AdamW step, training's fused AdamW) of BHCCM + HSC vs flat + CE with the
   same encoder, decoder and batch; the two models' steps are interleaved (flat, bhccm, flat, ...) so a
   shared CPU's load affects both alike. Warm-up steps, then the median of N steps. Target: ratio <= 1.10.
   By default with 1 torch thread, timed with ``time.thread_time`` (the CPU time of the one thread doing
   the work, which other processes on a shared machine inflate far less than wall time); ``--threads 2``
   times wall clock instead. Settings: the pipeline's default (``fpn64_convnext_atto_10x64``: FPN with 64
   decoder channels, convnext_atto, 10 bands, 64×64 tiles, as in ``params.yaml``), a 128-px variant, and
   design.md's UPerNet 224². Also timed: forward + loss alone (so backward + step = step − forward), and,
   forward + backward on fixed decoder features: the head alone (at decoder resolution), head + smp's ×4
   upsampling, + CE, and BHCCM + HSC, to show where the extra time goes.
2. **JSPS time as a fraction of the model's forward pass** at 512×512, 18 paths (mm5b tree). Target <= 10%.
3. **Peak memory of the path scores** B·P·H·W: the analytic size (4 bytes each) and the measured peak of
   the allocations made by ``path_scores`` (inference) and by the path-KL term forward + backward
   (training), from ``torch.profiler`` memory events (CPU; no CUDA needed).

The process uses the malloc settings that training uses (:func:`hierars.training.allocator.retain_freed_memory`,
freed tensors kept instead of unmapped); ``--system-malloc`` leaves glibc's defaults, to measure what they cost.

Usage (from the repo root)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_bhccm.py   # all settings, 1 thread, ~5-8 min
    .venv/bin/python benchmarks/bench_bhccm.py --quick         # a few steps, for a smoke run
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_bhccm.py --settings fpn64_convnext_atto_10x64 \
        --system-malloc --out /tmp/system.json                 # the default step with glibc's own malloc settings
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
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import median_times, random_batch, summary, train_step, training_optimizer, write_report  # noqa: E402  (benchmarks/timing.py)

from hierars import Hierarchy  # noqa: E402
from hierars.decoding import jsps, predict_levels  # noqa: E402
from hierars.losses import HierarchicalCELoss, HSCLoss, path_kl, path_scores  # noqa: E402
from hierars.models import build_model  # noqa: E402
from hierars.training.allocator import retain_freed_memory  # noqa: E402

#: (name, arch, encoder, in_channels, size, decoder_channels): the pipeline's default CPU profile (64-px
#: tiles, params.yaml ``train``), its 128-px variant, then design.md's UPerNet reference (1.45 s flat /
#: 1.69 s BHCCM+HSC measured there, ratio 1.17).
TRAIN_SETTINGS = [
    ("fpn64_convnext_atto_10x64", "fpn", "tu-convnext_atto", 10, 64, 64),
    ("fpn64_convnext_atto_10x128", "fpn", "tu-convnext_atto", 10, 128, 64),
    ("upernet_convnext_atto_3x224", "upernet", "tu-convnext_atto", 3, 224, None),
]


def bench_train_step(h: Hierarchy, arch: str, encoder: str, in_ch: int, size: int, dec: int | None,
                     batch: int, warmup: int, steps: int, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Flat + CE vs BHCCM + HSC: whole training step, forward + loss alone, and head + loss alone.

    ``clock``: ``time.perf_counter`` (wall) or ``time.thread_time`` (with 1 torch thread).
    """
    x, y = random_batch(h, batch, in_ch, size)
    setups = {}
    for name, head, loss in (("flat_ce", "flat", HierarchicalCELoss()), ("bhccm_hsc", "bhccm", HSCLoss(h))):
        torch.manual_seed(0)
        model = build_model(arch, encoder, in_ch, h, head=head, decoder_channels=dec).train()
        step = train_step(model, loss, x, y, lr=1e-4)

        def forward(model=model, loss=loss) -> None:
            loss(model(x), y)  # the graph is built (as in a step) and dropped

        setups[name] = (model, step, forward)
    times = median_times({k: v[1] for k, v in setups.items()}, warmup, steps, clock)
    res = {k: summary(v) for k, v in times.items()}
    fwd = median_times({k: v[2] for k, v in setups.items()}, 1, max(3, steps // 2), clock)
    # the optimiser update alone on the BHCCM model's gradients of its last step: training's fused AdamW
    # against the same optimiser with PyTorch's for-loop (the default on CPU before build_optimizer asked for fused)
    bh = setups["bhccm_hsc"][0]
    opts = {"fused": training_optimizer(bh, lr=1e-4), "for_loop": training_optimizer(bh, lr=1e-4, fused=False)}
    optimizer_s = {k: statistics.median(v) for k, v in
                   median_times({k: o.step for k, o in opts.items()}, 2, max(3, steps // 2), clock).items()}
    forward_s = {k: statistics.median(v) for k, v in fwd.items()}
    ratio = res["bhccm_hsc"]["median_s"] / res["flat_ce"]["median_s"]
    params = {k: sum(p.numel() for p in m.parameters()) for k, (m, _, _) in setups.items()}

    # breakdown: segmentation head (+ smp upsampling) + loss, forward + backward, on fixed decoder features
    flat_model, bh_model = setups["flat_ce"][0], setups["bhccm_hsc"][0]
    with torch.no_grad():
        feats = bh_model.decoder(bh_model.encoder(x))
    feats = feats.detach().requires_grad_(True)

    def head_loss(model, loss, upsample: bool = True) -> Callable[[], None]:
        head = model.segmentation_head

        def run() -> None:
            feats.grad = None
            model.zero_grad(set_to_none=True)
            out = head(feats) if upsample else head.head(feats)
            (sum(z.float().mean() for z in out) if loss is None else loss(out, y)).backward()
        return run

    parts = median_times({
        "flat_head_only": head_loss(flat_model, None, upsample=False),
        "bhccm_head_only": head_loss(bh_model, None, upsample=False),
        "flat_head_upsample": head_loss(flat_model, None),
        "bhccm_head_upsample": head_loss(bh_model, None),
        "flat_ce": head_loss(flat_model, HierarchicalCELoss()),
        "bhccm_ce": head_loss(bh_model, HierarchicalCELoss()),
        "bhccm_hsc": head_loss(bh_model, HSCLoss(h)),
    }, warmup=2, steps=max(3, steps // 2), clock=clock)
    breakdown = {k: statistics.median(v) for k, v in parts.items()}
    b, extra = breakdown, res["bhccm_hsc"]["median_s"] - res["flat_ce"]["median_s"]
    # where BHCCM + HSC's extra step time goes (each part: BHCCM's minus flat's, forward + backward)
    split = {"head": b["bhccm_head_only"] - b["flat_head_only"],  # the level heads and the fusion
             "upsampling": (b["bhccm_head_upsample"] - b["bhccm_head_only"])  # every level's logits, not one
             - (b["flat_head_upsample"] - b["flat_head_only"]),
             "loss": (b["bhccm_hsc"] - b["bhccm_head_upsample"]) - (b["flat_ce"] - b["flat_head_upsample"])}
    explained = b["bhccm_hsc"] - b["flat_ce"]  # = head + upsampling + loss
    split["rest"] = extra - explained  # optimiser on the extra tensors, zero_grad, noise of two medians
    return {
        "arch": arch, "encoder": encoder, "in_channels": in_ch, "size": size, "batch": batch,
        "decoder_channels": dec or "smp default", "decoder_feature_shape": list(feats.shape),
        "params": params, "param_overhead": params["bhccm_hsc"] - params["flat_ce"],
        "clock": clock.__name__, "threads": torch.get_num_threads(),
        "step": res, "ratio_bhccm_hsc_over_flat": ratio, "target_ratio": 1.10, "meets_target": ratio <= 1.10,
        "forward_and_loss_s": forward_s,
        "optimizer_s": optimizer_s,
        "backward_and_step_s": {k: res[k]["median_s"] - forward_s[k] for k in forward_s},
        "head_plus_loss_fwd_bwd_s": breakdown,
        "extra_time_s": extra,
        "extra_time_split_s": split,
        "extra_time_explained_by_head_and_loss_s": explained,
    }


def bench_jsps(h: Hierarchy, size: int, batch: int, warmup: int, steps: int) -> dict:
    """JSPS vs the forward pass of a BHCCM UPerNet (convnext_atto) at ``size``², mm5b (18 paths)."""
    torch.manual_seed(0)
    model = build_model("upernet", "tu-convnext_atto", 3, h, head="bhccm").eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        logits = model(x)
    assert all(tuple(z.shape[-2:]) == (size, size) for z in logits), [z.shape for z in logits]

    def fwd() -> None:
        with torch.no_grad():
            model(x)

    def sel() -> None:
        jsps(logits, h)

    def argmax() -> None:
        predict_levels(logits, h, mode="argmax")  # the package's per-level argmax decoding

    t = median_times({"forward": fwd, "jsps": sel, "per_level_argmax": argmax}, warmup, steps)
    med = {k: statistics.median(v) for k, v in t.items()}
    frac = med["jsps"] / med["forward"]
    return {"model": "upernet tu-convnext_atto + bhccm", "size": size, "batch": batch,
            "num_paths": int(h.paths.shape[0]), "median_s": med, "jsps_fraction_of_forward": frac,
            "target_fraction": 0.10, "meets_target": frac <= 0.10}


def _peak_from_profiler(prof: profile) -> int:
    """Peak of the running sum of CPU memory events (allocations positive, frees negative), in bytes.

    Reads the raw kineto event list (``prof.events()`` keeps only memory events not attributed to an op).
    Memory allocated before profiling started is not counted: this is the peak *extra* memory.
    """
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    cur = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def bench_path_memory(h: Hierarchy, size: int, batch: int) -> dict:
    """Analytic and measured memory of the path scores s (B×P×H×W) for mm5b at ``size``²."""
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(batch, n, size, size, generator=g) for n in h.num_classes]
    leaf = torch.randint(0, h.num_classes[-1], (batch, size, size), generator=g)
    y = torch.stack([h.lift(leaf, lvl) for lvl in range(h.num_levels)], dim=1)
    p = int(h.paths.shape[0])
    analytic = batch * p * size * size * 4
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof_inf:
        s = path_scores(logits, h.paths)
    del s
    peak_inf = _peak_from_profiler(prof_inf)
    leaves = [z.clone().requires_grad_(True) for z in logits]
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof_train:
        path_kl(leaves, y, h).backward()
    peak_train = _peak_from_profiler(prof_train)
    logits_bytes = sum(z.numel() * 4 for z in logits)
    return {"size": size, "batch": batch, "num_paths": p, "path_scores_bytes_analytic": analytic,
            "path_scores_MiB_analytic": analytic / 2**20,
            "peak_MiB_path_scores_inference": peak_inf / 2**20,
            "peak_MiB_path_kl_forward_backward": peak_train / 2**20,
            "train_peak_over_analytic": peak_train / analytic,
            "logits_MiB": logits_bytes / 2**20}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (default 1: step times are then thread_time, else wall time)")
    ap.add_argument("--batch", type=int, default=8, help="training batch size")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model")
    ap.add_argument("--jsps-size", type=int, default=512)
    ap.add_argument("--jsps-batch", type=int, default=1)
    ap.add_argument("--mem-batch", type=int, default=8)
    ap.add_argument("--settings", nargs="*", default=[s[0] for s in TRAIN_SETTINGS],
                    choices=[s[0] for s in TRAIN_SETTINGS])
    ap.add_argument("--quick", action="store_true", help="1 warm-up, 3 steps, small sizes (smoke test)")
    ap.add_argument("--out", default="reports/benchmarks/bhccm.json")
    ap.add_argument("--system-malloc", action="store_true",
                    help="leave glibc malloc as it is (default: the thresholds training sets, "
                         "hierars.training.allocator)")
    a = ap.parse_args(argv)
    allocator = "system" if a.system_malloc else ("retain_freed_memory" if retain_freed_memory() else "system")
    if a.quick:
        a.warmup, a.steps, a.jsps_size, a.mem_batch, a.batch = 1, 3, 128, 2, 2
    torch.set_num_threads(a.threads)
    clock = time.thread_time if a.threads == 1 else time.perf_counter
    h = Hierarchy.builtin("mm5b")
    report: dict = {"hierarchy": h.name, "num_classes": list(h.num_classes), "threads": a.threads,
                    "step_clock": clock.__name__, "malloc": allocator,
                    "torch": torch.__version__, "machine": platform.machine(), "cpu_count": torch.get_num_threads(),
                    "quick": a.quick, "train_step": {}}
    for name, arch, enc, in_ch, size, dec in TRAIN_SETTINGS:
        if name not in a.settings:
            continue
        size = min(size, 64) if a.quick else size
        r = bench_train_step(h, arch, enc, in_ch, size, dec, a.batch, a.warmup, a.steps, clock)
        report["train_step"][name] = r
        print(f"[train step, {clock.__name__}, malloc {allocator}] {name}: flat {r['step']['flat_ce']['median_s']:.3f}s, "
              f"bhccm+hsc {r['step']['bhccm_hsc']['median_s']:.3f}s, ratio {r['ratio_bhccm_hsc_over_flat']:.3f} "
              f"(target <= 1.10: {'ok' if r['meets_target'] else 'MISSED'}); AdamW update fused "
              f"{r['optimizer_s']['fused']:.3f}s, for-loop {r['optimizer_s']['for_loop']:.3f}s; head+loss fwd/bwd: "
              + ", ".join(f"{k} {v:.3f}s" for k, v in r["head_plus_loss_fwd_bwd_s"].items()), flush=True)
    r = bench_jsps(h, a.jsps_size, a.jsps_batch, a.warmup, a.steps)
    report["jsps"] = r
    print(f"[jsps] {r['size']}² x{r['batch']}, P={r['num_paths']}: forward {r['median_s']['forward']:.3f}s, "
          f"jsps {r['median_s']['jsps']:.4f}s ({100 * r['jsps_fraction_of_forward']:.1f}% of forward, target <= 10%: "
          f"{'ok' if r['meets_target'] else 'MISSED'}); per-level argmax {r['median_s']['per_level_argmax']:.4f}s",
          flush=True)
    r = bench_path_memory(h, a.jsps_size, a.mem_batch)
    report["path_scores_memory"] = r
    print(f"[memory] B={r['batch']} P={r['num_paths']} {r['size']}²: s = {r['path_scores_MiB_analytic']:.1f} MiB "
          f"analytic; measured peak: path_scores {r['peak_MiB_path_scores_inference']:.1f} MiB, path-KL fwd+bwd "
          f"{r['peak_MiB_path_kl_forward_backward']:.1f} MiB ({r['train_peak_over_analytic']:.2f}x s)", flush=True)
    write_report(report, a.out)
    return report


if __name__ == "__main__":
    main()

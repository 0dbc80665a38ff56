"""The benchmark suite: every cost figure of the project measured in one run, written to ``reports/bench.json``.

Each figure is a ratio of two things measured side by side in this run (interleaved steps, same inputs, same
threads), or a scaling curve; absolute times only give the scale. Sections (functions below):

1. ``bhccm_vs_flat`` — parameters, forward FLOPs (``torch.utils.flop_counter``) and training-step time of BHCCM +
   HSC vs the flat head + CE, at the default profile (FPN-64, ``tu-convnext_atto``, 10 × 128²) and at UPerNet
   3 × 224² (``benchmarks/bench_bhccm.py``).
2. ``jsps`` — JSPS decoding time vs per-level argmax and vs the model's forward pass (``bench_bhccm.py``).
3. ``translu`` — TransLU vs the single fine-tuned branch: step time and step memory (``bench_translu.py``).
4. ``retrieval`` — two-stage HIR query latency vs archive size, exact and IVF (``bench_retrieval.py``).
5. ``sliding_window`` — :class:`hierars.prediction.SlidingWindowPredictor` throughput (megapixels/s) and its bare
   forward passes' share of the time, and peak RSS, per window size (in a child process, windows smallest first,
   so the RSS high-water mark after each size is that size's peak).
6. ``data_loading`` — time to load + augment a training batch (GeoTIFF tiles from a generated prepared folder,
   ``SeededSamples`` + ``pad_collate`` + ``SegAugment``) vs the training step on that batch.
7. ``encoders`` — one flat training step per timm encoder relative to the default ``tu-convnext_atto``
   (``benchmarks/bench_encoders.py``): could a cheaper encoder buy the default its convergence budget?
8. ``hssn_loss`` — the HSSN baseline's tree-min loss against its formulation before the rewrite without boolean
   masks, and the HSSN training step against the flat and BHCCM + HSC steps (``benchmarks/bench_hssn_loss.py``).
9. ``head_bound`` — the BHCCM + HSC / flat step ratio at the FPN-64 default with the head's weight-side work
   removed (ready-made packed weights: the bound of any re-layout of its parameters) and with HSC's path term
   removed, beside the current code (``benchmarks/bench_head_bound.py``).

Usage (from the repository root)::

    .venv/bin/python benchmarks/run.py            # full: ~10-15 min on one core of an idle machine
    .venv/bin/python benchmarks/run.py --quick    # smoke run (< 1 min): small sizes, few steps

Times measured on a shared machine are pessimistic and noisy (the ratios less so: both sides share the load).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import bench_bhccm  # noqa: E402
import bench_encoders  # noqa: E402
import bench_head_bound  # noqa: E402
import bench_hssn_loss  # noqa: E402
import bench_retrieval  # noqa: E402
import bench_translu  # noqa: E402
from timing import median_times, summary  # noqa: E402

from hierars import Hierarchy  # noqa: E402
from hierars.atomic import atomic_write_text  # noqa: E402
from hierars.losses import HSCLoss  # noqa: E402
from hierars.models import build_model  # noqa: E402
from hierars.prediction import SlidingWindowPredictor  # noqa: E402
from hierars.project import resolve_path  # noqa: E402


def _flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return int(fc.get_total_flops())


# ------------------------------------------------------------------------------------------- 1, 2
def bhccm_vs_flat(h: Hierarchy, quick: bool, batch: int, warmup: int, steps: int) -> dict:
    out = {}
    for name, arch, enc, in_ch, size, dec in bench_bhccm.TRAIN_SETTINGS:
        if quick and arch != "fpn":
            continue
        size = min(size, 64) if quick else size
        r = bench_bhccm.bench_train_step(h, arch, enc, in_ch, size, dec, batch, warmup, steps)
        torch.manual_seed(0)
        x = torch.randn(1, in_ch, size, size)
        flops = {head: _flops(build_model(arch, enc, in_ch, h, head=head, decoder_channels=dec), x)
                 for head in ("flat", "bhccm")}
        out[name] = {
            "size": size, "batch": batch, "params": r["params"],
            "params_ratio": r["params"]["bhccm_hsc"] / r["params"]["flat_ce"],
            "forward_gflops_per_image": {k: v / 1e9 for k, v in flops.items()},
            "flops_ratio": flops["bhccm"] / flops["flat"],
            "step_s": {k: v["median_s"] for k, v in r["step"].items()},
            "step_ratio": r["ratio_bhccm_hsc_over_flat"],
            "extra_ms": {k: 1e3 * v for k, v in r["extra_time_split_s"].items()},
        }
    return out


def jsps_cost(h: Hierarchy, quick: bool, warmup: int, steps: int) -> dict:
    r = bench_bhccm.bench_jsps(h, 128 if quick else 512, 1, warmup, steps)
    med = r["median_s"]
    return {"size": r["size"], "num_paths": r["num_paths"], "median_s": med,
            "jsps_over_argmax": med["jsps"] / med["per_level_argmax"],
            "jsps_over_forward": med["jsps"] / med["forward"]}


# ------------------------------------------------------------------------------------------- 3, 4
def translu_cost(quick: bool, batch: int, warmup: int, steps: int) -> dict:
    out = {}
    for name, arch, enc, in_ch, size, dec, target, mapping, factor in bench_translu.SETTINGS:
        if quick and arch != "fpn":
            continue
        n = max(2, round(steps * factor))
        r = bench_translu.bench_setting(name, arch, enc, in_ch, min(size, 64) if quick else size, dec, target,
                                        mapping, batch, warmup, n)
        out[name] = {"step_ratio": r["ratio_translu_over_single"],
                     "memory_ratio": r["peak_step_ratio_over_single"]["translu"],
                     "step_s": {k: v["median_s"] for k, v in r["step"].items()},
                     "params": r["params"]}
    return out


def retrieval_curve(quick: bool) -> dict:
    h = Hierarchy.builtin("gid15")
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    torch.set_num_threads(1)
    curve = {}
    for n in sizes:
        queries = 30 if quick else (200 if n < 1_000_000 else 50)
        r = bench_retrieval.bench_size(n, h, queries, nprobe=16, build_threads=2, query_threads=1)
        curve[str(n)] = {"exact_ms": r["exact"]["two_stage"]["median_ms"], "ivf_ms": r["ivf"]["two_stage"]["median_ms"],
                         "ivf_recall_hir@10": r["ivf_recall"]["hir@10"]}
    first = curve[str(sizes[0])]
    for n in sizes:
        curve[str(n)]["exact_over_smallest"] = curve[str(n)]["exact_ms"] / first["exact_ms"]
    return {"sizes": sizes, "two_stage_query": curve}


# ----------------------------------------------------------------------------------------------- 5
class _PeakRSS:
    """Peak resident memory of this process while the block runs, sampled from ``/proc/self/statm`` (Linux)."""

    def __init__(self, interval: float = 0.005) -> None:
        import os
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.interval, self._stop, self.threading = interval, threading.Event(), threading

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakRSS:
        self.before = self.peak = self._rss()
        self._thread = self.threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def _sliding_child(windows: list[int], size: int, in_ch: int, rounds: int) -> dict:
    """In a fresh process: for each window size (smallest first) predict a ``size``² image, time the bare forward
    passes of the same number of windows side by side, and read the RSS high-water mark."""
    torch.set_num_threads(int(torch.get_num_threads()))
    h = Hierarchy.builtin("mm5b")
    torch.manual_seed(0)
    model = build_model("fpn", "tu-convnext_atto", in_ch, h, head="bhccm", decoder_channels=64).eval()
    image = np.random.default_rng(0).normal(size=(in_ch, size, size)).astype(np.float32)
    out = {}
    for win in windows:
        pred = SlidingWindowPredictor(model, h, window=win, overlap=win // 8, batch_size=1, mode="jsps",
                                      progress=False)
        x = torch.from_numpy(image[None, :, :win, :win].copy())
        times = {"predict": [], "forward": []}
        for _ in range(rounds):
            t = time.perf_counter()
            with _PeakRSS() as rss:
                pred.predict_array(image)
            times["predict"].append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.no_grad():
                for _ in range(pred.num_windows):
                    model(x)
            times["forward"].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[str(win)] = {"windows": pred.num_windows, "predict_s": med["predict"], "bare_forward_s": med["forward"],
                         "megapixels_per_s": size * size / 1e6 / med["predict"],
                         "forward_share": med["forward"] / med["predict"],
                         "rss_before_mb": rss.before / 2**20, "peak_rss_mb": rss.peak / 2**20,
                         "peak_rss_increase_mb": (rss.peak - rss.before) / 2**20,
                         "peak_buffer_pixels": pred.peak_buffer_pixels}
    return {"image": [in_ch, size, size], "model": "fpn64 tu-convnext_atto + bhccm (mm5b)", "mode": "jsps",
            "overlap": "window // 8", "memory": "peak RSS sampled every 5 ms during the last predict_array call",
            "by_window": out}


def sliding_window(quick: bool, threads: int) -> dict:
    windows, size, rounds = ([64, 128], 256, 1) if quick else ([256, 512, 1024], 2048, 2)
    cmd = [sys.executable, str(Path(__file__)), "--sliding-child", json.dumps([windows, size, 10, rounds])]
    env = {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    import os

    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"sliding-window child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- 6
def data_loading(quick: bool, batch: int, warmup: int, steps: int) -> dict:
    """Load + augment a batch of prepared GeoTIFF tiles vs one training step of the default model on it."""
    from torch.utils.data import DataLoader

    from hierars.data import SegAugment, build_dataset, prepare
    from hierars.data.config import PrepareConfig
    from hierars.training.sampling import IterationBatchSampler, SeededSamples, augment_batch, pad_collate

    with tempfile.TemporaryDirectory() as tmp:
        cfg = PrepareConfig.model_validate({
            "source": "synthetic",
            "synthetic": {"n_scenes": 2, "scene_size_m": 640 if quick else 1280, "val_every": 2},
            "crop10m": {"n_scenes": 1, "scene_size_m": 640, "val_every": 2},
            "whdld": {"n_scenes": 1, "scene_size_m": 320, "val_every": 2},
            "retrieval": {"per_class": 1, "per_density": 1, "patch_px": 32},
            "tile_size": {"s2": 64, "gf2": 64, "rgb": 64}})
        prepare(cfg, Path(tmp) / "processed")
        ds = build_dataset(Path(tmp) / "processed", "train", source="s2")
        h = ds.hierarchy
        n_batches = warmup + steps + 1
        sampler = IterationBatchSampler(len(ds), batch, 0, n_batches * 2)
        loader = iter(DataLoader(SeededSamples(ds, 0), batch_sampler=sampler, collate_fn=pad_collate))
        aug = SegAugment()
        it = {"i": 0}
        first = next(loader)

        def load() -> None:
            b = next(loader)
            augment_batch(aug, b["image"], b["mask"], 0, it["i"])
            it["i"] += 1

        torch.manual_seed(0)
        model = build_model("fpn", "tu-convnext_atto", first["image"].shape[1], h, head="bhccm",
                            decoder_channels=64).train()
        loss_fn = HSCLoss(h)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(first["image"]), first["mask"]).backward()
            opt.step()

        times = median_times({"load_batch": load, "train_step": step}, warmup, steps)
        res = {k: summary(v) for k, v in times.items()}
        ratio = res["load_batch"]["median_s"] / res["train_step"]["median_s"]
        return {"tiles": len(ds), "batch": batch, "tile_shape": list(first["image"].shape[1:]),
                "load_batch_s": res["load_batch"]["median_s"], "train_step_s": res["train_step"]["median_s"],
                "samples_per_s_loading": batch / res["load_batch"]["median_s"],
                "load_over_step": ratio, "num_workers": 0}


# ------------------------------------------------------------------------------------------- table
def table_rows(r: dict) -> list[tuple[str, str, str]]:
    rows = []
    for name, v in r["bhccm_vs_flat"].items():
        rows += [(f"BHCCM/flat params, {name}", f"{v['params_ratio']:.4f}",
                  f"{v['params']['flat_ce']:,} vs {v['params']['bhccm_hsc']:,}"),
                 (f"BHCCM/flat forward FLOPs, {name}", f"{v['flops_ratio']:.3f}",
                  f"{v['forward_gflops_per_image']['flat']:.2f} vs {v['forward_gflops_per_image']['bhccm']:.2f} GFLOP"),
                 (f"BHCCM+HSC/flat+CE step time, {name}", f"{v['step_ratio']:.3f}",
                  f"{v['step_s']['flat_ce']:.3f} vs {v['step_s']['bhccm_hsc']:.3f} s, batch {v['batch']}")]
    j = r["jsps"]
    rows += [(f"JSPS/per-level argmax, {j['size']}², {j['num_paths']} paths", f"{j['jsps_over_argmax']:.2f}",
              f"{j['median_s']['jsps'] * 1e3:.1f} vs {j['median_s']['per_level_argmax'] * 1e3:.1f} ms"),
             ("JSPS/model forward", f"{j['jsps_over_forward']:.3f}", f"forward {j['median_s']['forward']:.3f} s")]
    for name, v in r["translu"].items():
        rows += [(f"TransLU/single branch step time, {name}", f"{v['step_ratio']:.2f}",
                  f"{v['step_s']['single']:.3f} vs {v['step_s']['translu']:.3f} s"),
                 (f"TransLU/single branch step memory, {name}", f"{v['memory_ratio']:.2f}", "profiler peak")]
    for n, v in r["retrieval"]["two_stage_query"].items():
        rows.append((f"HIR query latency, archive {int(n):,}", f"{v['exact_over_smallest']:.2f}x",
                     f"exact {v['exact_ms']:.3f} ms, IVF {v['ivf_ms']:.3f} ms (recall@10 {v['ivf_recall_hir@10']:.2f})"))
    sw = r["sliding_window"]
    for w, v in sw["by_window"].items():
        rows.append((f"sliding window {w}² on {sw['image'][1]}²: bare forward share", f"{v['forward_share']:.2f}",
                     f"{v['megapixels_per_s']:.3f} MP/s, {v['windows']} windows, peak RSS +{v['peak_rss_increase_mb']:.0f} MB"))
    for enc, v in r["encoders"]["steps"].items():
        if enc != bench_encoders.DEFAULT:
            rows.append((f"flat FPN-64 step, {enc} / {bench_encoders.DEFAULT}", f"{v['ratio_to_default']:.2f}",
                         f"{v['median_s'] * 1e3:.1f} ms, {v['params'] / 1e6:.2f} M parameters, 1 thread"))
    hl = r["hssn_loss"]
    shape = hl["shape"]
    rows.append(("HSSN tree-min loss fwd+bwd, before rewrite / now", f"{hl['tree_min_before_over_now']:.2f}",
                 f"{hl['tree_min_fwd_bwd_s']['now'] * 1e3:.1f} vs {hl['tree_min_fwd_bwd_s']['before'] * 1e3:.1f} ms, "
                 f"{shape['batch']} x {shape['size']}², 1 thread"))
    rows.append(("HSSN/flat+CE step time, fpn64_convnext_atto", f"{hl['step_over_flat']['hssn']:.2f}",
                 f"{hl['train_step']['hssn']['median_s']:.3f} vs {hl['train_step']['flat_ce']['median_s']:.3f} s "
                 f"(before the rewrite {hl['step_over_flat']['hssn_before']:.2f}), 1 thread"))
    hb = r["head_bound"]["ratio_to_flat"]
    db = r["head_bound"]["minus_bhccm_hsc_s"]["bhccm_hsc_bound"]["mean"]
    rows.append(("BHCCM+HSC/flat step, FPN-64, no weight-side work (bound)", f"{hb['bhccm_hsc_bound']['mean']:.3f}",
                 f"current code {hb['bhccm_hsc']['mean']:.3f}, {db * 1e3:+.1f} ms per step; without HSC's path term "
                 f"{hb['bhccm_ce']['mean']:.3f}; {r['head_bound']['rounds']} rounds"))
    d = r["data_loading"]
    rows.append(("load+augment batch / train step", f"{d['load_over_step']:.3f}",
                 f"{d['load_batch_s'] * 1e3:.1f} ms vs {d['train_step_s'] * 1e3:.1f} ms, batch {d['batch']} of "
                 f"{'x'.join(map(str, d['tile_shape']))}, {d['samples_per_s_loading']:.0f} samples/s"))
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    w0, w1 = max(len(a) for a, _, _ in rows), max(len(b) for _, b, _ in rows)
    lines = [f"| {'figure':<{w0}} | {'ratio':>{w1}} | measured |", f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|---|"]
    lines += [f"| {a:<{w0}} | {b:>{w1}} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


SECTIONS = ("bhccm_vs_flat", "jsps", "translu", "retrieval", "sliding_window", "data_loading", "encoders",
            "hssn_loss", "head_bound")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, few steps (< 1 min)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: how the pipeline's seed workers train, one thread each; with "
                    "more, the small operations of the hierarchical heads weigh more, e.g. BHCCM + HSC / flat at "
                    "FPN-64 1.24 at 2 threads against 1.13 at 1)")
    ap.add_argument("--out", default="reports/bench.json")
    ap.add_argument("--sliding-child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.sliding_child:
        print(json.dumps(_sliding_child(*json.loads(a.sliding_child))))
        return {}
    torch.set_num_threads(a.threads)
    quick = a.quick
    warmup, steps, batch = (1, 2, 2) if quick else (3, 10, 8)
    h = Hierarchy.builtin("mm5b")
    t0 = time.perf_counter()
    report: dict = {"meta": {"quick": quick, "threads": a.threads, "torch": torch.__version__,
                             "machine": platform.machine(), "python": platform.python_version(),
                             "note": "shared 2-core machine: absolute times pessimistic; ratios measured side by side"}}
    timings = {}
    for key, fn in (("bhccm_vs_flat", lambda: bhccm_vs_flat(h, quick, batch, warmup, steps)),
                    ("jsps", lambda: jsps_cost(h, quick, warmup, steps)),
                    ("translu", lambda: translu_cost(quick, batch, warmup, steps)),
                    ("retrieval", lambda: retrieval_curve(quick)),
                    ("sliding_window", lambda: sliding_window(quick, a.threads)),
                    ("data_loading", lambda: data_loading(quick, batch, warmup, steps)),
                    ("encoders", lambda: bench_encoders.bench(bench_encoders.ENCODERS[:2] if quick else
                                                              bench_encoders.ENCODERS, 2 if quick else 8, 64,
                                                              warmup, steps)),
                    ("hssn_loss", lambda: bench_hssn_loss.bench(batch, 32 if quick else 64, steps)),
                    ("head_bound", lambda: bench_head_bound.bench(2 if quick else 5, steps if quick else 30, warmup,
                                                                  batch))):
        ts = time.perf_counter()
        torch.set_num_threads(a.threads)
        report[key] = fn()
        timings[key] = time.perf_counter() - ts
        print(f"[{key}] done in {timings[key]:.1f} s", file=sys.stderr, flush=True)
    report["meta"]["section_seconds"] = timings
    report["meta"]["total_seconds"] = time.perf_counter() - t0
    rows = table_rows(report)
    report["table"] = [{"figure": f, "ratio": r, "measured": m} for f, r, m in rows]
    out = resolve_path(a.out)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(format_table(rows))
    print(f"wrote {out} ({report['meta']['total_seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()

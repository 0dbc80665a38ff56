"""Benchmark HIR-style retrieval on CPU: query latency vs archive size, IVF recall, embedding throughput.

Measures, and writes to ``reports/benchmarks/retrieval.json``:

1. **Query latency vs archive size** (1k, 10k, 100k, 1M images) on synthetic archives: 32-d embeddings
   drawn from a mixture of Gaussian clusters (real embeddings cluster by scene class; unstructured noise
   would be IVF's worst case) and all-level proportion vectors of the gid15 tree (3 + 5 + 15 = 23 columns,
   leaf fractions from a Dirichlet, coarse levels summed from them as JSPS gives). Per archive size:
   index build time (exact ``IndexFlatL2`` and IVF with ``nlist = sqrt(N)``, ``nprobe`` probed lists),
   single-query latency (median / p95 of one-at-a-time queries) of stage 1 (top K = 75, faiss), stage 2
   (weighted-Manhattan re-rank of the 75 candidates, building weight 4) and the whole two-stage query
   (:func:`hierars.retrieval.hir`, input checks included), batched throughput, and exhaustive LCBIR for
   comparison. **Target: whole two-stage query <= 5 ms at 100k** (precomputed proportions).
2. **Recall of IVF against exact search**: recall@75 of the stage-1 shortlist and recall@10 of the final
   HIR top-10.
3. **Embedding throughput**: TKANet (32-d) vs a timm ``resnet18`` feature extractor (512-d, random
   weights, ``num_classes=0``) on the same 3×256² batches, interleaved in one run; plus one query's
   segmentation (FPN + convnext_atto + BHCCM on gid15, 256²), the other network cost a query pays.

Latencies use 1 faiss / torch thread by default (the machine is shared); index builds use ``--build-threads``.

Usage (from the repo root)::

    .venv/bin/python benchmarks/bench_retrieval.py            # all sizes, ~2-4 min on 2 cores
    .venv/bin/python benchmarks/bench_retrieval.py --quick    # 1k and 10k only, few queries (smoke run)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import timm
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hierars import Hierarchy, build_model  # noqa: E402
from hierars.atomic import atomic_write_text  # noqa: E402
from hierars.project import resolve_path  # noqa: E402
from hierars.retrieval import ArchiveIndex, ProportionLayout, TKANet, hir, lcbir, rerank  # noqa: E402

K_SHORTLIST, K_FINAL, TARGET_MS = 75, 10, 5.0


def _stats_ms(ts: list[float]) -> dict[str, float]:
    ms = sorted(t * 1e3 for t in ts)
    return {"median_ms": statistics.median(ms), "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))], "n": len(ms)}


def synthetic_archive(n: int, h: Hierarchy, dim: int = 32, n_clusters: int = 200, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``n × dim`` clustered embeddings and ``n × Σ N_l`` consistent all-level proportion vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32) * 3.0
    emb = centres[rng.integers(0, n_clusters, n)] + rng.normal(size=(n, dim)).astype(np.float32)
    leaf = rng.dirichlet(np.full(h.num_classes[-1], 0.3), size=n).astype(np.float32)
    blocks = []
    paths = h.paths.numpy()
    for lv, nl in enumerate(h.num_classes):
        m = np.zeros((h.num_classes[-1], nl), np.float32)
        m[paths[:, -1], paths[:, lv]] = 1.0
        blocks.append(leaf @ m)
    return emb.astype(np.float32), np.concatenate(blocks, 1)


def _time_each(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def bench_size(n: int, h: Hierarchy, n_queries: int, nprobe: int, build_threads: int, query_threads: int
               ) -> dict:
    emb, props = synthetic_archive(n, h)
    layout = ProportionLayout.from_hierarchy(h)
    rng = np.random.default_rng(1)
    pick = rng.integers(0, n, n_queries)
    q_emb = emb[pick] + 0.3 * rng.normal(size=(n_queries, emb.shape[1])).astype(np.float32)
    q_prop = props[pick]
    weights = {"built_up": 4.0}  # a Table V-style weight (gid15 has no "buildings" leaf; built_up is level 1)
    nlist = int(max(8, round(np.sqrt(n))))
    faiss.omp_set_num_threads(build_threads)
    t = time.perf_counter()
    exact = ArchiveIndex(emb, props, layout)
    build_exact = time.perf_counter() - t
    t = time.perf_counter()
    ivf = ArchiveIndex(emb, props, layout, ivf_nlist=nlist, nprobe=nprobe)
    build_ivf = time.perf_counter() - t
    faiss.omp_set_num_threads(query_threads)
    res: dict = {"n": n, "nlist": nlist, "nprobe": nprobe, "queries": n_queries,
                 "build_s": {"exact": build_exact, "ivf": build_ivf}}
    for name, index in (("exact", exact), ("ivf", ivf)):
        for i in range(3):  # warm-up
            hir(index, q_emb[i: i + 1], q_prop[i: i + 1], K_FINAL, K_SHORTLIST, class_weights=weights)
        s1 = _time_each(lambda i, ix=index: ix.stage1(q_emb[i: i + 1], K_SHORTLIST), n_queries)
        _, cand = index.stage1(q_emb, K_SHORTLIST)
        s2 = _time_each(lambda i, ix=index, c=cand: rerank(ix, c[i: i + 1], q_prop[i: i + 1], K_FINAL,
                                                           class_weights=weights), n_queries)
        whole = _time_each(lambda i, ix=index: hir(ix, q_emb[i: i + 1], q_prop[i: i + 1], K_FINAL, K_SHORTLIST,
                                                   class_weights=weights), n_queries)
        t = time.perf_counter()
        hir(index, q_emb, q_prop, K_FINAL, K_SHORTLIST, class_weights=weights)
        batched = (time.perf_counter() - t) / n_queries
        res[name] = {"stage1": _stats_ms(s1), "stage2": _stats_ms(s2), "two_stage": _stats_ms(whole),
                     "two_stage_batched_ms_per_query": batched * 1e3}
    n_lc = max(3, min(n_queries, int(2e6 // n)))
    lcbir(exact, q_prop[:1], K_FINAL, class_weights=weights)  # warm-up
    lc = _time_each(lambda i: lcbir(exact, q_prop[i: i + 1], K_FINAL, class_weights=weights), n_lc)
    res["lcbir_exhaustive"] = _stats_ms(lc)
    _, ie = exact.stage1(q_emb, K_SHORTLIST)
    _, ii = ivf.stage1(q_emb, K_SHORTLIST)
    he = hir(exact, q_emb, q_prop, K_FINAL, K_SHORTLIST, class_weights=weights).indices
    hi = hir(ivf, q_emb, q_prop, K_FINAL, K_SHORTLIST, class_weights=weights).indices
    res["ivf_recall"] = {
        f"stage1@{K_SHORTLIST}": float(np.mean([len(set(a) & set(b)) / K_SHORTLIST for a, b in zip(ie, ii)])),
        f"hir@{K_FINAL}": float(np.mean([len(set(a) & set(b)) / K_FINAL for a, b in zip(he, hi)])),
    }
    res["memory_MiB"] = {"embeddings": emb.nbytes / 2**20, "proportions": props.nbytes / 2**20}
    return res


@torch.no_grad()
def bench_embedders(size: int, batch: int, warmup: int, steps: int, h: Hierarchy) -> dict:
    torch.manual_seed(0)
    nets = {"tkanet": TKANet(3).eval(),
            "resnet18": timm.create_model("resnet18", pretrained=False, num_classes=0).eval()}
    x = torch.randn(batch, 3, size, size)
    times: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(warmup):
        for net in nets.values():
            net(x)
    for _ in range(steps):  # interleaved, so a shared CPU's load affects both alike
        for name, net in nets.items():
            t = time.perf_counter()
            net(x)
            times[name].append(time.perf_counter() - t)
    out: dict = {"input": [3, size, size], "batch": batch, "steps": steps}
    for name, net in nets.items():
        med = statistics.median(times[name])
        dim = int(net(x[:1]).shape[1])
        out[name] = {"images_per_s": batch / med, "median_batch_s": med, "embedding_dim": dim,
                     "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
                     "index_MiB_per_1M_images": dim * 4 * 1e6 / 2**20}
    out["tkanet_speedup"] = out["tkanet"]["images_per_s"] / out["resnet18"]["images_per_s"]
    seg = build_model("fpn", "tu-convnext_atto", 3, h, head="bhccm", decoder_channels=64).eval()
    one = x[:1]
    seg(one)
    ts = [0.0] * 3
    for i in range(3):
        t = time.perf_counter()
        seg(one)
        ts[i] = time.perf_counter() - t
    tk = [0.0] * 5
    for i in range(5):
        t = time.perf_counter()
        nets["tkanet"](one)
        tk[i] = time.perf_counter() - t
    out["query_networks_ms"] = {"tkanet_embed": statistics.median(tk) * 1e3,
                                "segmenter_fpn_convnext_atto": statistics.median(ts) * 1e3}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200, help="timed single queries per size (1M: a quarter)")
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="faiss / torch threads for timed queries and networks")
    ap.add_argument("--build-threads", type=int, default=2, help="faiss threads for building IVF indexes")
    ap.add_argument("--embed-size", type=int, default=256)
    ap.add_argument("--embed-batch", type=int, default=16)
    ap.add_argument("--embed-steps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1k and 10k, 30 queries, 2 embedding steps at 128²")
    ap.add_argument("--out", default="reports/benchmarks/retrieval.json")
    a = ap.parse_args(argv)
    if a.quick:
        a.sizes, a.queries, a.embed_steps, a.embed_size, a.embed_batch = [1_000, 10_000], 30, 2, 128, 4
    torch.set_num_threads(a.threads)
    h = Hierarchy.builtin("gid15")
    t_all = time.perf_counter()
    report: dict = {"tree": h.name, "proportion_columns": int(sum(h.num_classes)), "embedding_dim": 32,
                    "K": K_SHORTLIST, "k": K_FINAL, "target_two_stage_ms_at_100k": TARGET_MS,
                    "threads": a.threads, "build_threads": a.build_threads, "faiss": faiss.__version__,
                    "torch": torch.__version__, "machine": platform.machine(), "quick": a.quick, "sizes": {}}
    print(f"{'N':>9} {'index':>6} {'build s':>8} {'stage1 ms':>10} {'stage2 ms':>10} {'2-stage ms':>11} "
          f"{'p95 ms':>7} {'batched':>8} {'LCBIR ms':>9} {'recall@75':>9} {'recall@10':>9}", flush=True)
    for n in a.sizes:
        nq = a.queries if n < 1_000_000 else max(10, a.queries // 4)
        r = bench_size(n, h, nq, a.nprobe, a.build_threads, a.threads)
        report["sizes"][str(n)] = r
        for name in ("exact", "ivf"):
            x = r[name]
            rec = r["ivf_recall"] if name == "ivf" else {f"stage1@{K_SHORTLIST}": 1.0, f"hir@{K_FINAL}": 1.0}
            print(f"{n:>9} {name:>6} {r['build_s'][name]:>8.2f} {x['stage1']['median_ms']:>10.3f} "
                  f"{x['stage2']['median_ms']:>10.3f} {x['two_stage']['median_ms']:>11.3f} "
                  f"{x['two_stage']['p95_ms']:>7.3f} {x['two_stage_batched_ms_per_query']:>8.3f} "
                  f"{r['lcbir_exhaustive']['median_ms'] if name == 'exact' else float('nan'):>9.2f} "
                  f"{rec[f'stage1@{K_SHORTLIST}']:>9.3f} {rec[f'hir@{K_FINAL}']:>9.3f}", flush=True)
    if "100000" in report["sizes"]:
        ms = report["sizes"]["100000"]["exact"]["two_stage"]["median_ms"]
        report["meets_target"] = bool(ms <= TARGET_MS)
        print(f"two-stage query at 100k (exact): {ms:.3f} ms, target <= {TARGET_MS} ms: "
              f"{'ok' if ms <= TARGET_MS else 'MISSED'}")
    e = bench_embedders(a.embed_size, a.embed_batch, 1, a.embed_steps, h)
    report["embedding"] = e
    print(f"[embedding {a.embed_size}², batch {a.embed_batch}] TKANet {e['tkanet']['images_per_s']:.1f} img/s "
          f"({e['tkanet']['params_M']:.2f} M params, {e['tkanet']['embedding_dim']}-d) vs resnet18 "
          f"{e['resnet18']['images_per_s']:.1f} img/s ({e['resnet18']['params_M']:.2f} M, "
          f"{e['resnet18']['embedding_dim']}-d): x{e['tkanet_speedup']:.2f}; one query: TKANet "
          f"{e['query_networks_ms']['tkanet_embed']:.1f} ms, segmenter "
          f"{e['query_networks_ms']['segmenter_fpn_convnext_atto']:.1f} ms", flush=True)
    report["total_s"] = time.perf_counter() - t_all
    out = resolve_path(a.out)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} ({report['total_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()

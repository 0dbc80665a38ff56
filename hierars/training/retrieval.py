"""The retrieval experiment of the HIR paper (Tables IV and V) as one call: train, index, evaluate.

:func:`run_retrieval_experiment` takes an archive and a query split held in memory (:class:`RetrievalSplit`:
raw images, per-level pixel labels, scene labels, withheld sub-labels) and

1. trains the stage-2 segmenter (:func:`hierars.training.build_run_model`, e.g. BHCCM + HSC) with
   :func:`hierars.training.fit` on the **archive only** (HIR trains on its archive; the queries are unseen);
2. trains TKANet (:func:`hierars.retrieval.train_tkanet`) on the archive's scene labels (sub-categories
   merged: the sub-labels are never seen by either network);
3. builds the :class:`~hierars.retrieval.ArchiveIndex` (embeddings + predicted proportions);
4. scores CBIR / LCBIR / HIR (w = 1 and with one class weight raised) for
   ``tableIV`` (all queries, relevance = merged scene label), ``tableIV_orig`` (relevance = original label,
   i.e. the sub-label for residential images) and ``tableV`` (residential queries only, relevance = the
   withheld sub-label), each with predicted proportions and, as an oracle, ground-truth proportions;
5. adds the leave-one-out oracle of ``docs/design.md``: every residential image (archive + query) ranks the
   other residential images by ground-truth proportions (Manhattan, all pixels as denominator); P@k of the
   same sub-label.

Training layer: imports the core and the training loop, never the project layer or matplotlib.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hierars.hierarchy import Hierarchy
from hierars.retrieval import (
    ArchiveIndex,
    ProportionLayout,
    TKANet,
    compute_features,
    evaluate_methods,
    hir_methods,
    proportions_from_labels,
    run_method,
    save_tkanet,
    train_tkanet,
)
from hierars.retrieval.metrics import precision_at_k, relevance
from hierars.training.checkpoint import run_metadata
from hierars.training.config import TrainConfig
from hierars.training.loop import fit
from hierars.training.optim import build_loss
from hierars.training.runs import build_run_model
from hierars.training.seeding import seed_everything

__all__ = ["RetrievalSplit", "ArraySegDataset", "RetrievalResult", "run_retrieval_experiment",
           "stratified_split", "method_key", "gt_proportions", "loo_oracle"]

log = logging.getLogger(__name__)


@dataclass
class RetrievalSplit:
    """One split of a retrieval archive, in memory.

    Attributes:
        images: ``N × C × H × W`` raw band values (any numeric dtype; one size).
        masks: ``N × L × H × W`` per-level labels (uint8 or int; ``ignore_index`` = ignore), already encoded
            with the tree (merged classes merged).
        scenes: ``N`` scene labels as the networks see them (sub-categories merged).
        subs: ``N`` withheld sub-labels (``""`` where none, e.g. non-residential).
        files: ``N`` names (for the index and the gallery).
    """

    images: np.ndarray
    masks: np.ndarray
    scenes: np.ndarray
    subs: np.ndarray
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.scenes = np.asarray(self.scenes).astype(str)
        self.subs = np.asarray(self.subs).astype(str)
        n = len(self.images)
        if self.images.ndim != 4 or self.masks.ndim != 4:
            raise ValueError(f"images must be N×C×H×W and masks N×L×H×W, got {self.images.shape}, {self.masks.shape}")
        if not (len(self.masks) == len(self.scenes) == len(self.subs) == n):
            raise ValueError(f"{n} images, {len(self.masks)} masks, {len(self.scenes)} scenes, {len(self.subs)} subs")
        if self.images.shape[-2:] != self.masks.shape[-2:]:
            raise ValueError(f"images {self.images.shape[-2:]} and masks {self.masks.shape[-2:]} differ in size")
        self.files = list(self.files) or [f"{i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def original(self) -> np.ndarray:
        """``N`` original labels: the sub-label where there is one, else the scene."""
        return np.where(self.subs != "", self.subs, self.scenes)


class ArraySegDataset(Dataset):
    """Segmentation samples ``{"image": C×H×W float32 normalised, "mask": L×H×W int64, "meta": {"index"}}`` from
    in-memory arrays (normalised per item: ``(x − mean) / std`` per band)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> None:
        self.images, self.masks = images, masks
        self.mean = torch.tensor(np.asarray(mean, np.float32))[:, None, None]
        self.std = torch.tensor(np.maximum(np.asarray(std, np.float32), 1e-6))[:, None, None]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = torch.from_numpy(np.asarray(self.images[i], dtype=np.float32))
        return {"image": (x - self.mean) / self.std, "mask": torch.from_numpy(self.masks[i].astype(np.int64)),
                "meta": {"index": int(i)}}


@dataclass
class RetrievalResult:
    """What :func:`run_retrieval_experiment` returns.

    Attributes:
        rows: one plain dict per (experiment, proportions, method) with ``mAP@k`` (HIR / DeepHash),
            ``mAP_std@k`` (standard) and ``P@k`` for every k, plus ``experiment``, ``proportions``
            (``"predicted"`` | ``"ground truth"``), ``method``, ``key`` (a stable short name), ``queries``.
        metrics: flat scalars for the metrics JSON (``<experiment>_<key>_<metric>``, oracle, sizes).
        index: the archive index (predicted proportions); query_embeddings ``Q × D``,
            query_proportions ``Q × P`` (predicted), query_gt_proportions ``Q × P``.
        methods: name → method spec (as evaluated); tkanet, segmenter: the trained models;
        segmenter_metrics: :func:`fit`'s metrics (on the queries); tkanet_history: per-epoch rows.
        mean, std: per-band statistics of the archive (the segmenter's normalisation).
    """

    rows: list[dict[str, Any]]
    metrics: dict[str, float]
    index: ArchiveIndex
    gt_index: ArchiveIndex
    query_embeddings: np.ndarray
    query_proportions: np.ndarray
    query_gt_proportions: np.ndarray
    methods: dict[str, dict[str, Any]]
    tkanet: TKANet
    segmenter: torch.nn.Module
    segmenter_metrics: dict[str, float]
    tkanet_history: list[dict[str, float]]
    mean: list[float]
    std: list[float]


def method_key(name: str) -> str:
    """A stable short key of a method row name: ``"HIR (K=75, w_building=4)"`` → ``"HIR_K75_w4"``."""
    m = re.match(r"HIR \(K=(\d+), w(?:_\w+)?=([\d.]+)\)", name)
    if m:
        return f"HIR_K{m.group(1)}_w{m.group(2)}"
    return re.sub(r"\W+", "_", name).strip("_")


def stratified_split(groups: Sequence[str], query_fraction: float, seed: int = 0) -> np.ndarray:
    """Seeded archive / query split stratified by ``groups``: ``N`` bools, True = query.

    Per group of ``n`` items, ``min(n − 1, max(1, round(query_fraction · n)))`` go to the queries (a group of
    one stays in the archive, so no group is missing from the archive)."""
    g = np.asarray(groups).astype(str)
    rng = np.random.default_rng(seed)
    is_query = np.zeros(len(g), bool)
    for key in sorted(set(g.tolist())):
        idx = np.flatnonzero(g == key)
        n_q = min(len(idx) - 1, max(1, round(query_fraction * len(idx))))
        if n_q > 0:
            is_query[rng.permutation(idx)[:n_q]] = True
    return is_query


def gt_proportions(masks: np.ndarray, hierarchy: Hierarchy, batch: int = 64) -> np.ndarray:
    """Ground-truth all-level proportions of ``N × L × H × W`` masks (``denominator="all"``: ignored pixels
    count in the total, as in design.md's oracle). Returns float32 ``N × Σ_l N_l``."""
    out = [proportions_from_labels(torch.from_numpy(masks[i: i + batch].astype(np.int64)), hierarchy.num_classes,
                                   hierarchy.ignore_index, denominator="all") for i in range(0, len(masks), batch)]
    return np.concatenate(out) if out else np.zeros((0, sum(hierarchy.num_classes)), np.float32)


def loo_oracle(proportions: np.ndarray, labels: Sequence[str], layout: ProportionLayout, ks: Sequence[int] = (10,),
               level: int | str = -1) -> dict[str, float]:
    """Leave-one-out retrieval among a set of images by proportions alone (Manhattan, w = 1): every image is
    a query against all the others. ``proportions``: ``N × P``; ``labels``: ``N``. Returns ``{"P@k"}``
    (``k`` capped at ``N − 1``; ``{}`` for fewer than 2 images)."""
    lab = np.asarray(labels).astype(str)
    n = len(lab)
    if n < 2:
        return {}
    cols = layout.columns(level)
    p = proportions[:, cols].astype(np.float64)
    d = np.abs(p[:, None, :] - p[None, :, :]).sum(-1)
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, : n - 1]
    rel = relevance(lab[order], lab)
    return {f"P@{k}": precision_at_k(rel, min(k, n - 1)) for k in ks}


def _band_stats(images: np.ndarray, batch: int = 64) -> tuple[list[float], list[float]]:
    s = np.zeros(images.shape[1]), np.zeros(images.shape[1])
    n = 0
    for i in range(0, len(images), batch):
        x = images[i: i + batch].astype(np.float64)
        s[0][:] += x.sum((0, 2, 3))
        s[1][:] += (x**2).sum((0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s[0] / n
    std = np.sqrt(np.maximum(s[1] / n - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


def _features(images: np.ndarray, tkanet: TKANet, segmenter: torch.nn.Module, hierarchy: Hierarchy, mode: str,
              mean: Sequence[float], std: Sequence[float], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    embs, props = [], []
    for i in range(0, len(images), batch):
        e, p = compute_features(np.asarray(images[i: i + batch], np.float32), tkanet, segmenter, hierarchy, mode,
                                mean, std, batch_size=batch)
        embs.append(e)
        props.append(p)
    return np.concatenate(embs), np.concatenate(props)


def run_retrieval_experiment(
    archive: RetrievalSplit,
    query: RetrievalSplit,
    hierarchy: Hierarchy,
    seg_cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    tkanet_epochs: int = 30,
    tkanet_batch_size: int = 16,
    tkanet_lr: float = 2e-3,
    Ks: Sequence[int] = (75, 20),
    ks: Sequence[int] = (5, 10),
    weighted_class: str | None = "building",
    weight: float = 4.0,
    level: int | str = "all",
    mode: str = "jsps",
    residential: str = "residential",
    seed: int = 0,
    progress: bool = False,
) -> RetrievalResult:
    """Train the segmenter and TKANet on ``archive``, index it, and score CBIR / LCBIR / HIR on ``query``.

    Args:
        archive, query: the two splits (:class:`RetrievalSplit`; same bands, size and tree).
        hierarchy: the tree of the masks (e.g. ``whdld``, ``gid15_merged``).
        seg_cfg: the segmenter's run settings (``arch``, ``encoder``, ``head``, ``loss``, ``iterations``, ...).
        out_dir: receives ``segmenter/ckpt.pt``, ``tkanet.pt`` and ``index.npz`` (retrained from scratch).
        tkanet_epochs, tkanet_batch_size, tkanet_lr: TKANet training (:func:`train_tkanet`).
        Ks: stage-1 shortlist sizes of the HIR rows (capped at the archive size by the search).
        ks: cut-offs of the metrics (each ``<=`` the archive size and ``<=`` every K).
        weighted_class, weight: the class whose stage-2 weight is raised in the extra HIR row (``None``: no row).
        level: stage-2 proportions (``"all"`` levels concatenated, or one level index).
        mode: proportion decoding (``"jsps"`` | ``"argmax"`` | ``"soft"``).
        residential: the scene whose queries form Table V (relevance = same sub-label).
        seed: seeds both trainings.

    Returns:
        :class:`RetrievalResult`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_arch = len(archive)
    if n_arch == 0 or len(query) == 0:
        raise ValueError(f"need a non-empty archive and query set, got {n_arch} and {len(query)}")
    if archive.images.shape[1:] != query.images.shape[1:]:
        raise ValueError(f"archive images {archive.images.shape[1:]} and queries {query.images.shape[1:]} differ")
    ks = sorted(int(k) for k in ks)
    if ks[-1] > n_arch or ks[-1] > min(min(Ks), n_arch):
        raise ValueError(f"cut-offs {ks} must be <= the archive size ({n_arch}) and <= every K {list(Ks)}")
    if archive.images.shape[-1] % 32 or archive.images.shape[-2] % 32:
        raise ValueError(f"image size {archive.images.shape[-2:]} must be a multiple of 32 (the segmenter's "
                         "output stride); crop or resize the archive first")
    in_ch = int(archive.images.shape[1])
    mean, std = _band_stats(archive.images)

    # 1. segmenter on the archive (evaluated on the queries)
    cfg = seg_cfg.model_copy(update={"seed": seed, "progress": progress})
    seed_everything(seed)
    segmenter = build_run_model(cfg, hierarchy, in_ch)
    train_ds = ArraySegDataset(archive.images, archive.masks, mean, std)
    val_ds = ArraySegDataset(query.images, query.masks, mean, std)
    seg_metrics = fit(segmenter, build_loss(cfg, hierarchy), train_ds, val_ds, hierarchy, cfg, out_dir / "segmenter",
                      resume=False, meta=run_metadata(cfg, hierarchy, in_ch, train_ds, val_ds))  # hierars.load_model-able
    segmenter.eval()

    # 2. TKANet on merged scene labels of the archive
    torch.manual_seed(seed)
    tkanet = TKANet(in_ch)
    tk = train_tkanet(tkanet, np.asarray(archive.images, np.float32), archive.scenes, epochs=tkanet_epochs,
                      batch_size=tkanet_batch_size, lr=tkanet_lr, seed=seed, progress=progress)
    save_tkanet(out_dir / "tkanet.pt", tkanet, tk.classifier, extra={"history": tk.history})

    # 3. index (predicted proportions) + queries
    a_emb, a_props = _features(archive.images, tkanet, segmenter, hierarchy, mode, mean, std)
    q_emb, q_props = _features(query.images, tkanet, segmenter, hierarchy, mode, mean, std)
    layout = ProportionLayout.from_hierarchy(hierarchy)
    common = {"files": archive.files, "labels": list(archive.scenes), "tree": hierarchy}
    index = ArchiveIndex(a_emb, a_props, layout, segmenter=segmenter, embedder=tkanet,
                         meta={"mode": mode, "in_channels": in_ch, "seg_mean": mean, "seg_std": std}, **common)
    index.save(out_dir / "index.npz")
    a_gt, q_gt = gt_proportions(archive.masks, hierarchy), gt_proportions(query.masks, hierarchy)
    gt_index = ArchiveIndex(a_emb, a_gt, layout, meta={"mode": "ground truth"}, **common)

    # 4. Tables IV / V
    methods: dict[str, dict[str, Any]] = {}
    for K in Ks:
        methods.update(hir_methods(weighted_class, weight, K=int(K), level=level))
    res_q = query.scenes == residential
    experiments = {
        "tableIV": (np.ones(len(query), bool), query.scenes, archive.scenes),
        "tableIV_orig": (np.ones(len(query), bool), query.original, archive.original),
        "tableV": (res_q, query.original, archive.original),
    }
    rows: list[dict[str, Any]] = []
    metrics: dict[str, float] = {"n_archive": float(n_arch), "n_query": float(len(query)),
                                 "n_query_residential": float(res_q.sum())}
    for exp, (sel, q_lab, a_lab) in experiments.items():
        if not sel.any():
            log.warning("%s: no queries (no %r scenes among the queries); skipped", exp, residential)
            continue
        for pname, idx, qp in (("predicted", index, q_props), ("ground truth", gt_index, q_gt)):
            scores = evaluate_methods(idx, q_emb[sel], qp[sel], q_lab[sel], methods, ks=ks, archive_labels=a_lab)
            for name, sc in scores.items():
                key = method_key(name)
                if pname == "ground truth" and key == "CBIR":
                    continue  # CBIR does not use proportions
                rows.append({"experiment": exp, "proportions": pname, "method": name, "key": key,
                             "queries": int(sel.sum()), **sc})
                prefix = f"{exp}_{key}" + ("_gt" if pname == "ground truth" else "")
                metrics.update({f"{prefix}_{m}": float(v) for m, v in sc.items()})

    # 5. design.md's oracle: leave-one-out among all residential images, ground-truth proportions
    all_gt = np.concatenate([a_gt, q_gt])
    all_scenes = np.concatenate([archive.scenes, query.scenes])
    all_orig = np.concatenate([archive.original, query.original])
    res_all = all_scenes == residential
    for lv_name, lv in (("leaf", -1), ("all", "all")):
        for m, v in loo_oracle(all_gt[res_all], all_orig[res_all], layout, ks, lv).items():
            metrics[f"oracle_loo_{lv_name}_{m}"] = float(v)
    metrics["n_residential"] = float(res_all.sum())
    metrics.update({f"segmenter_{k}": float(v) for k, v in seg_metrics.items()
                    if k.startswith(("mIoU", "OA", "consistency"))})
    metrics["tkanet_train_accuracy"] = float(tk.history[-1]["accuracy"]) if tk.history else float("nan")
    return RetrievalResult(rows=rows, metrics=metrics, index=index, gt_index=gt_index, query_embeddings=q_emb,
                           query_proportions=q_props, query_gt_proportions=q_gt, methods=methods, tkanet=tkanet,
                           segmenter=segmenter, segmenter_metrics=dict(seg_metrics), tkanet_history=tk.history,
                           mean=mean, std=std)


def gallery_results(result: RetrievalResult, query_index: int, k: int = 10,
                    methods: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Archive indices (``k`` each) that each method returns for one query: name → ``k`` int64.
    ``methods`` default: CBIR, LCBIR and the first two HIR rows."""
    names = list(methods) if methods is not None else [n for n in result.methods if not n.startswith("HIR")] + [
        n for n in result.methods if n.startswith("HIR")][:2]
    q = slice(query_index, query_index + 1)
    return {n: run_method(result.index, result.query_embeddings[q], result.query_proportions[q], k,
                          result.methods[n]).indices[0] for n in names}


__all__ += ["gallery_results"]

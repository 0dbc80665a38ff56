"""The retrieval stage's glue (``notebooks/05_retrieval.ipynb``): the ``retrieval`` section of ``params.yaml``,
loading the archive (the synthetic one that ``prepare`` writes, or GID-15 read in place), and writing the
stage's outputs under fixed names whatever the source.

``retrieval.source: auto`` (the default) runs on prepare's synthetic archive when ``<paths.data>/processed`` has
one (``prepare.source: synthetic``), and otherwise skips: :func:`skip_reason` says why and
:func:`write_skipped_outputs` writes every declared output with that reason (:mod:`hierars.project.skipped`), so
``dvc repro`` succeeds on any prepare source. ``none`` always skips.

Outputs (``paths`` resolved from the repository root):

- ``<models>/retrieval/``: ``segmenter/ckpt.pt``, ``tkanet.pt``, ``index.npz``;
- ``<reports>/metrics/retrieval.json``: flat scalars (``tableIV_HIR_K75_w1_P@10``, ...);
- ``<reports>/retrieval/retrieval.md`` and ``retrieval.csv``: the Table IV / V-style rows;
- ``<reports>/figures/retrieval_gallery.png``: written by the notebook (``hierars.plotting``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hierars.atomic import atomic_write_json, atomic_write_text
from hierars.hierarchy import Hierarchy
from hierars.project.params import PROJ_ROOT, resolve_path, stage_paths
from hierars.project.skipped import write_ran_status, write_skipped
from hierars.training.config import TrainConfig
from hierars.training.retrieval import RetrievalResult, RetrievalSplit, stratified_split
from hierars.validation import validate

__all__ = ["RetrievalStageConfig", "retrieval_config", "load_retrieval_splits", "retrieval_outputs",
           "experiment_kwargs", "results_table", "write_retrieval_outputs", "SEGMENTER_DEFAULTS", "archive_index",
           "effective_source", "skip_reason", "write_skipped_outputs", "STAGE"]

#: the DVC stage name (in skip reports)
STAGE = "retrieval"
#: how to run retrieval on real data (in the skip reason)
GID15_HINT = ("To run retrieval on real data, point it at GID-15: dvc exp run retrieval -S retrieval.source=gid15 "
              "-S retrieval.root=<GID-15 folder> (params.yaml shows a CPU profile for it).")

#: Stage-2 segmenter defaults (BHCCM + HSC on a 64-channel FPN with convnext_atto; a short CPU budget).
SEGMENTER_DEFAULTS: dict[str, Any] = {
    "arch": "fpn", "encoder": "tu-convnext_atto", "decoder_channels": 64, "head": "bhccm",
    "fusion": "bidirectional", "loss": "hsc", "iterations": 50, "batch_size": 4, "lr": 1.0e-3,
    "eval_interval": 0, "log_interval": 20, "jsps": True,
}  # fmt: skip


class TKANetSettings(BaseModel):
    """TKANet training (:func:`hierars.retrieval.train_tkanet`)."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(16, ge=2)
    lr: float = Field(2.0e-3, gt=0.0)


class RetrievalStageConfig(BaseModel):
    """``params.yaml`` → ``retrieval`` (unknown keys are errors). Defaults: the synthetic archive."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["auto", "synthetic", "gid15", "none"] = Field(
        "auto", description="archive: `auto` (prepare's synthetic archive when data/processed has one, else the "
        "stage skips, with the reason), `synthetic`, `gid15` (read in place from `root`) or `none` (skip)")
    root: str | None = Field(None, description="gid15: the dataset folder (e.g. ../shared/data/gid15)")
    labels: Literal["whdld", "mm5b"] = Field("whdld", description="synthetic: pixel labels / tree of the segmenter")
    split: Literal["prepared", "stratified"] = Field(
        "prepared", description="synthetic: prepare's archive/query split, or a seeded re-split (gid15: always)")
    query_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="stratified split: share of queries per scene")
    tile: int = Field(224, ge=32, description="gid15: images are cropped to tile × tile (3 are 225 px)")
    max_per_scene: int | None = Field(None, ge=1, description="gid15: first N images per scene folder (tests)")
    downsample: int = Field(1, ge=1, description="gid15: block-mean images / subsample labels by this factor (result: a multiple of 32 px)")
    segmenter: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields over SEGMENTER_DEFAULTS")
    tkanet: TKANetSettings = TKANetSettings()
    K: list[int] = Field([75, 20], min_length=1, description="stage-1 shortlist sizes (capped at the archive)")
    ks: list[int] = Field([5, 10], min_length=1, description="metric cut-offs")
    level: int | Literal["all"] = "all"
    mode: Literal["jsps", "argmax", "soft"] = "jsps"
    weighted_class: str | None = Field(None, description="None: building (synthetic whdld) / residential (else)")
    weight: float = Field(4.0, gt=0.0)
    gallery_k: int = Field(10, ge=1)
    num_threads: int | None = Field(2, ge=1)

    def segmenter_config(self) -> TrainConfig:
        over = {"num_threads": self.num_threads, **self.segmenter}
        return validate(TrainConfig, {**SEGMENTER_DEFAULTS, **over}, "retrieval.segmenter")

    def tree_name(self) -> str:
        return "gid15_merged" if self.source == "gid15" else self.labels

    def stage2_class(self) -> str:
        if self.weighted_class:
            return self.weighted_class
        return "building" if self.tree_name() == "whdld" else "residential"


def retrieval_config(params: Mapping[str, Any]) -> RetrievalStageConfig:
    """The validated ``retrieval`` section (defaults when absent)."""
    return validate(RetrievalStageConfig, params.get("retrieval"), "retrieval")


def archive_index(params: Mapping[str, Any]) -> Path:
    """``<paths.data>/processed/retrieval/index.csv``: the synthetic archive that ``prepare`` writes (synthetic
    source with ``prepare.retrieval.per_class > 0``; no other source writes it)."""
    return stage_paths(params)["data"] / "processed" / "retrieval" / "index.csv"


def effective_source(params: Mapping[str, Any], cfg: RetrievalStageConfig) -> str:
    """``synthetic``, ``gid15`` or ``none`` (skip): ``auto`` resolved by whether prepare wrote an archive."""
    if cfg.source == "auto":
        return "synthetic" if archive_index(params).is_file() else "none"
    return cfg.source


def skip_reason(params: Mapping[str, Any], cfg: RetrievalStageConfig | None = None) -> str | None:
    """Why the stage does not run on the current settings and data (plain words, with how to make it run), or None.

    Raises:
        FileNotFoundError: ``retrieval.source: synthetic`` is asked for but prepare wrote no archive.
    """
    cfg = cfg or retrieval_config(params)
    index = archive_index(params)
    if cfg.source == "none":
        return "retrieval.source is none: the retrieval stage is switched off. " + GID15_HINT
    if cfg.source == "synthetic" and not index.is_file():
        raise FileNotFoundError(f"retrieval.source is synthetic but prepare wrote no retrieval archive ({index} "
                                "missing): run prepare with prepare.source=synthetic, or set retrieval.source to "
                                "auto (skip when there is none) or gid15")
    if effective_source(params, cfg) == "none":
        processed = index.parent.parent
        kind = "unknown"
        if (processed / "manifest.json").is_file():
            kind = json.loads((processed / "manifest.json").read_text()).get("kind", "unknown")
        shown = processed.relative_to(PROJ_ROOT) if processed.is_relative_to(PROJ_ROOT) else processed
        return (f"retrieval.source is auto and the prepared data ({shown}, prepare.source {kind!r}) has no "
                "retrieval archive: only prepare.source=synthetic generates one (scene patches with withheld "
                "sub-labels). " + GID15_HINT)
    return None


def write_skipped_outputs(params: Mapping[str, Any], reason: str) -> dict[str, Path]:
    """Every declared output of a skipped retrieval stage (:func:`hierars.project.skipped.write_skipped`):
    ``{"skipped": 1}`` metrics, ``retrieval.md`` + ``status.json`` with the reason, the gallery figure saying
    "skipped", ``models/retrieval/SKIPPED.md``. No CSV table: there are no rows."""
    out = retrieval_outputs(params)
    return write_skipped(STAGE, reason, metrics=out["metrics"], report_dir=out["table_md"].parent,
                         report_name=out["table_md"].name, figures=[out["gallery"]], model_dirs=[out["models"]])


def experiment_kwargs(cfg: RetrievalStageConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`hierars.training.retrieval.run_retrieval_experiment` from the section."""
    return {"tkanet_epochs": cfg.tkanet.epochs, "tkanet_batch_size": cfg.tkanet.batch_size,
            "tkanet_lr": cfg.tkanet.lr, "Ks": cfg.K, "ks": cfg.ks, "weighted_class": cfg.stage2_class(),
            "weight": cfg.weight, "level": cfg.level, "mode": cfg.mode}


def _stack(rows: list[dict], hierarchy: Hierarchy, label_key: str, tile: int | None = None, factor: int = 1
           ) -> tuple[np.ndarray, np.ndarray]:
    """Read images (``N × C × H × W``, as stored) and encoded masks (``N × L × H × W`` uint8)."""
    from hierars.data import read_raster

    images, masks = [], []
    for r in rows:
        img, lab = read_raster(r["image"]), read_raster(r[label_key])[0]
        if tile is not None:
            if min(img.shape[-2:]) < tile:
                raise ValueError(f"{r['image']}: {img.shape[-2:]} is smaller than the tile {tile}")
            img, lab = img[:, :tile, :tile], lab[:tile, :tile]
        if factor > 1:  # block mean of the bands (float32), every factor-th label pixel
            c, hh, ww = img.shape
            hh, ww = hh // factor * factor, ww // factor * factor
            img = img[:, :hh, :ww].astype(np.float32).reshape(c, hh // factor, factor, ww // factor, factor).mean((2, 4))
            lab = lab[factor // 2: hh: factor, factor // 2: ww: factor]
        images.append(img)
        masks.append(hierarchy.encode(lab).numpy().astype(np.uint8))
    return np.stack(images), np.stack(masks)


def _split(rows: list[dict], mask: np.ndarray, images: np.ndarray, masks: np.ndarray) -> RetrievalSplit:
    sel = np.flatnonzero(mask)
    return RetrievalSplit(images[sel], masks[sel], [rows[i]["scene"] for i in sel], [rows[i]["sub"] for i in sel],
                          [rows[i]["name"] for i in sel])


def load_retrieval_splits(params: Mapping[str, Any], cfg: RetrievalStageConfig | None = None
                          ) -> tuple[RetrievalSplit, RetrievalSplit, Hierarchy]:
    """Archive and query splits (in memory) and the tree of their masks.

    - ``synthetic``: ``<paths.data>/processed/retrieval/index.csv`` (``prepare``), pixel labels ``label``
      (``whdld`` tree) or ``label_mm5b`` (``mm5b``); scene labels have residential merged and the density
      sub-label withheld; prepare's split, or with ``split: stratified`` a seeded re-split by scene.
    - ``gid15``: ``<root>/image/<scene>/*.tif`` + ``label_gray``; urban and rural residential merged into the
      scene ``residential`` and (tree ``gid15_merged``) into one pixel class; the original folder is the
      sub-label; a seeded split stratified by the original folder.
    """
    cfg = cfg or retrieval_config(params)
    seed = int(params.get("seed", 0) or 0)
    source = effective_source(params, cfg)
    if source == "none":
        raise ValueError(skip_reason(params, cfg))
    h = Hierarchy.builtin(cfg.tree_name())
    if source == "gid15":
        from hierars.data import gid15_items

        if not cfg.root:
            raise ValueError("retrieval.source gid15 needs retrieval.root (e.g. ../shared/data/gid15)")
        items = gid15_items(resolve_path(cfg.root))
        per: dict[str, int] = {}
        rows = []
        for it in items:
            per[it.scene] = per.get(it.scene, 0) + 1
            if cfg.max_per_scene and per[it.scene] > cfg.max_per_scene:
                continue
            merged = it.scene.endswith("_residential")
            rows.append({"image": str(it.image), "label": str(it.label), "name": f"{it.scene}/{it.image.name}",
                         "scene": "residential" if merged else it.scene, "sub": it.scene if merged else ""})
        images, masks = _stack(rows, h, "label", cfg.tile, cfg.downsample)
        is_query = stratified_split([r["sub"] or r["scene"] for r in rows], cfg.query_fraction, seed)
    else:
        from hierars.data import read_retrieval_index

        data_dir = stage_paths(params)["data"] / "processed"
        raw = read_retrieval_index(data_dir)
        rows = [{**r, "name": Path(r["image"]).name, "sub": r["sub_label"]} for r in raw]
        images, masks = _stack(rows, h, "label" if cfg.labels == "whdld" else "label_mm5b")
        if cfg.split == "prepared":
            is_query = np.array([r["split"] == "query" for r in rows])
        else:
            is_query = stratified_split([r["scene"] for r in rows], cfg.query_fraction, seed)
    return _split(rows, ~is_query, images, masks), _split(rows, is_query, images, masks), h


def retrieval_outputs(params: Mapping[str, Any]) -> dict[str, Path]:
    """The stage's output paths (the same whatever the source: DVC declares them)."""
    p = stage_paths(params)
    return {"models": p["models"] / "retrieval", "metrics": p["reports"] / "metrics" / "retrieval.json",
            "table_md": p["reports"] / "retrieval" / "retrieval.md",
            "table_csv": p["reports"] / "retrieval" / "retrieval.csv",
            "gallery": p["reports"] / "figures" / "retrieval_gallery.png"}


def results_table(result: RetrievalResult):
    """The rows as a DataFrame indexed by (experiment, proportions, method)."""
    import pandas as pd

    return pd.DataFrame(result.rows).set_index(["experiment", "proportions", "method"])


TITLES = {
    "tableIV": "Table IV-style: all scene classes (relevance = merged scene label)",
    "tableIV_orig": "Table IV-style, original labels (relevance = scene, or the withheld sub-label)",
    "tableV": "Table V-style: residential queries (relevance = the withheld sub-label)",
}


def write_retrieval_outputs(params: Mapping[str, Any], cfg: RetrievalStageConfig, result: RetrievalResult
                            ) -> dict[str, Path]:
    """Write the metrics JSON (flat scalars) and the tables (Markdown + CSV); returns the output paths."""
    out = retrieval_outputs(params)
    df = results_table(result)
    atomic_write_json(out["metrics"], {k: (round(v, 6) if np.isfinite(v) else None)
                                       for k, v in sorted(result.metrics.items())})
    out["table_csv"].parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out["table_csv"], df.reset_index().to_csv(index=False, float_format="%.4f"))
    n = int(result.metrics["n_archive"])
    lines = [f"# Retrieval ({effective_source(params, cfg)}): CBIR vs LCBIR vs HIR", "",
             f"Archive {n} images, {int(result.metrics['n_query'])} queries "
             f"({int(result.metrics['n_query_residential'])} residential). Stage-1 shortlists K = {cfg.K} "
             f"(capped at the archive size {n}); stage 2 weights: w = 1, and w_{cfg.stage2_class()} = "
             f"{cfg.weight:g}; proportions: {cfg.mode}, level {cfg.level}. mAP@k = HIR / DeepHash convention "
             "(normalised by the relevant items found in the top k); mAP_std@k = standard AP@k (normalised by "
             "min(k, relevant items in the archive)). 'ground truth' rows: the same search with the archive's and "
             "queries' ground-truth proportions (an oracle for stage 2).", ""]
    cols = [c for c in df.columns if c.startswith(("mAP", "P@"))]
    for exp, title in TITLES.items():
        if exp not in df.index.get_level_values(0):
            continue
        sub = df.loc[exp][cols]
        lines += [f"## {title}", "", sub.to_markdown(floatfmt=".4f"), ""]
    oracle = {k: v for k, v in result.metrics.items() if k.startswith("oracle_loo")}
    lines += ["## Leave-one-out oracle among residential images (ground-truth proportions, Manhattan)", "",
              f"{int(result.metrics['n_residential'])} residential images; " +
              ", ".join(f"{k}: {v:.4f}" for k, v in sorted(oracle.items())), ""]
    atomic_write_text(out["table_md"], "\n".join(lines))
    write_ran_status(STAGE, out["table_md"].parent)
    return out


def config_summary(cfg: RetrievalStageConfig) -> str:
    """One JSON line of the effective settings (for the notebook)."""
    return json.dumps({**cfg.model_dump(), "segmenter": cfg.segmenter_config().model_dump(
        include=set(SEGMENTER_DEFAULTS) | {"num_threads"})}, default=str)

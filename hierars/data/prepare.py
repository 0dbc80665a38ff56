"""The prepare stage: generate (or point at) the data, write splits and normalisation statistics.

:func:`prepare` writes, under ``out_dir``::

    manifest.json    datasets: adapter, root, tree, bands, resolution, tile size, tiling rule
    splits.json      per dataset and split: the (image, label, scene, sub_label) rasters
    stats.json       per dataset: per-band mean / std / p02 / p98 over its train split
    summary.json     counts and class shares (the returned summary adds timings and the folder)

Every dataset entry of the manifest carries its band names (``bands``) and normalisation statistics
(``normalisation``: mean / std, the same numbers as ``stats.json``). For ``source: folder``
(:mod:`hierars.data.folder`) the labels are rewritten as leaf indices under ``folder/label/`` with the tree in
``folder/tree.yaml``; the images stay in place. For ``source: synthetic``, the generated rasters::

    mm5b/{rgb,gf2,s2}/{image,label}/scene_XXX.tif   MM-5B layout, 2 / 4 / 10 m, co-registered
    crop10m/{image,label}/scene_XXX.tif             Crop10m-like S2 domain (crop10m tree)
    whdld/{image,label}/scene_XXX.tif               WHDLD-like RGB domain (whdld tree)
    retrieval/{image,label,label_mm5b}/*.tif + index.csv   scene patches (scene + sub-label)

:func:`~hierars.data.datasets.build_dataset` turns a prepared folder (or a raw dataset root such as
``../shared/data/gid15``) into a :class:`~hierars.data.geotiff.GeoTiffDataset` with the stored
normalisation applied.

The stage lives here (manifest, splits, statistics, summary); the generated rasters come from
:mod:`hierars.data.generate`, the configuration from :mod:`hierars.data.config`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hierars.atomic import atomic_write_text
from hierars.data.config import PrepareConfig
from hierars.data.datasets import DATASETS, dataset_from_items, real_items, split_real
from hierars.data.folder import prepare_folder
from hierars.data.generate import write_crop10m, write_mm5b, write_retrieval, write_whdld
from hierars.data.labels import load_hierarchy, raw_values, unlabeled_value
from hierars.data.manifest import item_dict, rel_path
from hierars.data.rasters import RasterItem, open_raster, tile_windows
from hierars.data.stats import band_stats
from hierars.hierarchy import Hierarchy

__all__ = ["prepare", "load_hierarchy", "class_pixels"]


def prepare(cfg: PrepareConfig | Mapping, out_dir: str | Path) -> dict:
    """Run the prepare stage into ``out_dir`` (see the module docstring); returns the summary dict."""
    cfg = cfg if isinstance(cfg, PrepareConfig) else PrepareConfig(**cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.seed or 0)
    t0 = time.perf_counter()
    datasets: dict[str, dict] = {}
    splits: dict[str, dict[str, list[RasterItem]]] = {}
    timings: dict[str, float] = {}

    def entry(name: str, root: Path | str, tree: str | None, **kw) -> dict:
        d = dict(DATASETS.get(name, DATASETS.get(cfg.source, {})))
        d.update(root=rel_path(Path(root), out), tree=tree or d.get("tree"), **kw)
        if name in cfg.tile_size:
            d["tile_size"] = int(cfg.tile_size[name])
        return d

    if cfg.source == "synthetic":
        t = time.perf_counter()
        for s, sp in write_mm5b(cfg, out, seed).items():
            splits[s] = sp
            datasets[s] = entry(s, out / "mm5b", cfg.hierarchy or "mm5b", source=s)
        timings["mm5b"] = time.perf_counter() - t
        if cfg.crop10m.n_scenes:
            t = time.perf_counter()
            splits["crop10m"] = write_crop10m(cfg, out, seed)
            datasets["crop10m"] = entry("crop10m", out / "crop10m", "crop10m")
            timings["crop10m"] = time.perf_counter() - t
        if cfg.whdld.n_scenes:
            t = time.perf_counter()
            splits["whdld"] = write_whdld(cfg, out, seed)
            datasets["whdld"] = entry("whdld", out / "whdld", "whdld")
            timings["whdld"] = time.perf_counter() - t
        if cfg.retrieval.per_class or cfg.retrieval.per_density:
            t = time.perf_counter()
            splits["retrieval"] = write_retrieval(cfg, out, seed)
            datasets["retrieval"] = entry(
                "retrieval", out / "retrieval", "whdld", tile_size=cfg.retrieval.patch_px
            )
            timings["retrieval"] = time.perf_counter() - t
    elif cfg.source == "folder":
        t = time.perf_counter()
        splits["folder"], fields = prepare_folder(cfg.root, cfg.folder, load_hierarchy(cfg.hierarchy), out, seed,
                                                  strict=cfg.strict)  # fmt: skip
        datasets["folder"] = {"root": rel_path(Path(cfg.root), out), "tree_source": cfg.hierarchy} | fields
        timings["folder"] = time.perf_counter() - t
    else:
        root = Path(cfg.root)
        names = (
            list(cfg.sources)
            if cfg.source == "mm5b"
            else [cfg.source if cfg.source != "whdld" else "whdld_real"]
        )
        for name in names:
            items = real_items(name, root)
            tree = cfg.hierarchy or DATASETS.get(name, {}).get("tree")
            if tree is None:
                raise ValueError(f"prepare: no default tree for {cfg.source!r}; set prepare.hierarchy")
            ds = dataset_from_items(
                name, items, load_hierarchy(tree), DATASETS.get(name, {}), strict=cfg.strict
            )
            del ds  # validated: every pair exists, bands and shapes agree
            splits[name] = split_real(name, items, cfg.model_dump())
            datasets[name] = entry(name, root if name not in ("rgb", "gf2", "s2") else root, tree,
                                   source=name if name in ("rgb", "gf2", "s2") else None)  # fmt: skip
    t = time.perf_counter()
    stats = {}
    for name, sp in splits.items():
        train = sp.get("train") or sp.get("archive")
        d = datasets[name]
        stats[name] = band_stats(train, seed=seed, desc=f"stats {name}", indexes=d.get("band_indexes"),
                                 nodata=d.get("nodata")) | {"bands": d["bands"]}  # fmt: skip
        d["normalisation"] = {"mean": stats[name]["mean"], "std": stats[name]["std"]}
    timings["stats"] = time.perf_counter() - t
    manifest = {"kind": cfg.source, "seed": seed, "config": cfg.model_dump(), "datasets": datasets}
    split_json = {
        n: {k: [item_dict(it, out) for it in v] for k, v in sp.items()} for n, sp in splits.items()
    }
    summary = {
        "kind": cfg.source,
        "out_dir": str(out),
        "datasets": {
            n: {k: len(v) for k, v in sp.items()} | {"samples": {k: _count_tiles(out, n, datasets[n], v) for k, v in sp.items()}}
            for n, sp in splits.items()
        },
        "seconds": {k: round(v, 2) for k, v in timings.items()} | {"total": round(time.perf_counter() - t0, 2)},
    }  # fmt: skip
    if cfg.source != "synthetic":
        summary["class_pixels"] = {n: class_pixels(n, datasets[n], sp, out) for n, sp in splits.items()}
    if cfg.source == "synthetic":
        h = load_hierarchy(cfg.hierarchy or "mm5b")
        gf = splits.get("gf2") or next(iter(splits.values()))
        summary["class_shares_4m"] = _class_shares([it.label for v in gf.values() for it in v], h)
    # summary.json leaves out the run's timings and absolute folder, so the stage's output is byte-identical
    # for the same settings (DVC's hash of data/processed reproduces); the returned summary has them.
    stored = {k: v for k, v in summary.items() if k not in ("out_dir", "seconds")}
    for fname, obj in (("manifest.json", manifest), ("splits.json", split_json), ("stats.json", stats),
                       ("summary.json", stored)):  # fmt: skip
        atomic_write_text(out / fname, json.dumps(obj, indent=1, sort_keys=False) + "\n")
    return summary


def class_pixels(name: str, spec: Mapping, split: Mapping[str, list[RasterItem]], out: Path) -> dict:
    """Labelled pixels per leaf in every split of a prepared dataset: ``{split: {leaf: n}}`` (ignore left out)."""
    tree = spec["tree"]
    h = load_hierarchy(out / tree if str(tree).endswith((".yaml", ".yml")) and not Path(tree).is_absolute() else tree)
    res = {}
    for part, items in split.items():
        ds = dataset_from_items(name, items, h, spec, strict=False)
        n = np.zeros(h.num_classes[-1], np.int64)
        for i in tqdm(range(len(ds)), desc=f"class pixels {name} {part}", leave=False):
            fine = ds.label(i)[-1].numpy().ravel()
            n += np.bincount(fine[fine != h.ignore_index], minlength=len(n))[: len(n)]
        res[part] = {leaf: int(v) for leaf, v in zip(h.names[-1], n, strict=True)}
    return res


def _count_tiles(out: Path, name: str, spec: Mapping, items: list[RasterItem]) -> int:
    n = 0
    for it in items:
        with open_raster(it.image) as ds:
            n += len(tile_windows(ds.height, ds.width, spec.get("tile_size"), spec.get("fit", "pad")))
    return n


def _class_shares(paths: list[Path], h: Hierarchy) -> dict[str, float]:
    import rasterio

    raw = raw_values(h)
    counts = np.zeros(256, np.int64)
    for p in paths:
        with rasterio.open(p) as ds:
            counts += np.bincount(ds.read(1).ravel(), minlength=256)[:256]
    tot = counts.sum()
    out = {leaf: round(float(counts[v] / tot), 5) for leaf, v in raw.items()}
    out["unlabeled"] = round(float(counts[unlabeled_value(h)] / tot), 5)
    return out

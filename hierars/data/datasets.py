"""Reading prepared or raw data: the known dataset layouts (:data:`DATASETS`), the real-data adapters
and split rules, :func:`build_dataset` (a split of a prepared folder or raw dataset root as a
:class:`~hierars.data.geotiff.GeoTiffDataset`) and :func:`read_retrieval_index`."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from hierars.data import synthetic as syn
from hierars.data.adapters import (
    WHDLD_COLORS,
    agnet_items,
    dlrsd_items,
    folder_items,
    gid15_items,
    mm5b_items,
    whdld_items,
)
from hierars.data.geotiff import GeoTiffDataset
from hierars.data.labels import load_hierarchy
from hierars.data.manifest import item_from
from hierars.data.rasters import RasterItem
from hierars.data.stats import band_stats
from hierars.hierarchy import Hierarchy

__all__ = ["DATASETS", "build_dataset", "read_retrieval_index", "real_items", "split_real", "dataset_from_items"]

#: dataset name -> default tree, tile size, tiling rule, bands, resolution (m) for the synthetic and real data.
DATASETS: dict[str, dict] = {
    "rgb": {"adapter": "mm5b", "tree": "mm5b", "tile_size": 128, "fit": "pad", "bands": list(syn.SOURCES["rgb"][1]),
            "resolution_m": 2.0},
    "gf2": {"adapter": "mm5b", "tree": "mm5b", "tile_size": 128, "fit": "pad", "bands": list(syn.SOURCES["gf2"][1]),
            "resolution_m": 4.0},
    "s2": {"adapter": "mm5b", "tree": "mm5b", "tile_size": 128, "fit": "pad", "bands": list(syn.SOURCES["s2"][1]),
           "resolution_m": 10.0},
    "crop10m": {"adapter": "folder", "tree": "crop10m", "tile_size": 128, "fit": "pad",
                "bands": list(syn.SOURCES["s2"][1]), "resolution_m": 10.0},
    "whdld": {"adapter": "folder", "tree": "whdld", "tile_size": 256, "fit": "pad",
              "bands": list(syn.SOURCES["rgb"][1]), "resolution_m": 2.0},
    "retrieval": {"adapter": "retrieval", "tree": "whdld", "tile_size": None, "fit": "crop",
                  "bands": list(syn.SOURCES["rgb"][1]), "resolution_m": 2.0},
    "gid15": {"adapter": "gid15", "tree": "gid15", "tile_size": 224, "fit": "crop", "bands": ["red", "green", "blue"],
              "resolution_m": 4.0},
    "agnet": {"adapter": "agnet", "tree": "agnet_lclu", "tile_size": 128, "fit": "crop",
              "bands": ["B1", "B2", "B3", "B4", "B5", "B6", "B7"], "resolution_m": 30.0},
    "whdld_real": {"adapter": "whdld", "tree": "whdld", "tile_size": 256, "fit": "crop", "bands": ["red", "green", "blue"],
                   "resolution_m": 2.0},
    "dlrsd": {"adapter": "dlrsd", "tree": None, "tile_size": 256, "fit": "crop", "bands": ["red", "green", "blue"],
              "resolution_m": 0.3},
}  # fmt: skip



def split_real(source: str, items: list[RasterItem], cfg_like: Mapping) -> dict[str, list[RasterItem]]:
    """gid15: stratified by scene folder; agnet: by tile-grid rows (``val_rows``, ``buffer_rows``
    dropped); others: seeded random by raster."""
    rng = np.random.default_rng(cfg_like.get("seed", 0) or 0)
    vf = float(cfg_like.get("val_fraction", 0.25))
    if source == "agnet":
        val_rows, buf = set(cfg_like.get("val_rows", [24, 25])), set(cfg_like.get("buffer_rows", []))
        rows = {it.extra["row"] for it in items}
        if not val_rows & rows:
            raise ValueError(f"agnet: val_rows {sorted(val_rows)} are not among the tile rows {sorted(rows)}")
        return {"train": [it for it in items if it.extra["row"] not in val_rows | buf],
                "val": [it for it in items if it.extra["row"] in val_rows]}  # fmt: skip
    groups: dict[str, list[RasterItem]] = {}
    for it in items:
        groups.setdefault(it.scene if source == "gid15" else "", []).append(it)
    train, val = [], []
    for key in sorted(groups):
        g = groups[key]
        perm = rng.permutation(len(g))
        k = int(round(vf * len(g)))
        val += [g[i] for i in sorted(perm[:k])]
        train += [g[i] for i in sorted(perm[k:])]
    return {"train": train, "val": val}


def real_items(source: str, root: Path, mm5b_source: str | None = None) -> list[RasterItem]:
    if source == "gid15":
        return gid15_items(root)
    if source == "agnet":
        return agnet_items(root)
    if source == "whdld_real":
        return whdld_items(root)
    if source == "dlrsd":
        return dlrsd_items(root)
    if source in ("rgb", "gf2", "s2"):
        return mm5b_items(root, source)
    if source == "folder":
        return folder_items(root / "image", root / "label")
    raise ValueError(f"unknown dataset source {source!r}; expected one of {sorted(DATASETS)} or 'folder'")

def dataset_from_items(name: str, items: list[RasterItem], h: Hierarchy, spec: Mapping, *, mean=None, std=None,
                        transforms=None, tile_size=None, fit=None, strict=True) -> GeoTiffDataset:  # fmt: skip
    return GeoTiffDataset(
        items, h, tile_size=tile_size if tile_size is not None else spec.get("tile_size"),
        fit=fit or spec.get("fit", "pad"), mean=mean, std=std, transforms=transforms, source=name, strict=strict,
        label_colors=WHDLD_COLORS if spec.get("adapter") == "whdld" else None, band_names=spec.get("bands"),
        band_indexes=spec.get("band_indexes"), image_nodata=spec.get("nodata"),
    )  # fmt: skip


_DIRECT_STATS: dict[tuple[str, str], dict] = {}


def build_dataset(
    data_dir: str | Path,
    split: str,
    hierarchy: Hierarchy | str | Path | None = None,
    source: str = "s2",
    transforms: Callable[[dict], dict] | None = None,
    *,
    tile_size: int | None = None,
    fit: str | None = None,
    normalize: bool = True,
    strict: bool = True,
    stats: Mapping | None = None,
) -> GeoTiffDataset:
    """The ``split`` of dataset ``source`` as a :class:`GeoTiffDataset` of design-doc samples.

    ``data_dir`` is a prepared folder (with ``manifest.json``; ``source`` is one of its datasets:
    ``rgb`` / ``gf2`` / ``s2`` / ``crop10m`` / ``whdld`` / ``retrieval`` for the synthetic data,
    ``gid15`` / ``agnet`` / ... for prepared real data) or a raw dataset root read directly
    (``source`` = ``gid15``, ``agnet``, ``rgb``/``gf2``/``s2`` for an MM-5B root, ``whdld_real``,
    ``dlrsd``; splits follow the prepare rules with their defaults, statistics are computed on the
    fly from the train split and cached in memory).
    ``split``: ``train`` / ``val`` (``archive`` / ``query`` for ``retrieval``) or ``all``.
    ``hierarchy``: a Hierarchy, a tree YAML or a short name; default: the dataset's tree
    (e.g. ``agnet`` -> ``agnet_lclu``; pass ``"agnet_crop"`` for the crop tree).
    Images are normalised per band with the stored mean / std unless ``normalize=False``; ``stats``
    (``{"mean": [C], "std": [C]}``) normalises with other statistics instead, e.g. a transfer target's images
    normalised the way the source model saw its training data.
    """
    base, override = Path(data_dir), stats
    if not base.is_dir():
        raise FileNotFoundError(f"data folder not found: {base}")
    man = base / "manifest.json"
    if man.exists():
        manifest = json.loads(man.read_text())
        if source not in manifest["datasets"]:
            raise ValueError(f"{man}: no dataset {source!r}; available: {sorted(manifest['datasets'])}")
        spec = manifest["datasets"][source]
        all_splits = json.loads((base / "splits.json").read_text())[source]
        stats = json.loads((base / "stats.json").read_text())[source]
        by_split = {k: [item_from(d, base) for d in v] for k, v in all_splits.items()}
    else:
        if source not in DATASETS and source != "folder":
            raise ValueError(f"{base} has no manifest.json; source must name a raw layout {sorted(DATASETS)}")
        spec = dict(DATASETS.get(source, {"tile_size": None, "fit": "pad", "tree": None}))
        items = real_items(source, base)
        by_split = split_real(source, items, {"seed": 0})
        key = (str(base), source)
        if normalize and key not in _DIRECT_STATS:
            _DIRECT_STATS[key] = band_stats(by_split["train"], desc=f"stats {source}")
        stats = _DIRECT_STATS.get(key)
    if split == "all":
        items = [it for v in by_split.values() for it in v]
    elif split in by_split:
        items = by_split[split]
    else:
        raise ValueError(f"dataset {source!r} has splits {sorted(by_split)} (or 'all'), not {split!r}")
    tree = hierarchy if hierarchy is not None else spec.get("tree")
    if tree is None:
        raise ValueError(f"dataset {source!r} has no default tree; pass hierarchy=")
    if hierarchy is None and Path(str(tree)).suffix in (".yaml", ".yml") and not Path(tree).is_absolute():
        tree = base / tree  # a prepared folder's own tree (folder source: folder/tree.yaml)
    h = load_hierarchy(tree)
    if normalize and override is not None:
        stats = override
    mean = stats["mean"] if normalize and stats else None
    std = stats["std"] if normalize and stats else None
    return dataset_from_items(source, items, h, spec, mean=mean, std=std, transforms=transforms,
                               tile_size=tile_size, fit=fit, strict=strict)  # fmt: skip



def read_retrieval_index(data_dir: str | Path) -> list[dict]:
    """Rows of ``retrieval/index.csv`` with absolute paths: image, label (whdld tree), label_mm5b,
    scene (training label; residential merged), sub_label (dense / medium / sparse, withheld), split."""
    base = Path(data_dir)
    p = base / "retrieval" / "index.csv"
    if not p.exists():
        raise FileNotFoundError(
            f"retrieval index not found: {p} (run the prepare stage with retrieval.per_class > 0)"
        )
    with open(p) as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("image", "label", "label_mm5b"):
            r[k] = str(base / r[k])
        r["withheld"] = bool(int(r["withheld"]))
    return rows

"""The ``folder`` source of the prepare stage: any folder of GeoTIFF images with GeoTIFF / PNG / JPEG labels.

:func:`prepare_folder` does everything the prepare stage needs for it, as described by
:class:`~hierars.data.config.FolderConfig` (``prepare.folder`` in ``params.yaml``):

1. pair images and labels by key (:func:`folder_pairs`; an image without a label is an error);
2. check every pair (:func:`check_pair`): readable, not empty, the selected bands exist, image and label
   agree in size, and in transform and CRS when the label is georeferenced (PNG / JPEG labels usually are
   not: then size only); JPEG labels warn (lossy compression changes label values);
3. read every image through (truncated files fail here, not in training) and every label, map its raw values
   to leaves (``mapping``, else the tree's ``label_values``, else 0..C-1) and check them against the tree: a
   value that is neither a leaf nor ignored is an error naming the file and the values;
4. write each label as a GeoTIFF of leaf indices (uint8, 255 = ignore) on its image's grid under
   ``<out>/folder/label/<key>.tif`` with the tree's colour table, and the tree under ``<out>/folder/tree.yaml``
   (the user's tree with ``label_values`` = leaf indices), so the prepared dataset is self-contained;
5. split the rasters (:func:`split_folder`): seeded random, by list files, or by spatial blocks.

Images are read in place (never copied); training reads the selected bands through
:class:`~hierars.data.geotiff.GeoTiffDataset` (``band_indexes``).
"""

from __future__ import annotations

import glob
import math
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
import yaml
from rasterio.errors import RasterioError
from rasterio.windows import Window
from tqdm.auto import tqdm

from hierars.atomic import atomic_path, atomic_write_text
from hierars.data.config import FolderConfig, FolderSplit
from hierars.data.rasters import RasterItem, open_raster
from hierars.hierarchy import Hierarchy

__all__ = ["folder_pairs", "check_pair", "label_lookup", "convert_label", "split_folder", "prepare_folder",
           "prepared_tree"]

IGNORE = 255  # ignore value of the prepared label rasters (uint8)
_WILD = set("*?[")


def _glob_base(pattern: str) -> str:
    """The leading folders of a glob that hold no wildcard (``image/**/*.tif`` -> ``image``)."""
    parts = Path(pattern).parts
    fixed = []
    for p in parts[:-1]:
        if _WILD & set(p):
            break
        fixed.append(p)
    return str(Path(*fixed)) if fixed else ""


def _key(path: Path, base: Path, suffix: str | None) -> str:
    rel = path.relative_to(base).as_posix()
    cut = suffix if suffix is not None else path.suffix
    if cut and not rel.endswith(cut):
        raise ValueError(f"{path}: name does not end with the suffix {cut!r} that pairs it")
    return rel[: len(rel) - len(cut)] if cut else rel


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(root / pattern), recursive=True) if Path(p).is_file())


def folder_pairs(root: str | Path, fc: FolderConfig) -> list[RasterItem]:
    """(image, label) pairs under ``root`` matched by key (see :class:`FolderConfig`); ``extra["key"]`` holds
    the key, ``scene`` its first sub-folder (or ``""``). Raises naming the folder / image on a missing match."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"prepare.root folder not found: {root}")
    images = _files(root, fc.images)
    if not images:
        raise FileNotFoundError(f"no images matching prepare.folder.images={fc.images!r} in {root}")
    labels = _files(root, fc.labels)
    if not labels:
        raise FileNotFoundError(f"no labels matching prepare.folder.labels={fc.labels!r} in {root}")
    ibase, lbase = root / _glob_base(fc.images), root / _glob_base(fc.labels)
    by_key: dict[str, Path] = {}
    for f in labels:
        k = _key(f, lbase, fc.label_suffix)
        if k in by_key:
            raise ValueError(f"labels {by_key[k]} and {f} have the same key {k!r}; set prepare.folder.label_suffix")
        by_key[k] = f
    items, used = [], set()
    for f in images:
        k = _key(f, ibase, fc.image_suffix)
        if k not in by_key:
            raise FileNotFoundError(f"no label for image {f}: expected one matching {fc.labels!r} with key {k!r} "
                                    f"(label_suffix={fc.label_suffix!r})")  # fmt: skip
        used.add(k)
        scene = k.split("/")[0] if "/" in k else ""
        items.append(RasterItem(f, by_key[k], scene=scene, extra={"key": k}))
    if len(used) < len(by_key):
        extra = sorted(set(by_key) - used)
        warnings.warn(f"{len(extra)} label(s) under {root} have no image, e.g. {by_key[extra[0]]}", stacklevel=2)
    return items


def _open(path: Path, what: str):
    if Path(path).exists() and Path(path).stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes)")
    return open_raster(path)


def check_pair(it: RasterItem, fc: FolderConfig) -> dict:
    """Headers of one pair checked against each other and ``fc``; returns the image's
    ``{"height", "width", "count", "crs", "transform", "descriptions"}``."""
    with _open(it.image, "image") as ds:
        hdr = {"height": ds.height, "width": ds.width, "count": ds.count, "crs": ds.crs,
               "transform": ds.transform, "descriptions": list(ds.descriptions)}  # fmt: skip
    if fc.bands is not None and max(fc.bands) > hdr["count"]:
        raise ValueError(f"image {it.image} has {hdr['count']} bands; prepare.folder.bands asks for {fc.bands}")
    with _open(it.label, "label") as ls:
        if ls.driver == "JPEG":
            warnings.warn(f"label {it.label} is a JPEG: lossy compression alters label values near edges; "
                          "prefer PNG or GeoTIFF labels", stacklevel=2)  # fmt: skip
        if (ls.height, ls.width) != (hdr["height"], hdr["width"]):
            raise ValueError(f"size mismatch: image {it.image} is {hdr['height']}x{hdr['width']} but label "
                             f"{it.label} is {ls.height}x{ls.width}")  # fmt: skip
        if ls.count != 1:
            raise ValueError(f"label {it.label} has {ls.count} bands; labels must be single-band class values")
        # what the label declares must agree (a PNG with a world file has a transform but usually no CRS)
        if ls.crs is not None and ls.crs != hdr["crs"]:
            raise ValueError(f"CRS mismatch: image {it.image} is {hdr['crs']} but label {it.label} is {ls.crs}")
        tol = 1e-6 * max(1.0, abs(hdr["transform"].a))
        if not ls.transform.is_identity and not ls.transform.almost_equals(hdr["transform"], precision=tol):
            raise ValueError(f"transform mismatch: image {it.image} has {tuple(hdr['transform'])[:6]} but label "
                             f"{it.label} has {tuple(ls.transform)[:6]}")  # fmt: skip
    return hdr


def label_lookup(h: Hierarchy, fc: FolderConfig) -> tuple[dict[int, int], set[int]]:
    """Raw label value -> leaf index, and the raw values that mean "no label".

    ``fc.mapping`` (leaf index or name) if given, else the tree's ``label_values``, else 0..C-1 themselves."""
    leaves = h.names[-1]
    if fc.mapping:
        lut = {}
        for raw, leaf in fc.mapping.items():
            if isinstance(leaf, str):
                if leaf not in leaves:
                    raise ValueError(f"prepare.folder.mapping[{raw}] = {leaf!r} is not a leaf of {h.name!r}: {leaves}")
                lut[int(raw)] = leaves.index(leaf)
            elif not 0 <= leaf < len(leaves):
                raise ValueError(f"prepare.folder.mapping[{raw}] = {leaf}: leaf indices of {h.name!r} are "
                                 f"0..{len(leaves) - 1}")  # fmt: skip
            else:
                lut[int(raw)] = int(leaf)
    elif h.leaf_raw_values:
        lut = {v: leaves.index(leaf) for leaf, vs in h.leaf_raw_values.items() for v in vs}
    else:
        lut = {i: i for i in range(len(leaves))}
    ignore = set(fc.ignore) | (set() if fc.mapping else set(h.ignore_values))
    return lut, ignore - set(lut)


def _strip_codes(raw: np.ndarray, nodata, lut: Mapping[int, int], ignore: set[int], where: Path,
                 bad: set) -> np.ndarray:  # fmt: skip
    """Raw label values (any shape) -> leaf indices (uint8, 255 = ignore); values neither mapped nor ignored are
    added to ``bad`` and become 255."""
    if np.issubdtype(raw.dtype, np.floating):
        finite = np.isfinite(raw)
        if not np.all(raw[finite] == np.round(raw[finite])):
            raise ValueError(f"label {where}: non-integer label values (dtype {raw.dtype})")
    vals, inv = np.unique(raw, return_inverse=True)
    codes = np.full(len(vals), IGNORE, np.uint8)
    for i, v in enumerate(vals.tolist()):
        if nodata is not None and (v == nodata or (np.isnan(nodata) and np.isnan(v))):
            continue
        if np.isfinite(v) and int(v) in lut:
            codes[i] = lut[int(v)]
        elif not (np.isfinite(v) and int(v) in ignore):
            bad.add(v)
    return codes[inv.reshape(raw.shape)]


def convert_label(it: RasterItem, hdr: Mapping, lut: Mapping[int, int], ignore: set[int], out_path: Path,
                  colormap: Mapping[int, tuple], strict: bool = True, rows: int = 512) -> Path:  # fmt: skip
    """Write ``it.label`` as leaf indices (uint8 H x W, 255 = ignore) on the image's grid (``hdr``: CRS and
    transform), ``rows`` rows at a time (memory is bounded for large scenes). Values neither in ``lut`` nor
    ignored are an error naming the file and the values (``strict``; no file is written) or become ignore."""
    h, w = hdr["height"], hdr["width"]
    profile = {"driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "uint8", "crs": hdr["crs"],
               "transform": hdr["transform"], "compress": "deflate", "predictor": 2, "nodata": IGNORE}  # fmt: skip
    if h >= 128 and w >= 128:
        profile |= {"tiled": True, "blockxsize": 128, "blockysize": 128}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    bad: set = set()
    with _open(it.label, "label") as ls, atomic_path(out_path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, h, rows):
            win = Window(0, r0, w, min(rows, h - r0))
            try:
                raw = ls.read(1, window=win)
            except RasterioError as e:
                raise ValueError(f"label {it.label}: cannot read its pixels (truncated or corrupt?): {e}") from None
            dst.write(_strip_codes(raw, ls.nodata, lut, ignore, it.label, bad), 1, window=win)
        dst.write_colormap(1, dict(colormap))
        if bad and strict:
            shown = sorted(bad)[:10]
            raise ValueError(f"label {it.label}: values {shown}{' ...' if len(bad) > 10 else ''} are neither mapped "
                             "to a leaf of the tree nor ignored (prepare.folder.mapping / ignore, or the tree's "
                             "label_values)")  # fmt: skip
    return Path(out_path)


def _read_through(it: RasterItem, fc: FolderConfig, nodata: float | None) -> None:
    """Read every block of the selected bands (truncated files fail here); NaN / inf that is not nodata fails."""
    with _open(it.image, "image") as ds:
        nd = ds.nodata if ds.nodata is not None else nodata
        for _, win in ds.block_windows(1):
            try:
                a = ds.read(fc.bands, window=win)
            except RasterioError as e:
                raise ValueError(f"image {it.image}: cannot read its pixels (truncated or corrupt?): {e}") from None
            if np.issubdtype(a.dtype, np.floating):
                bad = ~np.isfinite(a)
                if nd is not None and np.isnan(nd):
                    bad &= ~np.isnan(a)
                if bad.any():
                    raise ValueError(f"image {it.image}: NaN / inf pixel values; set prepare.folder.nodata or fix it")


def _block_of(hdr: Mapping, split: FolderSplit) -> tuple[int, int]:
    t = hdr["transform"]
    cx, cy = t * (hdr["width"] / 2, hdr["height"] / 2)
    size = split.block_size * (abs(t.a) if split.block_units == "pixels" else 1.0)
    return math.floor(cx / size), math.floor(cy / size)


def _read_list(root: Path, path: str) -> list[tuple[int, str]]:
    p = Path(path) if Path(path).is_absolute() else root / path
    if not p.is_file():
        raise FileNotFoundError(f"split list file not found: {p}")
    lines = [(i + 1, ln.split("#")[0].strip()) for i, ln in enumerate(p.read_text().splitlines())]
    return [(i, ln) for i, ln in lines if ln]


def split_folder(items: Sequence[RasterItem], split: FolderSplit, seed: int,
                 root: str | Path, headers: Sequence[Mapping] | None = None) -> dict[str, list[RasterItem]]:  # fmt: skip
    """``{"train": [...], "val": [...]}`` by the split rule (:class:`~hierars.data.config.FolderSplit`). Block
    splits need ``headers`` (from :func:`check_pair`) and record each item's block in ``extra["block"]``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    if split.kind == "files":
        names: dict[str, int] = {}
        for j, it in enumerate(items):
            for n in {Path(it.image).relative_to(root).as_posix() if Path(it.image).is_relative_to(root) else "",
                      Path(it.image).name, it.extra.get("key", "")} - {""}:  # fmt: skip
                names.setdefault(n, j)
        chosen: dict[str, set[int]] = {}
        for part in ("train", "val"):
            chosen[part] = set()
            for lineno, ln in _read_list(root, getattr(split, f"{part}_list")):
                if ln not in names:
                    raise ValueError(f"{getattr(split, f'{part}_list')}:{lineno}: {ln!r} names no image matched by "
                                     "prepare.folder.images")  # fmt: skip
                chosen[part].add(names[ln])
        both = chosen["train"] & chosen["val"]
        if both:
            raise ValueError(f"split lists {split.train_list} and {split.val_list} both name {items[min(both)].image}")
        out = {p: [items[j] for j in sorted(chosen[p])] for p in ("train", "val")}
    elif split.kind == "blocks":
        if headers is None:
            raise ValueError("a block split needs the image headers")
        for it, hd in zip(items, headers, strict=True):
            if hd["transform"].is_identity:
                raise ValueError(f"image {it.image} has no georeferencing (identity transform): a block split needs "
                                 "map positions; use kind 'random' or 'files'")  # fmt: skip
        blocks = [_block_of(hd, split) for hd in headers]
        uniq = sorted(set(blocks))
        if len(uniq) < 2:
            raise ValueError(f"prepare.folder.split: every image falls in one block of size {split.block_size} "
                             f"({split.block_units}); use smaller blocks")  # fmt: skip
        k = min(len(uniq) - 1, max(1, round(split.val_fraction * len(uniq))))
        val_blocks = {uniq[i] for i in rng.permutation(len(uniq))[:k]}

        def near_val(b: tuple[int, int]) -> bool:
            return any(max(abs(b[0] - v[0]), abs(b[1] - v[1])) <= split.buffer for v in val_blocks)

        items = [RasterItem(it.image, it.label, it.scene, it.sub_label, it.extra | {"block": list(b)})
                 for it, b in zip(items, blocks, strict=True)]  # fmt: skip
        out = {"train": [it for it, b in zip(items, blocks, strict=True) if not near_val(b)],
               "val": [it for it, b in zip(items, blocks, strict=True) if b in val_blocks]}  # fmt: skip
    else:
        groups: dict[str, list[RasterItem]] = {}
        for it in items:
            groups.setdefault(it.scene, []).append(it)
        out = {"train": [], "val": []}
        for key in sorted(groups):
            g = groups[key]
            perm = rng.permutation(len(g))
            k = int(round(split.val_fraction * len(g)))
            out["val"] += [g[i] for i in sorted(perm[:k])]
            out["train"] += [g[i] for i in sorted(perm[k:])]
    for part, lst in out.items():
        if not lst:
            raise ValueError(f"prepare.folder.split ({split.kind}) leaves the {part} split empty "
                             f"({len(items)} images); change the fraction, lists or block size")  # fmt: skip
    return out


def prepared_tree(h: Hierarchy) -> Hierarchy:
    """The tree with ``label_values`` = leaf indices and 255 as the ignore value (how prepared labels are written)."""
    if h.num_classes[-1] > IGNORE:
        raise ValueError(f"tree {h.name!r} has {h.num_classes[-1]} leaves; the folder source stores uint8 labels (<= 255)")
    d = h.to_dict() | {"label_values": {leaf: i for i, leaf in enumerate(h.names[-1])}, "ignore_values": [IGNORE]}
    return Hierarchy(d["tree"], label_values=d["label_values"], ignore_values=d["ignore_values"],
                     ignore_index=d["ignore_index"], name=d["name"], colors=d.get("colors") or {})  # fmt: skip


def prepare_folder(root: str | Path, fc: FolderConfig, h: Hierarchy, out: str | Path, seed: int = 0,
                   strict: bool = True) -> tuple[dict[str, list[RasterItem]], dict]:  # fmt: skip
    """Check, convert and split a folder dataset into ``out/folder/`` (see the module docstring).

    Returns the splits and the dataset's manifest fields (``tree``, ``bands``, ``band_indexes``, ``nodata``,
    ``tile_size``, ``fit``, ``crs``, ``resolution``)."""
    root, out = Path(root), Path(out)
    items = folder_pairs(root, fc)
    headers = [check_pair(it, fc) for it in tqdm(items, desc="check folder pairs", leave=False)]
    counts = {hd["count"] for hd in headers}
    if fc.bands is None and len(counts) > 1:
        bad = next(it for it, hd in zip(items, headers, strict=True) if hd["count"] != headers[0]["count"])
        raise ValueError(f"image {bad.image} has a different band count than {items[0].image} ({sorted(counts)}); "
                         "select bands with prepare.folder.bands")  # fmt: skip
    lut, ignore = label_lookup(h, fc)
    ph = prepared_tree(h)
    pal = ph.palettes()[-1]
    cmap = {i: (*map(int, pal[i]), 255) for i in range(ph.num_classes[-1])} | {IGNORE: (0, 0, 0, 0)}
    dst = out / "folder"
    if (dst / "label").is_dir():
        shutil.rmtree(dst / "label")  # labels of an earlier run that may no longer exist
    converted = []
    for it, hd in tqdm(list(zip(items, headers, strict=True)), desc="read + convert folder", leave=False):
        _read_through(it, fc, fc.nodata)
        lab = dst / "label" / f"{it.extra['key']}.tif"
        convert_label(it, hd, lut, ignore, lab, cmap, strict=strict)
        converted.append(RasterItem(it.image, lab, it.scene, it.sub_label, it.extra))
    atomic_write_text(dst / "tree.yaml", yaml.safe_dump(ph.to_dict(), sort_keys=False))
    splits = split_folder(converted, fc.split, seed, root, headers)
    nb = len(fc.bands) if fc.bands is not None else headers[0]["count"]
    idx = fc.bands or list(range(1, nb + 1))
    names = fc.band_names or [headers[0]["descriptions"][i - 1] or f"B{i}" for i in idx]
    t0 = headers[0]["transform"]
    entry = {
        "adapter": "folder", "tree": "folder/tree.yaml", "tile_size": fc.tile_size, "fit": fc.fit, "bands": names,
        "band_indexes": fc.bands, "nodata": fc.nodata, "crs": headers[0]["crs"].to_string() if headers[0]["crs"] else None,
        "resolution": abs(t0.a),
    }  # fmt: skip
    return splits, entry

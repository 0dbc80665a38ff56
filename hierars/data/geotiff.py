"""One GeoTIFF-folder dataset for every layout, plus thin adapters that list (image, label) pairs.

:class:`GeoTiffDataset` tiles rasters into fixed windows (windowed reads: large scenes are never
read whole), encodes raw labels through a :class:`~hierars.hierarchy.Hierarchy`, applies per-band
normalisation and returns design-doc samples::

    {"image": float32 C x T x T, "mask": int64 L x T x T (255 = ignore at every level),
     "meta": {"path", "label_path", "source", "scene", "sub_label", "crs", "transform" (float64 6),
              "window" (int64 4: row_off, col_off, height, width)}}

Adapters (``*_items``) know a dataset's folder layout and return :class:`RasterItem` lists:

- :func:`gid15_items` - ``image/<scene>/<n>.tif`` + ``label_gray/<scene>/<n>.tif`` (scene = folder);
- :func:`agnet_items` - ``image/lc8_<date>_<row>_<col>.tif`` + ``target/cdl_<date>_<row>_<col>.tif``;
- :func:`mm5b_items` - ``<source>/image/<scene>.tif`` + ``<source>/label/<scene>.tif`` per source
  (labels already on each source's grid; :func:`resample_label` makes them from 4 m labels);
- :func:`whdld_items` - ``Images/<id>.jpg`` + ``ImagesPNG/<id>.png`` (colour-coded labels);
- :func:`dlrsd_items` - ``Images/<class>/<id>.tif`` + ``Labels/<class>/<id>.png`` (scene = class;
  dense / medium / sparse residential become scene ``residential`` with that sub-label);
- :func:`folder_items` - any ``image_dir`` / ``label_dir`` pair matched by file stem.

Bad input raises ``FileNotFoundError`` / ``ValueError`` naming the file: missing label, band-count
or shape mismatch, unreadable raster, NaN / inf pixels, raw label values outside the tree
(``strict=True``), empty folders. Nodata (the raster's nodata value) becomes ignore (255).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window
from torch.utils.data import Dataset

from hierars.hierarchy import Hierarchy

__all__ = [
    "RasterItem",
    "GeoTiffDataset",
    "tile_windows",
    "read_raster",
    "gid15_items",
    "agnet_items",
    "mm5b_items",
    "whdld_items",
    "dlrsd_items",
    "folder_items",
    "WHDLD_COLORS",
    "resample_label",
    "write_geotiff",
]

#: WHDLD label colours (ImagesPNG) -> class name.
WHDLD_COLORS: dict[tuple[int, int, int], str] = {
    (255, 0, 0): "building", (255, 255, 0): "road", (192, 192, 0): "pavement",
    (0, 255, 0): "vegetation", (128, 128, 128): "bare_soil", (0, 0, 255): "water",
}  # fmt: skip


@dataclass(frozen=True)
class RasterItem:
    """One image raster and its label raster (``label=None``: unlabelled, mask all 255)."""

    image: Path
    label: Path | None
    scene: str = ""
    sub_label: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def _open(path: Path):
    """rasterio.open with a clear error naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"raster not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as e:
        raise ValueError(f"{path}: unreadable or corrupt raster ({e})") from None


def read_raster(path: Path, window: Window | None = None, boundless: bool = False, fill=0) -> np.ndarray:
    """Read all bands of ``path`` (C x H x W, native dtype), optionally a window; errors name the file."""
    with _open(path) as ds:
        try:
            return ds.read(window=window, boundless=boundless, fill_value=fill)
        except RasterioError as e:
            raise ValueError(f"{path}: failed to read pixels ({e})") from None


def tile_windows(height: int, width: int, tile: int | None, fit: str = "pad") -> list[Window]:
    """Windows of ``tile x tile`` over a ``height x width`` raster.

    ``fit``: ``"crop"`` - non-overlapping tiles from the top-left, the remainder dropped (a raster
    smaller than a tile gives one padded tile); ``"pad"`` - non-overlapping tiles covering
    everything, the last row/column of tiles reaching past the edge (read boundless, padded with
    ignore); ``"cover"`` - overlapping tiles, the last one aligned to the edge (sliding window).
    ``tile=None``: one window over the whole raster.
    """
    if tile is None:
        return [Window(0, 0, width, height)]
    if tile <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")

    def starts(n: int) -> list[int]:
        if fit == "crop":
            return [i * tile for i in range(max(1, n // tile))]
        if fit == "pad":
            return [i * tile for i in range(max(1, math.ceil(n / tile)))]
        if fit == "cover":
            k = max(1, math.ceil(n / tile))
            return [0] if k == 1 else [round(i * (n - tile) / (k - 1)) for i in range(k)]
        raise ValueError(f"fit must be 'crop', 'pad' or 'cover', got {fit!r}")

    return [Window(c, r, tile, tile) for r in starts(height) for c in starts(width)]


class GeoTiffDataset(Dataset):
    """Tiles of (image, label) raster pairs as design-doc samples.

    Args:
        items: the rasters (from an adapter).
        hierarchy: label tree used to encode raw labels (``Hierarchy.encode``).
        tile_size: tile edge in pixels (None: whole rasters, which must then share one size).
        fit: how tiles meet raster edges, see :func:`tile_windows`.
        mean, std: per-band normalisation (``(x - mean) / std``); None = no normalisation.
        transforms: callable applied to the sample dict (e.g. :class:`~hierars.data.transforms.SegAugment`).
        source: name recorded in ``meta["source"]``.
        strict: raise on raw label values that are neither in the tree nor ignore values / nodata.
        num_bands: expected band count (default: the first image's); others must match.
        label_colors: colour -> leaf-name map for 3-band colour-coded label images (WHDLD).
        image_nodata: nodata value for images that do not declare one.
        check: validate every pair's headers now (missing / unreadable files, band counts, shapes).
    """

    def __init__(
        self,
        items: Sequence[RasterItem],
        hierarchy: Hierarchy,
        tile_size: int | None = None,
        fit: str = "pad",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        transforms: Callable[[dict], dict] | None = None,
        source: str = "",
        strict: bool = True,
        num_bands: int | None = None,
        label_colors: Mapping[tuple[int, int, int], str] | None = None,
        image_nodata: float | None = None,
        check: bool = True,
    ) -> None:
        if not items:
            raise ValueError(f"GeoTiffDataset({source!r}): no rasters given (empty folder or split?)")
        self.items = list(items)
        self.hierarchy = hierarchy
        self.tile_size, self.fit = tile_size, fit
        self.transforms, self.source, self.strict = transforms, source, strict
        self.image_nodata = image_nodata
        self._known = set(v for vs in hierarchy.leaf_raw_values.values() for v in vs) | set(
            getattr(hierarchy, "ignore_values", ()) or ()
        )
        self._colors = None
        if label_colors:
            raw = {leaf: vals[0] for leaf, vals in hierarchy.leaf_raw_values.items()}
            missing = sorted(set(label_colors.values()) - set(raw))
            if missing:
                raise ValueError(
                    f"label_colors name classes that are not leaves of {hierarchy.name!r}: {missing}"
                )
            self._colors = {tuple(c): raw[n] for c, n in label_colors.items()}
        self.index: list[tuple[int, Window]] = []
        self._geo: list[tuple[str, tuple[float, ...]]] = []
        self.num_bands = num_bands
        for i, it in enumerate(self.items):
            h, w, crs, tr = self._check(it) if check else self._header(it)
            self._geo.append((crs, tr))
            self.index += [(i, win) for win in tile_windows(h, w, tile_size, fit)]
        if tile_size is None and check:
            sizes = {(int(w.height), int(w.width)) for _, w in self.index}
            if len(sizes) > 1:
                raise ValueError(
                    f"GeoTiffDataset({source!r}): rasters differ in size {sorted(sizes)[:4]}...; give tile_size"
                )
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = (
            None if std is None else torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6)[:, None, None]
        )
        if self.mean is not None and self.num_bands is not None and self.mean.shape[0] != self.num_bands:
            raise ValueError(
                f"{source}: {self.mean.shape[0]} normalisation means for {self.num_bands}-band images"
            )

    # validation ------------------------------------------------------------------------------
    def _header(self, it: RasterItem) -> tuple[int, int, str, tuple[float, ...]]:
        with _open(it.image) as ds:
            crs = ds.crs.to_string() if ds.crs else ""
            return ds.height, ds.width, crs, tuple(ds.transform)[:6]

    def _check(self, it: RasterItem) -> tuple[int, int, str, tuple[float, ...]]:
        with _open(it.image) as ds:
            if self.num_bands is None:
                self.num_bands = ds.count
            elif ds.count != self.num_bands:
                raise ValueError(
                    f"{it.image}: has {ds.count} bands, expected {self.num_bands} (as the other images)"
                )
            h, w = ds.height, ds.width
            crs = ds.crs.to_string() if ds.crs else ""
            tr = tuple(ds.transform)[:6]
        if it.label is not None:
            if not Path(it.label).exists():
                raise FileNotFoundError(f"label raster missing for image {it.image}: expected {it.label}")
            with _open(it.label) as ls:
                if (ls.height, ls.width) != (h, w):
                    raise ValueError(
                        f"shape mismatch: image {it.image} is {h}x{w} but label {it.label} is {ls.height}x{ls.width}"
                    )
                if ls.count != 1 and not (self._colors and ls.count >= 3):
                    raise ValueError(f"{it.label}: label rasters must have 1 band (or 3 with label_colors), "
                                     f"found {ls.count}")  # fmt: skip
        return h, w, crs, tr

    # reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def _read_image(self, it: RasterItem, win: Window) -> tuple[torch.Tensor, torch.Tensor]:
        with _open(it.image) as ds:
            try:
                a = ds.read(window=win, boundless=True, fill_value=0, masked=False).astype(np.float32)
            except RasterioError as e:
                raise ValueError(f"{it.image}: failed to read pixels ({e})") from None
            nodata = ds.nodata if ds.nodata is not None else self.image_nodata
            inside = np.zeros(a.shape[1:], bool)
            r0, c0 = int(win.row_off), int(win.col_off)
            inside[: max(0, ds.height - r0), : max(0, ds.width - c0)] = True
        invalid = ~inside
        if nodata is not None and np.isnan(nodata):
            invalid |= np.isnan(a).any(0)
            a = np.nan_to_num(a, nan=0.0)
        elif nodata is not None:
            invalid |= (a == nodata).any(0)
        bad = ~np.isfinite(a)
        if bad.any():
            b, r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"{it.image}: {int(bad.sum())} NaN/inf pixel values (first at band {b + 1}, row {r0 + r}, "
                f"col {c0 + c}); declare a nodata value or fix the raster"
            )
        return torch.from_numpy(a), torch.from_numpy(invalid)

    def _read_label(self, it: RasterItem, win: Window, shape: tuple[int, int]) -> torch.Tensor:
        ign = self.hierarchy.ignore_index
        if it.label is None:
            return torch.full((self.hierarchy.num_levels, *shape), ign, dtype=torch.long)
        with _open(it.label) as ls:
            try:
                raw = ls.read(window=win, boundless=True, fill_value=0)
            except RasterioError as e:
                raise ValueError(f"{it.label}: failed to read pixels ({e})") from None
            nodata = ls.nodata
        if self._colors is not None and raw.shape[0] >= 3:
            code = (raw[0].astype(np.int64) << 16) | (raw[1].astype(np.int64) << 8) | raw[2].astype(np.int64)
            out = np.full(code.shape, -1, np.int64)
            for (r, g, b), v in self._colors.items():
                out[code == ((r << 16) | (g << 8) | b)] = v
            unknown = out < 0
            if self.strict and unknown.any():
                cols = np.unique(code[unknown])[:5]
                raise ValueError(
                    f"{it.label}: colours outside label_colors: {[((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in cols]}"
                )  # noqa: E501
            raw_v = np.where(unknown, -1, out)
        else:
            raw_v = raw[0].astype(np.int64)
        invalid = raw_v < 0
        if nodata is not None and not np.isnan(nodata):
            invalid |= raw_v == int(nodata)
        if self.strict:
            vals = np.unique(raw_v[~invalid])
            outside = [int(v) for v in vals if int(v) not in self._known]
            if outside:
                raise ValueError(
                    f"{it.label}: raw label values {outside[:10]} are not in the tree {self.hierarchy.name!r} "
                    "(neither label_values nor ignore_values); fix the YAML or pass strict=False to ignore them"
                )
        raw_v = np.where(invalid, 0, raw_v)
        mask = self.hierarchy.encode(raw_v)
        mask[:, torch.from_numpy(invalid)] = ign
        return mask

    def __getitem__(self, idx: int) -> dict:
        i, win = self.index[idx]
        it = self.items[i]
        image, invalid = self._read_image(it, win)
        mask = self._read_label(it, win, tuple(image.shape[1:]))
        mask[:, invalid] = self.hierarchy.ignore_index
        if self.mean is not None:
            image = (image - self.mean) / self.std
            image[:, invalid] = 0.0
        crs, tr = self._geo[i]
        a, b, c, d, e, f = tr
        tr_win = (a, b, c + a * win.col_off + b * win.row_off, d, e, f + d * win.col_off + e * win.row_off)
        sample = {
            "image": image,
            "mask": mask,
            "meta": {
                "path": str(it.image),
                "label_path": str(it.label) if it.label is not None else "",
                "source": self.source,
                "scene": it.scene,
                "sub_label": it.sub_label,
                "crs": crs,
                "transform": torch.tensor(tr_win, dtype=torch.float64),
                "window": torch.tensor([win.row_off, win.col_off, win.height, win.width], dtype=torch.long),
            },
        }
        return self.transforms(sample) if self.transforms is not None else sample

    def __repr__(self) -> str:
        return (f"GeoTiffDataset(source={self.source!r}, rasters={len(self.items)}, samples={len(self)}, "
                f"bands={self.num_bands}, tile={self.tile_size}, fit={self.fit!r}, tree={self.hierarchy.name!r})")  # fmt: skip


# --------------------------------------------------------------------------------------------
# adapters
# --------------------------------------------------------------------------------------------
def _require_dir(p: Path, what: str) -> Path:
    p = Path(p)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {p}")
    return p


def _nonempty(files: list, where: Path, pattern: str) -> list:
    if not files:
        raise FileNotFoundError(f"no images matching {pattern!r} in {where} (empty folder?)")
    return files


def folder_items(image_dir: str | Path, label_dir: str | Path | None, pattern: str = "*.tif",
                 label_suffix: str | None = None, scene_from_parent: bool = False,
                 recursive: bool = False) -> list[RasterItem]:  # fmt: skip
    """Pairs ``image_dir/<stem><ext>`` with ``label_dir/<stem><label_suffix>`` (default: the same name).

    With ``recursive`` the relative sub-folder is kept for the label (and is the scene label when
    ``scene_from_parent``)."""
    image_dir = _require_dir(Path(image_dir), "image")
    label_root = _require_dir(Path(label_dir), "label") if label_dir is not None else None
    files = sorted(image_dir.rglob(pattern) if recursive else image_dir.glob(pattern))
    items = []
    for f in _nonempty(files, image_dir, pattern):
        rel = f.relative_to(image_dir)
        lab = None
        if label_root is not None:
            lab = (
                label_root / rel.parent / (f.stem + (label_suffix if label_suffix is not None else f.suffix))
            )
        items.append(RasterItem(f, lab, scene=rel.parent.name if scene_from_parent else ""))
    return items


def gid15_items(root: str | Path) -> list[RasterItem]:
    """GID-15 patches: ``image/<scene>/<n>.tif`` + ``label_gray/<scene>/<n>.tif``; scene = folder name."""
    root = _require_dir(Path(root), "GID-15")
    return folder_items(root / "image", root / "label_gray", "*.tif", scene_from_parent=True, recursive=True)


_AGNET = re.compile(r"lc8_(\d+)_(\d+)_(\d+)\.tif$")


def agnet_items(root: str | Path) -> list[RasterItem]:
    """Ag-Net tiles: ``image/lc8_<date>_<row>_<col>.tif`` + ``target/cdl_<date>_<row>_<col>.tif``.
    ``extra`` holds the tile-grid ``row`` and ``col`` (for spatial splits)."""
    root = _require_dir(Path(root), "Ag-Net")
    img_dir = _require_dir(root / "image", "Ag-Net image")
    items = []
    for f in _nonempty(sorted(img_dir.glob("lc8_*.tif")), img_dir, "lc8_*.tif"):
        m = _AGNET.search(f.name)
        if not m:
            raise ValueError(f"{f}: Ag-Net image names must look like lc8_<date>_<row>_<col>.tif")
        date, row, col = m.groups()
        items.append(RasterItem(f, root / "target" / f"cdl_{date}_{row}_{col}.tif", scene=f"{row}_{col}",
                                extra={"row": int(row), "col": int(col)}))  # fmt: skip
    return items


def mm5b_items(root: str | Path, source: str) -> list[RasterItem]:
    """MM-5B layout: ``<root>/<source>/image/<scene>.tif`` + ``<root>/<source>/label/<scene>.tif``."""
    src = _require_dir(Path(root) / source, f"MM-5B source {source!r}")
    items = folder_items(src / "image", src / "label", "*.tif")
    return [RasterItem(it.image, it.label, scene=it.image.stem) for it in items]


def whdld_items(root: str | Path) -> list[RasterItem]:
    """WHDLD: ``Images/<id>.jpg`` + colour-coded ``ImagesPNG/<id>.png`` (use ``WHDLD_COLORS``)."""
    root = _require_dir(Path(root), "WHDLD")
    return folder_items(root / "Images", root / "ImagesPNG", "*.jpg", label_suffix=".png")


def dlrsd_items(root: str | Path, image_subdir: str = "Images", label_subdir: str = "Labels",
                image_pattern: str = "*.tif", label_suffix: str = ".png") -> list[RasterItem]:  # fmt: skip
    """DLRSD (UC Merced images + DLRSD labels): ``Images/<class>/<id>.tif`` + ``Labels/<class>/<id>.png``.

    Scene label = class folder; ``denseresidential`` / ``mediumresidential`` / ``sparseresidential``
    become scene ``residential`` with sub-label ``dense`` / ``medium`` / ``sparse`` (HIR's merge)."""
    root = _require_dir(Path(root), "DLRSD")
    items = folder_items(root / image_subdir, root / label_subdir, image_pattern, label_suffix,
                         scene_from_parent=True, recursive=True)  # fmt: skip
    out = []
    for it in items:
        m = re.fullmatch(r"(dense|medium|sparse)[ _]?residential", it.scene, flags=re.I)
        out.append(RasterItem(it.image, it.label, "residential", m.group(1).lower()) if m else it)
    return out


def resample_label(label_path: str | Path, like_path: str | Path, out_path: str | Path) -> Path:
    """Write ``label_path`` resampled onto ``like_path``'s grid: nearest when the target is finer,
    mode when it is coarser (how MM-5B aligns its 4 m labels to the 1 m and 10 m sources)."""
    from rasterio.warp import Resampling, reproject

    with _open(label_path) as src, _open(like_path) as like:
        data = src.read(1)
        coarser = abs(like.transform.a) > abs(src.transform.a)
        out = np.zeros((like.height, like.width), data.dtype)
        reproject(data, out, src_transform=src.transform, src_crs=src.crs, dst_transform=like.transform,
                  dst_crs=like.crs, resampling=Resampling.mode if coarser else Resampling.nearest,
                  src_nodata=src.nodata, dst_nodata=src.nodata)  # fmt: skip
        profile = src.profile | {"height": like.height, "width": like.width, "transform": like.transform,
                                 "crs": like.crs}  # fmt: skip
    profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    with rasterio.open(out_path, "w", **profile) as dst:
        dst.write(out, 1)
    return Path(out_path)


def write_geotiff(path: str | Path, data: np.ndarray, transform, crs, nodata: float | None = None,
                  band_names: Sequence[str] | None = None, colormap: Mapping[int, tuple] | None = None,
                  tags: Mapping[str, str] | None = None, block: int = 128) -> Path:  # fmt: skip
    """Write ``data`` (C x H x W or H x W) as a tiled, deflate-compressed GeoTIFF (deterministic bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = data[None] if data.ndim == 2 else data
    c, h, w = arr.shape
    profile = {"driver": "GTiff", "height": h, "width": w, "count": c, "dtype": arr.dtype.name, "crs": crs,
               "transform": transform, "compress": "deflate", "predictor": 2, "nodata": nodata,
               "interleave": "pixel" if c > 1 else "band"}  # fmt: skip
    if h >= block and w >= block:
        profile |= {"tiled": True, "blockxsize": block, "blockysize": block}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        for i, name in enumerate(band_names or []):
            dst.set_band_description(i + 1, name)
        if colormap is not None and c == 1:
            dst.write_colormap(1, dict(colormap))
        if tags:
            dst.update_tags(**tags)
    return path

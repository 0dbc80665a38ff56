"""Raster IO: :class:`RasterItem` (an image raster and its label raster), opening and reading
rasters with errors that name the file, tiling windows, resampling labels onto another grid and
writing deterministic tiled GeoTIFFs."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from hierars.atomic import atomic_path

__all__ = ["RasterItem", "open_raster", "read_raster", "tile_windows", "resample_label", "write_geotiff"]


@dataclass(frozen=True)
class RasterItem:
    """One image raster and its label raster (``label=None``: unlabelled, mask all 255)."""

    image: Path
    label: Path | None
    scene: str = ""
    sub_label: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def open_raster(path: Path):
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
    with open_raster(path) as ds:
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


def resample_label(label_path: str | Path, like_path: str | Path, out_path: str | Path) -> Path:
    """Write ``label_path`` resampled onto ``like_path``'s grid: nearest when the target is finer,
    mode when it is coarser (how MM-5B aligns its 4 m labels to the 1 m and 10 m sources)."""
    from rasterio.warp import Resampling, reproject

    with open_raster(label_path) as src, open_raster(like_path) as like:
        data = src.read(1)
        coarser = abs(like.transform.a) > abs(src.transform.a)
        out = np.zeros((like.height, like.width), data.dtype)
        reproject(data, out, src_transform=src.transform, src_crs=src.crs, dst_transform=like.transform,
                  dst_crs=like.crs, resampling=Resampling.mode if coarser else Resampling.nearest,
                  src_nodata=src.nodata, dst_nodata=src.nodata)  # fmt: skip
        profile = src.profile | {"height": like.height, "width": like.width, "transform": like.transform,
                                 "crs": like.crs}  # fmt: skip
    profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    with atomic_path(out_path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
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
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(arr)
        for i, name in enumerate(band_names or []):
            dst.set_band_description(i + 1, name)
        if colormap is not None and c == 1:
            dst.write_colormap(1, dict(colormap))
        if tags:
            dst.update_tags(**tags)
    return path

"""Per-band normalisation statistics of a set of rasters (computed once, in the prepare stage)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rasterio.errors import RasterioError
from rasterio.windows import Window
from tqdm.auto import tqdm

from hierars.data.rasters import RasterItem, open_raster

__all__ = ["band_stats"]


def band_stats(items: Sequence[RasterItem], max_samples_per_raster: int = 20000, seed: int = 0,
               desc: str = "band stats", indexes: Sequence[int] | None = None,
               nodata: float | None = None, max_values: int = 1 << 24) -> dict:  # fmt: skip
    """Mean, std (exact, float64 sums over all valid pixels) and 2 / 98 % percentiles (from a
    seeded per-raster subsample) of every band (``indexes``: 1-based bands to use; None = all). Nodata
    pixels (the raster's nodata, else ``nodata``) are skipped; NaN / inf and unreadable pixels raise naming
    the file. Rasters are read in row strips of at most ``max_values`` values (memory is bounded for big scenes).

    Returns ``{"mean": [C], "std": [C], "p02": [C], "p98": [C], "min": [C], "max": [C], "pixels": int}``.
    """
    if not items:
        raise ValueError("band_stats: no rasters given")
    rng = np.random.default_rng(seed)
    s1 = s2 = None
    n = 0
    lo = hi = None
    sub = []
    bands = None
    for it in tqdm(items, desc=desc, leave=False):
        with open_raster(it.image) as ds:
            count = len(indexes) if indexes is not None else ds.count
            if bands is None:
                bands = count
            elif count != bands:
                raise ValueError(f"{it.image}: has {count} bands, expected {bands} (as the other images)")
            nd = ds.nodata if ds.nodata is not None else nodata
            rows = max(1, max_values // max(1, ds.width * bands))  # row strips: memory bounded for big scenes
            for r0 in range(0, ds.height, rows):
                h = min(rows, ds.height - r0)
                try:
                    a = ds.read(list(indexes) if indexes is not None else None, window=Window(0, r0, ds.width, h))
                except RasterioError as e:
                    raise ValueError(f"{it.image}: cannot read its pixels (truncated or corrupt?): {e}") from None
                x = a.reshape(bands, -1).astype(np.float64)
                if nd is not None:
                    x = x[:, ~(np.isnan(x).any(0) if np.isnan(nd) else (x == nd).any(0))]
                if not np.isfinite(x).all():
                    raise ValueError(f"{it.image}: NaN/inf pixel values; declare a nodata value or fix the raster")
                if x.shape[1] == 0:
                    continue
                s1 = x.sum(1) if s1 is None else s1 + x.sum(1)
                s2 = (x * x).sum(1) if s2 is None else s2 + (x * x).sum(1)
                lo = x.min(1) if lo is None else np.minimum(lo, x.min(1))
                hi = x.max(1) if hi is None else np.maximum(hi, x.max(1))
                n += x.shape[1]
                k = min(x.shape[1], math.ceil(max_samples_per_raster * h / ds.height))
                sub.append(x[:, rng.choice(x.shape[1], k, replace=False)])
    if n == 0:
        raise ValueError("band_stats: every pixel is nodata")
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    allsub = np.concatenate(sub, axis=1)
    p02, p98 = np.percentile(allsub, [2, 98], axis=1)
    return {
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "p02": [float(v) for v in p02],
        "p98": [float(v) for v in p98],
        "min": [float(v) for v in lo],
        "max": [float(v) for v in hi],
        "pixels": int(n),
    }

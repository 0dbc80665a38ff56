"""A tiny folder dataset for the folder-source tests: georeferenced GeoTIFF tiles on a grid (EPSG:32633, 10 m
pixels) whose labels follow the ``whdld`` tree (raw values 1..6, 0 = no label), written as GeoTIFF labels or as
PNG labels with other values (``PNG_VALUES``: raw value -> leaf name, for ``prepare.folder.mapping``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from hierars.data import write_geotiff

CRS = "EPSG:32633"
PIXEL = 10.0
LEAVES = ["building", "road", "pavement", "vegetation", "bare_soil", "water"]  # whdld raw values 1..6
#: PNG label value -> whdld leaf (labels that are not the tree's values: they need a mapping)
PNG_VALUES = {10: "building", 20: "road", 30: "pavement", 40: "vegetation", 50: "bare_soil", 60: "water"}
#: per-leaf mean reflectance of the 4 bands (blue, green, red, nir)
SPECTRA = np.array([[90, 95, 110, 120], [70, 75, 80, 85], [120, 125, 130, 135], [30, 60, 40, 160],
                    [100, 90, 80, 95], [60, 50, 30, 10]], np.float32)  # fmt: skip


def tile_label(rng: np.random.Generator, size: int) -> np.ndarray:
    """H x W raw whdld values 1..6 in blocky patches, with a 0 (no label) strip."""
    cells = rng.integers(1, 7, (4, 4))
    lab = np.kron(cells, np.ones((size // 4, size // 4), np.int64))[:size, :size].astype(np.uint8)
    lab[:, :2] = 0
    return lab


def make_folder(root: Path, n_rows: int = 3, n_cols: int = 3, size: int = 32, png: bool = False,
                seed: int = 0) -> list[Path]:  # fmt: skip
    """``root/image/t_<r>_<c>.tif`` (4-band uint16 tiles on a grid) and ``root/label/t_<r>_<c>.tif``
    (GeoTIFF, whdld raw values) or ``root/label/t_<r>_<c>_gt.png`` (PNG, :data:`PNG_VALUES`)."""
    rng = np.random.default_rng(seed)
    images = []
    png_value = {leaf: v for v, leaf in PNG_VALUES.items()}
    for r in range(n_rows):
        for c in range(n_cols):
            lab = tile_label(rng, size)
            img = SPECTRA[np.clip(lab.astype(int) - 1, 0, 5)].transpose(2, 0, 1)
            img = (img + rng.normal(0, 8, img.shape)).clip(1, 1000).astype(np.uint16)
            tr = from_origin(500000 + c * size * PIXEL, 5000000 - r * size * PIXEL, PIXEL, PIXEL)
            name = f"t_{r}_{c}"
            images.append(write_geotiff(root / "image" / f"{name}.tif", img, tr, CRS,
                                        band_names=["blue", "green", "red", "nir"]))  # fmt: skip
            if png:
                out = np.zeros_like(lab)
                for i, leaf in enumerate(LEAVES):
                    out[lab == i + 1] = png_value[leaf]
                (root / "label").mkdir(parents=True, exist_ok=True)
                with rasterio.open(root / "label" / f"{name}_gt.png", "w", driver="PNG", width=size, height=size,
                                   count=1, dtype="uint8") as dst:  # fmt: skip
                    dst.write(out, 1)
            else:
                write_geotiff(root / "label" / f"{name}.tif", lab, tr, CRS)
    return images

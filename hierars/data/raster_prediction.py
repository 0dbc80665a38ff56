"""Predict a GeoTIFF of any size: windowed reads through :class:`hierars.prediction.SlidingWindowPredictor`,
windowed writes of a georeferenced per-level GeoTIFF, and per-level colour/name sidecars for QGIS.

The output is written under a temporary name in the destination folder and renamed when complete, so an
interrupted or failed prediction never leaves a partial file under the final name.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import nn

from hierars.atomic import atomic_write_text, temporary_path
from hierars.hierarchy import Hierarchy
from hierars.prediction import SlidingWindowPredictor

__all__ = ["RasterPrediction", "predict_raster"]


@dataclass
class RasterPrediction:
    """What :func:`predict_raster` wrote and how much it buffered."""

    path: Path
    level_vrts: list[Path]
    shape: tuple[int, int]
    num_windows: int
    peak_buffer_pixels: int  # max number of scene pixels held in blending buffers at once


def _pam_band_xml(parent: ET.Element, names: list[str], colours: np.ndarray) -> None:
    ET.SubElement(parent, "ColorInterp").text = "Palette"
    cats = ET.SubElement(parent, "CategoryNames")
    for name in names:
        ET.SubElement(cats, "Category").text = name
    table = ET.SubElement(parent, "ColorTable")
    for r, g, b in colours.tolist():
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4="255")


def _write_sidecars(dst: Path, hierarchy: Hierarchy, palettes: list[np.ndarray], descriptions: list[str],
                    src_meta: dict) -> list[Path]:
    """PAM ``.aux.xml`` (class names + colour tables for every band) and one coloured VRT per level.

    GTiff stores a colour table for single-band files only, so the multi-band GeoTIFF carries the colours and
    names in its PAM sidecar (GDAL/QGIS apply band 1's) and each level also gets a tiny ``<stem>_L<l>.vrt`` (a
    view of that band with its own colour table and category names) that opens coloured and labelled in QGIS.
    """
    pam = ET.Element("PAMDataset")
    for level in range(hierarchy.num_levels):
        band = ET.SubElement(pam, "PAMRasterBand", band=str(level + 1))
        ET.SubElement(band, "Description").text = descriptions[level]
        _pam_band_xml(band, hierarchy.names[level], palettes[level])
    atomic_write_text(dst.with_name(dst.name + ".aux.xml"), ET.tostring(pam, encoding="unicode"))
    vrts = []
    t = src_meta["transform"]
    for level in range(hierarchy.num_levels):
        vrt = ET.Element("VRTDataset", rasterXSize=str(src_meta["width"]), rasterYSize=str(src_meta["height"]))
        if src_meta["crs"] is not None:
            ET.SubElement(vrt, "SRS").text = src_meta["crs"].to_wkt()
        ET.SubElement(vrt, "GeoTransform").text = ", ".join(repr(float(v)) for v in t.to_gdal())
        band = ET.SubElement(vrt, "VRTRasterBand", dataType="Byte", band="1")
        ET.SubElement(band, "Description").text = descriptions[level]
        ET.SubElement(band, "NoDataValue").text = str(hierarchy.ignore_index)
        _pam_band_xml(band, hierarchy.names[level], palettes[level])
        source = ET.SubElement(band, "SimpleSource")
        ET.SubElement(source, "SourceFilename", relativeToVRT="1").text = dst.name
        ET.SubElement(source, "SourceBand").text = str(level + 1)
        path = dst.with_name(f"{dst.stem}_L{level + 1}.vrt")
        atomic_write_text(path, ET.tostring(vrt, encoding="unicode"))
        vrts.append(path)
    return vrts


def _profile(src: rasterio.DatasetReader, count: int, nodata: int) -> dict:
    profile = dict(driver="GTiff", height=src.height, width=src.width, count=count, dtype="uint8", crs=src.crs,
                   transform=src.transform, nodata=nodata, compress="deflate", tiled=True, blockxsize=256,
                   blockysize=256)
    if src.height < 256 or src.width < 256:
        profile.update(tiled=False)
        del profile["blockxsize"], profile["blockysize"]
    return profile


@torch.no_grad()
def predict_raster(model: nn.Module, src_path: str | Path, dst_path: str | Path, hierarchy: Hierarchy,
                   window: int = 512, overlap: int = 64, batch_size: int = 4,
                   normalize: tuple[Sequence[float], Sequence[float]] | None = None, mode: str = "jsps",
                   device: str | torch.device | None = None, bands: Sequence[int] | None = None,
                   progress: bool = True) -> RasterPrediction:
    """Sliding-window inference over a (large) GeoTIFF, writing a georeferenced per-level prediction.

    Reads are windowed (never larger than one window) and finished cells are written as they come, so memory
    is bounded by the window, not the scene (see :class:`hierars.prediction.SlidingWindowPredictor`).

    Args:
        model: returns per-level logits (or a 1-element flat output) for B×C×h×w input.
        src_path: input GeoTIFF (any size; CRS optional). dst_path: output GeoTIFF (must differ).
        hierarchy: the label tree (band l+1 holds level l; class names and colours per band).
        window, overlap, batch_size, normalize, mode, device, progress: as for the predictor.
        bands: 1-based source band indices to read (default: all).

    Writes ``dst_path`` — a deflate-compressed uint8 GeoTIFF with one band per level, the source's CRS and
    transform, nodata 255 (also where every source band equals the source nodata), band descriptions
    ``"L<l>: <name list>"``, per-band tags ``level``/``class_names``/``colors`` (JSON) — plus a PAM ``.aux.xml``
    (category names and colour tables) and one coloured ``<stem>_L<l>.vrt`` per level.

    Returns: :class:`RasterPrediction`.
    """
    predictor = SlidingWindowPredictor(model, hierarchy, window, overlap, batch_size, mode, normalize, device,
                                       progress)
    src_path, dst_path = Path(src_path), Path(dst_path)
    if not src_path.is_file():
        raise FileNotFoundError(f"input raster not found: {src_path}")
    if src_path.resolve() == dst_path.resolve():
        raise ValueError(f"dst_path must differ from src_path ({src_path})")
    palettes = hierarchy.palettes()
    n_levels = hierarchy.num_levels
    descriptions = [f"L{lv + 1}: " + ", ".join(hierarchy.names[lv]) for lv in range(n_levels)]
    with rasterio.open(src_path) as src:
        band_idx = list(bands) if bands is not None else list(range(1, src.count + 1))
        if not band_idx or min(band_idx) < 1 or max(band_idx) > src.count:
            raise ValueError(f"{src_path}: bands {band_idx} outside 1..{src.count}")
        predictor.check_bands(len(band_idx), str(src_path))
        src_meta = {"crs": src.crs, "transform": src.transform, "height": src.height, "width": src.width}

        def read(r: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
            arr = src.read(band_idx, window=Window(c, r, w, h)).astype(np.float32)
            return arr, (None if src.nodata is None else np.all(arr == src.nodata, axis=0))

        tmp = temporary_path(dst_path)
        try:
            with rasterio.open(tmp, "w", **_profile(src, n_levels, hierarchy.ignore_index)) as dst:
                for level in range(n_levels):
                    dst.set_band_description(level + 1, descriptions[level])
                    dst.update_tags(level + 1, level=str(level + 1), class_names=json.dumps(hierarchy.names[level]),
                                    colors=json.dumps(palettes[level].tolist()))
                dst.update_tags(hierarchy=hierarchy.name, mode=mode, num_classes=json.dumps(hierarchy.num_classes))
                for (r, c, h, w), labels in predictor.stream(read, src.height, src.width,
                                                             desc=f"predict {src_path.name}"):
                    dst.write(labels.astype(np.uint8), window=Window(c, r, w, h))
            os.replace(tmp, dst_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            Path(str(tmp) + ".aux.xml").unlink(missing_ok=True)
            raise
    vrts = _write_sidecars(dst_path, hierarchy, palettes, descriptions, src_meta)
    return RasterPrediction(dst_path, vrts, (src_meta["height"], src_meta["width"]), predictor.num_windows,
                            predictor.peak_buffer_pixels)

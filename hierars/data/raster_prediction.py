"""Predict a GeoTIFF of any size: windowed reads through :class:`hierars.prediction.SlidingWindowPredictor`,
windowed writes of georeferenced class maps with the tree's colours and names, QGIS styles, and optionally
per-level confidence and a confidence-aware granularity map (:mod:`hierars.granularity`).

Every raster is written under a temporary name in the destination folder and renamed when complete, so an
interrupted or failed prediction never leaves a partial file under a final name; files get the mode ``open``
would give them (readable by the group and others as the umask allows).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import nn

from hierars.atomic import atomic_write_text, temporary_path
from hierars.granularity import node_names, node_nodata, summarise_probabilities
from hierars.hierarchy import Hierarchy
from hierars.prediction import ReadFn, SlidingWindowPredictor
from hierars.qml import paletted_qml

__all__ = ["RasterPrediction", "predict_raster", "window_reader", "output_paths", "GDAL_CACHE_MB"]

#: GDAL's block cache while predicting, in MB. GDAL's default (5 % of RAM) keeps every decompressed block it has
#: read or written until that much is used: 1.2 GB on a 24 GB machine, for a scene bigger than that. Prediction
#: reads each window once, left to right, so a cache of a few windows' blocks is all it needs.
GDAL_CACHE_MB = 64  # a row of 1024-px windows of a 16k-wide uint8 scene needs ~25 MB of blocks; 256 left a CI run at 1.57 GB


@dataclass
class RasterPrediction:
    """What :func:`predict_raster` wrote and how much it buffered.

    Attributes:
        path: the per-level labels, one band per level (decoded by ``mode``; with JSPS, the path).
        level_paths: one single-band class map per level, each with a ``.qml`` style beside it (``styles``).
        confidence_path, granularity_path: written when asked for, else None.
    """

    path: Path
    level_paths: list[Path]
    shape: tuple[int, int]
    num_windows: int
    peak_buffer_pixels: int  # max number of scene pixels held in blending buffers at once
    confidence_path: Path | None = None
    granularity_path: Path | None = None
    styles: list[Path] = field(default_factory=list)


def output_paths(dst_path: str | Path, num_levels: int) -> dict[str, Path | list[Path]]:
    """The files :func:`predict_raster` writes for ``dst_path`` (``<stem>.tif``): ``levels`` ``<stem>_L<l>.tif``,
    ``confidence`` ``<stem>_confidence.tif`` and ``granularity`` ``<stem>_granularity.tif``."""
    dst = Path(dst_path)
    return {"path": dst, "levels": [dst.with_name(f"{dst.stem}_L{lv + 1}.tif") for lv in range(num_levels)],
            "confidence": dst.with_name(f"{dst.stem}_confidence.tif"),
            "granularity": dst.with_name(f"{dst.stem}_granularity.tif")}


def window_reader(src: rasterio.DatasetReader, bands: Sequence[int], nodata: float | None = None,
                  name: str | Path = "") -> ReadFn:
    """A :data:`hierars.prediction.ReadFn` over an open raster: ``bands`` (1-based) of a window as float32, and
    the pixels where every band equals ``nodata`` (default: the raster's; NaN works) as no data.

    Raises (when a window is read) ``ValueError`` naming the file on NaN / inf pixels that are not no data.
    """
    nd = src.nodata if nodata is None else nodata

    def read(r: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
        arr = src.read(list(bands), window=Window(c, r, w, h)).astype(np.float32)
        if nd is None:
            invalid = None
        elif np.isnan(nd):
            invalid = np.all(np.isnan(arr), axis=0)
        else:
            invalid = np.all(arr == nd, axis=0)
        bad = ~np.isfinite(arr) & (True if invalid is None else ~invalid[None])
        if bad.any():
            raise ValueError(f"{name or src.name}: {int(bad.sum())} NaN/inf pixel values in rows {r}..{r + h - 1}; "
                             "declare a nodata value or fix the raster")
        if invalid is not None and not np.isfinite(arr).all():
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        return arr, invalid

    return read


def _pam_band_xml(parent: ET.Element, names: list[str], colours: np.ndarray) -> None:
    ET.SubElement(parent, "ColorInterp").text = "Palette"
    cats = ET.SubElement(parent, "CategoryNames")
    for name in names:
        ET.SubElement(cats, "Category").text = name
    table = ET.SubElement(parent, "ColorTable")
    for r, g, b in colours.tolist():
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4="255")


def _write_pam(dst: Path, bands: list[tuple[str, list[str], np.ndarray]]) -> None:
    """PAM ``.aux.xml`` beside ``dst``: per band a description, category names and a colour table.

    GTiff stores a colour table for single-band files only, so the multi-band file carries its per-level colours
    and names here (GDAL applies band 1's); single-band class maps also get their category names this way.
    """
    pam = ET.Element("PAMDataset")
    for b, (description, names, colours) in enumerate(bands):
        band = ET.SubElement(pam, "PAMRasterBand", band=str(b + 1))
        ET.SubElement(band, "Description").text = description
        _pam_band_xml(band, names, colours)
    atomic_write_text(dst.with_name(dst.name + ".aux.xml"), ET.tostring(pam, encoding="unicode"))


def _profile(src: rasterio.DatasetReader, count: int, dtype: str, nodata: float) -> dict:
    profile = dict(driver="GTiff", height=src.height, width=src.width, count=count, dtype=dtype, crs=src.crs,
                   transform=src.transform, nodata=nodata, compress="deflate", tiled=True, blockxsize=256,
                   blockysize=256)
    if dtype == "float32":
        profile["predictor"] = 3  # floating-point predictor: 12 % smaller confidence files measured here
    if src.height < 256 or src.width < 256:
        profile.update(tiled=False)
        del profile["blockxsize"], profile["blockysize"]
    return profile


def _class_dtype(hierarchy: Hierarchy) -> str:
    if hierarchy.ignore_index <= 255:
        return "uint8"
    if hierarchy.ignore_index <= 65535:
        return "uint16"
    raise ValueError(f"ignore_index {hierarchy.ignore_index} does not fit a uint16 class map")


def _granularity_style(hierarchy: Hierarchy, palettes: list[np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Names ("L2 cropland") and colours of every granularity node id (0 = root, grey)."""
    names, colours = [], []
    for _, level, name in node_names(hierarchy):
        names.append(name if level is None else f"L{level + 1} {name}")
        colours.append([128, 128, 128] if level is None else palettes[level][hierarchy.names[level].index(name)])
    return names, np.asarray(colours, dtype=np.uint8)


@torch.no_grad()
def predict_raster(model: nn.Module, src_path: str | Path, dst_path: str | Path, hierarchy: Hierarchy,
                   window: int = 512, overlap: int = 64, batch_size: int = 4,
                   normalize: tuple[Sequence[float], Sequence[float]] | None = None, mode: str = "jsps",
                   device: str | torch.device | None = None, bands: Sequence[int] | None = None,
                   progress: bool = True, *, confidence: bool = False, granularity: float | None = None,
                   nodata: float | None = None) -> RasterPrediction:
    """Sliding-window inference over a (large) GeoTIFF, writing georeferenced, styled class maps.

    Reads are windowed (never larger than one window) and finished cells are written as they come, so memory
    is bounded by the window, not the scene (see :class:`hierars.prediction.SlidingWindowPredictor`).

    Args:
        model: returns per-level logits (or a 1-element flat output) for B×C×h×w input (raw model: pass
            ``normalize``; :meth:`hierars.data.SavedModel.predict_raster` does it from the checkpoint).
        src_path: input GeoTIFF (any size; CRS optional). dst_path: output ``<stem>.tif`` (must differ).
        hierarchy: the label tree (class names and colours).
        window, overlap, batch_size, normalize, mode, device, progress: as for the predictor.
        bands: 1-based source band indices to read (default: all).
        confidence: also write ``<stem>_confidence.tif``.
        granularity: threshold ``T``: also write ``<stem>_granularity.tif`` (+ ``.qml``), node ids of the deepest
            level of the JSPS path whose confidence reaches ``T`` (:mod:`hierars.granularity`).
        nodata: pixels whose every band equals it are no data (default: the source's nodata).

    Writes (all with the source's CRS and transform; ``output_paths`` names them):
        ``<stem>.tif`` — one band per level (class ids, uint8; uint16 if ``ignore_index`` > 255; nodata
        ``ignore_index``), band descriptions ``"L<l>: <names>"``, tags ``level``/``class_names``/``colors`` (JSON),
        and a PAM ``.aux.xml`` with every band's category names and colour table;
        ``<stem>_L<l>.tif`` — level ``l`` alone with the tree's colours as its GDAL colour table, category names
        in ``.aux.xml``, and ``<stem>_L<l>.qml``, a QGIS paletted style (value, colour, class name);
        ``<stem>_confidence.tif`` — float32, one band per level, probability (0..1) of the level's class under
        the path distribution; NaN = no data;
        ``<stem>_granularity.tif`` + ``.qml`` — node ids (uint8, nodata 255; uint16 / 65535 for > 254 nodes).

    Returns: :class:`RasterPrediction`.
    """
    predictor = SlidingWindowPredictor(model, hierarchy, window, overlap, batch_size, mode, normalize, device,
                                       progress)
    src_path, dst_path = Path(src_path), Path(dst_path)
    if not src_path.is_file():
        raise FileNotFoundError(f"input raster not found: {src_path}")
    if src_path.resolve() == dst_path.resolve():
        raise ValueError(f"dst_path must differ from src_path ({src_path})")
    if granularity is not None and not np.isfinite(granularity):
        raise ValueError(f"granularity threshold must be a finite number, got {granularity}")
    names = output_paths(dst_path, hierarchy.num_levels)
    if src_path.resolve() in {p.resolve() for p in [names["path"], *names["levels"]]}:
        raise ValueError(f"an output of {dst_path} would overwrite the input {src_path}")
    palettes, n_levels, ign = hierarchy.palettes(), hierarchy.num_levels, hierarchy.ignore_index
    descriptions = [f"L{lv + 1}: " + ", ".join(hierarchy.names[lv]) for lv in range(n_levels)]
    cls_dtype = _class_dtype(hierarchy)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(src_path) as src:
        band_idx = list(bands) if bands is not None else list(range(1, src.count + 1))
        if not band_idx or min(band_idx) < 1 or max(band_idx) > src.count:
            raise ValueError(f"{src_path}: bands {band_idx} outside 1..{src.count}")
        predictor.check_bands(len(band_idx), str(src_path))
        read = window_reader(src, band_idx, nodata, src_path)
        # (final path, profile, band descriptions, colour table of a single-band class map or None)
        outputs: dict[str, tuple[Path, dict, list[str], dict | None]] = {
            "path": (dst_path, _profile(src, n_levels, cls_dtype, ign), descriptions, None)}
        for lv, p in enumerate(names["levels"]):
            cmap = {c: (*map(int, rgb), 255) for c, rgb in enumerate(palettes[lv])}
            outputs[f"L{lv}"] = (p, _profile(src, 1, cls_dtype, ign), [descriptions[lv]], cmap)
        if confidence:
            outputs["confidence"] = (names["confidence"], _profile(src, n_levels, "float32", float("nan")),
                                     [f"L{lv + 1} confidence" for lv in range(n_levels)], None)
        gran_names, gran_colours = _granularity_style(hierarchy, palettes)
        if granularity is not None:
            g_nodata, g_dtype = node_nodata(hierarchy)
            cmap = {i: (*map(int, rgb), 255) for i, rgb in enumerate(gran_colours)}
            outputs["granularity"] = (names["granularity"], _profile(src, 1, g_dtype, g_nodata),
                                      [f"deepest level with confidence >= {granularity:g} (node ids)"], cmap)
        temps = {key: temporary_path(final) for key, (final, *_) in outputs.items()}
        try:
            with ExitStack() as stack:
                dst = {}
                for key, (_, profile, descr, cmap) in outputs.items():
                    dst[key] = ds = stack.enter_context(rasterio.open(temps[key], "w", **profile))
                    for b, text in enumerate(descr):
                        ds.set_band_description(b + 1, text)
                    if cmap is not None:
                        ds.write_colormap(1, cmap)
                _tag(dst, hierarchy, palettes, mode, granularity)
                _stream(predictor, read, src, dst, hierarchy, mode, granularity, cls_dtype,
                        desc=f"predict {src_path.name}")
            for key, (final, *_) in outputs.items():
                Path(f"{temps[key]}.aux.xml").unlink(missing_ok=True)  # GDAL's own sidecar of the temp name
                os.replace(temps[key], final)
        except BaseException:
            for tmp in temps.values():
                tmp.unlink(missing_ok=True)
                Path(f"{tmp}.aux.xml").unlink(missing_ok=True)
            raise
        shape = (src.height, src.width)
    _write_pam(dst_path, [(descriptions[lv], hierarchy.names[lv], palettes[lv]) for lv in range(n_levels)])
    styles = []
    for lv, p in enumerate(names["levels"]):
        _write_pam(p, [(descriptions[lv], hierarchy.names[lv], palettes[lv])])
        styles.append(_write_qml(p, [(c, rgb, n) for c, (rgb, n) in enumerate(zip(palettes[lv], hierarchy.names[lv]))]))
    if granularity is not None:
        _write_pam(names["granularity"], [("granularity node ids", gran_names, gran_colours)])
        styles.append(_write_qml(names["granularity"], list(zip(range(len(gran_names)), gran_colours, gran_names))))
    return RasterPrediction(dst_path, list(names["levels"]), shape, predictor.num_windows,
                            predictor.peak_buffer_pixels, names["confidence"] if confidence else None,
                            names["granularity"] if granularity is not None else None, styles)


def _write_qml(tif: Path, entries: list) -> Path:
    qml = tif.with_suffix(".qml")
    atomic_write_text(qml, paletted_qml(entries))
    return qml


def _tag(dst: dict, hierarchy: Hierarchy, palettes: list[np.ndarray], mode: str, granularity: float | None) -> None:
    common = {"hierarchy": hierarchy.name, "num_classes": json.dumps(hierarchy.num_classes)}
    dst["path"].update_tags(mode=mode, **common)
    for lv in range(hierarchy.num_levels):
        level = {"level": str(lv + 1), "class_names": json.dumps(hierarchy.names[lv]),
                 "colors": json.dumps(palettes[lv].tolist())}
        dst["path"].update_tags(lv + 1, **level)
        dst[f"L{lv}"].update_tags(mode=mode, **common)
        dst[f"L{lv}"].update_tags(1, **level)
    if "confidence" in dst:
        dst["confidence"].update_tags(meaning="probability of each level's class under the path distribution "
                                      "P(p) ~ prod_l q_l(p_l) (hierars.granularity)", **common)
    if granularity is not None:
        dst["granularity"].update_tags(threshold=repr(float(granularity)), **common,
                                       node_names=json.dumps([n for _, _, n in node_names(hierarchy)]),
                                       node_ids="0 = root; class c of level l -> 1 + N_0 + ... + N_(l-1) + c")


def _stream(predictor: SlidingWindowPredictor, read: ReadFn, src: rasterio.DatasetReader, dst: dict,
            hierarchy: Hierarchy, mode: str, granularity: float | None, cls_dtype: str, desc: str) -> None:
    need_probs = "confidence" in dst or granularity is not None

    def write(key: str, arr: np.ndarray, win: Window) -> None:
        dst[key].write(arr, window=win)

    for item in predictor.stream(read, src.height, src.width, desc=desc, with_probs=need_probs):
        (r, c, h, w), labels = item[0], item[1]
        win = Window(c, r, w, h)
        write("path", labels.astype(cls_dtype), win)
        for lv in range(hierarchy.num_levels):
            write(f"L{lv}", labels[lv : lv + 1].astype(cls_dtype), win)
        if need_probs:
            out = summarise_probabilities(item[2], labels, hierarchy, granularity, labels_are_jsps=mode == "jsps")
            if "confidence" in dst:
                write("confidence", out["confidence"], win)
            if granularity is not None:
                write("granularity", out["granularity"][None].astype(dst["granularity"].dtypes[0]), win)

"""From logits to per-level label maps: JSPS, flat lifting, and sliding-window inference over big GeoTIFFs.

- :func:`jsps` — Joint Semantic Path Selection (method-spec Eq. 25): argmax over the valid root-to-leaf
  paths of Σ_l log softmax(Y_l)[c_l]; the result is always a valid path.
- :func:`lift_flat` — the flat baseline: argmax at the finest level, coarser levels by the tree
  (ŷ^l = parent_l[ŷ^L]).
- :func:`predict_levels` — one entry point for every head type and mode (``"argmax"``, ``"jsps"``,
  ``"hssn"``).
- :func:`predict_raster` — windowed, overlap-blended inference over a GeoTIFF of any size, writing a
  georeferenced multi-band prediction (one uint8 band per level).
"""

from __future__ import annotations

import colorsys
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hierars.losses import upsample_logits

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

MODES = ("argmax", "jsps", "hssn")


def _as_list(logits: Sequence[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    out = [logits] if isinstance(logits, torch.Tensor) else list(logits)
    if not out or any(z.ndim != 4 for z in out):
        raise ValueError("logits must be a non-empty list of B×N_l×h×w tensors")
    return out


def _common_size(logits: list[torch.Tensor], size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        return (int(size[0]), int(size[1]))
    return max((tuple(z.shape[-2:]) for z in logits), key=lambda s: s[0] * s[1])


def _check_levels(logits: list[torch.Tensor], hierarchy: Hierarchy) -> None:
    nc = tuple(hierarchy.num_classes)
    got = tuple(z.shape[1] for z in logits)
    if len(logits) == 1:
        if got[0] != nc[-1]:
            raise ValueError(
                f"a 1-element (flat) output must have {nc[-1]} finest-level channels, got {got[0]}"
            )
    elif got != nc:
        raise ValueError(f"logits have channels {got}, hierarchy {hierarchy.name!r} expects {nc}")


def lift_flat(fine: torch.Tensor | Sequence[torch.Tensor], hierarchy: Hierarchy) -> torch.Tensor:
    """Flat baseline lifting: finest-level prediction → labels at every level by the tree.

    Args:
        fine: finest-level logits B×N_L×H×W (float; argmax over dim 1 is taken), a 1-element list of
            them, or finest-level labels B×H×W (integer; ``ignore_index`` stays ignored).

    Returns: LongTensor B×L×H×W with ŷ^l = ancestor at level l of ŷ^L.
    """
    if not isinstance(fine, torch.Tensor):
        fine = _as_list(fine)
        if len(fine) != 1:
            raise ValueError(f"lift_flat takes one finest-level tensor, got a list of {len(fine)}")
        fine = fine[0]
    if fine.is_floating_point():
        if fine.ndim != 4 or fine.shape[1] != hierarchy.num_classes[-1]:
            raise ValueError(
                f"finest logits must be B×{hierarchy.num_classes[-1]}×H×W, got shape {tuple(fine.shape)}"
            )
        fine = fine.argmax(1)
    elif fine.ndim != 3:
        raise ValueError(f"finest labels must be B×H×W, got shape {tuple(fine.shape)}")
    return torch.stack([hierarchy.lift(fine, level) for level in range(hierarchy.num_levels)], dim=1)


def jsps(
    logits: Sequence[torch.Tensor], hierarchy: Hierarchy, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Joint Semantic Path Selection: p̂ = argmax_{p∈P} Σ_l log softmax(Y_l)[p_l] per pixel (Eq. 25).

    Args:
        logits: L tensors B×N_l×h×w coarse→fine (different sizes are upsampled bilinearly to ``size``, by
            default the largest). A 1-element (flat) list reduces to :func:`lift_flat`.
        hierarchy: the label tree (``hierarchy.paths``: P×L).

    Returns: LongTensor B×L×H×W whose every pixel is a valid path of ``hierarchy``.
    """
    logits = _as_list(logits)
    _check_levels(logits, hierarchy)
    logits = upsample_logits(logits, _common_size(logits, size))
    if len(logits) == 1:
        return lift_flat(logits[0], hierarchy)
    # s(p) = Σ_l log_softmax(Y_l)[p_l] = Σ_l Y_l[p_l] − Σ_l logsumexp(Y_l): the subtracted term is the same
    # for every path of a pixel, so the argmax over paths needs only the raw logits (no full-size log-softmax).
    # A running max over the paths keeps memory at O(B·H·W) instead of materialising B×P×H×W scores and is
    # ~3x faster than an argmax over the path axis on CPU; strict ">" keeps the first best path, like argmax.
    paths = hierarchy.paths.to(logits[0].device)
    best_score = best = None
    for p, path in enumerate(paths.tolist()):
        score = logits[-1][:, path[-1]].float()
        for level, z in enumerate(logits[:-1]):
            score = score + z[:, path[level]]
        if best is None:
            best_score, best = score, torch.zeros(score.shape, dtype=torch.long, device=score.device)
        else:
            better = score > best_score
            best_score = torch.where(better, score, best_score)
            best.masked_fill_(better, p)
    return paths[best].permute(0, 3, 1, 2).contiguous()


def _hssn_select(probs: list[torch.Tensor], hierarchy: Hierarchy) -> torch.Tensor:
    """HSSN's rule on jointly-softmaxed probabilities: argmax_P Σ_l q^l[p_l] (a sum of probabilities)."""
    paths = hierarchy.paths.to(probs[0].device)
    score = sum(q.index_select(1, paths[:, level]) for level, q in enumerate(probs))
    return paths[score.argmax(1)].permute(0, 3, 1, 2).contiguous()


def _to_probs(logits: list[torch.Tensor], mode: str) -> list[torch.Tensor]:
    """Per-level probabilities used for blending: softmax per level, or HSSN's joint softmax."""
    if mode == "hssn" and len(logits) > 1:
        joint = torch.cat([z.float() for z in logits], dim=1).softmax(1)
        return list(torch.split(joint, [z.shape[1] for z in logits], dim=1))
    return [z.float().softmax(1) for z in logits]


def _probs_to_levels(probs: list[torch.Tensor], hierarchy: Hierarchy, mode: str) -> torch.Tensor:
    """Decide labels B×L×H×W from (blended) per-level probabilities of :func:`_to_probs`."""
    if len(probs) == 1:
        return lift_flat(probs[0], hierarchy)
    if mode == "argmax":
        return torch.stack([q.argmax(1) for q in probs], dim=1)
    if mode == "hssn":
        return _hssn_select(probs, hierarchy)
    # log-probabilities are valid logits: log_softmax(log p) == log p when Σ p = 1
    return jsps([q.clamp_min(1e-30).log() for q in probs], hierarchy)


def predict_levels(
    logits: Sequence[torch.Tensor],
    hierarchy: Hierarchy,
    mode: str = "argmax",
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Turn any head's output into labels of every level.

    Args:
        logits: list of L tensors B×N_l×h×w coarse→fine, or a 1-element list (FlatHead: finest level only).
        hierarchy: the label tree.
        mode: ``"argmax"`` — independent per-level argmax (may be inconsistent across levels);
            ``"jsps"`` — :func:`jsps` (always consistent); ``"hssn"`` — HSSN's inference (softmax over all
            levels' channels jointly, path score = sum of the path's probabilities; always consistent).
            For a 1-element output every mode is the flat baseline (:func:`lift_flat`).
        size: output (H, W); logits are upsampled bilinearly to it (default: the largest logits size).

    Returns: LongTensor B×L×H×W.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    logits = _as_list(logits)
    _check_levels(logits, hierarchy)
    logits = upsample_logits(logits, _common_size(logits, size))
    if len(logits) == 1:
        return lift_flat(logits[0], hierarchy)
    if mode == "argmax":
        return torch.stack([z.argmax(1) for z in logits], dim=1)
    if mode == "jsps":
        return jsps(logits, hierarchy)
    return _hssn_select(_to_probs(logits, "hssn"), hierarchy)


# ----------------------------------------------------------------------------------------- colours
def level_palettes(hierarchy: Hierarchy) -> list[np.ndarray]:
    """Colours per level: uint8 arrays N_l×3, coarse→fine.

    Uses ``hierars.plotting.level_palettes`` (tree-shaded palettes shared with the figures) when available;
    otherwise a deterministic built-in palette with distinct, evenly spaced hues in tree order.
    """
    try:
        from hierars import plotting

        out = []
        for level, pal in enumerate(plotting.level_palettes(hierarchy)):
            arr = np.asarray(pal)[:, :3]
            if arr.dtype.kind == "f":
                arr = arr * 255.0 if arr.max() <= 1.0 else arr
            arr = np.asarray(arr, dtype=np.float64).round().clip(0, 255).astype(np.uint8)
            if arr.shape != (hierarchy.num_classes[level], 3):
                raise ValueError(f"palette of level {level + 1} has shape {arr.shape}")
            out.append(arr)
        return out
    except (ImportError, AttributeError, ValueError, TypeError, IndexError):
        pass  # fall back to the built-in palette below
    # Classes are indexed in tree order at every level, so evenly spaced hues in index order keep each
    # subtree in its ancestor's hue range; alternating lightness separates neighbours. Colours are unique.
    out = []
    for level, n in enumerate(hierarchy.num_classes):
        rows = []
        for i in range(n):
            light = (0.42, 0.58, 0.5)[i % 3] if n > 2 else 0.5
            rows.append(
                colorsys.hls_to_rgb((i + 0.5) / n * 0.92, light, 0.85 - 0.1 * level / hierarchy.num_levels)
            )
        out.append((np.array(rows) * 255).round().astype(np.uint8))
    return out


# ----------------------------------------------------------------------------------------- raster I/O
@dataclass
class RasterPrediction:
    """What :func:`predict_raster` wrote and how much it buffered."""

    path: Path
    level_vrts: list[Path]
    shape: tuple[int, int]
    num_windows: int
    peak_buffer_pixels: int  # max number of scene pixels held in blending buffers at once


def _starts(size: int, win: int, stride: int) -> list[int]:
    starts = list(range(0, max(size - win, 0) + 1, stride))
    if starts[-1] + win < size:
        starts.append(size - win)
    return starts


def _ramp(n: int, overlap: int) -> np.ndarray:
    """1-D blending weight: linear ramp over ``overlap`` pixels at both ends, 1 inside, always > 0."""
    ramp = max(overlap, 1)
    i = np.arange(n, dtype=np.float64)
    return np.minimum(1.0, np.minimum(i + 0.5, n - i - 0.5) / ramp).astype(np.float32)


def _segments(starts: list[int], win: int, size: int) -> list[tuple[int, int, int]]:
    """Split [0, size) at every window edge: (lo, hi, number of windows covering the segment)."""
    edges = sorted({0, size, *starts, *(min(s + win, size) for s in starts)})
    segs = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        n = sum(1 for s in starts if s <= lo and s + win >= hi)
        if n == 0:
            raise RuntimeError(f"internal error: segment [{lo}, {hi}) is not covered by any window")
        segs.append((lo, hi, n))
    return segs


def _pam_band_xml(parent: ET.Element, names: list[str], colours: np.ndarray) -> None:
    ET.SubElement(parent, "ColorInterp").text = "Palette"
    cats = ET.SubElement(parent, "CategoryNames")
    for name in names:
        ET.SubElement(cats, "Category").text = name
    table = ET.SubElement(parent, "ColorTable")
    for r, g, b in colours.tolist():
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4="255")


def _write_sidecars(
    dst: Path, hierarchy: Hierarchy, palettes: list[np.ndarray], descriptions: list[str], src_meta: dict
) -> list[Path]:
    """PAM ``.aux.xml`` (class names + colour tables for every band) and one coloured VRT per level.

    GTiff stores a colour table for single-band files only, so the multi-band GeoTIFF carries the
    colours and names in its PAM sidecar (GDAL/QGIS apply band 1's) and each level also gets a tiny
    ``<stem>_L<l>.vrt`` (a view of that band with its own colour table and category names) that opens
    coloured and labelled in QGIS.
    """
    pam = ET.Element("PAMDataset")
    for level in range(hierarchy.num_levels):
        band = ET.SubElement(pam, "PAMRasterBand", band=str(level + 1))
        ET.SubElement(band, "Description").text = descriptions[level]
        _pam_band_xml(band, hierarchy.names[level], palettes[level])
    ET.ElementTree(pam).write(dst.with_name(dst.name + ".aux.xml"), encoding="unicode")
    vrts = []
    t = src_meta["transform"]
    for level in range(hierarchy.num_levels):
        vrt = ET.Element(
            "VRTDataset", rasterXSize=str(src_meta["width"]), rasterYSize=str(src_meta["height"])
        )
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
        ET.ElementTree(vrt).write(path, encoding="unicode")
        vrts.append(path)
    return vrts


def _forward_windows(
    model: nn.Module, batch: np.ndarray, window: tuple[int, int], mode: str, device: torch.device
) -> list[np.ndarray]:
    """Model on a batch of n×C×h×w tiles (padded to ``window`` if smaller) → per-level probabilities (np)."""
    x = torch.from_numpy(batch).to(device)
    h, w = x.shape[-2:]
    pad_h, pad_w = window[0] - h, window[1] - w
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, max(pad_w, 0), 0, max(pad_h, 0)), mode="replicate")
    out = model(x)
    out = _as_list(out[0] if isinstance(out, tuple) else out)
    logits = upsample_logits(out, tuple(x.shape[-2:]))
    probs = torch.cat(_to_probs(logits, mode), dim=1)[..., :h, :w]
    return list(probs.cpu().numpy())


@torch.no_grad()
def predict_raster(
    model: nn.Module,
    src_path: str | Path,
    dst_path: str | Path,
    hierarchy: Hierarchy,
    window: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    mode: str = "jsps",
    device: str | torch.device | None = None,
    bands: Sequence[int] | None = None,
    progress: bool = True,
) -> RasterPrediction:
    """Sliding-window inference over a (large) GeoTIFF, writing a georeferenced per-level prediction.

    The scene is covered by ``window``×``window`` tiles with stride ``window - overlap`` (the last tile in
    each direction is aligned to the scene edge; scenes smaller than the window are padded by edge
    replication). Each tile is read with a windowed ``rasterio`` read, run through ``model`` in batches,
    turned into per-level probabilities (softmax per level; HSSN's joint softmax for ``mode="hssn"``) and
    blended with a weight that ramps linearly over the overlap. The scene is split at every tile edge
    into cells; a cell is finalised (its blended probabilities decoded with ``mode`` and written) as soon
    as the last tile covering it is processed. Memory therefore holds the cells touched by the current
    row of tiles that are not final yet — about one tile plus one ``overlap``-high strip — and never
    the scene: reads are never larger than one window.

    Args:
        model: returns a list of per-level logits (or a 1-element flat output) for B×C×h×w input; it is
            put in eval mode.
        src_path: input GeoTIFF (any size; CRS optional). dst_path: output GeoTIFF.
        hierarchy: the label tree (band l+1 holds level l; class names and colours per band).
        window, overlap: tile size and overlap in pixels (``0 <= overlap < window``).
        batch_size: tiles per forward pass.
        normalize: optional (mean, std) per input band; pixels become ``(x - mean) / std``.
        mode: ``"jsps"`` (default, consistent), ``"argmax"`` or ``"hssn"`` (see :func:`predict_levels`).
        device: default: the model's device.
        bands: 1-based source band indices to read (default: all).
        progress: show a tqdm bar over tiles.

    Writes ``dst_path`` — a tiled, deflate-compressed uint8 GeoTIFF with one band per level, the source's
    CRS and transform, nodata 255 (also where every source band equals the source nodata), band
    descriptions ``"L<l>: <name list>"``, per-band tags ``level``/``class_names``/``colors`` (JSON) — plus
    a PAM ``.aux.xml`` (category names and colour tables) and one coloured ``<stem>_L<l>.vrt`` per level.

    Returns: :class:`RasterPrediction`.
    """
    import rasterio
    from rasterio.windows import Window

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not (isinstance(window, int) and window > 0 and isinstance(overlap, int) and 0 <= overlap < window):
        raise ValueError(f"need 0 <= overlap < window, got window={window!r}, overlap={overlap!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    src_path, dst_path = Path(src_path), Path(dst_path)
    if not src_path.is_file():
        raise FileNotFoundError(f"input raster not found: {src_path}")
    if src_path.resolve() == dst_path.resolve():
        raise ValueError(f"dst_path must differ from src_path ({src_path})")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    palettes = level_palettes(hierarchy)
    n_levels = hierarchy.num_levels
    ignore = hierarchy.ignore_index
    try:
        with rasterio.open(src_path) as src:
            band_idx = list(bands) if bands is not None else list(range(1, src.count + 1))
            if not band_idx or min(band_idx) < 1 or max(band_idx) > src.count:
                raise ValueError(f"{src_path}: bands {band_idx} outside 1..{src.count}")
            H, W = src.height, src.width
            mean = std = None
            if normalize is not None:
                mean = np.asarray(normalize[0], dtype=np.float32).reshape(-1, 1, 1)
                std = np.asarray(normalize[1], dtype=np.float32).reshape(-1, 1, 1)
                if mean.shape[0] != len(band_idx) or std.shape[0] != len(band_idx) or np.any(std == 0):
                    raise ValueError(
                        f"normalize needs {len(band_idx)} means and non-zero stds (one per band), "
                        f"got {mean.shape[0]} and {std.shape[0]}"
                    )
            src_nodata = src.nodata
            win_h, win_w = min(window, H), min(window, W)
            stride = window - overlap
            rows, cols = _starts(H, win_h, stride), _starts(W, win_w, stride)
            row_segs, col_segs = _segments(rows, win_h, H), _segments(cols, win_w, W)
            weight_1d_r, weight_1d_c = _ramp(win_h, overlap), _ramp(win_w, overlap)
            weight = weight_1d_r[:, None] * weight_1d_c[None, :]
            tiles = [(r, c) for r in rows for c in cols]

            descriptions = [f"L{lv + 1}: " + ", ".join(hierarchy.names[lv]) for lv in range(n_levels)]
            profile = dict(
                driver="GTiff",
                height=H,
                width=W,
                count=n_levels,
                dtype="uint8",
                crs=src.crs,
                transform=src.transform,
                nodata=ignore,
                compress="deflate",
                tiled=True,
                blockxsize=256,
                blockysize=256,
            )
            if H < 256 or W < 256:
                profile.update(tiled=False, blockxsize=None, blockysize=None)
                profile = {k: v for k, v in profile.items() if v is not None}
            src_meta = {"crs": src.crs, "transform": src.transform, "height": H, "width": W}
            dst_path.parent.mkdir(parents=True, exist_ok=True)

            # live blending cells: (row_seg, col_seg) -> [prob_sum C×h×w, weight_sum h×w, invalid h×w, count]
            cells: dict[tuple[int, int], list] = {}
            peak = 0

            def cells_of(r0: int, c0: int) -> list[tuple[int, int]]:
                ri = [i for i, (lo, hi, _) in enumerate(row_segs) if lo >= r0 and hi <= r0 + win_h]
                ci = [j for j, (lo, hi, _) in enumerate(col_segs) if lo >= c0 and hi <= c0 + win_w]
                return [(i, j) for i in ri for j in ci]

            with rasterio.open(dst_path, "w", **profile) as dst:
                for level in range(n_levels):
                    dst.set_band_description(level + 1, descriptions[level])
                    dst.update_tags(
                        level + 1,
                        level=str(level + 1),
                        class_names=json.dumps(hierarchy.names[level]),
                        colors=json.dumps(palettes[level].tolist()),
                    )
                dst.update_tags(
                    hierarchy=hierarchy.name, mode=mode, num_classes=json.dumps(hierarchy.num_classes)
                )

                def consume(tile: tuple[int, int], probs: np.ndarray, invalid: np.ndarray | None) -> None:
                    nonlocal peak
                    r0, c0 = tile
                    touched = cells_of(r0, c0)
                    for i, j in touched:  # accumulate this tile's weighted probabilities
                        (rlo, rhi, _), (clo, chi, _) = row_segs[i], col_segs[j]
                        sl = (slice(rlo - r0, rhi - r0), slice(clo - c0, chi - c0))
                        wgt = weight[sl]
                        cell = cells.get((i, j))
                        if cell is None:
                            inv = None if invalid is None else invalid[sl].copy()
                            cells[(i, j)] = [probs[(slice(None), *sl)] * wgt, wgt.copy(), inv, 1]
                        else:
                            cell[0] += probs[(slice(None), *sl)] * wgt
                            cell[1] += wgt
                            cell[3] += 1
                    peak = max(peak, sum(c[1].size for c in cells.values()))
                    split = (
                        [probs.shape[0]]
                        if probs.shape[0] == hierarchy.num_classes[-1]
                        else list(hierarchy.num_classes)
                    )
                    for i, j in touched:  # finalise the cells no later tile covers
                        (rlo, rhi, rn), (clo, chi, cn) = row_segs[i], col_segs[j]
                        prob_sum, weight_sum, inv, count = cells[(i, j)]
                        if count < rn * cn:
                            continue
                        blended = torch.from_numpy(prob_sum / weight_sum)[None]
                        per_level = list(torch.split(blended, split, 1))
                        labels = _probs_to_levels(per_level, hierarchy, mode)[0].numpy()
                        if inv is not None:
                            labels[:, inv] = ignore
                        dst.write(labels.astype(np.uint8), window=Window(clo, rlo, chi - clo, rhi - rlo))
                        del cells[(i, j)]

                bar = tqdm(
                    total=len(tiles), desc=f"predict {src_path.name}", disable=not progress, unit="tile"
                )
                for b0 in range(0, len(tiles), batch_size):
                    chunk = tiles[b0 : b0 + batch_size]
                    arrays, invalids = [], []
                    for r0, c0 in chunk:
                        arr = src.read(band_idx, window=Window(c0, r0, win_w, win_h)).astype(np.float32)
                        invalids.append(None if src_nodata is None else np.all(arr == src_nodata, axis=0))
                        if mean is not None:
                            arr = (arr - mean) / std
                        arrays.append(arr)
                    probs = _forward_windows(model, np.stack(arrays), (window, window), mode, device)
                    for tile, p, inv in zip(chunk, probs, invalids, strict=True):
                        consume(tile, p, inv)
                    bar.update(len(chunk))
                bar.close()
            if cells:
                raise RuntimeError(f"internal error: {len(cells)} cells were never completed")
    finally:
        model.train(was_training)
    vrts = _write_sidecars(dst_path, hierarchy, palettes, descriptions, src_meta)
    return RasterPrediction(dst_path, vrts, (H, W), len(tiles), peak)


__all__ = [
    "MODES",
    "RasterPrediction",
    "jsps",
    "level_palettes",
    "lift_flat",
    "predict_levels",
    "predict_raster",
]

"""Sliding-window prediction on arrays: overlapping windows, blended probabilities, per-level labels.

:class:`SlidingWindowPredictor` covers an image of any size with ``window`` x ``window`` tiles at steps of at
most ``window - overlap``, spread evenly from edge to edge (images smaller than the window are padded by edge
replication), runs the model on batches of tiles, turns the logits into per-level
probabilities (softmax per level; HSSN's joint softmax for ``mode="hssn"``) and blends overlapping tiles with
a weight that ramps linearly over the overlap. The image is split at every tile edge into cells; a cell is
decoded (:func:`hierars.decoding.decode_probabilities`) and handed out as soon as the last tile covering it
has been processed, so memory holds about one tile plus one overlap-high strip, never the whole image.

It knows nothing of files: :meth:`SlidingWindowPredictor.stream` pulls tiles through a ``read`` callback and
yields finished cells, which a raster writer (``hierars.data.predict_raster``) writes window by window;
:meth:`SlidingWindowPredictor.predict_array` does the same for an in-memory array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hierars.decoding import MODES, decode_probabilities, probabilities
from hierars.levels import as_level_list, upsample_logits

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["SlidingWindowPredictor", "Cell", "ReadFn"]

#: (row, col, height, width) of a finished cell in image pixels
Cell = tuple[int, int, int, int]
#: read(row, col, height, width) -> (C×h×w float32 array, h×w bool "no data" mask or None)
ReadFn = Callable[[int, int, int, int], tuple[np.ndarray, "np.ndarray | None"]]


def _starts(size: int, win: int, stride: int) -> list[int]:
    """Window starts covering [0, size): the fewest windows whose steps are <= ``stride``, spread evenly.

    Even steps (rather than ``stride`` steps and a last window pushed back to the edge) keep every overlap close to
    ``win - stride``: an edge-aligned last window can overlap its neighbour by almost a window, and that whole strip
    across the scene would wait in the blending buffers for the last row of windows.
    """
    if size <= win:
        return [0]
    n = -(-(size - win) // stride) + 1
    return [round(k * (size - win) / (n - 1)) for k in range(n)]


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


class SlidingWindowPredictor:
    """Blended sliding-window prediction of per-level labels (see the module docstring).

    Args:
        model: returns a list of per-level logits (or a 1-element flat output) for B×C×h×w input; it is put
            in eval mode while predicting and restored afterwards.
        hierarchy: the label tree.
        window, overlap: tile size and overlap in pixels (``0 <= overlap < window``).
        batch_size: tiles per forward pass.
        mode: ``"jsps"`` (default, consistent), ``"argmax"`` or ``"hssn"`` (:func:`hierars.decoding.predict_levels`).
        normalize: optional (mean, std) per input band; pixels become ``(x - mean) / std``.
        device: default: the model's device.
        progress: show a tqdm bar over tiles.

    Attributes:
        peak_buffer_pixels: after a prediction, the most image pixels held in blending buffers at once.
        num_windows: after a prediction, how many tiles were run.
    """

    def __init__(self, model: nn.Module, hierarchy: Hierarchy, window: int = 512, overlap: int = 64,
                 batch_size: int = 4, mode: str = "jsps",
                 normalize: tuple[Sequence[float], Sequence[float]] | None = None,
                 device: str | torch.device | None = None, progress: bool = True) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not (isinstance(window, int) and window > 0 and isinstance(overlap, int) and 0 <= overlap < window):
            raise ValueError(f"need 0 <= overlap < window, got window={window!r}, overlap={overlap!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.hierarchy, self.mode = model, hierarchy, mode
        self.window, self.overlap, self.batch_size, self.progress = window, overlap, batch_size, progress
        self.mean = self.std = None
        if normalize is not None:
            self.mean = np.asarray(normalize[0], dtype=np.float32).reshape(-1, 1, 1)
            self.std = np.asarray(normalize[1], dtype=np.float32).reshape(-1, 1, 1)
            if self.mean.shape[0] != self.std.shape[0] or np.any(self.std == 0):
                raise ValueError(f"normalize needs as many means as non-zero stds, got {self.mean.shape[0]} "
                                 f"means and {self.std.shape[0]} stds")
        if device is None:
            param = next(iter(model.parameters()), None)
            device = param.device if param is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.peak_buffer_pixels = 0
        self.num_windows = 0

    def check_bands(self, num_bands: int, where: str = "input") -> None:
        """Raise ``ValueError`` if ``normalize`` was given for a different number of bands."""
        if self.mean is not None and self.mean.shape[0] != num_bands:
            raise ValueError(f"{where} has {num_bands} bands but normalize has {self.mean.shape[0]} "
                             "means/stds (one per band)")

    def _forward(self, batch: np.ndarray) -> list[np.ndarray]:
        """Model on n×C×h×w tiles (padded to the window if smaller) → per-level probabilities, n × (ΣN_l)×h×w."""
        x = torch.from_numpy(batch).to(self.device)
        h, w = x.shape[-2:]
        pad_h, pad_w = self.window - h, self.window - w
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, (0, max(pad_w, 0), 0, max(pad_h, 0)), mode="replicate")
        out = self.model(x)
        logits = upsample_logits(as_level_list(out[0] if isinstance(out, tuple) else out), tuple(x.shape[-2:]))
        probs = torch.cat(probabilities(logits, self.mode), dim=1)[..., :h, :w]
        return list(probs.cpu().numpy())

    @torch.no_grad()
    def stream(self, read: ReadFn, height: int, width: int, desc: str = "predict", with_probs: bool = False
               ) -> Iterator[tuple]:
        """Predict an image of ``height`` x ``width`` whose tiles come from ``read``.

        Yields ``((row, col, h, w), labels)`` for every finished cell, ``labels`` an int64 array ``L×h×w``
        (pixels that ``read`` marked as no data get ``hierarchy.ignore_index``). The cells tile the image
        exactly once. With ``with_probs``, ``((row, col, h, w), labels, probs)``: ``probs`` the cell's blended
        per-level probabilities as a list of float32 arrays ``N_l×h×w`` coarse to fine (one, the finest
        level, for a flat model; see :mod:`hierars.granularity` for confidences derived from them).
        """
        h_ = self.hierarchy
        win_h, win_w = min(self.window, height), min(self.window, width)
        stride = self.window - self.overlap
        rows, cols = _starts(height, win_h, stride), _starts(width, win_w, stride)
        row_segs, col_segs = _segments(rows, win_h, height), _segments(cols, win_w, width)
        weight = _ramp(win_h, self.overlap)[:, None] * _ramp(win_w, self.overlap)[None, :]
        tiles = [(r, c) for r in rows for c in cols]
        self.num_windows, self.peak_buffer_pixels = len(tiles), 0
        # live blending cells: (row_seg, col_seg) -> [prob_sum C×h×w, weight_sum h×w, invalid h×w, count]
        cells: dict[tuple[int, int], list] = {}

        def cells_of(r0: int, c0: int) -> list[tuple[int, int]]:
            ri = [i for i, (lo, hi, _) in enumerate(row_segs) if lo >= r0 and hi <= r0 + win_h]
            ci = [j for j, (lo, hi, _) in enumerate(col_segs) if lo >= c0 and hi <= c0 + win_w]
            return [(i, j) for i in ri for j in ci]

        def consume(tile: tuple[int, int], probs: np.ndarray, invalid: np.ndarray | None
                    ) -> Iterator[tuple[Cell, np.ndarray]]:
            r0, c0 = tile
            touched = cells_of(r0, c0)
            for i, j in touched:  # accumulate this tile's weighted probabilities
                (rlo, rhi, rn), (clo, chi, cn) = row_segs[i], col_segs[j]
                sl = (slice(rlo - r0, rhi - r0), slice(clo - c0, chi - c0))
                if rn * cn == 1:  # only this tile covers the cell: nothing to blend, no copy
                    cells[(i, j)] = [probs[(slice(None), *sl)], None, None if invalid is None else invalid[sl], 1]
                    continue
                wgt = weight[sl]
                cell = cells.get((i, j))
                if cell is None:
                    inv = None if invalid is None else invalid[sl].copy()
                    cells[(i, j)] = [probs[(slice(None), *sl)] * wgt, wgt.copy(), inv, 1]
                else:
                    cell[0] += probs[(slice(None), *sl)] * wgt
                    cell[1] += wgt
                    cell[3] += 1
            self.peak_buffer_pixels = max(self.peak_buffer_pixels, sum(c[0][0].size for c in cells.values()))
            split = [probs.shape[0]] if probs.shape[0] == h_.num_classes[-1] else list(h_.num_classes)
            for i, j in touched:  # finalise the cells no later tile covers
                (rlo, rhi, rn), (clo, chi, cn) = row_segs[i], col_segs[j]
                prob_sum, weight_sum, inv, count = cells[(i, j)]
                if count < rn * cn:
                    continue
                if weight_sum is not None:
                    prob_sum /= weight_sum  # the cell's own buffer: normalise in place
                blended = torch.from_numpy(prob_sum)[None]
                labels = decode_probabilities(list(torch.split(blended, split, 1)), h_, self.mode)[0].numpy()
                if inv is not None:
                    labels[:, inv] = h_.ignore_index
                del cells[(i, j)]
                cell_box = (rlo, clo, rhi - rlo, chi - clo)
                if with_probs:
                    yield cell_box, labels, [q.numpy() for q in torch.split(blended[0], split, 0)]
                else:
                    yield cell_box, labels

        was_training = self.model.training
        self.model.eval()
        try:
            bar = tqdm(total=len(tiles), desc=desc, disable=not self.progress, unit="tile")
            for b0 in range(0, len(tiles), self.batch_size):
                chunk = tiles[b0 : b0 + self.batch_size]
                arrays, invalids = [], []
                for r0, c0 in chunk:
                    arr, inv = read(r0, c0, win_h, win_w)
                    arr = np.asarray(arr, dtype=np.float32)
                    if self.mean is not None:
                        self.check_bands(arr.shape[0])
                        arr = (arr - self.mean) / self.std
                    arrays.append(arr)
                    invalids.append(inv)
                for tile, p, inv in zip(chunk, self._forward(np.stack(arrays)), invalids, strict=True):
                    yield from consume(tile, p, inv)
                bar.update(len(chunk))
            bar.close()
        finally:
            self.model.train(was_training)
        if cells:
            raise RuntimeError(f"internal error: {len(cells)} cells were never completed")

    def predict_array(self, image: np.ndarray | torch.Tensor, nodata: float | None = None) -> np.ndarray:
        """Labels of every level for an in-memory image.

        Args:
            image: C×H×W array or tensor (raw values; ``normalize`` is applied if given).
            nodata: pixels whose every band equals it become ``ignore_index``.

        Returns: int64 array L×H×W.
        """
        arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if arr.ndim != 3:
            raise ValueError(f"image must be C×H×W, got shape {arr.shape}")
        self.check_bands(arr.shape[0], "image")
        out = np.empty((self.hierarchy.num_levels, *arr.shape[1:]), dtype=np.int64)

        def read(r: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
            tile = arr[:, r : r + h, c : c + w]
            return tile, (None if nodata is None else np.all(tile == nodata, axis=0))

        for (r, c, h, w), labels in self.stream(read, arr.shape[1], arr.shape[2]):
            out[:, r : r + h, c : c + w] = labels
        return out

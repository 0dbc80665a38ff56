"""Vectorised array helpers of the synthetic generator: deterministic per-object uniforms (splitmix64
hashes of object ids), bilinear upsampling of coarse noise lattices, shifts without wrap-around and
block mean / mode resampling between the render grid and the source grids."""

from __future__ import annotations

import numpy as np

__all__ = ["hash01", "uniforms", "upsample", "shift", "block_mode", "block_mean"]


def hash01(ids: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic per-id uniform numbers in [0, 1) (splitmix64 of ``ids`` and ``salt``)."""
    z = np.asarray(ids).astype(np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) / float(1 << 53)).astype(np.float32)


def upsample(g: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small lattice ``g`` (a x b) spanning an ``h x w`` grid.

    Separable index arithmetic instead of a matrix product: multithreaded BLAS is slow on a
    shared machine for these shapes."""

    def axis(n: int, cells: int):
        pos = (np.arange(n) + 0.5) / n * (cells - 1)
        i0 = np.minimum(np.floor(pos).astype(int), cells - 2)
        return i0, (pos - i0).astype(np.float32)

    g = np.asarray(g, np.float32)
    i0, wi = axis(h, g.shape[0])
    rows = g[i0] * (1 - wi)[:, None] + g[i0 + 1] * wi[:, None]
    j0, wj = axis(w, g.shape[1])
    return rows[:, j0] * (1 - wj) + rows[:, j0 + 1] * wj


def uniforms(ids: np.ndarray, salt: int, k: int) -> list[np.ndarray]:
    """``k <= 5`` independent per-id uniforms in [0, 1) (12-bit resolution) from one hash."""
    z = np.asarray(ids).astype(np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return [((z >> np.uint64(12 * i)) & np.uint64(0xFFF)).astype(np.float32) / 4096.0 for i in range(k)]


def shift(a: np.ndarray, dy: int, dx: int, fill=0) -> np.ndarray:
    """``a`` shifted by (dy, dx) pixels without wrap-around."""
    out = np.full_like(a, fill)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def block_mode(labels: np.ndarray, factor: int, num_values: int = 256) -> np.ndarray:
    """Area mode of ``labels`` (H x W uint8) over non-overlapping ``factor x factor`` blocks.

    Every value counts, ``255`` (unlabeled) included; ties go to the smaller value. H and W must
    be multiples of ``factor``. Returns uint8 ``(H / factor, W / factor)``.
    """
    h, w = labels.shape
    if h % factor or w % factor:
        raise ValueError(f"block_mode: shape {labels.shape} is not a multiple of factor {factor}")
    hb, wb = h // factor, w // factor
    blocks = labels.reshape(hb, factor, wb, factor).transpose(0, 2, 1, 3).reshape(hb * wb, factor * factor)
    counts = np.zeros((hb * wb, num_values), dtype=np.int32)
    rows = np.repeat(np.arange(hb * wb), factor * factor)
    np.add.at(counts, (rows, blocks.ravel().astype(np.int64)), 1)
    return counts.argmax(axis=1).astype(labels.dtype).reshape(hb, wb)


def block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks of the last two axes of ``a`` (C x H x W)."""
    c, h, w = a.shape
    return a.reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4), dtype=np.float32)

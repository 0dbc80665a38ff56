"""The layout canvas: the semantic classes the generator paints and :class:`Canvas`, the mutable
layout state of one scene on its render grid (land-use label, material mix, gain and shade fields)
with its noise fields (texture, smooth noise, blobby regions) and painting primitives (paint,
blobs, polylines, crossing lines)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from hierars.data.spectra import MATERIAL_INDEX
from hierars.data.synthetic.grid import hash01, uniforms, upsample

__all__ = ["SEMANTIC_CLASSES", "SEM", "UNLABELED", "M", "Canvas"]

#: semantic classes the generator paints: the 18 MM-5B leaves, then crop types (crop domain).
SEMANTIC_CLASSES: tuple[str, ...] = (
    "paddy_field", "cropland", "forest", "natural_meadow", "artificial_meadow",
    "river", "lake", "pond",
    "industrial_area", "urban_residential", "rural_residential", "park_square", "stadium",
    "road", "overpass", "railway_station", "airport", "bare_land",
    "rice", "maize", "soybean", "other_crop",
)  # fmt: skip
SEM = {c: i for i, c in enumerate(SEMANTIC_CLASSES)}
UNLABELED = 255
M = MATERIAL_INDEX


@dataclass
class Canvas:
    """Mutable layout state on an ``n x n`` render grid of ``res`` metres."""

    n: int
    res: float
    rng: np.random.Generator
    sem: np.ndarray = field(init=False)
    mat_a: np.ndarray = field(init=False)
    mat_b: np.ndarray = field(init=False)
    frac: np.ndarray = field(init=False)
    gain: np.ndarray = field(init=False)
    shade: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = self.n
        c = (np.arange(n, dtype=np.float32) + 0.5) * self.res
        self.x = np.broadcast_to(c[None, :], (n, n))
        self.y = np.broadcast_to(c[:, None], (n, n))
        self.size = n * self.res
        self.sem = np.full((n, n), SEM["cropland"], np.uint8)
        self.mat_a = np.full((n, n), M["soil_dry"], np.uint8)
        self.mat_b = np.full((n, n), M["soil_dry"], np.uint8)
        self.frac = np.ones((n, n), np.float32)
        self.gain = np.ones((n, n), np.float32)
        self.shade = np.ones((n, n), np.float32)
        self.salt = int(self.rng.integers(1 << 30))
        self._tex: dict[float, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}

    # fields ---------------------------------------------------------------------------------
    def tex(self, sigma_px: float) -> np.ndarray:
        """Zero-mean unit-std Gaussian-filtered white noise (cached per sigma)."""
        if sigma_px not in self._tex:
            t = ndimage.gaussian_filter(
                self.rng.standard_normal((self.n, self.n)).astype(np.float32), sigma_px
            )
            self._tex[sigma_px] = (t - t.mean()) / (t.std() + 1e-6)
        return self._tex[sigma_px]

    def smooth(self, scale_m: float) -> np.ndarray:
        """Smooth noise with correlation length ~``scale_m`` (coarse lattice, blurred, bilinear up)."""
        cells = max(3, int(np.ceil(self.size / scale_m)) + 3)
        g = ndimage.gaussian_filter(self.rng.standard_normal((cells, cells)), 0.8, mode="wrap").astype(
            np.float32
        )
        up = upsample(g, self.n, self.n)
        return (up - up.mean()) / (up.std() + 1e-6)

    def rotated(self, cx: float, cy: float, theta: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(theta), np.sin(theta)
        dx, dy = self.x - cx, self.y - cy
        return (dx * c + dy * s).astype(np.float32), (-dx * s + dy * c).astype(np.float32)

    def objects(self, ids: np.ndarray, salt: int, k: int | None = None):
        """Per-object uniforms: one array, or a list of ``k`` arrays from a single hash."""
        if k is None:
            return hash01(ids, self.salt * 7919 + salt)
        return uniforms(ids, self.salt * 7919 + salt, k)

    # painting -------------------------------------------------------------------------------
    def paint(self, mask, sem: str | None, a: str, b: str | None = None, frac=1.0, gain=None) -> None:
        """Set class ``sem`` (None: keep) and material mix ``frac * a + (1 - frac) * b`` on ``mask``."""
        if sem is not None:  # a new land use replaces whatever was there, shadows included
            self.sem[mask] = SEM[sem] if sem != "unlabeled" else UNLABELED
            self.shade[mask] = 1.0
        self.mat_a[mask] = M[a]
        self.mat_b[mask] = M[b or a]
        self.frac[mask] = frac[mask] if np.ndim(frac) == 2 else frac
        if gain is not None:
            self.gain[mask] = gain[mask] if np.ndim(gain) == 2 else gain

    def region(self, frac: float, scale_m: float, within: np.ndarray | None = None) -> np.ndarray:
        """A blobby region covering about ``frac`` of ``within`` (default everywhere)."""
        if frac <= 0:
            return np.zeros((self.n, self.n), bool)
        f = self.smooth(scale_m) + 0.35 * self.smooth(scale_m / 3)
        pool = f[within] if within is not None else f.ravel()
        if pool.size == 0:
            return np.zeros((self.n, self.n), bool)
        thr = np.quantile(pool[:: max(1, pool.size // 50000)], 1.0 - frac)
        out = f > thr
        return out & within if within is not None else out

    def blob(self, cx: float, cy: float, r: float, wobble: float = 0.25) -> np.ndarray:
        """A wobbly disc of mean radius ``r`` metres around (cx, cy)."""
        k = np.arange(2, 6)
        amp = self.rng.uniform(0, wobble, len(k)) / k**0.5
        ph = self.rng.uniform(0, 2 * np.pi, len(k))
        out = np.zeros((self.n, self.n), bool)
        rr = r * (1 + amp.sum())
        i0, i1 = (np.clip([(cy - rr) / self.res, (cy + rr) / self.res + 1], 0, self.n)).astype(int)
        j0, j1 = (np.clip([(cx - rr) / self.res, (cx + rr) / self.res + 1], 0, self.n)).astype(int)
        if i1 <= i0 or j1 <= j0:
            return out
        dx, dy = self.x[i0:i1, j0:j1] - cx, self.y[i0:i1, j0:j1] - cy
        ang = np.arctan2(dy, dx)
        rad = r * (1 + (amp[:, None, None] * np.sin(k[:, None, None] * ang + ph[:, None, None])).sum(0))
        out[i0:i1, j0:j1] = np.hypot(dx, dy) < rad
        return out

    def polyline(self, pts: np.ndarray) -> np.ndarray:
        """Distance (m) of every pixel to the polyline through ``pts`` (K x 2, metres, x/y)."""
        seg = np.diff(pts, axis=0)
        nstep = np.maximum(1, np.ceil(np.hypot(seg[:, 0], seg[:, 1]) / (self.res * 0.5))).astype(int)
        dense = np.concatenate(
            [p + np.linspace(0, 1, k, endpoint=False)[:, None] * s for p, s, k in zip(pts[:-1], seg, nstep)]
            + [pts[-1:]]
        )
        ij = np.floor(dense[:, ::-1] / self.res).astype(int)
        ok = (ij >= 0).all(1) & (ij < self.n).all(1)
        line = np.ones((self.n, self.n), bool)
        line[ij[ok, 0], ij[ok, 1]] = False
        if line.all():
            return np.full((self.n, self.n), np.inf, np.float32)
        return (ndimage.distance_transform_edt(line) * self.res).astype(np.float32)

    def crossing_line(self, curvature: float = 0.0, through: tuple[float, float] | None = None) -> np.ndarray:
        """Points (K x 2) of a gently curving line crossing the whole canvas."""
        s = self.size
        cx, cy = through if through is not None else self.rng.uniform(0.2 * s, 0.8 * s, 2)
        th = self.rng.uniform(0, np.pi)
        d, nrm = np.array([np.cos(th), np.sin(th)]), np.array([-np.sin(th), np.cos(th)])
        t = np.linspace(-0.8 * s, 0.8 * s, 80)
        off = np.zeros_like(t)
        for _ in range(3):
            lam = self.rng.uniform(0.6, 1.6) * s
            off += (
                curvature
                * self.rng.uniform(0.3, 1.0)
                * np.sin(2 * np.pi * t / lam + self.rng.uniform(0, 6.3))
            )
        return np.array([cx, cy]) + t[:, None] * d + off[:, None] * nrm

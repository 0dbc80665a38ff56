"""Synthetic multi-source hierarchical land-cover benchmark (an MM-5B stand-in) and its relatives.

A scene is laid out on a fine *render grid* (2 m for MM-5B-like scenes) as three co-registered
maps: a land-use label (semantic class per pixel, e.g. ``urban_residential``), a material mix
(two endmembers + fraction per pixel, :mod:`hierars.data.spectra`) and gain / shade fields
(per-object variation, texture, building and overpass shadows). Rendering turns the material
mix into 10-band Sentinel-2 surface reflectance at the render grid; each source is then derived
from that one surface:

- ``rgb``: 2 m, 3 bands (R, G, B) uint8, tone-mapped Google-Earth-like;
- ``gf2``: 4 m, 4 bands (B, G, R, NIR) uint16 reflectance x 10^4 (2 x 2 block mean + PSF);
- ``s2``: 10 m, 10 bands (B2 ... B12) uint16 reflectance x 10^4 (5 x 5 block mean, the 20 m
  bands blurred further);

each with its own haze (additive, lambda^-1.5, spatially smooth), gain and noise (the sources are
"acquired on different dates"). The 4 m label is the canonical one (as in MM-5B); the 2 m label
is its nearest-neighbour upsampling and the 10 m label its area mode (:func:`block_mode`).

Land use is told apart mostly by spatial context: siblings share materials (paddy vs cropland,
river / lake / pond, urban vs rural residential, road / overpass / railway station / airport)
and differ in shape, size, layout, building density and height (shadows).

Everything is vectorised numpy; randomness comes from one ``numpy.random.Generator`` per scene
(seeded from ``(seed, domain, index)``), so the same seed gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from hierars.data.spectra import ENDMEMBERS, MATERIAL_INDEX, band_matrix

__all__ = [
    "SEMANTIC_CLASSES",
    "SOURCES",
    "SceneRecipe",
    "SceneLayout",
    "layout_scene",
    "render_reflectance",
    "render_source",
    "block_mode",
    "semantic_to_leaf",
    "material_to_whdld",
    "WHDLD_CLASSES",
    "RETRIEVAL_SCENES",
    "layout_retrieval_patch",
]

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

#: source name -> (resolution in m, band names, dtype)
SOURCES: dict[str, tuple[float, tuple[str, ...], str]] = {
    "rgb": (2.0, ("red", "green", "blue"), "uint8"),
    "gf2": (4.0, ("blue", "green", "red", "nir"), "uint16"),
    "s2": (10.0, ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"), "uint16"),
}

# materials -> WHDLD class names (the land-cover view of the same surface)
_WHDLD_OF_MATERIAL = {
    "crop_green": "vegetation", "maize": "vegetation", "soybean": "vegetation", "rice": "vegetation",
    "forest": "vegetation", "grass": "vegetation", "grass_dry": "vegetation",
    "soil_dry": "bare_soil", "soil_wet": "bare_soil", "sand": "bare_soil",
    "water_clear": "water", "water_turbid": "water", "water_algae": "water",
    "asphalt": "pavement", "concrete": "pavement", "gravel": "pavement", "track_red": "pavement",
    "roof_grey": "building", "roof_red_tile": "building", "roof_metal_blue": "building",
    "roof_metal_white": "building",
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# small vectorised helpers
# --------------------------------------------------------------------------------------------
def _hash01(ids: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic per-id uniform numbers in [0, 1) (splitmix64 of ``ids`` and ``salt``)."""
    z = np.asarray(ids).astype(np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) / float(1 << 53)).astype(np.float32)


def _upsample(g: np.ndarray, h: int, w: int) -> np.ndarray:
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


def _uniforms(ids: np.ndarray, salt: int, k: int) -> list[np.ndarray]:
    """``k <= 5`` independent per-id uniforms in [0, 1) (12-bit resolution) from one hash."""
    z = np.asarray(ids).astype(np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return [((z >> np.uint64(12 * i)) & np.uint64(0xFFF)).astype(np.float32) / 4096.0 for i in range(k)]


def _shift(a: np.ndarray, dy: int, dx: int, fill=0) -> np.ndarray:
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


def _block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks of the last two axes of ``a`` (C x H x W)."""
    c, h, w = a.shape
    return a.reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4), dtype=np.float32)


@dataclass
class _Canvas:
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
        up = _upsample(g, self.n, self.n)
        return (up - up.mean()) / (up.std() + 1e-6)

    def rotated(self, cx: float, cy: float, theta: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(theta), np.sin(theta)
        dx, dy = self.x - cx, self.y - cy
        return (dx * c + dy * s).astype(np.float32), (-dx * s + dy * c).astype(np.float32)

    def objects(self, ids: np.ndarray, salt: int, k: int | None = None):
        """Per-object uniforms: one array, or a list of ``k`` arrays from a single hash."""
        if k is None:
            return _hash01(ids, self.salt * 7919 + salt)
        return _uniforms(ids, self.salt * 7919 + salt, k)

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


# --------------------------------------------------------------------------------------------
# fillers: paint one kind of land use over a region
# --------------------------------------------------------------------------------------------
def _fill_forest(cv: _Canvas, mask: np.ndarray) -> None:
    crown = cv.tex(1.5)
    cv.paint(mask, "forest", "forest", "soil_wet", np.clip(0.86 + 0.2 * crown, 0.4, 1.0), 1.0 + 0.16 * crown)


def _fill_meadow(cv: _Canvas, mask: np.ndarray, artificial: bool) -> None:
    if artificial:  # mowed lawn: green, uniform, mowing stripes
        u, _ = cv.rotated(0, 0, cv.rng.uniform(0, np.pi))
        stripes = 1.0 + 0.035 * np.sign(np.sin(2 * np.pi * u / cv.rng.uniform(6, 12)))
        cv.paint(mask, "artificial_meadow", "grass", "grass_dry", 0.88 + 0.05 * cv.tex(3.0), stripes)
    else:
        f = np.clip(0.55 + 0.3 * cv.smooth(60) + 0.1 * cv.tex(2.0), 0.05, 1.0)
        cv.paint(mask, "natural_meadow", "grass", "grass_dry", f, 1.0 + 0.07 * cv.tex(1.0))


def _fill_bare(cv: _Canvas, mask: np.ndarray) -> None:
    f = np.clip(0.6 + 0.35 * cv.smooth(80), 0, 1)
    b = "sand" if cv.rng.random() < 0.4 else "soil_wet"
    cv.paint(mask, "bare_land", "soil_dry", b, f, 1.0 + 0.06 * cv.tex(1.0))


def _fill_water(cv: _Canvas, mask: np.ndarray, kind: str, ids: np.ndarray | None = None) -> None:
    """All water mixes the same three endmembers (turbid or algae-rich over clear water) with
    per-water-body fractions from overlapping ranges: rivers lean turbid, lakes clear, ponds
    algae-rich, but no spectral rule separates them (shape and size do)."""
    p_turbid, shift = {"river": (0.75, 0.1), "lake": (0.5, -0.1), "pond": (0.35, 0.0)}[kind]
    if ids is None:
        h1, h2 = (
            np.full(mask.shape, cv.rng.random(), np.float32),
            np.full(mask.shape, cv.rng.random(), np.float32),
        )
    else:
        h1, h2 = cv.objects(ids, 11, k=2)
    f = np.clip(0.2 + 0.6 * h2 + shift + 0.08 * cv.smooth(120), 0.05, 0.95)
    turbid = mask & (h1 < p_turbid)
    cv.paint(turbid, kind, "water_turbid", "water_clear", f, 1.0 + 0.04 * cv.tex(2.0))
    cv.paint(mask & ~turbid, kind, "water_algae", "water_clear", f, 1.0 + 0.04 * cv.tex(2.0))


def _fill_farmland(cv: _Canvas, region: np.ndarray, crops: dict[str, float] | None, paddy_bias: float,
                   block_m: float, parcel_m: tuple[float, float], wet: np.ndarray | None = None,
                   farm_roads: bool = True) -> None:  # fmt: skip
    """Voronoi farm blocks, each a rotated grid of parcels; farm roads along block edges.

    ``crops`` is None for MM-5B-like scenes (parcels are ``paddy_field`` or ``cropland``) or a
    mapping crop-name -> probability for the crop domain (``rice`` parcels look like paddy).
    ``wet`` (H x W in [0, 1]) raises the paddy probability, e.g. near rivers.
    """
    rng, s = cv.rng, cv.size
    k = max(2, int(round((s / block_m) ** 2)))
    seeds = rng.uniform(-0.1 * s, 1.1 * s, (k, 2)).astype(np.float32)
    d1 = np.full((cv.n, cv.n), np.inf, np.float32)
    d2 = d1.copy()
    blk = np.zeros((cv.n, cv.n), np.int64)
    for i, (sx, sy) in enumerate(seeds):
        d = np.hypot(cv.x - sx, cv.y - sy)
        closer = d < d1
        d2 = np.where(closer, d1, np.minimum(d2, d))
        d1 = np.where(closer, d, d1)
        blk[closer] = i
    theta = rng.uniform(0, np.pi, k).astype(np.float32)
    pw = rng.uniform(*parcel_m, k).astype(np.float32)
    pl = pw * rng.uniform(1.5, 4.0, k).astype(np.float32)
    paddy_p = np.clip(rng.beta(0.6, 1.2, k) + paddy_bias, 0, 1).astype(np.float32)
    small = paddy_p > 0.5  # paddy-dominated blocks use smaller parcels with visible bunds
    pw[small] *= 0.55
    pl[small] *= 0.55
    c, sn = np.cos(theta)[blk], np.sin(theta)[blk]
    u = cv.x * c + cv.y * sn
    v = -cv.x * sn + cv.y * c
    iu, iv = np.floor(u / pw[blk]).astype(np.int64), np.floor(v / pl[blk]).astype(np.int64)
    pid = (blk << 40) + ((iu + (1 << 19)) << 20) + (iv + (1 << 19))
    h1, h2, h3, h4, h5 = cv.objects(pid, 1, k=5)
    p_wet = paddy_p[blk] if wet is None else np.clip(paddy_p[blk] + 0.5 * wet - 0.1, 0, 1)
    paddy = region & (h1 < p_wet)
    crop = region & ~paddy
    rows = 0.06 * np.sin(2 * np.pi * u / rng.uniform(4, 9))
    # cropland: crop canopy over soil with parcel-specific cover (bare fallow ... full canopy)
    f_crop = np.clip(0.12 + 0.88 * h3 + rows + 0.05 * cv.tex(1.0), 0, 1)
    gain = (0.9 + 0.2 * h4 + 0.03 * cv.tex(1.0)).astype(np.float32)
    if crops is None:
        # paddy and dry cropland share endmembers (irrigated crops look like rice; paddies are not
        # always flooded); paddies lean wetter and greener, are smaller, have bunds, lie near water
        f_pad = np.clip(0.35 + 0.6 * h3 + 0.05 * cv.tex(1.0), 0, 1)
        canopy = h4 < 0.5
        for m, a in ((canopy, "rice"), (~canopy, "crop_green")):
            cv.paint(paddy & m & (h2 < 0.45), "paddy_field", a, "water_turbid", f_pad, gain)
            cv.paint(paddy & m & (h2 >= 0.45), "paddy_field", a, "soil_wet", f_pad, gain)
        irrigated = h4 < 0.25
        for m, a in ((irrigated, "rice"), (~irrigated, "crop_green")):
            cv.paint(crop & m & (h2 < 0.5), "cropland", a, "soil_dry", f_crop, gain)
            cv.paint(crop & m & (h2 >= 0.5), "cropland", a, "soil_wet", f_crop, gain)
        green = crop & (h5 < 0.03)  # plastic greenhouses (still cropland)
        cv.paint(green & (np.mod(u, 9.0) < 6.5), None, "roof_metal_white", "soil_dry", 0.85)
    else:
        names, probs = list(crops), np.cumsum(list(crops.values()))
        probs = probs / probs[-1]
        choice = np.searchsorted(probs, h2, side="right")
        cv.paint(
            paddy & ("rice" in crops), "rice", "rice", "water_turbid", np.clip(0.5 + 0.45 * h3, 0, 1), gain
        )
        for i, name in enumerate(names):
            m = crop & (choice == i) if name != "rice" else crop & (choice == i) & ~paddy
            mat = {"maize": "maize", "soybean": "soybean", "rice": "rice"}.get(name, "crop_green")
            back = "water_turbid" if name == "rice" else "soil_dry"
            f = np.clip(0.55 + 0.45 * h3 + rows, 0, 1) if name in ("maize", "soybean", "rice") else f_crop
            cv.paint(m, name, mat, back, f, gain)
    # bunds / field margins
    mu, mv = np.mod(u, pw[blk]), np.mod(v, pl[blk])
    bund = region & ((mu < 2.0) | (mv < 2.0))
    cv.paint(bund & paddy, None, "grass", "soil_wet", 0.7)
    cv.paint(bund & crop, None, "grass_dry", "soil_dry", 0.6)
    if farm_roads:
        road = region & ((d2 - d1) < rng.uniform(5, 8))
        cv.paint(road, "road", "concrete", "soil_dry", 0.75, 0.95 + 0.05 * cv.tex(1.0))
        cv.masks["road_local"] = cv.masks.get("road_local", np.zeros_like(road)) | road


def _lattice(cv: _Canvas, u, v, pitch: tuple[float, float], size: tuple[float, float], keep: float,
             jitter: float, salt: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Rectangles on a (jittered, thinned) lattice in the (u, v) frame: (mask, cell id)."""
    cu, cw = np.floor(u / pitch[0]).astype(np.int64), np.floor(v / pitch[1]).astype(np.int64)
    cid = ((cu + (1 << 20)) << 22) + (cw + (1 << 20)) + (salt << 50)
    lu, lv = u - cu * pitch[0], v - cw * pitch[1]
    h1, h2, h3, h4, h5 = cv.objects(cid, salt, k=5)
    su = size[0] * (0.8 + 0.4 * h1)
    sv = size[1] * (0.8 + 0.4 * h2)
    ou = (pitch[0] - su) * (0.5 + jitter * (h3 - 0.5))
    ov = (pitch[1] - sv) * (0.5 + jitter * (h4 - 0.5))
    m = (lu >= ou) & (lu < ou + su) & (lv >= ov) & (lv < ov + sv) & (h5 < keep)
    return m, cid


def _cast_shadows(
    cv: _Canvas, height_px: np.ndarray, sun: tuple[int, int] = (1, 1), dark: float = 0.4
) -> None:
    """Darken pixels in the shadow of ``height_px`` (shadow length in pixels; 0 = no object)."""
    top = int(height_px.max())
    if top <= 0:
        return
    obj = height_px > 0
    shadow = np.zeros_like(obj)
    for k in range(1, top + 1):
        shadow |= _shift(height_px >= k, k * sun[0], k * sun[1], 0) & ~obj
    cv.shade[shadow] = np.minimum(cv.shade[shadow], dark)


def _roofs(cv: _Canvas, mask, cid, palette: dict[str, float], salt: int) -> None:
    names, p = list(palette), np.cumsum(list(palette.values()))
    pick = np.searchsorted(p / p[-1], cv.objects(cid, salt), side="right")
    g = 0.88 + 0.24 * cv.objects(cid, salt + 1)
    for i, name in enumerate(names):
        m = mask & (pick == i)
        cv.paint(m, None, name, "concrete", np.ones((cv.n, cv.n), np.float32) * 0.92, g + 0.03 * cv.tex(1.0))


def _fill_residential(cv: _Canvas, region: np.ndarray, urban: bool, density: float | None = None,
                      theta: float | None = None) -> np.ndarray:  # fmt: skip
    """Urban: regular rows of tall slabs or towers (long shadows), paved/green ground.
    Rural: small, irregular low houses (short shadows), courtyards of soil, grass and trees.
    ``density`` in [0, 1] scales building coverage. Returns the building mask."""
    rng = cv.rng
    th = rng.uniform(0, np.pi) if theta is None else theta
    u, v = cv.rotated(*rng.uniform(0, 100, 2), th)
    if urban:
        d = rng.uniform(0.5, 0.9) if density is None else density
        ground = np.clip(0.55 + 0.3 * cv.smooth(40), 0, 1)
        cv.paint(region, "urban_residential", "concrete", "grass", ground, 1 + 0.05 * cv.tex(1.0))
        tree = region & (cv.tex(1.5) > 1.0)
        cv.paint(tree, None, "forest", "grass", 0.8)
        if rng.random() < 0.6:  # slab rows
            pitch = (rng.uniform(50, 75), rng.uniform(28, 40) / (0.55 + 0.5 * d))
            size = (rng.uniform(35, 55), rng.uniform(11, 15))
        else:  # point towers
            p = rng.uniform(34, 48) / (0.6 + 0.5 * d)
            pitch, size = (p, p), (rng.uniform(18, 24),) * 2
        bld, cid = _lattice(cv, u, v, pitch, size, keep=0.75 + 0.25 * d, jitter=0.15, salt=101)
        hpx = (rng.uniform(4, 10) / cv.res * 2) * (0.6 + 0.8 * cv.objects(cid, 111))
        palette = {"roof_grey": 0.45, "roof_red_tile": 0.2, "roof_metal_blue": 0.1, "concrete": 0.15,
                   "roof_metal_white": 0.1}  # fmt: skip
        sem = "urban_residential"
    else:
        d = rng.uniform(0.25, 0.75) if density is None else density
        ground = np.clip(0.42 + 0.3 * cv.smooth(25) + 0.1 * cv.tex(2.0), 0, 1)
        cv.paint(region, "rural_residential", "concrete", "grass", ground, 1 + 0.06 * cv.tex(1.0))
        yard = region & (cv.tex(3.0) > 1.2)
        cv.paint(yard, None, "soil_dry", "grass", 0.6)
        tree = region & (cv.tex(1.5) > 0.9)
        cv.paint(tree, None, "forest", "grass", 0.85)
        lane = region & (np.mod(v + 7 * np.sin(u / 37.0), rng.uniform(60, 90)) < 4)
        cv.paint(lane, None, "concrete", "soil_dry", 0.7)
        # small houses: smaller pitch, jittered and thinned -> irregular layout
        pitch = (rng.uniform(15, 20), rng.uniform(17, 23))
        bld, cid = _lattice(cv, u + 6 * cv.smooth(80), v, pitch, (rng.uniform(8, 12), rng.uniform(9, 13)),
                            keep=0.25 + 0.65 * d, jitter=0.9, salt=201)  # fmt: skip
        hpx = np.full((cv.n, cv.n), max(1, round(3 / cv.res)), np.float32) * (0.5 + cv.objects(cid, 211))
        palette = {"roof_grey": 0.4, "roof_red_tile": 0.3, "roof_metal_blue": 0.15, "concrete": 0.15}
        sem = "rural_residential"
    bld &= region
    _roofs(cv, bld, cid, palette, 300)
    _cast_shadows(cv, np.where(bld, np.round(hpx), 0).astype(np.int32))
    cv.sem[region] = SEM[sem]
    cv.masks["building"] = cv.masks.get("building", np.zeros_like(bld)) | bld
    return bld


def _fill_industrial(cv: _Canvas, region: np.ndarray) -> None:
    rng = cv.rng
    cv.paint(region, "industrial_area", "concrete", "soil_dry", np.clip(0.75 + 0.2 * cv.smooth(60), 0, 1),
             1 + 0.05 * cv.tex(1.0))  # fmt: skip
    u, v = cv.rotated(*rng.uniform(0, 100, 2), rng.uniform(0, np.pi))
    bld, cid = _lattice(cv, u, v, (rng.uniform(80, 130), rng.uniform(60, 100)),
                        (rng.uniform(50, 90), rng.uniform(30, 60)), keep=0.8, jitter=0.4, salt=401)  # fmt: skip
    bld &= region
    _roofs(cv, bld, cid, {"roof_metal_blue": 0.4, "roof_metal_white": 0.3, "roof_grey": 0.3}, 410)
    _cast_shadows(cv, np.where(bld, max(1, round(5 / cv.res)), 0).astype(np.int32))
    yard = region & ~bld & (cv.smooth(50) > 1.0)
    cv.paint(yard, None, "soil_dry", "gravel", 0.6)


def _fill_park(cv: _Canvas, region: np.ndarray) -> None:
    cv.paint(region, "park_square", "grass", "grass_dry", 0.85, 1 + 0.05 * cv.tex(2.0))
    trees = region & (cv.smooth(35) + 0.3 * cv.tex(1.5) > 0.3)
    cv.paint(trees, None, "forest", "grass", np.clip(0.8 + 0.2 * cv.tex(1.5), 0.3, 1))
    u, v = cv.rotated(cv.size / 2, cv.size / 2, cv.rng.uniform(0, np.pi))
    paths = region & ((np.mod(u, cv.rng.uniform(50, 90)) < 4) | (np.mod(v + 20 * np.sin(u / 40), 70) < 3))
    plaza = region & (cv.smooth(60) > 1.0)
    cv.paint(paths | plaza, None, "concrete", "roof_grey", 0.8, 1 + 0.04 * cv.tex(1.0))


def _stadium(cv: _Canvas, cx: float, cy: float, scale: float = 1.0) -> np.ndarray:
    """Oval running track around a pitch, with stands; returns its mask (labelled ``stadium``)."""
    u, v = cv.rotated(cx, cy, cv.rng.uniform(0, np.pi))
    a, b = 95 * scale, 60 * scale
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    out = r < 1.35
    cv.paint(out, "stadium", "roof_grey", "concrete", 0.8, 1 + 0.04 * cv.tex(1.0))
    cv.paint(r < 1.0, None, "track_red", "concrete", 0.95)
    cv.paint(r < 0.78, None, "grass", "grass_dry", 0.95)
    _cast_shadows(cv, np.where(out & (r > 1.05), max(1, round(6 / cv.res)), 0).astype(np.int32))
    return out


def _fill_airport(cv: _Canvas, region: np.ndarray, u: np.ndarray, v: np.ndarray, length: float,
                  width: float) -> None:  # fmt: skip
    """Airport in the rotated frame (u along the runway, v across, both centred on the airport)."""
    cv.paint(region, "airport", "grass_dry", "concrete", np.clip(0.5 + 0.25 * cv.smooth(80), 0, 1),
             1 + 0.04 * cv.tex(2.0))  # fmt: skip
    au = np.abs(u)
    runway = region & (au < 0.45 * length) & (np.abs(v + 0.15 * width) < 24)
    taxi = region & (au < 0.42 * length) & (np.abs(v - 0.02 * width) < 10)
    links = (
        region
        & (np.abs(np.mod(u, 0.2 * length) - 0.1 * length) < 8)
        & (v > -0.15 * width)
        & (v < 0.02 * width)
    )
    apron = region & (au < 0.2 * length) & (v > 0.1 * width) & (v < 0.32 * width)
    terminal = region & (au < 0.12 * length) & (v >= 0.32 * width) & (v < 0.42 * width)
    cv.paint(runway, None, "concrete", "asphalt", 0.75 + 0.1 * cv.tex(3.0))
    marks = runway & (np.abs(v + 0.15 * width) < 1.0) & (np.mod(u, 30) < 15)
    cv.paint(marks, None, "roof_metal_white", "concrete", 0.8)
    cv.paint(taxi | links, None, "asphalt", "concrete", 0.85)
    cv.paint(apron, None, "concrete", "asphalt", 0.9)
    cv.paint(terminal, None, "roof_metal_white", "roof_grey", 0.8)
    _cast_shadows(cv, np.where(terminal, max(1, round(8 / cv.res)), 0).astype(np.int32))


def _fill_station(cv: _Canvas, region: np.ndarray, u: np.ndarray, v: np.ndarray, width: float) -> None:
    """Railway station: platforms under white canopies alternating with tracks; a station building."""
    cv.paint(region, "railway_station", "gravel", "soil_dry", 0.9, 1 + 0.04 * cv.tex(1.0))
    pitch = 14.0
    plat = region & (np.mod(v, pitch) < 6) & (np.abs(v) < 0.35 * width)
    canopy = plat & (cv.objects(np.floor(v / pitch).astype(np.int64), 21) < 0.7)
    cv.paint(plat, None, "concrete", "roof_grey", 0.9)
    cv.paint(canopy, None, "roof_metal_white", "roof_grey", 0.85)
    bld = region & (v > 0.38 * width) & (v < 0.48 * width) & (np.abs(u) < 60)
    plaza = region & (v >= 0.35 * width) & ~bld
    cv.paint(plaza, None, "concrete", "asphalt", 0.85)
    cv.paint(bld, None, "roof_grey", "roof_metal_white", 0.6)
    _cast_shadows(cv, np.where(bld, max(1, round(8 / cv.res)), 0).astype(np.int32))


# --------------------------------------------------------------------------------------------
# scene recipes and layout
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneRecipe:
    """What a scene contains (probabilities / ranges). ``crops`` switches to the crop domain."""

    forest: tuple[float, float] = (0.04, 0.2)
    meadow: tuple[float, float] = (0.03, 0.1)
    bare: tuple[float, float] = (0.01, 0.05)
    river: float = 0.6
    lakes: tuple[int, int] = (0, 2)
    pond_cluster: float = 0.5
    ponds: tuple[int, int] = (1, 5)
    urban: float = 0.55
    villages: tuple[int, int] = (1, 5)
    industrial_park: float = 0.35
    highways: tuple[int, int] = (0, 2)
    rail: float = 0.35
    airport: float = 0.12
    unlabeled: tuple[float, float] = (0.005, 0.03)
    block_m: float = 450.0
    parcel_m: tuple[float, float] = (30.0, 90.0)
    paddy_bias: float = 0.0
    crops: dict[str, float] | None = None


@dataclass
class SceneLayout:
    """A laid-out scene on the render grid (``n x n`` pixels of ``res`` m)."""

    res: float
    sem: np.ndarray  # uint8 semantic class index (SEMANTIC_CLASSES) or 255
    mat_a: np.ndarray
    mat_b: np.ndarray
    frac: np.ndarray
    gain: np.ndarray
    shade: np.ndarray
    features: dict[str, int]


def layout_scene(rng: np.random.Generator, size_px: int, res: float, recipe: SceneRecipe,
                 force: tuple[str, ...] = ()) -> SceneLayout:  # fmt: skip
    """Lay out one scene. ``force`` names features that must appear (``urban``, ``river``,
    ``rail``, ``airport``, ``stadium``, ``highway``, ``pond_cluster``, ``industrial_park``)."""
    cv = _Canvas(size_px, res, rng)
    s, n = cv.size, size_px
    every = np.ones((n, n), bool)
    feats: dict[str, int] = {}

    def want(name: str, p: float) -> bool:
        return name in force or rng.random() < p

    # an airport takes much of a scene: no city or railway next to it unless forced
    airport = want("airport", recipe.airport)
    if airport:
        recipe = replace(recipe, urban=0.0, rail=0.0, highways=(0, 1), industrial_park=0.0)

    # water geometry first: paddy prefers wet ground near rivers and lakes
    river = np.zeros((n, n), bool)
    if want("river", recipe.river):
        d = cv.polyline(cv.crossing_line(curvature=rng.uniform(60, 220)))
        river = d < rng.uniform(10, 30) * (1 + 0.25 * cv.smooth(300))
        wet = np.clip(1 - d / 500.0, 0, 1)
        feats["river"] = 1
    else:
        wet = np.zeros((n, n), np.float32)
    _fill_farmland(cv, every, recipe.crops, recipe.paddy_bias, recipe.block_m, recipe.parcel_m, wet)
    free = np.ones((n, n), bool)
    forest = cv.region(rng.uniform(*recipe.forest), rng.uniform(250, 500))
    _fill_forest(cv, forest)
    free &= ~forest
    meadow = cv.region(rng.uniform(*recipe.meadow), rng.uniform(120, 300), within=free)
    _fill_meadow(cv, meadow, artificial=False)
    free &= ~meadow
    bare = cv.region(rng.uniform(*recipe.bare), rng.uniform(100, 250), within=free)
    _fill_bare(cv, bare)
    # lakes, ponds
    water = river.copy()
    for _ in range(rng.integers(recipe.lakes[0], recipe.lakes[1] + 1)):
        lake = cv.blob(*rng.uniform(0.1 * s, 0.9 * s, 2), rng.uniform(90, 300), wobble=0.5)
        shore = ndimage.binary_dilation(lake, iterations=2) & ~lake
        cv.paint(shore, None, "soil_wet", "grass", 0.6)
        _fill_water(cv, lake, "lake")
        water |= lake
        feats["lake"] = feats.get("lake", 0) + 1
    pond_ids = np.zeros((n, n), np.int64)
    if want("pond_cluster", recipe.pond_cluster):
        reg = cv.blob(*rng.uniform(0.15 * s, 0.85 * s, 2), rng.uniform(120, 280), wobble=0.3)
        u, v = cv.rotated(0, 0, rng.uniform(0, np.pi))
        pu, pv = rng.uniform(35, 70), rng.uniform(45, 90)
        dyke = (np.mod(u, pu) < 5) | (np.mod(v, pv) < 5)
        pond_ids = (np.floor(u / pu).astype(np.int64) << 20) + np.floor(v / pv).astype(np.int64)
        cv.paint(reg, "pond", "grass", "soil_dry", 0.6)
        _fill_water(cv, reg & ~dyke, "pond", pond_ids)
        cv.sem[reg] = SEM["pond"]
        water |= reg
        feats["pond_cluster"] = 1
    for _ in range(rng.integers(recipe.ponds[0], recipe.ponds[1] + 1)):
        pond = cv.blob(*rng.uniform(0.05 * s, 0.95 * s, 2), rng.uniform(10, 35), wobble=0.3)
        _fill_water(cv, pond, "pond")
        water |= pond
    if river.any():
        _fill_water(cv, river, "river")
    # settlements
    built = np.zeros((n, n), bool)
    urban_reg = np.zeros((n, n), bool)
    if want("urban", recipe.urban) or "stadium" in force:
        c = rng.uniform(0.3 * s, 0.7 * s, 2)
        urban_reg = cv.blob(*c, rng.uniform(0.22, 0.4) * s, wobble=0.3)
        th = rng.uniform(0, np.pi)
        u, v = cv.rotated(*c, th)
        bu, bv = rng.uniform(130, 220), rng.uniform(110, 180)
        sw = rng.uniform(10, 18)
        street = urban_reg & ((np.mod(u, bu) < sw) | (np.mod(v, bv) < sw))
        bid = (np.floor(u / bu).astype(np.int64) << 20) + np.floor(v / bv).astype(np.int64) + (1 << 40)
        kind = cv.objects(bid, 31)
        blocks = urban_reg & ~street
        types = [("urban_residential", 0.6), ("industrial_area", 0.13), ("park_square", 0.1),
                 ("artificial_meadow", 0.05), ("bare_land", 0.05), ("rural_residential", 0.07)]  # fmt: skip
        edges = np.cumsum([p for _, p in types])
        pick = np.searchsorted(edges / edges[-1], kind, side="right")
        for i, (name, _) in enumerate(types):
            m = blocks & (pick == i)
            if not m.any():
                continue
            if name == "urban_residential":
                _fill_residential(cv, m, urban=True, theta=th)
            elif name == "rural_residential":  # urban villages: dense, irregular, low
                _fill_residential(cv, m, urban=False, density=0.9, theta=th)
            elif name == "industrial_area":
                _fill_industrial(cv, m)
            elif name == "park_square":
                _fill_park(cv, m)
            elif name == "artificial_meadow":
                _fill_meadow(cv, m, artificial=True)
            else:
                _fill_bare(cv, m)
        if want("stadium", 0.5):
            sc = c + rng.uniform(-0.15, 0.15, 2) * s
            blk = urban_reg & ~street & (bid == bid[int(sc[1] / res) % n, int(sc[0] / res) % n])
            _fill_park(cv, blk)
            _stadium(cv, *sc, scale=rng.uniform(0.8, 1.1))
            feats["stadium"] = 1
        cv.paint(street, "road", "asphalt", "concrete", 0.9, 1 + 0.05 * cv.tex(1.0))
        cv.masks["road_local"] = cv.masks.get("road_local", np.zeros((n, n), bool)) | street
        built |= urban_reg
        feats["urban"] = 1
    for _ in range(rng.integers(recipe.villages[0], recipe.villages[1] + 1)):
        vil = cv.blob(*rng.uniform(0.05 * s, 0.95 * s, 2), rng.uniform(50, 150), wobble=0.5) & ~water & ~built
        if vil.sum() > 100:
            _fill_residential(cv, vil, urban=False)
            built |= vil
            feats["village"] = feats.get("village", 0) + 1
    if want("industrial_park", recipe.industrial_park):
        c = rng.uniform(0.15 * s, 0.85 * s, 2)
        u, v = cv.rotated(*c, rng.uniform(0, np.pi))
        reg = (np.abs(u) < rng.uniform(100, 250)) & (np.abs(v) < rng.uniform(80, 200)) & ~water
        _fill_industrial(cv, reg)
        built |= reg
        feats["industrial_park"] = 1
    # transportation
    other = cv.masks.get("road_local", np.zeros((n, n), bool)) | river
    highways = []
    n_hw = int(rng.integers(recipe.highways[0], recipe.highways[1] + 1))
    n_hw = max(n_hw, 1) if "highway" in force else n_hw
    for _ in range(n_hw):
        d = cv.polyline(cv.crossing_line(curvature=rng.uniform(0, 60)))
        hw = d < rng.uniform(11, 16)
        highways.append(hw)
    rail = np.zeros((n, n), bool)
    if want("rail", recipe.rail):
        c = rng.uniform(0.3 * s, 0.7 * s, 2)
        pts = cv.crossing_line(curvature=0.0, through=tuple(c))
        d = cv.polyline(pts)
        rail = d < 5
        cv.paint(rail, "road", "gravel", "asphalt", 0.8)
        other |= rail
        th = np.arctan2(*(pts[-1] - pts[0])[::-1])
        u, v = cv.rotated(*c, th)
        width = rng.uniform(90, 140)
        st = (np.abs(u) < rng.uniform(180, 300)) & (v > -0.5 * width) & (v < 0.5 * width)
        _fill_station(cv, st, u, v, width)
        feats["rail"] = 1
    for hw in highways:
        cv.paint(hw, "road", "asphalt", "concrete", 0.85, 1 + 0.04 * cv.tex(1.0))
        median = hw & (ndimage.distance_transform_edt(hw) * res > 8.5)
        cv.paint(median, None, "grass", "concrete", 0.5)
    for i, hw in enumerate(highways):
        crossers = other | rail
        for j, hw2 in enumerate(highways):
            if j != i:
                crossers = crossers | hw2
        cross = hw & crossers
        if i > 0 and any((hw & h2).any() for h2 in highways[:i]):
            continue  # the first highway carries the interchange
        if cross.any():
            dist = ndimage.distance_transform_edt(~cross) * res
            over = ndimage.binary_dilation(hw, iterations=1) & (dist < rng.uniform(45, 80))
            ring = np.zeros_like(over)
            for sl in _components(cross):
                cy_, cx_ = [(a.start + a.stop) / 2 * res for a in sl]
                r = np.hypot(cv.x - cx_, cv.y - cy_)
                if any((hw & h2)[sl].any() for h2 in highways if h2 is not hw):
                    rr = rng.uniform(55, 85)
                    q = ((cv.x - cx_) * (cv.y - cy_)) > 0
                    ring |= (np.abs(r - rr) < 5) & q & (r < rr + 6)
            over |= ring
            cv.paint(over, "overpass", "concrete", "asphalt", 0.8, 1.05 + 0.04 * cv.tex(1.0))
            _cast_shadows(cv, np.where(over, max(1, round(6 / res)), 0).astype(np.int32), dark=0.5)
            feats["overpass"] = feats.get("overpass", 0) + 1
    if highways:
        feats["highway"] = len(highways)
    if airport:
        length, width = min(rng.uniform(1100, 1500), 0.8 * s), min(rng.uniform(330, 450), 0.3 * s)
        c = (
            rng.uniform(0.5 * length / 1.1, s - 0.5 * length / 1.1, 2)
            if s > length
            else np.array([s / 2, s / 2])
        )
        u, v = cv.rotated(*c, rng.uniform(-0.3, 0.3))
        reg = (np.abs(u) < length / 2) & (np.abs(v) < width / 2)
        _fill_airport(cv, reg, u, v, length, width)
        feats["airport"] = 1
    # relabelled change areas: construction appeared after the labels were drawn
    total = rng.uniform(*recipe.unlabeled)
    if total > 0:
        k = int(rng.integers(1, 4))
        for _ in range(k):
            r = np.sqrt(total * s * s / k / np.pi)
            m = cv.blob(*rng.uniform(0.05 * s, 0.95 * s, 2), r, wobble=0.4)
            cv.paint(m, "unlabeled", "soil_dry", "concrete", np.clip(0.5 + 0.4 * cv.smooth(40), 0, 1))
    return SceneLayout(res, cv.sem, cv.mat_a, cv.mat_b, cv.frac, cv.gain, cv.shade, feats)


def _components(mask: np.ndarray) -> list[tuple[slice, slice]]:
    """Bounding slices of the connected components of ``mask``."""
    lab, _ = ndimage.label(mask)
    return [sl for sl in ndimage.find_objects(lab) if sl is not None]


# --------------------------------------------------------------------------------------------
# retrieval archive: scene patches with image-level labels
# --------------------------------------------------------------------------------------------
#: scene class -> (sub-labels, painter). Residential sub-labels are withheld (merged) for training.
RETRIEVAL_SCENES: tuple[str, ...] = (
    "farmland", "paddy", "forest", "meadow", "river", "lake", "ponds", "industrial", "residential",
    "park", "stadium", "highway", "railway_station", "airport", "bare_land",
)  # fmt: skip
RESIDENTIAL_DENSITY = {"sparse": (0.15, 0.35), "medium": (0.45, 0.65), "dense": (0.8, 1.0)}


def layout_retrieval_patch(rng: np.random.Generator, size_px: int, res: float, scene: str,
                           sub_label: str = "") -> SceneLayout:  # fmt: skip
    """One scene patch dominated by ``scene`` (:data:`RETRIEVAL_SCENES`); ``residential`` needs
    ``sub_label`` in ``dense`` / ``medium`` / ``sparse`` (building density of a village fabric)."""
    if scene not in RETRIEVAL_SCENES:
        raise ValueError(f"unknown retrieval scene {scene!r}; expected one of {RETRIEVAL_SCENES}")
    cv = _Canvas(size_px, res, rng)
    s, n = cv.size, size_px
    every = np.ones((n, n), bool)
    _fill_farmland(cv, every, None, -0.3, 250.0, (25, 70), None, farm_roads=False)
    side = cv.region(rng.uniform(0.0, 0.25), s / 2)  # some context at the edge
    if rng.random() < 0.5:
        _fill_forest(cv, side)
    else:
        _fill_meadow(cv, side, artificial=False)
    core = cv.blob(s / 2, s / 2, s * rng.uniform(0.42, 0.6), wobble=0.3)
    if scene == "farmland":
        _fill_farmland(cv, every, None, -1.0, 200.0, (20, 60), None, farm_roads=rng.random() < 0.5)
    elif scene == "paddy":
        _fill_farmland(cv, every, None, 1.0, 200.0, (30, 70), None, farm_roads=False)
    elif scene == "forest":
        _fill_forest(cv, core | cv.region(0.5, s / 3))
    elif scene == "meadow":
        _fill_meadow(cv, core | cv.region(0.4, s / 3), artificial=False)
    elif scene == "river":
        d = cv.polyline(cv.crossing_line(curvature=rng.uniform(10, 40), through=(s / 2, s / 2)))
        _fill_water(cv, d < rng.uniform(12, 35), "river")
    elif scene == "lake":
        _fill_water(cv, cv.blob(s / 2, s / 2, s * rng.uniform(0.45, 0.7), wobble=0.4), "lake")
    elif scene == "ponds":
        u, v = cv.rotated(0, 0, rng.uniform(0, np.pi))
        pu, pv = rng.uniform(30, 60), rng.uniform(40, 80)
        cv.paint(core, "pond", "grass", "soil_dry", 0.6)
        ids = (np.floor(u / pu).astype(np.int64) << 20) + np.floor(v / pv).astype(np.int64)
        _fill_water(cv, core & (np.mod(u, pu) >= 5) & (np.mod(v, pv) >= 5), "pond", ids)
        cv.sem[core] = SEM["pond"]
    elif scene == "industrial":
        _fill_industrial(cv, core | cv.region(0.4, s / 3))
    elif scene == "residential":
        if sub_label not in RESIDENTIAL_DENSITY:
            raise ValueError(
                f"residential patches need sub_label in {list(RESIDENTIAL_DENSITY)}, got {sub_label!r}"
            )
        reg = cv.blob(s / 2, s / 2, s * 0.75, wobble=0.2)
        _fill_residential(cv, reg, urban=False, density=rng.uniform(*RESIDENTIAL_DENSITY[sub_label]))
    elif scene == "park":
        _fill_park(cv, core | cv.region(0.3, s / 3))
    elif scene == "stadium":
        _fill_park(cv, every)
        _stadium(cv, s / 2, s / 2, scale=min(1.0, s / 280))
    elif scene == "highway":
        d = cv.polyline(cv.crossing_line(curvature=10, through=(s / 2, s / 2)))
        cv.paint(d < rng.uniform(11, 16), "road", "asphalt", "concrete", 0.85, 1 + 0.04 * cv.tex(1.0))
    elif scene == "railway_station":
        th = rng.uniform(0, np.pi)
        u, v = cv.rotated(s / 2, s / 2, th)
        width = min(rng.uniform(90, 140), 0.8 * s)
        _fill_station(cv, (np.abs(v) < width / 2), u, v, width)
    elif scene == "airport":
        u, v = cv.rotated(s / 2, s / 2 + rng.uniform(-0.1, 0.1) * s, rng.uniform(0, np.pi))
        _fill_airport(cv, every, u, v, length=3 * s, width=min(1.6 * s, 450))
    elif scene == "bare_land":
        _fill_bare(cv, core | cv.region(0.4, s / 3))
    return SceneLayout(res, cv.sem, cv.mat_a, cv.mat_b, cv.frac, cv.gain, cv.shade, {scene: 1})


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def render_reflectance(layout: SceneLayout, rng: np.random.Generator, noise: float = 0.01) -> np.ndarray:
    """10-band S2 surface reflectance on the render grid: float32 (10, n, n).

    ``frac * E[a] + (1 - frac) * E[b]``, times gain and shade, times a smooth per-pixel spectral
    variation (brightness and a vegetation/soil tilt), plus ``noise`` relative texture.
    """
    n = layout.sem.shape[0]
    f = layout.frac
    scale = layout.gain * layout.shade
    # spatially smooth "phenology/moisture" tilt: moves spectra along the NIR and SWIR directions
    tilt = _upsample(rng.standard_normal((8, 8)), n, n)
    out = np.empty((ENDMEMBERS.shape[1], n, n), np.float32)
    speckle = rng.standard_normal((n, n)).astype(np.float32)
    for b in range(ENDMEMBERS.shape[1]):
        e = ENDMEMBERS[:, b]
        band = e[layout.mat_a] * f + e[layout.mat_b] * (1.0 - f)
        t = 0.04 * tilt if b >= 6 else 0.0
        out[b] = band * scale * (1.0 + t + noise * speckle)
    return np.clip(out, 0.0, 1.0)


def render_source(refl: np.ndarray, render_res: float, source: str, rng: np.random.Generator,
                  haze: float = 0.02, noise_scale: float = 1.0) -> np.ndarray:  # fmt: skip
    """One source's image from render-grid reflectance ``refl`` (10 x n x n).

    Spectral mapping (:func:`hierars.data.spectra.band_matrix`), block-mean resampling to the
    source grid, PSF blur, per-acquisition gain and haze, sensor noise and quantisation.
    Returns uint8 (3, n', n') for ``rgb``; uint16 reflectance x 10^4 for ``gf2`` and ``s2``.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(SOURCES)}")
    res, _, _ = SOURCES[source]
    factor = res / render_res
    if abs(factor - round(factor)) > 1e-6 or round(factor) < 1:
        raise ValueError(f"{source}: resolution {res} m is not a multiple of the render grid {render_res} m")
    factor = int(round(factor))
    mat = band_matrix(source)
    img = np.stack([sum(float(wt) * refl[i] for i, wt in enumerate(row) if wt > 0) for row in mat])
    if factor > 1:
        img = _block_mean(img, factor)
    c, h, w = img.shape
    sigma = {"rgb": 0.5, "gf2": 0.45, "s2": 0.4}[source]
    for b in range(c):
        extra = 0.9 if source == "s2" and b in (3, 4, 5, 7, 8, 9) else 0.0  # native 20 m bands
        img[b] = ndimage.gaussian_filter(img[b], np.hypot(sigma, extra), mode="nearest")
    lam = np.array([492, 560, 665, 704, 740, 783, 833, 865, 1614, 2202], np.float32)
    lam = mat @ lam
    hz = max(0.0, haze) * rng.uniform(0.3, 1.0)
    field = np.clip(1 + 0.5 * _upsample(rng.standard_normal((4, 4)), h, w), 0, None)
    gains = rng.uniform(0.94, 1.06) * rng.uniform(0.98, 1.02, c).astype(np.float32)
    sd = {"rgb": 0.008, "gf2": 0.004, "s2": 0.003}[source] * noise_scale
    img = img * gains[:, None, None] + hz * (lam[:, None, None] / 492.0) ** -1.5 * field
    img = img + sd * rng.standard_normal(img.shape).astype(np.float32)
    if source == "rgb":  # tone-mapped 8-bit, as in Google Earth imagery
        return np.round(255 * np.clip(img / 0.32, 0, 1) ** (1 / 1.8)).astype(np.uint8)
    return np.round(np.clip(img, 1e-4, 6.5) * 10000).astype(np.uint16)


# --------------------------------------------------------------------------------------------
# label mapping
# --------------------------------------------------------------------------------------------
def semantic_to_leaf(domain: str) -> Callable[[str], str]:
    """Map a semantic class name to a leaf name of the ``domain``'s tree (mm5b or crop10m)."""
    if domain == "mm5b":
        extra = {"rice": "paddy_field", "maize": "cropland", "soybean": "cropland", "other_crop": "cropland"}
        return lambda c: extra.get(c, c)
    if domain == "crop10m":
        return lambda c: c if c in ("rice", "maize", "soybean") else "other"
    raise ValueError(f"no semantic mapping for domain {domain!r}")


WHDLD_CLASSES: tuple[str, ...] = ("building", "road", "pavement", "vegetation", "bare_soil", "water")


def material_to_whdld(layout: SceneLayout) -> np.ndarray:
    """WHDLD land-cover class per pixel (index into :data:`WHDLD_CLASSES`, uint8) from the
    dominant material; paved pixels whose land use is road or overpass become ``road``."""
    lut = np.array([WHDLD_CLASSES.index(_WHDLD_OF_MATERIAL[m]) for m in M], dtype=np.uint8)
    out = lut[np.where(layout.frac >= 0.5, layout.mat_a, layout.mat_b)]
    roadlike = np.isin(layout.sem, [SEM["road"], SEM["overpass"]]) & (out == WHDLD_CLASSES.index("pavement"))
    out[roadlike] = WHDLD_CLASSES.index("road")
    return out


def with_overrides(recipe: SceneRecipe, **kw) -> SceneRecipe:
    """A copy of ``recipe`` with fields replaced."""
    return replace(recipe, **kw)

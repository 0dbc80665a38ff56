"""Land-cover fillers: paint forest, natural or artificial meadow, bare land, water bodies and
farmland (Voronoi farm blocks of rotated parcel grids, paddy or crop types) over a region of a
:class:`~hierars.data.synthetic.canvas.Canvas`."""

from __future__ import annotations

import numpy as np

from hierars.data.synthetic.canvas import Canvas

__all__ = ["fill_forest", "fill_meadow", "fill_bare", "fill_water", "fill_farmland"]


def fill_forest(cv: Canvas, mask: np.ndarray) -> None:
    crown = cv.tex(1.5)
    cv.paint(mask, "forest", "forest", "soil_wet", np.clip(0.86 + 0.2 * crown, 0.4, 1.0), 1.0 + 0.16 * crown)


def fill_meadow(cv: Canvas, mask: np.ndarray, artificial: bool) -> None:
    if artificial:  # mowed lawn: green, uniform, mowing stripes
        u, _ = cv.rotated(0, 0, cv.rng.uniform(0, np.pi))
        stripes = 1.0 + 0.035 * np.sign(np.sin(2 * np.pi * u / cv.rng.uniform(6, 12)))
        cv.paint(mask, "artificial_meadow", "grass", "grass_dry", 0.88 + 0.05 * cv.tex(3.0), stripes)
    else:
        f = np.clip(0.55 + 0.3 * cv.smooth(60) + 0.1 * cv.tex(2.0), 0.05, 1.0)
        cv.paint(mask, "natural_meadow", "grass", "grass_dry", f, 1.0 + 0.07 * cv.tex(1.0))


def fill_bare(cv: Canvas, mask: np.ndarray) -> None:
    f = np.clip(0.6 + 0.35 * cv.smooth(80), 0, 1)
    b = "sand" if cv.rng.random() < 0.4 else "soil_wet"
    cv.paint(mask, "bare_land", "soil_dry", b, f, 1.0 + 0.06 * cv.tex(1.0))


def fill_water(cv: Canvas, mask: np.ndarray, kind: str, ids: np.ndarray | None = None) -> None:
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


def fill_farmland(cv: Canvas, region: np.ndarray, crops: dict[str, float] | None, paddy_bias: float,
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

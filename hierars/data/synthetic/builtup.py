"""Built-up fillers: residential (urban slabs / towers, rural houses), industrial, park, stadium,
airport and railway station, with the building lattices, roofs and cast shadows they share."""

from __future__ import annotations

import numpy as np

from hierars.data.synthetic.canvas import SEM, Canvas
from hierars.data.synthetic.grid import shift

__all__ = ["cast_shadows", "fill_residential", "fill_industrial", "fill_park", "paint_stadium", "fill_airport",
           "fill_station"]  # fmt: skip


def _lattice(cv: Canvas, u, v, pitch: tuple[float, float], size: tuple[float, float], keep: float,
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


def cast_shadows(
    cv: Canvas, height_px: np.ndarray, sun: tuple[int, int] = (1, 1), dark: float = 0.4
) -> None:
    """Darken pixels in the shadow of ``height_px`` (shadow length in pixels; 0 = no object)."""
    top = int(height_px.max())
    if top <= 0:
        return
    obj = height_px > 0
    shadow = np.zeros_like(obj)
    for k in range(1, top + 1):
        shadow |= shift(height_px >= k, k * sun[0], k * sun[1], 0) & ~obj
    cv.shade[shadow] = np.minimum(cv.shade[shadow], dark)


def _roofs(cv: Canvas, mask, cid, palette: dict[str, float], salt: int) -> None:
    names, p = list(palette), np.cumsum(list(palette.values()))
    pick = np.searchsorted(p / p[-1], cv.objects(cid, salt), side="right")
    g = 0.88 + 0.24 * cv.objects(cid, salt + 1)
    for i, name in enumerate(names):
        m = mask & (pick == i)
        cv.paint(m, None, name, "concrete", np.ones((cv.n, cv.n), np.float32) * 0.92, g + 0.03 * cv.tex(1.0))


def fill_residential(cv: Canvas, region: np.ndarray, urban: bool, density: float | None = None,
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
    cast_shadows(cv, np.where(bld, np.round(hpx), 0).astype(np.int32))
    cv.sem[region] = SEM[sem]
    cv.masks["building"] = cv.masks.get("building", np.zeros_like(bld)) | bld
    return bld


def fill_industrial(cv: Canvas, region: np.ndarray) -> None:
    rng = cv.rng
    cv.paint(region, "industrial_area", "concrete", "soil_dry", np.clip(0.75 + 0.2 * cv.smooth(60), 0, 1),
             1 + 0.05 * cv.tex(1.0))  # fmt: skip
    u, v = cv.rotated(*rng.uniform(0, 100, 2), rng.uniform(0, np.pi))
    bld, cid = _lattice(cv, u, v, (rng.uniform(80, 130), rng.uniform(60, 100)),
                        (rng.uniform(50, 90), rng.uniform(30, 60)), keep=0.8, jitter=0.4, salt=401)  # fmt: skip
    bld &= region
    _roofs(cv, bld, cid, {"roof_metal_blue": 0.4, "roof_metal_white": 0.3, "roof_grey": 0.3}, 410)
    cast_shadows(cv, np.where(bld, max(1, round(5 / cv.res)), 0).astype(np.int32))
    yard = region & ~bld & (cv.smooth(50) > 1.0)
    cv.paint(yard, None, "soil_dry", "gravel", 0.6)


def fill_park(cv: Canvas, region: np.ndarray) -> None:
    cv.paint(region, "park_square", "grass", "grass_dry", 0.85, 1 + 0.05 * cv.tex(2.0))
    trees = region & (cv.smooth(35) + 0.3 * cv.tex(1.5) > 0.3)
    cv.paint(trees, None, "forest", "grass", np.clip(0.8 + 0.2 * cv.tex(1.5), 0.3, 1))
    u, v = cv.rotated(cv.size / 2, cv.size / 2, cv.rng.uniform(0, np.pi))
    paths = region & ((np.mod(u, cv.rng.uniform(50, 90)) < 4) | (np.mod(v + 20 * np.sin(u / 40), 70) < 3))
    plaza = region & (cv.smooth(60) > 1.0)
    cv.paint(paths | plaza, None, "concrete", "roof_grey", 0.8, 1 + 0.04 * cv.tex(1.0))


def paint_stadium(cv: Canvas, cx: float, cy: float, scale: float = 1.0) -> np.ndarray:
    """Oval running track around a pitch, with stands; returns its mask (labelled ``stadium``)."""
    u, v = cv.rotated(cx, cy, cv.rng.uniform(0, np.pi))
    a, b = 95 * scale, 60 * scale
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    out = r < 1.35
    cv.paint(out, "stadium", "roof_grey", "concrete", 0.8, 1 + 0.04 * cv.tex(1.0))
    cv.paint(r < 1.0, None, "track_red", "concrete", 0.95)
    cv.paint(r < 0.78, None, "grass", "grass_dry", 0.95)
    cast_shadows(cv, np.where(out & (r > 1.05), max(1, round(6 / cv.res)), 0).astype(np.int32))
    return out


def fill_airport(cv: Canvas, region: np.ndarray, u: np.ndarray, v: np.ndarray, length: float,
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
    cast_shadows(cv, np.where(terminal, max(1, round(8 / cv.res)), 0).astype(np.int32))


def fill_station(cv: Canvas, region: np.ndarray, u: np.ndarray, v: np.ndarray, width: float) -> None:
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
    cast_shadows(cv, np.where(bld, max(1, round(8 / cv.res)), 0).astype(np.int32))

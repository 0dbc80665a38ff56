"""Whole scenes: :class:`SceneRecipe` (what a scene contains), :class:`SceneLayout` (the laid-out
maps on the render grid) and :func:`layout_scene`, which lays out water, farmland, natural cover,
settlements, transport and unlabelled change areas in a fixed order of random draws."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from hierars.data.synthetic.builtup import (
    cast_shadows,
    fill_airport,
    fill_industrial,
    fill_park,
    fill_residential,
    fill_station,
    paint_stadium,
)
from hierars.data.synthetic.canvas import SEM, Canvas
from hierars.data.synthetic.landcover import fill_bare, fill_farmland, fill_forest, fill_meadow, fill_water

__all__ = ["SceneRecipe", "SceneLayout", "layout_scene"]


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
    cv = Canvas(size_px, res, rng)
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
    fill_farmland(cv, every, recipe.crops, recipe.paddy_bias, recipe.block_m, recipe.parcel_m, wet)
    free = np.ones((n, n), bool)
    forest = cv.region(rng.uniform(*recipe.forest), rng.uniform(250, 500))
    fill_forest(cv, forest)
    free &= ~forest
    meadow = cv.region(rng.uniform(*recipe.meadow), rng.uniform(120, 300), within=free)
    fill_meadow(cv, meadow, artificial=False)
    free &= ~meadow
    bare = cv.region(rng.uniform(*recipe.bare), rng.uniform(100, 250), within=free)
    fill_bare(cv, bare)
    # lakes, ponds
    water = river.copy()
    for _ in range(rng.integers(recipe.lakes[0], recipe.lakes[1] + 1)):
        lake = cv.blob(*rng.uniform(0.1 * s, 0.9 * s, 2), rng.uniform(90, 300), wobble=0.5)
        shore = ndimage.binary_dilation(lake, iterations=2) & ~lake
        cv.paint(shore, None, "soil_wet", "grass", 0.6)
        fill_water(cv, lake, "lake")
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
        fill_water(cv, reg & ~dyke, "pond", pond_ids)
        cv.sem[reg] = SEM["pond"]
        water |= reg
        feats["pond_cluster"] = 1
    for _ in range(rng.integers(recipe.ponds[0], recipe.ponds[1] + 1)):
        pond = cv.blob(*rng.uniform(0.05 * s, 0.95 * s, 2), rng.uniform(10, 35), wobble=0.3)
        fill_water(cv, pond, "pond")
        water |= pond
    if river.any():
        fill_water(cv, river, "river")
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
                fill_residential(cv, m, urban=True, theta=th)
            elif name == "rural_residential":  # urban villages: dense, irregular, low
                fill_residential(cv, m, urban=False, density=0.9, theta=th)
            elif name == "industrial_area":
                fill_industrial(cv, m)
            elif name == "park_square":
                fill_park(cv, m)
            elif name == "artificial_meadow":
                fill_meadow(cv, m, artificial=True)
            else:
                fill_bare(cv, m)
        if want("stadium", 0.5):
            sc = c + rng.uniform(-0.15, 0.15, 2) * s
            blk = urban_reg & ~street & (bid == bid[int(sc[1] / res) % n, int(sc[0] / res) % n])
            fill_park(cv, blk)
            paint_stadium(cv, *sc, scale=rng.uniform(0.8, 1.1))
            feats["stadium"] = 1
        cv.paint(street, "road", "asphalt", "concrete", 0.9, 1 + 0.05 * cv.tex(1.0))
        cv.masks["road_local"] = cv.masks.get("road_local", np.zeros((n, n), bool)) | street
        built |= urban_reg
        feats["urban"] = 1
    for _ in range(rng.integers(recipe.villages[0], recipe.villages[1] + 1)):
        vil = cv.blob(*rng.uniform(0.05 * s, 0.95 * s, 2), rng.uniform(50, 150), wobble=0.5) & ~water & ~built
        if vil.sum() > 100:
            fill_residential(cv, vil, urban=False)
            built |= vil
            feats["village"] = feats.get("village", 0) + 1
    if want("industrial_park", recipe.industrial_park):
        c = rng.uniform(0.15 * s, 0.85 * s, 2)
        u, v = cv.rotated(*c, rng.uniform(0, np.pi))
        reg = (np.abs(u) < rng.uniform(100, 250)) & (np.abs(v) < rng.uniform(80, 200)) & ~water
        fill_industrial(cv, reg)
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
        fill_station(cv, st, u, v, width)
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
            cast_shadows(cv, np.where(over, max(1, round(6 / res)), 0).astype(np.int32), dark=0.5)
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
        fill_airport(cv, reg, u, v, length, width)
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

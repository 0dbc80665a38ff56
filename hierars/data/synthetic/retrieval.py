"""The retrieval archive's scene patches: one patch dominated by a scene class (image-level label),
residential patches carrying a withheld building-density sub-label."""

from __future__ import annotations

import numpy as np

from hierars.data.synthetic.builtup import (
    fill_airport,
    fill_industrial,
    fill_park,
    fill_residential,
    fill_station,
    paint_stadium,
)
from hierars.data.synthetic.canvas import SEM, Canvas
from hierars.data.synthetic.landcover import fill_bare, fill_farmland, fill_forest, fill_meadow, fill_water
from hierars.data.synthetic.layout import SceneLayout

__all__ = ["RETRIEVAL_SCENES", "RESIDENTIAL_DENSITY", "layout_retrieval_patch"]

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
    cv = Canvas(size_px, res, rng)
    s, n = cv.size, size_px
    every = np.ones((n, n), bool)
    fill_farmland(cv, every, None, -0.3, 250.0, (25, 70), None, farm_roads=False)
    side = cv.region(rng.uniform(0.0, 0.25), s / 2)  # some context at the edge
    if rng.random() < 0.5:
        fill_forest(cv, side)
    else:
        fill_meadow(cv, side, artificial=False)
    core = cv.blob(s / 2, s / 2, s * rng.uniform(0.42, 0.6), wobble=0.3)
    if scene == "farmland":
        fill_farmland(cv, every, None, -1.0, 200.0, (20, 60), None, farm_roads=rng.random() < 0.5)
    elif scene == "paddy":
        fill_farmland(cv, every, None, 1.0, 200.0, (30, 70), None, farm_roads=False)
    elif scene == "forest":
        fill_forest(cv, core | cv.region(0.5, s / 3))
    elif scene == "meadow":
        fill_meadow(cv, core | cv.region(0.4, s / 3), artificial=False)
    elif scene == "river":
        d = cv.polyline(cv.crossing_line(curvature=rng.uniform(10, 40), through=(s / 2, s / 2)))
        fill_water(cv, d < rng.uniform(12, 35), "river")
    elif scene == "lake":
        fill_water(cv, cv.blob(s / 2, s / 2, s * rng.uniform(0.45, 0.7), wobble=0.4), "lake")
    elif scene == "ponds":
        u, v = cv.rotated(0, 0, rng.uniform(0, np.pi))
        pu, pv = rng.uniform(30, 60), rng.uniform(40, 80)
        cv.paint(core, "pond", "grass", "soil_dry", 0.6)
        ids = (np.floor(u / pu).astype(np.int64) << 20) + np.floor(v / pv).astype(np.int64)
        fill_water(cv, core & (np.mod(u, pu) >= 5) & (np.mod(v, pv) >= 5), "pond", ids)
        cv.sem[core] = SEM["pond"]
    elif scene == "industrial":
        fill_industrial(cv, core | cv.region(0.4, s / 3))
    elif scene == "residential":
        if sub_label not in RESIDENTIAL_DENSITY:
            raise ValueError(
                f"residential patches need sub_label in {list(RESIDENTIAL_DENSITY)}, got {sub_label!r}"
            )
        reg = cv.blob(s / 2, s / 2, s * 0.75, wobble=0.2)
        fill_residential(cv, reg, urban=False, density=rng.uniform(*RESIDENTIAL_DENSITY[sub_label]))
    elif scene == "park":
        fill_park(cv, core | cv.region(0.3, s / 3))
    elif scene == "stadium":
        fill_park(cv, every)
        paint_stadium(cv, s / 2, s / 2, scale=min(1.0, s / 280))
    elif scene == "highway":
        d = cv.polyline(cv.crossing_line(curvature=10, through=(s / 2, s / 2)))
        cv.paint(d < rng.uniform(11, 16), "road", "asphalt", "concrete", 0.85, 1 + 0.04 * cv.tex(1.0))
    elif scene == "railway_station":
        th = rng.uniform(0, np.pi)
        u, v = cv.rotated(s / 2, s / 2, th)
        width = min(rng.uniform(90, 140), 0.8 * s)
        fill_station(cv, (np.abs(v) < width / 2), u, v, width)
    elif scene == "airport":
        u, v = cv.rotated(s / 2, s / 2 + rng.uniform(-0.1, 0.1) * s, rng.uniform(0, np.pi))
        fill_airport(cv, every, u, v, length=3 * s, width=min(1.6 * s, 450))
    elif scene == "bare_land":
        fill_bare(cv, core | cv.region(0.4, s / 3))
    return SceneLayout(res, cv.sem, cv.mat_a, cv.mat_b, cv.frac, cv.gain, cv.shade, {scene: 1})

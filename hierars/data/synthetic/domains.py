"""Label mappings of the generated domains: semantic class -> leaf of the MM-5B or Crop10m tree, and
the WHDLD land-cover view of a layout (from its dominant material); plus recipe overrides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from hierars.data.synthetic.canvas import SEM, M
from hierars.data.synthetic.layout import SceneLayout, SceneRecipe

__all__ = ["semantic_to_leaf", "WHDLD_CLASSES", "material_to_whdld", "with_overrides"]

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

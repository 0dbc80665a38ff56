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

The package, by concept: :mod:`.grid` (vectorised array helpers), :mod:`.canvas` (the layout state and
its painting primitives), :mod:`.landcover` and :mod:`.builtup` (fillers painting one kind of land use),
:mod:`.layout` (scene recipes and whole-scene layout), :mod:`.retrieval` (retrieval-archive patches),
:mod:`.render` (reflectance and per-source images) and :mod:`.domains` (label mappings of the transfer
domains).
"""

from hierars.data.synthetic.canvas import SEM, SEMANTIC_CLASSES, UNLABELED
from hierars.data.synthetic.domains import WHDLD_CLASSES, material_to_whdld, semantic_to_leaf, with_overrides
from hierars.data.synthetic.grid import block_mode
from hierars.data.synthetic.layout import SceneLayout, SceneRecipe, layout_scene
from hierars.data.synthetic.render import SOURCES, render_reflectance, render_source
from hierars.data.synthetic.retrieval import RESIDENTIAL_DENSITY, RETRIEVAL_SCENES, layout_retrieval_patch

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
    "with_overrides",
    "WHDLD_CLASSES",
    "RETRIEVAL_SCENES",
    "RESIDENTIAL_DENSITY",
    "SEM",
    "UNLABELED",
    "layout_retrieval_patch",
]

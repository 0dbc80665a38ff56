"""Class colours derived from a label tree: children are shaded from their parent's hue.

Colours are data of the tree (:meth:`hierars.hierarchy.Hierarchy.palettes`), so a class has the same
colour in every figure, GeoTIFF colour table and QGIS style. No plotting library is needed.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["derive_palettes"]

#: hue (0..1) of well-known root classes, so vegetation is green and water blue in every tree
ROOT_HUES = {
    "vegetation": 0.30, "water": 0.60, "artificial_surface": 0.0, "artificial": 0.0, "built_up": 0.0,
    "bare_land": 0.10, "bare": 0.10, "other": 0.78, "wetland": 0.48,
}  # fmt: skip


def derive_palettes(hierarchy: Hierarchy, fixed: Mapping[str, tuple[int, int, int]] | None = None
                    ) -> list[np.ndarray]:
    """One uint8 ``(N_l, 3)`` RGB palette per level, coarse to fine.

    Roots take a hue from :data:`ROOT_HUES` (or an evenly spaced one); a class with siblings is shaded
    around its parent's hue and lightness; a single child keeps its parent's colour. ``fixed`` (node name
    -> RGB) overrides the derived colour of those nodes (their children are shaded from the fixed colour).
    """
    fixed = dict(fixed or {})
    names = hierarchy.names
    parents = [p.tolist() for p in hierarchy.parents]
    n0 = len(names[0])

    def hls_of(name: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
        if name in fixed:
            return colorsys.rgb_to_hls(*(v / 255.0 for v in fixed[name]))
        return default

    hls: list[list[tuple[float, float, float]]] = [[]]
    for i, name in enumerate(names[0]):
        h = ROOT_HUES.get(name, i / n0 + 0.05)
        hls[0].append(hls_of(name, (h % 1.0, 0.45, 0.75)))
    for lvl in range(1, len(names)):
        cur = []
        for c, name in enumerate(names[lvl]):
            p = parents[lvl][c]
            sibs = [k for k in range(len(names[lvl])) if parents[lvl][k] == p]
            k, j = len(sibs), sibs.index(c)
            ph, pl, ps = hls[lvl - 1][p]
            if k == 1:
                cur.append(hls_of(name, (ph, pl, ps)))
                continue
            t = j / (k - 1) - 0.5  # -0.5 .. 0.5
            spread = 0.10 / lvl
            cur.append(hls_of(name, ((ph + spread * t) % 1.0, float(np.clip(pl + 0.36 * t, 0.2, 0.82)), ps)))
        hls.append(cur)
    out = []
    for lvl, level_names in zip(hls, names):
        rows = [fixed[n] if n in fixed else [round(255 * v) for v in colorsys.hls_to_rgb(*x)]
                for x, n in zip(lvl, level_names)]
        out.append(np.array(rows, dtype=np.uint8))
    return out

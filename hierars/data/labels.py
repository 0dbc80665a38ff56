"""How a label tree is written into label rasters: loading trees (cached), the raw value of each leaf,
the unlabelled value, the colour table and the tags stored with every label GeoTIFF."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from hierars.hierarchy import Hierarchy

__all__ = ["load_hierarchy", "raw_values", "unlabeled_value", "colormap", "label_tags"]


def load_hierarchy(tree: str | Path | Hierarchy) -> Hierarchy:
    """:meth:`Hierarchy.load <hierars.hierarchy.Hierarchy.load>` (an object, a YAML path or a built-in name),
    cached by name / path."""
    if isinstance(tree, Hierarchy):
        return tree
    return _load_tree(str(tree))


@lru_cache(maxsize=32)
def _load_tree(tree: str) -> Hierarchy:
    return Hierarchy.load(tree)


def raw_values(h: Hierarchy) -> dict[str, int]:
    """leaf name -> raw value written to label rasters (the first listed in the YAML)."""
    if not h.leaf_raw_values:
        return {n: i for i, n in enumerate(h.names[-1])}
    return {leaf: vals[0] for leaf, vals in h.leaf_raw_values.items()}


def unlabeled_value(h: Hierarchy) -> int:
    return int(h.ignore_values[0]) if h.ignore_values else h.ignore_index


def colormap(h: Hierarchy) -> dict[int, tuple[int, int, int, int]]:
    pal = h.palettes()[-1]
    raw = raw_values(h)
    cmap = {v: (*map(int, pal[h.names[-1].index(leaf)]), 255) for leaf, v in raw.items()}
    cmap[unlabeled_value(h)] = (0, 0, 0, 255)
    return cmap


def label_tags(h: Hierarchy) -> dict[str, str]:
    return {"hierarchy": h.name, "class_values": json.dumps(raw_values(h)),
            "unlabeled_value": str(unlabeled_value(h))}  # fmt: skip

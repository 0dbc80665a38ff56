"""How a prepared folder records its rasters: paths relative to the folder (absolute when outside it)
and :class:`~hierars.data.rasters.RasterItem` to / from the JSON of ``splits.json``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hierars.data.rasters import RasterItem

__all__ = ["rel_path", "item_dict", "item_from"]


def rel_path(p: Path, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(Path(p).resolve())


def item_dict(it: RasterItem, base: Path) -> dict:
    return {"image": rel_path(it.image, base), "label": rel_path(it.label, base) if it.label else None,
            "scene": it.scene, "sub_label": it.sub_label}  # fmt: skip


def item_from(d: Mapping, base: Path) -> RasterItem:
    def absolute(p):
        return None if p is None else (Path(p) if Path(p).is_absolute() else base / p)

    return RasterItem(
        absolute(d["image"]), absolute(d.get("label")), d.get("scene", ""), d.get("sub_label", "")
    )

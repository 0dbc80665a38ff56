"""Dataset adapters: functions that know a dataset's folder layout and list its (image, label) pairs
as :class:`~hierars.data.rasters.RasterItem` lists:

- :func:`gid15_items` - ``image/<scene>/<n>.tif`` + ``label_gray/<scene>/<n>.tif`` (scene = folder);
- :func:`agnet_items` - ``image/lc8_<date>_<row>_<col>.tif`` + ``target/cdl_<date>_<row>_<col>.tif``;
- :func:`mm5b_items` - ``<source>/image/<scene>.tif`` + ``<source>/label/<scene>.tif`` per source
  (labels already on each source's grid; :func:`~hierars.data.rasters.resample_label` makes them from 4 m labels);
- :func:`whdld_items` - ``Images/<id>.jpg`` + ``ImagesPNG/<id>.png`` (colour-coded labels, :data:`WHDLD_COLORS`);
- :func:`dlrsd_items` - ``Images/<class>/<id>.tif`` + ``Labels/<class>/<id>.png`` (scene = class;
  dense / medium / sparse residential become scene ``residential`` with that sub-label);
- :func:`folder_items` - any ``image_dir`` / ``label_dir`` pair matched by file stem.

Missing or empty folders raise ``FileNotFoundError`` naming the folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from hierars.data.rasters import RasterItem

__all__ = ["WHDLD_COLORS", "folder_items", "gid15_items", "agnet_items", "mm5b_items", "whdld_items", "dlrsd_items"]

#: WHDLD label colours (ImagesPNG) -> class name.
WHDLD_COLORS: dict[tuple[int, int, int], str] = {
    (255, 0, 0): "building", (255, 255, 0): "road", (192, 192, 0): "pavement",
    (0, 255, 0): "vegetation", (128, 128, 128): "bare_soil", (0, 0, 255): "water",
}  # fmt: skip


def _require_dir(p: Path, what: str) -> Path:
    p = Path(p)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {p}")
    return p


def _nonempty(files: list, where: Path, pattern: str) -> list:
    if not files:
        raise FileNotFoundError(f"no images matching {pattern!r} in {where} (empty folder?)")
    return files


def folder_items(image_dir: str | Path, label_dir: str | Path | None, pattern: str = "*.tif",
                 label_suffix: str | None = None, scene_from_parent: bool = False,
                 recursive: bool = False) -> list[RasterItem]:  # fmt: skip
    """Pairs ``image_dir/<stem><ext>`` with ``label_dir/<stem><label_suffix>`` (default: the same name).

    With ``recursive`` the relative sub-folder is kept for the label (and is the scene label when
    ``scene_from_parent``)."""
    image_dir = _require_dir(Path(image_dir), "image")
    label_root = _require_dir(Path(label_dir), "label") if label_dir is not None else None
    files = sorted(image_dir.rglob(pattern) if recursive else image_dir.glob(pattern))
    items = []
    for f in _nonempty(files, image_dir, pattern):
        rel = f.relative_to(image_dir)
        lab = None
        if label_root is not None:
            lab = (
                label_root / rel.parent / (f.stem + (label_suffix if label_suffix is not None else f.suffix))
            )
        items.append(RasterItem(f, lab, scene=rel.parent.name if scene_from_parent else ""))
    return items


def gid15_items(root: str | Path) -> list[RasterItem]:
    """GID-15 patches: ``image/<scene>/<n>.tif`` + ``label_gray/<scene>/<n>.tif``; scene = folder name."""
    root = _require_dir(Path(root), "GID-15")
    return folder_items(root / "image", root / "label_gray", "*.tif", scene_from_parent=True, recursive=True)


_AGNET = re.compile(r"lc8_(\d+)_(\d+)_(\d+)\.tif$")


def agnet_items(root: str | Path) -> list[RasterItem]:
    """Ag-Net tiles: ``image/lc8_<date>_<row>_<col>.tif`` + ``target/cdl_<date>_<row>_<col>.tif``.
    ``extra`` holds the tile-grid ``row`` and ``col`` (for spatial splits)."""
    root = _require_dir(Path(root), "Ag-Net")
    img_dir = _require_dir(root / "image", "Ag-Net image")
    items = []
    for f in _nonempty(sorted(img_dir.glob("lc8_*.tif")), img_dir, "lc8_*.tif"):
        m = _AGNET.search(f.name)
        if not m:
            raise ValueError(f"{f}: Ag-Net image names must look like lc8_<date>_<row>_<col>.tif")
        date, row, col = m.groups()
        items.append(RasterItem(f, root / "target" / f"cdl_{date}_{row}_{col}.tif", scene=f"{row}_{col}",
                                extra={"row": int(row), "col": int(col)}))  # fmt: skip
    return items


def mm5b_items(root: str | Path, source: str) -> list[RasterItem]:
    """MM-5B layout: ``<root>/<source>/image/<scene>.tif`` + ``<root>/<source>/label/<scene>.tif``."""
    src = _require_dir(Path(root) / source, f"MM-5B source {source!r}")
    items = folder_items(src / "image", src / "label", "*.tif")
    return [RasterItem(it.image, it.label, scene=it.image.stem) for it in items]


def whdld_items(root: str | Path) -> list[RasterItem]:
    """WHDLD: ``Images/<id>.jpg`` + colour-coded ``ImagesPNG/<id>.png`` (use ``WHDLD_COLORS``)."""
    root = _require_dir(Path(root), "WHDLD")
    return folder_items(root / "Images", root / "ImagesPNG", "*.jpg", label_suffix=".png")


def dlrsd_items(root: str | Path, image_subdir: str = "Images", label_subdir: str = "Labels",
                image_pattern: str = "*.tif", label_suffix: str = ".png") -> list[RasterItem]:  # fmt: skip
    """DLRSD (UC Merced images + DLRSD labels): ``Images/<class>/<id>.tif`` + ``Labels/<class>/<id>.png``.

    Scene label = class folder; ``denseresidential`` / ``mediumresidential`` / ``sparseresidential``
    become scene ``residential`` with sub-label ``dense`` / ``medium`` / ``sparse`` (HIR's merge)."""
    root = _require_dir(Path(root), "DLRSD")
    items = folder_items(root / image_subdir, root / label_subdir, image_pattern, label_suffix,
                         scene_from_parent=True, recursive=True)  # fmt: skip
    out = []
    for it in items:
        m = re.fullmatch(r"(dense|medium|sparse)[ _]?residential", it.scene, flags=re.I)
        out.append(RasterItem(it.image, it.label, "residential", m.group(1).lower()) if m else it)
    return out

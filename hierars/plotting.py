"""Figures: per-level palettes derived from the label tree, label colouring, sample galleries.

Palettes follow the tree: each root gets a hue (well-known names get their conventional colour:
vegetation green, water blue, artificial surfaces red, bare land ochre), and every child is a
shade of its parent's hue (hue nudged, lightness spread), so a fine map reads as a refinement of
the coarse one. Ignored pixels (255) are drawn black.

This module is meant to grow: add new figure functions at the end.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IGNORE_COLOR = (0, 0, 0)
_ROOT_HUES = {
    "vegetation": 0.30, "water": 0.60, "artificial_surface": 0.0, "artificial": 0.0, "built_up": 0.0,
    "bare_land": 0.10, "bare": 0.10, "other": 0.78, "wetland": 0.48,
}  # fmt: skip


def level_palettes(hierarchy) -> list[np.ndarray]:
    """One uint8 ``(N_l, 3)`` RGB palette per level, coarse to fine, children shaded from parents.

    ``hierarchy`` is a :class:`~hierars.hierarchy.Hierarchy` (uses ``names`` and ``parents``)."""
    names = hierarchy.names
    parents = [p.tolist() for p in hierarchy.parents]
    n0 = len(names[0])
    free = [i / n0 for i in range(n0)]
    hls: list[list[tuple[float, float, float]]] = [[]]
    for i, name in enumerate(names[0]):
        h = _ROOT_HUES.get(name, free[i] + 0.05)
        hls[0].append((h % 1.0, 0.45, 0.75))
    for lvl in range(1, len(names)):
        cur = []
        for c in range(len(names[lvl])):
            p = parents[lvl][c]
            sibs = [k for k in range(len(names[lvl])) if parents[lvl][k] == p]
            k, j = len(sibs), sibs.index(c)
            ph, pl, ps = hls[lvl - 1][p]
            if k == 1:
                cur.append((ph, pl, ps))
                continue
            t = j / (k - 1) - 0.5  # -0.5 .. 0.5
            spread = 0.10 / lvl
            cur.append(((ph + spread * t) % 1.0, float(np.clip(pl + 0.36 * t, 0.2, 0.82)), ps))
        hls.append(cur)
    return [
        np.array([[round(255 * v) for v in colorsys.hls_to_rgb(*x)] for x in lvl], dtype=np.uint8)
        for lvl in hls
    ]


def colorize(labels, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class indices (H x W, numpy or tensor) -> uint8 RGB image (H x W x 3); ignore -> black."""
    lab = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64)
    pal = np.asarray(palette, dtype=np.uint8)
    out = np.zeros((*lab.shape, 3), np.uint8)
    ok = (lab >= 0) & (lab < len(pal)) & (lab != ignore_index)
    out[ok] = pal[lab[ok]]
    out[~ok] = IGNORE_COLOR
    return out


def stretch(image, bands: Sequence[int] = (0, 1, 2), low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """C x H x W array -> H x W x 3 float display image in [0, 1] (per-band percentile stretch)."""
    img = np.asarray(image.cpu() if hasattr(image, "cpu") else image, dtype=np.float32)
    out = np.empty((*img.shape[1:], 3), np.float32)
    for k, b in enumerate(bands):
        lo, hi = np.percentile(img[b], [low, high])
        out[..., k] = np.clip((img[b] - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


def legend_handles(hierarchy, level: int, palettes: list[np.ndarray] | None = None):
    """matplotlib Patch handles for the classes of ``level``."""
    from matplotlib.patches import Patch

    pal = (palettes or level_palettes(hierarchy))[level]
    return [Patch(color=pal[i] / 255.0, label=n) for i, n in enumerate(hierarchy.names[level])]


def plot_sample_triplets(rows: Sequence[dict], hierarchy, out_path: str | Path | None = None,
                         palettes: list[np.ndarray] | None = None, titles: Sequence[str] | None = None):  # fmt: skip
    """Gallery: one row per sample, images then labels at every level.

    Each row is ``{"images": [(title, H x W x 3 float display image), ...], "mask": L x H x W}``
    (the mask of any grid, e.g. the 4 m label). Per-level legends are drawn under the columns.
    Returns the matplotlib Figure (saved to ``out_path`` when given)."""
    import matplotlib.pyplot as plt

    palettes = palettes or level_palettes(hierarchy)
    n_img = max(len(r["images"]) for r in rows)
    L = hierarchy.num_levels
    ncol = n_img + L
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.6 * ncol, 2.6 * len(rows) + 1.6), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_img):
            ax = axes[i, j]
            if j < len(row["images"]):
                title, im = row["images"][j]
                ax.imshow(im, interpolation="nearest")
                if i == 0:
                    ax.set_title(title, fontsize=9)
            ax.axis("off")
        for lvl in range(L):
            ax = axes[i, n_img + lvl]
            ax.imshow(
                colorize(row["mask"][lvl], palettes[lvl], hierarchy.ignore_index), interpolation="nearest"
            )
            if i == 0:
                ax.set_title(f"level {lvl + 1} ({hierarchy.num_classes[lvl]} classes)", fontsize=9)
            ax.axis("off")
        if titles is not None:
            axes[i, 0].text(-0.05, 0.5, titles[i], transform=axes[i, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=8)  # fmt: skip
    for lvl in range(L):
        fig.legend(handles=legend_handles(hierarchy, lvl, palettes), loc="lower left",
                   bbox_to_anchor=((n_img + lvl) / ncol, 0.0), fontsize=6, ncol=1 if lvl < L - 1 else 2,
                   frameon=False)  # fmt: skip
    fig.subplots_adjust(bottom=0.06 + 0.11 * max(len(hierarchy.names[-1]) / 2, len(hierarchy.names[0])) / 10,
                        wspace=0.03, hspace=0.05)  # fmt: skip
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_path, dpi=110, bbox_inches="tight")
    return fig

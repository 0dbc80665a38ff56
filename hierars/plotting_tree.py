"""Figures of the label tree: the tree as a drawing, the same tree annotated with one pixel's probabilities
(JSPS path and per-level argmax marked), the scores of every root-to-leaf path, and one pixel through the
BHCCM fusion (per-level probabilities before and after the Merging Blocks).

Layout (:func:`tree_layout`): levels are columns, coarse (left) to fine (right), with the root as a dot on the far
left; leaf ``i`` (path ``i`` of ``hierarchy.paths``) sits on row ``i`` and every inner node at the mean row of its
leaves, so a subtree is one contiguous block of rows. Nodes are boxes in the tree's palette
(``Hierarchy.palettes()``: the colours of every other figure and of the QGIS styles).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hierars.atomic import atomic_savefig

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["tree_layout", "plot_tree", "plot_path_scores", "plot_fusion_pixel", "plot_level_batch", "JSPS_COLOR", "ARGMAX_COLOR"]

JSPS_COLOR = "#1f3fbf"  # thick edges + outline: the JSPS path
ARGMAX_COLOR = "#d62728"  # dashed outline: the per-level argmax


def tree_layout(hierarchy: Hierarchy) -> dict[tuple[int, int], tuple[float, float]]:
    """``{(level, class): (x, y)}``: x = level (0 coarse … L-1 finest), y = mean leaf row (leaf i on row i)."""
    paths = hierarchy.paths.numpy()
    pos = {}
    for lvl, n in enumerate(hierarchy.num_classes):
        for c in range(n):
            rows = np.flatnonzero(paths[:, lvl] == c)
            pos[(lvl, c)] = (float(lvl), float(rows.mean()))
    return pos


def _text_color(rgb: np.ndarray) -> str:
    r, g, b = (np.asarray(rgb, dtype=float) / 255.0)[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def _check_path(name: str, path: Sequence[int] | None, hierarchy: Hierarchy) -> list[int] | None:
    if path is None:
        return None
    path = [int(c) for c in path]
    if len(path) != hierarchy.num_levels or any(not 0 <= c < n for c, n in zip(path, hierarchy.num_classes)):
        raise ValueError(f"{name} must hold one class per level within {hierarchy.num_classes}, got {path}")
    return path


def plot_tree(hierarchy: Hierarchy, ax=None, *, level_probs: Sequence[np.ndarray] | None = None,
              node_probs: Sequence[np.ndarray] | None = None, jsps_path: Sequence[int] | None = None,
              argmax_path: Sequence[int] | None = None, title: str | None = None,
              out_path: str | Path | None = None, fontsize: float = 8.0):
    """Draw the label tree; optionally annotate it with one pixel's numbers.

    Args:
        hierarchy: the tree (names, paths, palette).
        ax: matplotlib Axes to draw into (default: a new figure sized to the tree).
        level_probs: per-level softmax of the pixel, ``L`` arrays of shape ``(N_l,)`` (``q_l(c)``, what the
            per-level argmax decides on); printed as ``q``.
        node_probs: path-distribution marginals ``m_l(c)`` (``L`` arrays ``(N_l,)``,
            :func:`hierars.granularity.node_probabilities`); printed as ``m`` and used as the box opacity.
        jsps_path: the JSPS path, one class per level (a valid root-to-leaf path): thick blue edges and outlines.
        argmax_path: the per-level argmax classes (may not be a path of the tree): dashed red outlines.
        out_path: save the figure there (atomically).

    Returns: the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyBboxPatch

    L, P = hierarchy.num_levels, len(hierarchy.paths)
    jsps_path = _check_path("jsps_path", jsps_path, hierarchy)
    argmax_path = _check_path("argmax_path", argmax_path, hierarchy)
    for nm, probs in (("level_probs", level_probs), ("node_probs", node_probs)):
        if probs is not None and [len(np.ravel(p)) for p in probs] != list(hierarchy.num_classes):
            raise ValueError(f"{nm} must have {list(hierarchy.num_classes)} entries per level, "
                             f"got {[len(np.ravel(p)) for p in probs]}")
    if jsps_path is not None and hierarchy.path_id(torch.tensor(jsps_path).view(1, L, 1, 1)).item() < 0:
        raise ValueError(f"jsps_path {jsps_path} is not a root-to-leaf path of tree {hierarchy.name!r}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.6 * L + 1.2, 0.32 * P + 1.0))
    fig = ax.figure
    pos = tree_layout(hierarchy)
    pal = hierarchy.palettes()
    annotated = level_probs is not None or node_probs is not None
    box_w, box_h = 0.78, 0.8 if annotated else 0.62
    x_root = -0.7
    root_y = (P - 1) / 2.0
    on_jsps = set() if jsps_path is None else {(lvl, c) for lvl, c in enumerate(jsps_path)}
    on_argmax = set() if argmax_path is None else {(lvl, c) for lvl, c in enumerate(argmax_path)}

    def edge(x0, y0, x1, y1, strong):
        ax.plot([x0, (x0 + x1) / 2, (x0 + x1) / 2, x1], [y0, y0, y1, y1],
                color=JSPS_COLOR if strong else "#999999", lw=3.0 if strong else 0.8, zorder=1 if not strong else 2,
                solid_capstyle="round")

    for (lvl, c), (x, y) in pos.items():  # edges from the parent's right side to the child's left side
        if lvl == 0:
            edge(x_root, root_y, x - box_w / 2, y, (lvl, c) in on_jsps)
        else:
            par = int(hierarchy.parents[lvl][c])
            px, py = pos[(lvl - 1, par)]
            edge(px + box_w / 2, py, x - box_w / 2, y, (lvl, c) in on_jsps and (lvl - 1, par) in on_jsps)
    ax.plot([x_root], [root_y], "o", color="black", ms=6, zorder=3)
    ax.annotate("root", (x_root, root_y), xytext=(-4, 0), textcoords="offset points", ha="right", va="center",
                fontsize=fontsize)
    for (lvl, c), (x, y) in pos.items():
        rgb = pal[lvl][c]
        alpha = 1.0 if node_probs is None else 0.25 + 0.75 * min(1.0, max(0.0, float(np.ravel(node_probs[lvl])[c])))
        ax.add_patch(FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h, boxstyle="round,pad=0.02",
                                    facecolor=rgb / 255.0, alpha=alpha, edgecolor="none", zorder=3))
        if (lvl, c) in on_jsps:
            ax.add_patch(FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h, boxstyle="round,pad=0.02",
                                        facecolor="none", edgecolor=JSPS_COLOR, lw=2.6, zorder=4))
        if (lvl, c) in on_argmax:
            pad = 0.09
            ax.add_patch(FancyBboxPatch((x - box_w / 2 - pad / 2, y - box_h / 2 - pad / 2), box_w + pad,
                                        box_h + pad, boxstyle="round,pad=0.02", facecolor="none",
                                        edgecolor=ARGMAX_COLOR, lw=1.8, ls=(0, (3, 2)), zorder=5))
        text = hierarchy.names[lvl][c]
        nums = []
        if level_probs is not None:
            nums.append(f"q {float(np.ravel(level_probs[lvl])[c]):.2f}")
        if node_probs is not None:
            nums.append(f"m {float(np.ravel(node_probs[lvl])[c]):.2f}")
        if nums:
            text += "\n" + "  ".join(nums)
        color = _text_color(rgb) if alpha > 0.6 else "black"
        bold = (lvl, c) in on_jsps or (lvl, c) in on_argmax
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color=color, zorder=6,
                fontweight="bold" if bold else "normal", linespacing=1.1)
    ax.set_xlim(x_root - 0.45, L - 1 + box_w / 2 + 0.05)
    ax.set_ylim(P - 0.4, -0.6 - (0.9 if annotated else 0.0))  # leaf 0 on top
    ax.set_xticks(range(L), [f"level {lvl + 1}\n({n} classes)" for lvl, n in enumerate(hierarchy.num_classes)],
                  fontsize=fontsize)
    ax.xaxis.tick_top()
    ax.set_yticks([])
    for side in ("left", "right", "bottom", "top"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="x", length=0)
    handles = []
    if jsps_path is not None:
        handles.append(Line2D([], [], color=JSPS_COLOR, lw=3, label="JSPS path"))
    if argmax_path is not None:
        handles.append(Line2D([], [], color=ARGMAX_COLOR, lw=1.8, ls=(0, (3, 2)), label="per-level argmax"))
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize=fontsize, frameon=False, ncol=len(handles),
                  bbox_to_anchor=(0.0, 0.0), borderaxespad=0.2)
    if annotated:  # under the legend
        ax.text(0.0, -0.035 if handles else 0.0, "q = per-level softmax, m = probability of the paths through the "
                "node (box opacity)", transform=ax.transAxes, fontsize=fontsize - 1, va="top", color="#444444")
    if title:
        ax.set_title(title, fontsize=fontsize + 2, pad=26)
    if out_path is not None:
        fig.tight_layout()
        atomic_savefig(fig, out_path, dpi=120)
    return fig


def plot_path_scores(hierarchy: Hierarchy, scores: np.ndarray, jsps_index: int | None = None,
                     argmax_path: Sequence[int] | None = None, ax=None, title: str | None = None,
                     out_path: str | Path | None = None):
    """Horizontal bars of the path scores ``s(p) = Σ_l log q_l(p_l)`` of one pixel, one bar per path.

    Args:
        scores: ``(P,)`` float, path ``i`` ends in leaf ``i`` (:func:`hierars.losses.path_scores` at the pixel).
        jsps_index: the chosen path (JSPS = the highest score); marked in blue.
        argmax_path: the per-level argmax classes; if they form a path it is marked in red, otherwise the
            title says that the argmax combination is not a path of the tree.

    Returns: the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    scores = np.asarray(scores, dtype=float).ravel()
    P = len(hierarchy.paths)
    if scores.shape != (P,):
        raise ValueError(f"scores must have one entry per path ({P}), got shape {scores.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.26 * P + 1.2))
    fig = ax.figure
    leaf_pal = hierarchy.palettes()[-1] / 255.0
    paths = hierarchy.paths.numpy()
    labels = [" / ".join(hierarchy.names[lvl][c] for lvl, c in enumerate(p)) for p in paths]
    ax.barh(range(P), scores, color=leaf_pal, edgecolor="white")
    argmax_idx = None
    if argmax_path is not None:
        hits = np.flatnonzero((paths == np.asarray(argmax_path)[None]).all(1))
        argmax_idx = int(hits[0]) if len(hits) else None
    for idx, color, name in ((jsps_index, JSPS_COLOR, "JSPS"), (argmax_idx, ARGMAX_COLOR, "argmax")):
        if idx is not None:
            ax.barh([idx], [scores[idx]], facecolor="none", edgecolor=color, lw=2.2)
            ax.annotate(name, (scores[idx], idx), xytext=(-4 if name == "JSPS" else -44, 0),
                        textcoords="offset points", ha="right", va="center", fontsize=8, color=color,
                        fontweight="bold")
    ax.set_yticks(range(P), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("path score s(p) = Σ_l log q_l(p_l)  (nats; 0 = certain)", fontsize=9)
    if argmax_path is not None and argmax_idx is None:
        names = " / ".join(hierarchy.names[lvl][int(c)] for lvl, c in enumerate(argmax_path))
        ax.text(0.0, -0.08 - 0.6 / P, f"per-level argmax {names} is not a path of the tree", color=ARGMAX_COLOR,
                transform=ax.transAxes, fontsize=8, va="top")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if out_path is not None:
        fig.tight_layout()
        atomic_savefig(fig, out_path, dpi=120)
    return fig


def plot_fusion_pixel(hierarchy: Hierarchy, before: Sequence[np.ndarray], after: Sequence[np.ndarray],
                      title: str | None = None, out_path: str | Path | None = None):
    """One pixel's per-level softmax before (level heads ``F_l``) and after the BHCCM fusion (``Y_l``).

    Args:
        before, after: ``L`` arrays ``(N_l,)`` of logits; each level is softmaxed here.

    Returns: the matplotlib Figure (one panel per level, classes in the tree's colours).
    """
    import matplotlib.pyplot as plt

    L = hierarchy.num_levels
    if len(before) != L or len(after) != L:
        raise ValueError(f"before/after need {L} levels, got {len(before)} / {len(after)}")
    pal = hierarchy.palettes()
    widths = [max(2, n) for n in hierarchy.num_classes]
    fig, axes = plt.subplots(1, L, figsize=(0.42 * sum(widths) + 1.5, 3.6), gridspec_kw={"width_ratios": widths})

    def softmax(z):
        z = np.asarray(z, dtype=float).ravel()
        e = np.exp(z - z.max())
        return e / e.sum()

    for lvl, ax in enumerate(np.atleast_1d(axes)):
        n = hierarchy.num_classes[lvl]
        x = np.arange(n)
        ax.bar(x - 0.2, softmax(before[lvl]), 0.4, color=pal[lvl] / 255.0, alpha=0.45, edgecolor="grey",
               label="before fusion: softmax(F_l)")
        ax.bar(x + 0.2, softmax(after[lvl]), 0.4, color=pal[lvl] / 255.0, edgecolor="black",
               label="after fusion: softmax(Y_l)")
        ax.set_xticks(x, hierarchy.names[lvl], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"level {lvl + 1}", fontsize=9)
        if lvl == 0:
            ax.set_ylabel("probability", fontsize=9)
        if lvl == L - 1:
            ax.legend(fontsize=7, loc="upper left", frameon=False)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if out_path is not None:
        atomic_savefig(fig, out_path, dpi=120)
    return fig


def plot_level_batch(images: Sequence[np.ndarray], masks: np.ndarray | torch.Tensor, hierarchy: Hierarchy,
                     title: str = "", out_path: str | Path | None = None):
    """A batch as the model sees it: one column per sample, the display image on top, then its label at every
    level in the tree's palette (black = ignore).

    Args:
        images: B display images H×W×3 in [0, 1] (``hierars.plotting.display_rgb``).
        masks: B×L×H×W integer labels (``hierarchy.ignore_index`` = ignore).

    Returns: the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from hierars.plotting import colorize

    masks = np.asarray(masks.cpu() if hasattr(masks, "cpu") else masks)
    B, L = len(images), hierarchy.num_levels
    if masks.ndim != 4 or masks.shape[:2] != (B, L):
        raise ValueError(f"masks must be {B}×{L}×H×W for {B} images of a {L}-level tree, got {masks.shape}")
    pal = hierarchy.palettes()
    fig, axes = plt.subplots(1 + L, B, figsize=(1.9 * B + 0.8, 1.9 * (1 + L)), squeeze=False)
    for b in range(B):
        axes[0, b].imshow(images[b])
        for lvl in range(L):
            axes[1 + lvl, b].imshow(colorize(masks[b, lvl], pal[lvl], hierarchy.ignore_index),
                                    interpolation="nearest")
    for r, name in enumerate(["image", *(f"level {lvl + 1}" for lvl in range(L))]):
        axes[r, 0].set_ylabel(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if out_path is not None:
        atomic_savefig(fig, out_path, dpi=100)
    return fig

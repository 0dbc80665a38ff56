"""Looking inside one pixel of a trained model: the path explorer and the notebooks' teaching helpers.

- :func:`explorer_data` runs a model on one tile and keeps its per-level logits, JSPS and argmax maps;
  :func:`pixel_view` gives one pixel's per-level softmax ``q_l``, path-distribution marginals ``m_l``
  (:mod:`hierars.granularity`), path scores ``s(p)`` (:func:`hierars.losses.path_scores`), the JSPS path and the
  per-level argmax (:mod:`hierars.decoding`) — nothing here re-implements a decision.
- :func:`explore` is the **path explorer**. It always writes a static figure (the tile and, for a few chosen
  pixels, the annotated tree: :func:`plot_explorer_static`); with ``interactive=True`` it also returns a widget:
  click a pixel of the prediction (ipympl canvas, when ipympl is installed) or type its row / column, and the tree
  is redrawn with that pixel's numbers. **How papermill is told apart from JupyterLab**: the notebook parameter
  ``interactive`` (``dvc.yaml`` passes ``-p interactive False``); left at None it is decided by
  :func:`has_interactive_frontend`: the request that runs the cell says whether its client can answer input
  (``allow_stdin``: true from JupyterLab, VS Code, classic Notebook; false from nbclient, i.e. papermill and
  nbconvert). Under papermill no widget is built: widget comms to a client nobody watches only cost time (and a
  papermill run once hung waiting on them). ipywidgets / ipympl are imported only when the widget is built (they
  are in the ``pipeline`` extra).

The other numbers the notebooks teach with (one pixel through BHCCM's fusion, the HSC terms) are in
:mod:`hierars.project.teaching`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hierars.decoding import jsps, predict_levels, probabilities
from hierars.granularity import node_probabilities, path_probabilities
from hierars.levels import as_level_list, upsample_logits
from hierars.losses import path_scores

if TYPE_CHECKING:
    from torch import nn

    from hierars.hierarchy import Hierarchy

__all__ = ["ExplorerData", "PixelView", "explorer_data", "pixel_view", "disagreement_mask", "pick_pixels",
           "plot_explorer_static", "has_interactive_frontend", "explore"]


@dataclass
class ExplorerData:
    """One tile's prediction. ``image`` C×H×W, ``mask`` L×H×W (ground truth, 255 = ignore), ``logits`` a list of
    ``N_l×H×W`` float tensors coarse→fine (one for a flat model), ``jsps`` / ``argmax`` int64 L×H×W label maps."""

    image: torch.Tensor
    mask: torch.Tensor
    logits: list[torch.Tensor]
    jsps: torch.Tensor
    argmax: torch.Tensor
    title: str = ""


@dataclass
class PixelView:
    """One pixel: ``level_probs`` (q_l, L arrays (N_l,)), ``node_probs`` (m_l, L arrays (N_l,)), ``path_scores``
    ((P,) s(p) = Σ_l log q_l(p_l)), ``jsps_path`` / ``argmax_path`` (L class indices), ``jsps_index`` (its path
    row in ``hierarchy.paths``) and ``argmax_is_path`` (whether the per-level argmax is a path of the tree)."""

    row: int
    col: int
    level_probs: list[np.ndarray]
    node_probs: list[np.ndarray]
    path_scores: np.ndarray
    jsps_path: list[int]
    argmax_path: list[int]
    jsps_index: int
    argmax_is_path: bool


@torch.no_grad()
def explorer_data(model: nn.Module, sample: dict, hierarchy: Hierarchy, title: str = "") -> ExplorerData:
    """Run ``model`` (eval mode) on one dataset sample ``{"image": C×H×W, "mask": L×H×W}`` and decode it."""
    was_training = model.training
    model.eval()
    try:
        device = next(iter(model.parameters())).device
        image = sample["image"]
        logits = as_level_list(model(image[None].to(device)))
        logits = [z.float().cpu() for z in upsample_logits(logits, tuple(image.shape[-2:]))]
    finally:
        model.train(was_training)
    return ExplorerData(image=image, mask=sample["mask"], logits=[z[0] for z in logits],
                        jsps=jsps(logits, hierarchy)[0], argmax=predict_levels(logits, hierarchy, "argmax")[0],
                        title=title)


def pixel_view(logits: Sequence[torch.Tensor], hierarchy: Hierarchy, row: int, col: int) -> PixelView:
    """Everything the tree figure shows for pixel (``row``, ``col``) of per-level logits ``N_l×H×W``."""
    h, w = logits[0].shape[-2:]
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"pixel ({row}, {col}) is outside the {h}×{w} tile")
    z = [t[:, row, col].float().reshape(1, -1, 1, 1) for t in logits]  # 1×N_l×1×1
    q = [p[0, :, 0, 0].numpy() for p in probabilities(z, "argmax")]
    pp = path_probabilities([p[:, None, None] for p in q], hierarchy)  # P×1×1
    m = [a[:, 0, 0] for a in node_probabilities(pp, hierarchy)]
    if len(z) == 1:  # flat model: the leaf softmax is the path distribution; q of a coarse level = its marginal
        q = m
        scores = np.log(np.clip(pp[:, 0, 0], 1e-30, None))
    else:
        scores = path_scores(z, hierarchy.paths)[0, :, 0, 0].numpy()
    path = jsps(z, hierarchy)[:, :, 0, 0]  # 1×L
    argmax = predict_levels(z, hierarchy, "argmax")[0, :, 0, 0]
    return PixelView(row=int(row), col=int(col), level_probs=q, node_probs=m, path_scores=scores,
                     jsps_path=path[0].tolist(), argmax_path=argmax.tolist(),
                     jsps_index=int(hierarchy.path_id(path[..., None, None]).item()),
                     argmax_is_path=bool(hierarchy.path_id(argmax[:, None, None]).item() >= 0))


def disagreement_mask(data: ExplorerData) -> torch.Tensor:
    """bool H×W: pixels where the per-level argmax differs from the JSPS path at some level."""
    return (data.argmax != data.jsps).any(0)


def pick_pixels(data: ExplorerData, n: int = 3) -> list[tuple[int, int]]:
    """Up to ``n`` pixels worth showing, deterministically: first where argmax and JSPS differ (the one with the
    largest gap between the best path and the argmax combination's score, else any), then the least and the most
    confident JSPS pixels (smallest / largest best path score)."""
    logp = [z.log_softmax(0) for z in data.logits]
    labelled = (data.mask != 255).all(0) if data.mask.ndim == 3 else torch.ones(data.jsps.shape[-2:], dtype=bool)
    if len(logp) == 1:  # flat model: the leaf's log-probability is the path's
        best = logp[0].gather(0, data.jsps[-1][None])[0]
    else:  # H×W score of the JSPS path
        best = sum(lp.gather(0, data.jsps[lvl][None])[0] for lvl, lp in enumerate(logp))
    out: list[tuple[int, int]] = []
    if len(logp) > 1:
        amax = sum(lp.gather(0, data.argmax[lvl][None])[0] for lvl, lp in enumerate(logp))
        differ = disagreement_mask(data)
        if differ.any():
            gap = torch.where(differ, amax - best, torch.full_like(best, -float("inf")))
            out.append(tuple(int(i) for i in np.unravel_index(int(gap.argmax()), gap.shape)))
    for sign in (1.0, -1.0):  # least confident, then most confident; labelled, 5+ px away from earlier picks
        free = labelled.clone()
        for r, c in out:
            free[max(0, r - 4):r + 5, max(0, c - 4):c + 5] = False
        if free.any():
            key = torch.where(free, sign * best, torch.full_like(best, float("inf")))
            out.append(tuple(int(i) for i in np.unravel_index(int(key.argmin()), key.shape)))
    return out[:n]


def _maps(data: ExplorerData, hierarchy: Hierarchy, bands: Sequence[int] | None) -> list[tuple[str, np.ndarray]]:
    from hierars.plotting import colorize, display_rgb

    pal = hierarchy.palettes()[-1]
    L = hierarchy.num_levels
    maps = [("image", display_rgb(data.image, bands))]
    if data.mask.ndim == 3:
        maps.append((f"ground truth L{L}", colorize(data.mask[-1], pal, hierarchy.ignore_index)))
    maps.append((f"JSPS L{L}", colorize(data.jsps[-1], pal)))
    maps.append((f"argmax L{L} (white: argmax ≠ JSPS)", colorize(data.argmax[-1], pal)))
    return maps


def plot_explorer_static(data: ExplorerData, hierarchy: Hierarchy, pixels: Sequence[tuple[int, int]],
                         out_path: str | Path | None = None, bands: Sequence[int] | None = None):
    """The explorer without a frontend: the tile's maps with the pixels marked (A, B, …) above one annotated
    tree per pixel (:func:`hierars.plotting_tree.plot_tree`). Returns the Figure (saved atomically to ``out_path``)."""
    import matplotlib.pyplot as plt

    from hierars.atomic import atomic_savefig
    from hierars.plotting_tree import ARGMAX_COLOR, plot_tree

    if not pixels:
        raise ValueError("plot_explorer_static needs at least one pixel")
    maps = _maps(data, hierarchy, bands)
    L, P = hierarchy.num_levels, len(hierarchy.paths)
    n = len(pixels)
    tree_w = 2.6 * L + 1.2
    fig = plt.figure(figsize=(max(tree_w * n, 3.0 * len(maps)), 4.6 + 0.34 * P + 1.6))
    gs = fig.add_gridspec(2, 1, height_ratios=[4.4, 0.34 * P + 1.6], hspace=0.14)
    top = gs[0].subgridspec(1, len(maps), wspace=0.05)
    bottom = gs[1].subgridspec(1, n, wspace=0.15)
    differ = disagreement_mask(data).numpy()
    for k, (name, img) in enumerate(maps):
        ax = fig.add_subplot(top[k])
        ax.imshow(img, interpolation="nearest")
        if name.startswith("argmax"):
            ax.contour(differ.astype(float), levels=[0.5], colors="white", linewidths=0.8)
        for i, (r, c) in enumerate(pixels):
            ax.plot(c, r, marker="s", ms=9, mfc="none", mec=ARGMAX_COLOR if i == 0 else "black", mew=1.8)
            ax.annotate(chr(65 + i), (c, r), xytext=(5, 5), textcoords="offset points", fontsize=10,
                        fontweight="bold", color="black", bbox={"boxstyle": "round,pad=0.1", "fc": "white",
                                                                "ec": "none", "alpha": 0.8})
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    for i, (r, c) in enumerate(pixels):
        v = pixel_view(data.logits, hierarchy, r, c)
        verdict = "argmax = JSPS" if v.argmax_path == v.jsps_path else (
            "argmax ≠ JSPS" + ("" if v.argmax_is_path else " (argmax is not a path of the tree)"))
        plot_tree(hierarchy, fig.add_subplot(bottom[i]), level_probs=v.level_probs, node_probs=v.node_probs,
                  jsps_path=v.jsps_path, argmax_path=v.argmax_path,
                  title=f"{chr(65 + i)}: pixel (row {r}, col {c}) — {verdict}")
    if data.title:
        fig.suptitle(data.title, fontsize=11)
    if out_path is not None:
        atomic_savefig(fig, out_path, dpi=100, bbox_inches="tight")
    return fig


class _Explorer:
    """The widget: the JSPS map (clickable with ipympl), row / column boxes, and the tree of the chosen pixel."""

    def __init__(self, data: ExplorerData, hierarchy: Hierarchy, bands: Sequence[int] | None,
                 start: tuple[int, int]) -> None:
        import ipywidgets as W

        self.data, self.h = data, hierarchy
        H, Wd = data.jsps.shape[-2:]
        self.row = W.BoundedIntText(value=start[0], min=0, max=H - 1, description="row", layout={"width": "150px"})
        self.col = W.BoundedIntText(value=start[1], min=0, max=Wd - 1, description="col", layout={"width": "150px"})
        button = W.Button(description="show this pixel")
        button.on_click(lambda _: self.show(self.row.value, self.col.value))
        self.tree_out = W.Output()
        self.marker = None
        self.map_widget = self._map(bands)
        self.widget = W.VBox([self.map_widget, W.HBox([self.row, self.col, button]), self.tree_out])
        self.show(*start)

    def _map(self, bands: Sequence[int] | None):
        import importlib.util

        import ipywidgets as W

        maps = _maps(self.data, self.h, bands)[:3]
        if importlib.util.find_spec("ipympl") is None:  # no clickable canvas: a static map, pick by row / col
            import matplotlib.pyplot as plt

            out = W.Output()
            with out:
                fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps), 3.2))
                for ax, (name, img) in zip(axes, maps):
                    ax.imshow(img, interpolation="nearest")
                    ax.set_title(name, fontsize=9)
                plt.show()
            return out
        from ipympl.backend_nbagg import Canvas, FigureManager
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3.2 * len(maps), 3.4))
        canvas = Canvas(fig)
        FigureManager(canvas, 0)
        axes = fig.subplots(1, len(maps))
        self.markers = []
        for ax, (name, img) in zip(axes, maps):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(name + " — click a pixel", fontsize=8)
            self.markers.append(ax.plot([], [], "s", ms=10, mfc="none", mec="red", mew=2)[0])
        fig.tight_layout()

        def on_click(event):
            if event.inaxes is not None and event.xdata is not None:
                self.show(int(round(event.ydata)), int(round(event.xdata)))

        canvas.mpl_connect("button_press_event", on_click)
        self.canvas = canvas
        return canvas

    def show(self, row: int, col: int) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        from hierars.plotting_tree import plot_path_scores, plot_tree

        self.row.value, self.col.value = row, col
        for m in getattr(self, "markers", []):
            m.set_data([col], [row])
        if getattr(self, "canvas", None) is not None:
            self.canvas.draw_idle()
        v = pixel_view(self.data.logits, self.h, row, col)
        with self.tree_out:
            self.tree_out.clear_output(wait=True)
            L, P = self.h.num_levels, len(self.h.paths)
            fig, (a, b) = plt.subplots(1, 2, figsize=(2.6 * L + 9.5, 0.32 * P + 1.6),
                                       gridspec_kw={"width_ratios": [2.6 * L + 1.2, 7.5]})
            plot_tree(self.h, a, level_probs=v.level_probs, node_probs=v.node_probs, jsps_path=v.jsps_path,
                      argmax_path=v.argmax_path, title=f"pixel (row {row}, col {col})")
            plot_path_scores(self.h, v.path_scores, v.jsps_index, v.argmax_path, ax=b, title="path scores")
            fig.tight_layout()
            display(fig)
            plt.close(fig)


def has_interactive_frontend() -> bool:
    """True when this code runs in a Jupyter kernel whose current request came from a client that can interact
    (``allow_stdin``: JupyterLab yes, papermill / nbconvert no); False outside a kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    return bool(getattr(kernel, "_allow_stdin", False))


def explore(data: ExplorerData, hierarchy: Hierarchy, *, interactive: bool | None, out_path: str | Path,
            pixels: Sequence[tuple[int, int]] | None = None, bands: Sequence[int] | None = None) -> Any:
    """The path explorer: writes the static figure to ``out_path`` (always), and returns the widget to display
    when ``interactive`` (JupyterLab), else the static Figure (papermill). ``interactive=None``:
    :func:`has_interactive_frontend`. ``pixels``: default :func:`pick_pixels`."""
    if interactive is None:
        interactive = has_interactive_frontend()
    pixels = list(pixels) if pixels is not None else pick_pixels(data)
    fig = plot_explorer_static(data, hierarchy, pixels, out_path, bands)
    if not interactive:
        return fig
    import matplotlib.pyplot as plt

    plt.close(fig)
    return _Explorer(data, hierarchy, bands, pixels[0]).widget

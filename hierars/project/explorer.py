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
- :func:`bhccm_fusion_trace` hooks a BHCCM head during one forward pass and returns, for one pixel, every term of
  the fusion equations (method-spec §1, Eqs. 1-6) with its number; :func:`fusion_table` lays one level out.
- :func:`hsc_terms`: the parts of the HSC loss (level CE per level, path term) on a batch (Eqs. 16-24).
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
from hierars.losses import hierarchical_ce, hsc_loss, path_kl, path_scores

if TYPE_CHECKING:
    from torch import nn

    from hierars.hierarchy import Hierarchy

__all__ = ["ExplorerData", "PixelView", "explorer_data", "pixel_view", "disagreement_mask", "pick_pixels",
           "plot_explorer_static", "has_interactive_frontend", "explore", "bhccm_fusion_trace", "fusion_table", "hsc_terms"]


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


@torch.no_grad()
def bhccm_fusion_trace(model: nn.Module, image: torch.Tensor, row: int, col: int) -> dict[str, Any]:
    """Every term of the BHCCM fusion for one pixel, read by forward hooks during one forward pass (eval mode).

    Args:
        model: a :func:`hierars.models.build_model` model whose head is :class:`hierars.heads.BHCCM`.
        image: C×H×W. (row, col): the pixel; the head runs at the decoder's resolution ``h×w`` (before the
            logits are upsampled), so the numbers are those of head cell ``(row·h//H, col·w//W)``.

    Returns: ``{"cell": (r, c), "fusion": str, "F": [N_l arrays] level heads, "F_refined": [F_l'] (c2f outputs),
    "Y": [N_l arrays] the head's outputs, "terms": {"F'_l" / "Y_l" (1-based l): [(label, array), ...]}, the
    summands of each equation, and "max_error": max |Σ terms − hooked output| (≈ 0: the equations are the code)}``.
    """
    from hierars.heads import BHCCM

    head = getattr(getattr(model, "segmentation_head", None), "head", None)
    if not isinstance(head, BHCCM):
        raise ValueError(f"bhccm_fusion_trace needs a model with a BHCCM head, got {type(head).__name__}")
    seen: dict[str, Any] = {}
    # the head's input x (the decoder's features); F_l = head.level_logits(x) in eval mode (no dropout) are exactly
    # the level heads' outputs the fusion received, however level_logits computes them
    hooks = [head.register_forward_pre_hook(lambda _m, i: seen.__setitem__("x", i[0]))]
    for kind in ("c2f", "f2c"):
        for key, mb in (getattr(head, f"{kind}_blocks", None) or {}).items():
            hooks.append(mb.register_forward_hook(
                lambda _m, i, o, k=f"{kind}{key}": seen.__setitem__(k, (i[0], o))))
    hooks.append(head.register_forward_hook(lambda _m, i, o: seen.__setitem__("Y", o)))
    was_training = model.training
    model.eval()
    try:
        model(image[None].to(next(iter(model.parameters())).device))
        level_logits = head.level_logits(seen["x"])
    finally:
        model.train(was_training)
        for hk in hooks:
            hk.remove()
    H, W = image.shape[-2:]
    h, w = seen["Y"][0].shape[-2:]
    r, c = row * h // H, col * w // W
    px = lambda t: t[0, :, r, c].double().cpu().numpy()  # noqa: E731
    L = head.num_levels_out
    F = [px(f) for f in level_logits]
    Y = [px(y) for y in seen["Y"]]
    a = lambda p: float(p.detach())  # noqa: E731
    terms: dict[str, list[tuple[str, np.ndarray]]] = {}
    refined = list(F)
    if head.use_c2f:
        for j in range(1, L):
            t = [(f"β{j + 1}·F{j + 1}", a(head.c2f_beta[str(j)]) * F[j])]
            t += [(f"α{k + 1}{j + 1}·MB{k + 1}{j + 1}(F{k + 1})", a(head.c2f_alpha[f"{k}_{j}"]) * px(seen[f"c2f{k}_{j}"][1]))
                  for k in range(j)]
            terms[f"F'{j + 1}"] = t
            refined[j] = sum(v for _, v in t)
    if head.use_f2c:
        for j in range(L - 1):
            t = [(f"β'{j + 1}·F{j + 1}", a(head.f2c_beta[str(j)]) * F[j])]
            t += [(f"α{k + 1}{j + 1}·MB{k + 1}{j + 1}(F'{k + 1})", a(head.f2c_alpha[f"{k}_{j}"]) * px(seen[f"f2c{k}_{j}"][1]))
                  for k in range(j + 1, L)]
            terms[f"Y{j + 1}"] = t
        terms[f"Y{L}"] = [(f"α{L}·F'{L}", a(head.f2c_alpha_fine) * refined[-1]),
                          (f"β'{L}·F{L}", a(head.f2c_beta[str(L - 1)]) * F[-1])]
    err = 0.0
    for lvl in range(L):  # the output of each level is the sum of its last equation's terms
        key = f"Y{lvl + 1}" if f"Y{lvl + 1}" in terms else f"F'{lvl + 1}"
        if key in terms:
            err = max(err, float(np.abs(sum(v for _, v in terms[key]) - Y[lvl]).max()))
    return {"cell": (r, c), "fusion": head.fusion, "F": F, "F_refined": refined, "Y": Y, "terms": terms,
            "max_error": err}


def fusion_table(trace: dict[str, Any], hierarchy: Hierarchy, level: int):
    """pandas DataFrame for one level (0-based) of :func:`bhccm_fusion_trace`: a row per class, a column per term
    of its equations, the head's logit before (F) and after (Y) the fusion and their softmax."""
    import pandas as pd

    n = hierarchy.num_levels
    cols: dict[str, np.ndarray] = {f"F{level + 1} (head)": trace["F"][level]}
    for key in (f"F'{level + 1}", f"Y{level + 1}"):
        for label, v in trace["terms"].get(key, []):
            cols[f"{key}: {label}"] = v
    cols[f"Y{level + 1} (output)"] = trace["Y"][level]
    for name, z in ((f"softmax F{level + 1}", trace["F"][level]), (f"softmax Y{level + 1}", trace["Y"][level])):
        e = np.exp(z - z.max())
        cols[name] = e / e.sum()
    if not 0 <= level < n:
        raise ValueError(f"level must be in 0..{n - 1}, got {level}")
    return pd.DataFrame(cols, index=pd.Index(hierarchy.names[level], name="class")).round(3)


def hsc_terms(logits: Sequence[torch.Tensor], labels: torch.Tensor, hierarchy: Hierarchy, mu: float = 1.0,
              level_weights: Sequence[float] | None = None) -> dict[str, float]:
    """The parts of L_HSC = Σ_l λ_l CE_l + μ · L_path (Eq. 24) on one batch, each from :mod:`hierars.losses`.

    Args: logits (L tensors B×N_l×h×w), labels B×L×H×W. Returns ``{"CE_L1": …, …, "path": L_path,
    "mu": μ, "sum": Σ λ_l CE_l + μ L_path, "L_HSC": hsc_loss(...)}`` (``sum`` and ``L_HSC`` agree to rounding).
    """
    logits = as_level_list(logits)
    L = len(logits)
    lam = [1.0] * L if level_weights is None else [float(x) for x in level_weights]
    out = {}
    for lvl in range(L):
        onehot = [1.0 if k == lvl else 0.0 for k in range(L)]
        out[f"CE_L{lvl + 1}"] = float(hierarchical_ce(logits, labels, weights=onehot, ignore_index=hierarchy.ignore_index))
    out["path"] = float(path_kl(logits, labels, hierarchy, ignore_index=hierarchy.ignore_index))
    out["mu"] = float(mu)
    out["sum"] = sum(w * out[f"CE_L{lvl + 1}"] for lvl, w in enumerate(lam)) + mu * out["path"]
    out["L_HSC"] = float(hsc_loss(logits, labels, hierarchy, mu=mu, level_weights=level_weights,
                                  ignore_index=hierarchy.ignore_index))
    return out

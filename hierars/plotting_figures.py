"""The paper's figures (the figures stage, ``notebooks/07_figures``): per-level bars (HieraRS Tables II-IV), the
ablation grid (VII), transfer (V / VI / X), retrieval (HIR IV / V), and prediction maps of several models at every
level with the label tree drawn as a colour legend (Figs. 9-12). Tables come from :mod:`hierars.plotting_paper`.
Class colours are the tree's (:meth:`hierars.hierarchy.Hierarchy.palettes`): a class has the same colour in every
figure; every figure carries a footer naming its source and seed counts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hierars.atomic import atomic_savefig
from hierars.plotting import colorize, display_rgb
from hierars.plotting_paper import PaperTable, row_run

__all__ = ["plot_levels", "plot_ablation_grid", "plot_jsps", "plot_transfer", "plot_retrieval", "plot_tree_legend",
           "diverse_indices", "plot_prediction_comparison", "FONT"]

#: font sizes of the paper figures (points): readable when a figure is printed at column width
FONT = {"base": 10, "small": 8.5, "title": 11}


def _style(ax, ylabel: str = "mIoU (%)") -> None:
    ax.set_ylabel(ylabel, fontsize=FONT["base"])
    ax.tick_params(labelsize=FONT["small"])
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _footer(fig, text: str) -> None:
    fig.text(0.01, 0.005, text, fontsize=FONT["small"] - 1, color="0.35", ha="left", va="bottom", wrap=True)


def plot_levels(table: PaperTable, out_path: str | Path | None = None):
    """Grouped bars: per-level mIoU (%) of each row (method), levels coarse to fine, half-range error bars and the
    value on each bar; the source and seed counts in a footer. Returns the Figure."""
    import matplotlib.pyplot as plt

    df = table.data
    levels = sorted((c for c in df.columns if re.fullmatch(r"L\d+", c)), key=lambda c: int(c[1:]))
    fig, ax = plt.subplots(figsize=(1.9 * len(levels) + 3.2, 4.2))
    width = 0.8 / max(1, len(df))
    colors = plt.get_cmap("tab10")
    for k, (label, row) in enumerate(df.iterrows()):
        x = np.arange(len(levels)) + (k - (len(df) - 1) / 2) * width
        vals = 100 * row[levels].to_numpy(float)
        err = 100 * np.nan_to_num(row[[f"{c}_hr" for c in levels]].to_numpy(float))
        seeds = "?" if not np.isfinite(row["seeds"]) else int(row["seeds"])
        ax.bar(x, vals, width, yerr=err, capsize=3, color=colors(k), label=f"{label} (n={seeds})")
        for xi, v, e in zip(x, vals, err, strict=True):
            ax.text(xi, v + e + 0.6, f"{v:.1f}", ha="center", va="bottom", fontsize=FONT["small"] - 1)
    ax.set_xticks(np.arange(len(levels)), [f"level {c[1:]}" for c in levels])
    ax.set_xlabel("tree level (1 = coarsest)", fontsize=FONT["base"])
    _style(ax)
    ax.set_title(table.title, fontsize=FONT["title"], wrap=True)
    ax.legend(fontsize=FONT["small"], loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _footer(fig, f"Source: {table.source}. Error bars: half-range over n seeds.")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    if out_path is not None:
        atomic_savefig(fig, out_path, dpi=150)
    return fig


_FUSIONS = [("none", "none"), ("coarse_to_fine", "coarse\n→ fine"), ("fine_to_coarse", "fine\n→ coarse"),
            ("bidirectional", "bi-\ndirectional")]


def plot_ablation_grid(table: PaperTable, runs: Mapping[str, Mapping[str, Any]], out_path: str | Path | None = None):
    """Table VII as heat maps, one panel per level: rows = loss (CE, HSC), columns = fusion mode, each cell the
    mean mIoU (%) ± half-range (blank: run absent); the flat baseline in each panel's title. Returns the Figure."""
    import matplotlib.pyplot as plt

    df = table.data
    levels = sorted((c for c in df.columns if re.fullmatch(r"L\d+", c)), key=lambda c: int(c[1:]))
    flat = [i for i in df.index if runs[row_run(i)]["config"].head == "flat"]
    fig, axes = plt.subplots(1, len(levels), figsize=(4.6 * len(levels), 3.6), squeeze=False)
    grids = {}
    for lvl in levels:
        grid = np.full((2, 4), np.nan)
        text = [["" for _ in range(4)] for _ in range(2)]
        for label, row in df.iterrows():
            cfg = runs[row_run(label)]["config"]
            if cfg.head != "bhccm":
                continue
            r, c = ("ce", "hsc").index(cfg.loss), [f for f, _ in _FUSIONS].index(cfg.fusion)
            grid[r, c] = 100 * row[lvl]
            text[r][c] = f"{100 * row[lvl]:.1f}\n± {100 * row[f'{lvl}_hr']:.1f}"
        grids[lvl] = (grid, text)
    for ax, lvl in zip(axes[0], levels, strict=True):
        grid, text = grids[lvl]
        im = ax.imshow(grid, cmap="viridis", vmin=np.nanmin(grid) if np.isfinite(grid).any() else 0,
                       vmax=np.nanmax(grid) if np.isfinite(grid).any() else 1, aspect="auto")
        for r in range(2):
            for c in range(4):
                if text[r][c]:
                    dark = grid[r, c] < np.nanmean(grid)
                    ax.text(c, r, text[r][c], ha="center", va="center", fontsize=FONT["small"],
                            color="white" if dark else "black")
        ax.set_xticks(range(4), [n for _, n in _FUSIONS], fontsize=FONT["small"])
        ax.set_yticks(range(2), ["CE", "HSC"], fontsize=FONT["base"])
        ax.set_xlabel("BHCCM fusion", fontsize=FONT["base"])
        base = f"; flat {100 * df.loc[flat[0], lvl]:.1f}" if flat else ""
        ax.set_title(f"level {lvl[1:]} mIoU (%){base}", fontsize=FONT["title"])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label("mIoU (%)", fontsize=FONT["small"])
    fig.suptitle(table.title, fontsize=FONT["title"])
    seeds = sorted({int(v) for v in df["seeds"] if np.isfinite(v)})
    _footer(fig, f"Source: {table.source}. Cells: mean ± half-range over {'/'.join(map(str, seeds))} seeds; colour "
                 "scale per panel.")
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    if out_path is not None:
        atomic_savefig(fig, out_path, dpi=150)
    return fig


def plot_jsps(table: PaperTable, out_path: str | Path | None = None):
    """Table IX, one panel per level: for each multi-level run, mIoU (%) with JSPS off (open circle, upper) and on
    (filled, lower), half-range error bars; the off-consistency (share of pixels on a valid path) in the
    labels. Returns the Figure."""
    import matplotlib.pyplot as plt

    df = table.data
    levels = sorted((c for c in df.columns if re.fullmatch(r"L\d+", c)), key=lambda c: int(c[1:]))
    runs = list(dict.fromkeys(row_run(i) for i in df.index))
    off = {row_run(i): r for i, r in df.iterrows() if str(i).endswith("JSPS off")}
    on = {row_run(i): r for i, r in df.iterrows() if str(i).endswith("JSPS on")}
    fig, axes = plt.subplots(1, len(levels), figsize=(3.6 * len(levels) + 2.4, 0.42 * len(runs) + 1.6),
                             squeeze=False, sharey=True)
    y = np.arange(len(runs))
    for ax, lvl in zip(axes[0], levels, strict=True):
        for k, (rows, style) in enumerate(((off, {"mfc": "white"}), (on, {}))):
            x = np.array([100 * rows[r][lvl] for r in runs])
            err = np.array([100 * np.nan_to_num(rows[r][f"{lvl}_hr"]) for r in runs])
            ax.errorbar(x, y + (k - 0.5) * 0.15, xerr=err, fmt="o", color="#1f77b4", capsize=2, ms=5,
                        label=["JSPS off", "JSPS on"][k], **style)
        ax.set_xlabel(f"level {lvl[1:]} mIoU (%)", fontsize=FONT["base"])
        ax.tick_params(labelsize=FONT["small"])
        ax.grid(axis="x", alpha=0.3)
    labels = [f"{r} (off: {100 * off[r]['consistency']:.0f}% consistent, n={int(off[r]['seeds'])})" for r in runs]
    axes[0, 0].set_yticks(y, labels, fontsize=FONT["small"])
    axes[0, 0].invert_yaxis()
    fig.legend(*axes[0, -1].get_legend_handles_labels(), fontsize=FONT["small"], loc="upper right", ncol=2,
               frameon=False, bbox_to_anchor=(0.995, 0.995))
    fig.suptitle(table.title, fontsize=FONT["title"])
    _footer(fig, f"Source: {table.source}. Error bars: half-range over n seeds.")
    fig.tight_layout(rect=(0, 0.06, 1, 0.94))
    if out_path is not None:
        atomic_savefig(fig, out_path, dpi=150)
    return fig


def plot_transfer(tables: Sequence[PaperTable], out_path: str | Path | None = None, baseline: str = "finetune"):
    """One row per transfer experiment: left, per-level mIoU (%) of each variant (half-range error bars); right,
    the paired difference to ``baseline`` at the finest level with its 95 % interval. Returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tables), 2, figsize=(11, 3.4 * len(tables) + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1.7, 1]})
    colors = plt.get_cmap("Set2")
    for (ax, ax_d), t in zip(axes, tables, strict=True):
        df = t.data
        levels = sorted((c for c in df.columns if re.fullmatch(r"L\d+", c)), key=lambda c: int(c[1:]))
        width = 0.8 / max(1, len(df))
        for k, (v, row) in enumerate(df.iterrows()):
            x = np.arange(len(levels)) + (k - (len(df) - 1) / 2) * width
            ax.bar(x, 100 * row[levels].to_numpy(float), width, color=colors(k), capsize=2,
                   yerr=100 * np.nan_to_num(row[[f"{c}_hr" for c in levels]].to_numpy(float)),
                   label=f"{v} (n={int(row['seeds']) if np.isfinite(row['seeds']) else '?'})")
        ax.set_xticks(np.arange(len(levels)), [f"level {c[1:]}" for c in levels])
        _style(ax)
        ax.set_title(t.name.replace("transfer_", "transfer: "), fontsize=FONT["title"])
        ax.set_ylim(0, 100 * float(np.nanmax(df[levels].to_numpy(float))) * 1.25)
        ax.legend(fontsize=FONT["small"] - 0.5, ncol=len(df), loc="upper center", frameon=False,
                  handlelength=1.2, columnspacing=0.8)
        fine = levels[-1]
        key = f"vs_{baseline}_{fine}"
        rows = df[np.isfinite(df[key].astype(float))]
        y = np.arange(len(rows))
        d = 100 * rows[key].to_numpy(float)
        lo, hi = 100 * rows[f"{key}_lo"].to_numpy(float), 100 * rows[f"{key}_hi"].to_numpy(float)
        ax_d.errorbar(d, y, xerr=[d - np.nan_to_num(lo, nan=d), np.nan_to_num(hi, nan=d) - d], fmt="o",
                      color="0.2", capsize=3)
        ax_d.axvline(0, color="0.5", lw=1, ls="--")
        ax_d.set_yticks(y, list(rows.index), fontsize=FONT["small"])
        ax_d.set_xlabel(f"{fine} mIoU − {baseline} (points, 95 % CI)", fontsize=FONT["base"])
        ax_d.tick_params(labelsize=FONT["small"])
        ax_d.grid(axis="x", alpha=0.3)
    fig.suptitle("Transfer (HieraRS Tables V / VI / X): JSPS mIoU on the target tree", fontsize=FONT["title"])
    files = ", ".join(f"reports/metrics/{t.name}.json" for t in tables)
    _footer(fig, f"Source: transfer stage, {files}. Bars: mean ± half-range over n seeds; right: paired-by-seed "
                 "differences to fine-tuning.")
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    if out_path is not None:
        atomic_savefig(fig, out_path, dpi=150)
    return fig


def plot_retrieval(tables: Mapping[str, PaperTable], metric: str = "mAP@10", out_path: str | Path | None = None):
    """HIR Tables IV / V: horizontal bars of ``metric`` (%) per method, one panel per table, predicted proportions
    solid and the ground-truth-proportions oracle hatched. Returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(5.0 * len(tables), 3.9), squeeze=False, sharex=True)
    for ax, (name, t) in zip(axes[0], tables.items(), strict=True):
        df = t.data
        if metric not in df:
            raise ValueError(f"{t.source}: no column {metric!r} (have {[c for c in df.columns if '@' in c]})")
        methods = list(dict.fromkeys(m for _, m in df.index))
        y = np.arange(len(methods))
        for k, (prop, style) in enumerate((("predicted", {}), ("ground truth", {"hatch": "//", "alpha": 0.55}))):
            vals = [100 * df[metric].get((prop, m), np.nan) for m in methods]
            bars = ax.barh(y + (k - 0.5) * 0.38, vals, 0.38, color="#2b83ba", label=f"{prop} proportions",
                           edgecolor="0.2", lw=0.5, **style)
            ax.bar_label(bars, fmt="%.0f", fontsize=FONT["small"] - 2, padding=2)
        ax.set_yticks(y, methods, fontsize=FONT["small"])
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric} (%)", fontsize=FONT["base"])
        ax.tick_params(labelsize=FONT["small"])
        ax.grid(axis="x", alpha=0.3)
        q = int(df["queries"].iloc[0])
        short = {"tableIV": "Table IV", "tableIV_orig": "Table IV, original labels", "tableV": "Table V, residential"}
        ax.set_title(f"{short.get(name, name)} ({q} queries)", fontsize=FONT["title"])
    fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=FONT["small"], loc="lower right", ncol=2,
               frameon=False)
    axes[0, 0].set_xlim(0, 110)
    fig.suptitle(f"Retrieval (HIR Tables IV / V): CBIR vs LCBIR vs HIR, {metric}", fontsize=FONT["title"])
    _footer(fig, "Source: retrieval stage, reports/retrieval/retrieval.csv (one trained segmenter and TKANet: "
                 "1 seed, no interval).")
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    if out_path is not None:
        atomic_savefig(fig, out_path, dpi=150)
    return fig


def plot_tree_legend(ax, hierarchy, palettes: list[np.ndarray] | None = None, fontsize: float | None = None) -> None:
    """Draw the label tree as a colour legend on ``ax``: one column per level (coarse → fine), one row per leaf,
    each node a box in its colour spanning the rows of its leaves (an icicle chart)."""
    from matplotlib.patches import Rectangle

    palettes = palettes or hierarchy.palettes()
    paths = hierarchy.paths.numpy()  # P x L, depth-first: each node's leaves are contiguous rows
    L, P = hierarchy.num_levels, len(paths)
    fs = fontsize or FONT["small"] - 1
    for lvl in range(L):
        for c, name in enumerate(hierarchy.names[lvl]):
            rows = np.flatnonzero(paths[:, lvl] == c)
            top, n = rows.min(), len(rows)
            rgb = np.asarray(palettes[lvl][c], float) / 255.0
            ax.add_patch(Rectangle((lvl, P - top - n), 0.96, n - 0.06, facecolor=rgb, edgecolor="white", lw=0.8))
            light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.55
            ax.text(lvl + 0.06, P - top - n / 2, name.replace("_", " "), va="center", ha="left", fontsize=fs,
                    color="black" if light else "white", clip_on=True)
    ax.set_xlim(0, L)
    ax.set_ylim(0, P)
    ax.set_xticks(np.arange(L) + 0.48, [f"L{lvl + 1}" for lvl in range(L)], fontsize=FONT["small"])
    ax.xaxis.tick_top()
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(f"tree `{hierarchy.name}`", fontsize=FONT["base"], pad=14)


def diverse_indices(dataset, n: int, level: int = -1, ignore_index: int = 255) -> list[int]:
    """``n`` sample indices of ``dataset`` (items with a ``mask`` L x H x W) with the most classes at ``level``
    (ties: earlier first), returned in index order — tiles that show many classes make informative maps."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    counts = []
    for i in range(len(dataset)):
        m = np.asarray(dataset[i]["mask"][level])
        counts.append(len(np.setdiff1d(np.unique(m), [ignore_index])))
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], i))
    return sorted(order[:n])


def plot_prediction_comparison(samples: Sequence[dict], hierarchy, out_path: str | Path | None = None,
                               palettes: list[np.ndarray] | None = None, note: str = ""):
    """HieraRS Figs. 9-12: prediction maps of several models at every level with a tree legend.

    Each sample is ``{"image": C x H x W, "mask": L x H x W, "preds": {model: L x H x W}, "title": str}``. Per
    sample, one row per level (coarse → fine); columns image | ground truth | one per model. Pixels whose labels
    do not form a path of the tree are outlined in white (per-level argmax can produce them). The tree, drawn as a
    colour legend, sits at the right. Returns the Figure."""
    import matplotlib.pyplot as plt
    import torch

    if not samples:
        raise ValueError("plot_prediction_comparison needs at least one sample")
    palettes = palettes or hierarchy.palettes()
    models = list(samples[0]["preds"])
    L, ncol = hierarchy.num_levels, 2 + len(models)
    nrow = L * len(samples)
    cell = 1.75
    fig = plt.figure(figsize=(cell * ncol + 4.9, cell * nrow + 0.9))
    gs = fig.add_gridspec(nrow, ncol + 1, width_ratios=[1] * ncol + [2.8], wspace=0.05, hspace=0.08,
                          left=0.02, right=0.99, bottom=0.7 / (cell * nrow + 0.9), top=1 - 0.5 / (cell * nrow + 0.9))
    for s, sample in enumerate(samples):
        mask = torch.as_tensor(sample["mask"])
        for lvl in range(L):
            r = s * L + lvl
            panels = [("ground truth", mask[lvl], None)] + [
                (m, torch.as_tensor(p)[lvl], (hierarchy.path_id(torch.as_tensor(p).long()) < 0).numpy())
                for m, p in sample["preds"].items()]
            ax = fig.add_subplot(gs[r, 0])
            ax.axis("off")
            if lvl == 0:
                ax.imshow(display_rgb(sample["image"]), interpolation="nearest")
                ax.set_title(sample.get("title", f"sample {s}"), fontsize=FONT["small"])
            for j, (name, lab, invalid) in enumerate(panels):
                ax = fig.add_subplot(gs[r, 1 + j])
                ax.imshow(colorize(lab, palettes[lvl], hierarchy.ignore_index), interpolation="nearest")
                if invalid is not None and invalid.any():
                    ax.contour(invalid.astype(float), levels=[0.5], colors="white", linewidths=0.5)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(name, fontsize=FONT["small"])
                if j == 0:
                    ax.text(0.03, 0.97, f"L{lvl + 1}", transform=ax.transAxes, va="top", ha="left",
                            fontsize=FONT["small"], bbox={"facecolor": "white", "alpha": 0.8, "pad": 1.5, "lw": 0})
    plot_tree_legend(fig.add_subplot(gs[:, -1]), hierarchy, palettes)
    if note:
        fig.text(0.01, 0.005, note, fontsize=FONT["small"] - 1, color="0.35", ha="left", va="bottom", wrap=True)
    if out_path is not None:
        atomic_savefig(fig, out_path, dpi=150)
    return fig

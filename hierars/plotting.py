"""Figures and tables (the plotting layer: notebooks, the project layer and the CLI use it; the core never does).

Class colours are data of the tree (:meth:`hierars.hierarchy.Hierarchy.palettes`: each root a hue, children
shades of their parent's), so a class has the same colour in every figure and map. Ignored pixels (255) are
drawn black. Training curves (per seed and their mean): :mod:`hierars.plotting_curves`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hierars.atomic import atomic_savefig, atomic_write_text
from hierars.plotting_curves import plot_budget_ladder, plot_training_curves  # noqa: F401  (curves live there)

IGNORE_COLOR = (0, 0, 0)


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

    pal = (palettes or hierarchy.palettes())[level]
    return [Patch(color=pal[i] / 255.0, label=n) for i, n in enumerate(hierarchy.names[level])]


def plot_sample_triplets(rows: Sequence[dict], hierarchy, out_path: str | Path | None = None,
                         palettes: list[np.ndarray] | None = None, titles: Sequence[str] | None = None):  # fmt: skip
    """Gallery: one row per sample, images then labels at every level.

    Each row is ``{"images": [(title, H x W x 3 float display image), ...], "mask": L x H x W}``
    (the mask of any grid, e.g. the 4 m label). Per-level legends are drawn under the columns.
    Returns the matplotlib Figure (saved to ``out_path`` when given)."""
    import matplotlib.pyplot as plt

    palettes = palettes or hierarchy.palettes()
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
        atomic_savefig(fig, out_path)
    return fig


def preview_rows(
    data_dir: str | Path, n: int = 3, split: str = "val", size_m: float = 640.0
) -> tuple[list, list]:
    """Rows for :func:`hierars.plotting.plot_sample_triplets` and their titles.

    Synthetic data: the top-left ``size_m`` square of ``n`` scenes in the three sources (RGB true
    colour, GF2 NIR-R-G, S2 B8-B4-B3 false colour) with the 4 m label at every level. Real data:
    ``n`` samples of the prepared dataset (bands 1-3 or the first three) with their masks."""
    import json

    from rasterio.windows import Window

    from hierars.data import build_dataset, load_hierarchy, read_raster
    from hierars.data.synthetic import SOURCES

    base = Path(data_dir)
    manifest = json.loads((base / "manifest.json").read_text())
    sets = manifest["datasets"]
    rows, titles = [], []
    if {"rgb", "gf2", "s2"} <= set(sets):
        splits = json.loads((base / "splits.json").read_text())
        h = load_hierarchy(sets["gf2"]["tree"])
        for d in splits["gf2"][split][:n]:
            scene = Path(d["image"]).stem
            ims = []
            for s, bands, title in (("rgb", (0, 1, 2), "RGB 2 m"), ("gf2", (3, 2, 1), "GF2 4 m (NIR-R-G)"),
                                    ("s2", (6, 2, 1), "S2 10 m (B8-B4-B3)")):  # fmt: skip
                px = int(size_m / SOURCES[s][0])
                a = read_raster(base / "mm5b" / s / "image" / f"{scene}.tif", Window(0, 0, px, px))
                ims.append((title, stretch(a.astype(np.float32), bands, 1, 99)))
            px = int(size_m / 4.0)
            lab = read_raster(base / "mm5b" / "gf2" / "label" / f"{scene}.tif", Window(0, 0, px, px))[0]
            rows.append({"images": ims, "mask": h.encode(lab)})
            titles.append(scene)
        return rows, titles
    name = next(iter(sets))
    ds = build_dataset(base, split, source=name, normalize=False)
    for i in np.linspace(0, len(ds) - 1, n).astype(int):
        s = ds[int(i)]
        bands = (3, 2, 1) if s["image"].shape[0] >= 7 else (0, 1, 2)
        rows.append({"images": [(name, stretch(s["image"].numpy(), bands))], "mask": s["mask"]})
        titles.append(Path(s["meta"]["path"]).stem)
    return rows, titles


# ------------------------------------------------------------------------------------------------------
# Training / evaluation figures and paper-style tables (outputs of hierars.engine; notebooks 02 and 03).
# ------------------------------------------------------------------------------------------------------
#: display bands (R, G, B) by band count: 3 RGB, 4 GF-2 (B, G, R, NIR), 7 Landsat-8 (coastal, B, G, R, ...),
#: 10 Sentinel-2 (B2, B3, B4, ...).
DISPLAY_BANDS = {1: (0, 0, 0), 3: (0, 1, 2), 4: (2, 1, 0), 7: (3, 2, 1), 10: (2, 1, 0)}


def display_rgb(image, bands: Sequence[int] | None = None) -> np.ndarray:
    """C x H x W image (any band count) -> H x W x 3 float display image via :func:`stretch`."""
    c = int(np.asarray(image.shape)[0])
    if bands is None:
        bands = DISPLAY_BANDS.get(c, (min(2, c - 1), min(1, c - 1), 0))
    return stretch(image, bands)


def plot_prediction_levels(samples: Sequence[dict], hierarchy, out_path: str | Path | None = None,
                           palettes: list[np.ndarray] | None = None, bands: Sequence[int] | None = None):
    """Prediction maps at every level: per sample, one row per level (coarse to fine).

    Each sample is ``{"image": C x H x W, "mask": L x H x W, "preds": {name: L x H x W}, "title": str}``;
    columns are image | ground truth | one column per prediction (e.g. "argmax", "JSPS"). Pixels where a
    prediction's labels do not form a valid path of the tree are outlined in white. Returns the Figure.
    """
    import matplotlib.pyplot as plt
    import torch

    if not samples:
        raise ValueError("plot_prediction_levels needs at least one sample")
    palettes = palettes or hierarchy.palettes()
    names = list(samples[0]["preds"])
    L = hierarchy.num_levels
    ncol = 2 + len(names)
    nrow = L * len(samples)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.1 * ncol + 2.2, 2.1 * nrow), squeeze=False)
    for s, sample in enumerate(samples):
        mask = torch.as_tensor(sample["mask"])
        invalid = {n: torch.as_tensor(p).long() for n, p in sample["preds"].items()}
        invalid = {n: (hierarchy.path_id(p) < 0).numpy() for n, p in invalid.items()}
        for lvl in range(L):
            r = s * L + lvl
            ax = axes[r, 0]
            if lvl == 0:
                ax.imshow(display_rgb(sample["image"], bands), interpolation="nearest")
                ax.set_title(sample.get("title", f"sample {s}"), fontsize=8)
            ax.axis("off")
            axes[r, 1].imshow(colorize(mask[lvl], palettes[lvl], hierarchy.ignore_index), interpolation="nearest")
            axes[r, 1].set_ylabel(f"L{lvl + 1}")
            if r == 0 or lvl == 0:
                axes[r, 1].set_title(f"ground truth L{lvl + 1}", fontsize=8)
            for j, n in enumerate(names):
                ax = axes[r, 2 + j]
                ax.imshow(colorize(sample["preds"][n][lvl], palettes[lvl], hierarchy.ignore_index),
                          interpolation="nearest")
                if invalid[n].any():
                    ax.contour(invalid[n].astype(float), levels=[0.5], colors="white", linewidths=0.4)
                if lvl == 0:
                    ax.set_title(f"{n} ({100 * (1 - invalid[n].mean()):.0f}% consistent)", fontsize=8)
            for ax in axes[r, 1:]:
                ax.set_xticks([])
                ax.set_yticks([])
        for lvl in range(L):
            if s == 0:
                axes[lvl, -1].legend(handles=legend_handles(hierarchy, lvl, palettes), loc="center left",
                                     bbox_to_anchor=(1.02, 0.5), fontsize=6, frameon=False,
                                     ncol=1 if hierarchy.num_classes[lvl] <= 10 else 2)
    fig.subplots_adjust(wspace=0.04, hspace=0.2)
    if out_path is not None:
        atomic_savefig(fig, out_path)
    return fig


def format_pm(mean: float, half_range: float | None = None, scale: float = 100.0, digits: int = 2) -> str:
    """``"73.39 ± 0.50"`` (values scaled, e.g. fractions to %); ``"—"`` for NaN/None."""
    if mean is None or not np.isfinite(mean):
        return "—"
    text = f"{scale * mean:.{digits}f}"
    if half_range is not None and np.isfinite(half_range):
        text += f" ± {scale * half_range:.{digits}f}"
    return text


_FUSION_LABEL = {"none": "without fusion", "coarse_to_fine": "coarse-to-fine",
                 "fine_to_coarse": "fine-to-coarse", "bidirectional": "bidirectional"}


def _method_label(cfg) -> str:
    if cfg.head == "flat":
        return "flat (lifted)"
    if cfg.head == "hssn":
        return "HSSN (tree-min)"
    head = "BHCCM" if cfg.head == "bhccm" else "independent heads"
    fusion = f" ({_FUSION_LABEL[cfg.fusion]})" if cfg.head == "bhccm" else ""
    return f"{head}{fusion} + {cfg.loss.upper()}"


def _level_row(metrics: dict, suffix: str, num_levels: int) -> dict[str, float]:
    row: dict[str, float] = {}
    for lvl in range(num_levels, 0, -1):  # fine first, as in the paper (L3, L2, L1)
        row[f"L{lvl}"] = metrics.get(f"mIoU_L{lvl}{suffix}", float("nan"))
        row[f"L{lvl}_hr"] = metrics.get(f"mIoU_L{lvl}{suffix}_hr", float("nan"))
    row["consistency"] = metrics.get(f"consistency{suffix}", float("nan"))
    row["consistency_hr"] = metrics.get(f"consistency{suffix}_hr", float("nan"))
    row["seeds"] = metrics.get("n_seeds", float("nan"))
    return row


def paper_tables(runs: dict, num_levels: int | None = None):
    """Paper-style tables from ``hierars.engine.collect_run_metrics`` output (fractions, mean and half-range).

    ``num_levels`` defaults to the deepest ``mIoU_L<l>`` key found.
    Returns ``{name: DataFrame}`` with numeric columns ``L3, L3_hr, L2, ..., consistency, consistency_hr,
    seeds`` and index = row label:

    - ``"main_jsps"`` (Tables II-IV): flat (lifted), HSSN (its own joint-softmax inference) and every
      BHCCM/independent run trained with HSC, decoded with JSPS;
    - ``"main_argmax"``: the same rows decoded per level with argmax (HSSN and flat: unchanged rule);
    - ``"ablation"`` (Table VII, no JSPS): 0 flat baseline, 1-4 BHCCM fusion none / c2f / f2c / bi with CE,
      5-8 the same with HSC (rows with no run are left out);
    - ``"jsps"`` (Table IX): every multi-level (BHCCM / independent) run, JSPS off and on.
    """
    import re

    import pandas as pd

    if num_levels is None:
        found = [int(k[6:]) for item in runs.values() for k in item["metrics"] if re.fullmatch(r"mIoU_L\d+", k)]
        num_levels = max(found, default=0)
    main_j, main_a, abl, jsps_rows = {}, {}, {}, {}
    for run, item in runs.items():
        cfg, m = item["config"], item["metrics"]
        label = f"{_method_label(cfg)} [{run}]"
        if cfg.head == "flat":
            main_j[label] = _level_row(m, "", num_levels)
            main_a[label] = _level_row(m, "", num_levels)
        elif cfg.head == "hssn":
            native = "_hssn" if any(k.endswith("_hssn") for k in m) else "_jsps"
            main_j[label] = _level_row(m, native, num_levels)
            main_a[label] = _level_row(m, "", num_levels)
        elif cfg.loss == "hsc":
            main_j[label + " + JSPS"] = _level_row(m, "_jsps", num_levels)
            main_a[label] = _level_row(m, "", num_levels)
        if cfg.head in ("bhccm", "independent"):
            jsps_rows[f"{label}, JSPS off"] = _level_row(m, "", num_levels)
            jsps_rows[f"{label}, JSPS on"] = _level_row(m, "_jsps", num_levels)
    order = [("flat", None, "ce")] + [("bhccm", f, loss) for loss in ("ce", "hsc")
                                      for f in ("none", "coarse_to_fine", "fine_to_coarse", "bidirectional")]
    for idx, (head, fusion, loss) in enumerate(order):
        for run, item in runs.items():
            cfg = item["config"]
            if cfg.head == head and (fusion is None or cfg.fusion == fusion) and cfg.loss == loss:
                name = "flat baseline" if head == "flat" else f"BHCCM ({_FUSION_LABEL[fusion]}) + {loss.upper()}"
                abl[f"{idx} {name} [{run}]"] = _level_row(item["metrics"], "", num_levels)
                break
    return {name: pd.DataFrame.from_dict(rows, orient="index")
            for name, rows in (("main_jsps", main_j), ("main_argmax", main_a), ("ablation", abl),
                               ("jsps", jsps_rows))}


def format_table(df, digits: int = 2):
    """Numeric paper table -> strings ``mean ± half-range`` in % (columns L3, L2, L1, consistency)."""
    import pandas as pd

    cols = [c for c in df.columns if not c.endswith("_hr") and c != "seeds"]
    out = pd.DataFrame(index=df.index)
    for c in cols:
        hr = df[f"{c}_hr"] if f"{c}_hr" in df else [None] * len(df)
        title = f"{c} mIoU (%)" if c.startswith("L") else f"{c} (%)"
        out[title] = [format_pm(v, h, digits=digits) for v, h in zip(df[c], hr, strict=True)]
    if "seeds" in df:
        out["seeds"] = [("—" if not np.isfinite(v) else str(int(v))) for v in df["seeds"]]
    return out


def save_tables(tables: dict, out_dir: str | Path, titles: dict | None = None) -> Path:
    """Write every table as ``<name>.csv`` (numeric) and all of them in one ``tables.md`` (formatted)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for name, df in tables.items():
        atomic_write_text(out_dir / f"{name}.csv", df.to_csv(index_label="row"))
        title = (titles or {}).get(name, name)
        body = format_table(df).to_markdown() if len(df) else "_no runs_"
        parts.append(f"### {title}\n\n{body}\n")
    md = out_dir / "tables.md"
    atomic_write_text(md, "\n".join(parts))
    return md


def plot_level_bars(table, out_path: str | Path | None = None, title: str = ""):
    """Grouped bars of per-level mIoU (%) with half-range error bars, one group per table row."""
    import matplotlib.pyplot as plt

    levels = [c for c in table.columns if c.startswith("L") and not c.endswith("_hr")]
    n = len(table)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * n + 2), 3.6))
    width = 0.8 / max(1, len(levels))
    x = np.arange(n)
    for k, lvl in enumerate(levels):
        err = table.get(f"{lvl}_hr")
        ax.bar(x + (k - (len(levels) - 1) / 2) * width, 100 * table[lvl].to_numpy(dtype=float), width,
               yerr=None if err is None else 100 * err.fillna(0).to_numpy(dtype=float), capsize=2, label=lvl)
    ax.set_xticks(x)
    import re

    ax.set_xticklabels([re.sub(r" \[[^\]]*\]", "", str(i)) for i in table.index], rotation=25, ha="right",
                       fontsize=7)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    if out_path is not None:
        atomic_savefig(fig, out_path)
    return fig


def plot_retrieval_gallery(query_image, results: dict, out_path: str | Path | None = None, query_title: str = "query",
                           bands: Sequence[int] | None = None):
    """Retrieval gallery: one row per method, the query (``C × H × W``) then its ranked results; ``results``: method
    → list of ``(C × H × W image, relevant, caption)``. Relevant results framed green, others red. Returns the Figure."""
    import matplotlib.pyplot as plt

    ncol = 1 + max((len(v) for v in results.values()), default=0)
    fig, axes = plt.subplots(max(1, len(results)), ncol, figsize=(1.55 * ncol, 1.75 * len(results) + 0.3), squeeze=False)
    for r, (name, items) in enumerate(results.items()):
        axes[r, 0].imshow(display_rgb(query_image, bands))
        axes[r, 0].set_title(query_title, fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=8)
        axes[r, 0].set_xlabel(f"{sum(bool(it[1]) for it in items)}/{len(items)} relevant", fontsize=7)
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if 1 <= c <= len(items):
                img, rel, caption = items[c - 1]
                ax.imshow(display_rgb(img, bands))
                ax.set_title(f"{c}. {caption}", fontsize=6)
                for side in ax.spines.values():
                    side.set_edgecolor("#1a9641" if rel else "#d7191c")
                    side.set_linewidth(3.0)
            elif c:
                ax.axis("off")
    fig.tight_layout()
    if out_path is not None:
        atomic_savefig(fig, out_path)
    return fig

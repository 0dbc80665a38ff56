"""The model card: a short Markdown ``MODEL_CARD.md`` next to a trained run (``models/<run>/``).

It says what the model was trained on (source, bands and their normalisation, tile size, sample counts), its tree
(levels, class counts, class names), its settings, and its validation metrics per level for every seed with their
mean and half-range, and how to use it (``hierars predict`` / :func:`hierars.load_model`). Written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hierars.atomic import atomic_write_text
from hierars.hierarchy import Hierarchy
from hierars.training.config import TrainConfig

__all__ = ["model_card", "write_model_card"]

#: settings shown in the card (the checkpoint holds all of them)
CARD_SETTINGS = ("arch", "encoder", "head", "fusion", "decoder_channels", "loss", "mu", "iterations", "batch_size",
                 "optimizer", "lr", "weight_decay", "augment", "dropout", "pretrained")


def _pct(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "–"
    return "–" if not math.isfinite(f) else f"{100 * f:.1f}"


def _metric_keys(metrics: Mapping[str, Any], levels: int) -> list[tuple[str, str]]:
    """(column title, metric key): per-level mIoU with JSPS where evaluated, else argmax; then consistency."""
    keys = []
    for suffix, label in (("_jsps", "JSPS"), ("", "argmax")):
        if f"mIoU_L1{suffix}" in metrics:
            keys += [(f"mIoU L{lv} ({label})", f"mIoU_L{lv}{suffix}") for lv in range(1, levels + 1)]
            keys.append((f"consistency ({label})", f"consistency{suffix}"))
    return keys


def model_card(run: str, cfg: TrainConfig, hierarchy: Hierarchy, meta: Mapping[str, Any],
               per_seed: Sequence[Mapping[str, Any]], aggregate: Mapping[str, Any], seeds: Sequence[int]) -> str:
    """The card's Markdown text.

    Args:
        meta: the checkpoint's self-contained keys (:func:`hierars.training.run_metadata`).
        per_seed: each seed's final metrics (:func:`hierars.training.fit`); aggregate: their mean / ``_hr``.
    """
    data, bands, norm = dict(meta.get("data") or {}), dict(meta.get("bands") or {}), dict(meta.get("normalisation") or {})
    n_bands = int((meta.get("model_spec") or {}).get("in_channels") or len(norm.get("mean") or bands.get("names") or []))
    names = bands.get("names") or [f"band {i + 1} (unnamed)" for i in range(n_bands)]
    lines = [f"# Model card: `{run}`", "",
             f"Hierarchical segmentation model trained by hierars {meta.get('hierars_version', '?')} "
             f"({cfg.head} head, {cfg.loss} loss; {len(seeds)} seed(s): {', '.join(map(str, seeds))}).", "",
             "## Use", ""]
    if meta.get("model_spec") is not None:
        lines += ["From this folder:", "", "```bash",
                  f"hierars predict seed{seeds[0]}/ckpt.pt image.tif -o out/   # per-level GeoTIFFs + QGIS styles",
                  "```", "",
                  f"or `hierars.load_model(\"seed{seeds[0]}/ckpt.pt\").predict(image)` in Python. The checkpoint holds "
                  "the tree, the bands and the normalisation below: give raw images with these bands."]
    else:
        lines += ["Built by a custom builder (e.g. a TransLU variant): `hierars.load_model` cannot rebuild it; load "
                  "the weights into the model built the same way."]
    lines += ["", "## Data", "",
             f"- source: `{data.get('source')}`" + (f" (`{data['data_dir']}`)" if data.get("data_dir") else ""),
             f"- tiles: {str(data['tile_size']) + ' px' if data.get('tile_size') else 'whole rasters'}; "
             f"training samples: {data.get('n_train')}"
             + (f" tiles of {data['n_train_rasters']} rasters" if data.get("n_train_rasters") else "")
             + f"; validation samples: {data.get('n_val')}"
             + (f" tiles of {data['n_val_rasters']} rasters" if data.get("n_val_rasters") else ""),
             f"- {n_bands} bands, in this order"
             + (f" (source bands {bands['indexes']})" if bands.get("indexes") else "")
             + (f"; nodata {bands['nodata']}" if bands.get("nodata") is not None else "") + ":", "",
             "| band | name | mean | std |", "|---|---|---|---|"]
    mean, std = norm.get("mean"), norm.get("std")
    for i, name in enumerate(names):
        m = "–" if mean is None else f"{mean[i]:.6g}"
        s = "–" if std is None else f"{std[i]:.6g}"
        lines.append(f"| {i + 1} | {name} | {m} | {s} |")
    if mean is None:
        lines += ["", "No normalisation: the model takes raw band values."]
    lines += ["", f"## Tree: `{hierarchy.name}`", "",
              f"{hierarchy.num_levels} levels, " + " / ".join(map(str, hierarchy.num_classes))
              + " classes (coarse to fine); the whole tree is stored in the checkpoint.", ""]
    lines += [f"- L{lv + 1}: " + ", ".join(hierarchy.names[lv]) for lv in range(hierarchy.num_levels)]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | `{getattr(cfg, k)!r}` |" for k in CARD_SETTINGS]
    cols = _metric_keys(per_seed[0] if per_seed else {}, hierarchy.num_levels)
    lines += ["", "## Validation metrics (%)", "",
              "| seed | " + " | ".join(t for t, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for seed, m in zip(seeds, per_seed):
        lines.append(f"| {seed} | " + " | ".join(_pct(m.get(k)) for _, k in cols) + " |")
    lines.append("| mean ± half-range | " + " | ".join(
        f"{_pct(aggregate.get(k))} ± {_pct(aggregate.get(k + '_hr'))}" for _, k in cols) + " |")
    lines += ["", "mIoU is the mean over the classes present in the validation labels or predictions (as mmseg); "
              "JSPS picks the best valid root-to-leaf path, so its consistency is 100 %.", ""]
    return "\n".join(lines)


def write_model_card(path: str | os.PathLike, *args: Any, **kwargs: Any) -> Path:
    """:func:`model_card` written atomically to ``path`` (``models/<run>/MODEL_CARD.md``)."""
    path = Path(path)
    atomic_write_text(path, model_card(*args, **kwargs))
    return path

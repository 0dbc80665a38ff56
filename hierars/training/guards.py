"""Checks the training loop runs on what it is fed: finite batches, a checkpoint that matches the tree and model.

Each raises an error that names the file (a batch's image files, the checkpoint) and what disagrees, instead of
a deep traceback from torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hierars.hierarchy import Hierarchy

__all__ = ["batch_files", "check_finite_batch", "check_checkpoint_tree", "load_state_checked", "link_or_remove"]

log = logging.getLogger(__name__)


def batch_files(meta: Sequence[Mapping[str, Any]] | None, rows: Sequence[int] | None = None) -> str:
    """The image files (and windows) of a batch's samples, from their ``meta`` dicts, as one string.

    Samples without a ``path`` are named by their ``index`` or position in the batch.
    """
    if not meta:
        return "(the samples carry no meta: unknown files)"
    out = []
    for i in rows if rows is not None else range(len(meta)):
        m = meta[i] if i < len(meta) else {}
        name = str(m.get("path") or (f"sample index {m['index']}" if "index" in m else f"batch row {i}"))
        win = m.get("window")
        if win is not None:
            r, c, h, w = (int(v) for v in torch.as_tensor(win).tolist())
            name += f" [rows {r}:{r + h}, cols {c}:{c + w}]"
        out.append(name)
    return ", ".join(out)


def check_finite_batch(image: torch.Tensor, meta: Sequence[Mapping[str, Any]] | None, step: int, seed: int) -> None:
    """Raise ``FloatingPointError`` if the input batch (B×C×H×W) holds NaN / inf; names the samples' files and bands."""
    finite = torch.isfinite(image)
    if bool(finite.all()):
        return
    bad = (~finite).flatten(2).any(-1)  # B×C
    rows = [int(r) for r in torch.nonzero(bad.any(1)).flatten()]
    bands = sorted({int(c) + 1 for c in torch.nonzero(bad[rows].any(0)).flatten()})
    raise FloatingPointError(
        f"NaN / inf in the input batch at iteration {step} (seed {seed}), band(s) {bands} (1-based), in: "
        f"{batch_files(meta, rows)}. Set the rasters' nodata value, or fix the files.")


def check_checkpoint_tree(saved: Mapping[str, Any], hierarchy: Hierarchy, path: str | os.PathLike) -> None:
    """Raise ``ValueError`` if checkpoint ``saved`` (read from ``path``) was trained for another tree."""
    tree = saved.get("hierarchy") or {}
    classes = tuple(tree.get("num_classes", hierarchy.num_classes))
    if classes != tuple(hierarchy.num_classes):
        raise ValueError(f"{path} was trained for tree {tree.get('name', '?')!r} with classes {classes} per level; "
                         f"this run uses tree {hierarchy.name!r} with {tuple(hierarchy.num_classes)}")


def load_state_checked(obj: nn.Module | Any, state: Mapping[str, Any], path: str | os.PathLike, what: str) -> None:
    """``obj.load_state_dict(state)``; a model or optimiser of another shape raises ``ValueError`` naming ``path``
    and the first disagreeing keys (not torch's size-mismatch traceback)."""
    try:
        obj.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as err:
        detail = str(err).replace("\n\t", "; ").splitlines()
        summary = "; ".join(line.strip() for line in detail[:6] if line.strip())
        raise ValueError(f"{path}: its {what} state does not fit this run's {what} (another architecture, band "
                         f"count or tree?): {summary[:800]}") from None


def link_or_remove(final: Path, work: Path) -> None:
    """Make ``work`` a hard link to ``final`` (the finished checkpoint, no extra space), else delete ``work``."""
    tmp = work.with_name(f".{work.name}.link")
    try:
        work.parent.mkdir(parents=True, exist_ok=True)  # no periodic checkpoint may have made it yet
        tmp.unlink(missing_ok=True)
        os.link(final, tmp)
        os.replace(tmp, work)
    except OSError as err:  # another file system, or links not supported
        log.info("could not link %s to %s (%s); removing the resume checkpoint", work, final, err)
        tmp.unlink(missing_ok=True)
        work.unlink(missing_ok=True)

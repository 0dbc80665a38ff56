"""Class-proportion vectors (stage 2 / LCBIR features) from a hierarchical segmenter.

An image's proportion vector is the concatenation, coarse → fine, of its per-level class
distributions: block ``l`` has ``N_l`` entries that sum to 1 (fraction of the valid pixels predicted as
each class of level ``l``). The archive index always stores **all levels** (``P = Σ_l N_l`` columns); the
search picks a level, or all levels with per-level weights, through :class:`ProportionLayout`, so the
level is a query-time choice and the archive is never segmented again.

How labels are decided (``mode``):

- ``"jsps"`` (default) — one valid root-to-leaf path per pixel (:func:`hierars.jsps`); the coarse blocks
  are then exactly the sums of their children's proportions. With consistent blocks, the all-level
  weighted Manhattan distance ``Σ_l w_l ||p_l − q_l||_1`` is the tree-Wasserstein distance (earth
  mover's distance on the label tree with edge length ``w_l`` above level ``l``): moving mass between two
  siblings costs less than between two different roots — something a flat class list (HIR's) cannot say.
- ``"argmax"`` — independent per-level argmax (HIR's "pixel class distribution" per level).
- ``"soft"`` — mean softmax probability per level (no hard decision; coarse blocks of a flat head are
  the sums of their leaves' probabilities).

A flat head (one finest-level output) is lifted to every level by the tree in every mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hierars.retrieval.distances import check_weights

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["MODES", "ProportionLayout", "proportions_from_labels", "proportions_from_logits", "segment_proportions"]

MODES = ("jsps", "argmax", "soft")


class ProportionLayout:
    """Column layout of all-level proportion vectors: level sizes and class names.

    Args:
        num_classes: ``N_l`` per level, coarse → fine.
        names: ``names[l][c]``, class names per level.
    """

    def __init__(self, num_classes: Sequence[int], names: Sequence[Sequence[str]]) -> None:
        self.num_classes = tuple(int(n) for n in num_classes)
        self.names = [list(map(str, lv)) for lv in names]
        if not self.num_classes or any(n < 1 for n in self.num_classes):
            raise ValueError(f"num_classes must be positive per level, got {self.num_classes}")
        if [len(lv) for lv in self.names] != list(self.num_classes):
            raise ValueError(f"names per level {[len(lv) for lv in self.names]} do not match {self.num_classes}")
        self.offsets = tuple(int(x) for x in np.cumsum((0,) + self.num_classes))

    @classmethod
    def from_hierarchy(cls, hierarchy: Hierarchy) -> ProportionLayout:
        return cls(hierarchy.num_classes, hierarchy.names)

    @property
    def num_levels(self) -> int:
        return len(self.num_classes)

    @property
    def size(self) -> int:
        """``P = Σ_l N_l``."""
        return self.offsets[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"num_classes": list(self.num_classes), "names": self.names}

    def _level(self, level: int) -> int:
        if not isinstance(level, (int, np.integer)) or not -self.num_levels <= level < self.num_levels:
            raise ValueError(f"level must be 'all' or an int in [-{self.num_levels}, {self.num_levels - 1}], "
                             f"got {level!r}")
        return int(level) % self.num_levels

    def columns(self, level: int | str = "all") -> slice:
        """Columns of the stored vectors used at ``level`` (an int, negative from the end, or ``"all"``)."""
        if level == "all":
            return slice(0, self.size)
        lv = self._level(level)  # type: ignore[arg-type]
        return slice(self.offsets[lv], self.offsets[lv + 1])

    def column_names(self, level: int | str = "all") -> list[str]:
        """``"<level>:<name>"`` for every column selected by ``level``."""
        levels = range(self.num_levels) if level == "all" else [self._level(level)]  # type: ignore[arg-type]
        return [f"{lv}:{n}" for lv in levels for n in self.names[lv]]

    def weights(
        self,
        level: int | str = "all",
        class_weights: Sequence[float] | np.ndarray | Mapping[str, float] | None = None,
        level_weights: Sequence[float] | None = None,
    ) -> tuple[slice, np.ndarray]:
        """Columns and weight vector of the weighted Manhattan distance at ``level``.

        Args:
            level: an int (one level) or ``"all"`` (every level concatenated).
            class_weights: per-class weights ``w_i`` of HIR Eq. (1): a vector with one entry per selected
                column (``N_l`` for one level, ``P`` for ``"all"``), or a mapping ``{name: w}`` (others
                1). A name applies at every selected level that has it; ``"<level>:<name>"`` pins one
                level, e.g. ``{"building": 4}`` or ``{"2:rural_residential": 2}``.
            level_weights: with ``level="all"``, one multiplier per level (default all 1).

        Returns:
            ``(columns, w)``: a slice of the stored columns and the float32 weights for them.

        Raises:
            ValueError: weights of the wrong length, unknown class names, level weights without
                ``level="all"`` or of the wrong length.
        """
        cols = self.columns(level)
        n = cols.stop - cols.start
        what = f"proportion vectors at level {level}" if level != "all" else "all-level proportion vectors"
        if isinstance(class_weights, Mapping):
            names = self.column_names(level)
            w = np.ones(n, dtype=np.float32)
            for key, val in class_weights.items():
                key = str(key)
                hit = [i for i, cn in enumerate(names) if cn == key or cn.split(":", 1)[1] == key]
                if not hit:
                    known = sorted({cn.split(":", 1)[1] for cn in names})
                    raise ValueError(f"class weight for unknown class {key!r} at level {level}; classes: {known}")
                w[hit] = float(val)
            w = check_weights(w, n, what)
        else:
            w = check_weights(class_weights, n, what)
        if level_weights is not None:
            if level != "all":
                raise ValueError("level_weights apply to level='all' only")
            lw = np.asarray(level_weights, dtype=np.float32)
            if lw.shape != (self.num_levels,):
                raise ValueError(f"level_weights must have one entry per level ({self.num_levels}), got "
                                 f"{lw.shape[0] if lw.ndim == 1 else lw.shape}")
            if not np.isfinite(lw).all() or (lw < 0).any():
                raise ValueError(f"level_weights must be finite and >= 0, got {lw.tolist()}")
            w = w * np.repeat(lw, self.num_classes)
        return cols, w


def proportions_from_labels(labels: torch.Tensor, num_classes: Sequence[int], ignore_index: int = 255,
                            denominator: str = "valid") -> np.ndarray:
    """Per-level class proportions of label maps.

    Args:
        labels: LongTensor ``B × L × H × W`` (level ``l`` in ``[0, N_l)`` or ``ignore_index``).
        num_classes: ``N_l`` per level.
        denominator: ``"valid"`` — fractions of the labelled pixels (each block sums to 1); ``"all"`` —
            fractions of all pixels (ignored pixels count in the total; blocks sum to the labelled share).
            Predictions have no ignored pixels, so this only matters for ground-truth labels.

    Returns:
        float32 ``B × Σ_l N_l`` (all zeros for an image without valid pixels).
    """
    if denominator not in ("valid", "all"):
        raise ValueError(f"denominator must be 'valid' or 'all', got {denominator!r}")
    labels = torch.as_tensor(labels)
    if labels.ndim != 4 or labels.shape[1] != len(num_classes):
        raise ValueError(f"labels must be B×{len(num_classes)}×H×W, got shape {tuple(labels.shape)}")
    b = labels.shape[0]
    blocks = []
    for lv, n in enumerate(num_classes):
        y = labels[:, lv].reshape(b, -1).long()
        valid = y != ignore_index
        counts = torch.zeros(b, n + 1, dtype=torch.float64, device=y.device)
        counts.scatter_add_(1, torch.where(valid, y, n), torch.ones_like(y, dtype=torch.float64))
        counts = counts[:, :n]
        total = counts.sum(1, keepdim=True) if denominator == "valid" else torch.full_like(counts[:, :1], y.shape[1])
        blocks.append(torch.where(total > 0, counts / total.clamp_min(1), torch.zeros_like(counts)))
    return torch.cat(blocks, 1).float().cpu().numpy()


def _leaf_to_level(hierarchy: Hierarchy, level: int, device: torch.device) -> torch.Tensor:
    """One-hot matrix ``N_L × N_level`` mapping each leaf to its ancestor at ``level``."""
    paths = hierarchy.paths.to(device)
    m = torch.zeros(hierarchy.num_classes[-1], hierarchy.num_classes[level], device=device)
    m[paths[:, -1], paths[:, level]] = 1.0
    return m


def proportions_from_logits(logits: Sequence[torch.Tensor] | torch.Tensor, hierarchy: Hierarchy,
                            mode: str = "jsps") -> np.ndarray:
    """Proportion vectors from a segmenter's output.

    Args:
        logits: the model output, a list of ``L`` tensors ``B × N_l × h × w`` coarse → fine, or one
            finest-level tensor / 1-element list (flat head).
        hierarchy: the label tree of the model.
        mode: ``"jsps"``, ``"argmax"`` or ``"soft"`` (module docstring).

    Returns:
        float32 ``B × Σ_l N_l``.
    """
    from hierars import jsps

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    zs = [logits] if isinstance(logits, torch.Tensor) else list(logits)
    nc = tuple(hierarchy.num_classes)
    got = tuple(int(z.shape[1]) for z in zs)
    if not (got == nc or (len(zs) == 1 and got[0] == nc[-1])):
        raise ValueError(f"segmenter outputs channels {got}; the tree {hierarchy.name!r} has classes {nc} "
                         "(is this the segmenter of that tree?)")
    flat = len(zs) == 1 and len(nc) > 1
    if mode == "soft":
        if flat:
            leaf = zs[0].float().softmax(1).mean((2, 3))  # B × N_L
            blocks = [leaf @ _leaf_to_level(hierarchy, lv, leaf.device) for lv in range(len(nc))]
        else:
            blocks = [z.float().softmax(1).mean((2, 3)) for z in zs]
        return torch.cat(blocks, 1).cpu().numpy().astype(np.float32)
    if mode == "jsps" or flat:
        labels = jsps(zs, hierarchy)
    else:
        size = max((tuple(z.shape[-2:]) for z in zs), key=lambda s: s[0] * s[1])
        labels = torch.stack([torch.nn.functional.interpolate(z.float(), size=size, mode="bilinear",
                                                              align_corners=False).argmax(1)
                              if tuple(z.shape[-2:]) != size else z.argmax(1) for z in zs], 1)
    return proportions_from_labels(labels, nc, hierarchy.ignore_index)


@torch.no_grad()
def segment_proportions(model: nn.Module, images: torch.Tensor | np.ndarray, hierarchy: Hierarchy,
                        mode: str = "jsps", batch_size: int = 8) -> np.ndarray:
    """Run a hierarchical segmenter over images and return their proportion vectors.

    Args:
        model: a segmenter returning a list of ``B × N_l × h × w`` logits (:func:`hierars.build_model`);
            put in eval mode for the call and restored afterwards.
        images: ``B × C × H × W`` (normalised the way the segmenter was trained) or ``C × H × W``.
        hierarchy: the model's label tree.
        mode: ``"jsps"`` | ``"argmax"`` | ``"soft"``.
        batch_size: images per forward pass.

    Returns:
        float32 ``B × Σ_l N_l``.
    """
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"images must be B×C×H×W or C×H×W, got shape {tuple(x.shape)}")
    _check_bands(model, x.shape[1], "segmenter")
    device = next(iter(model.parameters())).device
    was_training = model.training
    model.eval()
    try:
        out = [proportions_from_logits(model(x[i: i + batch_size].to(device)), hierarchy, mode)
               for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(out, 0) if out else np.zeros((0, sum(hierarchy.num_classes)), np.float32)


def _check_bands(model: nn.Module, bands: int, what: str) -> None:
    """Raise a clear error when ``bands`` differs from the in-channels of the model's first conv."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if m.in_channels != bands and m.groups == 1:
                raise ValueError(f"the image has {bands} bands but the {what} expects {m.in_channels}")
            return

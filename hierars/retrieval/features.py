"""Stage-1 embeddings and stage-2 proportion vectors of raw images (what an index stores per image)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hierars.retrieval.proportions import _check_bands, segment_proportions
from hierars.retrieval.tkanet import embed

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["compute_features", "batches"]


def batches(images: Iterable[Any], batch_size: int) -> Iterable[torch.Tensor]:
    """Stack consecutive same-shape ``C×H×W`` images into batches of up to ``batch_size``."""
    buf: list[torch.Tensor] = []
    for im in images:
        t = im if isinstance(im, torch.Tensor) else torch.from_numpy(np.asarray(im, dtype=np.float32))
        t = t.float()
        if t.ndim != 3:
            raise ValueError(f"archive images must be C×H×W each, got shape {tuple(t.shape)}")
        if buf and (t.shape != buf[0].shape or len(buf) == batch_size):
            yield torch.stack(buf)
            buf = []
        buf.append(t)
    if buf:
        yield torch.stack(buf)


def compute_features(
    images: torch.Tensor | np.ndarray,
    embedder: nn.Module,
    segmenter: nn.Module,
    hierarchy: Hierarchy,
    mode: str = "jsps",
    seg_mean: Sequence[float] | None = None,
    seg_std: Sequence[float] | None = None,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage-1 embeddings and stage-2 proportion vectors of raw images.

    Args:
        images: ``B × C × H × W`` raw band values (one size), or one ``C × H × W``.
        embedder: TKANet (normalises its own input) or any module ``B×C×H×W → B×D``.
        segmenter: hierarchical segmenter of ``hierarchy``.
        mode: proportion mode (``"jsps"`` | ``"argmax"`` | ``"soft"``).
        seg_mean, seg_std: per-band normalisation the segmenter was trained with (``None``: raw values).

    Returns:
        ``(embeddings B × D, proportions B × Σ N_l)`` float32.
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images, dtype=np.float32))
    x = x.float()
    if x.ndim == 3:
        x = x[None]
    _check_bands(embedder, x.shape[1], "embedder")
    _check_bands(segmenter, x.shape[1], "segmenter")
    emb = embed(embedder, x, batch_size)
    xs = x
    if seg_mean is not None or seg_std is not None:
        m = torch.as_tensor(np.asarray(seg_mean if seg_mean is not None else [0.0] * x.shape[1], np.float32))
        s = torch.as_tensor(np.asarray(seg_std if seg_std is not None else [1.0] * x.shape[1], np.float32))
        if m.numel() != x.shape[1] or s.numel() != x.shape[1]:
            raise ValueError(f"segmenter normalisation has {m.numel()} means / {s.numel()} stds for "
                             f"{x.shape[1]}-band images")
        xs = (x - m[None, :, None, None]) / s.clamp_min(1e-6)[None, :, None, None]
    props = segment_proportions(segmenter, xs, hierarchy, mode=mode, batch_size=batch_size)
    return emb.astype(np.float32), props

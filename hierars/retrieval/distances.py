"""Distances used by the two retrieval stages (NumPy, float32 in, float32 out).

- Stage 1 (embeddings): :func:`euclidean` and :func:`cosine` (the HIR paper leaves the metric open; the
  method-spec recommends either). The archive search itself runs in faiss (:mod:`.index`); these are the
  reference implementations and are used to re-score small candidate sets.
- Stage 2 (class-proportion vectors): :func:`weighted_manhattan`, HIR Eq. (1)
  ``WMD(X, Y) = Σ_i w_i |x_i − y_i|``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["check_weights", "weighted_manhattan", "euclidean", "cosine"]


def check_weights(weights: Sequence[float] | np.ndarray | None, n: int, what: str = "proportion vectors"
                  ) -> np.ndarray:
    """``weights`` as a float32 vector of length ``n`` (``None`` → all ones); clear errors otherwise.

    Raises:
        ValueError: wrong length, not 1-D, negative or non-finite entries.
    """
    if weights is None:
        return np.ones(n, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 1:
        raise ValueError(f"class weights must be a 1-D vector, got shape {w.shape}")
    if w.shape[0] != n:
        raise ValueError(f"class weights have {w.shape[0]} entries but the {what} have {n} classes")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"class weights must be finite and >= 0, got {w.tolist()}")
    return w


def weighted_manhattan(x: np.ndarray, y: np.ndarray, weights: Sequence[float] | np.ndarray | None = None
                       ) -> np.ndarray:
    """Weighted Manhattan distance ``Σ_i w_i |x_i − y_i|`` with broadcasting over leading axes.

    Args:
        x: ``(..., n)`` proportion vectors (e.g. one query ``n`` or queries ``Q × 1 × n``).
        y: ``(..., n)`` proportion vectors (e.g. candidates ``Q × K × n`` or an archive ``N × n``).
        weights: ``n`` per-class weights (``None`` = 1 for every class, plain Manhattan).

    Returns:
        the broadcast shape of ``x`` and ``y`` without the last axis (float32).
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"proportion vectors differ in length: {x.shape[-1]} vs {y.shape[-1]}")
    w = check_weights(weights, x.shape[-1])
    return np.abs(x - y) @ w


def euclidean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``||x − y||_2`` over the last axis, broadcasting (``(..., d)`` × ``(..., d)`` → ``(...)``)."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    return np.sqrt(((x - y) ** 2).sum(-1))


def cosine(x: np.ndarray, y: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Cosine distance ``1 − <x, y> / (|x| |y|)`` over the last axis, broadcasting; in ``[0, 2]``."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
    yn = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), eps)
    return 1.0 - (xn * yn).sum(-1)

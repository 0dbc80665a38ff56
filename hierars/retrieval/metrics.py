"""Retrieval metrics on ranked result lists: P@k, the HIR / DeepHash mAP@k and the standard AP@k.

All functions take a **relevance matrix** ``rel`` (``Q × n`` bool, ``n >= k``): ``rel[q, i]`` is True when
the ``i``-th result (rank ``i + 1``) of query ``q`` is relevant. :func:`relevance` builds it from labels.

Two mean-average-precision conventions, named apart on purpose (method-spec §6):

- :func:`map_at_k_hir` — DeepHash-pytorch ``utils/tools.py::CalcTopMap``, the convention of the HIR
  paper: ``AP_q@k = (1/R_k) Σ_{i≤k} P_q(i)·rel_q(i)`` with ``R_k`` = number of relevant items *found in
  the top k* (``AP_q = 0`` when ``R_k = 0``; such queries still count in the mean). It is ≥ P@k.
- :func:`map_at_k_standard` — the textbook AP@k, normalised by the relevant items that *could* be in the
  top k, ``min(k, R_q)`` with ``R_q`` the number of relevant items in the whole archive. It is ≤ 1 and
  penalises relevant items that were missed entirely.

``P@k = (1/Q) Σ_q R_k(q) / k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "relevance",
    "precision_at_k",
    "map_at_k_hir",
    "map_at_k_standard",
    "average_precision_hir",
    "retrieval_metrics",
]


def relevance(retrieved_labels: Sequence | np.ndarray, query_labels: Sequence | np.ndarray) -> np.ndarray:
    """Relevance matrix ``Q × n`` (bool): ``retrieved_labels[q, i] == query_labels[q]``.

    Args:
        retrieved_labels: ``Q × n`` labels (any comparable dtype, e.g. str or int) of the ranked results.
        query_labels: ``Q`` labels of the queries.
    """
    r = np.asarray(retrieved_labels)
    q = np.asarray(query_labels)
    if r.ndim != 2 or q.ndim != 1 or r.shape[0] != q.shape[0]:
        raise ValueError(f"retrieved_labels must be Q×n and query_labels Q; got {r.shape} and {q.shape}")
    return r == q[:, None]


def _check(rel: np.ndarray, k: int) -> np.ndarray:
    rel = np.asarray(rel)
    if rel.ndim != 2:
        raise ValueError(f"relevance must be a Q×n matrix, got shape {rel.shape}")
    if rel.shape[0] == 0:
        raise ValueError("no queries: relevance has 0 rows")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > rel.shape[1]:
        raise ValueError(f"k={k} but only {rel.shape[1]} ranked results per query")
    return rel[:, :k].astype(bool)


def precision_at_k(rel: np.ndarray, k: int) -> float:
    """Mean over queries of ``R_k / k`` (``R_k`` = relevant items in the top k)."""
    top = _check(rel, k)
    return float(top.sum(1).mean() / k)


def average_precision_hir(rel: np.ndarray, k: int) -> np.ndarray:
    """Per-query AP@k in the DeepHash ``CalcTopMap`` convention (normalised by ``R_k``); shape ``Q``."""
    top = _check(rel, k).astype(np.float64)
    hits = top.sum(1)
    prec_at_i = np.cumsum(top, axis=1) / np.arange(1, k + 1)  # P_q(i) for i = 1..k
    num = (prec_at_i * top).sum(1)
    return np.divide(num, hits, out=np.zeros_like(num), where=hits > 0)


def map_at_k_hir(rel: np.ndarray, k: int) -> float:
    """mAP@k of HIR / DeepHash: mean over all queries of :func:`average_precision_hir` (0 for no hits)."""
    return float(average_precision_hir(rel, k).mean())


def map_at_k_standard(rel: np.ndarray, k: int, num_relevant: Sequence[int] | np.ndarray) -> float:
    """Standard mAP@k: ``AP_q = (1 / min(k, R_q)) Σ_{i≤k} P_q(i)·rel_q(i)``, 0 when ``R_q = 0``.

    Args:
        rel: ``Q × n`` relevance of the ranked results.
        k: cut-off.
        num_relevant: ``Q`` counts ``R_q`` of relevant items in the whole archive for each query.
    """
    top = _check(rel, k).astype(np.float64)
    nrel = np.asarray(num_relevant, dtype=np.float64)
    if nrel.shape != (top.shape[0],):
        raise ValueError(f"num_relevant must have one count per query ({top.shape[0]}), got shape {nrel.shape}")
    if (top.sum(1) > nrel).any():
        raise ValueError("num_relevant is smaller than the relevant items found in the top k for some query")
    prec_at_i = np.cumsum(top, axis=1) / np.arange(1, k + 1)
    num = (prec_at_i * top).sum(1)
    den = np.minimum(nrel, k)
    return float(np.divide(num, den, out=np.zeros_like(num), where=den > 0).mean())


def retrieval_metrics(
    retrieved_labels: Sequence | np.ndarray,
    query_labels: Sequence | np.ndarray,
    ks: Sequence[int] = (10, 20),
    archive_labels: Sequence | np.ndarray | None = None,
) -> dict[str, float]:
    """The HIR table's metrics for every ``k`` in ``ks``, as flat scalars.

    Args:
        retrieved_labels: ``Q × n`` labels of the ranked results (``n >= max(ks)``).
        query_labels: ``Q`` query labels.
        ks: cut-offs.
        archive_labels: labels of the whole archive; when given, the standard mAP@k is added
            (``mAP_std@k``), which needs the total number of relevant items per query.

    Returns:
        ``{"mAP@k": HIR/DeepHash mAP, "P@k": precision, ["mAP_std@k": standard mAP]}`` for each k.
    """
    rel = relevance(retrieved_labels, query_labels)
    out: dict[str, float] = {}
    nrel = None
    if archive_labels is not None:
        arch = np.asarray(archive_labels)
        q = np.asarray(query_labels)
        nrel = (arch[None, :] == q[:, None]).sum(1)
    for k in ks:
        out[f"mAP@{k}"] = map_at_k_hir(rel, k)
        out[f"P@{k}"] = precision_at_k(rel, k)
        if nrel is not None:
            out[f"mAP_std@{k}"] = map_at_k_standard(rel, k, nrel)
    return out

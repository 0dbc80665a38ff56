"""CBIR, LCBIR and HIR's two-stage search over an :class:`~hierars.retrieval.index.ArchiveIndex`.

- :func:`cbir` — stage 1 alone: the ``k`` nearest archive embeddings (Euclidean or cosine, the index's
  metric), through faiss.
- :func:`lcbir` — land-cover-based retrieval alone: the ``k`` archive images with the smallest weighted
  Manhattan distance between class-proportion vectors (exhaustive over the archive; chunked NumPy).
- :func:`hir` — HIR: stage 1 keeps the top ``K`` (paper: 75) by embedding, stage 2 re-ranks those ``K`` by
  weighted Manhattan distance of proportions and returns the top ``k < K``. Ties in stage 2 keep the
  stage-1 order (stable sort).

All three take batches of queries (``Q × D`` embeddings, ``Q × P`` all-level proportion vectors as stored in
the index) and return a :class:`SearchResult` with ``Q × k`` indices and distances. Stage 2 options:
``level`` (an int or ``"all"``), ``class_weights`` (vector or ``{name: w}``, e.g. ``{"building": 4}`` for
HIR Table V) and ``level_weights`` (with ``level="all"``); see
:meth:`~hierars.retrieval.proportions.ProportionLayout.weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hierars.retrieval.index import ArchiveIndex

__all__ = ["SearchResult", "cbir", "lcbir", "hir", "METHODS"]

METHODS = ("cbir", "lcbir", "hir")

Weights = Sequence[float] | np.ndarray | Mapping[str, float] | None


@dataclass
class SearchResult:
    """Ranked results of ``Q`` queries.

    Attributes:
        indices: ``Q × k`` int64 archive indices, best first.
        distances: ``Q × k`` float32 distances of the ranking stage (embedding distance for CBIR,
            weighted Manhattan for LCBIR and HIR).
        stage1_distances: ``Q × k`` embedding distances of the returned items (CBIR and HIR), else None.
        method: ``"cbir"`` | ``"lcbir"`` | ``"hir"``.
    """

    indices: np.ndarray
    distances: np.ndarray
    method: str
    stage1_distances: np.ndarray | None = None

    def files(self, index: ArchiveIndex) -> list[list[str]]:
        """The archive file names of the results (``Q`` lists of ``k``); needs an index with ``files``."""
        if index.files is None:
            raise ValueError("the index stores no file names")
        return [[index.files[i] for i in row] for row in self.indices]

    def labels(self, index: ArchiveIndex) -> np.ndarray:
        """The archive labels of the results, ``Q × k`` (for :mod:`.metrics`); needs an index with ``labels``."""
        if index.labels is None:
            raise ValueError("the index stores no labels")
        lab = np.asarray(index.labels)
        return lab[self.indices]


def _check_props(index: ArchiveIndex, proportions: np.ndarray, n_queries: int | None = None) -> np.ndarray:
    p = np.asarray(proportions, dtype=np.float32)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != index.layout.size:
        raise ValueError(f"query proportions must be Q×{index.layout.size} (all levels of the index's tree "
                         f"{index.layout.num_classes}), got shape {p.shape}")
    if n_queries is not None and p.shape[0] != n_queries:
        raise ValueError(f"{n_queries} query embeddings but {p.shape[0]} query proportion vectors")
    if not np.isfinite(p).all():
        raise ValueError("query proportions contain NaN or inf")
    return p


def cbir(index: ArchiveIndex, query_embeddings: np.ndarray, k: int = 10) -> SearchResult:
    """Stage 1 alone: ``Q × D`` embeddings → the ``k`` nearest archive images each."""
    d, idx = index.stage1(query_embeddings, k)
    return SearchResult(idx, d, "cbir", stage1_distances=d)


def lcbir(index: ArchiveIndex, query_proportions: np.ndarray, k: int = 10, *, level: int | str = "all",
          class_weights: Weights = None, level_weights: Sequence[float] | None = None, chunk: int = 65536
          ) -> SearchResult:
    """Stage 2 alone over the whole archive: ``Q × P`` proportion vectors → top ``k`` by weighted Manhattan.

    Args:
        index: the archive index.
        query_proportions: ``Q × P`` all-level proportion vectors (as stored in the index).
        k: results per query (``<= N``).
        level, class_weights, level_weights: the stage-2 distance (module docstring).
        chunk: archive rows per block (bounds memory at ``Q × chunk × P`` floats).
    """
    k = index.check_k(k)
    q = _check_props(index, query_proportions)
    cols, w = index.layout.weights(level, class_weights, level_weights)
    qa = q[:, cols]
    best_d = np.full((q.shape[0], 0), np.inf, np.float32)
    best_i = np.zeros((q.shape[0], 0), np.int64)
    for s in range(0, len(index), chunk):
        block = index.proportions[s: s + chunk, cols]
        d = np.abs(qa[:, None, :] - block[None]) @ w  # Q × chunk
        all_d = np.concatenate([best_d, d], 1)
        all_i = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + block.shape[0]), d.shape)], 1)
        order = np.argsort(all_d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)
    return SearchResult(best_i.astype(np.int64), best_d.astype(np.float32), "lcbir")


def rerank(index: ArchiveIndex, candidates: np.ndarray, query_proportions: np.ndarray, k: int, *,
           level: int | str = "all", class_weights: Weights = None, level_weights: Sequence[float] | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 2: re-rank ``Q × K`` candidate indices by weighted Manhattan distance; keep the top ``k``.

    Returns:
        ``(indices Q × k, distances Q × k, order Q × k)`` where ``order`` indexes the candidate columns.
    """
    q = _check_props(index, query_proportions, candidates.shape[0])
    if k > candidates.shape[1]:
        raise ValueError(f"k={k} is larger than the stage-1 shortlist K={candidates.shape[1]}")
    cols, w = index.layout.weights(level, class_weights, level_weights)
    cand = index.proportions[candidates][..., cols]  # Q × K × P'
    d = np.abs(cand - q[:, None, cols]) @ w  # Q × K
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(candidates, order, 1), np.take_along_axis(d, order, 1).astype(np.float32), order)


def hir(index: ArchiveIndex, query_embeddings: np.ndarray, query_proportions: np.ndarray, k: int = 10,
        K: int = 75, *, level: int | str = "all", class_weights: Weights = None,
        level_weights: Sequence[float] | None = None) -> SearchResult:
    """HIR two-stage search: top ``K`` by embedding (faiss), re-ranked to the top ``k`` by proportions.

    Args:
        index: the archive index.
        query_embeddings: ``Q × D``; query_proportions: ``Q × P`` (all levels).
        k: final results per query (``k <= N``).
        K: stage-1 shortlist size (paper: 75); must be ``>= k``; capped at the archive size.
        level, class_weights, level_weights: the stage-2 distance (module docstring).
    """
    k = index.check_k(k)
    if not isinstance(K, (int, np.integer)) or K < k:
        raise ValueError(f"the shortlist K={K!r} must be an int >= k={k}")
    K = min(int(K), len(index))
    emb = index.check_queries(query_embeddings)
    _check_props(index, query_proportions, emb.shape[0])
    d1, cand = index.stage1(emb, K)
    idx, d2, order = rerank(index, cand, query_proportions, k, level=level, class_weights=class_weights,
                            level_weights=level_weights)
    return SearchResult(idx, d2, "hir", stage1_distances=np.take_along_axis(d1, order, 1))

"""Tables IV / V of the HIR paper as one call: several retrieval methods scored on the same queries.

:func:`evaluate_methods` runs each method (``{"method": "cbir" | "lcbir" | "hir", **options}``) for all
queries in one batch and scores the ranked labels with :func:`~hierars.retrieval.metrics.retrieval_metrics`
(the HIR / DeepHash mAP@k, P@k and, with archive labels, the standard mAP@k). :func:`hir_methods` gives
the paper's four rows (CBIR, LCBIR, HIR w = 1, HIR with one class weight raised).

Relevance is label equality, so the experiment is chosen by the labels passed: scene labels for Table IV;
for Table V (implicit sub-categories) the residential queries with their density sub-labels, against
archive labels that carry the sub-label for residential images and the scene otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hierars.retrieval.index import ArchiveIndex
from hierars.retrieval.metrics import retrieval_metrics
from hierars.retrieval.search import METHODS, SearchResult, cbir, hir, lcbir

__all__ = ["hir_methods", "run_method", "evaluate_methods"]


def hir_methods(weighted_class: str | None = None, weight: float = 4.0, K: int = 75, level: int | str = "all",
                level_weights: Sequence[float] | None = None) -> dict[str, dict[str, Any]]:
    """The HIR paper's rows: CBIR, LCBIR, HIR (K, w = 1) and, if ``weighted_class``, HIR with that class
    weighted ``weight`` (Table V: buildings, 4). ``level`` / ``level_weights`` set the stage-2 proportions."""
    stage2 = {"level": level, "level_weights": level_weights}
    rows: dict[str, dict[str, Any]] = {
        "CBIR": {"method": "cbir"},
        "LCBIR": {"method": "lcbir", **stage2},
        f"HIR (K={K}, w=1)": {"method": "hir", "K": K, **stage2},
    }
    if weighted_class:
        rows[f"HIR (K={K}, w_{weighted_class}={weight:g})"] = {
            "method": "hir", "K": K, "class_weights": {weighted_class: weight}, **stage2}
    return rows


def run_method(index: ArchiveIndex, query_embeddings: np.ndarray, query_proportions: np.ndarray, k: int,
               spec: Mapping[str, Any]) -> SearchResult:
    """One method on a batch of queries. ``spec``: ``{"method": ..., "K", "level", "class_weights",
    "level_weights"}`` (options of :func:`~hierars.retrieval.search.hir` / ``lcbir``; CBIR takes none)."""
    opts = dict(spec)
    method = opts.pop("method", None)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "cbir":
        if opts:
            raise ValueError(f"cbir takes no stage-2 options, got {sorted(opts)}")
        return cbir(index, query_embeddings, k)
    if method == "lcbir":
        opts.pop("K", None)
        return lcbir(index, query_proportions, k, **opts)
    return hir(index, query_embeddings, query_proportions, k, **opts)


def evaluate_methods(
    index: ArchiveIndex,
    query_embeddings: np.ndarray,
    query_proportions: np.ndarray,
    query_labels: Sequence[str] | np.ndarray,
    methods: Mapping[str, Mapping[str, Any]],
    *,
    ks: Sequence[int] = (10, 20),
    archive_labels: Sequence[str] | np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Score several methods on the same queries.

    Args:
        index: the archive index.
        query_embeddings: ``Q × D``; query_proportions: ``Q × P`` (all levels).
        query_labels: ``Q`` relevance labels of the queries.
        methods: name → spec (see :func:`run_method`, :func:`hir_methods`).
        ks: cut-offs (the results are retrieved to ``max(ks)``).
        archive_labels: ``N`` relevance labels of the archive (default: ``index.labels``).

    Returns:
        name → ``{"mAP@k", "P@k", "mAP_std@k"}`` for every k.
    """
    labels = np.asarray(archive_labels if archive_labels is not None else index.labels)
    if labels.ndim != 1 or labels.shape[0] != len(index):
        raise ValueError(f"need one archive label per indexed image ({len(index)}), got shape {labels.shape}"
                         if archive_labels is not None or index.labels is not None else
                         "the index stores no labels; pass archive_labels")
    q_labels = np.asarray(query_labels)
    k = max(ks)
    out = {}
    for name, spec in methods.items():
        res = run_method(index, query_embeddings, query_proportions, k, spec)
        out[name] = retrieval_metrics(labels[res.indices], q_labels, ks, archive_labels=labels)
    return out

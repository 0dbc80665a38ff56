"""Retrieval metrics and distances on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from hierars.retrieval import (
    average_precision_hir,
    map_at_k_hir,
    map_at_k_standard,
    precision_at_k,
    relevance,
    retrieval_metrics,
    weighted_manhattan,
)
from hierars.retrieval.distances import cosine, euclidean

# query 0: hits at ranks 1 and 3 of 4; 3 relevant items in the archive. query 1: no hit; 2 relevant.
REL = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)
NREL = [3, 2]


def test_precision_at_k_by_hand():
    assert precision_at_k(REL, 4) == pytest.approx((2 / 4 + 0) / 2)
    assert precision_at_k(REL, 1) == pytest.approx(0.5)
    assert precision_at_k(REL, 2) == pytest.approx((1 / 2 + 0) / 2)


def test_map_hir_deephash_convention_by_hand():
    # AP_0@4 = (P(1)·1 + P(3)·1) / R_4 = (1 + 2/3) / 2 = 5/6 ; AP_1 = 0 (no hit) and still counted
    np.testing.assert_allclose(average_precision_hir(REL, 4), [5 / 6, 0.0])
    assert map_at_k_hir(REL, 4) == pytest.approx(5 / 12)
    # k = 2: one hit at rank 1 -> AP = 1 (normalised by the hits found, not by the archive's 3)
    assert map_at_k_hir(REL, 2) == pytest.approx(0.5)


def test_map_standard_by_hand():
    # AP_0@4 = (1 + 2/3) / min(4, 3) = 5/9 ; AP_1 = 0
    assert map_at_k_standard(REL, 4, NREL) == pytest.approx(5 / 18)
    # k = 2: 1 / min(2, 3) = 1/2
    assert map_at_k_standard(REL, 2, NREL) == pytest.approx(0.25)


def test_conventions_order_hir_ge_precision_ge_standard_here():
    rng = np.random.default_rng(0)
    rel = rng.random((50, 20)) < 0.4
    for k in (5, 10, 20):
        assert map_at_k_hir(rel, k) >= precision_at_k(rel, k) - 1e-12
        assert map_at_k_standard(rel, k, np.full(50, 100)) <= map_at_k_hir(rel, k) + 1e-12


def test_retrieval_metrics_from_labels():
    retrieved = [["a", "b", "a", "c"], ["c", "c", "b", "b"]]
    out = retrieval_metrics(retrieved, ["a", "a"], ks=(2, 4), archive_labels=["a", "a", "a", "b", "c"])
    assert out["P@4"] == pytest.approx(0.25)
    assert out["mAP@4"] == pytest.approx(5 / 12)
    assert out["mAP_std@4"] == pytest.approx(5 / 18)
    assert set(out) == {"mAP@2", "P@2", "mAP_std@2", "mAP@4", "P@4", "mAP_std@4"}
    np.testing.assert_array_equal(relevance(retrieved, ["a", "a"]), [[1, 0, 1, 0], [0, 0, 0, 0]])


def test_metric_errors():
    with pytest.raises(ValueError, match="k=5 but only 4"):
        precision_at_k(REL, 5)
    with pytest.raises(ValueError, match="one count per query"):
        map_at_k_standard(REL, 4, [3])
    with pytest.raises(ValueError, match="smaller than the relevant items found"):
        map_at_k_standard(REL, 4, [1, 0])


def test_weighted_manhattan_by_hand():
    x = np.array([0.5, 0.3, 0.2])
    y = np.array([0.2, 0.3, 0.5])
    assert weighted_manhattan(x, y) == pytest.approx(0.6)
    assert weighted_manhattan(x, y, [1, 2, 4]) == pytest.approx(0.3 * 1 + 0 + 0.3 * 4)
    # broadcasting: one query against three archive rows
    arch = np.stack([x, y, np.array([0.0, 0.0, 1.0])])
    np.testing.assert_allclose(weighted_manhattan(x, arch, [1, 1, 2]), [0.0, 0.9, 0.5 + 0.3 + 2 * 0.8], rtol=1e-6)
    with pytest.raises(ValueError, match="3 entries but the proportion vectors have 4"):
        weighted_manhattan(np.zeros(4), np.zeros(4), [1, 1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        weighted_manhattan(x, y, [1, -1, 1])


def test_euclidean_and_cosine():
    assert euclidean([0, 0], [3, 4]) == pytest.approx(5.0)
    assert cosine([1, 0], [0, 2]) == pytest.approx(1.0)
    assert cosine([1, 1], [2, 2]) == pytest.approx(0.0, abs=1e-6)

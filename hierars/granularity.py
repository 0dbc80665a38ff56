"""Confidence from per-level probabilities: the path distribution, per-level confidence, and
confidence-aware granularity (each pixel labelled at the deepest level the model is sure of).

A hierarchical head gives one softmax per level, ``q_l`` (``N_l×H×W``). Over the tree's valid root-to-leaf paths
they define one distribution, ``P(p) ∝ Π_l q_l(p_l)`` normalised over the paths, whose most probable path is
exactly JSPS (method-spec Eq. 25: ``argmax_p Σ_l log q_l(p_l)``); it is the distribution whose negative
log-likelihood of the true path is the HSC loss's path term (Eqs. 19-23), so an HSC-trained model is trained to
calibrate it. A flat model's leaf softmax is ``P`` itself.
A node's probability is the mass of the paths through it, ``m_l(c) = Σ_{p: p_l = c} P(p)``; along a path it
never increases from a class to its child.

- **Per-level confidence**: ``m_l(ŷ_l)``, the probability of the class a level's map holds.
- **Granularity map** (threshold ``T``): the node of the JSPS path at the deepest level ``l`` with
  ``m_l(p̂_l) ≥ T``; id 0 (the root, "not even the coarsest level is sure") where no level reaches ``T``. Where
  corn vs soybean is unsure but cropland is not, the pixel is labelled cropland. ``T <= min confidence`` gives
  the leaves, ``T > 1`` gives the root everywhere.

**Node ids** (:func:`node_ids`): 0 is the root; class ``c`` of level ``l`` (0-based, coarse to fine) is
``1 + N_0 + ... + N_{l-1} + c``, i.e. the tree's nodes numbered level by level in the tree's class order. They fit
uint8 when there are at most 254 nodes (255 is nodata), else uint16 (nodata 65535) (:func:`node_nodata`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["path_probabilities", "node_probabilities", "level_confidence", "granularity_map", "node_ids",
           "node_names", "node_nodata", "summarise_probabilities"]


def path_probabilities(probs: Sequence[np.ndarray], hierarchy: Hierarchy) -> np.ndarray:
    """``P(p) ∝ Π_l q_l(p_l)`` over the tree's paths, per pixel.

    Args:
        probs: per-level probabilities, ``L`` arrays ``N_l×H×W`` coarse to fine, or one (the finest level, a flat
            model's softmax; then ``P = q_L``).

    Returns: float32 ``P×H×W`` (``P = len(hierarchy.paths)``, path ``i`` ends in leaf ``i``), summing to 1 per pixel.
    """
    qs = [torch.as_tensor(np.asarray(q), dtype=torch.float32) for q in probs]
    n = hierarchy.num_classes
    if len(qs) == 1:
        if qs[0].shape[0] != n[-1]:
            raise ValueError(f"a flat output needs {n[-1]} leaf probabilities, got {qs[0].shape[0]}")
        p = qs[0].clamp_min(0)
        return (p / p.sum(0, keepdim=True).clamp_min(1e-30)).numpy()
    if [q.shape[0] for q in qs] != list(n):
        raise ValueError(f"per-level probabilities must have {list(n)} channels, got {[q.shape[0] for q in qs]}")
    paths = hierarchy.paths
    score = sum(q.clamp_min(1e-30).log().index_select(0, paths[:, lvl]) for lvl, q in enumerate(qs))
    return score.softmax(0).numpy()


def node_probabilities(path_probs: np.ndarray, hierarchy: Hierarchy) -> list[np.ndarray]:
    """``m_l(c)``: the probability mass of the paths through each class, one float32 ``N_l×H×W`` per level."""
    pp = torch.as_tensor(path_probs, dtype=torch.float32)
    flat = pp.reshape(pp.shape[0], -1)
    out = []
    for lvl, n in enumerate(hierarchy.num_classes):
        member = (hierarchy.paths[:, lvl][None, :] == torch.arange(n)[:, None]).float()  # N_l×P
        out.append((member @ flat).reshape(n, *pp.shape[1:]).numpy())
    return out


def level_confidence(node_probs: Sequence[np.ndarray], labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """float32 ``L×H×W``: ``node_probs[l][labels[l]]`` per pixel; NaN where ``labels`` is ``ignore_index``."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, np.nan, dtype=np.float32)
    for lvl, m in enumerate(node_probs):
        lab = labels[lvl]
        ok = lab != ignore_index
        picked = np.take_along_axis(m, np.where(ok, lab, 0)[None].astype(np.int64), 0)[0]
        out[lvl][ok] = picked[ok]
    return out


def node_ids(hierarchy: Hierarchy) -> list[np.ndarray]:
    """Granularity node id of every class: ``ids[l][c] = 1 + N_0 + ... + N_{l-1} + c`` (0 is the root)."""
    offsets = np.cumsum([0, *hierarchy.num_classes[:-1]])
    return [np.arange(n, dtype=np.int64) + 1 + int(off) for n, off in zip(hierarchy.num_classes, offsets)]


def node_names(hierarchy: Hierarchy) -> list[tuple[int, int | None, str]]:
    """``(node id, level or None for the root, class name)`` for every node id, in id order."""
    out: list[tuple[int, int | None, str]] = [(0, None, "unresolved (root)")]
    for lvl, ids in enumerate(node_ids(hierarchy)):
        out += [(int(i), lvl, hierarchy.names[lvl][c]) for c, i in enumerate(ids)]
    return out


def node_nodata(hierarchy: Hierarchy) -> tuple[int, str]:
    """(nodata value, numpy dtype name) of a granularity map: 255 / uint8 up to 254 nodes, else 65535 / uint16."""
    total = sum(hierarchy.num_classes)
    if total <= 254:
        return 255, "uint8"
    if total <= 65534:
        return 65535, "uint16"
    raise ValueError(f"{hierarchy.name}: {total} nodes do not fit a uint16 granularity map")


def granularity_map(path_labels: np.ndarray, path_confidence: np.ndarray, threshold: float,
                    hierarchy: Hierarchy) -> np.ndarray:
    """Node id of the deepest level whose confidence reaches ``threshold`` (see the module docstring).

    Args:
        path_labels: int ``L×H×W``, a valid path per pixel (JSPS) or ``ignore_index`` (no data).
        path_confidence: float ``L×H×W``, ``m_l`` of those labels (:func:`level_confidence`).
        threshold: ``T``; a level counts only if it and every coarser level reach ``T``.

    Returns: int64 ``H×W`` node ids (0 = root), :func:`node_nodata` where the labels are ignore.
    """
    labels = np.asarray(path_labels)
    conf = np.nan_to_num(np.asarray(path_confidence, dtype=np.float32), nan=-1.0)
    sure = np.cumprod(conf >= threshold, axis=0).astype(bool)  # a prefix of the path
    depth = sure.sum(0) - 1  # -1 = no level
    invalid = (labels == hierarchy.ignore_index).any(0)
    lut = np.concatenate(node_ids(hierarchy))
    offsets = np.cumsum([0, *hierarchy.num_classes[:-1]])
    level = np.clip(depth, 0, None)
    cls = np.take_along_axis(np.where(invalid[None], 0, labels), level[None].astype(np.int64), 0)[0]
    out = np.where(depth >= 0, lut[offsets[level] + cls], 0)
    return np.where(invalid, node_nodata(hierarchy)[0], out).astype(np.int64)


def summarise_probabilities(probs: Sequence[np.ndarray], labels: np.ndarray, hierarchy: Hierarchy,
                            threshold: float | None = None, labels_are_jsps: bool = False) -> dict[str, np.ndarray]:
    """Everything :class:`hierars.data.SavedModel` and ``hierars predict`` derive from blended probabilities.

    Args:
        probs: per-level probabilities as :func:`path_probabilities` takes them (``N_l×H×W`` each).
        labels: int ``L×H×W``, the per-level maps decoded from them (any mode); ``ignore_index`` = no data.
        threshold: granularity threshold ``T`` (None: no granularity map).
        labels_are_jsps: ``labels`` were decoded by JSPS from the same probabilities: they are the path (no
            second decoding that a float near-tie could make differ); otherwise the path is ``argmax_p P(p)``.

    Returns: ``{"path": int64 H×W JSPS path index (-1 = no data), "path_labels": int64 L×H×W its classes,
    "confidence": float32 L×H×W m_l(labels_l) (NaN = no data), "path_confidence": float32 L×H×W m_l of the JSPS
    path, "granularity": int64 H×W node ids (only with a threshold)}``.
    """
    pp = path_probabilities(probs, hierarchy)
    nodes = node_probabilities(pp, hierarchy)
    ign = hierarchy.ignore_index
    invalid = (np.asarray(labels) == ign).any(0)
    if labels_are_jsps:
        path = hierarchy.path_id(torch.as_tensor(np.asarray(labels), dtype=torch.long)).numpy()
        if (path[~invalid] < 0).any():
            raise ValueError("labels_are_jsps: the labels are not valid paths of the tree")
    else:
        path = np.where(invalid, -1, pp.argmax(0)).astype(np.int64)
    path_labels = np.where(invalid[None], ign, hierarchy.paths.numpy()[np.clip(path, 0, None)].transpose(2, 0, 1))
    out = {"path": path, "path_labels": path_labels.astype(np.int64),
           "confidence": level_confidence(nodes, labels, ign),
           "path_confidence": level_confidence(nodes, path_labels, ign)}
    if threshold is not None:
        out["granularity"] = granularity_map(path_labels, out["path_confidence"], threshold, hierarchy)
    return out

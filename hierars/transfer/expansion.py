"""Dynamic category expansion: refine one leaf of a trained LCLU model's tree and transfer with TransLU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from hierars.hierarchy import Hierarchy
from hierars.transfer.mapping import expansion_mapping
from hierars.transfer.model import TransLU, _check_source

__all__ = ["expand_categories"]


def expand_categories(source_model: nn.Module, node: str, children: Sequence[str], *,
                      source_hierarchy: Hierarchy | None = None,
                      label_values: Mapping[str, int | Sequence[int]] | None = None,
                      **translu_kwargs: Any) -> TransLU:
    """Add new leaves under ``node`` of a trained model's tree and return a TransLU model ready to train.

    Example: ``expand_categories(lclu_model, "cropland", ["corn", "soybean", "spring_wheat", "other_crop"],
    label_values={"corn": 1, "soybean": 5, ...})`` turns an Ag-Net LCLU model (``cropland`` a leaf) into a
    crop model whose tree is ``source_tree.extend("cropland", children)``: every source path is kept (other
    leaves continue as single-child chains) and the new leaves sit under ``cropland``.

    The mapping is built automatically (:func:`~hierars.transfer.mapping.expansion_mapping`): identity at
    every source level, the new finest level gated by the refined node (its children) or by the source
    leaf (the chains). Nothing is retrained from scratch: Branch 2 is the trained model, frozen; Branch 1
    starts from its encoder.

    Args:
        source_model: the trained LCLU model (multi-level head), frozen in place.
        node: the leaf of the source tree to refine.
        children: names of the new leaves under it.
        source_hierarchy: the source tree (default ``source_model.hierarchy``; must match it).
        label_values: raw dataset values of the new leaves (``Hierarchy.extend``).
        **translu_kwargs: :class:`TransLU` options (``cdks``, ``cdsa``, ``in_channels``...).

    Returns: a :class:`TransLU` whose ``hierarchy`` is the expanded tree and ``mapping`` the built mapping.
    """
    tree = _check_source(source_model, source_hierarchy, None, None)
    target = tree.extend(node, children, label_values=label_values)
    mapping = expansion_mapping(tree, target, node)
    return TransLU(source_model, target, mapping, source_hierarchy=tree, **translu_kwargs)

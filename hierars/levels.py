"""Per-level logits: the one owner of their list form, their check against a tree, and their resizing.

Every head returns a list of ``L`` tensors ``B x N_l x h x w``, coarse to fine (a flat head: one tensor, the
finest level). Losses, decoding, evaluation and prediction all take that list through these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["as_level_list", "upsample_logits", "common_size", "check_levels"]


def as_level_list(logits: Any) -> list[torch.Tensor]:
    """A model's output as a non-empty list of 4-D tensors ``B x N_l x h x w`` (a lone tensor becomes ``[t]``).

    Raises:
        TypeError: the output is neither a tensor nor a list/tuple of tensors.
        ValueError: the list is empty or a tensor is not 4-D.
    """
    if isinstance(logits, torch.Tensor):
        out = [logits]
    elif isinstance(logits, (list, tuple)) and all(isinstance(z, torch.Tensor) for z in logits):
        out = list(logits)
    else:
        raise TypeError(f"model output must be a tensor or a list of B×N_l×h×w tensors, got {type(logits).__name__}")
    if not out or any(z.ndim != 4 for z in out):
        raise ValueError(f"logits must be a non-empty list of B×N_l×h×w tensors, got shapes "
                         f"{[tuple(z.shape) for z in out]}")
    return out


def upsample_logits(logits: Sequence[torch.Tensor] | torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
    """Bilinearly resize each ``B x N_l x h x w`` tensor to ``size`` (H, W) (``align_corners=False``); no-op if equal."""
    out = []
    for z in as_level_list(logits):
        if tuple(z.shape[-2:]) != tuple(size):
            z = F.interpolate(z, size=tuple(size), mode="bilinear", align_corners=False)
        out.append(z)
    return out


def common_size(logits: Sequence[torch.Tensor], size: tuple[int, int] | None = None) -> tuple[int, int]:
    """``size`` if given, else the largest spatial size among the levels."""
    if size is not None:
        return (int(size[0]), int(size[1]))
    return max((tuple(z.shape[-2:]) for z in logits), key=lambda s: s[0] * s[1])


def check_levels(logits: Sequence[torch.Tensor], hierarchy: Hierarchy) -> None:
    """Raise ``ValueError`` unless the channel counts match the tree (or a flat output has the finest count)."""
    nc = tuple(hierarchy.num_classes)
    got = tuple(z.shape[1] for z in logits)
    if len(logits) == 1:
        if got[0] != nc[-1]:
            raise ValueError(f"a 1-element (flat) output must have {nc[-1]} finest-level channels, got {got[0]}")
    elif got != nc:
        raise ValueError(f"logits have channels {got}, hierarchy {hierarchy.name!r} expects {nc}")

"""Per-level logits: the one owner of their list form, their check against a tree, and their resizing.

Every head returns a list of ``L`` tensors ``B x N_l x h x w``, coarse to fine (a flat head: one tensor, the
finest level). Losses, decoding, evaluation and prediction all take that list through these functions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["as_level_list", "upsample_logits", "resize_bilinear", "apply_upsampling", "common_size", "check_levels"]

#: ``resize_bilinear`` multiplies by interpolation matrices up to this input side (a dense n_out×n_in matrix
#: costs n_in multiply-adds per output along each axis: cheaper than ``F.interpolate`` only for small inputs)
MATMUL_MAX_SIDE = 32


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


@functools.lru_cache(maxsize=64)
def _interp_matrix(n_in: int, n_out: int, align_corners: bool, scale: float | None) -> torch.Tensor:
    """``n_out x n_in`` float64 matrix of 1-D linear interpolation, with PyTorch's source-index rule
    (``area_pixel_compute_source_index``; ``scale`` = 1 / scale_factor when the caller gave one)."""
    if align_corners:
        step = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = torch.arange(n_out, dtype=torch.float64) * step
    else:
        step = scale if scale is not None else n_in / n_out
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * step - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = src - i0
    mat = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    mat.index_put_((rows, i0), 1 - frac, accumulate=True)
    mat.index_put_((rows, i1), frac, accumulate=True)
    return mat


def resize_bilinear(z: torch.Tensor, size: tuple[int, int], align_corners: bool,
                    scale_factor: float | None = None) -> torch.Tensor:
    """``F.interpolate(z, size, mode="bilinear", align_corners=...)`` of a ``B x N x h x w`` tensor.

    Bilinear resizing is separable, ``out = A_h · z · A_wᵀ`` with the 1-D interpolation matrices A; for small
    inputs (h, w <= ``MATMUL_MAX_SIDE``) it is computed so (two matmuls forward, two backward), which on CPU
    is several times faster than ``upsample_bilinear2d`` and its backward (16×16 → 64×64: ~0.5 vs ~1.7 ms
    for 8×18 channels). The result equals ``F.interpolate``'s to float rounding. ``scale_factor``: the one
    the caller passed to ``F.interpolate``/``nn.Upsample`` (it sets the source-index scale when
    ``align_corners=False``).
    """
    (h, w), (oh, ow) = z.shape[-2:], (int(size[0]), int(size[1]))
    if (h, w) == (oh, ow):
        return z
    if max(h, w) > MATMUL_MAX_SIDE or not z.is_floating_point() or z.ndim != 4:
        if scale_factor is not None:
            return F.interpolate(z, scale_factor=scale_factor, mode="bilinear", align_corners=align_corners)
        return F.interpolate(z, size=(oh, ow), mode="bilinear", align_corners=align_corners)
    inv = None if scale_factor is None or align_corners else 1.0 / float(scale_factor)
    a_h = _interp_matrix(h, oh, align_corners, inv).to(z.device, z.dtype)
    a_w = _interp_matrix(w, ow, align_corners, inv).to(z.device, z.dtype)
    return torch.matmul(a_h, torch.matmul(z, a_w.t()))


def apply_upsampling(upsampling: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``upsampling(z)`` for an smp head's upsampling module; a bilinear ``nn.Upsample`` with a scale factor
    (smp's ×4 for FPN, UPerNet, DeepLabV3+) goes through :func:`resize_bilinear` (same result to rounding).

    z: ``B x N x h x w`` → ``B x N x (s·h) x (s·w)``.
    """
    if (isinstance(upsampling, nn.Upsample) and upsampling.mode == "bilinear" and upsampling.size is None
            and isinstance(upsampling.scale_factor, (int, float)) and z.ndim == 4):
        s = float(upsampling.scale_factor)
        size = (int(z.shape[-2] * s), int(z.shape[-1] * s))  # floor, as F.interpolate
        return resize_bilinear(z, size, bool(upsampling.align_corners), s)
    return upsampling(z)


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

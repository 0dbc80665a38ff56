"""CDSA gating: soft ROI masks from Branch 2's probabilities gate Branch 1's level logits (Eqs. 9-15).

For a gated target level l with source level s (a :class:`~hierars.transfer.mapping.Gate`)::

    p        = softmax(Y_s^{B2})                                  softmax over ALL source channels (Eq. 9-10)
    M_t      = Σ_{c ∈ S(t)} p_c                                    mapped channel t (Eq. 9, 10: one class each)
    M_other  = 1 − Σ_{t mapped} M_t                                complement channel (Eqs. 12, 14)
    F̃_l[t]  = M_t ⊙ F_l[t]                                        (Eqs. 11-14); unlisted channels unchanged
    (Y_1..Y_L)^{B1} = BHCCM-fusion(F̃_1, …, F̃_L)                    (Eq. 15)

Both are computed at decoder resolution (the BHCCM level heads' output); if the sizes differ the
probabilities are resized bilinearly to Branch 1's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy
    from hierars.transfer.mapping import CrossDomainMapping

__all__ = ["cdsa_masks", "CDSAGate"]


def cdsa_masks(source_logits: list[torch.Tensor], A: torch.Tensor, b: torch.Tensor, source_level: int
               ) -> torch.Tensor:
    """Masks of one target level: ``A @ softmax(source_logits[source_level]) + b``.

    Args:
        source_logits: Branch-2 logits, L_s tensors B×N_s×h×w (coarse→fine).
        A, b: the level's gate matrix N_t×N_s and offset N_t (:meth:`CrossDomainMapping.gate_matrix`).
        source_level: 0-based source level read by the gate.

    Returns: B×N_t×h×w masks in [0, 1] (up to rounding).
    """
    p = torch.softmax(source_logits[source_level].float(), dim=1)
    return torch.einsum("ts,bshw->bthw", A.to(p), p) + b.to(p).view(1, -1, 1, 1)


class CDSAGate(nn.Module):
    """Gates Branch-1 level logits with Branch-2 probabilities according to a cross-domain mapping.

    Args:
        mapping: a mapping validated against ``source`` and ``target``.
        source, target: the source (Branch 2) and target (Branch 1) trees.

    Forward: level_logits (L_t tensors B×N_l×h×w), source_logits (L_s tensors B×N_s×h'×w') → the gated list
    (ungated levels are returned as they are).
    """

    def __init__(self, mapping: CrossDomainMapping, source: Hierarchy, target: Hierarchy) -> None:
        super().__init__()
        self.levels: dict[int, int] = {}
        for g in mapping.gates:
            A, b = mapping.gate_matrix(g, source, target)
            self.register_buffer(f"A_{g.target_level}", A, persistent=False)
            self.register_buffer(f"b_{g.target_level}", b, persistent=False)
            self.levels[g.target_level] = g.source_level

    def masks(self, source_logits: list[torch.Tensor], size: tuple[int, int] | None = None
              ) -> dict[int, torch.Tensor]:
        """{target level: B×N_l×h×w mask}; resized bilinearly to ``size`` if given and different."""
        out = {}
        for t, s in self.levels.items():
            m = cdsa_masks(source_logits, getattr(self, f"A_{t}"), getattr(self, f"b_{t}"), s)
            if size is not None and tuple(m.shape[-2:]) != tuple(size):
                m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
            out[t] = m
        return out

    def forward(self, level_logits: list[torch.Tensor], source_logits: list[torch.Tensor]) -> list[torch.Tensor]:
        masks = self.masks(source_logits, tuple(level_logits[0].shape[-2:]))
        return [z * masks[i].to(z.dtype) if i in masks else z for i, z in enumerate(level_logits)]

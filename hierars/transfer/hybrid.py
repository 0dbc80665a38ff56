"""Hybrid supervision of Branch 1 (paper §IV-C2, method-spec §4 and ambiguity 8).

Targets per pixel:

- finest level: the target ground truth;
- a coarser, gated level: Branch 2's JSPS prediction at the gate's source level, mapped to the target class
  (:meth:`CrossDomainMapping.pseudo_label_lut`) — **only where the ground-truth leaf does not determine its
  ancestors**, i.e. where it is one of the mapping's ``pseudo_label_leaves`` (Crop10m's catch-all ``other``
  covers forest, water, buildings...); elsewhere the ground-truth ancestors win (a rice pixel is
  vegetation/cropland whatever Branch 2 says). Ungated levels, and source classes with no target class,
  keep the ground-truth ancestor;
- ignored ground truth (255) stays ignored at every level.

The resulting per-pixel label tuple can be an invalid path of the (strict) target tree, e.g. Crop10m's
(vegetation, other, other) where Branch 2 sees forest. The per-level CE terms use every label; the optional
path term (``mu > 0``, Eq. 23) counts only pixels whose tuple is a valid path (``Hierarchy.path_id >= 0``),
which is :func:`hierars.losses.path_kl`'s own rule.

Caveat (measured): on a strict target tree, training the coarse levels toward such invalid tuples makes
JSPS decoding pick a valid path that contradicts them (e.g. (vegetation, cropland, ·) for forest); in a
smoke-size synthetic S2 → Crop10m-like run this cost ~5 points of L3 JSPS mIoU against gating with
ground-truth targets (``mm5b_to_crop10m_gt``, no pseudo-label leaves). Per-level argmax is not affected.

How the loss gets Branch 2's predictions: :class:`~hierars.transfer.model.TransLU` keeps the frozen
branch's logits of its last forward in ``model.source_logits`` (detached, one list per forward), so a
training loop that only calls ``logits = model(image)`` then ``loss_fn(logits, mask)`` works unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from hierars import jsps
from hierars.losses import hsc_loss

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy
    from hierars.transfer.mapping import CrossDomainMapping

__all__ = ["hybrid_targets", "TransLULoss"]


def hybrid_targets(mask: torch.Tensor, source_pred: torch.Tensor, mapping: CrossDomainMapping,
                   source: Hierarchy, target: Hierarchy) -> torch.Tensor:
    """Hybrid labels for Branch 1.

    Args:
        mask: B×L×H×W target ground truth at every target level (255 = ignore).
        source_pred: B×L_s×H×W Branch-2 labels (JSPS) at every source level, same H×W.
        mapping: the cross-domain mapping (its gates and ``pseudo_label_leaves``).
        source, target: the two trees.

    Returns: LongTensor B×L×H×W.
    """
    if mask.ndim != 4 or mask.shape[1] != target.num_levels:
        raise ValueError(f"mask must be B×{target.num_levels}×H×W, got {tuple(mask.shape)}")
    if source_pred.shape[0] != mask.shape[0] or source_pred.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"Branch-2 predictions {tuple(source_pred.shape)} do not match mask {tuple(mask.shape)}")
    out = mask.long().clone()
    L = target.num_levels
    leaf = mask[:, -1].long()
    open_ids = [target.names[-1].index(n) for n in mapping.pseudo_label_leaves]
    if not open_ids:
        return out
    open_px = torch.isin(leaf, torch.tensor(open_ids, device=leaf.device))  # never true on ignore pixels
    for g in mapping.gates:
        if g.target_level >= L - 1:
            continue  # the finest level is always ground truth
        lut = mapping.pseudo_label_lut(g, source, target).to(mask.device)
        pseudo = lut[source_pred[:, g.source_level].long()]
        use = open_px & (pseudo >= 0)
        out[:, g.target_level] = torch.where(use, pseudo, out[:, g.target_level])
    return out


class TransLULoss(nn.Module):
    """L_HSC on hybrid targets: ``loss_fn(logits, mask)`` for a TransLU model's output.

    Args:
        model: the :class:`~hierars.transfer.model.TransLU` whose forward produced ``logits`` (its
            ``source_logits``, ``mapping``, ``source_hierarchy`` and ``hierarchy`` are read at each call).
        mu: weight of the path term (Eq. 23) on valid hybrid paths; 0 disables it (ambiguity 8: optional).
        hybrid: False trains on the target ground truth only (the +CDKS ablation row).
        level_weights: λ_l of the level CE terms (default 1).

    Forward: logits (L tensors B×N_l×h×w), mask (B×L×H×W) → scalar.
    """

    def __init__(self, model: nn.Module, mu: float = 1.0, hybrid: bool = True,
                 level_weights: list[float] | None = None, ignore_index: int = 255) -> None:
        super().__init__()
        self._model = [model]  # not a submodule: the loss must not own (or save) the model's parameters
        self.mu, self.hybrid, self.level_weights, self.ignore_index = float(mu), bool(hybrid), level_weights, ignore_index

    def targets(self, mask: torch.Tensor) -> torch.Tensor:
        """The hybrid labels for ``mask`` from the model's last Branch-2 output (B×L×H×W)."""
        model = self._model[0]
        src = getattr(model, "source_logits", None)
        if src is None:
            raise RuntimeError("TransLULoss needs the Branch-2 output of the same batch: call model(image) first")
        if src[0].shape[0] != mask.shape[0]:
            raise RuntimeError(f"the model's last forward had batch {src[0].shape[0]}, the mask has {mask.shape[0]}")
        if model.mapping is None:
            raise RuntimeError("hybrid targets need the model's cross-domain mapping (TransLU(..., mapping=...))")
        pred = jsps(src, model.source_hierarchy, size=tuple(mask.shape[-2:]))
        return hybrid_targets(mask, pred, model.mapping, model.source_hierarchy, model.hierarchy)

    def forward(self, logits: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        labels = self.targets(mask) if self.hybrid else mask
        return hsc_loss(logits, labels, self._model[0].hierarchy, mu=self.mu, level_weights=self.level_weights,
                        ignore_index=self.ignore_index)

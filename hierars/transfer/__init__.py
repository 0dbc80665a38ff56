"""TransLU (HieraRS paper §IV-C): dual-branch cross-domain transfer with CDKS and CDSA.

One concept per module:

- :mod:`~hierars.transfer.deform_attn` — one-level deformable cross-attention in pure PyTorch;
- :mod:`~hierars.transfer.interaction` — Branch Interaction Units and where they go (CDKS, Eqs. 7-8);
- :mod:`~hierars.transfer.mapping` — cross-domain mapping files (target node → source nodes);
- :mod:`~hierars.transfer.gating` — CDSA soft-ROI gating of the BHCCM level logits (Eqs. 9-15);
- :mod:`~hierars.transfer.hybrid` — hybrid targets and the loss (ground truth + Branch-2 pseudo-labels);
- :mod:`~hierars.transfer.model` — :class:`TransLU`, Branch-1 construction, source checkpoint loading;
- :mod:`~hierars.transfer.expansion` — dynamic category expansion.
"""

from hierars.transfer.deform_attn import DeformableCrossAttention, deform_attn_core
from hierars.transfer.errors import TransferError
from hierars.transfer.expansion import expand_categories
from hierars.transfer.gating import CDSAGate, cdsa_masks
from hierars.transfer.hybrid import TransLULoss, hybrid_targets
from hierars.transfer.interaction import CDKS, BranchInteractionUnit, interaction_points
from hierars.transfer.mapping import CrossDomainMapping, expansion_mapping
from hierars.transfer.model import TransLU, build_branch1, describe_model, finetune_model, load_source_model

__all__ = [
    "TransLU",
    "TransLULoss",
    "TransferError",
    "CrossDomainMapping",
    "expand_categories",
    "expansion_mapping",
    "hybrid_targets",
    "CDSAGate",
    "cdsa_masks",
    "CDKS",
    "BranchInteractionUnit",
    "interaction_points",
    "DeformableCrossAttention",
    "deform_attn_core",
    "build_branch1",
    "finetune_model",
    "load_source_model",
    "describe_model",
]

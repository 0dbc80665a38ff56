"""hierars: hierarchical land-cover / land-use segmentation of remote-sensing imagery (HieraRS + HIR).

The public API (see README): :class:`Hierarchy`, the heads (:class:`BHCCM` and its baselines), the
losses (:class:`HSCLoss`), JSPS inference (:func:`jsps`) and :func:`build_model`.
"""

from hierars.heads import BHCCM, FlatHead, HSSNHead, IndependentHeads, MergingBlock
from hierars.hierarchy import Hierarchy, HierarchyError
from hierars.inference import jsps, lift_flat, predict_levels, predict_raster
from hierars.losses import HierarchicalCELoss, HSCLoss, HSSNLoss
from hierars.metrics import HierarchicalMetrics
from hierars.models import build_model

__version__ = "0.1.0"

__all__ = [
    "BHCCM",
    "FlatHead",
    "HSSNHead",
    "IndependentHeads",
    "MergingBlock",
    "Hierarchy",
    "HierarchyError",
    "jsps",
    "lift_flat",
    "predict_levels",
    "predict_raster",
    "HierarchicalCELoss",
    "HSCLoss",
    "HSSNLoss",
    "HierarchicalMetrics",
    "build_model",
    "__version__",
]

"""hierars: hierarchical land-cover / land-use segmentation of remote-sensing imagery (HieraRS + HIR).

The public API of the core (see README and ARCHITECTURE.md): :class:`Hierarchy`, the heads (:class:`BHCCM`
and its baselines), the losses (:class:`HSCLoss`), decoding (:func:`jsps`), :func:`build_model` and
sliding-window prediction, and :class:`TransLU` (``hierars.transfer``); retrieval is ``hierars.retrieval``. Importing ``hierars`` loads the core only: the data, training, plotting and
project layers are imported on demand (``hierars.data``, ``hierars.training``, ...).
"""

from hierars.decoding import jsps, lift_flat, predict_levels
from hierars.heads import BHCCM, FlatHead, HSSNHead, IndependentHeads, MergingBlock
from hierars.hierarchy import Hierarchy, HierarchyError
from hierars.losses import HierarchicalCELoss, HSCLoss, HSSNLoss
from hierars.metrics import HierarchicalMetrics
from hierars.models import build_model
from hierars.prediction import SlidingWindowPredictor
from hierars.transfer import TransLU

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
    "SlidingWindowPredictor",
    "HierarchicalCELoss",
    "HSCLoss",
    "HSSNLoss",
    "HierarchicalMetrics",
    "build_model",
    "TransLU",
    "__version__",
]

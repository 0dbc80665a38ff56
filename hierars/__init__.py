"""hierars: hierarchical land-cover / land-use segmentation of remote-sensing imagery (HieraRS + HIR).

The public API of the core (see README and ARCHITECTURE.md): :class:`Hierarchy`, the heads (:class:`BHCCM`
and its baselines), the losses (:class:`HSCLoss`), decoding (:func:`jsps`), :func:`build_model` and
sliding-window prediction, and :class:`TransLU` (``hierars.transfer``); retrieval is ``hierars.retrieval``. Importing ``hierars`` loads the core only: the data, training, plotting and
project layers are imported on demand (``hierars.data``, ``hierars.training``, ...).

:func:`load_model` (a trained model that normalises, checks bands and predicts arrays or GeoTIFFs by itself) lives in
the data layer (it reads rasters) and is resolved lazily on first access (PEP 562), so ``import hierars`` stays
core-only; it is the one facade ARCHITECTURE.md lets the package root reach upwards for.
"""

from typing import Any

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
    "load_model",
    "__version__",
]



def __getattr__(name: str) -> Any:
    """PEP 562: ``hierars.load_model`` imports the data layer on first access (tests/test_architecture.py allows
    exactly this import, inside this function)."""
    if name == "load_model":
        from hierars.data.saved_model import load_model

        globals()[name] = load_model
        return load_model
    raise AttributeError(f"module 'hierars' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"load_model"})

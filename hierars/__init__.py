"""hierars: hierarchical land-cover / land-use segmentation of remote-sensing imagery (HieraRS + HIR)."""

from hierars.hierarchy import Hierarchy, HierarchyError

__version__ = "0.1.0"

__all__ = ["Hierarchy", "HierarchyError", "__version__"]

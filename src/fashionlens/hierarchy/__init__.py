"""Category hierarchies (taxonomy trees) and hedged, hierarchy-aware predictions."""

from fashionlens.hierarchy.taxonomy import Hierarchy

__all__ = ["Hierarchy"]

"""Category hierarchies (taxonomy trees) and hedged, hierarchy-aware predictions."""

from fashionlens.hierarchy.calibration import calibrate_run, fit_temperature, load_calibration
from fashionlens.hierarchy.hedging import CategoryTree, HedgedClassifier
from fashionlens.hierarchy.taxonomy import Hierarchy

__all__ = ["CategoryTree", "HedgedClassifier", "Hierarchy", "calibrate_run", "fit_temperature", "load_calibration"]

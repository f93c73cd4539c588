"""Category hierarchies (taxonomy trees) and hedged, hierarchy-aware predictions (arrays in, arrays out;
a run's calibration.json is read and written by ``fashionlens.runs.calibrate``)."""

from fashionlens.hierarchy.calibration import calibrate_outputs, fit_temperature
from fashionlens.hierarchy.hedging import CategoryTree, HedgedClassifier, hedged_metrics
from fashionlens.hierarchy.taxonomy import Hierarchy

__all__ = ["CategoryTree", "HedgedClassifier", "Hierarchy", "calibrate_outputs", "fit_temperature", "hedged_metrics"]

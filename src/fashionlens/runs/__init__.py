"""A trained run put to work (layer 3): everything that loads a run from disk, reads a data set and writes
report files, built from the array-in, array-out functions of ``evaluation/`` and ``hierarchy/``.

* ``outputs``: a run's predictions and the data's targets on a data spec (:func:`run_outputs`);
* ``evaluate``: all metrics of a run on a data spec (:func:`evaluate_run`), with ``out_dir`` the report;
* ``report``: report.json, report.md and the figures of an evaluation;
* ``calibrate``: fit a run's calibration.json (:func:`calibrate_run`) and load it back (:func:`load_hedger`).
"""

from fashionlens.runs.calibrate import calibrate_run, calibration_path, load_calibration, load_hedger
from fashionlens.runs.evaluate import evaluate_run, inshop_protocol
from fashionlens.runs.outputs import run_outputs

__all__ = ["calibrate_run", "calibration_path", "evaluate_run", "inshop_protocol", "load_calibration", "load_hedger",
           "run_outputs"]

"""Evaluation metrics, named and defined as in the DeepFashion paper (see each function's docstring).

- classification: category top-k accuracy, per-class accuracy, confusion matrix, calibration (ECE),
  attribute top-k recall (overall and per attribute type), single-choice group accuracy.
- retrieval: top-k accuracy (hit rate) and mAP of queries against a gallery; Recall@K, MAP@R and
  R-Precision on one set (leave-one-out, via pytorch-metric-learning).
- landmarks: normalized error (x / W, y / H of the original image) and detection rate over visible landmarks.
- boxes: IoU of paired boxes, mean IoU and the share localised at IoU >= 0.5.
- protocol: the split(s) a data set's benchmark evaluates on (in-shop query/gallery, consumer-to-shop test, ...).
- plots (import ``fashionlens.evaluation.plots`` explicitly; it loads matplotlib): report figures.
"""

from fashionlens.evaluation.boxes import box_iou, box_metrics
from fashionlens.evaluation.classification import (
    attribute_topk_recall,
    calibration_bins,
    confusion_matrix,
    expected_calibration_error,
    per_class_accuracy,
    single_choice_group_accuracy,
    topk_accuracy,
)
from fashionlens.evaluation.landmarks import apply_affine, detection_rate, normalized_error
from fashionlens.evaluation.protocol import Protocol, evaluation_protocol
from fashionlens.evaluation.retrieval import nearest_neighbors, recall_at_k_and_map_at_r, retrieval_topk

__all__ = [
    "Protocol",
    "apply_affine",
    "attribute_topk_recall",
    "box_iou",
    "box_metrics",
    "calibration_bins",
    "confusion_matrix",
    "detection_rate",
    "evaluation_protocol",
    "expected_calibration_error",
    "nearest_neighbors",
    "normalized_error",
    "per_class_accuracy",
    "recall_at_k_and_map_at_r",
    "retrieval_topk",
    "single_choice_group_accuracy",
    "topk_accuracy",
]

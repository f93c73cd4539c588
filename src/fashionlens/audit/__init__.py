"""Suspected label errors and model-in-the-loop cleaning of noisy image sets.

* ``features``: image features (ImageNet EfficientNet-Lite0 or a trained run), cached to ``.npz``;
* ``label_audit``: out-of-fold probabilities, confident learning (ours) and cleanlab on the same numbers;
* ``cleaning``: a trusted seed set trains a classifier that keeps, relabels or drops the other images;
* ``noise``: seeded uniform / confusable label-noise injection for benchmarks and tests;
* ``report_html``: the suspects as CSV and as a self-contained HTML page with thumbnails.
"""

from fashionlens.audit.cleaning import (
           CleaningResult,
           clean_labels,
           seed_fraction,
           seed_from_manifest,
           write_manifest,
)
from fashionlens.audit.label_audit import (
           AuditResult,
           audit,
           audit_labels,
           flag_scores,
           out_of_fold_probabilities,
)
from fashionlens.audit.noise import confusable_noise, inject_noise, uniform_noise

__all__ = ["AuditResult", "CleaningResult", "audit", "audit_labels", "clean_labels", "confusable_noise",
           "flag_scores", "inject_noise", "out_of_fold_probabilities", "seed_fraction", "seed_from_manifest",
           "uniform_noise", "write_manifest"]

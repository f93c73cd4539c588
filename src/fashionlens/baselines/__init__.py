"""Classical baselines the learned models are measured against.

- sift: SIFT bag-of-visual-words retrieval (RootSIFT descriptors, k-means vocabulary, TF-IDF histograms).
"""

from fashionlens.baselines.sift import SiftBoVW, extract_descriptors

__all__ = ["SiftBoVW", "extract_descriptors"]

"""The evaluation protocol a data set defines: which split(s) to evaluate, and what that measures.

DeepFashion fixes the evaluation data of each benchmark (docs/data-formats.md):

=====================  ===================  ================================================================
data                   split                protocol
=====================  ===================  ================================================================
deepfashion-inshop     ``query,gallery``    in-shop retrieval: every query image against the gallery images
deepfashion-c2s        ``test``             consumer-to-shop retrieval: the test split's consumer photos
                                            against its shop photos
deepfashion-category,  ``test``             category top-k, attribute top-k recall, landmarks, box
deepfashion-fine
garments (a render)    ``test``             all of the above over the render's test items
anything else          ``test``, else       the data's held-out split; data with neither a test, a
                       ``query,gallery``,   query/gallery nor a val split is an error that lists its splits
                       else ``val``
=====================  ===================  ================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from fashionlens.data.samples import SampleSet

AUTO = "auto"

_NAMED = {  # DatasetInfo.name -> (split, protocol)
    "deepfashion-inshop": ("query,gallery", "in-shop retrieval: query images -> gallery images"),
    "deepfashion-c2s": ("test", "consumer-to-shop retrieval: consumer photos -> shop photos of the test split"),
    "deepfashion-category": ("test", "category and attribute prediction: the test split"),
    "deepfashion-fine": ("test", "fine-grained attribute prediction: the test split"),
    "garments": ("test", "garments render: the test split (consumer-to-shop and in-shop retrieval included)"),
}
_GENERIC = (  # in order of preference
    ("test", "the test split"),
    ("query,gallery", "retrieval: query images -> gallery images"),
    ("val", "no test split: the validation split"),
)


@dataclass(frozen=True)
class Protocol:
    """What an evaluation runs on: ``split`` (comma-separated split names) and a one-line ``description``."""

    split: str
    description: str


def _has(splits: dict[str, int], split: str) -> bool:
    return all(splits.get(name, 0) > 0 for name in split.split(","))


def _where(data: SampleSet) -> str:
    return data.info.root or data.info.name or "the data"


def evaluation_protocol(data: SampleSet, split: str = AUTO) -> Protocol:
    """The :class:`Protocol` for ``data``: ``split`` as given, or with ``"auto"`` the one its benchmark
    defines (module table).

    Raises:
        ValueError naming the data and listing its splits: a given split has no samples, the benchmark's
        split is missing, or (other data) there is no test, query/gallery or val split to evaluate on.
    """
    splits = data.splits()
    if split != AUTO:
        if not _has(splits, split):
            raise ValueError(f"no samples in split {split!r} of {_where(data)}; splits: {splits}")
        return Protocol(split, f"the given split(s) {split}")
    if data.info.name in _NAMED:
        wanted, description = _NAMED[data.info.name]
        if not _has(splits, wanted):
            raise ValueError(f"{_where(data)}: the {data.info.name} protocol evaluates split(s) {wanted!r}, "
                             f"which this copy lacks (splits: {splits}); pass split=... (--split) to choose one")
        return Protocol(wanted, description)
    for wanted, description in _GENERIC:
        if _has(splits, wanted):
            return Protocol(wanted, description)
    raise ValueError(f"{_where(data)}: no test, query/gallery or val split to evaluate on (splits: {splits}); "
                     "pass split=... (--split) to choose one")


__all__ = ["AUTO", "Protocol", "evaluation_protocol"]

"""Data readers: one module per format, each returning a :class:`SampleSet`.

A *data spec* string selects the reader everywhere (CLI and library)::

    deepfashion-category:PATH   Category and Attribute Prediction benchmark root
    deepfashion-fine:PATH       fine-grained 26-attribute variant (pre-split files)
    deepfashion-inshop:PATH     In-shop Clothes Retrieval benchmark root
    deepfashion-c2s:PATH        Consumer-to-shop Clothes Retrieval benchmark root
    folder:PATH                 image folders root/<class>/*.jpg, optionally under train/validation/test
    manifest:FILE               CSV or JSONL catalog (columns in the README)
    fashion-mnist[:DIR]         the four IDX files (DIR, else the Debian path, else download)
    garments:PATH               everything ``fashionlens synth`` rendered
"""

from __future__ import annotations

import importlib
import os

from fashionlens.data.samples import DataFormatError, Sample, SampleSet

# spec prefix -> (module, function); each function is ``fn(path, *, missing="error") -> SampleSet``
READERS: dict[str, tuple[str, str]] = {
    "deepfashion-category": ("fashionlens.data.readers.deepfashion", "read_category"),
    "deepfashion-fine": ("fashionlens.data.readers.deepfashion", "read_fine"),
    "deepfashion-inshop": ("fashionlens.data.readers.deepfashion", "read_inshop"),
    "deepfashion-c2s": ("fashionlens.data.readers.deepfashion", "read_c2s"),
    "folder": ("fashionlens.data.readers.folder", "read_folder"),
    "images": ("fashionlens.data.readers.folder", "read_images"),
    "manifest": ("fashionlens.data.readers.manifest", "read_manifest"),
    "fashion-mnist": ("fashionlens.data.readers.fashion_mnist", "read_fashion_mnist"),
    "garments": ("fashionlens.data.readers.garments", "read_garments"),
}
PATH_OPTIONAL = {"fashion-mnist"}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"kind:PATH"`` into ``(kind, path)``; raise ValueError listing the kinds if unknown."""
    kind, sep, path = spec.partition(":")
    if kind not in READERS:
        raise ValueError(f"unknown data spec {spec!r}: expected one of {', '.join(k + ':PATH' for k in READERS)}")
    if not path and kind not in PATH_OPTIONAL:
        raise ValueError(f"data spec {spec!r} needs a path: {kind}:PATH")
    return kind, (os.path.expanduser(path) if path else None)


def read(spec: str, *, missing: str = "error") -> SampleSet:
    """Read a data set from a spec string.

    ``missing`` decides what happens when an annotated image file does not exist: ``"error"``
    (default) raises FileNotFoundError naming the image and the annotation line; ``"skip"`` drops
    those samples and counts them in ``SampleSet.skipped_missing``.
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', not {missing!r}")
    kind, path = parse_spec(spec)
    module_name, fn_name = READERS[kind]
    fn = getattr(importlib.import_module(module_name), fn_name)
    return fn(path, missing=missing)


def read_source(source: str, split: str | None = None, *, missing: str = "error") -> SampleSet:
    """A data spec (``kind:PATH``, kept to ``split``, comma-separated) or a plain folder of images (every image
    under it, unlabelled: the ``images:`` reader); what ``embed`` and ``catalog build`` take."""
    if source.partition(":")[0] not in READERS:
        if not os.path.exists(source):
            raise FileNotFoundError(f"{source}: neither an image folder nor a data spec "
                                    f"({', '.join(k + ':PATH' for k in READERS)})")
        if not os.path.isdir(source):
            raise NotADirectoryError(f"{source}: not a folder (give a folder of images or a data spec)")
        if split:
            raise ValueError(f"--split needs a data spec; {source} is a plain image folder without splits")
        return read(f"images:{source}", missing=missing)
    data = read(source, missing=missing)
    if split:
        part = data.split(*split.split(","))
        if not len(part):
            raise ValueError(f"no samples in split {split!r} of {source}; splits: {data.splits()}")
        return part
    return data


def check_images(samples: list[Sample], missing: str) -> tuple[list[Sample], int]:
    """Verify every sample's image exists; raise (naming image and annotation line) or drop and count."""
    kept: list[Sample] = []
    exists: dict[str, bool] = {}
    for s in samples:
        if s.array is None:
            ok = exists.get(s.image)
            if ok is None:
                ok = exists[s.image] = os.path.isfile(s.image)
            if not ok:
                if missing == "error":
                    raise FileNotFoundError(
                        f"{s.source}: image file not found: {s.image} "
                        "(pass missing='skip' / --skip-missing to drop such samples)"
                    )
                continue
        kept.append(s)
    return kept, len(samples) - len(kept)


__all__ = ["READERS", "DataFormatError", "check_images", "parse_spec", "read", "read_source"]

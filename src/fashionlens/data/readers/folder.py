"""Image-folder data sets: ``root/<class>/*.jpg``, or the same under ``root/{train,validation,val,test}/``
(spec ``folder:ROOT``); and a plain folder of unlabelled images, searched recursively (spec ``images:ROOT``).

Class names are the sorted folder names (the union over splits); files are sorted; hidden files and
folders (leading ".") are ignored, and so are files with other extensions.  ``validation`` is reported as
split ``"val"``.  Only the class folder's direct children are read.
"""

from __future__ import annotations

import os

from fashionlens.data.readers import check_images
from fashionlens.data.samples import DatasetInfo, Sample, SampleSet

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLIT_FOLDERS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def _visible_dirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _images(path: str) -> list[str]:
    return sorted(
        e.name for e in os.scandir(path)
        if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file()
    )


def _layout(root: str) -> dict[str | None, str]:
    """Split name (None when the root holds the classes directly) -> folder holding the class folders."""
    top = _visible_dirs(root)
    splits = [d for d in top if d in SPLIT_FOLDERS]
    if not splits:
        return {None: root}
    if len(splits) != len(top):
        others = [d for d in top if d not in SPLIT_FOLDERS]
        raise ValueError(f"{root}: mixes split folders ({', '.join(splits)}) with class folders "
                         f"({', '.join(others[:5])}); use either root/<class>/ or root/<split>/<class>/")
    names = [SPLIT_FOLDERS[d] for d in splits]
    if len(set(names)) != len(names):
        raise ValueError(f"{root}: both 'val' and 'validation' folders exist; keep one")
    return {SPLIT_FOLDERS[d]: os.path.join(root, d) for d in splits}


def list_images(folder: str) -> list[str]:
    """Image files (``IMAGE_EXTENSIONS``, any case) under ``folder``, recursively, sorted; hidden entries skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in files
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _root(path: str, missing: str, expected: str) -> str:
    """The absolute folder ``path``; FileNotFoundError / NotADirectoryError (saying ``expected``) when it is not one."""
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', not {missing!r}")
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder not found: {path}")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{path} is not a folder ({expected})")
    return root


def read_images(path: str, *, missing: str = "error") -> SampleSet:
    """Every image under ``path`` (recursively, sorted), unlabelled; ``Sample.source`` is the path relative
    to the root.  FileNotFoundError / NotADirectoryError for a bad root, ValueError when it holds no image."""
    root = _root(path, missing, "give a folder of images or a data spec")
    files = list_images(root)
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found in it or its subfolders")
    return SampleSet([Sample(image=f, source=os.path.relpath(f, root)) for f in files], DatasetInfo("images", root=root))


def read_folder(path: str, *, missing: str = "error") -> SampleSet:
    """Read an image-folder data set; each image's category is its folder's class index.

    ``Sample.source`` is the image path relative to the root.  Raises FileNotFoundError /
    NotADirectoryError for a bad root and ValueError when it holds no images.
    """
    root = _root(path, missing, "expected root/<class>/*.jpg or root/<split>/<class>/...")
    found: list[tuple[str | None, str, str]] = []  # (split, class, file path)
    for split, base in _layout(root).items():
        for cls in _visible_dirs(base):
            found += [(split, cls, os.path.join(base, cls, f)) for f in _images(os.path.join(base, cls))]
    if not found:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found in root/<class>/ or "
                         "root/<split>/<class>/ folders")
    classes = sorted({cls for _, cls, _ in found})
    lookup = {c: i for i, c in enumerate(classes)}
    samples = [
        Sample(image=file, source=os.path.relpath(file, root), category=lookup[cls], category_name=cls, split=split)
        for split, cls, file in found
    ]
    info = DatasetInfo("folder", categories=classes, category_types=[0] * len(classes),
                       category_paths=[c.replace(".", "_") for c in classes], root=root)
    kept, skipped = check_images(samples, missing)
    return SampleSet(kept, info, skipped)

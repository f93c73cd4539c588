"""The catalog: garment items in SQLite (the source of truth, embeddings included), a vector index derived
from it, and the stored images; ``build`` embeds a data set or folder into one.

* ``catalog``: :class:`Catalog` (open / create, add, remove, update, search; crash recovery) and :func:`build`;
  labels with their provenance (``answer``, ``labels``, ``review_queue``);
* ``store``: the SQLite item store (items, label history) and metadata checks;
* ``manifest``: :func:`export_manifest`, the answered labels as a training manifest;
* ``words``: search by words (``Catalog.find_words`` / ``search_words``): a query parsed against the label
  vocabulary, items ranked by their stored labels and predictions;
* ``index_cache``: the vector index as a cache of the store (sync, refresh across processes, rebuild);
* ``reindex``: re-embedding every item with a new model while the old one serves, then an atomic switch
  (``Catalog.reindex(model)``; resume, abort; :class:`ModelChangedError` when a switch comes between a query's
  embedding and its search);
* ``files``: the stored image files and the writer lock.
"""

from fashionlens.catalog.catalog import Catalog, build
from fashionlens.catalog.files import ImageEntry
from fashionlens.catalog.manifest import export_manifest
from fashionlens.catalog.reindex import ModelChangedError
from fashionlens.inference import crop_box, crop_garments

__all__ = ["Catalog", "ImageEntry", "ModelChangedError", "build", "crop_box", "crop_garments", "export_manifest"]

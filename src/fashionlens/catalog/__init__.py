"""The catalog: garment items in SQLite (the source of truth, embeddings included), a vector index derived
from it, and the stored images; ``build`` embeds a data set or folder into one.

* ``catalog``: :class:`Catalog` (open / create, add, remove, update, search; crash recovery) and :func:`build`;
* ``store``: the SQLite item store and metadata checks;
* ``index_cache``: the vector index as a cache of the store (sync, refresh across processes, rebuild);
* ``files``: the stored image files and the writer lock.
"""

from fashionlens.catalog.catalog import Catalog, build
from fashionlens.catalog.files import ImageEntry
from fashionlens.inference import crop_box, crop_garments

__all__ = ["Catalog", "ImageEntry", "build", "crop_box", "crop_garments"]

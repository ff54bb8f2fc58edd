"""Where bytes live beyond the local cache: one backend interface, several places.

The local blob store, read-only library directories and an S3-compatible
object store all answer the same few questions (``Backend``), so the tiers a
machine reads through are a list of backends (``Tiers``), not branches in
the factories.
"""

from .base import Backend, StorageError, blob_key
from .local import DirBackend
from .tiers import TieredBlobStore, Tiers

__all__ = ["Backend", "DirBackend", "StorageError", "TieredBlobStore", "Tiers", "blob_key"]

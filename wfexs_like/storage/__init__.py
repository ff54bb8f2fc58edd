"""Where bytes live beyond the local cache: one backend interface, several places.

The local blob store, read-only library directories and an S3-compatible
object store all answer the same few questions (``Backend``), so the tiers a
machine reads through are a list of backends (``Tiers``), not branches in
the factories. ``open_tiers`` builds that list from the settings
(``--library-dir``, ``--remote-cache``, ``--no-remote``).
"""

from .base import Backend, StorageAccessError, StorageError, StorageUnreachableError, blob_key
from .local import DirBackend
from .tiers import TieredBlobStore, Tiers, open_tiers

__all__ = [
    "Backend",
    "DirBackend",
    "StorageAccessError",
    "StorageError",
    "StorageUnreachableError",
    "TieredBlobStore",
    "Tiers",
    "blob_key",
    "open_tiers",
]

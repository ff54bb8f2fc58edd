"""The local cache: the blob store, tag resolutions, snapshots, and the reference's handler API."""

from ..images.blobstore import BlobStore
from .handler import ContainerCacheHandler, ContainerFileNamingMethod
from .paths import ENV_CACHE_DIR, default_cache_dir
from .snapshots import SNAPSHOT_KINDS, CacheHit, ImageCache, SnapshotKind

__all__ = [
    "ENV_CACHE_DIR",
    "SNAPSHOT_KINDS",
    "BlobStore",
    "CacheHit",
    "ContainerCacheHandler",
    "ContainerFileNamingMethod",
    "ImageCache",
    "SnapshotKind",
    "default_cache_dir",
]

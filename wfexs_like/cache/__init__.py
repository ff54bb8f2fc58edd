"""The local cache: the blob store, tag resolutions, snapshots, the reference's handler API, the
lifecycle verbs (list, size, inspect, verify, remove, prune, collect garbage), and the same cache
reading through library dirs and a remote cache (``TieredImageCache``)."""

from ..images.blobstore import BlobStore
from .garbage import DEFAULT_GRACE, GcItem, GcReport, collect_garbage
from .handler import ContainerCacheHandler, ContainerFileNamingMethod
from .integrity import BadBlob, BrokenEntry, VerifyReport, verify_cache
from .inventory import (
    ENTRY_KINDS,
    CacheEntry,
    DiskUsage,
    Inspection,
    disk_usage,
    inspect_entries,
    scan_entries,
    select_entries,
)
from .library import nextflow_names
from .lifecycle import FreedBlob, RemovalReport, prune, remove_references
from .paths import ENV_CACHE_DIR, default_cache_dir
from .snapshots import SNAPSHOT_KINDS, CacheHit, ImageCache, SnapshotKind
from .tiered import TieredImageCache
from .usage import claim_dir

__all__ = [
    "DEFAULT_GRACE",
    "ENTRY_KINDS",
    "ENV_CACHE_DIR",
    "SNAPSHOT_KINDS",
    "BadBlob",
    "BlobStore",
    "BrokenEntry",
    "CacheEntry",
    "CacheHit",
    "ContainerCacheHandler",
    "ContainerFileNamingMethod",
    "DiskUsage",
    "FreedBlob",
    "GcItem",
    "GcReport",
    "ImageCache",
    "Inspection",
    "RemovalReport",
    "SnapshotKind",
    "TieredImageCache",
    "VerifyReport",
    "claim_dir",
    "collect_garbage",
    "default_cache_dir",
    "disk_usage",
    "inspect_entries",
    "nextflow_names",
    "prune",
    "remove_references",
    "scan_entries",
    "select_entries",
    "verify_cache",
]

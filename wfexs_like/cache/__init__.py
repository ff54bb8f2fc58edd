"""The local cache: the blob store, tag resolutions, snapshots, the reference's handler API, the
lifecycle verbs (list, size, inspect, verify, remove, prune, collect garbage), and the same cache
reading through library dirs and a remote cache (``TieredImageCache``).

The names load on first use (PEP 562): a re-stage needs the snapshots, not the
lifecycle verbs' code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "BadBlob": ".integrity",
    "BlobStore": "..images.blobstore",
    "BrokenEntry": ".integrity",
    "CacheEntry": ".inventory",
    "CacheHit": ".snapshots",
    "ContainerCacheHandler": ".handler",
    "ContainerFileNamingMethod": ".handler",
    "DEFAULT_GRACE": ".garbage",
    "DiskUsage": ".diskusage",
    "ENTRY_KINDS": ".inventory",
    "ENV_CACHE_DIR": ".paths",
    "FreedBlob": ".lifecycle",
    "GcItem": ".garbage",
    "GcReport": ".garbage",
    "ImageCache": ".snapshots",
    "Inspection": ".inspection",
    "RemovalReport": ".lifecycle",
    "SNAPSHOT_KINDS": ".names",
    "SnapshotKind": ".names",
    "TieredImageCache": ".tiered",
    "VerifyReport": ".integrity",
    "claim_dir": ".usage",
    "collect_garbage": ".garbage",
    "default_cache_dir": ".paths",
    "disk_usage": ".diskusage",
    "inspect_entries": ".inspection",
    "nextflow_names": ".library",
    "prune": ".lifecycle",
    "remove_references": ".lifecycle",
    "scan_entries": ".inventory",
    "select_entries": ".inventory",
    "verify_cache": ".integrity",
}

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from ..images.blobstore import BlobStore
    from .diskusage import DiskUsage, disk_usage
    from .garbage import DEFAULT_GRACE, GcItem, GcReport, collect_garbage
    from .handler import ContainerCacheHandler, ContainerFileNamingMethod
    from .inspection import Inspection, inspect_entries
    from .integrity import BadBlob, BrokenEntry, VerifyReport, verify_cache
    from .inventory import ENTRY_KINDS, CacheEntry, scan_entries, select_entries
    from .library import nextflow_names
    from .lifecycle import FreedBlob, RemovalReport, prune, remove_references
    from .names import SNAPSHOT_KINDS, SnapshotKind
    from .paths import ENV_CACHE_DIR, default_cache_dir
    from .snapshots import CacheHit, ImageCache
    from .tiered import TieredImageCache
    from .usage import claim_dir

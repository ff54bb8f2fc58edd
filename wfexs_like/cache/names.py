"""What a cache's directories and files are called, in a module that imports nothing of ours.

A reader that only lists the cache (``cache ls``) needs these names and none
of the machinery that writes under them: the blob store, the snapshot and
staging code, the records' model. Importing that machinery was about a third
of ``cache ls``'s start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

#: The suffix of a snapshot's metadata sidecar: ``model.META_JSON_POSTFIX``, the reference's
#: name, spelled again here because ``model`` stays below the cache (a test holds the two equal).
META_JSON_POSTFIX = "_meta.json"

#: The kind of a tag resolution: the registry image (manifest, config, layers) in the blob store.
IMAGE_KIND = "image"

SnapshotKind = Literal["oci-layout", "sif", "docker-archive"]
SNAPSHOT_KINDS: tuple[SnapshotKind, ...] = ("oci-layout", "sif", "docker-archive")


class CacheDirs:
    """The directories of the cache under ``root``, named without creating or opening anything
    (``ImageCache`` names its own from these)."""

    __slots__ = ("blobs_dir", "refs_dir", "root", "snapshots_dir", "tags_dir", "usage_dir")

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.snapshots_dir = self.root / "snapshots"
        self.tags_dir = self.root / "tags"
        self.refs_dir = self.root / "refs"
        self.usage_dir = self.root / "usage"

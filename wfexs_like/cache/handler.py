"""``ContainerCacheHandler``: the reference's cache contract, as thin wrappers over ``ImageCache``.

WfExS-backend's factories call ``query``/``transfer``/``update``/``invalidate``
and ``genStagedContainersDirPaths`` with container records; those names and
signatures are kept so code written against the reference runs unchanged.
Each call turns the record into its canonical reference and asks the typed
cache (``snapshots.ImageCache``), whose keys never collide. The reference
re-hashes whole images on every query, stores each image whole and has no
locking; this one costs a few ``stat``\\s per query, shares blobs, and
publishes by rename under cross-process locks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CacheError
from ..images.blobstore import BlobStore
from ..model import META_JSON_POSTFIX, ContainerTaggedName, ImageMetadata
from ..references import nextflow_file_name, parse_reference
from ..storage import Tiers
from .names import SnapshotKind
from .snapshots import CacheHit, ImageCache, read_json
from .tiered import TieredImageCache

logger = logging.getLogger(__name__)

ContainerFileNamingMethod = Callable[[str], str]

#: The snapshot each engine stages when nobody asks for another kind.
ENGINE_KINDS: dict[str, SnapshotKind] = {
    "docker": "oci-layout",
    "podman": "oci-layout",
    "singularity": "sif",
    "apptainer": "sif",
}


class ContainerCacheHandler:
    """Query, fill, stage and invalidate container snapshots of one engine's kind."""

    def __init__(
        self,
        containers_cache_dir: Path | None,
        engine_name: str,
        simple_file_name_method: ContainerFileNamingMethod | None = None,
        *,
        kind: SnapshotKind | None = None,
        platform: str | None = None,
        tiers: Tiers | None = None,
    ) -> None:
        """``tiers``: library dirs and a remote cache to read through and publish to (``open_tiers``)."""
        self.cache = (
            TieredImageCache(containers_cache_dir, tiers) if tiers else ImageCache(containers_cache_dir)
        )
        self.containersCacheDir = self.cache.root
        self.store: BlobStore = self.cache.store
        self.snapshotsDir = self.cache.snapshots_dir
        self.engine_name = engine_name
        self.kind: SnapshotKind = kind or ENGINE_KINDS.get(engine_name, "oci-layout")
        self.engineContainersSymlinkDir = self.cache.refs_dir / self.kind
        self.engineContainersSymlinkDir.mkdir(parents=True, exist_ok=True)
        self.simpleFileNameMethod: ContainerFileNamingMethod = simple_file_name_method or nextflow_file_name
        self.platform = platform

    # -- naming ---------------------------------------------------------------------------
    def reference_of(self, container: ContainerTaggedName) -> str:
        """The canonical reference a record names: what the cache is keyed by."""
        return parse_reference(
            container.origTaggedName, container_type=container.type, registries=container.registries
        ).canonical()

    def file_name(self, container: ContainerTaggedName) -> str:
        name = self.simpleFileNameMethod(container.origTaggedName)
        if not name or "/" in name or name in (".", "..") or name.startswith("."):
            raise CacheError(
                f"the file naming method gave {name!r} for {container.origTaggedName!r}; "
                "it must be a plain file name (no '/', not starting with '.')"
            )
        return name

    def genStagedContainersDirPaths(
        self, container: ContainerTaggedName, stagedContainersDir: Path
    ) -> tuple[Path, Path]:
        name = self.file_name(container)
        staged = Path(stagedContainersDir)
        return staged / name, staged / (name + META_JSON_POSTFIX)

    # -- the reference's four operations ---------------------------------------------------
    def lookup(self, container: ContainerTaggedName) -> CacheHit | None:
        self.file_name(container)  # a naming method that escapes the dir fails first
        return self.cache.lookup(self.reference_of(container), self.kind, self.platform)

    def query(self, container: ContainerTaggedName) -> tuple[bool, Path, Path, str | None]:
        """Is a trustworthy snapshot of this tag cached? (trusted, path, meta path, fingerprint)."""
        hit = self.lookup(container)
        if hit is None:
            name = self.file_name(container)
            return False, self.snapshotsDir / name, self.snapshotsDir / (name + META_JSON_POSTFIX), None
        return True, hit.snapshot, hit.metadata_path, hit.fingerprint

    def transfer(
        self, container: ContainerTaggedName, stagedContainersDir: Path, force: bool = False
    ) -> tuple[Path, Path] | None:
        """Stage the cached snapshot and its sidecar into ``stagedContainersDir`` (None: not cached)."""
        hit = self.lookup(container)
        if hit is None:
            return None
        path, meta_path = self.genStagedContainersDirPaths(container, stagedContainersDir)
        return self.cache.stage(hit, path, meta_path, force=force)

    def update(
        self,
        container: ContainerTaggedName,
        image_path: Path,
        image_metadata_path: Path,
        do_move: bool = True,
    ) -> str:
        """Put a freshly built snapshot in the cache and point this tag at it; return its fingerprint."""
        meta = read_json(Path(image_metadata_path))
        hit = self.cache.put(
            self.reference_of(container),
            self.kind,
            Path(image_path),
            meta,
            platform=self.platform,
            move=do_move,
        )
        if do_move:
            Path(image_metadata_path).unlink(missing_ok=True)
        return hit.fingerprint

    def invalidate(self, container: ContainerTaggedName) -> None:
        """Forget this tag's entry (the snapshot stays until gc: other tags may share it)."""
        self.cache.forget(self.reference_of(container), self.kind, self.platform)

    # -- extras -------------------------------------------------------------------------------
    def compute_fingerprint(self, snapshot: Path) -> str:
        return self.cache.compute_fingerprint(snapshot)

    def verify_snapshot(self, snapshot: Path, fingerprint: str, full: bool = False) -> list[str]:
        return self.cache.verify_snapshot(snapshot, fingerprint, full)

    def read_metadata(self, container: ContainerTaggedName) -> dict[str, Any] | None:
        """The cached sidecar of this tag; CacheError when it exists but is unreadable."""
        fingerprint = self.cache.entry(self.reference_of(container), self.kind, self.platform)
        if fingerprint is None:
            return None
        return read_json(self.cache.metadata_path(fingerprint))

    def metadata(self, container: ContainerTaggedName) -> ImageMetadata | None:
        hit = self.lookup(container)
        return hit.metadata if hit is not None else None

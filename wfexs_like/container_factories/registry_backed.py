"""Factories whose images come from OCI registries: Docker, Podman, and Singularity's ``docker://``.

They share how a tag becomes blobs in the store: one download pool across
all the tags of a call (a layer shared by two images is fetched once),
digest pins honoured exactly, and a moved-away pin falling back to its tag
only when the caller allows it.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..cache.blobstore import BlobStore
from ..errors import (
    ContainerFactoryException,
    ContainerNotFoundException,
    IntegrityError,
    ManifestUnknownError,
)
from ..model import Container, ContainerTaggedName, ImageMetadata
from ..references import Reference
from ..registry.client import PullResult, RegistryClient
from .base import ContainerFactory


def pin_from_fingerprint(fingerprint: str | None) -> str | None:
    """The manifest digest a ``registry/repo@sha256:...`` fingerprint pins, if any."""
    if fingerprint and "@sha256:" in fingerprint:
        return "sha256:" + fingerprint.rsplit("@sha256:", 1)[1]
    return None


class RegistryBackedFactory(ContainerFactory):
    #: Snapshots of this factory are directories (OCI layouts) rather than files (SIF).
    SNAPSHOT_IS_DIR: ClassVar[bool] = True

    def __init__(
        self,
        *args: Any,
        registry_client: RegistryClient | None = None,
        allow_tag_fallback: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._client = registry_client
        self.allow_tag_fallback = allow_tag_fallback
        self._prefetched: dict[str, PullResult | BaseException] = {}

    @property
    def registry_client(self) -> RegistryClient:
        if self._client is None:
            self._client = RegistryClient(
                insecure_registries=self.insecure_registries, platform=self.platform
            )
        return self._client

    @property
    def store(self) -> BlobStore:
        return self.cc_handler.store

    def _needs_registry(self, tag: ContainerTaggedName, ref: Reference) -> bool:
        """Whether materializing ``tag`` will pull from a registry (subclasses narrow this)."""
        return ref.scheme == "docker" and not self._usable_injected(tag)

    # -- materialize: the same steps for every snapshot kind -----------------------
    def materializeSingleContainer(
        self,
        tag: ContainerTaggedName,
        containers_dir: Path | None = None,
        offline: bool = False,
        force: bool = False,
    ) -> Container | None:
        """Injected snapshot if usable, else the cache when offline, else fetch; then stage."""
        cdir = Path(containers_dir) if containers_dir is not None else self.stagedContainersDir
        ref = self.parse_tag(tag)
        if isinstance(tag, Container) and self._usable_injected(tag):
            self._ingest_injected(tag, ref)
        elif offline:
            return self._offline_or_raise(tag, ref, cdir, force)
        else:
            self._fill_cache(tag, ref, force)
        return self._stage(tag, ref, cdir, force)

    @abc.abstractmethod
    def _fill_cache(self, tag: ContainerTaggedName, ref: Reference, force: bool) -> None:
        """Fetch (or build) the snapshot of ``tag`` and put it in the cache under its tag."""

    @abc.abstractmethod
    def _ingest_injected(self, tag: Container, ref: Reference) -> None:
        """Adopt an injected record's verified snapshot into this cache, keeping its provenance."""

    def _usable_injected(self, tag: ContainerTaggedName) -> bool:
        """An injected record whose staged snapshot is still there, of our kind, and intact."""
        if not isinstance(tag, Container) or tag.localPath is None or tag.image_signature is None:
            return False
        path = Path(tag.localPath)
        if not (path.is_dir() if self.SNAPSHOT_IS_DIR else path.is_file()):
            return False
        return not self.cc_handler.verify_snapshot(path, tag.image_signature)

    @staticmethod
    def _pin(tag: ContainerTaggedName, ref: Reference) -> str | None:
        return ref.digest or (pin_from_fingerprint(tag.fingerprint) if isinstance(tag, Container) else None)

    def _prefetch(self, tags: Sequence[ContainerTaggedName], *, offline: bool, force: bool) -> None:
        """Pull every tag that needs the network through one shared download pool."""
        self._prefetched.clear()
        if offline:
            return
        wanted: list[tuple[str, tuple[str, str, str]]] = []
        for tag in tags:
            try:
                ref = self.parse_tag(tag)
            except ContainerFactoryException:
                continue
            if not self._needs_registry(tag, ref):
                continue
            reference = self._pin(tag, ref) or ref.tag or "latest"
            wanted.append((ref.canonical(), (ref.registry or "docker.io", ref.repository, reference)))
        if len(wanted) < 2:
            return
        results = self.registry_client.pull_many([w[1] for w in wanted], self.store, platform=self.platform)
        for (canonical, _), res in zip(wanted, results, strict=True):
            self._prefetched[canonical] = res

    def _pull(self, tag: ContainerTaggedName, ref: Reference) -> PullResult:
        """Blobs of ``tag`` into the store (or the prefetched result); pins are exact."""
        pin = self._pin(tag, ref)
        registry = ref.registry or "docker.io"
        result = self._prefetched.pop(ref.canonical(), None)
        try:
            if isinstance(result, BaseException):
                raise result
            if result is None:
                result = self.registry_client.pull(
                    registry, ref.repository, pin or ref.tag or "latest", self.store, platform=self.platform
                )
            return result
        except ManifestUnknownError as e:
            if not pin:
                raise
            if ref.tag and self.allow_tag_fallback:
                self.logger.warning("%s no longer has %s; falling back to tag %s", registry, pin, ref.tag)
                return self.registry_client.pull(
                    registry, ref.repository, ref.tag, self.store, platform=self.platform
                )
            hint = f"; allow falling back to tag '{ref.tag}' to use what it points to now" if ref.tag else ""
            raise ContainerNotFoundException(
                f"{registry}/{ref.repository} no longer has the pinned digest {pin}{hint}"
            ) from e

    # -- staging: the same for every snapshot kind ------------------------------
    def _stage_cached(
        self, tag: ContainerTaggedName, ref: Reference, cdir: Path, force: bool
    ) -> Container | None:
        if not self.cc_handler.query(tag)[0]:
            return None
        return self._stage(tag, ref, cdir, force)

    def _stage(self, tag: ContainerTaggedName, ref: Reference, cdir: Path, force: bool) -> Container:
        paths = self.cc_handler.transfer(tag, cdir, force=force)
        if paths is None:
            raise ContainerNotFoundException(
                f"{tag.origTaggedName}: the cache entry vanished or is damaged; retry with force=True"
            )
        path, meta_path = paths
        meta = ImageMetadata.from_json(json.loads(meta_path.read_text()))
        return self._record(tag, ref, path, meta_path, meta)

    @abc.abstractmethod
    def _record(
        self, tag: ContainerTaggedName, ref: Reference, path: Path, meta_path: Path, meta: ImageMetadata
    ) -> Container:
        """The Container record for a staged snapshot (engines differ in what they call signature)."""

    def _offline_or_raise(
        self, tag: ContainerTaggedName, ref: Reference, cdir: Path, force: bool
    ) -> Container:
        staged = self._stage_cached(tag, ref, cdir, force)
        if staged is None:
            raise ContainerNotFoundException(
                f"{tag.origTaggedName} ({ref.canonical()}) is not in the cache at {self.containersCacheDir} "
                "and offline mode forbids fetching it; materialize it once with network access"
            )
        return staged

    # -- deploy: the staged snapshot must be there and intact --------------------
    def _verified_staged_snapshot(
        self, container: Container, containers_dir: Path | None, *, restage: bool
    ) -> Path:
        """The staged snapshot of ``container``, re-staged from the cache when missing (or when
        ``restage``), and verified against its recorded fingerprint.

        A snapshot whose bytes no longer match is refused: deploying it would
        run something other than what provenance says.
        """
        cdir = Path(containers_dir) if containers_dir is not None else self.stagedContainersDir
        path = Path(container.localPath) if container.localPath else None
        if path is None or not path.exists():
            path, _ = self.cc_handler.genStagedContainersDirPaths(container, cdir)
        if (restage or not path.exists()) and self.cc_handler.transfer(
            container, cdir, force=restage
        ) is None:
            raise ContainerNotFoundException(
                f"{container.origTaggedName}: no staged snapshot at {path} and none in the cache; "
                "materialize it first"
            )
        if not container.image_signature:
            raise IntegrityError(
                f"{container.origTaggedName}: the record has no image_signature to verify against; "
                "re-materialize it to get a verifiable record"
            )
        problems = self.cc_handler.verify_snapshot(path, container.image_signature)
        if problems:
            raise IntegrityError(
                f"refusing to deploy {container.origTaggedName}: the staged snapshot at {path} "
                f"does not match its recorded fingerprint {container.image_signature}: "
                + "; ".join(problems)
                + ". Re-materialize it (force=True) to restore a trustworthy copy.",
                expected=container.image_signature,
            )
        return path

    @staticmethod
    def pull_source(result: PullResult) -> dict[str, Any]:
        return {
            "source": "registry",
            "index_digest": result.index_digest,
            "downloaded_bytes": result.downloaded_bytes,
            "downloaded_blobs": result.downloaded_blobs,
            "reused_blobs": result.reused_blobs,
        }

"""The materialize policy every image-backed factory shares.

For each tag, in this order: an injected record's staged snapshot (verified)
is adopted; offline, the caches answer alone (a cached snapshot of this
kind, or one built from blobs another kind already cached); online, the
source is fetched into the blob store (a pinned digest that is cached costs
no request at all) and the snapshot of this factory's kind is built from it
unless the cache already holds one of that exact image. The result is
staged and described by a record. Engine modules say only which kind they
stage, which engine deploys, and what their records call a signature.

"The caches" are the local one and, when the factory has ``tiers``, the
library dirs and the remote cache behind it (``cache.tiered``): the policy
here does not change per tier. What changes with the mode is who may say
what a tag means: offline or for a pinned digest, any cache; online, for a
tag, only a site library (it pins the site's images) and otherwise the
registry.

Bit rot (``healing``): ``--force`` hashes in full every blob it would reuse
from the store, before and after the pull, so a rotten one is moved aside
and fetched again. A failure that the cheap checks let through (a build
that breaks on a layer) is settled by hashing the image's blobs: rotten
ones are evicted with the snapshot built from them and, online, fetched
again and the build retried once; offline it is a clear error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from ..cache import CacheHit, ImageCache
from ..cache.build import build_snapshot
from ..digests import normalize_fingerprint
from ..engines.base import Engine
from ..engines.docker import DockerEngine
from ..errors import (
    CacheError,
    ContainerEngineException,
    ContainerFactoryException,
    ContainerNotFoundException,
    UnvouchedDigestError,
)
from ..images.blobstore import BlobStore
from ..images.store import StoreImage, rehash_image, stored_image_blobs
from ..model import Container, ContainerTaggedName
from ..references import Reference
from .base import ContainerFactory
from .healing import downloaded_by, may_be_rot, rot_error
from .injected import has_staged_snapshot, injected_image
from .sources import ImageSources, pin_from_fingerprint
from .staged import StagedSnapshots

if TYPE_CHECKING:  # the HTTP stack loads when a registry is first asked, never offline
    from ..registry.client import RegistryClient


class CachedImageFactory(ContainerFactory, StagedSnapshots):
    """Materialize through the blob store and the typed cache; see the module docstring."""

    #: Take an image from the engine when the registry lacks it (or fails), as Docker users expect.
    ENGINE_FALLBACK: ClassVar[bool] = True

    def __init__(
        self,
        *args: Any,
        registry_client: RegistryClient | None = None,
        allow_tag_fallback: bool = False,
        engine: Engine | None = None,
        require_digest: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._client = registry_client
        #: Offline, refuse a cached image that was trusted on first use (online the client refuses it).
        self.require_digest = require_digest
        self._engine = engine
        self._docker_daemon: Engine | None = None
        self.sources = ImageSources(
            self.store,
            client=lambda: self.registry_client,
            engine=self.source_engine,
            docker_daemon=self.docker_daemon,
            platform=self.platform,
            work_dir=self.tempDir,
            allow_tag_fallback=allow_tag_fallback,
            engine_fallback=self.ENGINE_FALLBACK,
        )
        #: Blobs ``--force`` hashed in full during this materialize call (each is hashed once per call).
        self._rehashed: set[str] = set()
        self._in_call = False
        self._healing = False

    # -- collaborators ---------------------------------------------------------------------------
    @property
    def cache(self) -> ImageCache:
        return self.cc_handler.cache

    @property
    def store(self) -> BlobStore:
        return self.cc_handler.store

    @property
    def registry_client(self) -> RegistryClient:
        if self._client is None:
            from ..registry.client import RegistryClient

            self._client = RegistryClient(
                insecure_registries=self.insecure_registries, platform=self.platform
            )
        return self._client

    def source_engine(self) -> Engine | None:
        """The engine images that exist only locally are read from (None: there is none)."""
        return self._engine

    def docker_daemon(self) -> Engine:
        """What ``docker-daemon:`` tags are read from: the Docker engine, whatever this factory deploys to."""
        engine = self.source_engine()
        if engine is not None and engine.name == "docker":
            return engine
        if self._docker_daemon is None:
            self._docker_daemon = DockerEngine()
        return self._docker_daemon

    # -- materialize ----------------------------------------------------------------------------
    @staticmethod
    def _pin(tag: ContainerTaggedName, ref: Reference) -> str | None:
        return ref.digest or (pin_from_fingerprint(tag.fingerprint) if isinstance(tag, Container) else None)

    def materializeContainers(self, *args: Any, **kwargs: Any) -> list[Container]:
        self._rehashed, self._in_call = set(), True
        try:
            return super().materializeContainers(*args, **kwargs)
        finally:
            self._rehashed, self._in_call = set(), False

    def _prefetch(self, tags: Sequence[ContainerTaggedName], *, offline: bool, force: bool) -> None:
        if offline:
            return
        wanted: list[tuple[Reference, str | None]] = []
        for tag in tags:
            try:
                ref = self.parse_tag(tag)
            except ContainerFactoryException:
                continue
            pin = self._pin(tag, ref)
            if self._fetches(tag, ref) and not self._available(tag, ref, pin, force):
                if force:  # before the pool reuses them
                    self._rehash_known(ref, pin)
                wanted.append((ref, pin))
        self.sources.prefetch(wanted)

    def _fetches(self, tag: ContainerTaggedName, ref: Reference) -> bool:
        """Whether this factory reads ``ref`` through ``ImageSources`` (subclasses narrow it)."""
        return not has_staged_snapshot(tag)

    def materializeSingleContainer(
        self,
        tag: ContainerTaggedName,
        containers_dir: Path | None = None,
        offline: bool = False,
        force: bool = False,
    ) -> Container | None:
        cdir = self.containers_dir(containers_dir)
        ref = self.parse_tag(tag)
        pin = self._pin(tag, ref)
        if not self._in_call:
            self._rehashed = set()
        # In use from before the first blob is looked at: a concurrent prune/rm skips this entry.
        self.cache.hold(ref.canonical(), self.platform_key)
        injected = injected_image(tag, self.cache) if isinstance(tag, Container) else None
        if injected is not None:
            hit = self._snapshot(ref, *injected, force=force, offline=offline)
        elif offline and not ref.is_local:
            hit = self._known(tag, ref, pin, offline=True) or self._not_cached(tag, ref)
            if self.require_digest and pin is None and hit.metadata.digest_source == "tofu":
                raise UnvouchedDigestError(
                    f"{tag.origTaggedName} ({ref.canonical()}): the cached image "
                    f"{hit.metadata.manifest_digest} was fetched from a registry that sent no "
                    "Docker-Content-Digest header (trust on first use); refused because --require-digest "
                    "is set. Materialize it with network access from a registry that sends the header, "
                    "or pin it by digest."
                )
        else:
            hit = self._available(tag, ref, pin, force) or self._fetch(tag, ref, pin, force)
        return self._stage(tag, ref, hit, cdir, force)

    def _available(
        self, tag: ContainerTaggedName, ref: Reference, pin: str | None, force: bool
    ) -> CacheHit | None:
        """Online: what the caches may give without the registry (None: fetch it)."""
        if force:
            return None
        if ref.is_local:
            return self._cached(ref, pin)
        return self._known(tag, ref, pin, offline=False)

    def _cached(self, ref: Reference, pin: str | None) -> CacheHit | None:
        """A cached snapshot of a local file's image of exactly ``pin`` (no pin: none, read the file)."""
        if pin is None:
            return None
        hit = self.cache.lookup(ref.canonical(), self.kind, self.platform_key)
        return hit if hit is not None and hit.metadata.manifest_digest == pin else None

    def _fetch(self, tag: ContainerTaggedName, ref: Reference, pin: str | None, force: bool) -> CacheHit:
        if force:
            self._rehash_known(ref, pin)
        manifest_digest, source = self.sources.fetch(ref, pin)
        if force and self._rehash(manifest_digest, skip=downloaded_by(source)):
            # A blob the pull reused was rotten (now moved aside): fetch exactly that image once more.
            self.logger.warning("%s: fetching the blobs found corrupt in the cache again", ref.canonical())
            manifest_digest, source = self.sources.fetch(ref, manifest_digest)
        self.cache.record_resolution(ref.canonical(), self.platform_key, manifest_digest)
        return self._snapshot(ref, manifest_digest, source, force=force, offline=False)

    # -- integrity: --force, and failures found after the cheap checks ------------------------------
    def _rehash_known(self, ref: Reference, pin: str | None) -> None:
        """--force, before a pull: hash the blobs of the image ``ref`` named last time (or ``pin``),
        so the pull fetches the rotten ones again instead of reusing them."""
        known = pin or self.cache.resolved(ref.canonical(), self.platform_key)
        if known is not None and self.store.has(known):
            self._rehash(known)

    def _rehash(self, manifest_digest: str, skip: frozenset[str] = frozenset()) -> list[str]:
        """Hash the image's stored blobs in full (each once per call); the rotten ones, moved aside."""
        bad = rehash_image(self.store, manifest_digest, done=self._rehashed, skip=skip)
        for digest in bad:
            self.logger.warning("blob %s of image %s was corrupt in the cache", digest, manifest_digest)
        return bad

    def _heal(
        self, ref: Reference, manifest_digest: str, error: ContainerFactoryException, *, offline: bool
    ) -> tuple[str, dict[str, Any]]:
        """After ``error``: evict what is rotten and fetch it again; re-raise when nothing is rotten.

        The image's blobs are hashed in full to tell bit rot from any other
        failure. Rotten ones are moved aside and this reference's snapshot
        entry is dropped; online the image is fetched again (exactly
        ``manifest_digest``) for the caller's one retry, offline it ends here.
        """
        if self._healing or not may_be_rot(error):
            raise error
        bad = rehash_image(self.store, manifest_digest)
        if not bad:
            raise error
        self.cache.evict(ref.canonical(), self.kind, self.platform_key)
        if offline:
            raise rot_error(ref.canonical(), manifest_digest, bad, self.store) from error
        self.logger.warning(
            "%s: %s was corrupt in the cache (moved aside); fetching it again", ref.canonical(), bad[0]
        )
        return self.sources.fetch(ref, manifest_digest)

    def _known(
        self, tag: ContainerTaggedName, ref: Reference, pin: str | None, *, offline: bool
    ) -> CacheHit | None:
        """What the caches hold for ``ref`` without asking a registry (None: nothing usable).

        Offline, or for a pinned digest, every cache may answer; online, a
        tag is what the registry says now unless a site library pins it. An
        online pin whose blobs are cached is left to ``_fetch``, which reads
        them through the store at no request.
        """
        reference = ref.canonical()
        libraries_only = pin is None and not offline
        hit = self.cache.find(
            reference,
            self.kind,
            self.platform_key,
            tag=tag.origTaggedName,
            manifest=pin,
            authoritative_only=libraries_only,
        )
        if hit is not None or (pin is not None and not offline):
            return hit
        manifest_digest = pin or self.cache.resolved(
            reference, self.platform_key, authoritative_only=libraries_only
        )
        if manifest_digest is None or not self.store.has(manifest_digest):
            return None
        try:
            self.cache.fetch_image(manifest_digest)
            return self._snapshot(ref, manifest_digest, {"source": "cache"}, force=False, offline=offline)
        except CacheError as e:
            if not offline:
                self.logger.warning("%s: %s; asking the registry", reference, e)
                return None
            rotten = self._quarantined(manifest_digest)
            if rotten:
                raise rot_error(reference, manifest_digest, rotten, self.store) from e
            raise ContainerNotFoundException(
                f"{tag.origTaggedName} ({reference}) is only partly in the cache at "
                f"{self.containersCacheDir} ({e}); materialize it once with network access"
            ) from e

    def heal_staged(
        self,
        container: Container,
        cdir: Path,
        error: ContainerFactoryException,
        *,
        offline: bool,
        engine_failed: bool = False,
    ) -> None:
        """A deploy of ``container`` failed with ``error``: if the cache holds rotten bytes of its image,
        evict them and (online) materialize it again for the caller's one retry; else re-raise.

        ``engine_failed``: the engine refused the stream (Docker reports a
        corrupt layer only as a failed load), so hashing may tell why.
        """
        if not (may_be_rot(error) or (engine_failed and isinstance(error, ContainerEngineException))):
            raise error
        ref = self.parse_tag(container)
        manifest_digest = self._record_manifest(container)
        bad = rehash_image(self.store, manifest_digest) if manifest_digest else []
        signature = container.image_signature
        if signature and "=" not in signature:  # a SIF or an archive is a stored blob of its own
            sig = normalize_fingerprint(signature)
            if self.store.has(sig) and not self.store.verify(sig, full=True):
                bad.append(sig)
        if not bad:
            raise error
        self.cache.evict(ref.canonical(), self.kind, self.platform_key)
        if offline:
            raise rot_error(ref.canonical(), manifest_digest or str(signature), bad, self.store) from error
        self.logger.warning(
            "%s: %s was corrupt in the cache (moved aside); fetching it again", ref.canonical(), bad[0]
        )
        # Not the staged copy (it holds the rotten bytes): the record's pinned image, from its source.
        again = dataclasses.replace(container, localPath=None, metadataLocalPath=None)
        self._healing = True  # this is the one retry: a build that breaks again is not healed again
        try:
            self.materializeSingleContainer(again, cdir, offline=False, force=False)
        finally:
            self._healing = False

    def _record_manifest(self, container: Container) -> str | None:
        """The manifest digest a record pins (its fingerprint), else what the cache resolved its tag to."""
        pinned = pin_from_fingerprint(container.fingerprint)
        if pinned is not None:
            return pinned
        return self.cache.resolved(self.parse_tag(container).canonical(), self.platform_key)

    def _quarantined(self, manifest_digest: str) -> list[str]:
        """The image's blobs that are missing from the store because they were found rotten."""
        try:
            image_blobs = stored_image_blobs(self.store, manifest_digest)
        except CacheError:
            return []
        corrupt = self.store.root / "corrupt"
        return [d for d in image_blobs if not self.store.has(d) and (corrupt / d.split(":", 1)[1]).exists()]

    def _not_cached(self, tag: ContainerTaggedName, ref: Reference) -> NoReturn:
        tiers = self.cache.elsewhere()
        raise ContainerNotFoundException(
            f"{tag.origTaggedName} ({ref.canonical()}) is not in the cache at {self.containersCacheDir}"
            + (f" nor in {tiers}" if tiers else "")
            + " and offline mode forbids fetching it; materialize it once with network access"
        )

    def _snapshot(
        self, ref: Reference, manifest_digest: str, source: dict[str, Any], *, force: bool, offline: bool
    ) -> CacheHit:
        """The cached snapshot of this kind of that exact image, built from the store if needed.

        A build that fails on rotten blobs evicts them and (online) fetches
        them again and builds once more (``_heal``).
        """
        reference = ref.canonical()
        if not force:
            hit = self.cache.find(reference, self.kind, self.platform_key, manifest=manifest_digest)
            if hit is not None:
                return hit
        try:
            return self._build(ref, manifest_digest, source)
        except ContainerFactoryException as e:
            digest, source = self._heal(ref, manifest_digest, e, offline=offline)
        return self._build(ref, digest, source)

    def _build(self, ref: Reference, manifest_digest: str, source: dict[str, Any]) -> CacheHit:
        reference = ref.canonical()
        return build_snapshot(
            self.cache,
            reference,
            self.kind,
            StoreImage(self.store, manifest_digest),
            platform=self.platform_key,
            name=self.snapshot_name(ref),
            registry=ref.registry,
            repository=ref.repository if ref.is_registry or ref.scheme == "docker-daemon" else None,
            source=source,
        )

    def snapshot_name(self, ref: Reference) -> str:
        """The image name a snapshot carries (what the engine will call the image)."""
        return ref.canonical()

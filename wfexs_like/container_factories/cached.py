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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from ..cache import CacheHit, ImageCache
from ..cache.build import build_snapshot
from ..engines.base import Engine
from ..engines.docker import DockerEngine
from ..errors import CacheError, ContainerFactoryException, ContainerNotFoundException
from ..images.blobstore import BlobStore
from ..images.store import StoreImage
from ..model import Container, ContainerTaggedName
from ..references import Reference
from .base import ContainerFactory
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
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._client = registry_client
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
        # In use from before the first blob is looked at: a concurrent prune/rm skips this entry.
        self.cache.hold(ref.canonical(), self.platform_key)
        injected = injected_image(tag, self.cache) if isinstance(tag, Container) else None
        if injected is not None:
            hit = self._snapshot(ref, *injected, force=force)
        elif offline and not ref.is_local:
            hit = self._known(tag, ref, pin, offline=True) or self._not_cached(tag, ref)
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
        manifest_digest, source = self.sources.fetch(ref, pin)
        self.cache.record_resolution(ref.canonical(), self.platform_key, manifest_digest)
        return self._snapshot(ref, manifest_digest, source, force=force)

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
            return self._snapshot(ref, manifest_digest, {"source": "cache"}, force=False)
        except CacheError as e:
            if not offline:
                self.logger.warning("%s: %s; asking the registry", reference, e)
                return None
            raise ContainerNotFoundException(
                f"{tag.origTaggedName} ({reference}) is only partly in the cache at "
                f"{self.containersCacheDir} ({e}); materialize it once with network access"
            ) from e

    def _not_cached(self, tag: ContainerTaggedName, ref: Reference) -> NoReturn:
        tiers = self.cache.elsewhere()
        raise ContainerNotFoundException(
            f"{tag.origTaggedName} ({ref.canonical()}) is not in the cache at {self.containersCacheDir}"
            + (f" nor in {tiers}" if tiers else "")
            + " and offline mode forbids fetching it; materialize it once with network access"
        )

    def _snapshot(
        self, ref: Reference, manifest_digest: str, source: dict[str, Any], *, force: bool
    ) -> CacheHit:
        """The cached snapshot of this kind of that exact image, built from the store if needed."""
        reference = ref.canonical()
        if not force:
            hit = self.cache.find(reference, self.kind, self.platform_key, manifest=manifest_digest)
            if hit is not None:
                return hit
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

"""What Docker and Podman share: fetch through the registry client, snapshot as an OCI layout, deploy.

Both engines run the same images, so materializing is engine-agnostic: the
native registry client fills the blob store, an OCI layout directory whose
blobs are hard links into the store becomes the snapshot, and the cache
handler stages it. The engine is needed only to *deploy* (load the snapshot
when the engine lacks that image id) and, as a fallback, to *fetch* an image
that exists nowhere but in the local engine. Those few operations are the
abstract hooks below; ``docker.py`` and ``podman.py`` implement them.
"""

from __future__ import annotations

import abc
import contextlib
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache.blobstore import BlobStore
from ..cache.handler import write_json_atomic
from ..errors import (
    ContainerEngineException,
    ContainerFactoryException,
    IntegrityError,
    ManifestUnknownError,
    RegistryError,
)
from ..images.docker_archive import ingest_docker_archive
from ..images.image import StoredImage
from ..images.manifest import image_platform
from ..images.oci_layout import read_oci_layout, write_oci_layout
from ..model import Container, ContainerTaggedName, ContainerType, ImageMetadata
from ..references import Reference
from ..registry.client import RegistryClient
from .registry_backed import RegistryBackedFactory


@dataclass(frozen=True)
class EngineImage:
    """What an engine says about an image it holds."""

    image_id: str  # sha256:<hex>
    repo_digests: tuple[str, ...] = ()
    repo_tags: tuple[str, ...] = ()


def normalize_image_id(value: str) -> str:
    value = value.strip()
    return value if value.startswith("sha256:") else f"sha256:{value}"


class DockerLikeContainerFactory(RegistryBackedFactory):
    """Shared materialize/deploy for OCI engines; subclasses supply the engine hooks."""

    SNAPSHOT_KIND = "oci-layout"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._probe: RegistryClient | None = None
        # canonical tag -> engine-only image (or None), decided while planning the prefetch,
        # so _fetch does not ask the engine and the registry the same question again.
        self._engine_only: dict[str, EngineImage | None] = {}

    # -- engine hooks ---------------------------------------------------------
    @abc.abstractmethod
    def _engine_inspect(self, name_or_id: str) -> EngineImage | None:
        """The engine's view of an image, None when it lacks it; raises only when the engine is down."""

    @abc.abstractmethod
    def _engine_load(self, layout: Path, image: StoredImage, canonical_tag: str) -> None:
        """Load a staged OCI layout into the engine."""

    @abc.abstractmethod
    def _engine_tag(self, image_id: str, tag: str) -> None: ...

    @abc.abstractmethod
    def _engine_save(self, name: str, dest: Path) -> None:
        """Write the engine's image ``name`` as a docker-archive file at ``dest``."""

    # -- materialize ------------------------------------------------------------
    def _prefetch(self, tags: Sequence[ContainerTaggedName], *, offline: bool, force: bool) -> None:
        self._engine_only.clear()
        super()._prefetch(tags, offline=offline, force=force)

    def _needs_registry(self, tag: ContainerTaggedName, ref: Reference) -> bool:
        if not super()._needs_registry(tag, ref):
            return False
        local = self._engine_only[ref.canonical()] = self._local_only_engine_image(ref)
        return local is None

    def _fill_cache(self, tag: ContainerTaggedName, ref: Reference, force: bool) -> None:
        manifest_digest, source = self._fetch(tag, ref)
        self._snapshot(tag, ref, manifest_digest, source)

    def _fetch(self, tag: ContainerTaggedName, ref: Reference) -> tuple[str, dict[str, Any]]:
        """Fill the blob store with the image; return its manifest digest and where it came from."""
        key = ref.canonical()
        local = self._engine_only.pop(key) if key in self._engine_only else self._local_only_engine_image(ref)
        if local is not None:
            return self._fetch_from_engine(ref, local.image_id), self._engine_source()

        try:
            result = self._pull(tag, ref)
        except RegistryError as e:
            # A pinned digest the registry no longer has must not be replaced by whatever the engine holds.
            pinned_and_gone = isinstance(e, ManifestUnknownError) and self._pin(tag, ref)
            engine_img = None if pinned_and_gone else self._engine_image_or_none(key)
            if engine_img is None:
                raise
            self.logger.warning("%s: %s; using the engine's copy", key, e)
            return self._fetch_from_engine(ref, engine_img.image_id), self._engine_source()
        return result.manifest_digest, self.pull_source(result)

    def _engine_source(self) -> dict[str, Any]:
        return {"source": "engine", "engine": self.engine_name}

    def _engine_image_or_none(self, name: str) -> EngineImage | None:
        try:
            return self._engine_inspect(name)
        except ContainerEngineException:
            return None

    def _local_only_engine_image(self, ref: Reference) -> EngineImage | None:
        """The engine's image for ``ref`` when it exists nowhere else (built locally, never pushed).

        No repo digests is not enough: an image this tool loaded has none
        either, and taking it from the engine would record a synthesized
        manifest instead of the registry's pin. So the registry is asked
        once, without retries; only when it lacks the tag (or cannot be
        reached) is the engine the source.
        """
        if not ref.tag or ref.digest:
            return None
        img = self._engine_image_or_none(ref.canonical())
        if img is None or img.repo_digests:
            return None
        try:
            self._probe_client.resolve(ref.registry or "docker.io", ref.repository, ref.tag)
        except RegistryError:
            return img
        return None

    @property
    def _probe_client(self) -> RegistryClient:
        """For yes/no questions to a registry: one attempt, so an unreachable one costs no back-off."""
        if self._probe is None:
            self._probe = RegistryClient(
                insecure_registries=self.insecure_registries, platform=self.platform, retries=0, timeout=10
            )
        return self._probe

    def _fetch_from_engine(self, ref: Reference, image_id: str) -> str:
        tmp = self.store.tmp_dir / f"engine-save-{uuid.uuid4().hex}.tar"
        try:
            self._engine_save(image_id, tmp)
            manifest_digest = ingest_docker_archive(self.store, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        got = StoredImage(self.store, manifest_digest).config_name()
        if normalize_image_id(got) != normalize_image_id(image_id):
            raise IntegrityError(
                f"the engine's copy of {ref.canonical()} changed while it was saved "
                f"(expected image id {image_id}, got {got}); retry",
                expected=image_id,
                actual=got,
            )
        return manifest_digest

    def _snapshot(
        self, tag: ContainerTaggedName, ref: Reference, manifest_digest: str, source: dict[str, Any]
    ) -> str:
        """Build the OCI layout snapshot (hard links into the store) and hand it to the cache."""
        image = StoredImage(self.store, manifest_digest)
        work = self.store.tmp_dir / f"snapshot-{uuid.uuid4().hex}"
        work.mkdir()
        try:
            layout = work / "layout"
            fingerprint = write_oci_layout(image, layout, ref_name=ref.canonical())
            meta = self._metadata(ref, image, fingerprint, source)
            meta_path = work / "meta.json"
            write_json_atomic(meta_path, meta.to_json())
            return self.cc_handler.update(tag, layout, meta_path)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _metadata(
        self, ref: Reference, image: StoredImage, fingerprint: str, source: dict[str, Any]
    ) -> ImageMetadata:
        plat = image_platform(image.config())
        return ImageMetadata(
            tagged_name=ref.canonical(),
            manifest_digest=image.digest(),
            image_id=image.config_name(),
            image_signature=fingerprint,
            architecture=plat.architecture,
            os=plat.os,
            variant=plat.variant,
            registry=ref.registry,
            repository=ref.repository,
            size=image.size(),
            layers=tuple(layer.digest() for layer in image.layers()),
            media_type=image.manifest().media_type,
            snapshot_kind=self.SNAPSHOT_KIND,
            extra=source,
        )

    def _ingest_injected(self, tag: Container, ref: Reference) -> None:
        """Adopt a snapshot staged elsewhere (an earlier working dir) into this cache, verified."""
        assert tag.localPath is not None
        layout = Path(tag.localPath)
        manifest_digest = read_oci_layout(layout)[1]
        source_store = BlobStore(layout, readonly=True)
        for digest in [manifest_digest, *StoredImage(source_store, manifest_digest).blob_digests()]:
            if not self.store.has(digest):
                self.store.put_file(source_store.path(digest), digest)
        self._snapshot(tag, ref, manifest_digest, {"source": "injected", "from": str(layout)})

    def _record(
        self, tag: ContainerTaggedName, ref: Reference, path: Path, meta_path: Path, meta: ImageMetadata
    ) -> Container:
        registry = meta.registry or ref.registry
        repository = meta.repository or ref.repository
        return Container(
            origTaggedName=tag.origTaggedName,
            type=self.ContainerType(),
            registries=tag.registries,
            taggedName=meta.tagged_name,
            architecture=meta.architecture,
            operatingSystem=meta.os,
            localPath=path,
            signature=meta.image_id,
            fingerprint=f"{registry}/{repository}@{meta.manifest_digest}",
            metadataLocalPath=meta_path,
            source_type=ContainerType.Docker,
            image_signature=meta.image_signature,
        )

    # -- deploy -----------------------------------------------------------------
    def deploySingleContainer(
        self,
        container: Container,
        containers_dir: Path | None = None,
        force: bool = False,
    ) -> tuple[Container, bool]:
        """Load the staged snapshot only if the engine lacks that image id; verify it first."""
        if not container.signature:
            raise ContainerFactoryException(
                f"{container.origTaggedName}: the record lacks its image id (signature); "
                "re-materialize it to get a verifiable record"
            )
        path = self._verified_staged_snapshot(container, containers_dir, restage=False)
        image_id = normalize_image_id(container.signature)
        canonical = container.taggedName or self.generateCanonicalTag(container)
        present = None if force else self._engine_inspect(image_id)
        loaded = False
        if present is None:
            _, manifest_digest, _ = read_oci_layout(path)
            image = StoredImage(BlobStore(path, readonly=True), manifest_digest)
            if normalize_image_id(image.config_name()) != image_id:
                raise IntegrityError(
                    f"refusing to deploy {container.origTaggedName}: the snapshot holds image "
                    f"{image.config_name()}, the record says {image_id}",
                    expected=image_id,
                    actual=image.config_name(),
                )
            self._engine_load(path, image, canonical)
            present = self._engine_inspect(image_id)
            if present is None:
                raise ContainerEngineException(
                    f"{self.engine_name} accepted {container.origTaggedName} "
                    f"but does not report image {image_id}"
                )
            loaded = True
        if canonical not in present.repo_tags:
            self._engine_tag(image_id, canonical)
        return container, loaded

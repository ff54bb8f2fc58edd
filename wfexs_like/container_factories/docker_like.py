"""Docker and Podman: one factory, two engines.

Both run the same images, so materializing is engine-agnostic (an OCI layout
whose blobs are links into the store, or on request the gzipped
docker-archive ``.img`` WfExS-backend stages). The engine is injected
(``engine=``) and used only to deploy (load when it lacks that image id) and
to read images that exist nowhere else. ``docker.py`` and ``podman.py`` only
pick the default engine and the record type.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from ..cache import CacheHit, SnapshotKind
from ..engines.base import Engine, EngineImageInfo, normalize_image_id
from ..errors import ContainerEngineException, ContainerFactoryException, IntegrityError
from ..images.base import Image
from ..images.layout import LayoutImage
from ..model import Container, ContainerTaggedName, ContainerType
from ..references import Reference
from .cached import CachedImageFactory
from .injected import snapshot_kind_of
from .sources import docker_name
from .staged import record_fingerprint

SNAPSHOT_FORMATS: dict[str, SnapshotKind] = {"oci-layout": "oci-layout", "docker-archive": "docker-archive"}


class DockerLikeContainerFactory(CachedImageFactory):
    """Shared materialize/deploy for OCI engines; the engine is the only difference."""

    RECORD_TYPE: ClassVar[ContainerType] = ContainerType.Docker

    def __init__(self, *args: Any, snapshot_format: str = "oci-layout", **kwargs: Any) -> None:
        if snapshot_format not in SNAPSHOT_FORMATS:
            raise ContainerFactoryException(
                f"unknown snapshot format {snapshot_format!r}; choose one of {', '.join(SNAPSHOT_FORMATS)}"
            )
        self._kind = SNAPSHOT_FORMATS[snapshot_format]
        if self._kind == "docker-archive" and not args and kwargs.get("simpleFileNameMethod") is None:
            # WfExS-backend names docker-archive snapshots after Nextflow's convention: <name>.img
            kwargs["simpleFileNameMethod"] = _wfexs_img_name
        super().__init__(*args, **kwargs)

    @property
    def kind(self) -> SnapshotKind:
        return self._kind

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.default_engine()
        return self._engine

    def default_engine(self) -> Engine:
        raise ContainerEngineException(f"{type(self).__name__} needs an engine=")

    def source_engine(self) -> Engine | None:
        try:
            return self.engine
        except ContainerEngineException:
            return None

    def engine_version(self) -> str:
        return self.engine.version()

    def snapshot_name(self, ref: Reference) -> str:
        return engine_tag(ref)

    def _record(
        self, tag: ContainerTaggedName, ref: Reference, hit: CacheHit, path: Path, meta_path: Path
    ) -> Container:
        meta = hit.metadata
        return Container(
            origTaggedName=tag.origTaggedName,
            type=self.ContainerType(),
            registries=tag.registries,
            taggedName=meta.tagged_name,
            architecture=meta.architecture,
            operatingSystem=meta.os,
            localPath=path,
            signature=meta.image_id,
            fingerprint=record_fingerprint(ref, hit),
            metadataLocalPath=meta_path,
            source_type=ContainerType.Docker,
            image_signature=hit.fingerprint,
        )

    # -- deploy ------------------------------------------------------------------------------------
    def deploySingleContainer(
        self,
        container: Container,
        containers_dir: Path | None = None,
        force: bool = False,
        *,
        offline: bool = False,
    ) -> tuple[Container, bool]:
        """Load the staged snapshot only if the engine lacks that image id; verify it first.

        A snapshot found to hold rotten cached bytes (by the verification or
        by a load that breaks) is healed once: the rotten blobs are evicted
        and, unless ``offline``, fetched again and the load retried
        (``heal_staged``).
        """
        if not container.signature:
            raise ContainerFactoryException(
                f"{container.origTaggedName}: the record lacks its image id (signature); "
                "re-materialize it to get a verifiable record"
            )
        cdir = self.containers_dir(containers_dir)
        image_id = normalize_image_id(container.signature)
        tag = engine_tag(self.parse_tag(container))
        present = None if force else self.engine.inspect(image_id)
        loaded = False
        if present is None:
            present = self._load(container, cdir, image_id, tag, offline=offline)
            loaded = True
        if tag not in present.repo_tags:
            self.engine.tag(image_id, tag)
        return container, loaded

    def _load(
        self, container: Container, cdir: Path, image_id: str, tag: str, *, offline: bool
    ) -> EngineImageInfo:
        """Verify and load; a failure is offered to ``heal_staged`` once, then the retry's is final."""
        for retry in (False, True):
            try:
                image = self._verified_image(container, cdir, image_id)
            except ContainerFactoryException as e:
                if retry:
                    raise
                self.heal_staged(container, cdir, e, offline=offline)
                continue
            try:
                return self.engine.load(image, tag)
            except ContainerFactoryException as e:
                if retry:
                    raise
                self.heal_staged(container, cdir, e, offline=offline, engine_failed=True)
        raise AssertionError("unreachable: the retry returns or raises")

    def _verified_image(self, container: Container, cdir: Path, image_id: str) -> Image:
        image = self._staged_image(container, cdir)
        if normalize_image_id(image.config_name()) != image_id:
            raise IntegrityError(
                f"refusing to deploy {container.origTaggedName}: the snapshot holds image "
                f"{image.config_name()}, the record says {image_id}",
                expected=image_id,
                actual=image.config_name(),
            )
        return image

    def _staged_image(self, container: Container, cdir: Path) -> Image:
        path, _ = self.staged_paths(container, cdir)
        kind = snapshot_kind_of(path) if path.exists() else self.kind
        if kind == "sif":
            raise ContainerFactoryException(
                f"{container.origTaggedName} is staged as a SIF ({path}), which {self.engine_name} cannot "
                "load; materialize it for this engine instead (--engine "
                f"{self.engine_name})"
            )
        path = self.verified_staged_snapshot(container, cdir, restage=False)
        if path.is_dir():
            return LayoutImage(path, trust=self.store)
        from ..images.docker_archive import DockerArchiveImage  # archives only when one is read

        return DockerArchiveImage(path)


def engine_tag(ref: Reference) -> str:
    """The name an engine gets for the image ``ref`` names: a valid ``[host/]name:tag`` always.

    Registry images keep their canonical name; an image read from a file or
    directory gets the docker reference the archive names, or else
    ``localhost/<file name>:<ref or latest>``, as Podman names what it loads.
    """
    if ref.is_registry:
        return ref.canonical()
    if ref.scheme == "docker-daemon" or (ref.scheme == "docker-archive" and ref.transport_ref):
        return docker_name(ref) if ref.scheme == "docker-daemon" else str(ref.transport_ref)
    stem = re.sub(r"[^a-z0-9._-]+", "-", Path(ref.repository).name.lower()).strip("._-") or "image"
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", ref.transport_ref or "latest").lstrip(".-")[:128] or "latest"
    return f"localhost/{stem}:{tag}"


def _wfexs_img_name(tag: str) -> str:
    """Nextflow's (and so WfExS-backend's) file name for an image: ``/`` and ``:`` become ``-``."""
    name = tag.split("://", 1)[1] if "://" in tag else tag
    return name.replace(":", "-").replace("/", "-") + ".img"

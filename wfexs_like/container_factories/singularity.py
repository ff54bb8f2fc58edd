"""Singularity/Apptainer: SIF files in the cache, staged where the engine looks for them.

Apptainer runs a SIF in place, so "deploy" is "verify it is staged and
intact". Which SIF a tag becomes is the policy here:

- an OCI image from any source (``docker://``, plain tags, ``oci:``,
  ``docker-archive:``, ``docker-daemon:``...) is fetched into the blob store
  like for Docker and built into a SIF natively; with an Apptainer binary and
  ``use_engine_for_docker``, Apptainer pulls it instead (DESIGN.md);
- ``oras://``: the SIF an ORAS artifact holds, pulled natively (``registry.oras``)
  with the same client, logins and certificates as images;
- ``library://``, ``shub://``: only Apptainer speaks those;
- ``http(s)://`` SIF URLs download through the registry transport (retries,
  CA bundle, resume, digest check); local ``.sif`` files are adopted as is.

Offline, a SIF is built from layers another engine's materialize cached.
A Docker record deployed here is converted (its layout becomes a SIF); a
file that is not a SIF is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..cache import CacheHit
from ..engines.apptainer import ApptainerEngine
from ..errors import (
    ContainerFactoryException,
)
from ..model import Container, ContainerTaggedName, ContainerType
from ..references import Reference
from .cached import CachedImageFactory
from .injected import snapshot_kind_of, usable_snapshot
from .sif_files import adopt_sif, convert_to_sif, sif_file, sif_record

ENGINE_ONLY_SCHEMES = ("library", "shub")
#: SIFs from places that are not OCI images: files, URLs and ORAS artifacts.
FILE_SCHEMES = ("http", "https", "file", "oras")


class SingularityContainerFactory(CachedImageFactory):
    ACCEPTED_TYPES: ClassVar[frozenset[ContainerType]] = frozenset({ContainerType.Docker})
    #: Only ``docker-daemon:`` tags are read from the Docker engine; plain tags come from registries.
    ENGINE_FALLBACK: ClassVar[bool] = False

    def __init__(
        self,
        *args: Any,
        use_engine_for_docker: bool | None = None,
        apptainer: ApptainerEngine | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("engine_name", "singularity")
        super().__init__(*args, **kwargs)
        binary = self.progs_mapping.get("apptainer") or self.progs_mapping.get("singularity")
        cache_env = {
            f"{prefix}_{var}": str(path)
            for prefix in ("APPTAINER", "SINGULARITY")
            for var, path in (
                ("CACHEDIR", self.containersCacheDir / "apptainer-cache"),
                ("TMPDIR", self.tempDir),
            )
        }
        self._environment.update(cache_env)
        self.apptainer = apptainer or ApptainerEngine(binary, env=self._environment)
        self.runtime_cmd = self.apptainer.binary or ""
        # None: use the engine when there is one (DESIGN.md), the native builder otherwise.
        self.use_engine_for_docker = (
            self.has_engine if use_engine_for_docker is None else use_engine_for_docker
        )

    @classmethod
    def ContainerType(cls) -> ContainerType:
        return ContainerType.Singularity

    @property
    def has_engine(self) -> bool:
        return self.apptainer.available

    def engine_version(self) -> str:
        if not self.has_engine:
            return "wfexs-like native SIF builder (no apptainer/singularity binary)"
        return self.apptainer.version()

    def _by_file(self, ref: Reference) -> bool:
        """Tags that become a SIF file directly, not through the blob store."""
        return (
            ref.scheme in FILE_SCHEMES
            or ref.scheme in ENGINE_ONLY_SCHEMES
            or (ref.scheme == "docker" and self.has_engine and self.use_engine_for_docker)
        )

    def _fetches(self, tag: ContainerTaggedName, ref: Reference) -> bool:
        return super()._fetches(tag, ref) and not self._by_file(ref)

    # -- materialize ------------------------------------------------------------------------------
    def materializeSingleContainer(
        self,
        tag: ContainerTaggedName,
        containers_dir: Path | None = None,
        offline: bool = False,
        force: bool = False,
    ) -> Container | None:
        ref = self.parse_tag(tag)
        injected = self._injected_sif(tag)
        if injected is None and not self._by_file(ref):
            return super().materializeSingleContainer(tag, containers_dir, offline, force)
        cdir = self.containers_dir(containers_dir)
        if injected is not None:
            assert isinstance(tag, Container)
            hit = adopt_sif(self.cache, tag, ref, injected, platform=self.platform_key)
        else:
            hit = sif_file(
                self.cache,
                tag,
                ref,
                offline=offline,
                force=force,
                platform=self.platform_key,
                client=lambda: self.registry_client,
                apptainer=self.apptainer,
                plain_http=not offline and self._plain_http(ref),
            )
        return self._stage(tag, ref, hit, cdir, force)

    def _plain_http(self, ref: Reference) -> bool:
        """Whether Apptainer may pull ``ref`` over plain HTTP (loopback or --insecure-registry)."""
        if not ref.registry:
            return False
        from ..registry.client import is_loopback  # here, not at the top: it brings the HTTP stack

        return is_loopback(ref.registry) or ref.registry in self.insecure_registries

    def _injected_sif(self, tag: ContainerTaggedName) -> Path | None:
        if not isinstance(tag, Container):
            return None
        found = usable_snapshot(tag, self.cache, kinds=("sif",))
        return found[0] if found is not None else None

    def snapshot_name(self, ref: Reference) -> str:
        return "docker://" + ref.canonical() if ref.scheme == "docker" else ref.canonical()

    def _record(
        self, tag: ContainerTaggedName, ref: Reference, hit: CacheHit, path: Path, meta_path: Path
    ) -> Container:
        return sif_record(tag, ref, hit, path, meta_path, self.snapshot_name(ref))

    # -- deploy ---------------------------------------------------------------------------------------
    def deploySingleContainer(
        self,
        container: Container,
        containers_dir: Path | None = None,
        force: bool = False,
        *,
        offline: bool = False,
    ) -> tuple[Container, bool]:
        """Apptainer reads the SIF in place: make sure it is staged and intact. Nothing is loaded.

        A Docker/Podman record (an OCI layout, or WfExS's docker-archive) is
        converted: its verified image becomes a SIF, staged beside it. A
        failure caused by rotten cached bytes is healed once (``heal_staged``).
        """
        cdir = self.containers_dir(containers_dir)
        path, _ = self.staged_paths(container, cdir)
        kind = None
        if path.exists():
            kind = snapshot_kind_of(path)
            if kind is None:
                raise ContainerFactoryException(
                    f"refusing to deploy {container.origTaggedName}: {path} is not a SIF file "
                    "(nor an OCI layout or docker-archive to convert); re-materialize it"
                )
        if kind in ("oci-layout", "docker-archive"):
            try:
                return self._convert(container, cdir), False
            except ContainerFactoryException as e:
                # Another engine's snapshot: rotten blobs are evicted and named, and that engine's
                # materialize fetches them again (this factory stages SIFs, not layouts).
                self.heal_staged(container, cdir, e, offline=True)
                raise
        try:
            self.verified_staged_snapshot(container, cdir, restage=force)
        except ContainerFactoryException as e:
            self.heal_staged(container, cdir, e, offline=offline)
            self.verified_staged_snapshot(container, cdir, restage=False)
        return container, False

    def _convert(self, container: Container, cdir: Path) -> Container:
        ref = self.parse_tag(container)
        staged = self.verified_staged_snapshot(container, cdir, restage=False)
        hit, sif, meta = convert_to_sif(
            self.cache, staged, ref, platform=self.platform_key, name=self.snapshot_name(ref)
        )
        return self._record(container, ref, hit, sif, meta)

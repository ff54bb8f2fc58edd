"""Singularity/Apptainer: SIF files in the cache, staged where the engine looks for them.

Apptainer runs a SIF in place, so "deploy" is only "verify it is there and
intact". Materializing differs by source:

- ``docker://`` (and plain docker tags): with an Apptainer/Singularity binary,
  it pulls them (through ``spython``), as DESIGN.md decides. Without one (or
  with ``use_engine_for_docker=False``) the native registry client fills the
  blob store and the SIF is built from those blobs in Python (layers applied
  safely, Apptainer's runtime files added, ``mksquashfs``, SIF writer); that
  is the path CI exercises.
- ``library://``, ``oras://``, ``shub://``: only Apptainer/Singularity speak
  those protocols, driven through ``spython``.
- ``http(s)://`` SIF URLs are downloaded and checked (SIF header, and the
  digest when the record pins one); local ``.sif`` paths are ingested as they are.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from ..cache.handler import write_json_atomic
from ..digests import CHUNK, normalize_fingerprint, sha256_file
from ..errors import ContainerEngineException, ContainerNotFoundException, IntegrityError, RegistryError
from ..images.image import StoredImage
from ..images.manifest import image_platform
from ..images.sif import read_sif
from ..images.sif_build import build_sif_from_image
from ..model import Container, ContainerTaggedName, ContainerType, ImageMetadata
from ..references import Reference
from ..registry.client import is_loopback
from .registry_backed import RegistryBackedFactory

ENGINE_ONLY_SCHEMES = ("library", "oras", "shub")


class SingularityContainerFactory(RegistryBackedFactory):
    SNAPSHOT_KIND = "sif"
    SNAPSHOT_IS_DIR = False

    def __init__(self, *args: Any, use_engine_for_docker: bool | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("engine_name", "singularity")
        super().__init__(*args, **kwargs)
        self.runtime_cmd = (
            self.progs_mapping.get("apptainer")
            or self.progs_mapping.get("singularity")
            or shutil.which("apptainer")
            or shutil.which("singularity")
            or ""
        )
        # None: use the engine when there is one (DESIGN.md), the native builder otherwise.
        self.use_engine_for_docker = (
            self.has_engine if use_engine_for_docker is None else use_engine_for_docker
        )
        engine_cache = self.containersCacheDir / "apptainer-cache"
        for prefix in ("APPTAINER", "SINGULARITY"):
            self._environment[f"{prefix}_CACHEDIR"] = str(engine_cache)
            self._environment[f"{prefix}_TMPDIR"] = str(self.tempDir)

    @classmethod
    def ContainerType(cls) -> ContainerType:
        return ContainerType.Singularity

    @classmethod
    def AcceptsContainerType(cls, container_type: ContainerType | set[ContainerType]) -> bool:
        types = container_type if isinstance(container_type, set) else {container_type}
        return bool(types & {ContainerType.Singularity, ContainerType.Docker})

    @property
    def has_engine(self) -> bool:
        return bool(self.runtime_cmd)

    def engine_version(self) -> str:
        if not self.has_engine:
            return "wfexs-like native SIF builder (no apptainer/singularity binary)"
        return super().engine_version()

    def _needs_registry(self, tag: ContainerTaggedName, ref: Reference) -> bool:
        return super()._needs_registry(tag, ref) and not (self.has_engine and self.use_engine_for_docker)

    # -- materialize ------------------------------------------------------------
    def _fill_cache(self, tag: ContainerTaggedName, ref: Reference, force: bool) -> None:
        if ref.scheme == "file":
            path = Path(ref.repository)
            if not path.is_file():
                raise ContainerNotFoundException(f"{tag.origTaggedName}: no SIF file at {path}")
            self._ingest_sif(tag, ref, path, {"source": "file", "path": str(path)}, move=False)
        elif ref.scheme in ("http", "https"):
            self._download_sif(tag, ref)
        elif ref.scheme == "docker" and not (self.has_engine and self.use_engine_for_docker):
            self._materialize_docker(tag, ref, force)
        elif self.has_engine:
            self._pull_with_engine(tag, ref)
        else:
            raise ContainerEngineException(
                f"{tag.origTaggedName}: {ref.scheme}:// images can only be pulled by Apptainer or "
                "Singularity, and neither is installed; install one, or use a docker:// tag"
            )

    def _materialize_docker(self, tag: ContainerTaggedName, ref: Reference, force: bool) -> None:
        result = self._pull(tag, ref)
        if not force and self.cc_handler.query(tag)[0]:
            meta = self.cc_handler.read_metadata(tag) or {}
            if meta.get("manifest_digest") == result.manifest_digest:
                return  # this exact image's SIF is already cached: no rebuild
        image = StoredImage(self.store, result.manifest_digest)
        with self._workdir() as work:
            sif = work / "image.sif"
            build_sif_from_image(
                image.config(),
                [layer.path() for layer in image.layers()],
                sif,
                tmp_dir=work,
                source_digest=image.digest(),
                source=ref.canonical(),
            )
            plat = image_platform(image.config())
            meta = ImageMetadata(
                tagged_name="docker://" + ref.canonical(),
                manifest_digest=image.digest(),
                image_id=image.config_name(),
                image_signature="",
                architecture=plat.architecture,
                os=plat.os,
                variant=plat.variant,
                registry=ref.registry,
                repository=ref.repository,
                size=sif.stat().st_size,
                layers=tuple(layer.digest() for layer in image.layers()),
                media_type=image.manifest().media_type,
                snapshot_kind=self.SNAPSHOT_KIND,
                extra={**self.pull_source(result), "builder": "wfexs-like native"},
            )
            self._update(tag, sif, meta, work, move=True)

    def _ingest_injected(self, tag: Container, ref: Reference) -> None:
        """Adopt a SIF staged elsewhere, keeping its provenance (pin, registry) when its sidecar is there."""
        assert tag.localPath is not None
        sidecar = Path(tag.metadataLocalPath) if tag.metadataLocalPath else None
        try:
            meta = ImageMetadata.from_json(json.loads(sidecar.read_text())) if sidecar else None
        except (OSError, ValueError, KeyError):
            meta = None
        if meta is None:
            self._ingest_sif(tag, ref, Path(tag.localPath), {"source": "injected"}, move=False)
            return
        with self._workdir() as work:
            self._update(tag, Path(tag.localPath), meta, work, move=False)

    def _ingest_sif(
        self, tag: ContainerTaggedName, ref: Reference, path: Path, source: dict[str, Any], *, move: bool
    ) -> None:
        """Cache an existing SIF file after checking it really is one."""
        try:
            info = read_sif(path)
        except Exception as e:  # any parse failure means "not a SIF we can trust"
            raise IntegrityError(f"{tag.origTaggedName}: {path} is not a valid SIF file ({e})") from e
        part = info.primary_partition()
        digest = sha256_file(path)
        meta = ImageMetadata(
            tagged_name=ref.canonical(),
            manifest_digest=digest,
            image_id=digest,
            image_signature="",
            architecture=(part.arch if part else None) or info.arch or None,
            os="linux",
            registry=ref.registry,
            repository=ref.repository,
            size=path.stat().st_size,
            snapshot_kind=self.SNAPSHOT_KIND,
            extra=source,
        )
        with self._workdir() as work:
            self._update(tag, path, meta, work, move=move)

    def _download_sif(self, tag: ContainerTaggedName, ref: Reference) -> None:
        url = ref.canonical()
        expected = None
        if isinstance(tag, Container) and tag.image_signature:
            expected = normalize_fingerprint(tag.image_signature)
        with self._workdir() as work:
            dest = work / "download.sif"
            try:
                with requests.get(url, stream=True, timeout=60) as resp:
                    if resp.status_code == 404:
                        raise ContainerNotFoundException(f"{url}: not found (HTTP 404)")
                    if resp.status_code >= 400:
                        raise RegistryError(
                            f"{url}: HTTP {resp.status_code}", status=resp.status_code, url=url
                        )
                    declared = resp.headers.get("Content-Length")
                    with open(dest, "wb") as fh:
                        for chunk in resp.iter_content(CHUNK):
                            fh.write(chunk)
            except requests.RequestException as e:
                raise RegistryError(f"could not download {url}: {e}", url=url) from e
            if declared is not None and dest.stat().st_size != int(declared):
                raise IntegrityError(
                    f"{url}: got {dest.stat().st_size} bytes, the server announced {declared}"
                )
            if expected is not None and sha256_file(dest) != expected:
                raise IntegrityError(
                    f"{url}: downloaded SIF does not match the recorded digest {expected}; the file changed "
                    "on the server or was corrupted in transit",
                    expected=expected,
                )
            self._ingest_sif(tag, ref, dest, {"source": "url", "url": url}, move=True)

    def _pull_with_engine(self, tag: ContainerTaggedName, ref: Reference) -> None:
        from spython.main import Client

        uri = ref.canonical() if ref.scheme != "docker" else "docker://" + ref.canonical()
        if ref.scheme != "docker" and "://" not in uri:
            uri = f"{ref.scheme}://{uri}"
        # spython cannot pass `pull --nohttps`; Apptainer reads the same switch from the environment.
        plain_http = bool(ref.registry) and (
            is_loopback(ref.registry or "") or ref.registry in self.insecure_registries
        )
        extra = {"APPTAINER_NOHTTPS": "1", "SINGULARITY_NOHTTPS": "1"} if plain_http else {}
        with self._workdir() as work, self._engine_env(extra):
            try:
                pulled = Client.pull(uri, name="pulled.sif", pull_folder=str(work), force=True, quiet=True)
            except Exception as e:  # spython surfaces engine failures as assorted exceptions
                raise ContainerEngineException(
                    f"{self.runtime_cmd} could not pull {uri}",
                    command=f"{self.runtime_cmd} pull {uri}",
                    stderr=str(e),
                ) from e
            path = Path(pulled if isinstance(pulled, str) else work / "pulled.sif")
            if not path.is_file():
                raise ContainerEngineException(f"{self.runtime_cmd} pull {uri} produced no SIF file")
            self._ingest_sif(tag, ref, path, {"source": "engine", "engine": self.runtime_cmd}, move=True)

    @contextlib.contextmanager
    def _engine_env(self, extra: dict[str, str] | None = None) -> Iterator[None]:
        """spython runs the engine with our environment: point its caches inside ours."""
        env = {**self._environment, **(extra or {})}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @contextlib.contextmanager
    def _workdir(self) -> Iterator[Path]:
        work = self.store.tmp_dir / f"sif-{uuid.uuid4().hex}"
        work.mkdir()
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _update(
        self, tag: ContainerTaggedName, sif: Path, meta: ImageMetadata, work: Path, *, move: bool
    ) -> str:
        meta_path = work / "meta.json"
        write_json_atomic(meta_path, meta.to_json())
        return self.cc_handler.update(tag, sif, meta_path, do_move=move)

    def _record(
        self, tag: ContainerTaggedName, ref: Reference, path: Path, meta_path: Path, meta: ImageMetadata
    ) -> Container:
        docker_source = ref.scheme == "docker"
        if docker_source:
            fingerprint = (
                f"{meta.registry or ref.registry}/{meta.repository or ref.repository}@{meta.manifest_digest}"
            )
        else:
            fingerprint = meta.image_signature
        return Container(
            origTaggedName=tag.origTaggedName,
            type=ContainerType.Singularity,
            registries=tag.registries,
            taggedName=meta.tagged_name,
            architecture=meta.architecture,
            operatingSystem=meta.os,
            localPath=path,
            signature=meta.image_signature,
            fingerprint=fingerprint,
            metadataLocalPath=meta_path,
            source_type=ContainerType.Docker if docker_source else ContainerType.Singularity,
            image_signature=meta.image_signature,
        )

    # -- deploy -----------------------------------------------------------------
    def deploySingleContainer(
        self,
        container: Container,
        containers_dir: Path | None = None,
        force: bool = False,
    ) -> tuple[Container, bool]:
        """Apptainer reads the SIF in place: make sure it is staged and intact. Nothing is loaded."""
        self._verified_staged_snapshot(container, containers_dir, restage=force)
        return container, False

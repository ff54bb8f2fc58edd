"""SIFs that arrive as files: downloaded, pulled by Apptainer, local, or injected from another run.

These never pass through the blob store as OCI images: the file is the
image, so it is checked for being a SIF, fingerprinted and cached as is
(``cache.build.put_sif_file``). Downloads go through the registry
transport (retries, CA bundle, resume, digest check); Apptainer-only
schemes go through the injected ``ApptainerEngine``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..cache import CacheHit, ImageCache
from ..cache.build import build_snapshot, put_sif_file, work_dir
from ..cache.snapshots import read_json
from ..digests import normalize_fingerprint
from ..engines.apptainer import ApptainerEngine
from ..errors import CacheError, ContainerEngineException, ContainerNotFoundException
from ..images.docker_archive import DockerArchiveImage
from ..images.layout import LayoutImage
from ..model import META_JSON_POSTFIX, Container, ContainerTaggedName, ContainerType
from ..references import Reference
from ..registry.client import RegistryClient


def adopt_sif(
    cache: ImageCache, tag: Container, ref: Reference, path: Path, *, platform: str | None
) -> CacheHit:
    """Adopt a SIF staged elsewhere, keeping its provenance (pin, registry) from its sidecar."""
    reference = ref.canonical()
    hit = cache.lookup(reference, "sif", platform)
    if hit is not None and hit.fingerprint == normalize_fingerprint(tag.image_signature or ""):
        return hit
    sidecar = Path(tag.metadataLocalPath) if tag.metadataLocalPath else None
    try:
        meta = read_json(sidecar) if sidecar is not None else None
    except CacheError:
        meta = None
    if meta is not None and meta.get("manifest_digest") and meta.get("image_id"):
        meta["extra"] = {**(meta.get("extra") or {}), "injected_from": str(path)}
        return cache.put(reference, "sif", path, meta, platform=platform, move=False)
    return put_sif_file(
        cache,
        reference,
        path,
        platform=platform,
        source={"source": "injected", "from": str(path)},
        move=False,
        registry=ref.registry,
        repository=ref.repository if ref.is_registry else None,
    )


def fetch_sif(
    cache: ImageCache,
    ref: Reference,
    pin: str | None,
    *,
    platform: str | None,
    client: Callable[[], RegistryClient],
    apptainer: ApptainerEngine,
    plain_http: bool,
) -> CacheHit:
    """Get the SIF ``ref`` names (exactly ``pin``, when given) into the cache."""
    reference = ref.canonical()
    if ref.scheme == "file":
        path = Path(ref.repository)
        if not path.is_file():
            raise ContainerNotFoundException(f"{reference}: no SIF file at {path}")
        source = {"source": "file", "path": str(path)}
        return put_sif_file(cache, reference, path, platform=platform, source=source, move=False)
    with work_dir(cache, "sif-fetch-") as work:
        dest = work / "image.sif"
        if ref.scheme in ("http", "https"):
            client().download(reference, dest, expected_digest=pin)
            source = {"source": "url", "url": reference}
        else:
            if not apptainer.available:
                raise ContainerEngineException(
                    f"{reference}: {ref.scheme}:// images can only be pulled by Apptainer or "
                    "Singularity, and neither is installed; install one, or use a docker:// tag"
                )
            uri = "docker://" + reference if ref.scheme == "docker" else reference
            apptainer.pull(uri, dest, plain_http=plain_http)
            source = {"source": "engine", "engine": apptainer.binary or "apptainer"}
        return put_sif_file(
            cache,
            reference,
            dest,
            platform=platform,
            source=source,
            move=True,
            registry=ref.registry,
            repository=ref.repository if ref.is_registry else None,
        )


def sif_file(
    cache: ImageCache,
    tag: ContainerTaggedName,
    ref: Reference,
    *,
    offline: bool,
    force: bool,
    platform: str | None,
    client: Callable[[], RegistryClient],
    apptainer: ApptainerEngine,
    plain_http: bool,
) -> CacheHit:
    """The cached SIF of a file-like reference, fetched unless offline or pinned and cached.

    A record's ``image_signature`` pins the SIF; without one, online runs
    fetch again (a URL or a library tag may have changed), offline ones take
    what the cache has.
    """
    reference = ref.canonical()
    hit = cache.lookup(reference, "sif", platform)
    pin = (
        normalize_fingerprint(tag.image_signature)
        if isinstance(tag, Container) and tag.image_signature
        else None
    )
    if not offline and (force or hit is None or pin is None or hit.fingerprint != pin):
        return fetch_sif(
            cache, ref, pin, platform=platform, client=client, apptainer=apptainer, plain_http=plain_http
        )
    if hit is None:
        raise ContainerNotFoundException(
            f"{tag.origTaggedName} ({reference}) is not in the cache at {cache.root} "
            "and offline mode forbids fetching it; materialize it once with network access"
        )
    if pin is not None and hit.fingerprint != pin:
        raise ContainerNotFoundException(
            f"{tag.origTaggedName}: the cache holds {hit.fingerprint}, not the recorded {pin}, "
            "and offline mode forbids fetching it"
        )
    return hit


def convert_to_sif(
    cache: ImageCache, staged: Path, ref: Reference, *, platform: str | None, name: str
) -> tuple[CacheHit, Path, Path]:
    """A verified staged OCI snapshot (layout or docker-archive) built into a SIF staged beside it."""
    image = LayoutImage(staged, trust=cache.store) if staged.is_dir() else DockerArchiveImage(staged)
    hit = build_snapshot(
        cache,
        ref.canonical(),
        "sif",
        image,
        platform=platform,
        name=name,
        registry=ref.registry,
        repository=ref.repository if ref.is_registry else None,
        source={"source": "converted", "from": str(staged)},
    )
    sif = staged.with_name(staged.name + ".sif")
    meta_path = sif.with_name(sif.name + META_JSON_POSTFIX)
    cache.stage(hit, sif, meta_path)
    return hit, sif, meta_path


def sif_record(
    tag: ContainerTaggedName, ref: Reference, hit: CacheHit, path: Path, meta_path: Path, name: str
) -> Container:
    """A SIF's record: signature and image_signature are the SIF's digest; an OCI source keeps its pin."""
    meta = hit.metadata
    oci_source = meta.image_id != meta.manifest_digest or ref.scheme == "docker"
    if oci_source and (ref.is_registry or ref.scheme == "docker-daemon"):
        fingerprint = (
            f"{meta.registry or ref.registry}/{meta.repository or ref.repository}@{meta.manifest_digest}"
        )
    elif oci_source:
        fingerprint = f"{ref.canonical()}@{meta.manifest_digest}"
    else:
        fingerprint = hit.fingerprint
    return Container(
        origTaggedName=tag.origTaggedName,
        type=ContainerType.Singularity,
        registries=tag.registries,
        taggedName=name if oci_source else meta.tagged_name,
        architecture=meta.architecture,
        operatingSystem=meta.os,
        localPath=path,
        signature=hit.fingerprint,
        fingerprint=fingerprint,
        metadataLocalPath=meta_path,
        source_type=ContainerType.Docker if oci_source else ContainerType.Singularity,
        image_signature=hit.fingerprint,
    )

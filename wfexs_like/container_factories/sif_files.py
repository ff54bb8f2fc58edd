"""SIFs that arrive as files: downloaded, pulled from an ORAS registry or by Apptainer, local, or injected.

These never pass through the blob store as OCI images: the file is the
image, so it is checked for being a SIF, fingerprinted and cached as is
(``cache.build.put_sif_file``). Downloads go through the registry
transport (retries, CA bundle, resume, digest check); ``oras://`` SIFs are
pulled natively (``registry.oras``): the manifest pins the SIF, the SIF
streams verified into the blob store, and the sidecar keeps the manifest's
digest (the record's fingerprint) and its bytes (so a push gives it back
unchanged). Apptainer-only schemes go through the injected ``ApptainerEngine``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..cache import CacheHit, ImageCache
from ..cache.build import build_snapshot, put_sif_file, work_dir
from ..cache.snapshots import read_json
from ..digests import normalize_fingerprint
from ..engines.apptainer import ApptainerEngine
from ..errors import CacheError, ContainerEngineException, ContainerNotFoundException, IntegrityError
from ..images.layout import LayoutImage
from ..images.manifest import OCI_MANIFEST, Platform
from ..images.staging import link_or_copy
from ..model import META_JSON_POSTFIX, Container, ContainerTaggedName, ContainerType, ImageMetadata
from ..references import Reference
from .sources import pin_from_fingerprint

if TYPE_CHECKING:  # the HTTP stack loads when a registry is first asked, never offline
    from ..registry.client import RegistryClient
    from ..registry.oras import OrasPull

#: Sidecar ``extra`` key holding an ORAS SIF's manifest, as text (it is JSON): pushed back unchanged.
ORAS_MANIFEST_KEY = "oras_manifest"


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
    if ref.scheme == "oras":
        return oras_sif(
            cache, tag, ref, hit, pin, offline=offline, force=force, platform=platform, client=client
        )
    # Offline or pinned, any cache may answer (local, library dirs, the remote cache); online and
    # unpinned, only a site library does: a URL or a library tag may have changed.
    found = (
        None
        if force and not offline
        else cache.find(
            reference,
            "sif",
            platform,
            tag=tag.origTaggedName,
            manifest=pin,
            authoritative_only=pin is None and not offline,
        )
    )
    if found is not None:
        return found
    if not offline:
        return fetch_sif(
            cache, ref, pin, platform=platform, client=client, apptainer=apptainer, plain_http=plain_http
        )
    held = f" (it holds {hit.fingerprint}, not the recorded {pin})" if hit is not None and pin else ""
    elsewhere = cache.elsewhere()
    raise ContainerNotFoundException(
        f"{tag.origTaggedName} ({reference}) is not in the cache at {cache.root}{held}"
        + (f" nor in {elsewhere}" if elsewhere else "")
        + " and offline mode forbids fetching it; materialize it once with network access"
    )


def oras_sif(
    cache: ImageCache,
    tag: ContainerTaggedName,
    ref: Reference,
    hit: CacheHit | None,
    pin: str | None,
    *,
    offline: bool,
    force: bool,
    platform: str | None,
    client: Callable[[], RegistryClient],
) -> CacheHit:
    """The cached SIF of an ``oras://`` reference, pulled natively unless the cache answers.

    A manifest digest (``@sha256:`` in the tag, or a record's fingerprint)
    cached with its SIF costs no request at all; a tag costs one HEAD when
    it still names what is cached. ``pin`` (a record's ``image_signature``)
    must be the SIF that arrives.
    """
    manifest_pin = ref.digest or (
        pin_from_fingerprint(tag.fingerprint) if isinstance(tag, Container) else None
    )
    matches = hit is not None and (
        (manifest_pin is None or hit.metadata.manifest_digest == manifest_pin)
        and (pin is None or hit.fingerprint == pin)
    )
    if hit is not None and matches and not force and (offline or manifest_pin is not None):
        return hit
    if offline:
        want = " ".join(p for p in (manifest_pin, pin) if p) or "it"
        raise ContainerNotFoundException(
            f"{tag.origTaggedName} ({ref.canonical()}): the cache at {cache.root} does not hold {want}, and "
            "offline mode forbids fetching it; materialize it once with network access"
        )
    assert ref.registry is not None
    from ..registry.oras import pull_sif

    pulled = pull_sif(
        client(),
        ref.registry,
        ref.repository,
        manifest_pin or ref.tag or "latest",
        cache.store,
        platform=Platform.parse(platform) if platform else None,
    )
    if pin is not None and pulled.sif.digest != pin:
        raise IntegrityError(
            f"{tag.origTaggedName}: {ref.canonical()} now holds the SIF {pulled.sif.digest}, not the "
            f"recorded {pin}; re-materialize without the record's pin to take what it holds now",
            expected=pin,
            actual=pulled.sif.digest,
        )
    if (
        hit is not None
        and not force
        and hit.fingerprint == pulled.sif.digest
        and hit.metadata.manifest_digest == pulled.manifest_digest
    ):
        return hit
    return _put_oras_sif(cache, ref, pulled, platform)


def _put_oras_sif(cache: ImageCache, ref: Reference, pulled: OrasPull, platform: str | None) -> CacheHit:
    """Cache the pulled SIF (already a verified blob) under ``ref``, with its manifest in the sidecar."""
    blob = cache.store.path(pulled.sif.digest)
    try:
        from ..images.sif import read_sif  # a SIF file, not a re-staged layout

        info = read_sif(blob)
    except Exception as e:  # any parse failure means "not a SIF we can trust"
        raise IntegrityError(
            f"{ref.canonical()}: the artifact's SIF layer {pulled.sif.digest} is not a valid SIF file ({e})"
        ) from e
    part = info.primary_partition()
    meta = ImageMetadata(
        tagged_name=ref.canonical(),
        manifest_digest=pulled.manifest_digest,
        image_id=pulled.sif.digest,
        image_signature="",
        architecture=(part.arch if part else None) or info.arch or None,
        os="linux",
        registry=ref.registry,
        repository=ref.repository,
        size=pulled.sif.size,
        layers=(pulled.sif.digest,),
        media_type=OCI_MANIFEST,
        snapshot_kind="sif",
        extra={
            "source": "oras",
            "index_digest": pulled.index_digest,
            "downloaded_bytes": pulled.downloaded_bytes,
            ORAS_MANIFEST_KEY: pulled.manifest.decode("utf-8", errors="replace"),
        },
    )
    with work_dir(cache, "oras-") as work:
        sif = work / "image.sif"
        link_or_copy(blob, sif)
        return cache.put(ref.canonical(), "sif", sif, meta, platform=platform, move=True)


def convert_to_sif(
    cache: ImageCache, staged: Path, ref: Reference, *, platform: str | None, name: str
) -> tuple[CacheHit, Path, Path]:
    """A verified staged OCI snapshot (layout or docker-archive) built into a SIF staged beside it."""
    from ..images.docker_archive import DockerArchiveImage  # archives only when one is read

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
    if ref.scheme == "oras":
        # Pinned by the ORAS manifest when it is known (a native pull); else by the SIF itself.
        pinned = meta.image_id != meta.manifest_digest
        return Container(
            origTaggedName=tag.origTaggedName,
            type=ContainerType.Singularity,
            registries=tag.registries,
            taggedName=name,
            architecture=meta.architecture,
            operatingSystem=meta.os,
            localPath=path,
            signature=hit.fingerprint,
            fingerprint=ref.with_digest(meta.manifest_digest).pinned() if pinned else hit.fingerprint,
            metadataLocalPath=meta_path,
            source_type=ContainerType.Singularity,
            image_signature=hit.fingerprint,
        )
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

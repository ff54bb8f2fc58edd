"""SIFs as ORAS artifacts: the manifest ``apptainer push oras://`` writes, and pulling one back natively.

An ORAS SIF is an OCI image manifest whose config is the empty JSON object
``{}`` (media type ``application/vnd.sylabs.sif.config.v1+json``) and whose
one layer is the SIF file itself (``application/vnd.sylabs.sif.layer.v1.sif``,
titled with a file name). That is what Apptainer writes and reads, so SIFs
pushed from here pull with ``apptainer pull oras://`` and the reverse.

Built manifests are deterministic (no creation time): pushing the same SIF
twice gives the same manifest digest, so a record that pins it stays valid.
A SIF that came from an ORAS registry keeps its original manifest bytes and
is pushed back with exactly those.

Pulling needs no Apptainer: the manifest is resolved like an image's (a tag
costs a HEAD when the cache already holds what it names), the SIF layer is
streamed into the blob store by the client's resumable, digest-checked blob
download, and the manifest is kept beside it (so the next resolve of the tag
stops at the HEAD).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..digests import sha256_bytes
from ..errors import ContainerNotFoundException, PlatformMismatchError
from ..images.blobstore import BlobStore
from ..images.manifest import (
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    ManifestError,
    Platform,
    parse_manifest_or_index,
)
from .client import RegistryClient, image_label
from .push import PushedImage, Pusher

SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"
#: What Singularity before 3.7 wrote (the typo is theirs); still read, never written.
SIF_LAYER_PROTO = "appliciation/vnd.sylabs.sif.layer.tar"
SIF_LAYERS = (SIF_LAYER, SIF_LAYER_PROTO)
SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = sha256_bytes(EMPTY_CONFIG)
TITLE = "org.opencontainers.image.title"


def sif_manifest(sif_digest: str, size: int, *, title: str) -> bytes:
    """The ORAS manifest of one SIF (``title``: the file name a pull writes it to)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": SIF_CONFIG, "digest": EMPTY_CONFIG_DIGEST, "size": len(EMPTY_CONFIG)},
        "layers": [
            {"mediaType": SIF_LAYER, "digest": sif_digest, "size": size, "annotations": {TITLE: title}}
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sif_layer(manifest: Manifest, label: str) -> Descriptor:
    """The one SIF layer of an ORAS manifest; anything else is refused with what it is instead.

    The config's media type is not checked: Apptainer versions have not set
    it consistently, and what matters is that there is exactly one SIF.
    """
    if len(manifest.layers) == 1 and manifest.layers[0].media_type in SIF_LAYERS:
        return manifest.layers[0]
    kinds = ", ".join(sorted({d.media_type or "no media type" for d in manifest.layers})) or "no layers"
    raise ContainerNotFoundException(
        f"{label} is not a SIF pushed as an ORAS artifact: it has {len(manifest.layers)} layer(s) of "
        f"{kinds}, not one {SIF_LAYER}. If it is a container image, materialize it with a docker:// tag."
    )


def stored_sif_manifest(raw: bytes | None, sif_digest: str) -> bytes | None:
    """``raw`` when it is an ORAS manifest of exactly this SIF (kept from a pull), else None."""
    if not raw:
        return None
    try:
        doc = parse_manifest_or_index(raw)
    except ManifestError:
        return None
    if not isinstance(doc, Manifest):
        return None
    layers = [d for d in doc.layers if d.media_type in SIF_LAYERS]
    return raw if len(doc.layers) == 1 and layers and layers[0].digest == sif_digest else None


def push_sif(
    pusher: Pusher,
    repository: str,
    store: BlobStore,
    sif_digest: str,
    *,
    tags: tuple[str, ...] = (),
    title: str,
    manifest: bytes | None = None,
    label: str,
) -> PushedImage:
    """Push the stored SIF ``sif_digest`` as an ORAS artifact; ``manifest``: the original bytes, if any."""
    raw = stored_sif_manifest(manifest, sif_digest) or sif_manifest(
        sif_digest, store.size(sif_digest), title=title
    )
    doc = parse_manifest_or_index(raw)
    assert isinstance(doc, Manifest)
    if not store.has(doc.config.digest):
        store.put_bytes(EMPTY_CONFIG, expected_digest=EMPTY_CONFIG_DIGEST)
    return pusher.push_manifest(repository, raw, store, tags=tags, label=label)


@dataclass(frozen=True)
class OrasPull:
    """A SIF pulled into the store, and the manifest (and index) that named it."""

    registry: str
    repository: str
    reference: str
    manifest_digest: str
    manifest: bytes
    index_digest: str | None
    sif: Descriptor
    downloaded_bytes: int


def pull_sif(
    client: RegistryClient,
    registry: str,
    repository: str,
    reference: str,
    store: BlobStore,
    *,
    platform: Platform | None = None,
) -> OrasPull:
    """Resolve ``registry/repository:reference`` (or ``@digest``) and stream its SIF into ``store``.

    An index is narrowed to ``platform`` (else the client's, else this
    machine's). The SIF arrives verified by its digest, resumably; a SIF the
    store already holds costs no transfer. Bytes are reported to the client's
    progress callback under the same label as an image pull of that name.
    """
    label = image_label(registry, repository, reference)
    digest, media_type, raw = client.resolve(registry, repository, reference, store=store)
    doc = parse_manifest_or_index(raw, media_type)
    index_digest = None
    if isinstance(doc, Index):
        want = platform or client.platform or Platform.host()
        try:
            chosen = doc.select(want)
        except PlatformMismatchError as e:
            raise PlatformMismatchError(
                f"no SIF for platform {want} in {label}; it offers: {', '.join(e.available) or 'none'}. "
                "Choose one with --platform os/arch[/variant].",
                available=e.available,
            ) from None
        index_digest = digest
        digest, media_type, raw = client.resolve(registry, repository, chosen.digest, store=store)
        doc = parse_manifest_or_index(raw, media_type)
        if not isinstance(doc, Manifest):
            raise ManifestError(f"index entry {chosen.digest} of {label} is not a manifest")
    layer = sif_layer(doc, label)
    # The client's blob download: mirrors first, resumable, verified, locked per digest, reported.
    sources = client._sources(registry, repository, digest)
    outcome = client._fetch_blob_locked(sources, layer, store, label)
    if not store.has(digest):  # a later resolve of the tag then stops at the HEAD
        store.put_bytes(raw, expected_digest=digest)
    return OrasPull(
        registry=registry,
        repository=repository,
        reference=reference,
        manifest_digest=digest,
        manifest=raw,
        index_digest=index_digest,
        sif=layer,
        downloaded_bytes=outcome.nbytes if outcome.downloaded else 0,
    )

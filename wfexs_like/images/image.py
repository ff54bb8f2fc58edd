"""The one image shape every source and sink speaks, for images held in the blob store.

Shaped after go-containerregistry's ``v1.Image`` / ``v1.Layer`` (in
snake_case), so an OCI layout, a docker-archive, a registry and a daemon
are each just a source or sink of this one interface, and copying between
any two is one function instead of one per pair.

A ``StoredImage`` is nothing but a manifest digest plus the store: every
answer comes from blobs already on disk, and every writer (``oci_layout``,
``docker_archive``) links or streams those blobs instead of copying them.
Construction checks that every blob the manifest names is present, so a
half-evicted image fails here with the missing digest named, not halfway
through an engine load.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from ..cache.blobstore import BlobStore
from ..digests import sha256_bytes
from ..errors import CacheError, IntegrityError
from .manifest import (
    INDEX_TYPES,
    OCI_LAYER_ZSTD,
    Descriptor,
    Manifest,
    ManifestError,
    Platform,
    detect_media_type,
    image_platform,
    is_gzip_layer,
    parse_manifest,
)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _missing(store: BlobStore, digest: str, what: str, manifest_digest: str) -> CacheError:
    return CacheError(
        f"{what} blob {digest} of image {manifest_digest} is not in the blob store "
        f"({store.path(digest)}); the cache entry is incomplete: fetch the image again "
        "(it will reuse the blobs that are still there)"
    )


def _read_small_blob(store: BlobStore, digest: str, what: str, manifest_digest: str) -> bytes:
    """Read a manifest/config blob and re-hash it: cheap, and they pin everything else."""
    try:
        raw = store.path(digest).read_bytes()
    except FileNotFoundError:
        raise _missing(store, digest, what, manifest_digest) from None
    actual = sha256_bytes(raw)
    if actual != digest:
        raise IntegrityError(
            f"{what} blob {store.path(digest)} does not hash to its name (got {actual}); "
            "it rotted on disk: delete it and fetch the image again",
            expected=digest,
            actual=actual,
        )
    return raw


class StoredLayer:
    """One layer of a ``StoredImage``: a compressed blob plus the diff id the config pins."""

    def __init__(self, store: BlobStore, descriptor: Descriptor, diff_id: str) -> None:
        self.store = store
        self.descriptor = descriptor
        self.media_type = descriptor.media_type
        self._diff_id = diff_id

    def digest(self) -> str:
        """Digest of the blob as stored and served (compressed, if the layer is)."""
        return self.descriptor.digest

    def diff_id(self) -> str:
        """Digest of the uncompressed tar: what engines key layers by, from ``rootfs.diff_ids``."""
        return self._diff_id

    def size(self) -> int:
        return self.descriptor.size

    def path(self) -> Path:
        return self.store.path(self.descriptor.digest)

    def is_gzip(self) -> bool:
        return is_gzip_layer(self.media_type)

    def is_zstd(self) -> bool:
        return self.media_type == OCI_LAYER_ZSTD or self.media_type.endswith("+zstd")

    def compressed(self) -> BinaryIO:
        """The blob's bytes as stored; the caller closes it."""
        try:
            return open(self.path(), "rb")
        except FileNotFoundError:
            raise CacheError(
                f"layer blob {self.digest()} vanished from the blob store ({self.path()}); "
                "fetch the image again"
            ) from None

    def uncompressed(self) -> BinaryIO:
        """The layer as a plain tar stream, decoded on the fly (no temporary copy)."""
        if self.is_zstd():
            raise CacheError(
                f"layer {self.digest()} is zstd-compressed, which this tool cannot decode; "
                "fetch a gzip variant of the image"
            )
        fh = self.compressed()
        if not self.is_gzip():
            return fh
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"StoredLayer({self.digest()}, {self.media_type}, {self.size()} bytes)"


class StoredImage:
    """An image whose manifest, config and layers are all blobs in one ``BlobStore``."""

    def __init__(self, store: BlobStore, manifest_digest: str) -> None:
        self.store = store
        raw = _read_small_blob(store, manifest_digest, "manifest", manifest_digest)
        try:
            mt = detect_media_type(raw)
        except ManifestError as e:
            raise CacheError(f"manifest blob {manifest_digest} is unreadable: {e}") from e
        if mt in INDEX_TYPES:
            raise CacheError(
                f"{manifest_digest} is an image index (several platforms), not one image; "
                "select a platform's manifest from it first (Index.select)"
            )
        self._manifest: Manifest = parse_manifest(raw)
        self._raw_config = _read_small_blob(store, self._manifest.config.digest, "config", manifest_digest)
        try:
            cfg = json.loads(self._raw_config)
        except ValueError as e:
            raise CacheError(f"config blob {self._manifest.config.digest} is not valid JSON: {e}") from e
        if not isinstance(cfg, Mapping):
            raise CacheError(f"config blob {self._manifest.config.digest} is not a JSON object")
        self._config: Mapping[str, Any] = cfg
        diff_ids = list((cfg.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(self._manifest.layers):
            raise CacheError(
                f"image {manifest_digest}: config lists {len(diff_ids)} diff_ids for "
                f"{len(self._manifest.layers)} layers; the image is malformed, fetch it again"
            )
        for d in self._manifest.layers:
            if not store.has(d.digest):
                raise _missing(store, d.digest, "layer", manifest_digest)
        self._layers = tuple(
            StoredLayer(store, d, str(diff)) for d, diff in zip(self._manifest.layers, diff_ids, strict=True)
        )

    # -- go-containerregistry's v1.Image ---------------------------------
    def digest(self) -> str:
        """sha256 of the manifest bytes: the image's identity across registries."""
        return self._manifest.digest

    def config_name(self) -> str:
        """The config digest, which is what Docker and Podman call the image id."""
        return self._manifest.config.digest

    def media_type(self) -> str:
        return self._manifest.media_type

    def raw_manifest(self) -> bytes:
        return self._manifest.raw

    def raw_config_file(self) -> bytes:
        return self._raw_config

    def config(self) -> Mapping[str, Any]:
        return self._config

    def manifest(self) -> Manifest:
        return self._manifest

    def layers(self) -> tuple[StoredLayer, ...]:
        return self._layers

    def layer_by_digest(self, digest: str) -> StoredLayer:
        for layer in self._layers:
            if layer.digest() == digest:
                return layer
        raise CacheError(f"image {self.digest()} has no layer {digest}")

    def layer_by_diff_id(self, diff_id: str) -> StoredLayer:
        for layer in self._layers:
            if layer.diff_id() == diff_id:
                return layer
        raise CacheError(f"image {self.digest()} has no layer with diff id {diff_id}")

    def platform(self) -> Platform:
        return image_platform(self._config)

    def size(self) -> int:
        """Bytes of every blob the image needs (manifest + config + layers, as stored).

        Unlike go-containerregistry's ``Size()`` (the manifest alone) this is
        what a snapshot or transfer of the image costs, which is what callers
        here ask.
        """
        return len(self._manifest.raw) + self._manifest.config.size + sum(x.size() for x in self._layers)

    def blob_digests(self) -> tuple[str, ...]:
        """Every blob the image references, manifest first, without repeats."""
        seen: dict[str, None] = {self.digest(): None, self.config_name(): None}
        for layer in self._layers:
            seen.setdefault(layer.digest(), None)
        return tuple(seen)

    def __repr__(self) -> str:
        return f"StoredImage({self.digest()}, id={self.config_name()}, {len(self._layers)} layers)"

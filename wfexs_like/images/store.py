"""The blob store as an image source (``StoreImage``) and sink (``write_to_store``).

A ``StoreImage`` is a manifest digest plus the store: every answer comes
from blobs already on disk, verified when they arrived, so its layers offer
``local_path()`` and sinks link them instead of copying. Construction
checks that every blob the manifest names is present, so a half-evicted
image fails here with the missing digest named, not halfway through an
engine load.

A blob is vouched for by the store's strict check (``BlobStore.unchanged``:
size, mtime, inode and ctime as recorded), which an edit whose mtime was
put back with ``touch -r`` fails. A blob that fails it is hashed once
before it is used: a link made by someone else is then recorded again, and
rotten bytes are moved to ``corrupt/`` and reported by digest, so whoever
built from it can evict what it made and fetch the blob again
(``rehash_image`` settles a later failure the same way).

``write_to_store`` is the sink every other source is copied into: each
blob streams through a verifying ``BlobWriter`` under its per-digest lock,
blobs already present are skipped, and the manifest is published last, so
a manifest in the store always means a complete image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

from .. import progress
from ..digests import CHUNK, sha256_bytes, sha256_file
from ..errors import CacheError, IntegrityError
from .base import Image, LoadedImage
from .blobstore import BlobStore
from .manifest import (
    INDEX_TYPES,
    Descriptor,
    Manifest,
    ManifestError,
    detect_media_type,
    parse_manifest_or_index,
)


def _missing(store: BlobStore, digest: str, what: str, manifest_digest: str) -> CacheError:
    return CacheError(
        f"{what} blob {digest} of image {manifest_digest} is not in the blob store "
        f"({store.path(digest)}); the cache entry is incomplete: fetch the image again "
        "(it will reuse the blobs that are still there)"
    )


def read_small_blob(store: BlobStore, digest: str, what: str, manifest_digest: str) -> bytes:
    """Read a manifest/config blob and re-hash it: cheap, and they pin everything else."""
    try:
        raw = store.path(digest).read_bytes()
    except FileNotFoundError:
        raise _missing(store, digest, what, manifest_digest) from None
    actual = sha256_bytes(raw)
    if actual != digest:
        if not store.readonly:
            store.quarantine(digest)
        raise IntegrityError(
            f"{what} blob {store.path(digest)} does not hash to its name (got {actual}); "
            "it rotted on disk and was moved aside: fetch the image again",
            expected=digest,
            actual=actual,
        )
    return raw


class StoreImage(LoadedImage):
    """An image whose manifest, config and layers are all blobs in one ``BlobStore``."""

    def __init__(self, store: BlobStore, manifest_digest: str) -> None:
        self.store = store
        self._digest = manifest_digest
        self._raw_manifest = read_small_blob(store, manifest_digest, "manifest", manifest_digest)
        try:
            mt = detect_media_type(self._raw_manifest)
        except ManifestError as e:
            raise CacheError(f"manifest blob {manifest_digest} is unreadable: {e}") from e
        if mt in INDEX_TYPES:
            raise CacheError(
                f"{manifest_digest} is an image index (several platforms), not one image; "
                "select a platform's manifest from it first (Index.select)"
            )
        cfg = self.manifest().config.digest
        self._raw_config = read_small_blob(store, cfg, "config", manifest_digest)
        for layer in self.layers():
            if not store.has(layer.digest()):
                raise _missing(store, layer.digest(), "layer", manifest_digest)

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        path = self.store.path(descriptor.digest)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise CacheError(
                f"blob {descriptor.digest} vanished from the blob store ({path}); fetch the image again"
            ) from None

    def blob_path(self, digest: str) -> Path | None:
        return self.store.path(digest)

    def blob_trusted(self, digest: str) -> bool:
        """``BlobStore.vouch``; rotten bytes raise ``IntegrityError`` (they were moved aside)."""
        if self.store.readonly:  # nothing can be recorded or moved there
            return self.store.vouch(digest)
        if not self.store.has(digest):
            return False  # open_blob names it
        if self.store.vouch(digest):
            return True
        raise rotten(self.store, digest, self._digest)

    def blob_mismatch(self, digest: str) -> None:
        if not self.store.readonly:
            self.store.quarantine(digest)

    def diff_id_checked(self, digest: str, diff_id: str) -> bool:
        return self.store.diff_id_checked(digest, diff_id)

    def record_diff_id(self, digest: str, diff_id: str) -> None:
        self.store.record_diff_id(digest, diff_id)

    def describe(self) -> str:
        return f"image {self._digest} in {self.store.root}"

    def describe_source(self) -> str:
        return f"blob store {self.store.root}"


def rotten(store: BlobStore, digest: str, manifest_digest: str) -> IntegrityError:
    """The error for a stored blob whose bytes turned out wrong (and that ``verify`` moved aside)."""
    return IntegrityError(
        f"blob {digest} of image {manifest_digest} does not hash to its name: it rotted on disk in "
        f"the cache at {store.root} and was moved to {store.root / 'corrupt'}; fetch the image again "
        "(materialize it with network access), or run 'wfexs-like cache verify --repair'",
        expected=digest,
    )


def stored_image_blobs(store: BlobStore, manifest_digest: str) -> list[str]:
    """The config and layer digests the stored manifest names (CacheError: it is absent or unreadable)."""
    try:
        doc = parse_manifest_or_index(store.path(manifest_digest).read_bytes())
    except (OSError, ManifestError) as e:
        raise CacheError(
            f"manifest {manifest_digest} is not readable in the cache at {store.root}: {e}"
        ) from e
    if not isinstance(doc, Manifest):
        return []
    return list(dict.fromkeys([doc.config.digest, *(layer.digest for layer in doc.layers)]))


def rehash_image(
    store: BlobStore,
    manifest_digest: str,
    *,
    done: set[str] | None = None,
    skip: Collection[str] = (),
) -> list[str]:
    """Hash every stored blob of an image in full; return those that must be fetched again.

    For ``--force`` and for a failure the cheap checks let through (a build
    or a load that broke): it says whether the cache is to blame. Wrong
    blobs are moved to ``corrupt/`` (in a read-only store only reported).
    A blob the manifest names that is no longer stored is reported too: a
    caller that just used the image had it, so it was moved aside meanwhile.
    ``done``: digests already hashed by this caller (skipped, and added to);
    ``skip``: digests not to hash (just downloaded, verified on arrival).
    """
    try:
        raw = store.path(manifest_digest).read_bytes()
    except FileNotFoundError:
        return [manifest_digest]
    if sha256_bytes(raw) != manifest_digest:
        if not store.readonly:
            store.quarantine(manifest_digest)
        return [manifest_digest]
    try:
        blobs = stored_image_blobs(store, manifest_digest)
    except CacheError:
        return []
    done = set() if done is None else done
    bad: list[str] = []
    for digest in blobs:
        if not store.has(digest):
            bad.append(digest)
            continue
        if digest in done or digest in skip:
            continue
        progress.check_cancelled()
        ok = sha256_file(store.path(digest)) == digest if store.readonly else store.verify(digest, full=True)
        done.add(digest)
        if not ok:
            bad.append(digest)
    return bad


def write_to_store(image: Image, store: BlobStore) -> str:
    """Copy ``image`` into ``store`` (every blob verified on the way); return its manifest digest.

    A source that can fill a store better than blob by blob (a registry:
    parallel, resumable downloads) offers ``fetch_into(store)``, and that is
    used instead; the result is the same.
    """
    fetch_into = getattr(image, "fetch_into", None)
    if fetch_into is not None:
        return str(fetch_into(store))
    if isinstance(image, StoreImage) and image.store.root == store.root:
        return image.digest()
    manifest = image.manifest()
    for layer in image.layers():
        if store.has(layer.digest()) and store.is_trusted(layer.digest()):
            continue
        with store.lock(layer.digest()):
            if store.has(layer.digest()):
                continue
            with (
                contextlib.closing(layer.compressed()) as src,
                store.writer(layer.digest(), layer.size()) as w,
            ):
                while chunk := src.read(CHUNK):
                    w.write(chunk)
    # Config and manifest last: a source with a bad layer leaves no half-image behind.
    _put_small(store, image.raw_config_file(), manifest.config.digest)
    _put_small(store, image.raw_manifest(), image.digest())
    return image.digest()


def _put_small(store: BlobStore, raw: bytes, digest: str) -> None:
    if store.has(digest):
        return
    with store.lock(digest):
        if not store.has(digest):
            store.put_bytes(raw, expected_digest=digest)

"""The one storage-backend interface: blobs and small records, by key.

Its shape is the one file and image stores in this field share (a
registry's storage driver, an object store's backend): existence and size,
a stream read from an offset (so a broken transfer resumes), a
write-then-publish that checks the digest while the bytes arrive (so a
reader never meets a partial or wrong object under a final key), delete and
list. Keys are relative paths: ``blobs/sha256/<hex>`` for content,
``tags/<key>.json`` and ``refs/<kind>/<key>.json`` for records, exactly as
the local cache lays them out, so a library directory *is* a backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from ..digests import CHUNK, split_digest
from ..errors import CacheError, IntegrityError

#: Bigger than any record we write; a "record" past this is refused, not read into memory.
MAX_RECORD_BYTES = 1 << 20


class StorageError(CacheError):
    """A backend could not be read or written (unreachable, refused, misconfigured)."""


class StorageAccessError(StorageError):
    """The backend refuses us as configured (credentials, bucket): fixing the setup is the only cure.

    Unlike a missing object or a network hiccup, this is not worth falling
    through to the next tier for: every later request would fail the same
    way, and a remote cache that silently never works is worse than an error.
    """


class StorageUnreachableError(StorageError):
    """The backend cannot be reached at all: asking it again for the next blob would only wait again."""


def blob_key(digest: str) -> str:
    algo, hexd = split_digest(digest)
    if algo != "sha256":
        raise StorageError(f"only sha256 blobs are stored, not {digest}")
    return f"blobs/sha256/{hexd}"


def check_key(key: str) -> str:
    """Keys are relative, normalised paths: nothing a backend joins can climb out of its root."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid storage key {key!r}")
    return key


class Backend(Protocol):
    """A place bytes live. ``name`` is what messages show (``s3://bucket/prefix``, a directory).

    ``authoritative``: its tag records and entries say what a tag *means* (a
    site library the site curates), so they answer even online; a tier that
    only caches what a registry said (S3) answers tags only offline.
    """

    name: str
    writable: bool
    authoritative: bool

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """The object's size, or None when it does not exist."""

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        """A stream of the object from ``offset``; ``FileNotFoundError`` when it does not exist."""

    def put(self, key: str, source: BinaryIO, *, digest: str | None = None, size: int | None = None) -> None:
        """Publish ``source`` under ``key`` only once it is whole and, if given, hashes to ``digest``."""

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[str]: ...


class HashingReader:
    """Wraps a stream so a writer learns the digest and size of what it consumed, as it goes."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = CHUNK) -> bytes:
        chunk = self.raw.read(n if n and n > 0 else CHUNK)
        self.hash.update(chunk)
        self.size += len(chunk)
        return chunk

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()

    def check(self, where: str, digest: str | None, size: int | None) -> None:
        if size is not None and self.size != size:
            raise IntegrityError(f"{where}: got {self.size} bytes, expected {size}", expected=digest)
        if digest is not None and self.digest != digest:
            raise IntegrityError(
                f"{where}: the bytes hash to {self.digest}, not {digest}; nothing was published",
                expected=digest,
                actual=self.digest,
            )


def read_record(backend: Backend, key: str) -> bytes | None:
    """A small record's bytes, or None when absent; refuses one larger than any we write."""
    size = backend.size(key)
    if size is None:
        return None
    if size > MAX_RECORD_BYTES:
        raise StorageError(f"{backend.name}: record {key} is {size} bytes; not one of ours, refused")
    try:
        with backend.open(key) as fh:
            return fh.read(MAX_RECORD_BYTES + 1)[:MAX_RECORD_BYTES]
    except FileNotFoundError:
        return None

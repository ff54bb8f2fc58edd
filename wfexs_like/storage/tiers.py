"""Reading through the tiers: local store, then library dirs, then the shared object store.

``TieredBlobStore`` is the local ``BlobStore`` with one difference: when it
lacks a blob, ``has()`` asks the tiers in order and, when one has it,
streams it in through the store's own writer, which hashes the bytes and
publishes them only if they match the digest. Every consumer of the store
(the registry client, the image sources, the snapshot builders) therefore
reads through the tiers without knowing they exist, and the registry is
asked only for what no tier holds. A tier that serves wrong bytes is
logged and skipped; the next one (or the registry) is used.

Writes go the other way: a blob published locally is copied to the one
writable tier (``publish``), so the next machine finds it there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import IntegrityError
from ..images.blobstore import BlobStore
from ..progress import check_cancelled
from .base import Backend, StorageError, blob_key, read_record

log = logging.getLogger(__name__)


class Tiers:
    """An ordered list of read tiers and at most one write tier (shared by every store of a process)."""

    def __init__(self, readers: Sequence[Backend] = (), writer: Backend | None = None) -> None:
        self.readers = list(readers)
        self.writer = writer
        #: What each tier served, for provenance and benchmarks: backend name -> blobs, bytes.
        self.served: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.readers or self.writer)

    def fetch_blob(self, store: BlobStore, digest: str) -> str | None:
        """Bring ``digest`` into ``store`` from the first tier that has it intact; the tier's name."""
        key = blob_key(digest)
        for tier in self.readers:
            try:
                size = tier.size(key)
                if size is None:
                    continue
                with tier.open(key) as src, store.writer(digest, size) as w:
                    while chunk := src.read(1 << 20):
                        check_cancelled()
                        w.write(chunk)
            except IntegrityError as e:
                log.warning("%s served a wrong copy of %s (%s); trying the next source", tier.name, digest, e)
                continue
            except (StorageError, OSError) as e:
                log.warning("%s could not serve %s: %s; trying the next source", tier.name, digest, e)
                continue
            with self._lock:
                count = self.served.setdefault(tier.name, [0, 0])
                count[0] += 1
                count[1] += size
            return tier.name
        return None

    def fetch_record(self, key: str) -> bytes | None:
        """A small record (a tag resolution) from the first tier that has one."""
        for tier in self.readers:
            try:
                data = read_record(tier, key)
            except (StorageError, OSError) as e:
                log.warning("%s could not serve %s: %s", tier.name, key, e)
                continue
            if data is not None:
                return data
        return None

    def publish_blob(self, store: BlobStore, digest: str) -> bool:
        """Copy a local blob to the write tier unless it is there already; True when uploaded."""
        if self.writer is None:
            return False
        key = blob_key(digest)
        path = store.path(digest)
        size = path.stat().st_size
        if self.writer.size(key) == size:
            return False
        with open(path, "rb") as fh:
            self.writer.put(key, fh, digest=digest, size=size)
        return True

    def publish_record(self, key: str, data: bytes) -> None:
        if self.writer is None:
            return
        import io

        self.writer.put(key, io.BytesIO(data), size=len(data))


class TieredBlobStore(BlobStore):
    """A ``BlobStore`` that reads missing blobs through ``tiers``; see the module docstring."""

    def __init__(self, root: Path, tiers: Tiers, *, readonly: bool = False) -> None:
        super().__init__(root, readonly=readonly)
        self.tiers = tiers

    def has(self, digest: str) -> bool:
        if super().has(digest):
            return True
        if not self.tiers.readers or self.readonly:
            return False
        with self.lock(digest):
            if super().has(digest):
                return True
            return self.tiers.fetch_blob(self, digest) is not None

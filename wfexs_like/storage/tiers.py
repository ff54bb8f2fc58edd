"""Reading through the tiers: local store, then library dirs, then the shared object store.

``TieredBlobStore`` is the local ``BlobStore`` with one difference: when it
lacks a blob, ``has()`` asks the tiers in order and, when one has it,
brings it in verified: streamed through the store's own writer (which
hashes the bytes and publishes them only if they match the digest), or,
from a library dir on the same filesystem, hard-linked and then hashed
(unless the library's own trust record vouches for it), so a library's
bytes exist once on disk. Every consumer of the store (the registry
client, the image sources, the snapshot builders) therefore reads through
the tiers without knowing they exist, and the registry is asked only for
what no tier holds. A tier that serves wrong bytes is logged and skipped;
the next one (or the registry) is used.

Three kinds of failure are told apart, because they call for different
reactions: a wrong or missing object (try the next tier), a tier that
cannot be reached (skip it for a while instead of waiting on it for every
blob), and a tier that refuses our credentials (an error: the user asked
for a remote cache that cannot work as configured).

Writes go the other way: a blob published locally is copied to the one
writable tier (``publish_blob``), so the next machine finds it there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..digests import CHUNK
from ..errors import IntegrityError
from ..filelocks import FileLock
from ..fsutil import fsync_dir, random_hex
from ..images.blobstore import BlobStore
from ..progress import check_cancelled
from .base import (
    Backend,
    StorageAccessError,
    StorageError,
    StorageUnreachableError,
    blob_key,
    read_record,
)
from .local import DirBackend

log = logging.getLogger(__name__)

#: How long a tier that could not be reached is left alone before it is tried again.
DOWN_SECONDS = 60.0
#: How long "no tier has this blob" is remembered (another node may publish it meanwhile).
MISS_SECONDS = 60.0
#: Times a broken stream is resumed from where it stopped before the tier is given up on.
RESUMES = 3
#: ``os.link`` failures that mean "copy instead" (another filesystem, not allowed, too many links).
_LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP}


class Tiers:
    """An ordered list of read tiers and at most one write tier (shared by every store of a process)."""

    def __init__(self, readers: Sequence[Backend] = (), writer: Backend | None = None) -> None:
        self.readers = list(readers)
        self.writer = writer
        #: What each tier served, for provenance and benchmarks: backend name -> [blobs, bytes].
        self.served: dict[str, list[int]] = {}
        #: Which tier served each blob brought in by this process, and its size (``served_by``).
        self.served_from: dict[str, tuple[str, int]] = {}
        #: Why the tiers did not serve a blob or record (names the tier), for error messages.
        self.problems: dict[str, list[str]] = {}
        self._down: dict[str, float] = {}
        self._misses: dict[str, float] = {}
        self._hashed: dict[tuple[int, int, int, int], str] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.readers or self.writer)

    def describe(self) -> str:
        """The tiers a message should name, in the order they are read."""
        return ", ".join(t.name for t in self.readers)

    # -- bookkeeping ------------------------------------------------------------------------------
    def _readers(self, authoritative: bool | None = None) -> list[Backend]:
        """The tiers to ask now, in order: all (None), only site libraries (True), only the others."""
        now = time.monotonic()
        with self._lock:
            return [
                t
                for t in self.readers
                if self._down.get(t.name, 0.0) <= now and authoritative in (None, t.authoritative)
            ]

    def is_down(self, tier: Backend) -> bool:
        """Whether ``tier`` could not be reached a moment ago (it is left alone for ``DOWN_SECONDS``)."""
        with self._lock:
            return self._down.get(tier.name, 0.0) > time.monotonic()

    def mark_down(self, tier: Backend) -> None:
        with self._lock:
            self._down[tier.name] = time.monotonic() + DOWN_SECONDS

    def _failed(self, tier: Backend, what: str, e: Exception) -> None:
        """Note why ``tier`` did not serve ``what``; a refusal of our credentials is not skipped."""
        if isinstance(e, StorageAccessError):
            raise e
        if isinstance(e, StorageUnreachableError):
            self.mark_down(tier)
        log.warning("%s could not serve %s (%s); trying the next source", tier.name, what, e)
        with self._lock:
            self.problems.setdefault(what, []).append(f"{tier.name}: {e}")

    def _served(self, tier: Backend, digest: str, size: int) -> None:
        with self._lock:
            count = self.served.setdefault(tier.name, [0, 0])
            count[0] += 1
            count[1] += size
            self.served_from[digest] = (tier.name, size)
            self.problems.pop(digest, None)

    def served_by(self, digests: Sequence[str]) -> dict[str, dict[str, int]]:
        """``{tier: {"blobs": n, "bytes": b}}`` for those of ``digests`` a tier served this process."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for d in dict.fromkeys(digests):
                hit = self.served_from.get(d)
                if hit is not None:
                    row = out.setdefault(hit[0], {"blobs": 0, "bytes": 0})
                    row["blobs"] += 1
                    row["bytes"] += hit[1]
        return out

    # -- blobs ------------------------------------------------------------------------------------
    def fetch_blob(self, store: BlobStore, digest: str) -> str | None:
        """Bring ``digest`` into ``store`` from the first tier that has it intact; the tier's name."""
        key = blob_key(digest)
        with self._lock:
            missed = self._misses.get(digest)
        if missed is not None and time.monotonic() - missed < MISS_SECONDS:
            return None
        for tier in self._readers():
            try:
                size = tier.size(key)
                if size is None:
                    continue
                path = _local_path(tier, key)
                if path is None or not _link_in(store, path, digest, trusted=_trusts(tier, key)):
                    _copy_in(tier, key, store, digest, size)
            except (IntegrityError, StorageError, OSError) as e:
                self._failed(tier, digest, e)
                continue
            self._served(tier, digest, size)
            return tier.name
        with self._lock:
            self._misses[digest] = time.monotonic()
        return None

    def fetch_named(
        self, store: BlobStore, names: Sequence[str], *, known: str | None = None
    ) -> tuple[str, str, str] | None:
        """A file a library names after its image (a Nextflow SIF library), brought into ``store``.

        Only authoritative tiers (library dirs) are asked: a name is not a
        digest, so nothing else vouches for it. Returns (digest, tier name,
        the name found). The file is hashed on its first use by this cache:
        ``known``, the digest the local cache recorded for the same name
        last time, is taken without hashing when the file is still the one
        the store holds (same inode, or the size and mtime recorded when it
        was hashed).
        """
        for tier in self._readers(authoritative=True):
            for name in names:
                try:
                    size = tier.size(name)
                    if size is None:
                        continue
                    path = _local_path(tier, name)
                    digest = self._named_digest(store, path, known) if path is not None else None
                    if digest is None:
                        digest = _import_unknown(tier, name, path, store)
                        self._served(tier, digest, size)
                except (IntegrityError, StorageError, OSError) as e:
                    self._failed(tier, name, e)
                    continue
                if path is not None:
                    st = path.stat()
                    with self._lock:
                        self._hashed[(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] = digest
                return digest, tier.name, name
        return None

    def _named_digest(self, store: BlobStore, path: Path, known: str | None) -> str | None:
        """The digest of a named library file without hashing it, when that is safe; else None."""
        st = path.stat()
        with self._lock:
            digest = self._hashed.get((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        if digest is not None and store.path(digest).is_file():
            return digest
        if known is None or not store.path(known).is_file():
            return None
        sst = store.path(known).stat()
        if (sst.st_dev, sst.st_ino) == (st.st_dev, st.st_ino) and store.is_trusted(known):
            return known
        return known if store.is_trusted(known, path) else None

    # -- records ----------------------------------------------------------------------------------
    def fetch_record(self, key: str, *, authoritative: bool | None = None) -> tuple[bytes, str] | None:
        """A small record (a tag resolution, a snapshot entry) from the first tier that has one, with
        that tier's name; ``authoritative`` narrows the tiers asked as in ``_readers``."""
        for tier in self._readers(authoritative):
            try:
                data = read_record(tier, key)
            except (StorageError, OSError) as e:
                self._failed(tier, key, e)
                continue
            if data is not None:
                return data, tier.name
        return None

    # -- writes -----------------------------------------------------------------------------------
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

    def publish_record(self, key: str, data: bytes) -> bool:
        """Put a small record on the write tier unless it holds the same bytes; True when written."""
        if self.writer is None:
            return False
        if read_record(self.writer, key) == data:
            return False
        self.writer.put(key, io.BytesIO(data), size=len(data))
        return True


def open_tiers(
    remote_cache: str | None = None,
    library_dirs: Sequence[Path | str] = (),
    *,
    no_remote: bool = False,
) -> Tiers | None:
    """The tiers the settings name: library dirs first (read-only, in order), then the remote cache.

    ``no_remote`` leaves the remote cache out entirely (no reads, no
    writes); library dirs are plain directories and stay. None when there
    is nothing beyond the local cache.
    """
    libraries: list[Backend] = []
    for d in library_dirs:
        path = Path(d).expanduser()
        if not path.is_dir():
            raise StorageError(
                f"library dir {path} does not exist or is not a directory; fix --library-dir "
                "(or library-dirs in the configuration, or WFEXS_LIKE_LIBRARY_DIRS)"
            )
        libraries.append(DirBackend(path, authoritative=True))
    remote: Backend | None = None
    if remote_cache and not no_remote:
        from .s3 import S3Backend

        remote = S3Backend(remote_cache)
    if not libraries and remote is None:
        return None
    return Tiers([*libraries, *([remote] if remote is not None else [])], remote)


# -- moving one object in -------------------------------------------------------------------------
def _local_path(tier: Backend, key: str) -> Path | None:
    local_path = getattr(tier, "local_path", None)
    return local_path(key) if local_path is not None else None


def _trusts(tier: Backend, key: str) -> bool:
    is_trusted = getattr(tier, "is_trusted", None)
    return bool(is_trusted(key)) if is_trusted is not None else False


def _copy_in(tier: Backend, key: str, store: BlobStore, digest: str, size: int) -> None:
    """Stream ``key`` through a verifying writer, resuming a broken stream where it stopped."""
    with store.writer(digest, size) as w:
        resumes = 0
        while True:
            try:
                with tier.open(key, w.written) as src:
                    while chunk := src.read(CHUNK):
                        check_cancelled()
                        w.write(chunk)
                break
            except StorageError as e:
                if isinstance(e, StorageAccessError) or resumes >= RESUMES or w.written >= size:
                    raise
                resumes += 1
                log.info("%s: resuming %s at byte %d (%s)", tier.name, key, w.written, e)


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            check_cancelled()
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _link_in(store: BlobStore, path: Path, digest: str | None, *, trusted: bool) -> str | None:
    """Hard-link a library file into ``store`` as blob ``digest`` (None: whatever it hashes to).

    The link is made first and the *link* is hashed, so what is checked is
    the inode the store keeps. Nothing about the library's file changes
    (no chmod: its mode is its owner's business). Returns the digest, or
    None when the filesystem cannot link (the caller copies instead).
    """
    tmp = store.tmp_dir / f"link-{random_hex(16)}.tmp"
    try:
        os.link(path, tmp)
    except OSError as e:
        if e.errno in _LINK_FALLBACK:
            return None
        raise
    try:
        if digest is None or not trusted:
            actual = _hash_file(tmp)
            if digest is not None and actual != digest:
                raise IntegrityError(
                    f"{path} does not hash to its name {digest} (got {actual}); not used",
                    expected=digest,
                    actual=actual,
                )
            digest = actual
        final = store.path(digest)
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)
            fsync_dir(final.parent)
        store.mark_verified(digest)
        return digest
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _import_unknown(tier: Backend, key: str, path: Path | None, store: BlobStore) -> str:
    """Bring in an object whose digest nobody told us: linked and hashed, or streamed and hashed."""
    if path is not None:
        digest = _link_in(store, path, None, trusted=False)
        if digest is not None:
            return digest
    with tier.open(key) as src, store.writer() as w:
        while chunk := src.read(CHUNK):
            check_cancelled()
            w.write(chunk)
    return w.digest


class TieredBlobStore(BlobStore):
    """A ``BlobStore`` that reads missing blobs through ``tiers``; see the module docstring.

    Its per-digest locks are re-entrant within a thread: callers (the
    registry client, ``write_to_store``) ask ``has()`` while already holding
    the digest's lock, and ``has()`` takes it too before fetching.
    """

    def __init__(self, root: Path, tiers: Tiers, *, readonly: bool = False) -> None:
        super().__init__(root, readonly=readonly)
        self.tiers = tiers
        self._locks: dict[str, FileLock] = {}
        self._locks_guard = threading.Lock()

    def lock(self, key: str, timeout: float = -1) -> FileLock:
        if timeout != -1:
            return super().lock(key, timeout)
        with self._locks_guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = super().lock(key)
        return lock

    def has(self, digest: str) -> bool:
        if super().has(digest):
            return True
        if not self.tiers.readers or self.readonly:
            return False
        with self.lock(digest):
            if super().has(digest):
                return True
            return self.tiers.fetch_blob(self, digest) is not None

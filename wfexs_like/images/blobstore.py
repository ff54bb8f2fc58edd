"""A content-addressed blob store: every layer, config and manifest once, under its digest.

Why it is shaped this way:

- **Publish by rename.** Bytes go to a temporary file in ``tmp/`` on the same
  filesystem, are hashed while written, fsynced, and only then renamed to
  ``blobs/sha256/<hex>``. A reader therefore never needs a lock: a final name
  either does not exist or holds exactly the bytes its name promises. A
  writer killed at any point leaves at most a file under ``tmp/``.
- **Locks only for writers** (``filelock``, one per digest), so two processes
  fetching the same layer do the work once and the second finds it done.
- **Trust like git's index.** Re-hashing a multi-GB image on every re-stage is
  what makes the reference slow. When a blob is verified we record its size
  and mtime; later a ``stat`` that matches is enough (``is_trusted``), and
  ``verify(full=True)`` re-hashes on request. The record also keeps the
  inode and ctime, which ``touch -r`` cannot restore: ``unchanged`` checks
  them too, so ``cache verify`` catches bytes edited with the mtime put back
  while re-hashing only blobs whose inode changed since they were hashed.
- **Read-only blobs.** Snapshots hard-link to these files, so they are
  chmod 0444 to keep a careless workflow from editing the cache in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from filelock import FileLock

from ..digests import CHUNK, sha256_file, split_digest
from ..errors import CacheError, IntegrityError
from ..fsutil import atomic_write_bytes, fsync_dir

BLOB_MODE = 0o444


class BlobWriter:
    """Streams bytes into a temp file, hashing as it goes; ``commit`` publishes.

    With ``resumable=True`` (needs ``expected_digest``) the temp file has a
    stable name, ``tmp/sha256-<hex>.partial``, that survives a failure so the
    next attempt can continue from ``offset`` (an HTTP ``Range`` request).
    Callers doing that must hold ``store.lock(digest)``.
    """

    def __init__(
        self,
        store: BlobStore,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        resumable: bool = False,
    ) -> None:
        self.store = store
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        self.resumable = resumable and expected_digest is not None
        self._hash = hashlib.sha256()
        self.offset = 0
        self._closed = False
        if expected_digest is not None:
            algo, _ = split_digest(expected_digest)
            if algo != "sha256":
                raise CacheError(f"only sha256 blobs can be stored, got {expected_digest}")
        if self.resumable:
            assert expected_digest is not None
            self.tmp_path = store.tmp_dir / f"sha256-{split_digest(expected_digest)[1]}.partial"
            self._fh: BinaryIO = open(self.tmp_path, "a+b")  # noqa: SIM115 - closed in commit/discard
            self._fh.seek(0)
            while chunk := self._fh.read(CHUNK):
                self._hash.update(chunk)
                self.offset += len(chunk)
            if expected_size is not None and self.offset > expected_size:
                self._fh.truncate(0)
                self._hash = hashlib.sha256()
                self.offset = 0
            self._fh.seek(0, os.SEEK_END)
        else:
            fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="blob-", suffix=".tmp")
            self.tmp_path = Path(name)
            self._fh = os.fdopen(fd, "wb")
        self.written = self.offset

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self._hash.update(chunk)
        self.written += len(chunk)
        if self.expected_size is not None and self.written > self.expected_size:
            raise IntegrityError(
                f"blob {self.expected_digest} is larger than the {self.expected_size} bytes promised",
                expected=self.expected_digest,
            )

    def restart(self) -> None:
        """Throw away what was written (a server that ignored our Range request)."""
        self._fh.seek(0)
        self._fh.truncate(0)
        self._hash = hashlib.sha256()
        self.offset = self.written = 0

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def commit(self) -> str:
        """Check digest and size, then fsync and rename into place. Returns the digest."""
        digest = self.digest
        try:
            if self.expected_size is not None and self.written != self.expected_size:
                raise IntegrityError(
                    f"blob {self.expected_digest or digest}: got {self.written} bytes, "
                    f"expected {self.expected_size}",
                    expected=self.expected_digest,
                    actual=digest,
                )
            if self.expected_digest is not None and digest != self.expected_digest:
                raise IntegrityError(
                    f"blob content does not match its digest: expected {self.expected_digest}, "
                    f"got {digest}; the source sent corrupted or different bytes",
                    expected=self.expected_digest,
                    actual=digest,
                )
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._closed = True
            self.store._publish(self.tmp_path, digest)
        except BaseException:
            self.discard()
            raise
        return digest

    def discard(self) -> None:
        if not self._closed:
            self._fh.close()
            self._closed = True
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()

    def close_keep_partial(self) -> None:
        """Leave the partial file for a later resume (only meaningful when resumable)."""
        if not self._closed:
            self._fh.flush()
            self._fh.close()
            self._closed = True
        if not self.resumable:
            self.discard()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.commit()
        elif self.resumable and not isinstance(exc, IntegrityError):
            self.close_keep_partial()
        else:
            self.discard()


class BlobStore:
    """Blobs under ``<root>/blobs/sha256/<hex>``; see the module docstring for the rules."""

    def __init__(self, root: Path, *, readonly: bool = False) -> None:
        """``readonly`` opens any ``blobs/sha256`` tree (an OCI layout has one) just to read."""
        self.root = Path(root).absolute()
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"
        self.trust_dir = self.root / "trust" / "sha256"
        self.readonly = readonly
        for d in () if readonly else (self.blobs_dir, self.tmp_dir, self.locks_dir, self.trust_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CacheError(
                    f"cannot create cache directory {d}: {e.strerror}; "
                    "choose another with --cache-dir or WFEXS_LIKE_CACHE_DIR"
                ) from e

    # -- naming -----------------------------------------------------------
    def path(self, digest: str) -> Path:
        algo, hexd = split_digest(digest)
        if algo != "sha256":
            raise CacheError(f"only sha256 blobs are stored, not {digest}")
        return self.blobs_dir / hexd

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def lock(self, key: str, timeout: float = -1) -> FileLock:
        """A cross-process lock for ``key`` (a digest, or any short name)."""
        safe = key.replace(":", "-").replace("/", "_")
        if len(safe) > 200:
            safe = hashlib.sha256(key.encode()).hexdigest()
        return FileLock(str(self.locks_dir / f"{safe}.lock"), timeout=timeout)

    def iter_digests(self) -> Iterator[str]:
        for p in self.blobs_dir.iterdir():
            if len(p.name) == 64:
                yield "sha256:" + p.name

    # -- writing ----------------------------------------------------------
    def writer(
        self,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        resumable: bool = False,
    ) -> BlobWriter:
        return BlobWriter(self, expected_digest, expected_size, resumable)

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> str:
        with self.writer(expected_digest, len(data)) as w:
            w.write(data)
        return w.digest

    def put_stream(
        self,
        chunks: Iterable[bytes],
        expected_digest: str | None = None,
        expected_size: int | None = None,
    ) -> str:
        with self.writer(expected_digest, expected_size) as w:
            for chunk in chunks:
                w.write(chunk)
        return w.digest

    def put_file(self, src: Path, expected_digest: str | None = None) -> str:
        with open(src, "rb") as fh:
            return self.put_stream(iter(lambda: fh.read(CHUNK), b""), expected_digest)

    def adopt_file(self, src: Path, expected_digest: str | None = None) -> str:
        """Move a finished file (a built SIF, a saved archive) into the store without copying.

        It is hashed in place and renamed when it is on the store's
        filesystem; from elsewhere it is copied through a writer instead.
        """
        digest = sha256_file(src)
        if expected_digest is not None and digest != expected_digest:
            raise IntegrityError(
                f"{src} does not match its expected digest {expected_digest} (got {digest})",
                expected=expected_digest,
                actual=digest,
            )
        try:
            same_fs = src.stat().st_dev == self.tmp_dir.stat().st_dev
        except OSError as e:
            raise CacheError(f"cannot read {src}: {e.strerror}") from e
        if not same_fs:
            self.put_file(src, digest)
            src.unlink()
            return digest
        with open(src, "rb") as fh:
            os.fsync(fh.fileno())
        self._publish(src, digest)
        return digest

    def _publish(self, tmp: Path, digest: str) -> None:
        final = self.path(digest)
        os.chmod(tmp, BLOB_MODE)
        if final.exists():
            # Same name, same bytes: someone else published first. Keep theirs
            # so hard links already made to it stay valid.
            tmp.unlink()
        else:
            os.replace(tmp, final)
            fsync_dir(self.blobs_dir)
        self._record_trust(digest, final)

    # -- trust ------------------------------------------------------------
    def _trust_file(self, digest: str) -> Path:
        return self.trust_dir / split_digest(digest)[1]

    @staticmethod
    def _stat_key(path: Path) -> dict[str, int]:
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "ctime_ns": st.st_ctime_ns}

    def _record_trust(self, digest: str, path: Path) -> None:
        atomic_write_bytes(self._trust_file(digest), json.dumps(self._stat_key(path)).encode())

    def mark_verified(self, digest: str) -> None:
        """Record that the stored blob was just hashed and found right (after an external re-hash)."""
        self._record_trust(digest, self.path(digest))

    def unchanged(self, digest: str) -> bool:
        """Stricter than ``is_trusted``: the stored blob has the inode, size, mtime *and* ctime it had
        when last hashed.

        A write changes the ctime and nothing can set it back, so this
        catches an edit whose mtime was restored. Linking the blob (a
        snapshot, a stage) changes the ctime too, which is why re-staging
        relies on ``is_trusted`` and only ``cache verify`` pays for this
        check: a blob that fails it is re-hashed once and re-recorded.
        """
        try:
            rec = json.loads(self._trust_file(digest).read_text())
            key = self._stat_key(self.path(digest))
        except (OSError, ValueError):
            return False
        return isinstance(rec, dict) and all(rec.get(k) == v for k, v in key.items())

    def is_trusted(self, digest: str, path: Path | None = None) -> bool:
        """Fast check: does ``path`` (default: the stored blob) still look as when verified?

        A staged hard link shares the inode, so it passes; a copy made with
        its mtime preserved passes on size+mtime; anything edited fails and
        must be re-hashed.
        """
        path = path or self.path(digest)
        try:
            rec = json.loads(self._trust_file(digest).read_text())
            st = path.stat()
        except (OSError, ValueError):
            return False
        return st.st_size == rec.get("size") and st.st_mtime_ns == rec.get("mtime_ns")

    def verify(self, digest: str, full: bool = False, path: Path | None = None) -> bool:
        """True when the blob's bytes are what its name says.

        Without ``full`` the trust record decides when it can; a blob that
        fails a full check is moved aside to ``corrupt/`` so it is fetched
        again instead of being served.
        """
        target = path or self.path(digest)
        if not target.is_file():
            return False
        if not full and self.is_trusted(digest, target):
            return True
        actual = sha256_file(target)
        if actual == digest:
            if path is None:
                self._record_trust(digest, target)
            return True
        if path is None:
            self.quarantine(digest)
        return False

    def quarantine(self, digest: str) -> None:
        corrupt = self.root / "corrupt"
        corrupt.mkdir(exist_ok=True)
        src = self.path(digest)
        with contextlib.suppress(FileNotFoundError):
            os.replace(src, corrupt / src.name)
        with contextlib.suppress(FileNotFoundError):
            self._trust_file(digest).unlink()

    def remove(self, digest: str) -> None:
        for p in (self.path(digest), self._trust_file(digest)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

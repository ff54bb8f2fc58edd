"""A content-addressed blob store: every layer, config and manifest once, under its digest.

Why it is shaped this way:

- **Publish by rename.** Bytes go to a temporary file in ``tmp/`` on the same
  filesystem, are hashed while written, fsynced, and only then renamed to
  ``blobs/sha256/<hex>``. A reader therefore never needs a lock: a final name
  either does not exist or holds exactly the bytes its name promises. A
  writer killed at any point leaves at most a file under ``tmp/``.
- **Locks only for writers** (``filelocks``, one per digest), so two processes
  fetching the same layer do the work once and the second finds it done.
- **Trust like git's index.** Re-hashing a multi-GB image on every re-stage is
  what makes the reference slow. When a blob is verified we record its size,
  mtime, inode and ctime; later a ``stat`` that matches is enough, and
  ``verify(full=True)`` re-hashes on request. ``is_trusted`` compares size
  and mtime only (it also vouches for a staged copy made with its mtime
  kept); ``unchanged`` compares all four, and the ctime is what nothing can
  set back: an edit whose mtime was restored with ``touch -r`` fails it.
  Linking a blob (a snapshot, a stage dir) bumps its ctime too, so after
  our own links ``relinked`` re-records the ctime of blobs whose size,
  mtime and inode still match. Records are renamed into place without
  fsync: one lost in a crash only costs a re-hash.
- **Pins keep a blob a live process relies on.** Between "the store has X"
  and the moment an entry that references X is published, nothing on disk
  says X is wanted, so ``cache gc``/``prune`` could delete it. A process
  that is about to rely on X pins it first (``pin``): a shared POSIX
  byte-range lock on one byte of ``<root>/pins`` chosen by X's digest.
  ``remove`` takes that byte exclusively without waiting and leaves a
  pinned blob alone. Byte-range locks rather than a file per blob: one fd
  per cache per process however many blobs are pinned, nothing to create or
  sweep per blob, and a killed process's pins vanish with it. A pin is held
  until ``release_pins`` (or the end of ``pinning()``, or of the process).
- **Read-only blobs.** Snapshots hard-link to these files, so they are
  chmod 0444 to keep a careless workflow from editing the cache in place.
- **A full disk stops cleanly.** A writer that knows its size checks the
  free space first (counting what this process's other writers are still
  going to write), and one that runs out anyway removes its temp or partial
  file before raising ``DiskFullError``: a partial download that can never
  finish on this disk would only keep it full and the cache stuck. When
  room is short, partial downloads nobody is resuming (their digest lock is
  free) are dropped first; resuming them later is worth less than a cache
  that works.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Literal

from ..digests import CHUNK, sha256_file, split_digest
from ..errors import CacheError, DiskFullError, IntegrityError
from ..filelocks import FileLock, Timeout
from ..fsutil import (
    atomic_write_bytes,
    disk_full_error,
    free_bytes,
    fsync_dir,
    human_bytes,
    is_disk_full,
    names_open_file,
    read_with_stat,
    temp_file_in,
)

if TYPE_CHECKING:
    import queue

BLOB_MODE = 0o444
#: What a user can do about a full cache, appended to every ``DiskFullError`` the store raises.
FULL_CACHE_HINT = (
    "free space there ('wfexs-like cache gc' removes leftovers, 'wfexs-like cache prune' old images) "
    "or use another --cache-dir"
)
_PARTIAL = re.compile(r"sha256-([0-9a-f]{64})\.partial")
#: What ``BlobStore.remove`` did: deleted it, found nothing to delete, or left it to the process pinning it.
Removal = Literal["removed", "absent", "in use"]

log = logging.getLogger(__name__)

# Writers in progress in this process, so a new one counts the space the others are about to take.
_active: weakref.WeakSet[BlobWriter] = weakref.WeakSet()
_active_lock = threading.Lock()


def _still_to_write(writer: BlobWriter) -> tuple[int, int]:
    """(bytes, count): what this process's other open writers on the same filesystem have yet to write."""
    with _active_lock:
        writers = list(_active)
    others = [
        w
        for w in writers
        if w is not writer and not w._closed and w.device == writer.device and w.expected_size is not None
    ]
    return sum(max(w.expected_size - w.written, 0) for w in others), len(others)  # type: ignore[operator]


#: The fields of a trust record, in the order ``BlobStore._key_of`` builds them.
_KEY_FIELDS = ("size", "mtime_ns", "ino", "ctime_ns", "nlink")
#: A blob at least this big is hashed on a second thread while the first writes it (both drop the GIL).
PIPELINE_MIN = 8 << 20
#: Chunks queued for that thread at most: bounds the memory it holds (x the caller's chunk size).
PIPELINE_DEPTH = 16
#: A blob at least this big starts its writeback while it is written (``_EarlyWriteback``), this often.
FLUSH_MIN = 32 << 20
FLUSH_EVERY = 16 << 20


class _PipelinedHash:
    """sha256 on a worker thread, fed in order: hashing overlaps the network read and the file write.

    On one large layer (the usual base image) the writer's thread spends as
    long hashing as reading and writing together; a second core halves that.
    Only immutable ``bytes`` are queued (a caller may reuse a buffer it
    passed); anything else is hashed inline after the queue has drained.
    """

    def __init__(self, state: hashlib._Hash) -> None:
        import queue  # here: only a download hashes on a thread; a re-stage never does

        self._hash = state
        self._queue: queue.Queue[bytes | None] = queue.Queue(PIPELINE_DEPTH)
        self._thread = threading.Thread(target=self._run, name="blob-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)
            self._queue.task_done()
        self._queue.task_done()

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        if type(chunk) is bytes:
            self._queue.put(chunk)
        else:
            self._queue.join()
            self._hash.update(chunk)

    def hexdigest(self) -> str:
        self._queue.join()
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _EarlyWriteback:
    """``fdatasync`` every ``FLUSH_EVERY`` bytes on a thread of its own, while the writer goes on.

    Why: the fsync before a blob is published is a durability promise, and
    for a 93 MB layer it waited 50-100 ms for the whole file to reach the
    disk after the last byte arrived. Flushing as the file grows overlaps
    that with the download; the final fsync then waits for the tail only.
    It is never what makes the blob durable (the final fsync is), so a
    failure here is left for that fsync to report.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._written = self._flushed = 0
        self._done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="blob-writeback", daemon=True)
        self._thread.start()

    def wrote(self, n: int) -> None:
        with self._cond:
            self._written += n
            if self._written - self._flushed >= FLUSH_EVERY:
                self._cond.notify()

    def _run(self) -> None:
        sync = getattr(os, "fdatasync", os.fsync)
        while True:
            with self._cond:
                while not self._done and self._written - self._flushed < FLUSH_EVERY:
                    self._cond.wait()
                if self._done:
                    return
                target = self._written
            try:
                sync(self._fd)
            except OSError:
                return
            with self._cond:
                self._flushed = target

    def close(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify()
        self._thread.join()


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
        self.offset = self.written = 0
        self._closed = True  # until a file is open: discard() must not touch one
        # No helper threads yet: discard() (a full disk while opening) stops whichever exist.
        self._pipe: _PipelinedHash | None = None
        self._writeback: _EarlyWriteback | None = None
        if expected_digest is not None:
            algo, _ = split_digest(expected_digest)
            if algo != "sha256":
                raise CacheError(f"only sha256 blobs can be stored, got {expected_digest}")
        self.device = store.tmp_dir.stat().st_dev
        if self.resumable:
            assert expected_digest is not None
            self.tmp_path = store.tmp_dir / f"sha256-{split_digest(expected_digest)[1]}.partial"
            with self._on_disk_full():
                self._fh: BinaryIO = open(self.tmp_path, "a+b")  # noqa: SIM115 - closed in commit/discard
                self._closed = False
                self._fh.seek(0)
                while chunk := self._fh.read(CHUNK):
                    self._hash.update(chunk)
                    self.offset += len(chunk)
                if expected_size is not None and self.offset > expected_size:
                    self._fh.truncate(0)
                    self._hash = hashlib.sha256()
                    self.offset = 0
                self._fh.seek(0, os.SEEK_END)
        self.written = self.offset
        self._room_checked = expected_size is None
        if expected_size is not None and expected_size - self.offset >= PIPELINE_MIN:
            self._pipe = _PipelinedHash(self._hash)
        if not self.resumable:
            fd, name = self._locked_temp()
            self.tmp_path = Path(name)
            self._fh = os.fdopen(fd, "wb")
            self._closed = False
        if expected_size is not None and expected_size - self.offset >= FLUSH_MIN:
            self._writeback = _EarlyWriteback(self._fh.fileno())
        with _active_lock:
            _active.add(self)

    def _locked_temp(self) -> tuple[int, str]:
        """A new ``tmp/blob-*.tmp`` whose open file holds a shared flock until the blob is published.

        ``cache gc`` removes a temp file only when it can take that lock
        itself, so a live writer's file is never removed under it and a dead
        one's is removed at once. A gc that removed the file between its
        creation and our lock is noticed (the name no longer leads to our
        file) and another is taken.
        """
        while True:
            with self._on_disk_full():
                fd, name = temp_file_in(self.store.tmp_dir, "blob-", ".tmp")
            fcntl.flock(fd, fcntl.LOCK_SH)
            if names_open_file(name, fd):
                return fd, name
            os.close(fd)

    def _what(self) -> str:
        if self.expected_digest is None:
            return "writing a blob"
        size = f" ({human_bytes(self.expected_size)})" if self.expected_size is not None else ""
        return f"writing blob {self.expected_digest}{size}"

    @contextlib.contextmanager
    def _on_disk_full(self) -> Iterator[None]:
        """Out of room: remove what this writer wrote (partial or not), then raise ``DiskFullError``."""
        try:
            yield
        except OSError as e:
            if not is_disk_full(e):
                raise
            self.discard()
            self.store.drop_partials()
            if self.expected_size is not None:
                needed, at_least = self.expected_size, False
            else:
                needed, at_least = self.written, True
            raise disk_full_error(
                self.store.tmp_dir,
                what=self._what(),
                needed=needed,
                at_least=at_least,
                code=e.errno,
                hint=FULL_CACHE_HINT,
            ) from e

    def _check_room(self) -> None:
        """Before the first byte (not at construction, which callers also use just to find the offset)."""
        self._room_checked = True
        assert self.expected_size is not None
        try:
            self.store.make_room(self.expected_size - self.written, what=self._what(), writer=self)
        except DiskFullError:
            self.discard()  # a partial that cannot be finished here only keeps the disk full
            raise

    def write(self, chunk: bytes) -> None:
        if not self._room_checked:
            self._check_room()
        with self._on_disk_full():
            self._fh.write(chunk)
        (self._pipe or self._hash).update(chunk)
        self.written += len(chunk)
        if self._writeback is not None:
            self._writeback.wrote(len(chunk))
        if self.expected_size is not None and self.written > self.expected_size:
            raise IntegrityError(
                f"blob {self.expected_digest} is larger than the {self.expected_size} bytes promised",
                expected=self.expected_digest,
            )

    def restart(self) -> None:
        """Throw away what was written (a server that ignored our Range request)."""
        with self._on_disk_full():
            self._fh.seek(0)
            self._fh.truncate(0)
        self._stop_pipe()
        self._hash = hashlib.sha256()
        self.offset = self.written = 0

    @property
    def digest(self) -> str:
        return "sha256:" + (self._pipe or self._hash).hexdigest()

    def _stop_pipe(self) -> None:
        """Hash on this thread from now on (the worker's state is complete once it has stopped);
        no early writeback either (its thread must be gone before the file is synced or closed)."""
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._writeback is not None:
            self._writeback.close()
            self._writeback = None

    def commit(self) -> str:
        """Check digest and size, then fsync and rename into place. Returns the digest."""
        digest = self.digest
        self._stop_pipe()
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
            with self._on_disk_full():
                self._fh.flush()
                os.fsync(self._fh.fileno())
            # published while still open: the temp file's flock (see _locked_temp) lasts until renamed
            self.store._publish(self.tmp_path, digest)
            self._closed = True
            self._fh.close()
        except BaseException:
            self.discard()
            raise
        return digest

    def discard(self) -> None:
        """Close and remove the temp or partial file; safe to call at any point, any number of times."""
        self._stop_pipe()
        self._close_quietly()
        if hasattr(self, "tmp_path"):
            with contextlib.suppress(FileNotFoundError):
                self.tmp_path.unlink()

    def _close_quietly(self) -> bool:
        """Close the file; False if buffered bytes could not be written (they are lost with it)."""
        self._stop_pipe()
        if self._closed:
            return True
        self._closed = True  # first: a close() that raises has still closed the file
        try:
            self._fh.close()
        except OSError:
            return False
        return True

    def close_keep_partial(self) -> None:
        """Leave the partial file for a later resume (only meaningful when resumable).

        Called while another error is being handled, so it never raises: a
        partial whose last bytes could not be flushed (no room) is removed.
        """
        if not self.resumable or not self._close_quietly():
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


# -- pins ---------------------------------------------------------------------------------------------
def _pin_offset(digest: str) -> int:
    """The byte of the pin file that stands for ``digest`` (60 bits of it: collisions only cost a skip)."""
    return int(split_digest(digest)[1][:15], 16)


class _PinFile:
    """This process's one handle on a cache's pin file, shared by every ``BlobStore`` of that cache.

    POSIX record locks belong to the process and all of them on a file go
    when *any* fd of it is closed, so there is exactly one fd per pin file
    per process, opened once and never closed, and a count per byte says
    when this process's last pin of it goes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._unusable = False
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def _open(self) -> int | None:
        """The fd, or None where pins cannot work (a read-only cache: nobody prunes it from here)."""
        if self._fd is None and not self._unusable:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            except OSError as e:
                log.debug("blobs cannot be pinned in %s: %s", self.path.parent, e)
                self._unusable = True
        return self._fd

    def pin(self, offset: int) -> bool:
        """Hold ``offset`` shared (waiting while a removal holds it); False where pins cannot work."""
        with self._lock:
            count = self._counts.get(offset, 0)
            if count == 0:
                fd = self._open()
                if fd is None:
                    return False
                try:
                    fcntl.lockf(fd, fcntl.LOCK_SH, 1, offset)
                except OSError as e:  # a filesystem without record locks
                    log.debug("cannot pin in %s: %s", self.path, e)
                    return False
            self._counts[offset] = count + 1
            return True

    def unpin(self, offset: int) -> None:
        with self._lock:
            count = self._counts.pop(offset, 0)
            if count > 1:
                self._counts[offset] = count - 1
            elif count == 1 and self._fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)

    @contextlib.contextmanager
    def exclusive(self, offset: int) -> Iterator[bool]:
        """Own ``offset`` for a removal: yields False (holding nothing) when any process pins it.

        Where pins cannot work nobody can hold one, so the removal goes ahead.
        In-process pins are checked by count: a process's own record locks
        never conflict with each other.
        """
        with self._lock:
            if self._counts.get(offset):
                yield False
                return
            fd = self._open()
            if fd is None:
                yield True
                return
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    log.debug("cannot check pins in %s: %s", self.path, e)
                    yield True
                    return
                yield False
                return
            try:
                yield True
            finally:
                with contextlib.suppress(OSError):
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)


_pin_files: dict[str, _PinFile] = {}
_pin_files_lock = threading.Lock()


def _pin_file(path: Path) -> _PinFile:
    key = os.path.realpath(path)
    with _pin_files_lock:
        pf = _pin_files.get(key)
        if pf is None:
            pf = _pin_files[key] = _PinFile(Path(key))
        return pf


class PinSet:
    """The blobs one scope of work relies on; ``release`` (or leaving the ``with``) lets gc have them.

    Pinning is idempotent per set, cheap (one ``fcntl`` the first time a
    blob is pinned in this process) and uses no fd of its own.
    """

    def __init__(self, pin_file: _PinFile | None) -> None:
        self._file = pin_file
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def pin(self, digest: str) -> None:
        """Keep ``digest`` from being removed until released; blocks only while a removal of it runs."""
        if self._file is None:
            return
        with self._lock:
            if digest in self._held:
                return
            if self._file.pin(_pin_offset(digest)):
                self._held.add(digest)

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, set()
        if self._file is not None:
            for digest in held:
                self._file.unpin(_pin_offset(digest))

    def __contains__(self, digest: object) -> bool:
        return digest in self._held

    def __len__(self) -> int:
        return len(self._held)

    def __enter__(self) -> PinSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


#: Trust records are padded to this many bytes, so rewriting one in place never needs a truncate.
RECORD_WIDTH = 256


def _write_record(path: Path | str, data: bytes) -> None:
    """Overwrite a small record in place: no temp file, no rename, no fsync.

    It is re-recorded on every re-stage (a link moves the blob's ctime), so
    it must be cheap: a rename over an existing file makes ext4 flush it.
    What can go wrong is only ever a record that does not parse or match
    (a crash mid-write, two writers at once), which costs one re-hash of
    the blob, never a wrong trust. Padding keeps every record the same
    length (JSON ignores trailing spaces), so a record covers every byte of
    the one before and none is truncated (one system call fewer per blob on
    every re-stage, each of which marks the inode dirty).
    """
    padded = len(data) <= RECORD_WIDTH
    data = data.ljust(RECORD_WIDTH)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, data, 0)
        if not padded:  # never in practice (a record is ~120 bytes): drop what a longer one left
            os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


class BlobStore:
    """Blobs under ``<root>/blobs/sha256/<hex>``; see the module docstring for the rules."""

    def __init__(self, root: Path, *, readonly: bool = False) -> None:
        """``readonly`` opens any ``blobs/sha256`` tree (an OCI layout has one) just to read."""
        self.root = Path(root).absolute()
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"
        self.trust_dir = self.root / "trust" / "sha256"
        #: layer digest -> the diff id its bytes were once read, uncompressed, and hashed to
        self.diff_ids_dir = self.root / "trust" / "diff_ids"
        # plain strings for the per-blob hot paths (a re-stage checks every blob of every image)
        self._blobs_s, self._trust_s = str(self.blobs_dir), str(self.trust_dir)
        #: the records ``unchanged`` just accepted, so ``relinked`` right after need not read them again
        self._accepted: dict[str, dict[str, object]] = {}
        #: digest -> the stat key (``_key_of``) this process last found or wrote in its trust record.
        #: A blob whose stat still equals it has not changed since (a write, a link, a chmod, a
        #: rename all change the ctime or inode), so its record need not be read again.
        self._known: dict[str, tuple[object, ...]] = {}
        self.pins_path = self.root / "pins"
        self.readonly = readonly
        for d in () if readonly else (self.blobs_dir, self.tmp_dir, self.locks_dir, self.trust_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CacheError(
                    f"cannot create cache directory {d}: {e.strerror}; "
                    "choose another with --cache-dir or WFEXS_LIKE_CACHE_DIR"
                ) from e
        self._pin_file = None if readonly else _pin_file(self.pins_path)
        #: What ``pin`` adds to: this store's pins, held until ``release_pins`` (or this store is freed).
        self.pins = PinSet(self._pin_file)
        self._pinning_depth = 0
        self._pinning_lock = threading.Lock()
        weakref.finalize(self, self.pins.release)

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

    # -- pins -------------------------------------------------------------
    def pin(self, digest: str) -> None:
        """Keep ``digest`` from ``remove`` (any process's) until ``release_pins``.

        Call it *before* asking ``has`` when a yes will be relied on (the blob
        reused, linked, read later), and before downloading a blob: a blob
        pinned and then found present stays present. Blocks only for the
        instant a removal of that very blob takes.
        """
        self.pins.pin(digest)

    def release_pins(self) -> None:
        """Let gc and prune have every blob this store pinned: call once the entries that reference
        them are published (``ImageCache.put``), e.g. at the end of a materialize."""
        self.pins.release()

    @contextlib.contextmanager
    def pinning(self) -> Iterator[PinSet]:
        """``with store.pinning():`` releases this store's pins when the outermost such block ends."""
        with self._pinning_lock:
            self._pinning_depth += 1
        try:
            yield self.pins
        finally:
            with self._pinning_lock:
                self._pinning_depth -= 1
                last = self._pinning_depth == 0
            if last:
                self.pins.release()

    def is_pinned(self, digest: str) -> bool:
        """Does a live process (this one too) pin ``digest`` now? Only for reports: ``remove`` decides."""
        if self._pin_file is None:
            return False
        with self._pin_file.exclusive(_pin_offset(digest)) as free:
            return not free

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

    def make_room(self, needed: int, *, what: str, writer: BlobWriter | None = None) -> None:
        """Make sure ``needed`` more bytes fit in ``tmp/`` (same filesystem as the blobs), or raise.

        Counts what this process's other writers have still to write, and
        when that does not fit drops abandoned partial downloads first.
        Other processes' writes cannot be counted: for them the write
        itself decides (and cleans up).
        """
        for attempt in range(2):
            free = free_bytes(self.tmp_dir)
            reserved, writers = _still_to_write(writer) if writer is not None else (0, 0)
            if free is None or free - reserved >= needed:
                return
            if attempt == 0 and self.drop_partials(keep=writer.tmp_path if writer is not None else None):
                continue
            if writers:
                what = f"{what} and {writers} other blob(s) being written"
            raise disk_full_error(self.tmp_dir, what=what, needed=needed + reserved, hint=FULL_CACHE_HINT)

    def drop_partials(self, keep: Path | None = None) -> int:
        """Remove partial downloads nobody is resuming (their digest lock is free); return bytes freed.

        Used when space runs out: a partial is only worth keeping while
        there is room to finish it.
        """
        freed = 0
        try:
            names = os.listdir(self.tmp_dir)
        except OSError:
            return 0
        for name in names:
            m = _PARTIAL.fullmatch(name)
            path = self.tmp_dir / name
            if m is None or path == keep:
                continue
            lock = self.lock("sha256:" + m.group(1), timeout=0)
            try:
                lock.acquire()
            except (Timeout, OSError):
                continue  # being written or resumed right now (or no room even for its lock file)
            try:
                size = path.stat().st_size
                path.unlink()
                freed += size
            except OSError:
                pass
            finally:
                lock.release()
        return freed

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

    def adopt_file(self, src: Path, expected_digest: str | None = None, *, hashed: bool = False) -> str:
        """Move a finished file (a built SIF, a saved archive) into the store without copying.

        It is hashed in place and renamed when it is on the store's
        filesystem; from elsewhere it is copied through a writer instead.
        ``hashed``: the caller computed ``expected_digest`` from this very
        file, which only it has written since (its builder's work dir).
        """
        if hashed and expected_digest is None:
            raise ValueError("hashed=True needs the expected_digest the caller computed")
        digest = expected_digest if hashed and expected_digest else sha256_file(src)
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
        try:
            self._record_trust(digest, final)
        except DiskFullError:
            # The blob is complete and published; without a record it is simply re-hashed when next
            # trusted. A stale record must not vouch for it meanwhile.
            with contextlib.suppress(OSError):
                self._forget_trust(digest)

    # -- trust ------------------------------------------------------------
    def _forget_trust(self, digest: str) -> None:
        """Remove the blob's trust record (FileNotFoundError if it had none) and this process's memo."""
        self._known.pop(digest, None)
        self._accepted.pop(digest, None)
        self._trust_file(digest).unlink()

    def diff_id_checked(self, digest: str, diff_id: str) -> bool:
        """Whether the blob ``digest`` was once read to its end, uncompressed, and hashed to ``diff_id``.

        Why it may be remembered: what a compressed blob decompresses to is
        fixed by its bytes, so once a full read has matched the config's diff
        id, every later read of the same (still trusted) blob would match it
        too. A SIF build or an engine load then decompresses a layer without
        hashing the result again: for the Debian image, 204 MB of sha256 on
        every build. A record torn or altered by hand simply does not match,
        and the layer is hashed again.
        """
        try:
            with open(f"{self.diff_ids_dir}/{split_digest(digest)[1]}", "rb") as fh:
                return fh.read(128).strip() == diff_id.encode()
        except (OSError, IntegrityError):
            return False

    def record_diff_id(self, digest: str, diff_id: str) -> None:
        """Remember that ``digest`` uncompresses to ``diff_id`` (just verified by a full read).

        Best effort: without a record the next read hashes again."""
        if self.readonly:
            return
        with contextlib.suppress(OSError, IntegrityError, CacheError):
            self.diff_ids_dir.mkdir(exist_ok=True)
            atomic_write_bytes(self.diff_ids_dir / split_digest(digest)[1], diff_id.encode() + b"\n")

    def _trust_s_of(self, digest: str) -> str:
        """``_trust_file`` as a string: it is rewritten for every blob of every re-stage."""
        return f"{self._trust_s}/{split_digest(digest)[1]}"

    def _trust_file(self, digest: str) -> Path:
        return self.trust_dir / split_digest(digest)[1]

    @staticmethod
    def _stat_key(path: Path | str) -> dict[str, int]:
        return BlobStore._key_of(os.stat(path))

    @staticmethod
    def _key_of(st: os.stat_result) -> dict[str, int]:
        """The stat fields a trust record holds, in ``_KEY_FIELDS`` order."""
        return {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ino": st.st_ino,
            "ctime_ns": st.st_ctime_ns,
            "nlink": st.st_nlink,
        }

    def _record_trust(self, digest: str, path: Path) -> None:
        try:
            _write_record(self._trust_file(digest), json.dumps(self._stat_key(path)).encode())
        except OSError as e:
            if is_disk_full(e):
                raise disk_full_error(
                    self.trust_dir, what=f"recording {digest} as verified", code=e.errno
                ) from e
            raise

    def _trust_record(self, digest: str) -> dict[str, object] | None:
        try:
            rec = json.loads(read_with_stat(self._trust_s_of(digest))[0])
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    def path_str(self, digest: str) -> str:
        """``path(digest)`` as a string, without building a ``Path`` (same refusals)."""
        algo, hexd = split_digest(digest)
        if algo != "sha256":
            self.path(digest)  # raises the usual error
        return f"{self._blobs_s}/{hexd}"

    def mark_verified(self, digest: str) -> None:
        """Record that the stored blob was just hashed and found right (after an external re-hash)."""
        self._record_trust(digest, self.path(digest))

    def unchanged(self, digest: str, *, strict: bool = False) -> bool:
        """See ``unchanged_stat``."""
        return self.unchanged_stat(digest, strict=strict) is not None

    def unchanged_stat(self, digest: str, *, strict: bool = False) -> os.stat_result | None:
        """The check on every reuse (the blob's ``stat`` when it passes, for callers that also want
        its inode): the stored blob has the size, mtime, inode *and* ctime it had
        when last hashed (or re-recorded by ``relinked``).

        A write changes the ctime and nothing can set it back, so this
        catches an edit whose mtime was restored (``touch -r``), which
        ``is_trusted`` does not. Linking or unlinking the blob moves the
        ctime too, and workflows delete their stage dirs all the time: a
        re-hash of every shared layer after each such delete would make
        re-staging cost as much as the image is big. So, unless ``strict``,
        a ctime that moved *together with the link count* is taken as links
        made or removed and re-recorded; a ctime that moved with the same
        link count (a write, a chmod) fails. What this lets through is a
        write made in the same interval as a link change by someone else
        (a root workflow that writes into a staged blob, then deletes its
        stage dir); it is re-recorded then, and only ``cache verify --full``
        finds it. ``strict`` (``cache verify``) re-hashes on any ctime move.
        """
        try:
            st = os.stat(self.path_str(digest))
        except OSError:
            return None
        key = self._key_of(st)
        if not strict and self._known.get(digest) == tuple(key.values()):
            self._accept(digest, key)
            return st
        rec = self._trust_record(digest)
        if rec is None or any(rec.get(k) != key[k] for k in ("size", "mtime_ns", "ino")):
            return None
        if rec.get("ctime_ns") != key["ctime_ns"]:
            if strict or "nlink" not in rec or rec["nlink"] == key["nlink"]:
                return None
            with contextlib.suppress(OSError):  # no record: this check fails next time, a re-hash
                _write_record(self._trust_s_of(digest), json.dumps(key).encode())
            rec = key
        self._accept(digest, rec)
        return st

    def _accept(self, digest: str, rec: dict[str, object]) -> None:
        if len(self._accepted) > 4096:
            self._accepted.clear()
            self._known.clear()
        self._accepted[digest] = rec
        if all(k in rec for k in _KEY_FIELDS):
            self._known[digest] = tuple(rec[k] for k in _KEY_FIELDS)

    def vouch(self, digest: str) -> bool:
        """Is the stored blob intact? ``unchanged``, else one full hash (which re-records a blob only
        links touched, and moves rotten bytes to ``corrupt/``). A read-only store can record and
        move nothing: size and mtime decide there (``is_trusted``)."""
        if self.unchanged(digest):
            return True
        if self.readonly:
            return self.is_trusted(digest)
        return self.verify(digest, full=True)

    def relinked(self, digests: Iterable[str]) -> list[str]:
        """Re-record the ctime of ``digests`` after this process linked them; returns those refreshed.

        Only a blob whose size, mtime and inode still match its record is
        refreshed, so an edit that moved any of those stays caught. Call it
        right after linking blobs that passed ``unchanged`` just before the
        link: a byte flipped with ``touch -r`` in that window (between two
        of our own syscalls) looks exactly like our link and is re-recorded;
        ``cache verify --full`` still finds it. An edit made *before* the
        check fails the check, and is never blessed here.
        """
        refreshed = []
        for digest in digests:
            rec = self._accepted.pop(digest, None) or self._trust_record(digest)
            try:
                key = self._stat_key(self.path_str(digest))
            except OSError:
                continue
            if rec is None or any(rec.get(k) != key[k] for k in ("size", "mtime_ns", "ino")):
                continue
            if rec.get("ctime_ns") != key["ctime_ns"]:
                try:
                    _write_record(self._trust_s_of(digest), json.dumps(key).encode())
                except OSError:
                    self._known.pop(digest, None)
                    continue  # no record: re-hashed on its next reuse
            self._known[digest] = tuple(key.values())
            refreshed.append(digest)
        return refreshed

    @contextlib.contextmanager
    def linking(self, digests: Iterable[str]) -> Iterator[set[str]]:
        """``unchanged``, then the caller's links, then ``relinked``, in the order that keeps it safe.

        Yields the digests that pass the strict check now; the block links
        them (and must re-hash the others, e.g. ``verify(d, full=True)``,
        before relying on them); on a clean exit only those are re-recorded.
        """
        passed = {d for d in digests if self.unchanged(d)}
        yield passed
        self.relinked(sorted(passed))

    def known_as(self, digest: str, st: os.stat_result) -> bool:
        """Whether ``st`` is exactly the stat this process last found (or wrote) in ``digest``'s trust
        record: the same inode, unwritten since (a write, a chmod, a link all move the ctime).

        A staged layout's blobs are links of the store's, so a re-stage that
        stats them for its layout check need not stat the store's path, nor
        read the record, to know they are intact: two ``stat`` calls fewer
        per layer per image.
        """
        known = self._known.get(digest)
        return known is not None and known == tuple(self._key_of(st).values())

    def is_trusted(self, digest: str, path: Path | str | None = None) -> bool:
        """Fast check: does ``path`` (default: the stored blob) still look as when verified?

        A staged hard link shares the inode, so it passes; a copy made with
        its mtime preserved passes on size+mtime; anything edited fails and
        must be re-hashed.
        """
        try:
            st = os.stat(path if path is not None else self.path_str(digest))
        except OSError:
            return False
        if self.known_as(digest, st):
            return True  # exactly the file this process last checked: untouched since
        rec = self._trust_record(digest)
        return rec is not None and st.st_size == rec.get("size") and st.st_mtime_ns == rec.get("mtime_ns")

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
            self._forget_trust(digest)

    def remove(self, digest: str) -> Removal:
        """Delete a stored blob unless a live process pins it ("in use": left alone, not an error).

        The pin is taken exclusively for the unlink, without waiting, so a
        process that pins the blob meanwhile waits and then finds it gone
        (and fetches it again) instead of relying on a name about to vanish.
        Callers that also guard against a writer re-fetching it hold
        ``lock(digest)`` around this.
        """
        guard = (
            self._pin_file.exclusive(_pin_offset(digest)) if self._pin_file else contextlib.nullcontext(True)
        )
        with guard as free:
            if not free:
                return "in use"
            try:
                self.path(digest).unlink()
                removed = True
            except FileNotFoundError:
                removed = False
            with contextlib.suppress(FileNotFoundError):
                self._forget_trust(digest)
        return "removed" if removed else "absent"

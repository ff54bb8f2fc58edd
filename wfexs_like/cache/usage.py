"""When each cache entry was last used, where it is staged, and whether a running process holds it.

Layout under the cache dir::

    usage/<key>.lock          held LOCK_SH by every process using reference+platform <key> (any
                              kind); taken LOCK_EX|LOCK_NB by ``rm``/``prune`` before removing
    usage/<kind>/<key>        mtime: when that entry was last used; body: where it was staged,
                              one JSON line ``[snapshot path, sidecar path]`` per stage dir

Why it is shaped this way:

- **One small write per entry per stage, never one per blob.** Staging an
  image of 40 layers touches one file here (an ``O_APPEND`` of one line the
  first time a stage dir is seen, else an mtime bump at most once a minute).
  Blob atimes are useless for this: ``relatime``/``noatime`` mounts lie, and
  every ``cache verify`` would count as a use.
- **An in-use marker that dies with its process.** A ``flock`` is released
  by the kernel when its holder exits or is killed, so a crashed
  materialize never pins an entry forever, and no pid file can be stale.
  A shared lock costs one ``open`` + ``flock`` per entry per process.
- **Lock files can be deleted safely.** Whoever deletes one does it while
  holding it exclusively; a process that opened the old inode sees
  ``st_nlink == 0`` after it gets the lock and retries on a fresh file
  (the protocol ``filelocks.FileLock`` follows), so deleting never lets two
  holders disagree.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import CacheError
from ..fsutil import atomic_write_bytes, names_open_file, temp_dir_in

#: A stage of an entry already recorded within this many seconds is not written again.
TOUCH_INTERVAL = 60.0


@dataclass(frozen=True)
class StagedCopy:
    """Where an entry was staged: the snapshot and its sidecar (a workflow's containers dir)."""

    path: Path
    metadata_path: Path


def _lock_fd(path: Path, operation: int, *, create: bool) -> int | None:
    """An fd of ``path`` locked with ``operation``; None when non-blocking and held, or absent."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            return None
        try:
            fcntl.flock(fd, operation)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        # Deleted (by gc or prune) between our open and our lock: that inode no longer counts.
        try:
            same = os.path.samestat(os.fstat(fd), path.stat())
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        if not create:
            return None


class Usage:
    """Last-used marks, staged copies and in-use holds of one cache; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- last used ---------------------------------------------------------------------------
    def record_path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lock_path(self, key: str) -> Path:
        return self.root / f"{key}.lock"

    def touch(
        self,
        kind: str,
        key: str,
        staged: StagedCopy | None = None,
        *,
        new_copy: bool = True,
        now: float | None = None,
    ) -> None:
        """Mark the entry used now; remember ``staged`` (the stage dir copy) when it is new.

        Cheap on purpose: a stat and, when needed, one small append or one
        ``utime``, never a read. ``new_copy=False`` says ``staged`` was
        already there, matching (a re-stage into the same dir): it was
        recorded when it was made, so only the time moves, unless the record
        is gone. The record grows by a line per new stage dir, and reading it
        all on every stage made a long-lived cache's re-stage slower with
        every workflow run. ``staged_copies`` drops repeats. Failures are
        swallowed: a read-only cache must still stage.
        """
        path = self.record_path(kind, key)
        now = time.time() if now is None else now
        line = (json.dumps([str(staged.path), str(staged.metadata_path)]) + "\n") if staged else None
        try:
            try:
                st = path.stat()
            except FileNotFoundError:
                st = None
            if line is not None and (new_copy or st is None):
                if st is None:  # else the record, so its dir, is there
                    path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(
                    path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666
                )
                try:
                    os.write(fd, line.encode("utf-8", "surrogateescape"))
                finally:
                    os.close(fd)
            elif st is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            elif now - st.st_mtime >= TOUCH_INTERVAL:
                os.utime(path, (now, now))
        except OSError:
            pass

    def last_used(self, kind: str, key: str) -> float | None:
        """When the entry was last staged or resolved (None: never since usage was recorded)."""
        try:
            return self.record_path(kind, key).stat().st_mtime
        except OSError:
            return None

    def staged_copies(self, kind: str, key: str) -> list[StagedCopy]:
        """Every stage dir copy ever recorded for the entry (they may since have been deleted)."""
        try:
            text = self.record_path(kind, key).read_text("utf-8", "surrogateescape")
        except OSError:
            return []
        out: dict[str, StagedCopy] = {}  # a dir staged again after being deleted is a line again
        for raw in text.splitlines():
            if raw in out:
                continue
            try:
                path, meta = json.loads(raw)
            except (ValueError, TypeError):
                continue  # a torn line from a killed writer
            if isinstance(path, str) and isinstance(meta, str):
                out[raw] = StagedCopy(Path(path), Path(meta))
        return list(out.values())

    def compact(self, kind: str, key: str) -> int:
        """Drop the record's lines of stage dirs that are gone (and repeats); returns how many.

        The record grows by a line per new stage dir, and workflows delete
        their dirs; ``cache gc`` calls this so it stays the size of what is
        staged now. Only while nobody uses the entry (its lock taken
        exclusively, so no stager appends meanwhile); the record keeps its
        mtime, which is the entry's last use.
        """
        path = self.record_path(kind, key)
        with self.exclusive(key) as owned:
            if not owned:
                return 0
            try:
                lines = path.read_text("utf-8", "surrogateescape").splitlines()
            except OSError:
                return 0
            kept = list(dict.fromkeys(ln for ln in lines if _names_a_live_copy(ln)))
            if len(kept) == len(lines):
                return 0
            with contextlib.suppress(OSError, CacheError):
                st = path.stat()
                text = "".join(f"{ln}\n" for ln in kept)
                atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                return len(lines) - len(kept)
            return 0

    def forget(self, kind: str, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.record_path(kind, key).unlink()

    # -- in use --------------------------------------------------------------------------------
    def acquire_shared(self, key: str) -> int:
        """Hold reference+platform ``key`` as in use (blocks while a prune removes it); returns the fd."""
        fd = _lock_fd(self.lock_path(key), fcntl.LOCK_SH, create=True)
        assert fd is not None  # blocking, created: always an fd
        return fd

    def is_held(self, key: str) -> bool:
        """Does any process (this one included) hold ``key``? Creates nothing."""
        fd = _lock_fd(self.lock_path(key), fcntl.LOCK_EX | fcntl.LOCK_NB, create=False)
        if fd is None:
            return self.lock_path(key).exists()
        os.close(fd)
        return False

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[bool]:
        """Try to own ``key`` for removal: yields False (and holds nothing) when a process uses it."""
        fd = _lock_fd(self.lock_path(key), fcntl.LOCK_EX | fcntl.LOCK_NB, create=True)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)

    def remove_lock(self, key: str) -> bool:
        """Delete ``key``'s lock file if nobody holds it (deleted while held exclusively); True if gone."""
        path = self.lock_path(key)
        fd = _lock_fd(path, fcntl.LOCK_EX | fcntl.LOCK_NB, create=False)
        if fd is None:
            return not path.exists()
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        finally:
            os.close(fd)
        return True


def _names_a_live_copy(line: str) -> bool:
    """Whether a usage record line names a stage dir copy that is still there."""
    try:
        path, _meta = json.loads(line)
        return isinstance(path, str) and os.path.lexists(path)
    except (ValueError, TypeError):
        return False  # a torn line from a killed writer


def remove_unheld_lock(path: Path) -> bool:
    """Delete a lock file nobody holds, the safe way (see the module docstring); True if deleted."""
    fd = _lock_fd(path, fcntl.LOCK_EX | fcntl.LOCK_NB, create=False)
    if fd is None:
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
    return True


def _lock_flags(directory: bool) -> int:
    return os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | (os.O_DIRECTORY if directory else 0)


def _lock_exclusive_now(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def flock_held(path: Path, *, directory: bool = False) -> bool:
    """Does a live process hold an flock on ``path`` (a lock file, or a claimed work dir)? Creates nothing."""
    try:
        fd = os.open(path, _lock_flags(directory))
    except OSError:
        return False
    try:
        return not _lock_exclusive_now(fd)
    finally:
        os.close(fd)


def dir_claimed(path: Path) -> bool:
    """Does a live process hold a ``claim_dir`` on this work dir?"""
    return flock_held(path, directory=True)


def claimed_temp_dir(parent: Path, prefix: str) -> tuple[Path, int]:
    """A new work dir under ``parent``, already claimed (``claim_dir``): (its path, the claim's fd).

    A gc may see the dir between its creation and the claim, find it
    unclaimed and remove it (it takes the dir's lock exclusively while it
    does, see ``hold_unlocked``); such a dir is noticed here, because its
    name no longer leads to the claimed one, and another is made.
    """
    while True:
        path = temp_dir_in(parent, prefix)
        try:
            fd = claim_dir(Path(path))
        except FileNotFoundError:
            continue
        if names_open_file(path, fd):
            return Path(path), fd
        os.close(fd)


def hold_unlocked(path: Path, *, directory: bool = False) -> int | None:
    """For gc: an fd holding ``path``'s flock exclusively, or None when a live process holds it (a
    claimed work dir, a blob writer's temp file) or it is gone. Keep the fd open while removing
    ``path``, so no owner can lock it meanwhile."""
    try:
        fd = os.open(path, _lock_flags(directory))
    except OSError:
        return None
    if _lock_exclusive_now(fd):
        return fd
    os.close(fd)
    return None


def claim_dir(path: Path) -> int:
    """Mark a work dir (a build dir, a factory's temp dir) as owned by this process until the fd closes.

    ``cache gc`` removes an abandoned work dir only when no process holds
    this claim, so a dir whose owner is alive survives however old it is,
    and one whose owner died is swept by the next gc. Close the fd (or
    exit) to release it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd

"""Cross-process locks on lock files: ``flock(2)`` with a per-thread, re-entrant hold.

Why our own and not the ``filelock`` package: its import costs about as
much as reading a cached image's metadata, on every command, and we need a
small part of it. What we rely on, and what this keeps of the protocol
other tools also follow: an exclusive ``flock`` on a file that is never
deleted while in use, so a process that dies releases its locks with its
file descriptors. The lock is re-entrant within one thread (the tiered
store takes a digest's lock around code that takes it again), and two
threads of one process exclude each other, because each opens its own
descriptor and ``flock`` locks belong to open file descriptions. A lock
file may be deleted by whoever holds it (``cache gc``): a process that
then gets the lock on the deleted inode sees ``st_nlink == 0`` and tries
again on the fresh file.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from types import TracebackType

#: How often a wait with a timeout tries again.
POLL = 0.01


class Timeout(TimeoutError):
    """The lock was not acquired within the timeout; ``lock_file`` names it."""

    def __init__(self, lock_file: str) -> None:
        super().__init__(f"the lock {lock_file} is held by another process or thread")
        self.lock_file = lock_file


class FileLock:
    """An exclusive lock on ``lock_file``; ``timeout`` -1 waits forever, 0 tries once."""

    def __init__(self, lock_file: str | Path, timeout: float = -1) -> None:
        self.lock_file = str(lock_file)
        self.timeout = timeout
        self._local = threading.local()

    @property
    def is_locked(self) -> bool:
        return getattr(self._local, "count", 0) > 0

    def acquire(self, timeout: float | None = None) -> FileLock:
        local = self._local
        if getattr(local, "count", 0):
            local.count += 1
            return self
        wait = self.timeout if timeout is None else timeout
        deadline = None if wait < 0 else time.monotonic() + wait
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                _flock(fd, deadline, self.lock_file)
                deleted = os.fstat(fd).st_nlink == 0
            except BaseException:
                os.close(fd)
                raise
            if not deleted:
                local.fd, local.count = fd, 1
                return self
            # Whoever deleted the file held it: our lock is on a name nobody else will open.
            os.close(fd)

    def release(self) -> None:
        local = self._local
        count = getattr(local, "count", 0)
        if count == 0:
            return
        local.count = count - 1
        if local.count == 0:
            fd, local.fd = local.fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _flock(fd: int, deadline: float | None, name: str) -> None:
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(name) from None
            time.sleep(min(POLL, left))

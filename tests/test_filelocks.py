"""The cross-process lock the store, the client and gc share: flock on a lock file.

What the callers rely on: one holder at a time across processes and across
threads of one process, re-entry within one thread, a timeout that raises
``Timeout`` (0 tries once), a lock released when its holder dies, and a
lock file deleted by its holder (``cache gc``) never letting two holders in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wfexs_like.filelocks import FileLock, Timeout


def test_reentrant_in_one_thread_exclusive_between_threads(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "a.lock")
    got: list[bool] = []
    with lock, lock:
        t = threading.Thread(target=lambda: got.append(_try(lock, 0.1)))
        t.start()
        t.join()
        assert lock.is_locked
    assert got == [False], "another thread got the lock while this one held it"
    assert not lock.is_locked
    t = threading.Thread(target=lambda: got.append(_try(lock, 0.1)))
    t.start()
    t.join()
    assert got == [False, True]


def _try(lock: FileLock, timeout: float) -> bool:
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        return False
    lock.release()
    return True


def test_other_processes_wait_and_a_dead_holder_releases(tmp_path: Path) -> None:
    path = tmp_path / "b.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom wfexs_like.filelocks import FileLock\n"
         "FileLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Timeout) as e:
            FileLock(path, timeout=0).acquire()
        assert str(path) in str(e.value)
        holder.kill()
        holder.wait()
        with FileLock(path, timeout=5):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_file_deleted_by_its_holder_is_not_held_twice(tmp_path: Path) -> None:
    path = tmp_path / "c.lock"
    first = FileLock(path)
    first.acquire()
    waiting = FileLock(path)
    entered = threading.Event()

    def wait_then_hold() -> None:
        waiting.acquire()  # opened the old inode, blocks on it
        entered.set()

    t = threading.Thread(target=wait_then_hold)
    t.start()
    time.sleep(0.2)
    os.unlink(path)  # deleted while held, as cache gc does
    third = FileLock(path)
    third.acquire()  # a fresh file: nobody holds it
    first.release()  # the waiter now gets the old inode, sees it deleted, and moves to the new file
    assert not entered.wait(0.5), (
        "the waiter took a lock on a deleted file while another process holds the name"
    )
    third.release()
    assert entered.wait(5)
    t.join()

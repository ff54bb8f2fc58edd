"""The worker pool blob downloads run on: ``ThreadPoolExecutor``'s contract, on daemon threads.

Why not ``ThreadPoolExecutor`` itself: the interpreter joins its threads at
exit, so after a Ctrl-C the process could not end before every worker had
returned — and a worker may be blocked in a ``connect()`` to a host that
does not answer, or waiting for another process's lock on the same blob.
Workers here are daemon threads: the caller asks them to stop (cancellation,
polled per chunk), gives them a moment to keep what they downloaded, and
leaves. A worker cut off mid-write leaves a shorter partial file, which is
still a valid prefix to resume from.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_Item = tuple[Future, Callable[..., Any], tuple[Any, ...]]


class DaemonPool:
    """``submit`` / ``shutdown`` as in ``concurrent.futures``, plus ``join(timeout)``."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._max = max(1, max_workers)
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a pool that was shut down")
            self._queue.put((fut, fn, args))
            if self._idle == 0 and len(self._threads) < self._max:
                t = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
                t.start()
            else:
                self._idle = max(0, self._idle - 1)
        return fut

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn, args = item
            if fut.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as e:  # handed to whoever waits on the future
                    fut.set_exception(e)
                else:
                    fut.set_result(result)
            del item, fut, fn, args
            with self._lock:
                self._idle += 1

    def shutdown(self, *, cancel_futures: bool = False) -> None:
        """No more work; queued work is cancelled when asked. Never waits (see ``join``)."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            for _ in self._threads:
                self._queue.put(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to end, at most ``timeout`` seconds in all; True when all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in list(self._threads):
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

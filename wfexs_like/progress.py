"""What long work tells whoever shows it, and how the user stops it.

The library never prints. A pull, a SIF build or a cache walk reports what
it does to the *current reporter*: nothing by default, rich bars or plain
lines when the command line installs one (``wfexs_like.cli.render``), or
whatever a workflow engine embedding the library installs. The reporter is
process-wide rather than passed down every call because the work fans out
into worker threads that a context variable would not follow, and because a
library caller should get progress without threading a parameter through
every factory method.

Cancellation lives here for the same reason: Ctrl-C reaches the main thread
only, while the bytes flow in workers. ``request_cancel()`` sets one flag
that every chunk loop polls through ``check_cancelled()``; a worker that sees
it keeps what it has (a partial file, for resume) and raises ``Cancelled``,
so in-flight downloads stop within a chunk instead of running to the end.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

#: How an image's work ended, as the summary table shows it.
Outcome = Literal["fetched", "cached", "built", "failed", "skipped"]


@dataclass(frozen=True)
class ImageSummary:
    """One row of the end-of-run summary: what was asked, what it resolved to, and what it cost."""

    tag: str
    outcome: Outcome
    digest: str | None = None
    size: int | None = None
    seconds: float = 0.0
    reason: str | None = None


class Reporter(Protocol):
    """Receives progress; every method may be called from any thread and must return quickly."""

    def begin(self, tag: str) -> None:
        """Work on ``tag`` starts (it gets its own bar or line)."""

    def advance(self, tag: str, key: str, done: int, total: int | None) -> None:
        """``done`` of ``total`` bytes of one piece (``key``: a blob digest, a file name) of ``tag``."""

    def step(self, tag: str, text: str) -> None:
        """``tag`` entered a named stage ("resolving", "building SIF: squashing")."""

    def finish(self, summary: ImageSummary) -> None:
        """Work on ``summary.tag`` ended; the row goes into the summary table."""

    def warn(self, text: str, *, key: str | None = None) -> None:
        """A warning for the user; warnings sharing ``key`` are folded into one line with a count."""


class NullReporter:
    """The default: a library caller that installs nothing sees nothing and pays nothing."""

    def begin(self, tag: str) -> None:
        pass

    def advance(self, tag: str, key: str, done: int, total: int | None) -> None:
        pass

    def step(self, tag: str, text: str) -> None:
        pass

    def finish(self, summary: ImageSummary) -> None:
        pass

    def warn(self, text: str, *, key: str | None = None) -> None:
        pass


_current: Reporter = NullReporter()
_lock = threading.Lock()


def current() -> Reporter:
    """The reporter in effect (a ``NullReporter`` unless one was installed)."""
    return _current


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Install ``reporter`` for the duration of the block, then put back the previous one."""
    global _current
    with _lock:
        previous, _current = _current, reporter
    try:
        yield reporter
    finally:
        with _lock:
            _current = previous


# -- cancellation --------------------------------------------------------------------------------


class Cancelled(KeyboardInterrupt):
    """The user asked to stop. A ``KeyboardInterrupt`` so that no ``except Exception`` swallows it."""


_cancel = threading.Event()


def request_cancel() -> None:
    """Ask every worker to stop at its next chunk (called from the SIGINT handler)."""
    _cancel.set()


def cancel_requested() -> bool:
    return _cancel.is_set()


def check_cancelled() -> None:
    """Raise ``Cancelled`` when a stop was requested; call once per chunk in every long loop."""
    if _cancel.is_set():
        raise Cancelled("interrupted")


def reset_cancel() -> None:
    """Clear the flag (tests, and a long-lived embedding process after it handled a stop)."""
    _cancel.clear()

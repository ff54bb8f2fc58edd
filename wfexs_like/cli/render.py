"""How progress looks on the command line: rich bars on a terminal, plain lines otherwise, or nothing.

Three shapes of one reporter, chosen by ``reporter_for(args)``:

- bars (a terminal, ``--progress auto``): one byte bar per image in flight and
  one overall bar, on stderr, drawn by rich (imported only then, so ``--help``
  and piped runs never pay for it); a SIF build shows its stage as the bar's
  description; a finished image's bar gives way to the summary at the end;
- plain lines (not a terminal, or ``--progress plain``): start, step and
  finish lines, and a byte line per image at most every ``PLAIN_INTERVAL``
  seconds, so a log file of a 20-minute pull stays readable; never an escape
  code, even for a tag that carries one;
- nothing (``--quiet``); ``--progress none`` drops the progress but keeps the
  warnings and the summary.

Warnings are folded by key, because a layer with 400 device nodes should cost
the user one line, not 400: the first is shown at once, the rest counted and
reported at ``close()``. The library's own ``logging`` warnings are routed
through the same folding for the duration of the run.

Events come from worker threads; all state sits behind one lock.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from ..fsutil import human_bytes
from ..progress import ImageSummary, NullReporter
from .text import clean, short_digest

if TYPE_CHECKING:
    from rich.console import Console

#: Seconds between two byte-progress lines of one image in plain mode.
PLAIN_INTERVAL = 2.0
#: The loggers whose warnings are folded (ours); third-party ones keep their own way.
LIBRARY_LOGGER = "wfexs_like"


def human_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    minutes, seconds = divmod(round(s), 60)
    return f"{minutes}m{seconds:02d}s"


@dataclass
class _Image:
    """What one tag has reported so far."""

    tag: str
    order: int
    started: float
    pieces: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    done: int = 0
    total: int = 0
    stage: str | None = None
    last_line: float = 0.0
    finished: bool = False
    task: Any = None  # the rich task id in bar mode


class _Folder:
    """Warnings grouped by key: the first text of each key, and how many more came."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}
        self.more: dict[str, int] = {}

    def add(self, text: str, key: str | None) -> bool:
        """Record one warning; True when it is the first of its key (so it should be shown)."""
        k = text if key is None else key
        if k in self.first:
            self.more[k] = self.more.get(k, 0) + 1
            return False
        self.first[k] = text
        return True

    def leftovers(self) -> list[str]:
        return [f"{self.first[k]} ({n} more like this)" for k, n in self.more.items()]


class _BaseReporter:
    """Bookkeeping every shape shares: per-image bytes, summary rows, folded warnings, a lock."""

    def __init__(self, *, verbose: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.verbose = verbose
        self.clock = clock
        self.lock = threading.RLock()
        self.images: dict[str, _Image] = {}
        self.rows: list[tuple[int, ImageSummary]] = []
        self.folder = _Folder()
        self.closed = False
        self._on_close: list[Callable[[], None]] = []

    def _image(self, tag: str) -> tuple[_Image, bool]:
        img = self.images.get(tag)
        if img is not None and not img.finished:
            return img, False
        now = self.clock()
        img = _Image(tag, len(self.images) if img is None else img.order, now, last_line=now)
        self.images[tag] = img
        return img, True

    def _account(self, img: _Image, key: str, done: int, total: int | None) -> tuple[int, int]:
        """Update one piece; the (done, total) change of the image, for the overall count."""
        old_done, old_total = img.pieces.get(key, (0, None))
        img.pieces[key] = (done, total)
        d_done = done - old_done
        d_total = (done if total is None else total) - (old_done if old_total is None else old_total)
        img.done += d_done
        img.total += d_total
        return d_done, d_total

    def _record(self, summary: ImageSummary) -> _Image:
        img, _ = self._image(summary.tag)
        img.finished = True
        self.rows.append((img.order, summary))
        return img

    def summary_rows(self) -> list[ImageSummary]:
        """Rows in the order the images began (input order), whatever order they ended in."""
        return [s for _, s in sorted(self.rows, key=lambda r: r[0])]

    def call_on_close(self, fn: Callable[[], None]) -> None:
        self._on_close.append(fn)

    def _run_on_close(self) -> None:
        while self._on_close:
            self._on_close.pop()()


def _finish_line(s: ImageSummary) -> str:
    parts = [f"{s.tag}: {s.outcome}"]
    if s.digest:
        parts.append(f" {short_digest(s.digest)}")
    if s.size is not None:
        parts.append(f" ({human_bytes(s.size)})")
    if s.outcome != "skipped":
        parts.append(f" in {human_seconds(s.seconds)}")
    if s.reason:
        parts.append(f": {s.reason}")
    return "".join(parts)


_HEADERS = ("TAG", "DIGEST", "SIZE", "RESULT", "TIME")
_RIGHT = {2, 4}


def _cells(s: ImageSummary) -> tuple[str, ...]:
    return (
        s.tag,
        short_digest(s.digest),
        human_bytes(s.size) if s.size is not None else "-",
        s.outcome,
        human_seconds(s.seconds),
    )


def plain_table(rows: Iterable[ImageSummary]) -> list[str]:
    """The summary as aligned text lines (header first)."""
    table = [_HEADERS, *(tuple(clean(c) for c in _cells(s)) for s in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(_HEADERS))]
    lines = []
    for r in table:
        pairs = enumerate(zip(r, widths, strict=True))
        cells = [c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
    return lines


class PlainReporter(_BaseReporter):
    """Lines on a stream: for logs, pipes, CI, and ``--progress plain``.

    ``show_progress=False`` (``--progress none``) keeps only the warnings and
    the summary.
    """

    def __init__(
        self,
        stream: IO[str],
        *,
        verbose: int = 0,
        show_progress: bool = True,
        interval: float = PLAIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(verbose=verbose, clock=clock)
        self.stream = stream
        self.show_progress = show_progress
        self.interval = interval

    def _line(self, text: str) -> None:
        try:
            self.stream.write(clean(text) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed or gone: progress is never worth failing the work for

    def begin(self, tag: str) -> None:
        with self.lock:
            self._image(tag)
            if self.show_progress:
                self._line(f"{tag}: started")

    def advance(self, tag: str, key: str, done: int, total: int | None) -> None:
        with self.lock:
            img, _ = self._image(tag)
            self._account(img, key, done, total)
            now = self.clock()
            if self.show_progress and now - img.last_line >= self.interval:
                img.last_line = now
                self._line(f"{tag}: {human_bytes(img.done)} / {human_bytes(img.total)}")

    def step(self, tag: str, text: str) -> None:
        with self.lock:
            img, _ = self._image(tag)
            img.stage = text
            if self.show_progress:
                self._line(f"{tag}: {text}")

    def finish(self, summary: ImageSummary) -> None:
        with self.lock:
            self._record(summary)
            if self.show_progress:
                self._line(_finish_line(summary))

    def warn(self, text: str, *, key: str | None = None) -> None:
        with self.lock:
            if self.folder.add(text, key):
                self._line(f"warning: {text}")

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._run_on_close()
            for text in self.folder.leftovers():
                self._line(f"warning: {text}")
            rows = self.summary_rows()
            if rows:
                self._line("")
                for line in plain_table(rows):
                    self._line(line)


class SilentReporter(NullReporter):
    """``--quiet``: not a byte of progress, no warnings, no summary."""

    def close(self) -> None:
        _forget(self)


class _Nested:
    """What ``reporter_for`` gives while another reporter it made is still open.

    The command line installs one reporter around every command; a command
    that asks for one again must draw on the same display (a second live
    display on one terminal garbles both) and must not fold the same log
    warning twice. So everything goes to the open one, and only its owner
    closes it.
    """

    def __init__(self, outer: Any) -> None:
        self.outer = outer

    def begin(self, tag: str) -> None:
        self.outer.begin(tag)

    def advance(self, tag: str, key: str, done: int, total: int | None) -> None:
        self.outer.advance(tag, key, done, total)

    def step(self, tag: str, text: str) -> None:
        self.outer.step(tag, text)

    def finish(self, summary: ImageSummary) -> None:
        self.outer.finish(summary)

    def warn(self, text: str, *, key: str | None = None) -> None:
        self.outer.warn(text, key=key)

    def close(self) -> None:
        pass


_open: list[Any] = []
_open_lock = threading.Lock()


def _forget(reporter: Any) -> None:
    with _open_lock:
        if reporter in _open:
            _open.remove(reporter)


_OUTCOME_STYLE = {
    "fetched": "green",
    "built": "green",
    "cached": "cyan",
    "failed": "bold red",
    "skipped": "dim",
}


class BarReporter(_BaseReporter):
    """rich bars on a terminal: one per image in flight (bytes) and the overall one below them.

    A stage shows as the bar's description until the next one; a stage
    reported before the first byte ("resolving") is dropped when bytes start
    to flow. The live display starts with the first image, so a command that
    reports nothing draws nothing. While it runs, rich redirects
    ``sys.stderr`` above the bars; the root log handlers are pointed at that
    redirect too, so a debug line (``-vv``) lands above the bars instead of
    through them.
    """

    def __init__(self, console: Console, *, verbose: int = 0) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )
        from rich.table import Column

        super().__init__(verbose=verbose)
        self.console = console
        reporter = self

        class _Bars(Progress):
            def get_renderables(self) -> Iterable[Any]:
                yield self.make_tasks_table(reporter._visible(self.tasks, reporter.console.height))

        width = max(20, console.width * 2 // 5)
        self.progress = _Bars(
            TextColumn(
                "{task.description}",
                markup=False,
                table_column=Column(no_wrap=True, overflow="ellipsis", max_width=width),
            ),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,  # stdout carries results (YAML, JSON): never into stderr
            refresh_per_second=8,
        )
        self.overall: Any = None
        self.started = False
        self.finished_count = 0
        self.done = 0
        self.total = 0
        self._raw_stderr: Any = None
        self._handlers: list[logging.StreamHandler] = []

    # -- live display ------------------------------------------------------------
    def _start(self) -> None:
        """Show the display (called once its first image bar is in, so nothing half-made is drawn)."""
        if self.started:
            return
        self.started = True
        self._raw_stderr = sys.stderr
        self.progress.start()
        if sys.stderr is not self._raw_stderr:  # rich put its redirect in place
            for h in logging.getLogger().handlers:
                if isinstance(h, logging.StreamHandler) and h.stream is self._raw_stderr:
                    h.setStream(sys.stderr)
                    self._handlers.append(h)

    def _stop(self) -> None:
        if not self.started:
            return
        self.progress.stop()
        for h in self._handlers:
            h.setStream(self._raw_stderr)
        self._handlers.clear()

    def _visible(self, tasks: list[Any], height: int) -> list[Any]:
        """The bars that fit the terminal, overall last: a run of 60 images must not push it off.

        Images with bytes moving come first; the overall bar says how many are
        not shown. Called by rich's refresh thread: it only reads.
        """
        images = [t for t in tasks if t.id != self.overall]
        overall = [t for t in tasks if t.id == self.overall]
        room = max(1, height - 2)
        if len(images) > room and overall:
            images.sort(key=lambda t: not t.completed)  # stable: begin order within each group
            hidden = len(images) - room
            images = images[:room]
            overall = [
                dataclasses.replace(overall[0], description=f"{overall[0].description} +{hidden} more")
            ]
        return images + overall

    def _print(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style or ""), markup=False, highlight=False, soft_wrap=True)

    def _describe(self, img: _Image) -> str:
        return clean(f"{img.tag}: {img.stage}" if img.stage else img.tag)

    def _overall(self) -> None:
        begun = len(self.images)
        self.progress.update(
            self.overall,
            description=f"total ({self.finished_count}/{begun} images)",
            completed=self.done,
            total=self.total or None,
        )

    def _bar(self, tag: str) -> _Image:
        img, new = self._image(tag)
        if new or img.task is None:
            if self.overall is None:
                self.overall = self.progress.add_task("total", total=None)
            img.task = self.progress.add_task(self._describe(img), total=None)
            self._overall()
            self._start()
        return img

    # -- Reporter ----------------------------------------------------------------
    def begin(self, tag: str) -> None:
        with self.lock:
            self._bar(tag)

    def advance(self, tag: str, key: str, done: int, total: int | None) -> None:
        with self.lock:
            img = self._bar(tag)
            first = not img.pieces
            d_done, d_total = self._account(img, key, done, total)
            self.done += d_done
            self.total += d_total
            if first and img.stage:  # "resolving" is over once bytes flow; don't leave it on the bar
                img.stage = None
                self.progress.update(img.task, description=self._describe(img))
            self.progress.update(img.task, completed=img.done, total=img.total or None)
            self._overall()

    def step(self, tag: str, text: str) -> None:
        with self.lock:
            img = self._bar(tag)
            img.stage = text
            self.progress.update(img.task, description=self._describe(img))
            if self.verbose:
                self._print(f"{tag}: {text}")

    def finish(self, summary: ImageSummary) -> None:
        with self.lock:
            img = self._image(summary.tag)[0]
            if img.task is not None:
                self.progress.remove_task(img.task)
                img.task = None
            self.total -= img.total - img.done  # a failed image's missing bytes will never come
            self._record(summary)
            self.finished_count += 1
            if self.started:
                self._overall()
            if self.verbose:
                self._print(_finish_line(summary), _OUTCOME_STYLE.get(summary.outcome))

    def warn(self, text: str, *, key: str | None = None) -> None:
        with self.lock:
            if self.folder.add(text, key):
                self._print(f"warning: {clean(text)}", "yellow")

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._stop()
            self._run_on_close()
            for text in self.folder.leftovers():
                self._print(f"warning: {clean(text)}", "yellow")
            rows = self.summary_rows()
            if rows:
                self.console.print(self._table(rows))

    def _table(self, rows: list[ImageSummary]) -> Any:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for i, name in enumerate(_HEADERS):
            table.add_column(name.lower(), justify="right" if i in _RIGHT else "left", no_wrap=i != 0)
        for s in rows:
            cells = [Text(clean(c)) for c in _cells(s)]
            cells[3].stylize(_OUTCOME_STYLE.get(s.outcome, ""))
            table.add_row(*cells)
        return table


class _FoldLibraryWarnings(logging.Handler):
    """Sends WARNING records of the library's loggers to ``warn()``, keyed by their message template.

    So ``"layer %s: skipping device node %r ..."`` logged 300 times becomes one
    line and a count. Other levels go on to the root handlers as before.
    """

    def __init__(self, reporter: Any) -> None:
        super().__init__()
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if logging.WARNING <= record.levelno < logging.ERROR:
                self.reporter.warn(record.getMessage(), key=f"{record.name}:{record.msg}")
            else:
                logging.getLogger().handle(record)
        except Exception:
            self.handleError(record)


def _install_log_folding(reporter: _BaseReporter) -> None:
    logger = logging.getLogger(LIBRARY_LOGGER)
    handler = _FoldLibraryWarnings(reporter)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False

    def remove() -> None:
        logger.removeHandler(handler)
        logger.propagate = propagate

    reporter.call_on_close(remove)


def _bars_wanted(args: argparse.Namespace, stream: IO[str]) -> bool:
    if getattr(args, "progress", "auto") != "auto":
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def reporter_for(args: argparse.Namespace, *, stream: IO[str] | None = None) -> Any:
    """The reporter ``args`` ask for (``--quiet``, ``--progress``, a TTY or not); ``close()`` it.

    Installs the folding of the library's log warnings until ``close()``.
    ``stream`` defaults to ``sys.stderr`` (progress never goes to stdout,
    which carries results). Asked again while one is open, it returns a
    view of that one whose ``close()`` does nothing.
    """
    with _open_lock:
        if _open:
            return _Nested(_open[-1])
    stream = sys.stderr if stream is None else stream
    verbose = int(getattr(args, "verbose", 0) or 0)
    if getattr(args, "quiet", False):
        silent = SilentReporter()
        with _open_lock:
            _open.append(silent)
        return silent
    reporter: _BaseReporter
    if _bars_wanted(args, stream):
        from rich.console import Console

        reporter = BarReporter(Console(file=stream, highlight=False), verbose=verbose)
    else:
        show = getattr(args, "progress", "auto") != "none"
        reporter = PlainReporter(stream, verbose=verbose, show_progress=show)
    with _open_lock:
        _open.append(reporter)
    reporter.call_on_close(lambda: _forget(reporter))
    _install_log_folding(reporter)
    return reporter

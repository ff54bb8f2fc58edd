"""Run and time external commands, with the peak memory of what they ran.

Every measured step is a subprocess — the reference path, skopeo and
wfexs-like's own CLI alike — timed with ``time.perf_counter()`` around the
whole process, so interpreter and client start-up count for every tool the
same way. A failing command raises ``CommandError`` (command, exit code,
stderr tail): a benchmark that quietly times a command that failed reports
nonsense.

Peak RSS comes from the kernel, not from sampling: ``wait4``'s ``ru_maxrss``,
which on Linux is the largest RSS of the child *or any descendant it waited
for* (``tree``). It is read by GNU ``time`` (``/usr/bin/time -f %M``) rather
than by our own ``wait4``, because a child's peak also counts the memory
image it had *before* ``exec`` — a fork of this Python process, tens of MB —
and ``time`` is a small C program, so what it forks adds about 2 MB. That is the honest figure for a tool
that is one process (skopeo, sha256sum); for one that hands work to a child
(wfexs-like's SIF build runs the squashfs compressor, its Podman deploy runs
``podman load``) the issue asks for the process alone, so wfexs-like runs
under ``selfrss.py``, which writes its own ``RUSAGE_SELF`` peak at exit
(``own``). Daemons (dockerd, podman's storage) are never counted: they are
not children of anything we start.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STDERR_TAIL = 2000
SELFRSS = Path(__file__).resolve().parent / "selfrss.py"
GNU_TIME = "/usr/bin/time"


class CommandError(RuntimeError):
    """A command exited non-zero; carries what is needed to reproduce it by hand."""

    def __init__(self, cmd: Sequence[str], returncode: int, stderr: bytes) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stderr = stderr.decode(errors="replace")[-STDERR_TAIL:]
        super().__init__(f"`{' '.join(self.cmd)}` exited {returncode}: {self.stderr.strip()}")


@dataclass(frozen=True)
class Measured:
    """One finished command: wall seconds, peak RSS in kB (tree; own when known), its stdout."""

    seconds: float
    rss_kb: int
    own_rss_kb: int | None = None
    out: bytes = b""

    def rss(self) -> dict[str, int]:
        """The RSS fields a sample records (``own`` only when the process reported it)."""
        d = {"rss_kb": self.rss_kb}
        if self.own_rss_kb is not None:
            d["own_rss_kb"] = self.own_rss_kb
        return d


class _PeakRss:
    """``/usr/bin/time -f %M -o FILE`` around a command, and the figure it wrote (kB)."""

    def __enter__(self) -> _PeakRss:
        if not Path(GNU_TIME).is_file():
            raise RuntimeError(f"{GNU_TIME} (GNU time) is missing: apt-get install time")
        fd, name = tempfile.mkstemp(prefix="wfexs-bench-time-")
        os.close(fd)
        self.path = Path(name)
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        return [GNU_TIME, "-f", "%M", "-o", str(self.path), *cmd]

    def read(self) -> int:
        # On a failure time writes "Command exited with non-zero status N" before the figure.
        lines = self.path.read_text().split()
        return int(lines[-1]) if lines and lines[-1].isdigit() else 0


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment, plus ``extra``, minus what would measure something users never run.

    ``AWS_CA_BUNDLE`` breaks plain-HTTP loopback services. ``PYTHONDONTWRITEBYTECODE``
    (set in some development shells) would make every measured process re-compile the
    package from source, which a ``pip install`` never does: it byte-compiles at install.
    """
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra or {})
    return env


def measure(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout: Path | None = None,
    stdin: Path | None = None,
    check: bool = True,
) -> Measured:
    """Run ``cmd`` to completion: wall time, ``ru_maxrss`` from ``wait4``, stdout (unless sent to a file).

    stdout and stderr go to temp files rather than pipes, so a chatty
    command can never block on a full pipe while we sit in ``wait4``.
    """
    with (
        open(stdout, "wb") if stdout is not None else tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        open(stdin, "rb") if stdin is not None else open(os.devnull, "rb") as inp,
        _PeakRss() as peak,
    ):
        t0 = time.perf_counter()
        proc = subprocess.run(peak.wrap(cmd), stdin=inp, stdout=out, stderr=err, env=child_env(env))
        seconds = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()
        text = b""
        if stdout is None:
            out.seek(0)
            text = out.read()
        rss = peak.read()
    if check and proc.returncode != 0:
        # Some tools (debootstrap) say why on stdout; show whichever stream has something.
        raise CommandError(cmd, proc.returncode, stderr.strip() or text)
    return Measured(seconds, rss, None, text)


def measure_wl(
    wl_cmd: Sequence[str], *, env: Mapping[str, str] | None = None, stdout: Path | None = None
) -> Measured:
    """``measure`` a wfexs-like command line (``[wfexs-like, ARGS...]``) under ``selfrss.py``.

    Adds the process's own peak RSS (children excluded) to the tree figure.
    """
    with tempfile.NamedTemporaryFile(prefix="wfexs-bench-rss-", delete=False) as fh:
        rss_file = Path(fh.name)
    try:
        python = Path(wl_cmd[0]).parent / "python"  # the interpreter of the CLI's venv
        m = measure([str(python), str(SELFRSS), str(rss_file), *wl_cmd[1:]], env=env, stdout=stdout)
        text = rss_file.read_text().strip()
    finally:
        rss_file.unlink(missing_ok=True)
    return Measured(m.seconds, m.rss_kb, int(text) if text else None, m.out)


#: The kernel's I/O stall accounting (PSI): "some" is time in which any task waited on I/O.
IO_PRESSURE = Path("/proc/pressure/io")


def _io_stall_us() -> int | None:
    try:
        first = IO_PRESSURE.read_text().splitlines()[0]  # some avg10=... avg60=... avg300=... total=<us>
    except (OSError, IndexError):
        return None
    return int(first.rsplit("total=", 1)[1])


def settle(*, quiet_ms: float = 5.0, window_s: float = 0.5, windows: int = 2, limit_s: float = 60.0) -> float:
    """``os.sync()``, then wait until the disk is quiet; return the seconds spent.

    Quiet: ``windows`` windows in a row in which tasks stalled on I/O for
    under ``quiet_ms`` in all (from the kernel's ``total`` stall counter, so
    it reacts at once, unlike the decaying averages). Why: a scenario that
    just wrote and removed gigabytes (the big image, a generated cache)
    leaves minutes of write-back and, on a disk mounted with ``discard``,
    of discards; the next small-file scenario then measured the disk's
    backlog, not itself (a re-stage through the API took 3.9 ms per image
    right after the big image, 1.0-1.3 ms on a settled machine). Every
    latency-bound scenario starts here, as a later run in real use would.
    Without PSI (old kernels, some containers) only the sync is done.
    """
    t0 = time.perf_counter()
    os.sync()
    last = _io_stall_us()
    if last is None:
        return time.perf_counter() - t0
    calm = 0
    while calm < windows and time.perf_counter() - t0 < limit_s:
        time.sleep(window_s)
        now = _io_stall_us()
        if now is None:
            break
        calm = calm + 1 if now - last < quiet_ms * 1000 else 0
        last = now
    return time.perf_counter() - t0


def run(cmd: Sequence[str], *, check: bool = True, stdout: Path | None = None) -> bytes:
    """Run ``cmd`` (untimed setup or clean-up); return its stdout (or write it to ``stdout``)."""
    return measure(cmd, stdout=stdout, check=check).out


def timed(cmd: Sequence[str]) -> float:
    """Wall seconds ``cmd`` took, start-up included."""
    return measure(cmd).seconds


def timed_pipe(producer: Sequence[str], consumer: Sequence[str], out: Path) -> Measured:
    """``producer | consumer > out``, both checked (like ``set -o pipefail``); RSS is the larger one's."""
    with (
        open(out, "wb") as fh,
        tempfile.TemporaryFile() as e1,
        tempfile.TemporaryFile() as e2,
        _PeakRss() as r1,
        _PeakRss() as r2,
    ):
        t0 = time.perf_counter()
        p1 = subprocess.Popen(r1.wrap(producer), stdout=subprocess.PIPE, stderr=e1, env=child_env())
        p2 = subprocess.Popen(r2.wrap(consumer), stdin=p1.stdout, stdout=fh, stderr=e2, env=child_env())
        assert p1.stdout is not None
        p1.stdout.close()  # p2 owns the read end now; p1 sees SIGPIPE if p2 dies
        p2.wait()
        p1.wait()
        elapsed = time.perf_counter() - t0
        for proc, err, cmd in ((p1, e1, producer), (p2, e2, consumer)):
            if proc.returncode != 0:
                err.seek(0)
                raise CommandError(cmd, proc.returncode, err.read())
        return Measured(elapsed, max(r1.read(), r2.read()))


def sha256sum(path: Path) -> tuple[Measured, str]:
    """``sha256sum`` of ``path`` (what the reference fingerprints with): the measurement and the hex."""
    m = measure(["sha256sum", str(path)])
    return m, m.out.split()[0].decode()


def du_bytes(*paths: Path) -> int:
    """``du -sbc``: apparent bytes, each hard-linked inode counted once across all ``paths``.

    Counting once is the point: wfexs-like's snapshots are hard links into its
    blob store, so they cost no bytes beyond the store's.
    """
    return int(run(["du", "-sbc", *map(str, paths)]).split()[-2])


def first_line(cmd: Sequence[str]) -> str:
    """First line of a version command's output, or why there is none (for the results header)."""
    try:
        text = run(cmd).decode(errors="replace").strip()
    except (CommandError, OSError) as e:
        return f"unavailable ({e})"
    return text.splitlines()[0] if text else ""

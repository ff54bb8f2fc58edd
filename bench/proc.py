"""Run and time external commands.

Every measured step is a subprocess — the reference path, skopeo and
wfexs-like's own CLI alike — timed with ``time.perf_counter()`` around the
whole process, so interpreter and client start-up count for every tool the
same way. A failing command raises ``CommandError`` (command, exit code,
stderr tail): a benchmark that quietly times a command that failed reports
nonsense.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

STDERR_TAIL = 2000


class CommandError(RuntimeError):
    """A command exited non-zero; carries what is needed to reproduce it by hand."""

    def __init__(self, cmd: Sequence[str], returncode: int, stderr: bytes) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stderr = stderr.decode(errors="replace")[-STDERR_TAIL:]
        super().__init__(f"`{' '.join(self.cmd)}` exited {returncode}: {self.stderr.strip()}")


def child_env() -> dict[str, str]:
    """Our environment minus ``AWS_CA_BUNDLE``, which breaks plain-HTTP loopback services."""
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    return env


def run(cmd: Sequence[str], *, check: bool = True, stdout: Path | None = None) -> bytes:
    """Run ``cmd`` to completion; return its stdout (or write it to ``stdout``)."""
    if stdout is None:
        proc = subprocess.run(list(cmd), capture_output=True, env=child_env(), check=False)
        out = proc.stdout
    else:
        with open(stdout, "wb") as fh:
            proc = subprocess.run(list(cmd), stdout=fh, stderr=subprocess.PIPE, env=child_env(), check=False)
        out = b""
    if check and proc.returncode != 0:
        # Some tools (debootstrap) say why on stdout; show whichever stream has something.
        raise CommandError(cmd, proc.returncode, proc.stderr.strip() or (proc.stdout or b""))
    return out


def timed(cmd: Sequence[str]) -> float:
    """Wall seconds ``cmd`` took, start-up included."""
    return timed_output(cmd)[0]


def timed_output(cmd: Sequence[str]) -> tuple[float, bytes]:
    """Wall seconds ``cmd`` took, and its stdout (to check it did what we think we timed)."""
    t0 = time.perf_counter()
    out = run(cmd)
    return time.perf_counter() - t0, out


def timed_pipe(producer: Sequence[str], consumer: Sequence[str], out: Path) -> float:
    """Wall seconds of ``producer | consumer > out``, both checked (like ``set -o pipefail``)."""
    t0 = time.perf_counter()
    with open(out, "wb") as fh:
        p1 = subprocess.Popen(list(producer), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
        p2 = subprocess.Popen(
            list(consumer), stdin=p1.stdout, stdout=fh, stderr=subprocess.PIPE, env=child_env()
        )
        assert p1.stdout is not None
        p1.stdout.close()  # p2 owns the read end now; p1 sees SIGPIPE if p2 dies
        _, err2 = p2.communicate()
        err1 = p1.stderr.read() if p1.stderr else b""
        p1.wait()
    elapsed = time.perf_counter() - t0
    if p1.returncode != 0:
        raise CommandError(producer, p1.returncode, err1)
    if p2.returncode != 0:
        raise CommandError(consumer, p2.returncode, err2)
    return elapsed


def sha256sum(path: Path) -> tuple[float, str]:
    """Time ``sha256sum`` of ``path`` (what the reference fingerprints with); return (seconds, hex)."""
    t0 = time.perf_counter()
    out = run(["sha256sum", str(path)])
    return time.perf_counter() - t0, out.split()[0].decode()


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

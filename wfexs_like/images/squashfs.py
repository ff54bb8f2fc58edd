"""The squashfs packers a SIF build runs: ``tar2sqfs`` fed a tar stream, or ``mksquashfs`` on a tree.

Both are run the same way: reproducibly (fixed times, owners from the
image, no extended attributes, gzip, 128 KiB blocks), compressing on every
core this process may use, stoppable with Ctrl-C between chunks, and as
children that die with us: a killed build must not leave a compressor
writing into the cache (``PR_SET_PDEATHSIG``; the work dir it wrote into is
swept by ``cache gc`` once nobody claims it).

gzip because every squashfs reader Apptainer may use (kernel, squashfuse)
has it.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .. import progress
from ..errors import ContainerEngineException
from ..fsutil import disk_full_error, free_bytes
from .tarstream import Writable

BLOCK_SIZE = 128 * 1024
_POLL_SECONDS = 0.25
_STDERR_TAIL = 64 * 1024
_PR_SET_PDEATHSIG = 1
_NO_SPACE = ("No space left on device", "Disk quota exceeded")
_FULL_MARGIN = 16 << 20
_WATCH_EVERY = 8 << 20


#: The pipe into the packer, and our buffer in front of it: a tar of small files is mostly
#: 512-byte headers, and 64 KiB (Linux's default pipe) made the writer and the packer's reader
#: wait on each other thousands of times.
PIPE_BYTES = 1 << 20


def jobs() -> int:
    """Compressor threads: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when this process dies (Linux only).

    A SIGKILL gives us no chance to clean up, and a compressor left running
    goes on filling the cache for minutes. The check of the parent's pid
    covers a parent killed between fork and prctl.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _env() -> dict[str, str]:
    # SOURCE_DATE_EPOCH would clamp the layers' file times: our times are already fixed.
    return {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}


class _Child:
    """A packer process whose stderr is kept (its tail) by a thread, so no pipe ever fills."""

    def __init__(self, cmd: list[str], tool: str, package: str, *, stdin: int | None) -> None:
        self.cmd = cmd
        self.tool = tool
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=stdin,
                bufsize=PIPE_BYTES,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=_env(),
                preexec_fn=_die_with_parent(),
            )
        except FileNotFoundError:
            raise ContainerEngineException(
                f"{cmd[0]} not found: install {package} (apt-get install {package})", command=cmd
            ) from None
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError, AttributeError):  # Linux only; a smaller pipe still works
                fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._tail: collections.deque[bytes] = collections.deque()
        self._reader = threading.Thread(target=self._read_stderr, name=f"{tool}-stderr", daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        size = 0
        while chunk := self.proc.stderr.read1(8192):
            self._tail.append(chunk)
            size += len(chunk)
            while size > _STDERR_TAIL and len(self._tail) > 1:
                size -= len(self._tail.popleft())

    def stderr(self) -> bytes:
        self._reader.join(timeout=5)
        return b"".join(self._tail)

    def wait(self) -> int:
        """Wait for the exit, killing the child at a stop request: packing a big image takes minutes."""
        while True:
            try:
                return self.proc.wait(timeout=_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                progress.check_cancelled()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):  # a broken pipe: the child is gone, which is the point
                self.proc.stdin.close()
        self.stderr()

    def check(self, dest: Path, what: str, *, where: Path | None = None, peak: int = 0) -> None:
        """Raise for a failed run: "no room" as one line about ``where``, anything else with the
        command, exit code and stderr.

        ``mksquashfs`` says "No space left on device"; ``tar2sqfs`` only says
        "I/O error." and removes its output, so a filesystem left with less
        room than the output had reached (``peak``) tells instead.
        """
        code = self.proc.returncode
        if code == 0:
            return
        progress.check_cancelled()  # a Ctrl-C on the terminal kills the packer too: that is a stop
        err = self.stderr()
        text = err.decode("utf-8", "replace")
        with contextlib.suppress(OSError):
            peak = max(peak, dest.stat().st_size)
        dest.unlink(missing_ok=True)
        directory = where or dest.parent
        if any(s in text for s in _NO_SPACE) or ("I/O error" in text and _filled(directory, peak)):
            number = errno.EDQUOT if "quota" in text else errno.ENOSPC
            cause = OSError(number, os.strerror(number))
            # The output was removed: all the room there is now was not enough.
            needed = max(peak, free_bytes(directory) or 0)
            raise disk_full_error(directory, what=what, needed=needed, at_least=True, cause=cause) from None
        raise ContainerEngineException(
            f"{self.tool} could not pack the image's root file system",
            command=self.cmd,
            returncode=code,
            stderr=err,
        )


def _filled(directory: Path, peak: int) -> bool:
    free = free_bytes(directory)
    return free is not None and free < peak + _FULL_MARGIN


class _Watched:
    """The packer's stdin, noting now and then how far its output has grown (for a disk-full report)."""

    def __init__(self, out: BinaryIO, dest: Path) -> None:
        self.out = out
        self.dest = dest
        self.fed = 0
        self.peak = 0
        self._next = _WATCH_EVERY

    def fileno(self) -> int:
        return self.out.fileno()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = self.out.write(data)
        self.fed += len(data)
        if self.fed >= self._next:
            self._next = self.fed + _WATCH_EVERY
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.dest.stat().st_size)
        return n


def tar2sqfs_path(tar2sqfs: str | None = "tar2sqfs") -> str | None:
    """The ``tar2sqfs`` to run, or None when it is not installed (then the SIF build extracts a tree)."""
    return shutil.which(tar2sqfs) if tar2sqfs else None


def tar2sqfs_command(
    tar2sqfs: str,
    dest: Path,
    *,
    mkfs_time: int,
    compressor: str = "gzip",
    comp_extra: str | None = None,
    threads: int | None = None,
) -> list[str]:
    """Squashfs from a tar on stdin; directories the tar leaves implicit are 0755, root's, at ``mkfs_time``.

    The superblock's time is the implicit directories' time, so it is
    ``mkfs_time`` too. The output does not depend on the number of threads,
    so there are two compressor threads per core: ``tar2sqfs``'s own thread
    (reading the tar, splitting blocks) and our tar writer take turns on the
    cores, and a spare compressor keeps each core busy while they run (one
    per core left the cores idle a tenth of the time, measured on 2 cores).
    A SIF's partition is gzip (what every runtime reads); ``compressor``
    and its ``comp_extra`` options (``level=1``) exist for squashfs images
    that are not SIFs, and for tests.
    """
    extra = ["--comp-extra", comp_extra] if comp_extra else []
    return [
        tar2sqfs,
        "--quiet",
        "--no-skip",
        "--no-xattr",
        "--force",
        "--compressor",
        compressor,
        *extra,
        "--block-size",
        str(BLOCK_SIZE),
        "--num-jobs",
        str(threads or 2 * jobs()),
        "--defaults",
        f"uid=0,gid=0,mode=0755,mtime={mkfs_time}",
        os.fspath(dest),
    ]


def squash_tar_stream(
    feed: Callable[[Writable], None],
    dest: Path,
    *,
    mkfs_time: int,
    tar2sqfs: str = "tar2sqfs",
    compressor: str = "gzip",
    comp_extra: str | None = None,
    what: str = "the SIF's squashfs",
    where: Path | None = None,
) -> None:
    """Run ``tar2sqfs`` writing ``dest`` while ``feed(stdin)`` writes the tar it reads.

    Whatever ``feed`` raises kills the child first and is raised; a child
    that fails makes the feed's writes fail (broken pipe), and its own
    error (stderr, exit code, or a disk-full line naming ``where``, by
    default ``dest``'s directory) is what is raised.
    """
    cmd = tar2sqfs_command(tar2sqfs, dest, mkfs_time=mkfs_time, compressor=compressor, comp_extra=comp_extra)
    child = _Child(cmd, "tar2sqfs", "squashfs-tools-ng", stdin=subprocess.PIPE)
    assert child.proc.stdin is not None
    stdin = _Watched(child.proc.stdin, dest)
    try:
        try:
            feed(stdin)
            child.proc.stdin.close()
        except BrokenPipeError:
            child.wait()
            child.check(dest, what, where=where, peak=stdin.peak)
            raise
        child.wait()
    except BaseException:
        child.kill()
        raise
    child.check(dest, what, where=where, peak=stdin.peak)


def mksquashfs_command(mksquashfs: str, rootfs: Path, dest: Path, *, mkfs_time: int) -> list[str]:
    """Ownership is kept when we run as root; otherwise the files on disk belong to whoever
    extracted them, which says nothing about the image, so everything is made root's, as
    Apptainer does."""
    cmd = [
        mksquashfs,
        os.fspath(rootfs),
        os.fspath(dest),
        "-noappend",
        "-comp",
        "gzip",
        "-b",
        str(BLOCK_SIZE),
        "-reproducible",
        "-no-xattrs",
        "-mkfs-time",
        str(mkfs_time),
        "-no-progress",
        "-quiet",
    ]
    if os.geteuid() != 0:
        cmd.append("-all-root")
    return cmd


def make_squashfs(
    rootfs: Path,
    dest: Path,
    *,
    mkfs_time: int,
    mksquashfs: str = "mksquashfs",
    what: str = "the SIF's squashfs",
    where: Path | None = None,
) -> None:
    """Pack the extracted tree ``rootfs`` into a reproducible gzip squashfs at ``dest``."""
    cmd = mksquashfs_command(mksquashfs, rootfs, dest, mkfs_time=mkfs_time)
    child = _Child(cmd, "mksquashfs", "squashfs-tools", stdin=subprocess.DEVNULL)
    try:
        child.wait()
    except BaseException:
        child.kill()
        raise
    child.check(dest, what, where=where)

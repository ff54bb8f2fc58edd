"""Small real filesystems for disk-full tests: a tmpfs of a given size, mounted for one test.

A full disk has to be a real one: the kernel decides when ``ENOSPC``
comes, in the middle of whichever write crosses the limit, and ``statvfs``
reports the same limit our free-space checks read. A tmpfs gives exactly
that, in memory, in a few milliseconds. Mounting needs root (the tests run
as root here and in CI); a machine where it cannot be done fails the test
rather than skipping it, so a green run always means the tests ran.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def mount_tmpfs(path: Path, size: str) -> Path:
    """Mount a tmpfs of ``size`` (``mount`` syntax: ``60m``) on ``path``, creating the directory."""
    path.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        pytest.fail("mount(8) is not installed; the disk-full tests need it")
    if proc.returncode != 0:
        pytest.fail(
            f"cannot mount a {size} tmpfs on {path} (needs root; uid {os.geteuid()}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return path


def unmount(path: Path) -> None:
    """Unmount; a mount still busy (a process we killed not yet reaped) is detached lazily."""
    proc = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


def fill(path: Path) -> Path:
    """Append to the file ``path`` until its filesystem has no room left; return it (delete it to undo)."""
    chunk = b"\0" * (1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for step in (len(chunk), 1 << 16, 1 << 12, 1):  # the last, partly filled pages too
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk[:step])
    finally:
        os.close(fd)
    return path


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``small_tmpfs(name, size)`` mounts a fresh tmpfs at ``tmp_path/name``; all are unmounted after."""
    mounted: list[Path] = []

    def make(name: str, size: str) -> Path:
        path = mount_tmpfs(tmp_path / name, size)
        mounted.append(path)
        return path

    yield make
    for path in reversed(mounted):
        unmount(path)

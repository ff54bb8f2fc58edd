"""The one way this project publishes a file: temp beside it, fsync, rename, fsync the dir.

Every final name a reader can see (a blob, a sidecar, a SIF, a provenance
record, an exported archive) must hold either the old content or the
complete new one, even across a crash. Keeping that rule in one place keeps
every writer honest about it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a rename durable; some filesystems refuse to fsync a directory, which is fine."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp_beside(dest: Path) -> tuple[int, Path]:
    # 0o666 so the umask applies as for any file the user writes (mkstemp's
    # 0o600 would survive the rename).
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    stem = dest.name[:200]
    for _ in range(100):
        tmp = dest.with_name(f".{stem}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {dest}")


@contextlib.contextmanager
def atomic_write(dest: Path, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """Yield a binary file (readable, seekable) that becomes ``dest`` only if the block succeeds.

    ``mode`` sets the final permissions; by default the umask decides. On
    any exception the temporary file is removed and ``dest`` is untouched.
    The directory must exist: whether to create it is the caller's decision.
    """
    dest = Path(dest)
    fd, tmp = _create_temp_beside(dest)
    try:
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(dest.parent)


def atomic_write_bytes(dest: Path, data: bytes, *, mode: int | None = None) -> None:
    with atomic_write(dest, mode=mode) as fh:
        fh.write(data)

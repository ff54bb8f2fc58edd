"""Small files read from places a user or a workflow points at, refused unread when not regular files.

Apart from ``archive`` because a re-stage reads an OCI layout's
``index.json`` and blobs this way and should not import ``tarfile`` and
the decompressors to do it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from ..errors import CacheError, UnsafeArchiveError

#: The largest manifest.json / index.json / config an archive or layout may hold.
SMALL_LIMIT = 16 << 20

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def open_regular(path: Path | str, what: str) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file (symlinks followed); else refused unread.

    Image files come from wherever a workflow or a user points: a FIFO there
    would block the reader forever, a device (``/dev/zero``) never ends, and
    a directory is no image. The open itself is non-blocking, so not even a
    FIFO without a writer can hang it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise CacheError(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a file")
            raise UnsafeArchiveError(f"{what} {path} is {kind}, not a regular file; refusing to read it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path | str, what: str, limit: int = 1 << 20) -> bytes:
    """The bytes of a small regular file (``open_regular``), refused unread when larger than ``limit``."""
    with open_regular(path, what) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise CacheError(
                f"{what} {path} is {size} bytes, far more than such a file holds ({limit}); "
                "it is not what it claims to be"
            )
        data = fh.read(size + 1)  # not ``limit + 1``: that much would be set aside for every small file
    if len(data) != size:
        raise CacheError(f"{what} {path} changed while it was read; read it again once it is complete")
    return data

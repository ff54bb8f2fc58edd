"""A directory as a backend: a library dir (read-only) or any tree in the cache layout."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..digests import CHUNK
from ..fsutil import fsync_dir, temp_file_in
from .base import HashingReader, StorageError, check_key


class DirBackend:
    """Files under ``root``; writes go to a temp file beside the target and are renamed in.

    A read-only one (``writable=False``, the library dirs) never creates,
    locks or touches anything: reads only, so it is safe on a shared,
    read-only filesystem and never disturbs its owner.
    """

    def __init__(self, root: Path, *, writable: bool = False, authoritative: bool = False) -> None:
        self.root = Path(root).absolute()
        self.name = str(self.root)
        self.writable = writable
        self.authoritative = authoritative

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            st = self._path(key).stat()
        except OSError:
            return None
        return st.st_size

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        fh = open(self._path(key), "rb")  # noqa: SIM115 - the caller closes it
        if offset:
            fh.seek(offset)
        return fh

    def local_path(self, key: str) -> Path | None:
        """The file itself, for callers that can hard-link instead of copying."""
        path = self._path(key)
        return path if path.is_file() else None

    def is_trusted(self, key: str) -> bool:
        """Whether the directory's own trust record vouches for blob ``key`` (a tree in our cache
        layout records the size and mtime of every blob it hashed, ``trust/sha256/<hex>``).

        A match is what the local cache itself relies on to skip re-hashing;
        a library with no record, or a blob changed since, is hashed in full.
        """
        if not key.startswith("blobs/sha256/"):
            return False
        record = self.root / "trust" / "sha256" / key.rsplit("/", 1)[1]
        try:
            rec = json.loads(record.read_bytes()[:4096])
            st = self._path(key).stat()
        except (OSError, ValueError):
            return False
        return (
            isinstance(rec, dict) and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
        )

    def put(self, key: str, source: BinaryIO, *, digest: str | None = None, size: int | None = None) -> None:
        if not self.writable:
            raise StorageError(f"{self.name} is read-only; nothing is written to a library dir")
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file_in(final.parent, ".tmp-", ".partial")
        reader = HashingReader(source)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := reader.read(CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            reader.check(f"{self.name}/{key}", digest, size)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def delete(self, key: str) -> None:
        if not self.writable:
            raise StorageError(f"{self.name} is read-only; nothing is deleted from a library dir")
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return
        for dirpath, _dirs, files in os.walk(start):
            for f in files:
                if f.startswith(".tmp-"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), self.root).replace(os.sep, "/")
                if rel.startswith(prefix):
                    yield rel

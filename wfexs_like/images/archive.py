"""Tar archives of images, read and written safely: what docker_archive and oci_archive share.

Reading: ``TarMembers`` gives random access to the regular members of a
tar file (plain, or compressed as a whole: gzip, xz, bzip2) after checking
every member name and link target, so a hostile archive is refused before
any of it is used. Writing: fixed ustar headers (mtime 0, uid/gid 0, no
user names) and ``write_tar_stream``, which publishes a stream atomically,
optionally gzipped reproducibly, and returns the file's sha256.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Self

from .. import progress
from ..digests import CHUNK, sha256_chunks
from ..errors import CacheError, IntegrityError, UnsafeArchiveError, quote
from ..fsutil import atomic_write
from .base import Layer, buffered
from .compression import MAGIC_LEN, Compression, from_media_type, sniff
from .regular import SMALL_LIMIT, open_regular

BLOCK = 512
_MEMBER_MODE = 0o644
_DIR_MODE = 0o755
_MEMBER_MTIME = 0
#: While scanning a compressed archive, members this small are kept in memory (up to _KEEP_TOTAL)
#: so reading the manifest and config later does not decompress the archive again.
_KEEP_SMALL = 1 << 20
_KEEP_TOTAL = 32 << 20
_TAR_MODES: Mapping[Compression, str] = {"none": "r:", "gzip": "r:gz", "xz": "r:xz", "bzip2": "r:bz2"}
#: Errors a damaged archive raises from tarfile or the decompressors.
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


# -- reading --------------------------------------------------------------------------------


def safe_name(name: str) -> str:
    """Normalise a member name; refuse anything that points outside the archive."""
    if not name or "\0" in name or name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name):
        raise UnsafeArchiveError(
            f"archive member {quote(name)} has an absolute path; refusing the archive (it was not made "
            "by docker/podman save or skopeo)"
        )
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeArchiveError(
            f"archive member {quote(name)} climbs out of the archive with '..'; refusing the archive "
            "(it was not made by docker/podman save or skopeo)"
        )
    norm = posixpath.normpath(name)
    return "" if norm == "." else norm


def link_target(name: str, target: str, *, symlink: bool) -> str:
    """Where a link member points, as a member name; refuse targets outside the archive.

    ``podman save`` writes ``<v1 id>/layer.tar -> ../<diff id>.tar``, so a
    symlink's ``..`` is fine as long as it resolves inside the archive.
    """
    if not symlink:
        return safe_name(target)  # hard link targets are archive member names
    if not target or target.startswith("/"):
        raise UnsafeArchiveError(
            f"archive member {quote(name)} is a symlink to {quote(target)}, outside the archive; refusing it"
        )
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"archive member {quote(name)} is a symlink to {quote(target)}, outside the archive; refusing it"
        )
    return resolved


def _is_document(name: str) -> bool:
    return name.endswith(".json") or posixpath.basename(name) in ("oci-layout", "repositories", "VERSION")


class _Window(io.RawIOBase):
    """One member of an uncompressed tar file, read with ``pread`` (no shared file position)."""

    def __init__(self, fd: int, offset: int, size: int, what: str) -> None:
        self._fd = fd
        self._offset = offset
        self._size = size
        self._pos = 0
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._offset + self._pos)
        if not data:
            raise CacheError(f"{self._what} is truncated (the archive file shrank); save the image again")
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


class _Guarded(io.RawIOBase):
    """A member of a compressed archive; decompression failures become one CacheError."""

    def __init__(self, raw: BinaryIO, what: str) -> None:
        self._raw = raw
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            return self._raw.readinto(b)  # type: ignore[attr-defined,no-any-return]
        except _READ_ERRORS as e:
            raise CacheError(
                f"{self._what} cannot be read: {e}; the archive is damaged: save it again"
            ) from e

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class TarMembers:
    """Random access to the regular members of a tar file (plain, gzip, xz or bzip2), names checked.

    Every member name and link target is checked when the archive is
    opened, so a hostile archive is refused before any of it is used. A
    compressed archive is scanned once, sequentially, hashing every member
    and keeping the small ones; a later read seeks, which for a compressed
    file means decompressing again from the start, so readers go in
    archive order (``offset``) where they can.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fh = open_regular(self.path, what)
        self._size = os.fstat(self._fh.fileno()).st_size
        self._tf: tarfile.TarFile | None = None
        try:
            self.compression = sniff(self._fh.read(MAGIC_LEN))
            self._fh.seek(0)
            mode = _TAR_MODES.get(self.compression)
            if mode is None:
                raise CacheError(
                    f"{what} {self.path} is {self.compression}-compressed as a whole, which this tool "
                    "cannot read; decompress it first (or save it again uncompressed)"
                )
            try:
                self._tf = tarfile.open(fileobj=self._fh, mode=mode)  # noqa: SIM115 - closed in close()
            except _READ_ERRORS as e:
                raise CacheError(f"{what} {self.path} is not a tar archive: {e}; save it again") from e
            self._files: dict[str, tarfile.TarInfo] = {}
            self._links: dict[str, str] = {}
            self._digests: dict[str, str] = {}
            self._heads: dict[str, bytes] = {}
            self._kept: dict[str, bytes] = {}
            self._scan()
        except BaseException:
            self.close()
            raise

    @property
    def compressed(self) -> bool:
        return self.compression != "none"

    def _scan(self) -> None:
        assert self._tf is not None
        kept = 0
        try:
            for ti in self._tf:
                progress.check_cancelled()
                name = safe_name(ti.name)
                if ti.issym() or ti.islnk():
                    self._links[name] = link_target(name, ti.linkname, symlink=ti.issym())
                    self._files.pop(name, None)
                    continue
                if not ti.isfile():
                    continue
                self._check_member(ti, name)
                self._files[name] = ti
                self._links.pop(name, None)
                if not self.compressed:
                    continue
                src = self._tf.extractfile(ti)
                assert src is not None
                h = hashlib.sha256()
                keep = ti.size <= SMALL_LIMIT and (
                    _is_document(name) or (ti.size <= _KEEP_SMALL and kept + ti.size <= _KEEP_TOTAL)
                )
                parts: list[bytes] = []
                head = b""
                while chunk := src.read(CHUNK):
                    progress.check_cancelled()
                    if len(head) < MAGIC_LEN:
                        head += chunk[: MAGIC_LEN - len(head)]
                    h.update(chunk)
                    if keep:
                        parts.append(chunk)
                self._digests[name] = "sha256:" + h.hexdigest()
                self._heads[name] = head
                if keep:
                    self._kept[name] = b"".join(parts)
                    kept += ti.size
        except _READ_ERRORS as e:
            raise CacheError(
                f"{self.what} {self.path} is corrupt or truncated: {e}; save the image again"
            ) from e

    def _check_member(self, ti: tarfile.TarInfo, name: str) -> None:
        """Refuse the sizes no saved image has, from the header alone."""
        if ti.issparse():
            # A sparse header may claim any size, its bytes all made up: docker/podman save and
            # skopeo never write one.
            raise UnsafeArchiveError(
                f"{self.what} {self.path}: member {quote(name)} is a sparse file, which no image archive "
                "holds; refusing the archive"
            )
        if not self.compressed and ti.offset_data + ti.size > self._size:
            raise CacheError(
                f"{self.what} {self.path}: member {quote(name)} claims {ti.size} bytes, more than the "
                f"archive's {self._size}; it is truncated or forged: save the image again"
            )

    def __contains__(self, name: str) -> bool:
        try:
            return self.resolve(name) in self._files
        except (CacheError, UnsafeArchiveError):
            return False

    def resolve(self, name: str) -> str:
        """The regular member ``name`` stands for, following links (which stay inside the archive)."""
        name = safe_name(name)
        for _ in range(16):
            if name not in self._links:
                return name
            name = self._links[name]
        raise UnsafeArchiveError(f"{self.what} {self.path}: member {quote(name)} is part of a symlink loop")

    def info(self, name: str) -> tarfile.TarInfo:
        ti = self._files.get(name)
        if ti is None:
            raise CacheError(f"{self.what} {self.path} has no member {quote(name)}; it is incomplete")
        return ti

    def size(self, name: str) -> int:
        return self.info(name).size

    def offset(self, name: str) -> int:
        return self.info(name).offset_data

    def open(self, name: str) -> BinaryIO:
        """The member's bytes as stored (unverified); the caller closes it."""
        ti = self.info(name)
        what = f"member {quote(name)} of {self.what} {self.path}"
        if not self.compressed and not ti.issparse():
            return buffered(_Window(self._fh.fileno(), ti.offset_data, ti.size, what))
        assert self._tf is not None
        src = self._tf.extractfile(ti)
        assert src is not None
        return buffered(_Guarded(src, what))

    def read(self, name: str, limit: int = SMALL_LIMIT) -> bytes:
        if name in self._kept:
            return self._kept[name]
        size = self.size(name)
        if size > limit:
            raise CacheError(
                f"member {quote(name)} of {self.what} {self.path} is {size} bytes, too large for what it "
                "should be (a manifest, index or config); the archive is not what it claims"
            )
        with self.open(name) as fh:
            data = fh.read()
        if len(data) != size:
            raise CacheError(f"member {quote(name)} of {self.what} {self.path} is truncated; save it again")
        return data

    def head(self, name: str) -> bytes:
        """The first bytes of a member, enough to sniff its compression."""
        if name not in self._heads:
            ti = self.info(name)
            if not self.compressed and not ti.issparse():
                self._heads[name] = os.pread(self._fh.fileno(), min(MAGIC_LEN, ti.size), ti.offset_data)
            else:
                with self.open(name) as fh:
                    self._heads[name] = fh.read(MAGIC_LEN)
        return self._heads[name]

    def digest(self, name: str) -> str:
        """sha256 of the member as stored, hashed once."""
        if name not in self._digests:
            with self.open(name) as fh:
                self._digests[name] = sha256_chunks(iter(lambda: fh.read(CHUNK), b""))[0]
        return self._digests[name]

    def close(self) -> None:
        if self._tf is not None:
            self._tf.close()
        self._fh.close()


# -- writing --------------------------------------------------------------------------------


def tar_header(name: str, size: int, *, directory: bool = False) -> bytes:
    """A fixed ustar header: mtime 0, uid/gid 0, no user names, 0644 files and 0755 directories."""
    ti = tarfile.TarInfo(name)
    ti.size = 0 if directory else size
    ti.mtime = _MEMBER_MTIME
    ti.mode = _DIR_MODE if directory else _MEMBER_MODE
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return ti.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def tar_padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def tar_end() -> bytes:
    return b"\0" * (2 * BLOCK)


def layer_chunks(layer: Layer) -> Iterator[bytes]:
    """A layer's bytes as stored: from its verified file when it has one, else verified as read.

    Exactly ``size()`` bytes or IntegrityError, before the caller writes
    more: a consumer of a tar stream then sees it truncated, never framed
    wrong.
    """
    size = layer.size()
    local = layer.local_path()
    src: BinaryIO = open(local, "rb") if local is not None else layer.compressed()  # noqa: SIM115
    sent = 0
    with contextlib.closing(src):
        while chunk := src.read(CHUNK):
            sent += len(chunk)
            if sent > size:
                raise IntegrityError(
                    f"layer blob {layer.digest()} is longer than the {size} bytes its descriptor says; "
                    "fetch the image again",
                    expected=layer.digest(),
                )
            yield chunk
    if sent != size:
        raise IntegrityError(
            f"layer blob {layer.digest()} shrank while being streamed ({sent} of {size} bytes); "
            "fetch the image again",
            expected=layer.digest(),
        )


def layer_compression(layer: Layer) -> Compression:
    """What a layer's bytes are: sniffed by sources that can, else what its media type says."""
    sniffed = getattr(layer, "compression", None)
    return sniffed() if sniffed is not None else from_media_type(layer.media_type())


class _HashingWriter:
    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def write_tar_stream(chunks: Iterable[bytes], dest: Path, *, compress: bool = False) -> str:
    """Write a tar stream to ``dest`` atomically (temp file + rename); return the file's sha256.

    ``compress`` gzips it reproducibly (mtime 0, no file name in the
    header): the same stream gives the same file on the same zlib.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest, mode=0o644) as fh:
        out = _HashingWriter(fh)
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
                for chunk in chunks:
                    gz.write(chunk)
        else:
            for chunk in chunks:
                out.write(chunk)
    return out.digest()


class ArchiveImage:
    """An image read from an archive file it keeps open: close it, or use it in a ``with``."""

    _tar: TarMembers

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

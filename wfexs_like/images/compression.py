"""Layer compression, decided in one place.

Media types lie (docker-archive members named ``.tar.gz`` hold plain tars,
and a registry may label a gzip layer ``…tar``), magic bytes don't. Every
reader of layer bytes (the ``Layer`` base, the SIF builder's rootfs, the
docker-archive reader) asks this module, so a new format is supported, or
refused with the same message, everywhere at once.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from typing import IO, Any, Literal

from ..errors import ContainerFactoryException

Compression = Literal["gzip", "zstd", "bzip2", "xz", "none"]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
#: How many leading bytes ``sniff`` needs.
MAGIC_LEN = 6


def sniff(head: bytes) -> Compression:
    """The compression of a stream from its first ``MAGIC_LEN`` bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    return "none"


def from_media_type(media_type: str) -> Compression:
    """What a media type claims; ``sniff`` has the last word when bytes are at hand."""
    mt = media_type.lower()
    if mt.endswith(("gzip", "+gzip")) or mt.endswith(".tar.gzip"):
        return "gzip"
    if mt.endswith(("zstd", "+zstd")):
        return "zstd"
    return "none"


class UnsupportedCompressionError(ContainerFactoryException):
    """A layer compressed with something this tool cannot decode (zstd)."""


def decompressing_reader(raw: IO[bytes], what: str) -> IO[bytes]:
    """Wrap ``raw`` (positioned at its start, seekable or peekable) so it reads as a plain tar.

    ``what`` names the layer in the error a zstd layer gets.
    """
    head = _peek(raw)
    kind = sniff(head)
    if kind == "zstd":
        raise UnsupportedCompressionError(
            f"{what} is zstd-compressed, which this tool cannot decode yet; pull a gzip variant "
            "of the image (most registries serve one) or deploy it with Podman"
        )
    if kind == "gzip":
        return io.BufferedReader(_Gunzip(raw), buffer_size=INFLATE_OUT)  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")  # type: ignore[return-value]
    return raw


#: Compressed bytes read per step, and the most a step inflates to.
INFLATE_IN = 1 << 20
INFLATE_OUT = 1 << 20


class _Gunzip(io.RawIOBase):
    """gzip members one after another, as ``gzip.GzipFile`` reads them, inflated by ``zlib`` directly.

    Why not ``GzipFile``: it reads 8 KiB at a time and computes the CRC in
    Python-level calls, which cost a tenth of a SIF build's own CPU on a
    base image, while the squashfs compressor wants both cores. ``zlib``
    with a gzip window checks each member's CRC and length itself. The same
    errors come out: a stream cut short is ``EOFError``, bytes after a
    member that are neither zeros nor another member are ``BadGzipFile``,
    damage is ``zlib.error``.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._inflater = zlib.decompressobj(31)
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._done:
            data = self._pending or self._raw.read(INFLATE_IN)
            self._pending = b""
            if not data:
                if not self._inflater.eof:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                self._done = True
                break
            if self._inflater.eof:  # between members: zero padding, another member, or garbage
                data = data.lstrip(b"\0")
                if not data:
                    continue
                if not data.startswith(GZIP_MAGIC):
                    raise gzip.BadGzipFile(f"Not a gzipped file ({data[:2]!r})")
                self._inflater = zlib.decompressobj(31)
            out = self._inflater.decompress(data, len(b))
            self._pending = self._inflater.unconsumed_tail or self._inflater.unused_data
            if out:
                b[: len(out)] = out
                return len(out)
        return 0


def _peek(raw: IO[bytes]) -> bytes:
    peek = getattr(raw, "peek", None)
    if peek is not None:
        return bytes(peek(MAGIC_LEN)[:MAGIC_LEN])
    head = raw.read(MAGIC_LEN)
    raw.seek(0)
    return head

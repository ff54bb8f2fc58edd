"""Layer compression, decided in one place.

Media types lie (docker-archive members named ``.tar.gz`` hold plain tars,
and a registry may label a gzip layer ``…tar``), magic bytes don't. Every
reader of layer bytes (the ``Layer`` base, the SIF builder's rootfs, the
docker-archive reader) asks this module, so a new format is supported, or
refused with the same message, everywhere at once.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Iterator
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


#: Compressed bytes read per step, and the most one inflate call makes.
INFLATE_IN = 1 << 20
INFLATE_OUT = 1 << 20


class GzipMembers:
    """gzip members fed in pieces, inflated as they come: what ``gzip.GzipFile`` reads, pushed.

    Members may follow one another, with zero padding between and after
    them (``docker save`` pads). ``zlib`` with a gzip window checks each
    member's CRC and length; damage raises ``zlib.error``. No call makes
    more than ``INFLATE_OUT`` bytes at once, so a small bomb of a chunk never
    becomes a huge buffer. ``complete`` says whether the input so far ended
    exactly at the end of a member (else it was cut short).
    """

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(31)
        self._between = False

    @property
    def complete(self) -> bool:
        return self._between

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self._between:
                data = data.lstrip(b"\0")
                if not data:
                    return
                self._inflater = zlib.decompressobj(31)
                self._between = False
            out = self._inflater.decompress(data, INFLATE_OUT)
            if out:
                yield out
            if self._inflater.eof:
                data = self._inflater.unused_data
                self._between = True
                continue
            data = self._inflater.unconsumed_tail
            if not data and len(out) < INFLATE_OUT:
                return  # a full output may leave more inside zlib: ask again, with no new input


class _Gunzip(io.RawIOBase):
    """``GzipMembers`` pulled: a plain stream of what ``raw``'s gzip members hold.

    Why not ``gzip.GzipFile``: it reads 8 KiB at a time and computes the CRC
    in Python-level calls, which cost a tenth of a SIF build's own CPU on a
    base image, while the squashfs compressor wants both cores. The same
    errors come out for a stream cut short (``EOFError``); damage, trailing
    garbage included, is ``zlib.error``.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._members = GzipMembers()
        self._out: Iterator[bytes] = iter(())
        self._left = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._left:
            chunk = next(self._out, None)
            if chunk is not None:
                self._left = memoryview(chunk)
                break
            if self._done:
                return 0
            data = self._raw.read(INFLATE_IN)
            if not data:
                self._done = True
                if not self._members.complete:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                return 0
            self._out = self._members.feed(data)
        n = min(len(b), len(self._left))
        b[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def _peek(raw: IO[bytes]) -> bytes:
    peek = getattr(raw, "peek", None)
    if peek is not None:
        return bytes(peek(MAGIC_LEN)[:MAGIC_LEN])
    head = raw.read(MAGIC_LEN)
    raw.seek(0)
    return head

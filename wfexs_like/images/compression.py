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
import lzma
from typing import IO, Literal

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
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")  # type: ignore[return-value]
    return raw


def _peek(raw: IO[bytes]) -> bytes:
    peek = getattr(raw, "peek", None)
    if peek is not None:
        return bytes(peek(MAGIC_LEN)[:MAGIC_LEN])
    head = raw.read(MAGIC_LEN)
    raw.seek(0)
    return head

"""oci-archive (a tar of an OCI image layout, as skopeo's ``oci-archive:`` writes) as source and sink.

An oci-archive is an OCI layout in one file: the form to hand an image to
another machine or tool without a registry (``skopeo copy oci-archive:…``,
``podman load``, ``ctr import``). Reading it is reading a layout through
the safe random-access tar reader (nothing unpacked; member names and links
checked first); writing it is the layout's own ``index.json`` and blobs
streamed into a deterministic tar (sorted members, fixed headers), so the
same image with the same ref name is the same file on every machine, and
its index has the same fingerprint as the layout directory's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..digests import sha256_bytes, split_digest
from ..errors import CacheError, IntegrityError
from .archive import (
    SMALL_LIMIT,
    ArchiveImage,
    TarMembers,
    layer_chunks,
    tar_end,
    tar_header,
    tar_padding,
    write_tar_stream,
)
from .base import Image, Layer, LoadedImage
from .layout import (
    INDEX_FILE,
    OCI_LAYOUT_FILE,
    layout_index_bytes,
    oci_layout_bytes,
    parse_index,
    select_image,
)
from .manifest import Descriptor, Platform


def _member_name(digest: str) -> str:
    algo, hexd = split_digest(digest)  # refuses anything that could escape the archive
    return f"blobs/{algo}/{hexd}"


class OciArchiveImage(ArchiveImage, LoadedImage):
    """The one image an oci-archive holds (chosen by ref name and platform, as for a layout)."""

    def __init__(self, path: Path, *, ref_name: str | None = None, platform: Platform | None = None) -> None:
        self.path = Path(path)
        self._tar = TarMembers(self.path, "oci-archive")
        # Sniffing a blob of a compressed archive would mean decompressing up to it.
        self.SNIFF_BLOBS = not self._tar.compressed
        try:
            if INDEX_FILE not in self._tar:
                raise CacheError(
                    f"oci-archive {self.path} has no {INDEX_FILE}; it is not an OCI archive "
                    "(a docker-archive? read it as one)"
                )
            idx = parse_index(self._tar.read(INDEX_FILE), f"{INDEX_FILE} of oci-archive {self.path}")
            self._digest, self.ref_name = select_image(
                idx, self._read_small, f"oci-archive {self.path}", ref_name=ref_name, platform=platform
            )
            self._raw_manifest = self._read_small(Descriptor("", self._digest, 0))
            self._raw_config = self._read_small(self.manifest().config)
            for layer in self.manifest().layers:
                if _member_name(layer.digest) not in self._tar:
                    raise CacheError(
                        f"oci-archive {self.path} lacks layer blob {layer.digest}; it is incomplete: "
                        "write it again"
                    )
        except BaseException:
            self._tar.close()
            raise

    def _member(self, digest: str) -> str:
        name = self._tar.resolve(_member_name(digest))
        if name not in self._tar:
            raise CacheError(f"oci-archive {self.path} lacks blob {digest}; it is incomplete: write it again")
        return name

    def _read_small(self, desc: Descriptor) -> bytes:
        raw = self._tar.read(self._member(desc.digest), SMALL_LIMIT)
        actual = sha256_bytes(raw)
        if actual != desc.digest:
            raise IntegrityError(
                f"blob {desc.digest} of oci-archive {self.path} does not hash to its name (got {actual}); "
                "the archive was altered: write it again",
                expected=desc.digest,
                actual=actual,
            )
        return raw

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        return self._tar.open(self._member(descriptor.digest))

    def describe(self) -> str:
        return f"image {self._digest} in oci-archive {self.path}"

    def describe_source(self) -> str:
        return f"oci-archive {self.path}"


def iter_oci_archive(image: Image, *, ref_name: str | None = None) -> Iterator[bytes]:
    """Yield the oci-archive of ``image``: members sorted by name, every header fixed.

    Layers come from their verified files or through ``compressed()``,
    which verifies them; wrong bytes raise IntegrityError before the
    end-of-archive marker, so a consumer sees a truncated tar.
    """
    index_raw = layout_index_bytes(image, ref_name)
    layers = image.layers()  # checks the config against the manifest before anything is sent
    blobs: dict[str, bytes | Layer] = {
        _member_name(image.digest()): image.raw_manifest(),
        _member_name(image.config_name()): image.raw_config_file(),
    }
    for layer in layers:
        blobs.setdefault(_member_name(layer.digest()), layer)
    yield tar_header("blobs/", 0, directory=True)
    yield tar_header("blobs/sha256/", 0, directory=True)
    for name in sorted(blobs):
        blob = blobs[name]
        size = len(blob) if isinstance(blob, bytes) else blob.size()
        yield tar_header(name, size)
        if isinstance(blob, bytes):
            yield blob
        else:
            yield from layer_chunks(blob)
        if pad := tar_padding(size):
            yield pad
    for name, data in ((INDEX_FILE, index_raw), (OCI_LAYOUT_FILE, oci_layout_bytes())):
        yield tar_header(name, len(data))
        yield data
        if pad := tar_padding(len(data)):
            yield pad
    yield tar_end()


def write_oci_archive(image: Image, dest: Path, *, ref_name: str | None = None) -> str:
    """Write ``image`` as an oci-archive at ``dest`` atomically; return the file's sha256."""
    return write_tar_stream(iter_oci_archive(image, ref_name=ref_name), dest)

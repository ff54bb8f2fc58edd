"""``copy(src, sink)``: the one way an image goes from where it lives to where it is needed.

Every source speaks ``Image`` and every sink takes one, so there is no
function per pair (store→layout, archive→store, layout→SIF…): a new place
an image lives is one source and/or one sink, and it works with all the
others. Each sink's ``write`` verifies what it reads (``Layer.compressed``
hashes, local files are only linked when already verified) and publishes
atomically, so a corrupt source publishes nothing. The answer is what
identifies the result where it went: a manifest digest, a fingerprint, a
file's sha256 or an engine's image id.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ..digests import sha256_file
from .base import Image
from .blobstore import BlobStore
from .docker_archive import write_docker_archive
from .layout import write_oci_layout
from .oci_archive import write_oci_archive
from .store import write_to_store


class Sink(Protocol):
    def write(self, image: Image) -> str:
        """Put ``image`` here; return what identifies it here."""
        ...


class StoreSink:
    """Into a blob store; answers the manifest digest."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def write(self, image: Image) -> str:
        return write_to_store(image, self.store)


class LayoutSink:
    """An OCI layout directory; answers its fingerprint (``sha256:`` of index.json)."""

    def __init__(self, dest: Path, ref_name: str | None = None) -> None:
        self.dest = Path(dest)
        self.ref_name = ref_name

    def write(self, image: Image) -> str:
        return write_oci_layout(image, self.dest, ref_name=self.ref_name)


class DockerArchiveSink:
    """A docker-archive file (gzipped as a whole with ``compress``); answers the file's sha256."""

    def __init__(self, dest: Path, repo_tags: Sequence[str], compress: bool = False) -> None:
        self.dest = Path(dest)
        self.repo_tags = list(repo_tags)
        self.compress = compress

    def write(self, image: Image) -> str:
        return write_docker_archive(image, self.dest, self.repo_tags, compress=self.compress)


class OciArchiveSink:
    """An oci-archive file; answers the file's sha256."""

    def __init__(self, dest: Path, ref_name: str | None = None) -> None:
        self.dest = Path(dest)
        self.ref_name = ref_name

    def write(self, image: Image) -> str:
        return write_oci_archive(image, self.dest, ref_name=self.ref_name)


class EngineSink:
    """A container engine (anything with ``load(image, tag)`` answering an ``image_id``)."""

    def __init__(self, engine: Any, tag: str) -> None:
        self.engine = engine
        self.tag = tag

    def write(self, image: Image) -> str:
        info = self.engine.load(image, self.tag)
        return str(info.image_id)


class SifSink:
    """A SIF file built from the image's layers; answers the file's sha256."""

    def __init__(self, dest: Path, *, tmp_dir: Path, source: str | None = None) -> None:
        self.dest = Path(dest)
        self.tmp_dir = Path(tmp_dir)
        self.source = source

    def write(self, image: Image) -> str:
        from .sif_build import build_sif  # squashfs tooling: loaded only when a SIF is wanted

        build_sif(image, self.dest, tmp_dir=self.tmp_dir, source=self.source)
        return sha256_file(self.dest)


def copy(src: Image, sink: Sink) -> str:
    """Copy ``src`` into ``sink``; return what identifies it there (see each sink)."""
    return sink.write(src)

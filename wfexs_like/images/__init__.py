"""Every place an image lives, as a source and/or sink of one ``Image`` shape; ``copy`` between any two.

The names load on first use (PEP 562): a re-stage needs the blob store and
the layout writer, not the archive readers or ``copy``'s sinks, and the SIF
builder's tooling loads only when a SIF is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "BaseImage": ".base",
    "BlobLayer": ".base",
    "BlobStore": ".blobstore",
    "Descriptor": ".manifest",
    "DockerArchiveImage": ".docker_archive",
    "DockerArchiveSink": ".copying",
    "EngineSink": ".copying",
    "Image": ".base",
    "Index": ".manifest",
    "Layer": ".base",
    "LayoutImage": ".layout",
    "LayoutSink": ".copying",
    "Manifest": ".manifest",
    "OciArchiveImage": ".oci_archive",
    "OciArchiveSink": ".copying",
    "Platform": ".manifest",
    "SifSink": ".copying",
    "Sink": ".copying",
    "StoreImage": ".store",
    "StoreSink": ".copying",
    "VerifyingReader": ".base",
    "copy": ".copying",
    "docker_archive_digest": ".docker_archive",
    "docker_archive_size": ".docker_archive",
    "iter_docker_archive": ".docker_archive",
    "iter_oci_archive": ".oci_archive",
    "read_oci_layout": ".layout",
    "verify_oci_layout": ".layout",
    "write_docker_archive": ".docker_archive",
    "write_oci_archive": ".oci_archive",
    "write_oci_layout": ".layout",
    "write_to_store": ".store",
}

__all__ = [
    "BaseImage",
    "BlobLayer",
    "BlobStore",
    "Descriptor",
    "DockerArchiveImage",
    "DockerArchiveSink",
    "EngineSink",
    "Image",
    "Index",
    "Layer",
    "LayoutImage",
    "LayoutSink",
    "Manifest",
    "OciArchiveImage",
    "OciArchiveSink",
    "Platform",
    "SifSink",
    "Sink",
    "StoreImage",
    "StoreSink",
    "VerifyingReader",
    "copy",
    "docker_archive_digest",
    "docker_archive_size",
    "iter_docker_archive",
    "iter_oci_archive",
    "read_oci_layout",
    "verify_oci_layout",
    "write_docker_archive",
    "write_oci_archive",
    "write_oci_layout",
    "write_to_store",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .base import BaseImage, BlobLayer, Image, Layer, VerifyingReader
    from .blobstore import BlobStore
    from .copying import (
        DockerArchiveSink,
        EngineSink,
        LayoutSink,
        OciArchiveSink,
        SifSink,
        Sink,
        StoreSink,
        copy,
    )
    from .docker_archive import (
        DockerArchiveImage,
        docker_archive_digest,
        docker_archive_size,
        iter_docker_archive,
        write_docker_archive,
    )
    from .layout import LayoutImage, read_oci_layout, verify_oci_layout, write_oci_layout
    from .manifest import Descriptor, Index, Manifest, Platform
    from .oci_archive import OciArchiveImage, iter_oci_archive, write_oci_archive
    from .store import StoreImage, write_to_store

"""Every place an image lives, as a source and/or sink of one ``Image`` shape; ``copy`` between any two.

Only the standard library (and ``filelock``) is imported here; the SIF
builder's tooling loads when a SIF is asked for.
"""

from __future__ import annotations

from .base import BaseImage, BlobLayer, Image, Layer, VerifyingReader
from .blobstore import BlobStore
from .copy import (
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

"""Injected records: snapshots staged elsewhere (an earlier working dir, WfExS-backend) reused offline.

The reference lets a workflow engine hand back records of containers it
materialized before; their staged snapshots are adopted instead of being
fetched again, and only after they are verified against the record's
``image_signature``. Any snapshot kind is read through the ``Image``
interface: an OCI layout (ours), a docker-archive (WfExS-backend's gzipped
``docker save`` ``.img`` files, fingerprinted ``sha256=<base64>``); a SIF
is a file the Singularity factory adopts as it is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import ImageCache
from ..digests import normalize_fingerprint, sha256_file
from ..errors import ContainerFactoryException
from ..model import Container, ContainerTaggedName

if TYPE_CHECKING:
    from .base import ContainerFactory

logger = logging.getLogger(__name__)

_SIF_MAGIC_OFFSET = 32  # after the launch script


def snapshot_kind_of(path: Path) -> str | None:
    """What a staged snapshot is, from its shape and first bytes: oci-layout, sif, docker-archive."""
    if path.is_dir():
        return "oci-layout" if (path / "index.json").is_file() else None
    from ..images.sif import MAGIC as SIF_MAGIC  # only for an injected file, not a re-stage

    try:
        with open(path, "rb") as fh:
            head = fh.read(_SIF_MAGIC_OFFSET + len(SIF_MAGIC))
    except OSError:
        return None
    if head[_SIF_MAGIC_OFFSET:] == SIF_MAGIC:
        return "sif"
    if head[:2] == b"\x1f\x8b" or head[:6] == b"\xfd7zXZ\x00" or _is_tar(path):
        return "docker-archive"
    return None


def _is_tar(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(257)
            return fh.read(5) == b"ustar"
    except OSError:
        return False


def has_staged_snapshot(tag: ContainerTaggedName) -> bool:
    """Whether a record points at a staged snapshot that may be adopted: a stat, no hashing.

    Planning (which tags to pull together) asks this; the adoption itself
    verifies the snapshot once, later.
    """
    return (
        isinstance(tag, Container)
        and tag.localPath is not None
        and bool(tag.image_signature)
        and Path(tag.localPath).exists()
    )


def usable_snapshot(
    container: Container, cache: ImageCache, kinds: Collection[str] = ("oci-layout", "docker-archive", "sif")
) -> tuple[Path, str] | None:
    """(path, kind) of the record's staged snapshot when it is one of ``kinds`` and matches its
    image_signature; a snapshot of another kind is not hashed at all."""
    if not has_staged_snapshot(container):
        return None
    assert container.localPath is not None and container.image_signature is not None
    path = Path(container.localPath)
    kind = snapshot_kind_of(path)
    if kind is None or kind not in kinds:
        return None
    try:
        fingerprint = normalize_fingerprint(container.image_signature)
    except ContainerFactoryException:
        return None
    if kind == "oci-layout":
        ok = not cache.verify_snapshot(path, fingerprint)
    else:
        ok = sha256_file(path) == fingerprint
    if not ok:
        logger.warning("injected snapshot %s does not match its record; not reusing it", path)
        return None
    return path, kind


def injected_image(container: Container, cache: ImageCache) -> tuple[str, dict[str, Any]] | None:
    """Adopt an injected image snapshot into the store; (manifest digest, source) or None.

    SIF snapshots are not images in the OCI sense and return None here.
    """
    found = usable_snapshot(container, cache, kinds=("oci-layout", "docker-archive"))
    if found is None:
        return None
    path, kind = found
    from ..images.docker_archive import DockerArchiveImage
    from ..images.layout import LayoutImage
    from ..images.store import write_to_store

    image = LayoutImage(path, trust=cache.store) if kind == "oci-layout" else DockerArchiveImage(path)
    digest = write_to_store(image, cache.store)
    return digest, {"source": "injected", "from": str(path), "snapshot_kind": kind}


def plan(
    factory: ContainerFactory, tags: Sequence[ContainerTaggedName], injectables: Sequence[Container]
) -> list[ContainerTaggedName]:
    """The accepted tags, each replaced by the injectable record of the same canonical tag, if any."""
    by_name: dict[str, Container] = {}
    for c in injectables:
        if not factory.AcceptsContainer(c):
            continue
        for name in (c.taggedName, c.origTaggedName):
            with contextlib.suppress(ContainerFactoryException):
                if name:
                    by_name.setdefault(
                        factory.generateCanonicalTag(ContainerTaggedName(name, c.type, c.registries)), c
                    )
    planned: list[ContainerTaggedName] = []
    for tag in tags:
        if not factory.AcceptsContainer(tag):
            continue
        try:
            canonical: str | None = factory.generateCanonicalTag(tag)
        except ContainerFactoryException:
            canonical = None
        planned.append(by_name.get(canonical, tag) if canonical else tag)
    return planned

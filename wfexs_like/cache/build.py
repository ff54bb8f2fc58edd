"""Turn an image in the blob store into a cached snapshot of the kind a workflow needs.

Factories decide *which* snapshot kind a tag gets (policy); the bytes are
made here, from any ``Image``, through the sinks of ``images.copying``:

- ``oci-layout``: a layout dir whose blobs are hard links into the store
  (Podman loads it as it is; Docker gets a docker-archive streamed from it);
- ``docker-archive``: a reproducible gzipped ``docker save`` tarball, the
  ``.img`` snapshot WfExS-backend stages and loads, with a sidecar WfExS reads;
- ``sif``: a SIF built natively (layers merged, whiteouts applied, squashfs).

Every snapshot is built in a private work dir under the cache's ``tmp/`` and
published by ``ImageCache.put`` (rename under a lock), so a killed build
leaves nothing under a final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..digests import sha256_bytes, sha256_file, wfexs_fingerprint
from ..errors import DiskFullError, IntegrityError
from ..fsutil import reword_disk_full
from ..images.blobstore import FULL_CACHE_HINT
from ..model import ImageMetadata
from .names import SnapshotKind
from .snapshots import CacheHit, ImageCache
from .usage import claimed_temp_dir

if TYPE_CHECKING:
    from ..images.base import Image

# ``images.copying`` (every format's writer) and ``images.sif`` load inside the functions that
# build: a warm re-stage, the common case, builds nothing.


@contextlib.contextmanager
def work_dir(cache: ImageCache, prefix: str) -> Iterator[Path]:
    """A private directory inside the cache (same filesystem: publishing is a rename)."""
    path, claim = claimed_temp_dir(cache.store.tmp_dir, prefix)  # `cache gc` sweeps it once we are gone
    try:
        yield path
    except DiskFullError as e:
        shutil.rmtree(path, ignore_errors=True)  # first: the message then reports the space really free
        raise reword_disk_full(e, cache.store.tmp_dir, hint=FULL_CACHE_HINT) from e
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(claim)


def image_metadata(
    image: Image,
    reference: str,
    kind: SnapshotKind,
    *,
    registry: str | None,
    repository: str | None,
    source: Mapping[str, Any],
    size: int | None = None,
) -> ImageMetadata:
    plat = image.platform()
    return ImageMetadata(
        tagged_name=reference,
        manifest_digest=image.digest(),
        image_id=image.config_name(),
        image_signature="",
        architecture=plat.architecture,
        os=plat.os,
        variant=plat.variant,
        registry=registry,
        repository=repository,
        size=image.size() if size is None else size,
        layers=tuple(layer.digest() for layer in image.layers()),
        media_type=image.media_type(),
        snapshot_kind=kind,
        extra=dict(source),
    )


def build_snapshot(
    cache: ImageCache,
    reference: str,
    kind: SnapshotKind,
    image: Image,
    *,
    platform: str | None,
    name: str,
    registry: str | None = None,
    repository: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> CacheHit:
    """Build the ``kind`` snapshot of ``image`` and cache it under ``reference``.

    ``name`` is the image name the snapshot carries (the layout's ref name,
    the archive's repo tag, the SIF definition's ``from:``).
    """
    from ..images.copying import DockerArchiveSink, LayoutSink, SifSink, copy

    with work_dir(cache, f"{kind}-") as work:
        # A file snapshot's digest comes from the one pass that wrote (or read back) it; the file
        # then stays in this process's own work dir, so it is not hashed again to be cached.
        hashed: str | None = None
        if kind == "oci-layout":
            snapshot = work / "layout"
            copy(image, LayoutSink(snapshot, ref_name=name))
            size = None
        elif kind == "docker-archive":
            snapshot = work / "image.img"
            hashed = copy(image, DockerArchiveSink(snapshot, [name], compress=True))
            size = snapshot.stat().st_size
        else:
            snapshot = work / "image.sif"
            hashed = copy(image, SifSink(snapshot, tmp_dir=work, source=name))
            size = snapshot.stat().st_size
        extra = {**(source or {}), **({"builder": "wfexs-like native"} if kind == "sif" else {})}
        served = cache.served_by([image.digest(), image.config_name(), *(x.digest() for x in image.layers())])
        if served:  # which tiers (library dirs, the remote cache) gave this process the image's bytes
            extra["served_by"] = served
        meta = image_metadata(
            image, reference, kind, registry=registry, repository=repository, source=extra, size=size
        ).to_json()
        if kind == "docker-archive":
            meta.update(_wfexs_sidecar(image, hashed, name))
        hit = cache.put(reference, kind, snapshot, meta, platform=platform, move=True, hashed=hashed)
    if getattr(image, "store", None) is cache.store:
        # A ``StoreImage`` vouched for each blob (strict check) as it was linked; the links, and the
        # work dir's removal, changed their ctime: re-record it, or the next reuse re-hashes them.
        cache.store.relinked(image.blob_digests())
    return hit


def _wfexs_sidecar(image: Image, archive_digest: str | None, name: str) -> dict[str, Any]:
    """The keys WfExS-backend's docker factory reads from a staged ``.img`` sidecar."""
    assert archive_digest is not None, "a docker-archive sink answers its file's sha256"
    plat = image.platform()
    manifests = [
        {
            "Id": image.config_name(),
            "RepoTags": [name],
            "RepoDigests": [],
            "Architecture": plat.architecture,
            "Os": plat.os,
            **({"Variant": plat.variant} if plat.variant else {}),
        }
    ]
    trimmed = json.dumps(manifests, sort_keys=True, separators=(",", ":")).encode()
    return {
        "image_signature": wfexs_fingerprint(archive_digest),
        "manifests_signature": wfexs_fingerprint(sha256_bytes(trimmed)),
        "manifests": manifests,
    }


def put_sif_file(
    cache: ImageCache,
    reference: str,
    path: Path,
    *,
    platform: str | None,
    source: Mapping[str, Any],
    move: bool,
    registry: str | None = None,
    repository: str | None = None,
) -> CacheHit:
    """Cache an existing SIF file (downloaded, pulled by Apptainer, or local) after checking it is one."""
    from ..images.sif import read_sif

    try:
        info = read_sif(path)
    except Exception as e:  # any parse failure means "not a SIF we can trust"
        raise IntegrityError(f"{reference}: {path} is not a valid SIF file ({e})") from e
    part = info.primary_partition()
    digest = cache.stored_digest(path) or sha256_file(path)
    meta = ImageMetadata(
        tagged_name=reference,
        manifest_digest=digest,
        image_id=digest,
        image_signature="",
        architecture=(part.arch if part else None) or info.arch or None,
        os="linux",
        registry=registry,
        repository=repository,
        size=path.stat().st_size,
        snapshot_kind="sif",
        extra=dict(source),
    )
    return cache.put(reference, "sif", path, meta, platform=platform, move=move)

"""What WfExS-backend stages for a docker tag, made without WfExS: a gzipped ``docker save`` ``.img``.

WfExS-backend 1.0.9 saves an image with ``docker save | gzip`` as
``<name>.img`` (Nextflow's naming), writes a sidecar with ``image_id`` and
``image_signature`` (``sha256=<base64>`` of the file) and records absolute
paths. The archive here is composed by our own writer with compression on,
which ``docker load`` reads exactly as it reads ``docker save | gzip``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.support.imagegen import BuiltImage
from wfexs_like.digests import sha256_file
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.docker_archive import write_docker_archive
from wfexs_like.images.store import StoreImage
from wfexs_like.model import Container, ContainerType


def wfexs_record(tmp_path: Path, src_store: BlobStore, img: BuiltImage, tag: str) -> Container:
    """What WfExS-backend 1.0.9 stages for a docker tag: `docker save | gzip` as <name>.img."""
    wd = tmp_path / "wfexs-wd" / "containers"
    wd.mkdir(parents=True)
    archive = wd / (tag.replace("/", "-").replace(":", "-") + ".img")
    write_docker_archive(StoreImage(src_store, img.digest), archive, [tag], compress=True)
    digest = sha256_file(archive).split(":", 1)[1]
    b64 = base64.b64encode(bytes.fromhex(digest)).decode()
    meta = archive.with_name(archive.name + "_meta.json")
    meta.write_text(json.dumps({"image_id": img.image_id, "image_signature": f"sha256={b64}"}))
    return Container(
        origTaggedName=tag,
        type=ContainerType.Docker,
        taggedName=tag,
        localPath=archive,
        signature=img.image_id,
        fingerprint=f"{tag.rsplit(':', 1)[0]}@{img.digest}",
        metadataLocalPath=meta,
        source_type=ContainerType.Docker,
        image_signature=f"sha256={b64}",
    )

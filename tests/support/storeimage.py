"""Turn layer files written by ``tests.support.layers`` into an ``Image`` in a blob store.

The SIF builder and ``apply_layers`` take ``Image`` / ``Layer`` objects, while
the tests that probe them need layers no honest image builder would write
(``../evil``, a truncated gzip, zstd). This puts such files, byte for byte,
into a ``BlobStore`` under an OCI manifest whose config pins their diff ids,
so every test runs through the same verifying readers production uses.
"""

from __future__ import annotations

import copy
import gzip
import json
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wfexs_like.digests import sha256_bytes
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.manifest import OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST
from wfexs_like.images.store import StoreImage

_GZIP_MAGIC = b"\x1f\x8b"


def _diff_id(blob: bytes) -> str:
    """The sha256 of the uncompressed tar.

    A blob that does not decompress (a test's deliberately broken layer) gets
    its own digest: the build fails on the broken bytes before any diff id
    is compared.
    """
    if blob.startswith(_GZIP_MAGIC):
        try:
            return sha256_bytes(gzip.decompress(blob))
        except (EOFError, OSError, zlib.error):
            pass
    return sha256_bytes(blob)


def store_image(store: BlobStore, layers: Sequence[Path], config: Mapping[str, Any]) -> StoreImage:
    """Store ``layers`` (lowest first) and ``config`` with an OCI manifest; return the image.

    The config's ``rootfs.diff_ids`` are filled in from the layers. Layers
    starting with the gzip magic are labelled ``tar+gzip``, the rest ``tar``
    (readers sniff the bytes anyway). Same inputs, same manifest digest.
    """
    cfg = copy.deepcopy(dict(config))
    descriptors = []
    diff_ids = []
    for path in layers:
        blob = Path(path).read_bytes()
        digest = store.put_bytes(blob)
        media_type = OCI_LAYER_GZIP if blob.startswith(_GZIP_MAGIC) else OCI_LAYER
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(blob)})
        diff_ids.append(_diff_id(blob))
    cfg["rootfs"] = {**(cfg.get("rootfs") or {"type": "layers"}), "diff_ids": diff_ids}
    raw_config = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": store.put_bytes(raw_config), "size": len(raw_config)},
        "layers": descriptors,
    }
    digest = store.put_bytes(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    return StoreImage(store, digest)

"""A trusted layer's uncompressed bytes are hashed against its diff id once, then remembered.

What a compressed blob decompresses to is fixed by its bytes, so a SIF
build or an engine load of a layer the store vouches for need not hash the
uncompressed stream again once a full read has matched the config's diff
id (``BlobStore.diff_id_checked``). The record is only believed for the
diff id it names: a config that names another one is checked in full, and
a config that lies fails as it always did, without being remembered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.imagegen import build_image
from wfexs_like.cache.garbage import collect_garbage
from wfexs_like.cache.snapshots import ImageCache
from wfexs_like.digests import sha256_bytes
from wfexs_like.errors import IntegrityError
from wfexs_like.images.base import Layer
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.manifest import OCI_CONFIG, OCI_MANIFEST
from wfexs_like.images.store import StoreImage

WRONG = sha256_bytes(b"not what the layer holds")


def _read_all(layer: Layer) -> int:
    n = 0
    with layer.uncompressed() as fh:
        while chunk := fh.read(1 << 16):
            n += len(chunk)
    return n


def _lying_image(store: BlobStore, manifest_digest: str, diff_id: str) -> str:
    """The same layer blob under a config that names ``diff_id``: an image published broken."""
    manifest = json.loads(store.path(manifest_digest).read_bytes())
    config = json.loads(store.path(manifest["config"]["digest"]).read_bytes())
    config["rootfs"]["diff_ids"] = [diff_id]
    raw_config = json.dumps(config, sort_keys=True).encode()
    manifest["config"] = {
        "mediaType": OCI_CONFIG,
        "digest": store.put_bytes(raw_config),
        "size": len(raw_config),
    }
    manifest["mediaType"] = OCI_MANIFEST
    return store.put_bytes(json.dumps(manifest, sort_keys=True).encode())


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "cache")


def test_a_full_read_is_remembered_and_a_lie_is_not(store: BlobStore) -> None:
    built = build_image(store, [{"etc/data": b"x" * 200_000}])
    (layer,) = StoreImage(store, built.digest).layers()
    assert not store.diff_id_checked(layer.digest(), layer.diff_id())

    assert _read_all(layer) > 200_000  # the whole tar, its 200 kB member included
    assert store.diff_id_checked(layer.digest(), layer.diff_id())

    # Another config naming another diff id for the same blob is checked in full: it fails, and the
    # record of what the bytes really are stays.
    (liar,) = StoreImage(store, _lying_image(store, built.digest, WRONG)).layers()
    with pytest.raises(IntegrityError, match="diff id"):
        _read_all(liar)
    assert store.diff_id_checked(layer.digest(), layer.diff_id())
    assert not store.diff_id_checked(layer.digest(), WRONG)


def test_the_record_is_what_spares_the_hash(store: BlobStore) -> None:
    """A record is believed for the diff id it names (so the read does not hash), and only for it."""
    built = build_image(store, [{"etc/data": b"y" * 50_000}])
    (layer,) = StoreImage(store, built.digest).layers()
    (liar,) = StoreImage(store, _lying_image(store, built.digest, WRONG)).layers()

    store.record_diff_id(layer.digest(), WRONG)  # as if the lie had been verified once
    _read_all(liar)  # believed: no hash of the uncompressed bytes, so no error

    _read_all(layer)  # names another diff id: hashed in full, matches, and re-recorded
    assert store.diff_id_checked(layer.digest(), layer.diff_id())
    with pytest.raises(IntegrityError, match="diff id"):
        _read_all(liar)


def test_a_torn_record_only_costs_a_hash(store: BlobStore) -> None:
    built = build_image(store, [{"etc/data": b"z" * 10_000}])
    (layer,) = StoreImage(store, built.digest).layers()
    _read_all(layer)
    record = store.diff_ids_dir / layer.digest().split(":", 1)[1]
    record.write_bytes(b"sha256:12")
    assert not store.diff_id_checked(layer.digest(), layer.diff_id())
    _read_all(layer)
    assert store.diff_id_checked(layer.digest(), layer.diff_id())


def test_a_read_only_store_records_nothing(store: BlobStore) -> None:
    built = build_image(store, [{"etc/data": b"r" * 10_000}])
    (layer,) = StoreImage(BlobStore(store.root, readonly=True), built.digest).layers()
    _read_all(layer)
    assert not store.diff_ids_dir.exists()


def test_gc_removes_the_record_of_a_removed_blob(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    built = build_image(cache.store, [{"etc/data": b"g" * 10_000}])
    (layer,) = StoreImage(cache.store, built.digest).layers()
    _read_all(layer)
    record = cache.store.diff_ids_dir / layer.digest().split(":", 1)[1]
    assert record.is_file()
    cache.store.remove(layer.digest())
    collect_garbage(cache, now=time.time() + 86_400 * 30)
    assert not record.exists()

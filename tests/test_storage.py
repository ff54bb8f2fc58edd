"""The storage backends and the tiers, against a real SeaweedFS S3 gateway and real directories."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.seaweed import RunningS3
from wfexs_like.digests import sha256_bytes
from wfexs_like.errors import IntegrityError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.storage import DirBackend, StorageError, TieredBlobStore, Tiers, blob_key
from wfexs_like.storage.s3 import S3Backend, parse_s3_url


def _blob(n: int, seed: int = 0) -> bytes:
    return (bytes([seed % 251]) + os.urandom(16)) * (n // 17) + b"x" * (n % 17)


# -- directories ---------------------------------------------------------------------------------
def test_dir_backend_publishes_only_whole_verified_files(tmp_path: Path) -> None:
    backend = DirBackend(tmp_path / "lib", writable=True)
    data = _blob(5000)
    key = blob_key(sha256_bytes(data))
    backend.put(key, io.BytesIO(data), digest=sha256_bytes(data), size=len(data))
    assert backend.exists(key) and backend.size(key) == len(data)
    with backend.open(key, offset=100) as fh:
        assert fh.read() == data[100:]
    bad_key = blob_key(sha256_bytes(b"other"))
    with pytest.raises(IntegrityError, match="hash"):
        backend.put(bad_key, io.BytesIO(data), digest=sha256_bytes(b"other"))
    assert not backend.exists(bad_key)
    assert sorted(backend.list("blobs/")) == [key], "no temporary file is listed or left behind"
    assert [p.name for p in (tmp_path / "lib/blobs/sha256").iterdir()] == [key.rsplit("/", 1)[1]]


def test_read_only_library_refuses_writes_and_keys_cannot_escape(tmp_path: Path) -> None:
    lib = DirBackend(tmp_path)
    with pytest.raises(StorageError, match="read-only"):
        lib.put("blobs/sha256/" + "0" * 64, io.BytesIO(b""))
    for key in ("../x", "/etc/passwd", "blobs/../../x", ""):
        with pytest.raises(StorageError, match="invalid storage key"):
            lib.exists(key)


# -- S3 ------------------------------------------------------------------------------------------
def test_parse_s3_url() -> None:
    loc = parse_s3_url("s3://bucket/some/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1")
    assert (loc.bucket, loc.prefix, loc.endpoint, loc.region) == (
        "bucket",
        "some/prefix",
        "http://127.0.0.1:9000",
        "eu-west-1",
    )
    with pytest.raises(StorageError, match="s3://BUCKET/PREFIX"):
        parse_s3_url("http://bucket/prefix")
    with pytest.raises(StorageError, match="unknown option"):
        parse_s3_url("s3://bucket/p?endpont=x")


def test_s3_small_and_multipart_uploads_are_verified_and_ranged(
    s3_env: RunningS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wfexs_like.storage.s3 as s3mod

    monkeypatch.setattr(s3mod, "PART_SIZE", 5 << 20)  # S3's smallest part: a 12 MB blob takes 3 parts
    prefix = s3_env.new_prefix()
    backend = S3Backend(s3_env.url(prefix))
    for data in (_blob(3000), _blob(12 << 20, 7)):
        digest = sha256_bytes(data)
        key = blob_key(digest)
        assert not backend.exists(key)
        backend.put(key, io.BytesIO(data), digest=digest, size=len(data))
        assert backend.size(key) == len(data)
        with backend.open(key, offset=len(data) - 10) as fh:
            assert fh.read() == data[-10:]
    assert all(k.startswith(f"{prefix}/blobs/sha256/") for k in s3_env.keys(prefix))
    assert len(list(backend.list("blobs/"))) == 2


def test_s3_upload_whose_bytes_do_not_match_leaves_no_object(
    s3_env: RunningS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wfexs_like.storage.s3 as s3mod

    monkeypatch.setattr(s3mod, "PART_SIZE", 5 << 20)
    prefix = s3_env.new_prefix()
    backend = S3Backend(s3_env.url(prefix))
    wrong = sha256_bytes(b"something else")
    for data in (_blob(1000), _blob(11 << 20, 3)):
        with pytest.raises(IntegrityError):
            backend.put(blob_key(wrong), io.BytesIO(data), digest=wrong)
    assert s3_env.keys(prefix) == []
    uploads = s3_env.client().list_multipart_uploads(Bucket=s3_env.bucket, Prefix=prefix).get("Uploads", [])
    assert uploads == [], "an aborted multipart upload must not linger"


def test_s3_upload_killed_midway_leaves_nothing_under_the_final_key(
    s3_env: RunningS3, tmp_path: Path
) -> None:
    prefix = s3_env.new_prefix()
    url = s3_env.url(prefix)
    src = tmp_path / "big"
    src.write_bytes(_blob(48 << 20, 5))
    digest = sha256_bytes(src.read_bytes())
    marker = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import io, time
        import wfexs_like.storage.s3 as s3mod
        from wfexs_like.storage.s3 import S3Backend
        s3mod.PART_SIZE = 5 << 20

        class Slow(io.FileIO):
            def read(self, n=-1):
                open({str(marker)!r}, "w").close()
                time.sleep(0.2)
                return super().read(min(n, 1 << 20) if n and n > 0 else 1 << 20)

        S3Backend({url!r}).put({blob_key(digest)!r}, Slow({str(src)!r}), digest={digest!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=s3_env.env())
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.5)  # a part or two is up
    proc.kill()
    proc.wait()
    assert marker.exists()
    assert s3_env.keys(prefix) == [], "a killed upload published an object"


def test_s3_wrong_credentials_name_the_bucket(s3_server: RunningS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    prefix = s3_server.new_prefix()
    backend = S3Backend(s3_server.url(prefix))
    with pytest.raises(StorageError, match=f"bucket '{s3_server.bucket}'.*refused our credentials"):
        backend.exists(blob_key(sha256_bytes(b"x")))


# -- tiers ---------------------------------------------------------------------------------------
def test_tiers_skip_a_wrong_copy_and_publish_only_verified_bytes(s3_env: RunningS3, tmp_path: Path) -> None:
    prefix = s3_env.new_prefix()
    s3 = S3Backend(s3_env.url(prefix))
    good = _blob(4096, 1)
    digest = sha256_bytes(good)
    key = blob_key(digest)
    # the bucket holds a corrupted copy under the right key (bit rot, or a bad writer)
    corrupt = bytearray(good)
    corrupt[100] ^= 0x01
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=f"{prefix}/{key}", Body=bytes(corrupt))

    alone = TieredBlobStore(tmp_path / "cache-a", Tiers([s3]))
    assert not alone.has(digest), "only a corrupted copy exists: nothing may be published"
    assert not alone.path(digest).exists()
    assert [p.name for p in alone.tmp_dir.iterdir()] == [], "no partial file is left behind"
    assert "does not match its digest" in " ".join(alone.tiers.problems[digest])

    library = DirBackend(tmp_path / "library", writable=True)
    library.put(key, io.BytesIO(good), digest=digest)
    store = TieredBlobStore(tmp_path / "cache-b", Tiers([s3, library]))
    assert store.has(digest), "the next tier holds a good copy"
    assert store.path(digest).read_bytes() == good
    assert store.tiers.served == {library.name: [1, len(good)]}


def test_tiers_write_back_blobs_and_records(s3_env: RunningS3, tmp_path: Path) -> None:
    prefix = s3_env.new_prefix()
    tiers = Tiers([S3Backend(s3_env.url(prefix))], S3Backend(s3_env.url(prefix)))
    node_a = BlobStore(tmp_path / "a")
    data = _blob(2048, 2)
    digest = node_a.put_bytes(data)
    assert tiers.publish_blob(node_a, digest) is True
    assert tiers.publish_blob(node_a, digest) is False, "already there: not uploaded twice"
    tiers.publish_record("tags/abc.json", b'{"x": 1}')
    node_b = TieredBlobStore(tmp_path / "b", tiers)
    assert node_b.has(digest) and node_b.path(digest).read_bytes() == data
    assert tiers.fetch_record("tags/abc.json") == (b'{"x": 1}', tiers.readers[0].name)
    assert tiers.fetch_record("tags/missing.json") is None


def test_two_nodes_publishing_the_same_blob_at_once_both_succeed(
    s3_env: RunningS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import wfexs_like.storage.s3 as s3mod

    monkeypatch.setattr(s3mod, "PART_SIZE", 5 << 20)  # multipart: both uploads are in flight together
    prefix = s3_env.new_prefix()
    data = _blob(13 << 20, 9)
    nodes = []
    for name in ("a", "b"):
        store = BlobStore(tmp_path / name)
        store.put_bytes(data)
        nodes.append((store, Tiers([], S3Backend(s3_env.url(prefix)))))
    digest = sha256_bytes(data)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def publish(store: BlobStore, tiers: Tiers) -> None:
        assert tiers.writer is not None
        with open(store.path(digest), "rb") as fh:
            start.wait()
            try:
                tiers.writer.put(blob_key(digest), fh, digest=digest, size=len(data))
            except BaseException as e:  # collected: the assertion below names it
                errors.append(e)

    threads = [threading.Thread(target=publish, args=node) for node in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with S3Backend(s3_env.url(prefix)).open(blob_key(digest)) as fh:
        assert sha256_bytes(fh.read()) == digest
    assert s3_env.keys(prefix) == [f"{prefix}/{blob_key(digest)}"]


def test_the_local_blob_store_is_a_directory_backend(tmp_path: Path) -> None:
    """One interface for every place: the local cache's store is readable and writable as a DirBackend."""
    store = BlobStore(tmp_path / "cache")
    as_backend = DirBackend(tmp_path / "cache", writable=True)
    data = _blob(3000, 9)
    digest = store.put_bytes(data)
    assert as_backend.size(blob_key(digest)) == len(data)
    with as_backend.open(blob_key(digest), offset=10) as fh:
        assert fh.read() == data[10:]
    other = _blob(2000, 8)
    as_backend.put(blob_key(sha256_bytes(other)), io.BytesIO(other), digest=sha256_bytes(other))
    assert store.has(sha256_bytes(other)) and store.verify(sha256_bytes(other), full=True)
    assert set(as_backend.list("blobs/")) == {blob_key(digest), blob_key(sha256_bytes(other))}

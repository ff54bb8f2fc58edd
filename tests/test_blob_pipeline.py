"""The blob writer hashes a large blob on a second thread: same digests, same refusals, no thread left."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest

from wfexs_like.errors import IntegrityError
from wfexs_like.images.blobstore import PIPELINE_MIN, BlobStore


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def data() -> bytes:
    return random.Random(7).randbytes(PIPELINE_MIN + 12345)


def hash_threads() -> int:
    return sum(t.name == "blob-hash" for t in threading.enumerate())


def test_bytes_and_reused_buffers_interleaved_hash_in_order(tmp_path: Path, data: bytes) -> None:
    store = BlobStore(tmp_path / "s")
    buf = bytearray(64 << 10)
    with store.writer(sha(data), len(data)) as w:
        assert w._pipe is not None  # the large-blob path is the one under test
        pos = 0
        for n, size in enumerate([1 << 20, 64 << 10] * (len(data) // ((1 << 20) + (64 << 10)) + 1)):
            piece = data[pos : pos + size]
            if not piece:
                break
            if n % 2:  # a caller that reuses one buffer: queued bytes must not see it change
                buf[: len(piece)] = piece
                w.write(memoryview(buf)[: len(piece)])
                buf[:] = b"\xff" * len(buf)
            else:
                w.write(piece)
            pos += len(piece)
    assert store.verify(sha(data), full=True)
    assert hash_threads() == 0


def test_wrong_bytes_are_refused_and_nothing_is_published(tmp_path: Path, data: bytes) -> None:
    store = BlobStore(tmp_path / "s")
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 1
    with pytest.raises(IntegrityError), store.writer(sha(data), len(data)) as w:
        for i in range(0, len(bad), 256 << 10):
            w.write(bytes(bad[i : i + (256 << 10)]))
    assert not store.has(sha(data))
    assert not any(store.tmp_dir.iterdir())
    assert hash_threads() == 0


def test_restart_and_discard_stop_the_worker(tmp_path: Path, data: bytes) -> None:
    store = BlobStore(tmp_path / "s")
    w = store.writer(sha(data), len(data))
    w.write(data[: 1 << 20])
    w.restart()  # a server that ignored our Range request: start over, hashing inline
    assert hash_threads() == 0
    for i in range(0, len(data), 1 << 20):
        w.write(data[i : i + (1 << 20)])
    assert w.commit() == sha(data)
    w2 = store.writer(None, len(data))
    w2.write(data[:10])
    w2.discard()
    assert hash_threads() == 0

"""The S3 tier's memory: an upload holds about one chunk, not its parts; nodes stay under 100 MB.

Issue 12 sets a peak RSS of 100 MB for every benchmark scenario; a node
publishing a blob to S3 used to hold each 16 MB part several times over
(its buffer, a copy, the previous part, botocore's copy while sending).
These tests measure real processes (``ru_maxrss``) against a real
SeaweedFS; memory, not time, so the bounds are safe on a loaded machine.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.support.imagegen import build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import start_registry
from tests.support.seaweed import RunningS3
from wfexs_like.digests import sha256_bytes
from wfexs_like.errors import IntegrityError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.storage import blob_key
from wfexs_like.storage.s3 import PART_SIZE, S3Backend

ROOT = Path(__file__).resolve().parent.parent
WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"
#: The issue's ceiling for any one wfexs-like process.
PEAK_LIMIT_KB = 100 * 1024


def test_upload_peak_stays_far_below_one_part(s3_server: RunningS3, tmp_path: Path) -> None:
    """Against the process's baseline with a warm client, a 4-part upload adds less than half a part."""
    big = tmp_path / "big"
    with open(big, "wb") as fh:
        for _ in range(4 * PART_SIZE >> 20):
            fh.write(os.urandom(1 << 20))
    url = s3_server.url(s3_server.new_prefix())
    script = textwrap.dedent(
        f"""
        import io, resource
        from wfexs_like.storage.s3 import S3Backend

        backend = S3Backend({url!r})
        backend.put("warm/up", io.BytesIO(b"x"))
        backend.size("warm/up")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open({str(big)!r}, "rb") as fh:
            backend.put("blobs/big", fh, size={4 * PART_SIZE})
        print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=s3_server.env(), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    before, after = (int(x) for x in out.stdout.split())
    assert after - before < (PART_SIZE >> 10) // 2, f"a 4-part upload grew the peak by {after - before} kB"


def test_a_pipe_and_a_file_read_from_an_offset_upload_exactly_their_bytes(
    s3_env: RunningS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wfexs_like.storage.s3 as s3mod

    monkeypatch.setattr(s3mod, "PART_SIZE", 5 << 20)  # S3's smallest part: 11 MB is three parts
    backend = S3Backend(s3_env.url(s3_env.new_prefix()))
    data = os.urandom((11 << 20) + 123)
    digest = sha256_bytes(data)
    src = tmp_path / "data"
    src.write_bytes(data)
    cat = [sys.executable, "-c", f"import sys; sys.stdout.buffer.write(open({str(src)!r}, 'rb').read())"]
    with subprocess.Popen(cat, stdout=subprocess.PIPE) as producer:
        assert producer.stdout is not None and not producer.stdout.seekable()
        backend.put(blob_key(digest), producer.stdout, digest=digest, size=len(data))
    assert producer.returncode == 0
    with backend.open(blob_key(digest)) as fh:
        assert fh.read() == data
    # a source positioned past its start: only the rest is the object
    headed = tmp_path / "with-header"
    headed.write_bytes(b"HEADER" + data)
    with open(headed, "rb") as fh:
        fh.seek(6)
        backend.put("blobs/offset", fh, digest=digest, size=len(data))
    with backend.open("blobs/offset") as fh:
        assert fh.read() == data


def test_a_source_of_the_wrong_size_or_digest_publishes_nothing(s3_env: RunningS3, tmp_path: Path) -> None:
    prefix = s3_env.new_prefix()
    backend = S3Backend(s3_env.url(prefix))
    data = os.urandom(3000)
    with pytest.raises(IntegrityError, match="expected 3001"):
        backend.put(blob_key(sha256_bytes(data)), io.BytesIO(data), size=3001)
    with pytest.raises(IntegrityError, match="hash"):
        backend.put(blob_key(sha256_bytes(b"other")), io.BytesIO(data), digest=sha256_bytes(b"other"))
    assert s3_env.keys(prefix) == []


def _materialize(tag: str, node: Path, remote: str, env: dict[str, str], *options: str) -> int:
    """Run node ``node``'s materialize under bench/selfrss.py; its own peak RSS in kB."""
    rss = node / "rss"
    node.mkdir()
    # Through a small parent: Linux keeps the peak RSS of the image a process exec'd from, and this
    # test's own process (which built a 64 MB layer) would otherwise be counted as the child's peak.
    spawn = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"]
    selfrss = [*spawn, sys.executable, str(ROOT / "bench" / "selfrss.py"), str(rss)]
    args = ["materialize", tag, "--stage-dir", str(node / "stage"), "--cache-dir", str(node / "cache")]
    out = subprocess.run(
        [*selfrss, *args, "--remote-cache", remote, *options],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return int(rss.read_text())


def test_publishing_node_and_reading_node_stay_under_100_mb(s3_server: RunningS3, tmp_path: Path) -> None:
    """Node A publishes an image with a 64 MB layer (four parts) to S3, node B takes it from there."""
    env = {**os.environ, **s3_server.env(), "XDG_CONFIG_HOME": str(tmp_path / "no-config")}
    prefix = s3_server.new_prefix()
    remote = s3_server.url(prefix)
    store = BlobStore(tmp_path / "src")
    noise = {f"data/{i}": os.urandom(1 << 20) for i in range(4 * PART_SIZE >> 20)}
    img = build_image(store, [busybox_base_layer(), {"etc/id": uuid.uuid4().bytes, **noise}])
    reg = start_registry(tmp_path / "reg")
    try:
        tag = f"{reg.host}/tiers/memory:1"
        push_image(reg.url, "tiers/memory", "1", store, img.manifest)
        peak_a = _materialize(tag, tmp_path / "a", remote, env)
    finally:
        reg.stop()
    assert s3_server.keys(prefix), "node A published nothing"
    peak_b = _materialize(tag, tmp_path / "b", remote, env, "--offline")  # the registry is gone: S3 only
    assert peak_a <= PEAK_LIMIT_KB, f"node A (publishing) peaked at {peak_a} kB"
    assert peak_b <= PEAK_LIMIT_KB, f"node B (reading from S3) peaked at {peak_b} kB"

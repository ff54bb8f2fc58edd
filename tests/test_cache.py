"""The local cache: blob store publishing rules and ContainerCacheHandler's contract.

Real processes, real signals, real filesystems: the guarantees here are
about what another process or a crash can observe, so they are tested that way.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wfexs_like.cache import ImageCache
from wfexs_like.cache.handler import ContainerCacheHandler
from wfexs_like.cache.paths import ENV_CACHE_DIR, default_cache_dir
from wfexs_like.digests import normalize_fingerprint, sha256_bytes, sha256_file, wfexs_fingerprint
from wfexs_like.errors import CacheError, IntegrityError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.model import ContainerTaggedName, ContainerType

REPO = Path(__file__).resolve().parent.parent


def _tag(name: str = "quay.io/biocontainers/samtools:1.15--h1170115_1") -> ContainerTaggedName:
    return ContainerTaggedName(name, ContainerType.Singularity)


def _naming(tag: str) -> str:
    return tag.replace("/", "-").replace(":", "-")


def _make_snapshot(workdir: Path, payload: bytes) -> tuple[Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    img = workdir / f"img-{os.getpid()}-{time.monotonic_ns()}.sif"
    img.write_bytes(payload)
    meta = img.with_name(img.name + "_meta.json")
    meta.write_text(json.dumps({"image_signature": None, "note": "test"}))
    return img, meta


# -- blob store ---------------------------------------------------------------


def test_put_and_verify_roundtrip(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    d = store.put_bytes(b"layer bytes")
    assert d == sha256_bytes(b"layer bytes")
    assert store.path(d).read_bytes() == b"layer bytes"
    assert store.is_trusted(d)
    assert store.verify(d, full=True)
    assert list(store.tmp_dir.iterdir()) == []


def test_wrong_digest_publishes_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    promised = sha256_bytes(b"the real thing")
    with pytest.raises(IntegrityError) as ei:
        store.put_bytes(b"something else", expected_digest=promised)
    assert promised in str(ei.value)
    assert not store.has(promised)
    assert list(store.tmp_dir.iterdir()) == []


def test_rotten_blob_detected_and_quarantined(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    d = store.put_bytes(b"A" * 4096)
    p = store.path(d)
    os.chmod(p, 0o644)
    with open(p, "r+b") as fh:
        fh.write(b"B")
    # size unchanged, mtime changed: the fast check no longer trusts it ...
    assert not store.is_trusted(d)
    # ... and the re-hash catches it and moves it aside so it gets re-fetched.
    assert not store.verify(d)
    assert not store.has(d)
    assert (tmp_path / "corrupt" / d.split(":")[1]).exists()


def test_malformed_digest_never_becomes_a_path(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    for bad in ("sha256:../../etc/passwd", "sha256:ABC", "md5:" + "0" * 32, "sha256:" + "0" * 63):
        with pytest.raises(IntegrityError):
            store.path(bad)


_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from wfexs_like.images.blobstore import BlobStore
    store = BlobStore(Path({root!r}))
    w = store.writer({digest!r}, {size}, resumable={resumable})
    w.write(b"x" * 1000)
    w._fh.flush()
    print("WROTE", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("resumable", [False, True])
def test_killed_writer_leaves_no_partial_blob_under_final_name(tmp_path: Path, resumable: bool) -> None:
    payload = b"x" * 5000
    digest = sha256_bytes(payload)
    code = _SLOW_WRITER.format(
        repo=str(REPO), root=str(tmp_path), digest=digest, size=len(payload), resumable=resumable
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"WROTE"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    store = BlobStore(tmp_path)
    assert not store.has(digest), "a killed writer must not leave anything under the final name"
    leftovers = list(store.tmp_dir.iterdir())
    assert leftovers and all(p.parent == store.tmp_dir for p in leftovers)
    # The next writer completes the blob (resuming where the dead one stopped when it can).
    w = store.writer(digest, len(payload), resumable=True)
    assert w.offset == (1000 if resumable else 0)
    w.write(payload[w.offset :])
    assert w.commit() == digest
    assert store.path(digest).read_bytes() == payload


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(ENV_CACHE_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "wfexs-like"


def test_wfexs_fingerprints_accepted() -> None:
    hexd = sha256_bytes(b"abc").split(":")[1]
    import base64

    b64 = base64.b64encode(bytes.fromhex(hexd)).decode()
    assert normalize_fingerprint(f"sha256={b64}") == f"sha256:{hexd}"
    assert wfexs_fingerprint(f"sha256:{hexd}") == f"sha256={b64}"
    assert normalize_fingerprint(f"SHA256:{hexd.upper()}") == f"sha256:{hexd}"
    with pytest.raises(IntegrityError):
        normalize_fingerprint("sha256=notbase64!!")


# -- ContainerCacheHandler ----------------------------------------------------


def test_update_query_transfer_invalidate(tmp_path: Path) -> None:
    h = ContainerCacheHandler(tmp_path / "cache", "singularity", _naming)
    tag = _tag()
    assert h.query(tag)[0] is False
    img, meta = _make_snapshot(tmp_path / "build", b"SIF" * 1000)
    fp = h.update(tag, img, meta)
    assert fp == sha256_bytes(b"SIF" * 1000)
    assert not img.exists() and not meta.exists(), "do_move consumes the inputs"

    trusted, _, local_meta, sig = h.query(tag)
    assert trusted and sig == fp
    assert json.loads(local_meta.read_text())["image_signature"] == fp

    staged = tmp_path / "wf1" / "containers"
    paths = h.transfer(tag, staged)
    assert paths is not None
    spath, smeta = paths
    assert sha256_file(spath) == fp
    # same filesystem: a hard link to the cached blob, not a copy
    assert spath.stat().st_ino == h.store.path(fp).stat().st_ino
    assert json.loads(smeta.read_text())["image_signature"] == fp

    h.invalidate(tag)
    assert h.query(tag)[0] is False
    assert h.transfer(tag, tmp_path / "wf2") is None


def test_corrupted_cache_entry_is_not_trusted(tmp_path: Path) -> None:
    h = ContainerCacheHandler(tmp_path / "cache", "singularity", _naming)
    tag = _tag()
    img, meta = _make_snapshot(tmp_path / "b", b"0123456789" * 100)
    fp = h.update(tag, img, meta)
    blob = h.store.path(fp)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"9876543210" * 100)
    assert h.query(tag)[0] is False
    assert h.transfer(tag, tmp_path / "wf") is None


def test_corrupted_metadata_is_not_trusted(tmp_path: Path) -> None:
    h = ContainerCacheHandler(tmp_path / "cache", "singularity", _naming)
    tag = _tag()
    img, meta = _make_snapshot(tmp_path / "b", b"abc" * 10)
    h.update(tag, img, meta)
    _, _, local_meta, _ = h.query(tag)
    local_meta.resolve().write_text("{not json")
    assert h.query(tag)[0] is False
    with pytest.raises(CacheError) as ei:
        h.read_metadata(tag)
    assert "re-materialize" in str(ei.value)


def test_stale_staged_copy_is_replaced(tmp_path: Path) -> None:
    h = ContainerCacheHandler(tmp_path / "cache", "singularity", _naming)
    tag = _tag()
    staged = tmp_path / "wf"
    img, meta = _make_snapshot(tmp_path / "b", b"old" * 10)
    h.update(tag, img, meta)
    h.transfer(tag, staged)
    img, meta = _make_snapshot(tmp_path / "b", b"new" * 10)
    fp_new = h.update(tag, img, meta)
    spath, smeta = h.transfer(tag, staged) or (None, None)
    assert spath is not None and smeta is not None
    assert sha256_file(spath) == fp_new
    assert json.loads(smeta.read_text())["image_signature"] == fp_new


def test_naming_method_cannot_escape_the_dir(tmp_path: Path) -> None:
    h = ContainerCacheHandler(tmp_path / "cache", "singularity", lambda t: "../evil")
    with pytest.raises(CacheError) as ei:
        h.query(_tag())
    assert "plain file name" in str(ei.value)


def _concurrent_updater(cache: str, builddir: str, payload: bytes, rounds: int, q: mp.Queue) -> None:
    try:
        h = ContainerCacheHandler(Path(cache), "singularity", _naming)
        fps = []
        for _ in range(rounds):
            img, meta = _make_snapshot(Path(builddir), payload)
            fps.append(h.update(_tag(), img, meta))
        q.put(("ok", fps))
    except BaseException as e:  # report to the parent, which asserts
        q.put(("error", repr(e)))


@pytest.mark.parametrize("same_payload", [True, False])
def test_two_processes_update_the_same_entry(tmp_path: Path, same_payload: bool) -> None:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    payloads = [b"P" * 200_000, b"P" * 200_000 if same_payload else b"Q" * 200_000]
    procs = [
        ctx.Process(
            target=_concurrent_updater,
            args=(str(tmp_path / "cache"), str(tmp_path / f"build{i}"), payloads[i], 15, q),
        )
        for i in range(2)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert all(r[0] == "ok" for r in results), results

    h = ContainerCacheHandler(tmp_path / "cache", "singularity", _naming)
    trusted, local, local_meta, fp = h.query(_tag())
    assert trusted, "after concurrent updates the entry must be consistent"
    assert fp in {sha256_bytes(p) for p in payloads}
    assert sha256_file(local) == fp
    assert json.loads(local_meta.read_text())["image_signature"] == fp
    snapshots = [p for p in h.snapshotsDir.iterdir() if not p.name.endswith("_meta.json")]
    assert len(snapshots) == len(set(payloads)), "one snapshot per distinct content"
    refs = sorted(p.name for p in h.engineContainersSymlinkDir.iterdir())
    assert len(refs) == 1, f"exactly one entry (one keyed record), got {refs}"
    assert not [p for p in h.store.tmp_dir.iterdir() if not p.name.startswith("retired-")]


def _other_filesystem(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.fail("this test needs /dev/shm as a filesystem separate from the tmp dir")
    return shm


def test_transfer_falls_back_to_copy_across_filesystems(tmp_path: Path) -> None:
    shm = _other_filesystem(tmp_path)
    import tempfile

    with tempfile.TemporaryDirectory(dir=shm) as cache:
        h = ContainerCacheHandler(Path(cache), "singularity", _naming)
        tag = _tag()
        img, meta = _make_snapshot(Path(cache) / "build", b"X" * 300_000)
        fp = h.update(tag, img, meta)
        staged = tmp_path / "wf"
        paths = h.transfer(tag, staged)
        assert paths is not None
        spath, _ = paths
        assert spath.stat().st_dev != h.store.path(fp).stat().st_dev
        assert sha256_file(spath) == fp
        # the copy keeps its mtime, so a later transfer trusts it without re-hashing
        assert h.store.is_trusted(fp, spath)
        assert h.transfer(tag, staged) == paths


# -- the typed cache: keys that never collide -----------------------------------------------


def test_references_that_flatten_alike_never_share_an_entry(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    a, b = "h:5000/ns/img1:1", "h:5000/ns-img1:1"
    img, meta = _make_snapshot(tmp_path / "b1", b"A" * 100)
    hit = cache.put(a, "sif", img, json.loads(meta.read_text()))
    assert cache.lookup(a, "sif") == hit
    assert cache.lookup(b, "sif") is None, "another reference never gets this entry"
    assert cache.lookup(a, "oci-layout") is None, "nor another kind"
    assert cache.lookup(a, "sif", "linux/arm64") is None, "nor another platform"
    img, meta = _make_snapshot(tmp_path / "b2", b"B" * 100)
    cache.put(b, "sif", img, json.loads(meta.read_text()))
    assert cache.lookup(a, "sif") == hit, "the second reference does not overwrite the first"


def test_a_record_whose_reference_differs_is_not_a_hit(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    img, meta = _make_snapshot(tmp_path / "b", b"A" * 100)
    cache.put("h/a:1", "sif", img, json.loads(meta.read_text()))
    record = next((cache.refs_dir / "sif").iterdir())
    data = json.loads(record.read_text())
    data["reference"] = "h/b:1"
    record.write_text(json.dumps(data))
    assert cache.lookup("h/a:1", "sif") is None


def test_resolutions_need_the_manifest_in_the_store(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    digest = cache.store.put_bytes(b'{"schemaVersion":2}')
    cache.record_resolution("h/a:1", None, digest)
    assert cache.resolved("h/a:1", None) == digest
    assert cache.resolved("h/a:1", "linux/arm64") is None
    assert cache.resolved("h/b:1", None) is None
    cache.store.remove(digest)
    assert cache.resolved("h/a:1", None) is None


def test_staged_sidecar_is_a_copy_not_a_link(tmp_path: Path) -> None:
    h = ContainerCacheHandler(tmp_path / "cache", "singularity", _naming)
    img, meta = _make_snapshot(tmp_path / "b", b"S" * 100)
    h.update(_tag(), img, meta)
    _, smeta = h.transfer(_tag(), tmp_path / "wf") or (None, None)
    assert smeta is not None
    smeta.write_text("{}")  # a workflow scribbling on its staged sidecar
    assert h.query(_tag())[0], "the cache's own sidecar is untouched"

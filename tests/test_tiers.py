"""Many machines: the S3 tier and read-only library dirs, end to end through the factories.

Real servers only: a private ``docker-registry`` per test (so it can be
stopped, and its access log counts what reached it) and the session's
SeaweedFS S3 gateway. "Nodes" are factories with their own cache dirs: what
one node knows reaches another only through the bucket or a library dir.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_engine import FakeEngine
from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry, free_port, start_registry
from tests.support.seaweed import RunningS3
from wfexs_like.container_factories import (
    ContainerFactory,
    DockerContainerFactory,
    SingularityContainerFactory,
)
from wfexs_like.digests import sha256_file
from wfexs_like.errors import ContainerNotFoundException
from wfexs_like.model import Container, ContainerTaggedName, ContainerType
from wfexs_like.storage import Tiers, blob_key, open_tiers
from wfexs_like.storage.s3 import S3Backend

DOCKER = ContainerType.Docker


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A registry of this test's own: it is stopped mid-test, and its log counts every request."""
    reg = start_registry(tmp_path / "origin")
    yield reg
    reg.stop()


def _image(src_store, marker: str) -> BuiltImage:
    return build_image(
        src_store,
        [busybox_base_layer(), {"etc/marker": marker.encode()}, {"data/blob": os.urandom(300_000)}],
        cmd=["/bin/busybox", "true"],
    )


def _push(reg: RunningRegistry, src_store, name: str) -> tuple[str, BuiltImage]:
    img = _image(src_store, name)
    push_image(reg.url, f"tiers/{name}", "1", src_store, img.manifest)
    return f"{reg.host}/tiers/{name}:1", img


def _docker(cache: Path, tiers: Tiers | None) -> DockerContainerFactory:
    return DockerContainerFactory(containersCacheDir=cache, engine=FakeEngine("docker"), tiers=tiers)


def _singularity(cache: Path, tiers: Tiers | None) -> SingularityContainerFactory:
    return SingularityContainerFactory(containersCacheDir=cache, tiers=tiers)


def _one(factory: ContainerFactory, tag: str, stage: Path, **kw) -> Container:
    [c] = factory.materializeContainers([ContainerTaggedName(tag, DOCKER)], stage, **kw)
    return c


def _meta(c: Container) -> dict:
    assert c.metadataLocalPath is not None
    return json.loads(Path(c.metadataLocalPath).read_bytes())


def _same(a: Container, b: Container) -> None:
    """Identical digests and fingerprints (the image id, the manifest pin, the snapshot's own digest)."""
    assert (b.signature, b.fingerprint, b.image_signature) == (a.signature, a.fingerprint, a.image_signature)


def _image_blobs(img: BuiltImage) -> list[str]:
    return [img.digest, img.image_id, *(layer.digest for layer in img.manifest.layers)]


# -- S3: node A publishes, node B needs nothing else ----------------------------------------------
def test_node_b_materializes_offline_from_s3_alone(
    tmp_path: Path, origin: RunningRegistry, s3_env: RunningS3, src_store
) -> None:
    prefix = s3_env.new_prefix()
    url = s3_env.url(prefix)
    tag, img = _push(origin, src_store, "oci")

    mark = origin.mark()
    started = time.monotonic()
    a = _one(_docker(tmp_path / "node-a", open_tiers(url)), tag, tmp_path / "wf-a")
    seconds_a = time.monotonic() - started
    assert origin.blob_gets(mark), "node A pulled from the registry"
    keys = set(s3_env.keys(prefix))
    for digest in _image_blobs(img):
        assert f"{prefix}/{blob_key(digest)}" in keys, f"{digest} was published"
    assert any(k.startswith(f"{prefix}/tags/") for k in keys), "the tag record was published"

    # node B, registry still up: offline means not one request, and S3 answers everything
    mark = origin.mark()
    started = time.monotonic()
    tiers_b = open_tiers(url)
    b = _one(_docker(tmp_path / "node-b", tiers_b), tag, tmp_path / "wf-b", offline=True)
    seconds_b = time.monotonic() - started
    assert origin.requests_since(mark) == [], "offline: zero registry requests"
    _same(a, b)
    assert tiers_b is not None and tiers_b.writer is not None
    size = len(img.manifest.raw) + img.manifest.config.size + sum(x.size for x in img.manifest.layers)
    assert _meta(b)["extra"]["served_by"] == {tiers_b.writer.name: {"blobs": 5, "bytes": size}}
    print(f"\nnode A from the registry: {seconds_a:.2f} s; node B from S3: {seconds_b:.2f} s")

    # node C after the registry is gone: the bucket alone is enough
    origin.stop()
    c = _one(_docker(tmp_path / "node-c", open_tiers(url)), tag, tmp_path / "wf-c", offline=True)
    _same(a, c)
    # and once B has it, B needs no tier at all any more
    again = _one(_docker(tmp_path / "node-b", None), tag, tmp_path / "wf-b2", offline=True)
    _same(a, again)


def test_node_b_gets_the_sif_from_s3_without_building_it(
    tmp_path: Path, origin: RunningRegistry, s3_env: RunningS3, src_store
) -> None:
    url = s3_env.url(s3_env.new_prefix())
    tag, img = _push(origin, src_store, "sif")
    a = _one(_singularity(tmp_path / "node-a", open_tiers(url)), tag, tmp_path / "wf-a")
    assert _meta(a)["extra"]["builder"] == "wfexs-like native"
    origin.stop()

    tiers_b = open_tiers(url)
    factory_b = _singularity(tmp_path / "node-b", tiers_b)
    b = _one(factory_b, tag, tmp_path / "wf-b", offline=True)
    _same(a, b)
    assert sha256_file(Path(b.localPath)) == a.image_signature
    store_b = factory_b.cache.store
    layers = [layer.digest for layer in img.manifest.layers]
    assert not any(store_b.path(d).exists() for d in layers), "no layer reached B: the SIF was not built"
    assert tiers_b is not None and tiers_b.writer is not None
    sif_size = Path(b.localPath).stat().st_size
    assert _meta(b)["extra"]["served_by"] == {tiers_b.writer.name: {"blobs": 1, "bytes": sif_size}}
    assert tiers_b.served == {tiers_b.writer.name: [1, sif_size]}


def test_a_corrupted_blob_in_the_bucket_is_never_published_locally(
    tmp_path: Path, origin: RunningRegistry, s3_env: RunningS3, src_store
) -> None:
    prefix = s3_env.new_prefix()
    url = s3_env.url(prefix)
    tag, img = _push(origin, src_store, "rot")
    a = _one(_docker(tmp_path / "node-a", open_tiers(url)), tag, tmp_path / "wf-a")
    bad = img.manifest.layers[-1]
    good = _blob(tmp_path / "node-a", bad.digest).read_bytes()
    rotten = bytearray(good)
    rotten[len(rotten) // 2] ^= 0xFF
    s3_env.client().put_object(
        Bucket=s3_env.bucket, Key=f"{prefix}/{blob_key(bad.digest)}", Body=bytes(rotten)
    )

    # offline, the image cannot be had: the error names the blob and where it was wrong
    factory_c = _docker(tmp_path / "node-c", open_tiers(url))
    with pytest.raises(ContainerNotFoundException) as ei:
        _one(factory_c, tag, tmp_path / "wf-c", offline=True)
    message = str(ei.value)
    assert bad.digest in message and s3_env.bucket in message and "does not match" in message
    assert not factory_c.cache.store.path(bad.digest).exists()
    assert list(factory_c.cache.store.tmp_dir.glob("blob-*")) == [], "no partial copy left behind"

    # online, the registry fills in exactly that blob; everything else still comes from the bucket
    mark = origin.mark()
    factory_b = _docker(tmp_path / "node-b", open_tiers(url))
    b = _one(factory_b, tag, tmp_path / "wf-b")
    _same(a, b)
    assert factory_b.cache.store.path(bad.digest).read_bytes() == good
    assert [x.path.rsplit("/", 1)[1] for x in origin.blob_gets(mark)] == [bad.digest]


def test_wrong_credentials_fail_the_materialize_naming_the_bucket(
    tmp_path: Path, origin: RunningRegistry, s3_env: RunningS3, src_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag, _ = _push(origin, src_store, "creds")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    url = s3_env.url(s3_env.new_prefix())
    for offline in (False, True):
        with pytest.raises(ContainerNotFoundException) as ei:
            _one(
                _docker(tmp_path / f"node-{offline}", open_tiers(url)), tag, tmp_path / "wf", offline=offline
            )
        assert f"S3 bucket '{s3_env.bucket}'" in str(ei.value) and "refused our credentials" in str(ei.value)


def test_publishing_failures_are_warnings_and_no_remote_leaves_s3_alone(
    tmp_path: Path, origin: RunningRegistry, s3_env: RunningS3, src_store, caplog: pytest.LogCaptureFixture
) -> None:
    tag, _ = _push(origin, src_store, "nopub")
    prefix = s3_env.new_prefix()
    url = s3_env.url(prefix)
    # a bucket this node may read but not write: the real server refuses the writes
    refused = S3Backend(url, client=s3_env.client(secret_key="not-the-secret"))
    a = _one(_docker(tmp_path / "node-a", Tiers([S3Backend(url)], refused)), tag, tmp_path / "wf-a")
    assert Path(a.localPath).exists(), "the materialize itself worked"
    assert "publishing it to" in caplog.text and "refused our credentials" in caplog.text
    assert s3_env.keys(prefix) == []

    assert open_tiers(url, no_remote=True) is None
    lib = tmp_path / "lib"
    lib.mkdir()
    only_lib = open_tiers(url, [lib], no_remote=True)
    assert only_lib is not None and only_lib.writer is None
    assert [t.name for t in only_lib.readers] == [str(lib)]


def test_an_unreachable_remote_cache_is_skipped_online_and_named_offline(
    tmp_path: Path,
    origin: RunningRegistry,
    src_store,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var, value in (
        ("AWS_ACCESS_KEY_ID", "k"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        monkeypatch.setenv(var, value)
    tag, _ = _push(origin, src_store, "down")
    nothing = f"s3://bucket/p?endpoint=http://127.0.0.1:{free_port()}"
    tiers = open_tiers(nothing)
    assert tiers is not None and tiers.writer is not None
    a = _one(_docker(tmp_path / "node-a", tiers), tag, tmp_path / "wf-a")
    assert Path(a.localPath).exists(), "online, the registry serves what the remote cache cannot"
    assert "cannot be reached" in caplog.text
    assert tiers.is_down(tiers.writer), "not asked again for every blob"
    with pytest.raises(ContainerNotFoundException) as ei:
        _one(_docker(tmp_path / "node-b", open_tiers(nothing)), tag, tmp_path / "wf-b", offline=True)
    assert "nor in s3://bucket/p" in str(ei.value)


# -- library dirs: read-only, used first, never touched -------------------------------------------
def _listing(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry under ``root``: (mode, size, mtime_ns, inode)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def _make_read_only(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        Path(dirpath).chmod(0o555)


@pytest.fixture
def library(
    tmp_path: Path, origin: RunningRegistry, src_store
) -> Iterator[tuple[Path, str, Container, Container]]:
    """A site library in our cache layout (a Docker and a SIF entry of one tag), chmod 0555 / a-w."""
    tag, _ = _push(origin, src_store, "lib")
    lib = tmp_path / "library"
    docker = _one(_docker(lib, None), tag, tmp_path / "wf-lib")
    sif = _one(_singularity(lib, None), tag, tmp_path / "wf-lib-sif")
    _make_read_only(lib)
    yield lib, tag, docker, sif
    for dirpath, _dirs, _files in os.walk(lib):
        Path(dirpath).chmod(0o755)


def test_a_read_only_library_is_used_first_hard_linked_and_left_untouched(
    tmp_path: Path, origin: RunningRegistry, library
) -> None:
    lib, tag, docker, sif = library
    before = _listing(lib)
    mark = origin.mark()
    # online: a site library pins what its tags mean, so not even a HEAD reaches the registry
    tiers = open_tiers(library_dirs=[lib])
    d = _one(_docker(tmp_path / "node", tiers), tag, tmp_path / "wf")
    s = _one(_singularity(tmp_path / "node", tiers), tag, tmp_path / "wf-sif")
    assert origin.requests_since(mark) == []
    _same(docker, d)
    _same(sif, s)
    # the staged SIF is the library's own inode; so are the staged layout's layers
    assert _inode(Path(s.localPath)) == _inode(_blob(lib, sif.image_signature))
    for layer in _layers(Path(d.localPath)):
        assert _inode(_blob(Path(d.localPath), layer["digest"])) == _inode(_blob(lib, layer["digest"]))
    assert str(lib) in _meta(s)["extra"]["served_by"]
    assert _listing(lib) == before, "the library was modified"


def _blob(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.split(":", 1)[1]


def _inode(path: Path) -> int:
    return path.stat().st_ino


def _layers(layout: Path) -> list[dict]:
    index = json.loads((layout / "index.json").read_bytes())
    return json.loads(_blob(layout, index["manifests"][0]["digest"]).read_bytes())["layers"]


def test_a_library_on_a_read_only_mount_is_copied_from_offline(
    tmp_path: Path, origin: RunningRegistry, library
) -> None:
    lib, tag, docker, sif = library
    mount = tmp_path / "ro-mount"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(lib), str(mount)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"bind-mounting read-only needs root: {done.stderr}"
    try:
        before = _listing(mount)
        origin.stop()
        tiers = open_tiers(library_dirs=[mount])
        s = _one(_singularity(tmp_path / "node", tiers), tag, tmp_path / "wf", offline=True)
        d = _one(_docker(tmp_path / "node", tiers), tag, tmp_path / "wf-d", offline=True)
        _same(sif, s)
        _same(docker, d)
        assert _inode(Path(s.localPath)) != _inode(_blob(mount, sif.image_signature)), "no link across mounts"
        assert sha256_file(Path(s.localPath)) == sif.image_signature
        assert _listing(mount) == before
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_nextflow_style_sif_library(tmp_path: Path, origin: RunningRegistry, library) -> None:
    _lib, tag, _docker_rec, sif = library
    nxf = tmp_path / "nxf-library"
    nxf.mkdir()
    name = tag.replace(":", "-").replace("/", "-") + ".img"  # Nextflow's SingularityCache.simpleName
    shutil.copy2(Path(sif.localPath), nxf / name)
    _make_read_only(nxf)
    before = _listing(nxf)
    mark = origin.mark()
    node = _singularity(tmp_path / "node", open_tiers(library_dirs=[nxf]))
    s = _one(node, tag, tmp_path / "wf")
    assert origin.requests_since(mark) == []
    assert s.image_signature == sif.image_signature
    assert Path(s.localPath).stat().st_ino == (nxf / name).stat().st_ino
    extra = _meta(s)["extra"]
    assert extra["source"] == "library" and extra["file"] == f"{nxf}/{name}"
    assert _listing(nxf) == before
    # a second run of the same node knows the file: no re-hash, same answer
    again = _one(_singularity(tmp_path / "node", open_tiers(library_dirs=[nxf])), tag, tmp_path / "wf2")
    assert again.image_signature == sif.image_signature

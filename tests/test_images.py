"""Snapshots composed from the blob store, checked by the real consumers: skopeo, Podman, Docker.

No mocks of the engines: an OCI layout or docker-archive is right when the
tools that will load it in production load it, give back the image id we
predicted, and run a binary out of its layers. Images are generated with a
per-run label so their ids are unique to this run, which makes removing
them from the engines afterwards safe for anyone else using the machine.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer, make_tar
from tests.support.tools import run_ok, tar_of
from wfexs_like.digests import sha256_bytes, sha256_file
from wfexs_like.errors import CacheError, IntegrityError, UnsafeArchiveError
from wfexs_like.images import staging
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.docker_archive import (
    DockerArchiveImage,
    docker_archive_digest,
    docker_archive_size,
    iter_docker_archive,
    write_docker_archive,
)
from wfexs_like.images.layout import (
    REF_NAME_ANNOTATION,
    LayoutImage,
    read_oci_layout,
    verify_oci_layout,
    write_oci_layout,
)
from wfexs_like.images.manifest import OCI_LAYER, OCI_LAYER_GZIP, Platform
from wfexs_like.images.staging import link_or_copy, link_tree
from wfexs_like.images.store import StoreImage, write_to_store

RUN_ID = uuid.uuid4().hex[:12]
REPO = f"localhost/wfexs-like-test-{RUN_ID}"
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
SHM = Path("/dev/shm")


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> BlobStore:
    return BlobStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def three(store: BlobStore) -> BuiltImage:
    """Three layers: busybox base, a directory with a file, a file that the run reads."""
    return build_image(
        store,
        [busybox_base_layer(), {"data/": None, "data/a.txt": b"alpha\n"}, {"data/b.txt": b"bravo\n"}],
        labels={"wfexs-like.test-run": RUN_ID, "variant": "three"},
    )


@pytest.fixture(scope="module")
def with_entrypoint(store: BlobStore) -> BuiltImage:
    return build_image(
        store,
        [busybox_base_layer()],
        entrypoint=["/bin/busybox", "echo"],
        cmd=["from-entrypoint"],
        labels={"wfexs-like.test-run": RUN_ID, "variant": "entrypoint"},
    )


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _podman_inspect(ref: str) -> dict:
    return json.loads(run_ok("podman", "image", "inspect", ref).stdout)[0]


# -- StoreImage -----------------------------------------------------------------


def test_stored_image_answers_from_blobs(store: BlobStore, three: BuiltImage) -> None:
    img = StoreImage(store, three.digest)
    assert img.digest() == three.digest == sha256_bytes(img.raw_manifest())
    assert img.config_name() == three.image_id == sha256_bytes(img.raw_config_file())
    assert img.config()["config"]["Labels"]["wfexs-like.test-run"] == RUN_ID
    assert img.platform() == Platform("linux", "amd64")
    layers = img.layers()
    assert len(layers) == 3
    for layer, tar in zip(layers, three.layer_tars, strict=True):
        assert layer.media_type() == OCI_LAYER_GZIP
        assert layer.diff_id() == sha256_bytes(tar)
        with layer.compressed() as fh:
            assert sha256_bytes(fh.read()) == layer.digest()
        with layer.uncompressed() as fh:
            assert fh.read() == tar
        assert layer.size() == store.size(layer.digest())
        assert img.layer_by_digest(layer.digest()) is layer
        assert img.layer_by_diff_id(layer.diff_id()) is layer
    assert img.size() == sum(store.size(d) for d in img.blob_digests())
    assert img.blob_digests()[0] == img.digest()


def test_stored_image_names_the_missing_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "s")
    built = build_image(store, [{"f": b"1"}, {"g": b"2"}])
    gone = built.manifest.layers[1].digest
    store.remove(gone)
    with pytest.raises(CacheError, match=gone) as exc:
        StoreImage(store, built.digest)
    assert "fetch the image again" in str(exc.value)
    store.remove(built.digest)
    with pytest.raises(CacheError, match=built.digest):
        StoreImage(store, built.digest)


# -- staging ------------------------------------------------------------------------


def _other_fs(tmp_path: Path) -> Path:
    if not SHM.is_dir() or SHM.stat().st_dev == tmp_path.stat().st_dev:
        pytest.fail("needs /dev/shm on a filesystem other than the test's tmp dir")
    d = SHM / f"wfexs-like-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    return d


@pytest.fixture
def shm_dir(tmp_path: Path) -> Iterator[Path]:
    d = _other_fs(tmp_path)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_link_or_copy_hardlinks_on_the_same_filesystem(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 10_000)
    os.chmod(src, 0o444)
    dst = tmp_path / "sub" / "dst"
    dst.parent.mkdir()
    assert link_or_copy(src, dst) == "hardlink"
    assert dst.stat().st_ino == src.stat().st_ino
    assert link_or_copy(src, dst) == "hardlink"  # already the same inode: nothing to do
    assert sorted(p.name for p in dst.parent.iterdir()) == ["dst"]


def test_link_or_copy_copies_across_filesystems(tmp_path: Path, shm_dir: Path) -> None:
    assert shm_dir.stat().st_dev != tmp_path.stat().st_dev
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 << 20))
    os.chmod(src, 0o444)
    os.utime(src, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    dst = shm_dir / "dst"
    assert link_or_copy(src, dst) == "copy"
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_mtime_ns == src.stat().st_mtime_ns
    assert dst.stat().st_mode & 0o777 == 0o444
    # and back the other way
    back = tmp_path / "back"
    assert link_or_copy(dst, back) == "copy"
    assert back.read_bytes() == src.read_bytes()


def test_link_or_copy_falls_back_when_links_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXDEV from link(2) (e.g. a bind mount) must fall through to reflink, then copy."""
    src = tmp_path / "src"
    src.write_bytes(b"payload" * 1000)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(staging.os, "link", refuse)
    dst = tmp_path / "dst"
    method = link_or_copy(src, dst)
    assert method in ("reflink", "copy")  # reflink on btrfs/xfs, copy on ext4
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_ino != src.stat().st_ino


@pytest.mark.parametrize("dst_existed", [False, True])
def test_interrupted_copy_leaves_nothing_under_the_final_name(
    tmp_path: Path, shm_dir: Path, monkeypatch: pytest.MonkeyPatch, dst_existed: bool
) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(4 << 20))
    dst = shm_dir / "dst"
    if dst_existed:
        dst.write_bytes(b"old snapshot")
    calls = {"n": 0}

    class Killed(BaseException):
        """Stands in for SIGINT/SIGTERM arriving mid-copy (not an Exception: cleanup must still run)."""

    def dies_midway(src_fd: int, dst_fd: int, size: int) -> None:
        calls["n"] += 1
        os.write(dst_fd, os.read(src_fd, size // 2))  # half the bytes reach the disk, then the "kill"
        raise Killed

    monkeypatch.setattr(staging, "_copy_bytes", dies_midway)
    with pytest.raises(Killed):
        link_or_copy(src, dst)
    assert calls["n"] == 1
    if dst_existed:
        assert dst.read_bytes() == b"old snapshot"
    else:
        assert not dst.exists()
    assert [p.name for p in shm_dir.iterdir()] == (["dst"] if dst_existed else [])


def test_link_tree_counts_methods_and_publishes_atomically(tmp_path: Path, shm_dir: Path) -> None:
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    (src / "top").write_bytes(b"1")
    (src / "a" / "mid").write_bytes(b"2")
    (src / "a" / "b" / "deep").write_bytes(b"3")
    (src / "a" / "link").symlink_to("mid")
    same = tmp_path / "same"
    assert link_tree(src, same) == {"hardlink": 3, "reflink": 0, "copy": 0}
    assert (same / "a" / "b" / "deep").stat().st_ino == (src / "a" / "b" / "deep").stat().st_ino
    assert os.readlink(same / "a" / "link") == "mid"

    other = shm_dir / "other"
    assert link_tree(src, other) == {"hardlink": 0, "reflink": 0, "copy": 3}
    assert (other / "a" / "b" / "deep").read_bytes() == b"3"

    (src / "new").write_bytes(b"4")
    assert link_tree(src, same) == {"hardlink": 0, "reflink": 0, "copy": 0}  # exists, not forced
    assert not (same / "new").exists()
    assert link_tree(src, same, force=True)["hardlink"] == 4
    assert (same / "new").read_bytes() == b"4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same", "tree"]  # no temp dirs left


# -- OCI layout ------------------------------------------------------------------------


def test_oci_layout_is_deterministic_hardlinked_and_fingerprinted(
    tmp_path: Path, store: BlobStore, three: BuiltImage
) -> None:
    img = StoreImage(store, three.digest)
    ref = f"{REPO}/three:v1"
    fp1 = write_oci_layout(img, tmp_path / "one", ref_name=ref)
    fp2 = write_oci_layout(img, tmp_path / "two", ref_name=ref)
    assert fp1 == fp2 == sha256_file(tmp_path / "one" / "index.json")
    assert (tmp_path / "one" / "index.json").read_bytes() == (tmp_path / "two" / "index.json").read_bytes()
    assert (tmp_path / "one" / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    assert write_oci_layout(img, tmp_path / "anon") != fp1  # the ref name is part of the fingerprint

    index = json.loads((tmp_path / "one" / "index.json").read_bytes())
    (entry,) = index["manifests"]
    assert entry["digest"] == img.digest()
    assert entry["annotations"][REF_NAME_ANNOTATION] == ref
    for digest in img.blob_digests():
        staged = tmp_path / "one" / "blobs" / "sha256" / _hex(digest)
        assert staged.stat().st_ino == store.path(digest).stat().st_ino
    assert verify_oci_layout(tmp_path / "one", store) == []
    assert verify_oci_layout(tmp_path / "one", None, full=True) == []

    _, manifest_digest, name = read_oci_layout(tmp_path / "one")
    assert (manifest_digest, name) == (img.digest(), ref)

    # re-staging an intact snapshot is a no-op (same index inode: nothing rewritten)
    ino = (tmp_path / "one" / "index.json").stat().st_ino
    assert write_oci_layout(img, tmp_path / "one", ref_name=ref) == fp1
    assert (tmp_path / "one" / "index.json").stat().st_ino == ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anon", "one", "two"]


def test_skopeo_reads_the_oci_layout(tmp_path: Path, store: BlobStore, three: BuiltImage) -> None:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed; run scripts/setup-host.sh")
    img = StoreImage(store, three.digest)
    ref = f"{REPO}/three:v1"
    layout = tmp_path / "layout"
    write_oci_layout(img, layout, ref_name=ref)
    for target in (f"oci:{layout}", f"oci:{layout}:{ref}"):
        info = json.loads(run_ok("skopeo", "inspect", target).stdout)
        assert info["Digest"] == img.digest()
        assert info["Labels"]["wfexs-like.test-run"] == RUN_ID
        assert info["Layers"] == [layer.digest() for layer in img.layers()]
    raw = json.loads(run_ok("skopeo", "inspect", "--raw", f"oci:{layout}").stdout)
    assert raw["config"]["digest"] == img.config_name()


@pytest.mark.podman
def test_podman_loads_the_oci_layout_and_runs_it(
    tmp_path: Path, store: BlobStore, with_entrypoint: BuiltImage, podman_made: list[str]
) -> None:
    img = StoreImage(store, with_entrypoint.digest)
    ref = f"{REPO}/entrypoint:v1"
    layout = tmp_path / "ep-layout"
    write_oci_layout(img, layout, ref_name=ref)
    podman_made.append(_hex(img.config_name()))
    run_ok("podman", "load", "-q", "-i", str(layout))
    info = _podman_inspect(_hex(img.config_name()))
    assert info["Id"] == _hex(img.config_name())
    assert info["Digest"] == img.digest()
    # Podman 4.3 ignores the ref-name annotation on an OCI *directory* and names
    # the image after the path it was given (localhost/<path>:latest); a
    # deployer must `podman tag` it. Accept the annotation too, for newer Podman.
    tags = info.get("RepoTags") or []
    path_name = f"localhost/{str(layout).lstrip('/')}:latest"
    assert ref in tags or path_name in tags, tags
    run_ok("podman", "tag", info["Id"], ref)
    assert ref in _podman_inspect(ref)["RepoTags"]
    out = run_ok("podman", "run", "--rm", "--network", "none", *ULIMITS, ref).stdout
    assert out == b"from-entrypoint\n"


# -- docker-archive -------------------------------------------------------------------


def test_docker_archive_is_byte_identical_and_known_before_writing(
    tmp_path: Path, store: BlobStore, three: BuiltImage
) -> None:
    img = StoreImage(store, three.digest)
    tags = [f"{REPO}/three:v1", f"{REPO}/three:latest"]
    predicted = docker_archive_digest(img, tags)
    size = docker_archive_size(img, tags)
    assert write_docker_archive(img, tmp_path / "a.tar", tags) == predicted
    assert write_docker_archive(img, tmp_path / "b.tar", tags) == predicted
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert sha256_file(tmp_path / "a.tar") == predicted
    assert (tmp_path / "a.tar").stat().st_size == size
    assert sum(len(c) for c in iter_docker_archive(img, tags)) == size
    assert docker_archive_digest(img, tags[:1]) != predicted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.tar"]

    with tarfile.open(tmp_path / "a.tar") as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert names[:2] == ["manifest.json", f"{_hex(img.config_name())}.json"]
        assert names[2:] == [f"{_hex(layer.digest())}.tar.gz" for layer in img.layers()]
        assert {(m.mtime, m.uid, m.gid, m.mode, m.type) for m in members} == {
            (0, 0, 0, 0o644, tarfile.REGTYPE)
        }
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest == [{"Config": names[1], "Layers": names[2:], "RepoTags": tags}]
        for layer in img.layers():
            member = tf.extractfile(f"{_hex(layer.digest())}.tar.gz")
            assert member is not None
            assert sha256_bytes(member.read()) == layer.digest()  # compressed, as served

    with pytest.raises(CacheError, match="repo tag"):
        docker_archive_digest(img, ["No Such:Tag"])


def test_skopeo_reads_the_docker_archive(tmp_path: Path, store: BlobStore, three: BuiltImage) -> None:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed; run scripts/setup-host.sh")
    img = StoreImage(store, three.digest)
    write_docker_archive(img, tmp_path / "a.tar", [f"{REPO}/three:v1"])
    info = json.loads(run_ok("skopeo", "inspect", f"docker-archive:{tmp_path / 'a.tar'}").stdout)
    assert info["Labels"]["wfexs-like.test-run"] == RUN_ID
    assert info["Architecture"] == "amd64"
    cfg = json.loads(run_ok("skopeo", "inspect", "--config", f"docker-archive:{tmp_path / 'a.tar'}").stdout)
    assert cfg["rootfs"]["diff_ids"] == [layer.diff_id() for layer in img.layers()]


@pytest.mark.docker
def test_docker_loads_the_streamed_archive_and_runs_it(
    store: BlobStore,
    three: BuiltImage,
    with_entrypoint: BuiltImage,
    docker_client: object,
    docker_made: list[str],
) -> None:
    client = docker_client
    for built, name in ((three, "three"), (with_entrypoint, "entrypoint")):
        img = StoreImage(store, built.digest)
        tag = f"{REPO}/{name}:v1"
        docker_made.append(img.config_name())
        loaded = client.images.load(iter_docker_archive(img, [tag]))  # type: ignore[attr-defined]
        assert [i.id for i in loaded] == [img.config_name()]
        assert tag in client.images.get(tag).tags  # type: ignore[attr-defined]
    run = client.containers.run  # type: ignore[attr-defined]
    out = run(f"{REPO}/three:v1", ["/bin/busybox", "echo", "ok"], network_mode="none", remove=True)
    assert out == b"ok\n"
    out = run(
        f"{REPO}/three:v1", ["/bin/cat", "/data/a.txt", "/data/b.txt"], network_mode="none", remove=True
    )
    assert out == b"alpha\nbravo\n"
    assert run(f"{REPO}/entrypoint:v1", network_mode="none", remove=True) == b"from-entrypoint\n"


@pytest.mark.podman
def test_podman_loads_the_docker_archive_and_runs_it(
    tmp_path: Path, store: BlobStore, three: BuiltImage, podman_made: list[str]
) -> None:
    img = StoreImage(store, three.digest)
    tag = f"{REPO}/three-archive:v1"
    archive = tmp_path / "three.tar"
    write_docker_archive(img, archive, [tag])
    podman_made.append(_hex(img.config_name()))
    run_ok("podman", "load", "-q", "-i", str(archive))
    info = _podman_inspect(tag)
    assert info["Id"] == _hex(img.config_name())
    assert tag in info["RepoTags"]
    cmd = ["podman", "run", "--rm", "--network", "none", *ULIMITS, tag]
    assert run_ok(*cmd, "/bin/busybox", "echo", "ok").stdout == b"ok\n"
    assert run_ok(*cmd, "/bin/cat", "/data/b.txt").stdout == b"bravo\n"

    # podman save (uncompressed layers) comes back to the same image id
    saved = tmp_path / "saved.tar"
    run_ok("podman", "save", "-q", "--format", "docker-archive", "-o", str(saved), tag)
    other = BlobStore(tmp_path / "other")
    back = StoreImage(other, write_to_store(DockerArchiveImage(saved), other))
    assert back.config_name() == img.config_name()
    assert [layer.diff_id() for layer in back.layers()] == [layer.diff_id() for layer in img.layers()]
    assert {layer.media_type() for layer in back.layers()} == {OCI_LAYER}


# -- reading a real engine's image --------------------------------------------------


@pytest.mark.docker
@pytest.mark.podman
def test_docker_save_read_in_place_keeps_the_image_id(
    tmp_path: Path, docker_client: object, docker_made: list[str], podman_made: list[str]
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy2("/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        f'LABEL wfexs-like.test-run="{RUN_ID}"\n'
        'CMD ["/bin/busybox", "echo", "built-ok"]\n'
    )
    client = docker_client
    tag = f"{REPO}/built:v1"
    built, _ = client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True)  # type: ignore[attr-defined]
    docker_made.append(built.id)

    sdk_saved = tmp_path / "sdk.tar"
    with open(sdk_saved, "wb") as fh:
        for chunk in built.save(named=True):  # the SDK's chunk iterator
            fh.write(chunk)
    store = BlobStore(tmp_path / "store")
    manifest_digest = write_to_store(DockerArchiveImage(sdk_saved), store)
    img = StoreImage(store, manifest_digest)
    assert img.config_name() == built.id
    assert [layer.media_type() for layer in img.layers()] == [OCI_LAYER]

    # the CLI's output gives the very same synthesised manifest
    cli_saved = tmp_path / "cli.tar"
    run_ok("docker", "save", "-o", str(cli_saved), tag)
    again = DockerArchiveImage(cli_saved)
    assert again.digest() == manifest_digest
    assert again.repo_tags == [tag]

    layout = tmp_path / "built-layout"
    write_oci_layout(img, layout, ref_name=tag)
    assert verify_oci_layout(layout, store, full=True) == []
    podman_made.append(_hex(built.id))
    run_ok("podman", "load", "-q", "-i", str(layout))
    assert _podman_inspect(_hex(built.id))["Id"] == _hex(built.id)
    out = run_ok("podman", "run", "--rm", "--network", "none", *ULIMITS, _hex(built.id)).stdout
    assert out == b"built-ok\n"


def test_docker_archive_round_trip_through_the_store(
    tmp_path: Path, store: BlobStore, three: BuiltImage
) -> None:
    img = StoreImage(store, three.digest)
    other = BlobStore(tmp_path / "other")
    archive = tmp_path / "a.tar"
    write_docker_archive(img, archive, [f"{REPO}/three:v1"])
    digest = write_to_store(DockerArchiveImage(archive), other)
    back = StoreImage(other, digest)
    assert back.config_name() == img.config_name()
    assert [x.digest() for x in back.layers()] == [x.digest() for x in img.layers()]  # gzip kept as is
    assert {x.media_type() for x in back.layers()} == {OCI_LAYER_GZIP}
    # a gzip-compressed archive (docker save | gzip) is read too
    gz = tmp_path / "a.img"
    gz.write_bytes(gzip.compress(b"".join(iter_docker_archive(img, [])), mtime=0))
    assert write_to_store(DockerArchiveImage(gz), other) == digest


@pytest.mark.parametrize(
    "members,links",
    [
        ([("../evil.json", b"{}")], ()),
        ([("/etc/evil.json", b"{}")], ()),
        ([("ok/../../evil", b"x")], ()),
        ([("manifest.json", b"[]")], (("layer.tar", "../../etc/passwd"),)),
        ([("manifest.json", b"[]")], (("x/layer.tar", "../../evil.tar"),)),
        ([("manifest.json", b"[]")], (("layer.tar", "/etc/passwd"),)),
    ],
)
def test_reading_refuses_members_outside_the_archive(
    tmp_path: Path, members: list[tuple[str, bytes]], links: tuple[tuple[str, str], ...]
) -> None:
    archive = tmp_path / "evil.tar"
    archive.write_bytes(tar_of(members, links))
    with pytest.raises(UnsafeArchiveError):
        DockerArchiveImage(archive)


def test_reading_refuses_a_layer_that_does_not_match_its_diff_id(tmp_path: Path) -> None:
    layer = make_tar({"f": b"real"})
    config = json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": [sha256_bytes(b"something else")]}}
    ).encode()
    cfg_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": None, "Layers": ["l/layer.tar"]}]).encode()
    store = BlobStore(tmp_path / "s")
    archive = tmp_path / "bad.tar"
    archive.write_bytes(tar_of([("manifest.json", manifest), (cfg_name, config), ("l/layer.tar", layer)]))
    with pytest.raises(IntegrityError, match="diff id"):
        write_to_store(DockerArchiveImage(archive), store)
    assert list(store.iter_digests()) == []  # nothing published
    assert list(store.tmp_dir.iterdir()) == []


# -- verify / read layouts -------------------------------------------------------------


def test_verify_finds_tampered_and_missing_blobs(
    tmp_path: Path, shm_dir: Path, store: BlobStore, three: BuiltImage
) -> None:
    img = StoreImage(store, three.digest)
    layout = shm_dir / "copied"  # another filesystem: real copies, safe to tamper with
    write_oci_layout(img, layout)
    base = img.layers()[0]
    blob = layout / "blobs" / "sha256" / _hex(base.digest())
    assert blob.stat().st_ino != store.path(base.digest()).stat().st_ino
    assert verify_oci_layout(layout, store) == []  # copies with preserved mtime: trusted without hashing

    before = blob.stat()
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as fh:
        fh.seek(before.st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    for problems in (verify_oci_layout(layout, store), verify_oci_layout(layout, None)):
        assert len(problems) == 1 and base.digest() in problems[0] and "altered" in problems[0]
    # writing the snapshot again notices the damage and replaces the layout
    write_oci_layout(img, layout)
    assert verify_oci_layout(layout, store, full=True) == []

    # someone who also restores the mtime defeats the stat check (the design's
    # git-index trade-off), but not a full verify
    before = blob.stat()
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as fh:
        fh.seek(before.st_size // 2)
        fh.write(b"\0\1\2")
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert verify_oci_layout(layout, store) == []
    assert len(verify_oci_layout(layout, store, full=True)) == 1
    assert len(verify_oci_layout(layout, None)) == 1  # without a store nothing is trusted

    missing = layout / "blobs" / "sha256" / _hex(img.layers()[2].digest())
    missing.unlink()
    (problem,) = verify_oci_layout(layout, store)
    assert "missing" in problem and img.layers()[2].digest() in problem

    (layout / "index.json").write_text("{not json")
    (problem,) = verify_oci_layout(layout, store)
    assert "index.json" in problem


def test_a_layout_copied_into_another_store(tmp_path: Path, store: BlobStore, three: BuiltImage) -> None:
    img = StoreImage(store, three.digest)
    layout = tmp_path / "layout"
    write_oci_layout(img, layout, ref_name=f"{REPO}/three:v1")
    other = BlobStore(tmp_path / "other")
    assert write_to_store(LayoutImage(layout), other) == img.digest()
    copy = StoreImage(other, img.digest())
    assert copy.config_name() == img.config_name()
    assert all(other.verify(d, full=True) for d in copy.blob_digests())

    bad = tmp_path / "bad"
    shutil.copytree(layout, bad)
    victim = bad / "blobs" / "sha256" / _hex(img.layers()[1].digest())
    os.chmod(victim, 0o644)
    victim.write_bytes(b"\0" * victim.stat().st_size)
    third = BlobStore(tmp_path / "third")
    with pytest.raises(IntegrityError):
        write_to_store(LayoutImage(bad), third)
    assert not third.has(img.layers()[1].digest())
    assert not third.has(img.digest())


def test_streaming_a_rotted_blob_fails_before_the_archive_ends(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "s")
    built = build_image(store, [busybox_base_layer()])
    img = StoreImage(store, built.digest)
    layer = img.layers()[0]
    path = store.path(layer.digest())
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"rot")
    chunks: list[bytes] = []
    with pytest.raises(IntegrityError, match="does not hash"):
        for chunk in iter_docker_archive(img, []):
            chunks.append(chunk)
    assert sum(map(len, chunks)) < docker_archive_size(img, [])  # no end-of-archive marker sent
    assert not store.has(layer.digest())  # quarantined, so the next materialize re-fetches it


def test_a_staged_layout_is_itself_a_source(tmp_path: Path, store: BlobStore, three: BuiltImage) -> None:
    """Deploy reads the snapshot, not the cache; a hard-linked one is trusted through the store, O(1)."""
    img = StoreImage(store, three.digest)
    layout = tmp_path / "layout"
    write_oci_layout(img, layout)
    tags = [f"{REPO}/three:v1"]
    staged = LayoutImage(layout, trust=store)
    assert staged.digest() == img.digest()
    assert [x.local_path() for x in staged.layers()] == [
        layout / "blobs" / "sha256" / _hex(x.digest()) for x in img.layers()
    ]
    assert docker_archive_digest(staged, tags) == docker_archive_digest(img, tags)
    untrusted = LayoutImage(layout)  # no store to vouch: every layer is hashed as it streams
    assert [x.local_path() for x in untrusted.layers()] == [None] * 3
    assert docker_archive_digest(untrusted, tags) == docker_archive_digest(img, tags)
    assert sorted(p.name for p in layout.iterdir()) == ["blobs", "index.json", "oci-layout"]

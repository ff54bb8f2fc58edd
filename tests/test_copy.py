"""``copy(src, sink)`` between every place an image lives, checked by the real tools that read them.

Every source (blob store, OCI layout, docker-archive plain and gzipped,
oci-archive) goes into every sink (store, layout, docker-archive,
oci-archive) and is read back: the image id (config digest) and diff ids
never change, and the manifest digest survives wherever the format keeps
the manifest. Damaged and hostile inputs are refused by every sink with
nothing published. Archives written by ``docker save``, ``podman save`` and
``skopeo copy`` are read, and what we write is read by skopeo.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer, gzip_bytes, make_tar
from tests.support.storeimage import store_image
from tests.support.tools import run_ok, tar_of
from wfexs_like.digests import sha256_bytes, sha256_file
from wfexs_like.errors import CacheError, IntegrityError, UnsafeArchiveError
from wfexs_like.images import (
    BlobStore,
    DockerArchiveImage,
    DockerArchiveSink,
    EngineSink,
    Image,
    LayoutImage,
    LayoutSink,
    OciArchiveImage,
    OciArchiveSink,
    SifSink,
    Sink,
    StoreImage,
    StoreSink,
    copy,
    iter_docker_archive,
    iter_oci_archive,
    write_docker_archive,
    write_oci_archive,
    write_oci_layout,
)
from wfexs_like.images.layout import REF_NAME_ANNOTATION
from wfexs_like.images.manifest import OCI_LAYER, OCI_LAYER_GZIP

RUN_ID = uuid.uuid4().hex[:12]
REPO = f"localhost/wfexs-like-copy-{RUN_ID}"
TAG = f"{REPO}/img:v1"
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed; run scripts/setup-host.sh")


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


# -- the images copied --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> BlobStore:
    return BlobStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def gz_image(store: BlobStore) -> StoreImage:
    """Gzip layers, as registries serve them."""
    built = build_image(
        store,
        [{"etc/": None, "etc/a": b"alpha\n"}, {"etc/b": b"bravo\n" * 1000}, {"data/c": os.urandom(300_000)}],
        labels={"wfexs-like.test-run": RUN_ID},
    )
    return StoreImage(store, built.digest)


@pytest.fixture(scope="module")
def plain_image(store: BlobStore, tmp_path_factory: pytest.TempPathFactory) -> StoreImage:
    """Uncompressed layers, as ``docker save`` and ``podman save`` write them."""
    d = tmp_path_factory.mktemp("plain")
    paths = []
    for i, entries in enumerate(({"x/": None, "x/one": b"1\n"}, {"x/two": b"2\n" * 5000})):
        p = d / f"layer{i}.tar"
        p.write_bytes(make_tar(entries))
        paths.append(p)
    config = {"architecture": "amd64", "os": "linux", "config": {"Labels": {"wfexs-like.test-run": RUN_ID}}}
    return store_image(store, paths, config)


@pytest.fixture(params=["gzip-layers", "plain-layers"])
def original(request: pytest.FixtureRequest, gz_image: StoreImage, plain_image: StoreImage) -> StoreImage:
    return gz_image if request.param == "gzip-layers" else plain_image


# -- sources and sinks --------------------------------------------------------------------------

#: Sources that carry the image's own manifest (a docker-archive synthesises one).
KEEPS_MANIFEST = {"store", "layout", "layout-trusted", "oci-archive", "oci-archive-gz"}


def make_source(kind: str, img: StoreImage, work: Path) -> Image:
    work.mkdir(parents=True, exist_ok=True)
    if kind == "store":
        return img
    if kind in ("layout", "layout-trusted"):
        write_oci_layout(img, work / "src-layout", ref_name=TAG)
        return LayoutImage(work / "src-layout", trust=img.store if kind == "layout-trusted" else None)
    if kind in ("docker-archive", "docker-archive-gz"):
        path = work / "src.tar"
        write_docker_archive(img, path, [TAG], compress=kind.endswith("-gz"))
        return DockerArchiveImage(path)
    if kind == "oci-archive":
        write_oci_archive(img, work / "src-oci.tar", ref_name=TAG)
        return OciArchiveImage(work / "src-oci.tar")
    if kind == "oci-archive-gz":  # not what skopeo writes, but a gzipped tar of a layout reads too
        raw = b"".join(iter_oci_archive(img, ref_name=TAG))
        (work / "src-oci.tar.gz").write_bytes(gzip.compress(raw, mtime=0))
        return OciArchiveImage(work / "src-oci.tar.gz")
    raise AssertionError(kind)


SINKS = ["store", "layout", "docker-archive", "docker-archive-gz", "oci-archive"]


def make_sink(kind: str, work: Path) -> tuple[Sink, Path, Callable[[str], Image]]:
    """A sink, where it writes, and how to read what it wrote (given what ``write`` answered)."""
    out = work / f"out-{kind}"
    if kind == "store":
        dst = BlobStore(out)
        return StoreSink(dst), out, lambda digest: StoreImage(dst, digest)
    if kind == "layout":
        return LayoutSink(out, ref_name=TAG), out, lambda _: LayoutImage(out)
    if kind in ("docker-archive", "docker-archive-gz"):
        sink = DockerArchiveSink(out, [TAG], compress=kind.endswith("-gz"))
        return sink, out, lambda _: DockerArchiveImage(out)
    if kind == "oci-archive":
        return OciArchiveSink(out, ref_name=TAG), out, lambda _: OciArchiveImage(out)
    raise AssertionError(kind)


def _diff_ids(img: Image) -> list[str]:
    return [x.diff_id() for x in img.layers()]


def _read_all(img: Image) -> None:
    for layer in img.layers():
        with layer.uncompressed() as fh:
            while fh.read(1 << 20):
                pass


@pytest.mark.parametrize("sink_kind", SINKS)
@pytest.mark.parametrize(
    "src_kind",
    [
        "store",
        "layout",
        "layout-trusted",
        "docker-archive",
        "docker-archive-gz",
        "oci-archive",
        "oci-archive-gz",
    ],
)
def test_copy_between_every_pair_keeps_the_image(
    tmp_path: Path, original: StoreImage, src_kind: str, sink_kind: str
) -> None:
    src = make_source(src_kind, original, tmp_path / "src")
    assert src.config_name() == original.config_name()
    assert src.raw_config_file() == original.raw_config_file()
    assert _diff_ids(src) == _diff_ids(original)
    assert [x.digest() for x in src.layers()] == [x.digest() for x in original.layers()]  # as stored
    if src_kind in KEEPS_MANIFEST:
        assert src.digest() == original.digest()

    sink, out, read_back = make_sink(sink_kind, tmp_path / "dst")
    result = copy(src, sink)
    back = read_back(result)
    assert back.config_name() == original.config_name()
    assert back.raw_config_file() == original.raw_config_file()
    assert _diff_ids(back) == _diff_ids(original)
    assert [x.digest() for x in back.layers()] == [x.digest() for x in original.layers()]
    if not sink_kind.startswith("docker-archive"):
        assert back.digest() == src.digest()
    if src_kind in KEEPS_MANIFEST or sink_kind.startswith("docker-archive"):
        # our docker-archives of an OCI image synthesise exactly its manifest again
        assert back.digest() == original.digest()
    _read_all(back)

    if sink_kind == "store":
        assert result == original.digest()
    elif sink_kind == "layout":
        assert result == sha256_file(out / "index.json")
        index = json.loads((out / "index.json").read_bytes())
        assert index["manifests"][0]["annotations"][REF_NAME_ANNOTATION] == TAG
    else:
        assert result == sha256_file(out)
    if isinstance(back, DockerArchiveImage):
        assert back.repo_tags == [TAG]
    for opened in (src, back):
        close = getattr(opened, "close", None)
        if close is not None:
            close()


def test_sinks_are_deterministic(tmp_path: Path, gz_image: StoreImage) -> None:
    """Same image in, same bytes out, whichever source it came from."""
    layout = tmp_path / "layout"
    write_oci_layout(gz_image, layout, ref_name=TAG)
    sources = [gz_image, LayoutImage(layout), DockerArchiveImage(_write(tmp_path / "a.tar", gz_image))]
    for name, sink_of in (
        ("oci.tar", lambda p: OciArchiveSink(p, ref_name=TAG)),
        ("docker.tar", lambda p: DockerArchiveSink(p, [TAG])),
        ("docker.img", lambda p: DockerArchiveSink(p, [TAG], compress=True)),
    ):
        digests = {copy(s, sink_of(tmp_path / f"{i}-{name}")) for i, s in enumerate(sources)}
        assert len(digests) == 1, name
        files = {(tmp_path / f"{i}-{name}").read_bytes() for i in range(len(sources))}
        assert len(files) == 1
    with gzip.open(tmp_path / "0-docker.img") as fh:
        assert sha256_bytes(fh.read()) == sha256_file(tmp_path / "0-docker.tar")
    head = (tmp_path / "0-docker.img").read_bytes()[:10]
    assert head[3] & 0x08 == 0 and head[4:8] == b"\0\0\0\0"  # no file name, mtime 0


def _write(path: Path, img: Image) -> Path:
    write_docker_archive(img, path, [TAG])
    return path


def test_copy_into_a_store_reuses_what_is_there(tmp_path: Path, gz_image: StoreImage) -> None:
    dst = BlobStore(tmp_path / "dst")
    archive = _write(tmp_path / "a.tar", gz_image)
    assert copy(DockerArchiveImage(archive), StoreSink(dst)) == gz_image.digest()
    inodes = {d: dst.path(d).stat().st_ino for d in gz_image.blob_digests()}
    assert copy(OciArchiveImage(_oci(tmp_path / "o.tar", gz_image)), StoreSink(dst)) == gz_image.digest()
    assert {d: dst.path(d).stat().st_ino for d in gz_image.blob_digests()} == inodes
    assert copy(StoreImage(dst, gz_image.digest()), StoreSink(dst)) == gz_image.digest()


def test_layout_sink_links_only_what_a_store_vouches_for(tmp_path: Path, gz_image: StoreImage) -> None:
    src_layout = tmp_path / "src"
    write_oci_layout(gz_image, src_layout)
    store = gz_image.store
    trusted = tmp_path / "trusted"
    copy(LayoutImage(src_layout, trust=store), LayoutSink(trusted))
    untrusted = tmp_path / "untrusted"
    copy(LayoutImage(src_layout), LayoutSink(untrusted))
    for layer in gz_image.layers():
        name = Path("blobs", "sha256", _hex(layer.digest()))
        assert (trusted / name).stat().st_ino == store.path(layer.digest()).stat().st_ino
        assert (untrusted / name).stat().st_ino != store.path(layer.digest()).stat().st_ino  # hashed copy
        assert (untrusted / name).read_bytes() == store.path(layer.digest()).read_bytes()
        assert (untrusted / name).stat().st_mode & 0o777 == 0o444


@pytest.mark.parametrize("codec", ["xz", "bz2"])
def test_archives_compressed_other_ways_read_too(tmp_path: Path, gz_image: StoreImage, codec: str) -> None:
    compress = lzma.compress if codec == "xz" else bz2.compress
    plain = _write(tmp_path / "a.tar", gz_image)
    packed = tmp_path / f"a.tar.{codec}"
    packed.write_bytes(compress(plain.read_bytes()))
    img = DockerArchiveImage(packed)
    assert img.digest() == gz_image.digest()
    dst = BlobStore(tmp_path / "dst")
    assert copy(img, StoreSink(dst)) == gz_image.digest()
    oci = tmp_path / f"o.tar.{codec}"
    oci.write_bytes(compress(_oci(tmp_path / "o.tar", gz_image).read_bytes()))
    assert OciArchiveImage(oci).digest() == gz_image.digest()
    _read_all(OciArchiveImage(oci))


def _oci(path: Path, img: Image) -> Path:
    write_oci_archive(img, path, ref_name=TAG)
    return path


class _FakeEngine:
    """Only ``load`` matters to EngineSink: it is duck-typed, the real engines have their own tests."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, str]] = []

    def load(self, image: Image, tag: str) -> object:
        self.loaded.append((image.config_name(), tag))
        return type("Info", (), {"image_id": image.config_name()})()


def test_engine_sink_answers_the_engines_image_id(gz_image: StoreImage) -> None:
    engine = _FakeEngine()
    assert copy(gz_image, EngineSink(engine, TAG)) == gz_image.config_name()
    assert engine.loaded == [(gz_image.config_name(), TAG)]


# -- damaged and hostile sources -------------------------------------------------------------


def _flip(path: Path, offset: int) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _member_offset(archive: Path, name: str) -> tuple[int, int]:
    with tarfile.open(archive) as tf:
        ti = tf.getmember(name)
        return ti.offset_data, ti.size


def _assert_nothing_published(kind: str, out: Path, image: Image, bad: str) -> None:
    if kind == "store":
        dst = BlobStore(out)
        assert not dst.has(image.digest())
        assert not dst.has(bad)
        assert list(dst.tmp_dir.iterdir()) == []
    else:
        assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name != out.name] == []  # no temp files or dirs


def _corrupt_sources(img: StoreImage, work: Path) -> Iterator[tuple[str, Callable[[], Image]]]:
    """(name, how to open it) for each kind of damaged source; the damaged layer is the last."""
    victim = img.layers()[-1]
    # a layout of real copies, one layer altered in place (same size)
    layout = work / "layout"
    write_oci_layout(img, layout)
    shutil.rmtree(work / "copied", ignore_errors=True)
    shutil.copytree(layout, work / "copied", copy_function=shutil.copyfile)
    _flip(work / "copied" / "blobs" / "sha256" / _hex(victim.digest()), victim.size() // 2)
    yield "layout", lambda: LayoutImage(work / "copied")
    # the same layout trusted through a store that never saw these copies' bytes
    yield "layout-trusted", lambda: LayoutImage(work / "copied", trust=img.store)
    # an oci-archive with one blob member altered
    oci = _oci(work / "bad-oci.tar", img)
    off, size = _member_offset(oci, f"blobs/sha256/{_hex(victim.digest())}")
    _flip(oci, off + size // 2)
    yield "oci-archive", lambda: OciArchiveImage(oci)
    # a docker-archive with a gzip layer member altered: its digest is computed from the altered
    # bytes, so only inflating it alongside (the diff id check) can catch it
    dock = _write(work / "bad-docker.tar", img)
    name = f"{_hex(victim.digest())}.tar.gz"
    off, size = _member_offset(dock, name)
    _flip(dock, off + size // 2)
    yield "docker-archive-gzip-member", lambda: DockerArchiveImage(dock)


def _sink_for(kind: str, out: Path) -> Sink:
    if kind == "store":
        return StoreSink(BlobStore(out))
    if kind == "layout":
        return LayoutSink(out, ref_name=TAG)
    if kind == "docker-archive":
        return DockerArchiveSink(out, [TAG])
    return OciArchiveSink(out, ref_name=TAG)


@pytest.mark.parametrize("sink_kind", ["store", "layout", "docker-archive", "oci-archive"])
def test_a_damaged_layer_is_refused_by_every_sink(
    tmp_path: Path, gz_image: StoreImage, sink_kind: str
) -> None:
    for name, open_src in _corrupt_sources(gz_image, tmp_path / "src"):
        src = open_src()
        out_dir = tmp_path / "out" / name
        out_dir.mkdir(parents=True)
        out = out_dir / "dest"
        with pytest.raises(IntegrityError):
            copy(src, _sink_for(sink_kind, out))
        _assert_nothing_published(sink_kind, out, src, src.layers()[-1].digest())


def _docker_archive_of(layer: bytes, diff_id: str, layer_name: str = "l/layer.tar") -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": [diff_id]}}).encode()
    cfg_name = f"{sha256_bytes(config).split(':')[1]}.json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [TAG], "Layers": [layer_name]}]).encode()
    return tar_of([("manifest.json", manifest), (cfg_name, config), (layer_name, layer)])


@pytest.mark.parametrize("compressed", [False, True], ids=["plain-member", "gzip-member"])
@pytest.mark.parametrize("sink_kind", ["store", "layout", "docker-archive", "oci-archive"])
def test_a_layer_that_is_not_its_diff_id_is_refused(tmp_path: Path, sink_kind: str, compressed: bool) -> None:
    """The member is intact as bytes; the config pins other content. No sink may publish it."""
    tar = make_tar({"f": b"real"})
    layer = gzip_bytes(tar) if compressed else tar
    archive = tmp_path / "src" / "wrong.tar"
    archive.parent.mkdir()
    archive.write_bytes(_docker_archive_of(layer, sha256_bytes(b"something else")))
    src = DockerArchiveImage(archive)
    assert src.layers()[0].media_type() == (OCI_LAYER_GZIP if compressed else OCI_LAYER)
    out = tmp_path / "out" / "dest"
    out.parent.mkdir()
    with pytest.raises(IntegrityError, match="diff id"):
        copy(src, _sink_for(sink_kind, out))
    _assert_nothing_published(sink_kind, out, src, src.layers()[0].digest())
    with pytest.raises(IntegrityError, match="diff id"), src.layers()[0].uncompressed() as fh:
        fh.read()


@pytest.mark.parametrize(
    "members,links",
    [
        ([("../evil.json", b"{}")], ()),
        ([("/etc/evil.json", b"{}")], ()),
        ([("ok/../../evil", b"x")], ()),
        ([("manifest.json", b"[]")], (("layer.tar", "../../etc/passwd"),)),
        ([("manifest.json", b"[]")], (("x/layer.tar", "../../evil.tar"),)),
        ([("manifest.json", b"[]")], (("layer.tar", "/etc/passwd"),)),
        ([("index.json", b"{}")], (("blobs/sha256/x", "/etc/passwd"),)),
    ],
)
@pytest.mark.parametrize("opener", [DockerArchiveImage, OciArchiveImage])
def test_archives_reaching_outside_themselves_are_refused(
    tmp_path: Path, members: list[tuple[str, bytes]], links: tuple[tuple[str, str], ...], opener: type
) -> None:
    path = tmp_path / "evil.tar"
    path.write_bytes(tar_of(members, links))
    with pytest.raises(UnsafeArchiveError):
        opener(path)
    gz = tmp_path / "evil.tar.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(UnsafeArchiveError):
        opener(gz)


def test_podman_style_symlinked_layers_are_followed_inside_the_archive(tmp_path: Path) -> None:
    """``podman save`` writes ``<id>/layer.tar -> ../<diffid>.tar``: that ``..`` stays inside."""
    tar = make_tar({"f": b"podman"})
    diff_id = sha256_bytes(tar)
    data = _docker_archive_of(tar, diff_id, layer_name="abc/layer.tar")
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=buf, mode="w") as out:
        for ti in src.getmembers():
            if ti.name == "abc/layer.tar":
                real = tarfile.TarInfo(f"{_hex(diff_id)}.tar")
                real.size = ti.size
                out.addfile(real, src.extractfile(ti))
                link = tarfile.TarInfo("abc/layer.tar")
                link.type = tarfile.SYMTYPE
                link.linkname = f"../{_hex(diff_id)}.tar"
                out.addfile(link)
            else:
                out.addfile(ti, src.extractfile(ti))
    path = tmp_path / "podman.tar"
    path.write_bytes(buf.getvalue())
    img = DockerArchiveImage(path)
    assert _diff_ids(img) == [diff_id]
    assert [x.digest() for x in img.layers()] == [diff_id]
    _read_all(img)


def test_archive_errors_name_the_way_out(tmp_path: Path, gz_image: StoreImage) -> None:
    two = _write(tmp_path / "two.tar", gz_image)
    with tarfile.open(two) as tf:
        (entry,) = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    raw = json.dumps([entry, {**entry, "RepoTags": [f"{REPO}/other:v1"]}]).encode()
    merged = tmp_path / "merged.tar"
    with tarfile.open(two) as src, tarfile.open(merged, "w") as out:
        for ti in src.getmembers():
            if ti.name == "manifest.json":
                ti.size = len(raw)
                out.addfile(ti, io.BytesIO(raw))
            else:
                out.addfile(ti, src.extractfile(ti))
    with pytest.raises(CacheError, match="pass repo_tag"):
        DockerArchiveImage(merged)
    assert DockerArchiveImage(merged, repo_tag=f"{REPO}/other:v1").repo_tags == [f"{REPO}/other:v1"]
    with pytest.raises(CacheError, match="holds no image tagged") as exc:
        DockerArchiveImage(merged, repo_tag="localhost/nope:v1")
    assert TAG in str(exc.value)

    layout_tar = _oci(tmp_path / "o.tar", gz_image)
    with pytest.raises(CacheError, match=r"no manifest\.json"):
        DockerArchiveImage(layout_tar)
    with pytest.raises(CacheError, match="no image named"):
        OciArchiveImage(layout_tar, ref_name="localhost/nope:v1")
    assert OciArchiveImage(layout_tar, ref_name=TAG).ref_name == TAG
    with pytest.raises(CacheError, match=r"no index\.json"):
        OciArchiveImage(two)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(gzip.compress(two.read_bytes())[:-5000])
    with pytest.raises(CacheError, match="corrupt or truncated"):
        DockerArchiveImage(truncated)


# -- what real tools write, and read --------------------------------------------------------


@pytest.fixture(scope="module")
def built(
    docker_client: object, docker_made: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """An image Docker built FROM scratch (busybox), and its ``docker save``."""
    ctx = tmp_path_factory.mktemp("ctx")
    shutil.copy2("/bin/busybox", ctx / "busybox")
    (ctx / "note").write_text(f"run {RUN_ID}\n")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        "COPY note /note\n"
        f'LABEL wfexs-like.test-run="{RUN_ID}"\n'
        'CMD ["/bin/busybox", "cat", "/note"]\n'
    )
    client = docker_client
    tag = f"{REPO}/built:v1"
    image, _ = client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True)  # type: ignore[attr-defined]
    docker_made.append(image.id)
    saved = tmp_path_factory.mktemp("saved") / "docker-save.tar"
    run_ok("docker", "save", "-o", str(saved), tag)
    return image.id, saved


@pytest.mark.docker
def test_docker_save_reads_plain_and_gzipped(tmp_path: Path, built: tuple[str, Path]) -> None:
    image_id, saved = built
    img = DockerArchiveImage(saved)
    assert img.config_name() == image_id
    assert img.repo_tags == [f"{REPO}/built:v1"]
    assert {x.media_type() for x in img.layers()} == {OCI_LAYER}
    assert [x.digest() for x in img.layers()] == _diff_ids(img)  # plain members: digest is diff id
    _read_all(img)

    # WfExS-backend stages `docker save | gzip` as <name>.img
    dot_img = tmp_path / "built.img"
    with open(saved, "rb") as src, open(dot_img, "wb") as out:
        subprocess.run(["gzip", "-c"], stdin=src, stdout=out, check=True)
    gz = DockerArchiveImage(dot_img)
    assert gz.digest() == img.digest()
    assert gz.config_name() == image_id
    dst = BlobStore(tmp_path / "dst")
    assert copy(gz, StoreSink(dst)) == img.digest()
    assert StoreImage(dst, img.digest()).config_name() == image_id

    # every sink takes it and keeps the image id
    for sink, read in (
        (LayoutSink(tmp_path / "layout"), lambda: LayoutImage(tmp_path / "layout")),
        (OciArchiveSink(tmp_path / "o.tar"), lambda: OciArchiveImage(tmp_path / "o.tar")),
        (DockerArchiveSink(tmp_path / "d.tar", [TAG]), lambda: DockerArchiveImage(tmp_path / "d.tar")),
    ):
        copy(img, sink)
        back = read()
        assert back.config_name() == image_id
        assert back.digest() == img.digest()


@pytest.mark.docker
def test_docker_loads_what_we_compose_from_its_own_save(
    tmp_path: Path, built: tuple[str, Path], docker_client: object
) -> None:
    image_id, saved = built
    client = docker_client
    tag = f"{REPO}/reloaded:v1"
    src = OciArchiveImage(_oci(tmp_path / "o.tar", DockerArchiveImage(saved)))
    loaded = client.images.load(iter_docker_archive(src, [tag]))  # type: ignore[attr-defined]
    assert [i.id for i in loaded] == [image_id]
    out = client.containers.run(tag, network_mode="none", remove=True)  # type: ignore[attr-defined]
    assert out == f"run {RUN_ID}\n".encode()

    # the WfExS-style gzipped snapshot loads as it is
    gz_tag = f"{REPO}/reloaded-gz:v1"
    dot_img = tmp_path / "snapshot.img"
    copy(src, DockerArchiveSink(dot_img, [gz_tag], compress=True))
    with open(dot_img, "rb") as fh:
        loaded = client.images.load(fh.read())  # type: ignore[attr-defined]
    assert [i.id for i in loaded] == [image_id]
    assert gz_tag in client.images.get(image_id).tags  # type: ignore[attr-defined]


@pytest.mark.podman
def test_podman_save_reads(tmp_path: Path, store: BlobStore, podman_made: list[str]) -> None:
    built = build_image(
        store, [busybox_base_layer(), {"etc/p": b"podman\n"}], labels={"wfexs-like.test-run": RUN_ID}
    )
    img = StoreImage(store, built.digest)
    tag = f"{REPO}/podman:v1"
    podman_made.append(_hex(img.config_name()))
    run_ok("podman", "load", "-q", "-i", str(_oci(tmp_path / "o.tar", img)))
    run_ok("podman", "tag", _hex(img.config_name()), tag)
    saved = tmp_path / "podman-save.tar"
    run_ok("podman", "save", "-q", "--format", "docker-archive", "-o", str(saved), tag)
    with tarfile.open(saved) as tf:
        assert any(m.issym() for m in tf.getmembers())  # its <id>/layer.tar -> ../<diffid>.tar links
    back = DockerArchiveImage(saved)
    assert back.config_name() == img.config_name()
    assert _diff_ids(back) == _diff_ids(img)
    assert {x.media_type() for x in back.layers()} == {OCI_LAYER}
    dst = BlobStore(tmp_path / "dst")
    digest = copy(back, StoreSink(dst))
    assert StoreImage(dst, digest).config_name() == img.config_name()
    assert digest == DockerArchiveImage(saved).digest()  # the synthesised manifest is stable


def _built_image(store: BlobStore) -> BuiltImage:
    return build_image(store, [busybox_base_layer(), {"etc/s": b"skopeo\n"}], labels={"run": RUN_ID})


def test_skopeo_oci_archive_reads(tmp_path: Path, store: BlobStore) -> None:
    _need("skopeo")
    img = StoreImage(store, _built_image(store).digest)
    write_oci_layout(img, tmp_path / "layout", ref_name=TAG)
    out = tmp_path / "skopeo.tar"
    run_ok("skopeo", "copy", "-q", f"oci:{tmp_path / 'layout'}:{TAG}", f"oci-archive:{out}:{TAG}")
    back = OciArchiveImage(out)
    assert back.digest() == img.digest()
    assert back.ref_name == TAG
    assert OciArchiveImage(out, ref_name=TAG).digest() == img.digest()
    _read_all(back)
    dst = BlobStore(tmp_path / "dst")
    assert copy(back, StoreSink(dst)) == img.digest()

    # from a docker-archive skopeo converts the manifest and re-encodes the config: the layers stay
    dock = _write(tmp_path / "d.tar", img)
    out2 = tmp_path / "skopeo2.tar"
    run_ok("skopeo", "copy", "-q", f"docker-archive:{dock}", f"oci-archive:{out2}")
    converted = OciArchiveImage(out2)
    assert _diff_ids(converted) == _diff_ids(img)
    assert converted.config()["config"]["Labels"] == {"run": RUN_ID}
    _read_all(converted)


def test_skopeo_reads_what_we_write(tmp_path: Path, store: BlobStore) -> None:
    _need("skopeo")
    img = StoreImage(store, _built_image(store).digest)
    oci = _oci(tmp_path / "o.tar", img)
    info = json.loads(run_ok("skopeo", "inspect", f"oci-archive:{oci}").stdout)
    assert info["Digest"] == img.digest()
    assert info["Layers"] == [x.digest() for x in img.layers()]
    raw = run_ok("skopeo", "inspect", "--raw", f"oci-archive:{oci}:{TAG}").stdout
    assert sha256_bytes(raw) == img.digest()
    # (skopeo 1.9 cannot read a gzipped docker-archive at all; Docker loads ours below)
    dock = _write(tmp_path / "d.tar", img)
    cfg = json.loads(run_ok("skopeo", "inspect", "--config", f"docker-archive:{dock}").stdout)
    assert cfg["rootfs"]["diff_ids"] == _diff_ids(img)
    info = json.loads(run_ok("skopeo", "inspect", f"docker-archive:{dock}").stdout)
    assert info["Labels"]["run"] == RUN_ID
    assert info["Layers"] == _diff_ids(img)  # skopeo names docker-archive layers by diff id
    # skopeo's copy of our oci-archive into a layout keeps every byte of the image
    run_ok("skopeo", "copy", "-q", f"oci-archive:{oci}", f"oci:{tmp_path / 'via-skopeo'}:{TAG}")
    assert LayoutImage(tmp_path / "via-skopeo").digest() == img.digest()


def test_sif_sink_builds_the_same_sif_from_any_source(tmp_path: Path, gz_image: StoreImage) -> None:
    _need("mksquashfs")
    dot_img = tmp_path / "snapshot.img"
    copy(gz_image, DockerArchiveSink(dot_img, [TAG], compress=True))
    results = []
    for i, src in enumerate((gz_image, DockerArchiveImage(dot_img))):
        dest = tmp_path / f"{i}.sif"
        work = tmp_path / f"work{i}"
        work.mkdir()
        results.append(copy(src, SifSink(dest, tmp_dir=work, source=TAG)))
        assert results[-1] == sha256_file(dest)
        assert dest.read_bytes()[:10] == b"#!/usr/bin"  # a SIF starts with its launch script line
    assert results[0] == results[1]

"""``export`` / ``import`` end to end, through the installed command, against a loopback registry.

Cache A is filled by real materializes (Docker kind for two images sharing
a base layer, and a natively built SIF); the registry is then stopped, the
bundle imported into an empty cache B, and ``materialize --offline`` there
must give records identical to A's. Hostile bundles are made by rewriting a
genuine one; each must be refused naming the member, with cache B left
exactly as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import start_registry
from wfexs_like.cache import ImageCache
from wfexs_like.cache.bundle_export import export_bundle
from wfexs_like.cache.bundle_import import import_bundle
from wfexs_like.errors import IntegrityError, UnsafeArchiveError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.model import Container
from wfexs_like.provenance import read_containers_file

WFEXS_LIKE = Path(sys.executable).with_name("wfexs-like")
RECORD_FIELDS = (
    "taggedName",
    "architecture",
    "operatingSystem",
    "signature",
    "fingerprint",
    "image_signature",
)


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WFEXS_LIKE_CACHE_DIR"}
    p = subprocess.run(
        [str(WFEXS_LIKE), *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )
    if check and p.returncode != 0:
        raise AssertionError(f"wfexs-like {args} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def listing(root: Path) -> dict[str, tuple[int, int, int] | None]:
    """Every path under ``root`` with size, mtime and mode: any write shows up here.

    Directories are listed without their mtime: the staging dir an import
    makes (and removes) inside ``tmp/`` touches that, and every entry added
    or removed anywhere shows up as a path of its own.
    """
    if not root.exists():
        return {}
    out: dict[str, tuple[int, int, int] | None] = {".": None}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        mtime = 0 if p.is_dir() and not p.is_symlink() else st.st_mtime_ns
        out[str(p.relative_to(root))] = (st.st_size, mtime, st.st_mode)
    return out


def members(bundle: Path) -> list[str]:
    with tarfile.open(bundle) as tf:
        return tf.getnames()


def records(path: Path) -> dict[str, tuple[str | None, ...]]:
    return {c.origTaggedName: tuple(getattr(c, f) for f in RECORD_FIELDS) for c in read_containers_file(path)}


@dataclass
class Source:
    """Cache A, filled from a registry that is gone by the time the tests run."""

    root: Path
    cache_a: Path
    images: tuple[BuiltImage, BuiltImage]
    tags: tuple[str, str]
    sif_tag: str
    docker_yaml: Path
    sif_yaml: Path
    bundle: Path

    @property
    def expected_blobs(self) -> set[str]:
        """Both images' blobs, A's two layout indexes and the SIF: each once."""
        digests = {d for img in self.images for d in (img.digest, img.image_id)}
        digests |= {layer.digest for img in self.images for layer in img.manifest.layers}
        digests |= {c.image_signature or "" for c in read_containers_file(self.docker_yaml)}
        digests |= {c.image_signature or "" for c in read_containers_file(self.sif_yaml)}
        return {"blobs/sha256/" + d.removeprefix("sha256:") for d in digests}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    root = tmp_path_factory.mktemp("bundle")
    src = BlobStore(root / "src-store")
    marker = uuid.uuid4().hex[:8]
    images = (
        build_image(src, [busybox_base_layer(), {"etc/one": f"one {marker}\n".encode()}]),
        build_image(src, [busybox_base_layer(), {"etc/two": f"two {marker}\n".encode()}]),
    )
    assert images[0].manifest.layers[0] == images[1].manifest.layers[0], "the base layer must be shared"
    reg = start_registry(root / "registry")
    try:
        tags = (f"{reg.host}/wl-bundle-{marker}/one:1.0", f"{reg.host}/wl-bundle-{marker}/two:1.0")
        for img, tag in zip(images, tags, strict=True):
            repo, _, ref = tag.partition("/")[2].rpartition(":")
            push_image(reg.url, repo, ref, src, img.manifest)
        cache_a = root / "A"
        run(
            "materialize",
            "--cache-dir",
            cache_a,
            "--stage-dir",
            root / "A-docker",
            "-o",
            root / "a-docker.yaml",
            *tags,
        )
        sif_tag = f"docker://{tags[0]}"
        run(
            "materialize", "--engine", "singularity", "--cache-dir", cache_a,
            "--stage-dir", root / "A-sif", "-o", root / "a-sif.yaml", sif_tag,
        )  # fmt: skip
    finally:
        reg.stop()
    bundle = root / "bundle.tar"
    out = run("export", "--cache-dir", cache_a, "-o", bundle, *tags)
    assert f"to {bundle}" in out.stdout
    yield Source(root, cache_a, images, tags, sif_tag, root / "a-docker.yaml", root / "a-sif.yaml", bundle)


# -- the round trip ------------------------------------------------------------------------------


def test_export_holds_one_layout_with_shared_layers_once(source: Source) -> None:
    names = members(source.bundle)
    assert len(names) == len(set(names)), "no member may repeat"
    assert names[:3] == ["oci-layout", "index.json", "wfexs-like-bundle.json"]
    assert names[-1] == "SHA256SUMS"
    blobs = {n for n in names if n.startswith("blobs/")}
    assert blobs == source.expected_blobs
    base = source.images[0].manifest.layers[0].digest.removeprefix("sha256:")
    assert names.count(f"blobs/sha256/{base}") == 1
    # 2 manifests + 2 configs + 3 layers (one shared) + 2 layout indexes + 1 SIF
    assert len(blobs) == 10

    with tarfile.open(source.bundle) as tf:
        infos = tf.getmembers()
        assert {(ti.mtime, ti.uid, ti.gid, ti.mode, ti.type) for ti in infos} == {
            (0, 0, 0, 0o644, tarfile.REGTYPE)
        }
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        sums = tf.extractfile("SHA256SUMS").read().decode()  # type: ignore[union-attr]
        hashed = {ti.name: hashlib.sha256(tf.extractfile(ti).read()).hexdigest() for ti in infos[:-1]}  # type: ignore[union-attr]
    refs = sorted(d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"])
    assert refs == sorted(source.tags)
    assert {d["digest"] for d in index["manifests"]} == {img.digest for img in source.images}
    assert sums == "".join(f"{h}  {n}\n" for n, h in hashed.items()), "SHA256SUMS covers every other member"


def test_skopeo_reads_the_bundle_as_an_oci_archive(source: Source) -> None:
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{source.bundle}:{source.tags[1]}"],
        capture_output=True,
        check=True,
    ).stdout
    assert hashlib.sha256(out).hexdigest() == source.images[1].digest.removeprefix("sha256:")


def test_sha256sum_checks_an_extracted_bundle(source: Source, tmp_path: Path) -> None:
    subprocess.run(["tar", "-xf", str(source.bundle), "-C", str(tmp_path)], check=True)
    p = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count(": OK") == len(members(source.bundle)) - 1


def test_import_then_offline_materialize_gives_identical_records(source: Source, tmp_path: Path) -> None:
    cache_b = tmp_path / "B"
    cache_b.mkdir()
    out = run("import", "--cache-dir", cache_b, "--json", source.bundle)
    summary = json.loads(out.stdout)
    assert summary["images"] == 2 and summary["snapshots"] == 3 and summary["blobs"] == 10
    assert summary["new_blobs"] == 8, "7 image blobs and the SIF are new; layout indexes are rebuilt"
    assert summary["digest"] == "sha256:" + hashlib.sha256(source.bundle.read_bytes()).hexdigest()

    run("materialize", "--offline", "--cache-dir", cache_b, "--stage-dir", tmp_path / "B-docker",
        "-o", tmp_path / "b-docker.yaml", *source.tags)  # fmt: skip
    run("materialize", "--offline", "--engine", "singularity", "--cache-dir", cache_b,
        "--stage-dir", tmp_path / "B-sif", "-o", tmp_path / "b-sif.yaml", source.sif_tag)  # fmt: skip
    assert records(tmp_path / "b-docker.yaml") == records(source.docker_yaml)
    assert records(tmp_path / "b-sif.yaml") == records(source.sif_yaml)
    a_sidecars = sorted(p.read_bytes() for p in (source.cache_a / "snapshots").glob("*_meta.json"))
    b_sidecars = sorted(p.read_bytes() for p in (cache_b / "snapshots").glob("*_meta.json"))
    assert a_sidecars == b_sidecars

    # importing again is idempotent: nothing new, the same entries
    before = {
        k: v for k, v in listing(cache_b).items() if not k.startswith(("trust", "locks", "tags", "tmp"))
    }
    again = json.loads(run("import", "--cache-dir", cache_b, "--json", source.bundle).stdout)
    assert again["new_blobs"] == 0
    after = {k: v for k, v in listing(cache_b).items() if not k.startswith(("trust", "locks", "tags", "tmp"))}
    assert after == before


def test_records_bundle_carries_only_the_sif_and_the_yaml(source: Source, tmp_path: Path) -> None:
    bundle = tmp_path / "sif.tar"
    out = run("export", "--cache-dir", source.cache_a, "-o", bundle, source.sif_yaml)
    assert "1 record(s)" in out.stdout
    sif = read_containers_file(source.sif_yaml)[0]
    assert sif.image_signature is not None
    blobs = {n for n in members(bundle) if n.startswith("blobs/")}
    assert blobs == {"blobs/sha256/" + sif.image_signature.removeprefix("sha256:")}, (
        "a SIF record needs no layers"
    )

    cache_c = tmp_path / "C"
    run("import", "--cache-dir", cache_c, "--records-out", tmp_path / "c.yaml", bundle)
    assert (tmp_path / "c.yaml").read_bytes() == source.sif_yaml.read_bytes()
    run("materialize", "--offline", "--engine", "singularity", "--cache-dir", cache_c,
        "--stage-dir", tmp_path / "C-sif", "-o", tmp_path / "c-sif.yaml", source.sif_tag)  # fmt: skip
    assert records(tmp_path / "c-sif.yaml") == records(source.sif_yaml)
    # the Docker images were not carried, so offline Docker materialize must fail here
    p = run("materialize", "--offline", "--cache-dir", cache_c, "--stage-dir", tmp_path / "C-docker",
            source.tags[1], check=False)  # fmt: skip
    assert p.returncode == 1 and source.tags[1] in p.stderr


def test_export_is_deterministic_and_engine_selects(source: Source, tmp_path: Path) -> None:
    again = tmp_path / "again.tar"
    summary = json.loads(
        run("export", "--cache-dir", source.cache_a, "--json", "-o", again, *source.tags).stdout
    )
    assert again.read_bytes() == source.bundle.read_bytes()
    assert summary["digest"] == "sha256:" + hashlib.sha256(again.read_bytes()).hexdigest()

    docker_only = tmp_path / "docker.tar"
    run("export", "--cache-dir", source.cache_a, "--engine", "docker", "-o", docker_only, source.tags[0])
    sif = read_containers_file(source.sif_yaml)[0].image_signature or ""
    names = members(docker_only)
    assert "blobs/sha256/" + sif.removeprefix("sha256:") not in names
    assert "blobs/sha256/" + source.images[0].digest.removeprefix("sha256:") in names


def test_export_of_an_uncached_tag_names_it_and_writes_nothing(source: Source, tmp_path: Path) -> None:
    missing = f"{source.tags[0].rsplit(':', 1)[0]}:not-cached"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    p = run(
        "export", "--cache-dir", source.cache_a, "-o", out_dir / "b.tar", source.tags[0], missing, check=False
    )
    assert p.returncode == 1
    assert missing in p.stderr and "materialize it there first" in p.stderr
    assert list(out_dir.iterdir()) == []
    p = run("export", "--cache-dir", source.cache_a, "--platform", "linux/arm64", "-o", out_dir / "b.tar",
            source.tags[1], check=False)  # fmt: skip
    assert p.returncode == 1 and "it holds: image (default platform)" in p.stderr, p.stderr
    assert list(out_dir.iterdir()) == []


def test_singularity_export_carries_layers_only_where_no_sif_is_cached(
    source: Source, tmp_path: Path
) -> None:
    bundle = tmp_path / "s.tar"
    run("export", "--cache-dir", source.cache_a, "--engine", "singularity", "-o", bundle, *source.tags)
    blobs = {n for n in members(bundle) if n.startswith("blobs/")}
    sif = read_containers_file(source.sif_yaml)[0].image_signature or ""
    one, two = source.images
    assert "blobs/sha256/" + sif.removeprefix("sha256:") in blobs
    assert "blobs/sha256/" + one.manifest.layers[1].digest.removeprefix("sha256:") not in blobs
    assert "blobs/sha256/" + two.manifest.layers[1].digest.removeprefix("sha256:") in blobs, (
        "without a cached SIF the image travels, for a native SIF build offline"
    )


def test_library_round_trip_from_records(source: Source, tmp_path: Path) -> None:
    recs: list[Container] = read_containers_file(source.docker_yaml)
    s = export_bundle(source.cache_a, recs, tmp_path / "r.tar")
    assert s.records == 2 and s.images == 2 and s.snapshots == 2
    imported = import_bundle(tmp_path / "r.tar", tmp_path / "D", records_out=tmp_path / "d.yaml")
    assert imported.records == 2 and imported.digest == s.digest
    assert {c.image_signature for c in read_containers_file(tmp_path / "d.yaml")} == {
        c.image_signature for c in recs
    }
    cache = ImageCache(tmp_path / "D")
    for c in recs:
        hit = cache.lookup(c.taggedName, "oci-layout", None, full=True)
        assert hit is not None and hit.fingerprint == c.image_signature


# -- hostile bundles -----------------------------------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes]


def _read(bundle: Path) -> list[Member]:
    with tarfile.open(bundle) as tf:
        return [(ti, tf.extractfile(ti).read() if ti.isfile() else b"") for ti in tf.getmembers()]  # type: ignore[union-attr]


def _write(dest: Path, items: list[Member], *, resum: bool) -> None:
    """Write ``items``; with ``resum`` SHA256SUMS is rebuilt so only the planted fault remains."""
    if resum:
        lines = "".join(
            f"{hashlib.sha256(data).hexdigest()}  {ti.name}\n"
            for ti, data in items
            if ti.isfile() and ti.name != "SHA256SUMS"
        )
        items = [(ti, lines.encode()) if ti.name == "SHA256SUMS" else (ti, data) for ti, data in items]
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in items:
            if ti.isfile():
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)


def _special(name: str, kind: bytes, linkname: str = "") -> Member:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = 1, 3
    return ti, b""


def _file(name: str, data: bytes = b"x") -> Member:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    return ti, data


def _before_sums(extra: Member) -> Callable[[list[Member]], list[Member]]:
    return lambda items: [*items[:-1], extra, items[-1]]


def _flip_blob(items: list[Member]) -> list[Member]:
    out = list(items)
    i = max(range(len(out)), key=lambda k: len(out[k][1]) if out[k][0].name.startswith("blobs/") else -1)
    ti, data = out[i]
    out[i] = (ti, data[:100] + bytes([data[100] ^ 1]) + data[101:])
    return out


def _alter_document(items: list[Member]) -> list[Member]:
    return [(ti, data + b" ") if ti.name == "oci-layout" else (ti, data) for ti, data in items]


# (case id, how to make it from the genuine bundle, resum, what the error must say)
HOSTILE: list[tuple[str, Callable[[list[Member]], list[Member]], bool, tuple[str, ...]]] = [
    ("dotdot", _before_sums(_file("blobs/../../evil")), True, ("blobs/../../evil", "'..'")),
    ("absolute", _before_sums(_file("/tmp/wfexs-like-evil")), True, ("/tmp/wfexs-like-evil", "absolute")),
    ("symlink", _before_sums(_special("blobs/sha256/x", tarfile.SYMTYPE, "/etc/passwd")), True,
     ("blobs/sha256/x", "symbolic link", "outside the bundle")),
    ("symlink-up", _before_sums(_special("escape", tarfile.SYMTYPE, "../../../etc")), True,
     ("escape", "outside the bundle")),
    ("hardlink", _before_sums(_special("evil", tarfile.LNKTYPE, "../../etc/passwd")), True,
     ("evil", "hard link", "outside the bundle")),
    ("device", _before_sums(_special("null", tarfile.CHRTYPE)), True, ("null", "device node")),
    ("fifo", _before_sums(_special("pipe", tarfile.FIFOTYPE)), True, ("pipe", "FIFO")),
    ("duplicate", lambda items: [*items[:2], items[1], *items[2:]], False, ("index.json", "twice")),
    ("unknown", _before_sums(_file("run-me.sh", b"#!/bin/sh\n")), True, ("run-me.sh", "not part of")),
    ("blob-mismatch", _flip_blob, True, ("does not hash to its name",)),
    ("sums-mismatch", _alter_document, False, ("oci-layout", "does not match SHA256SUMS")),
    ("no-sums", lambda items: items[:-1], False, ("no SHA256SUMS", "copy it again")),
]  # fmt: skip


@pytest.mark.parametrize(("make", "resum", "says"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_bundle_is_refused_and_nothing_is_written(
    source: Source,
    tmp_path: Path,
    make: Callable[[list[Member]], list[Member]],
    resum: bool,
    says: tuple[str, ...],
) -> None:
    bad = tmp_path / "bad.tar"
    _write(bad, make(_read(source.bundle)), resum=resum)
    cache_b = tmp_path / "B"
    cache_b.mkdir()
    p = run("import", "--cache-dir", cache_b, bad, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    for text in (*says, "nothing was imported"):
        assert text in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert listing(cache_b) == {".": None}, "a refused bundle must leave the cache dir empty"


def test_truncated_bundle_is_refused_naming_the_member(source: Source, tmp_path: Path) -> None:
    data = source.bundle.read_bytes()
    names = _read(source.bundle)
    bad = tmp_path / "cut.tar"
    bad.write_bytes(data[: len(data) // 2])
    p = run("import", "--cache-dir", tmp_path / "new-cache", bad, check=False)
    assert p.returncode == 1
    assert "cut short" in p.stderr and "copy it again" in p.stderr, p.stderr
    assert any(repr(ti.name) in p.stderr for ti, _ in names), "the member being read is named"
    assert not (tmp_path / "new-cache").exists(), "a cache dir the import created is removed again"


def test_oversized_members_are_refused_from_their_header(source: Source, tmp_path: Path) -> None:
    cache_b = tmp_path / "B"
    cache_b.mkdir()
    p = run("import", "--cache-dir", cache_b, "--max-member-size", "2K", source.bundle, check=False)
    assert p.returncode == 1 and "allowed per member" in p.stderr and "--max-member-size" in p.stderr
    assert listing(cache_b) == {".": None}
    p = run("import", "--cache-dir", cache_b, "--max-total-size", "100K", source.bundle, check=False)
    assert p.returncode == 1 and "allowed in total" in p.stderr and "--max-total-size" in p.stderr
    assert listing(cache_b) == {".": None}

    # a header claiming 16 TiB, with no data behind it: refused before a byte is read
    ti = tarfile.TarInfo("blobs/sha256/" + "0" * 64)
    ti.size = 1 << 44
    huge = tmp_path / "huge.tar"
    huge.write_bytes(ti.tobuf(tarfile.PAX_FORMAT) + b"\0" * 1024)
    with pytest.raises(UnsafeArchiveError) as ei:
        import_bundle(huge, cache_b)
    assert "allowed per member" in str(ei.value)
    assert listing(cache_b) == {".": None}

    # GNU base-256 sizes can be negative: refused too, not read as an empty member
    ti.size = -5
    huge.write_bytes(ti.tobuf(tarfile.GNU_FORMAT) + b"\0" * 1024)
    with pytest.raises(UnsafeArchiveError, match="negative size"):
        import_bundle(huge, cache_b)
    assert listing(cache_b) == {".": None}


def test_refusal_leaves_a_populated_cache_exactly_as_it_was(source: Source, tmp_path: Path) -> None:
    cache_b = tmp_path / "B"
    import_bundle(source.bundle, cache_b)
    before = listing(cache_b)
    bad = tmp_path / "bad.tar"
    _write(bad, _flip_blob(_read(source.bundle)), resum=True)
    with pytest.raises(IntegrityError):
        import_bundle(bad, cache_b)
    assert listing(cache_b) == before
    shutil.rmtree(cache_b)


def test_docker_archive_snapshots_travel_as_files(source: Source, tmp_path: Path) -> None:
    from wfexs_like.container_factories import DockerContainerFactory
    from wfexs_like.model import ContainerTaggedName, ContainerType

    cache_a = tmp_path / "A"
    shutil.copytree(source.cache_a, cache_a, symlinks=True)
    tag = [ContainerTaggedName(source.tags[1], ContainerType.Docker)]

    def factory(cache: Path, stage: str) -> DockerContainerFactory:
        return DockerContainerFactory(
            containersCacheDir=cache, stagedContainersDir=tmp_path / stage, snapshot_format="docker-archive"
        )

    made = factory(cache_a, "A-img").materializeContainers(tag, offline=True)
    s = export_bundle(cache_a, [source.tags[1]], tmp_path / "img.tar", engine="docker")
    assert s.snapshots == 2, "the OCI layout and the docker-archive"
    import_bundle(tmp_path / "img.tar", tmp_path / "B")
    again = factory(tmp_path / "B", "B-img").materializeContainers(tag, offline=True)
    assert [tuple(getattr(c, f) for f in RECORD_FIELDS) for c in again] == [
        tuple(getattr(c, f) for f in RECORD_FIELDS) for c in made
    ]
    assert (
        again[0].localPath is not None and again[0].localPath.read_bytes() == made[0].localPath.read_bytes()
    )  # type: ignore[union-attr]


def test_a_corrupt_cached_blob_fails_the_export_and_leaves_no_file(source: Source, tmp_path: Path) -> None:
    cache_a = tmp_path / "A"
    shutil.copytree(source.cache_a, cache_a, symlinks=True)
    layer = source.images[1].manifest.layers[1].digest
    blob = cache_a / "blobs" / "sha256" / layer.removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[50] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    p = run("export", "--cache-dir", cache_a, "-o", out_dir / "b.tar", source.tags[1], check=False)
    assert p.returncode == 1
    assert layer in p.stderr and "cache verify --repair" in p.stderr, p.stderr
    assert list(out_dir.iterdir()) == [], "no bundle, and no temporary file beside it"


def test_records_out_needs_a_bundle_with_records(source: Source, tmp_path: Path) -> None:
    cache_b = tmp_path / "B"
    cache_b.mkdir()
    p = run(
        "import", "--cache-dir", cache_b, "--records-out", tmp_path / "r.yaml", source.bundle, check=False
    )
    assert p.returncode == 1 and "drop --records-out" in p.stderr
    assert listing(cache_b) == {".": None} and not (tmp_path / "r.yaml").exists()


def test_a_gzipped_bundle_imports_the_same(source: Source, tmp_path: Path) -> None:
    import gzip

    gz = tmp_path / "bundle.tar.gz"
    gz.write_bytes(gzip.compress(source.bundle.read_bytes()))
    s = import_bundle(gz, tmp_path / "B")
    assert (s.images, s.snapshots, s.blobs) == (2, 3, 10)
    assert s.digest == "sha256:" + hashlib.sha256(gz.read_bytes()).hexdigest()


def test_cancel_during_import_publishes_nothing(source: Source, tmp_path: Path) -> None:
    from wfexs_like import progress

    class CancelMidway(progress.NullReporter):
        def advance(self, tag: str, key: str, done: int, total: int | None) -> None:
            if total and done > total // 3:
                progress.request_cancel()

    cache_b = tmp_path / "B"
    try:
        with progress.reporting(CancelMidway()), pytest.raises(progress.Cancelled):
            import_bundle(source.bundle, cache_b)
    finally:
        progress.reset_cancel()
    assert not cache_b.exists()

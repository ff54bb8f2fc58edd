"""SingularityContainerFactory end to end: registry -> blob store -> native SIF -> staged dir.

No Apptainer here: the native builder is what runs, and the SIF it writes is
checked with independent tools (siftool, unsquashfs). The spython path runs
only where an apptainer/singularity binary exists, and is reported skipped otherwise.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry, start_registry
from wfexs_like.container_factories import SingularityContainerFactory
from wfexs_like.digests import sha256_file
from wfexs_like.errors import ContainerEngineException, ContainerNotFoundException, IntegrityError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.model import Container, ContainerTaggedName, ContainerType

ENGINE = shutil.which("apptainer") or shutil.which("singularity")


def _whiteout_image(store: BlobStore, marker: str) -> BuiltImage:
    return build_image(
        store,
        [
            busybox_base_layer(),
            {"etc/a": b"deleted later\n", "data/": None, "data/old/": None, "data/old/x": b"old\n"},
            {
                "etc/.wh.a": b"",
                "data/old/.wh..wh..opq": b"",
                "data/old/new": marker.encode(),
            },
        ],
        entrypoint=["/bin/busybox"],
        cmd=["cat", "/data/old/new"],
        env=["PATH=/bin", f"MARKER={marker}"],
        labels={"org.example.marker": marker},
    )


class Pushed:
    def __init__(self, reg: RunningRegistry, store: BlobStore) -> None:
        self.reg = reg
        self.marker = uuid.uuid4().hex
        self.repo = f"wl-sif-{self.marker[:8]}/tool"
        self.image = _whiteout_image(store, self.marker)
        push_image(reg.url, self.repo, "1.0", store, self.image.manifest)

    @property
    def tag(self) -> str:
        return f"docker://{self.reg.host}/{self.repo}:1.0"


@pytest.fixture
def pushed(registry: RunningRegistry, src_store: BlobStore) -> Pushed:
    return Pushed(registry, src_store)


def _factory(tmp_path: Path, cache: str = "cache", stage: str = "wf") -> SingularityContainerFactory:
    return SingularityContainerFactory(
        containersCacheDir=tmp_path / cache, stagedContainersDir=tmp_path / stage
    )


def _unsquash_list(sif: Path, tmp_path: Path) -> set[str]:
    listing = subprocess.run(["siftool", "list", str(sif)], capture_output=True, text=True, check=True).stdout
    part_line = next(line for line in listing.splitlines() if "Squashfs" in line)
    part_id = part_line.split("|")[0].strip()
    part = tmp_path / f"part-{uuid.uuid4().hex}.squashfs"
    with open(part, "wb") as fh:
        subprocess.run(["siftool", "dump", part_id, str(sif)], stdout=fh, check=True)
    out = subprocess.run(["unsquashfs", "-lc", str(part)], capture_output=True, text=True, check=True).stdout
    return {line.removeprefix("squashfs-root") for line in out.splitlines()}


def test_docker_tag_becomes_a_sif_with_the_merged_filesystem(tmp_path: Path, pushed: Pushed) -> None:
    f = _factory(tmp_path)
    c = f.materializeContainers([ContainerTaggedName(pushed.tag, ContainerType.Singularity)])[0]
    assert c.localPath is not None and c.localPath.is_file()
    assert c.signature == c.image_signature == sha256_file(c.localPath)
    assert c.fingerprint == f"{pushed.reg.host}/{pushed.repo}@{pushed.image.digest}"
    assert c.source_type == ContainerType.Docker
    assert c.taggedName == pushed.tag
    assert c.architecture == "amd64"
    info = subprocess.run(
        ["siftool", "list", str(c.localPath)], capture_output=True, text=True, check=True
    ).stdout
    assert "Squashfs" in info and "System" in info and "amd64" in info

    files = _unsquash_list(c.localPath, tmp_path)
    assert "/bin/busybox" in files
    assert "/etc/a" not in files, "the whiteout must delete /etc/a"
    assert "/data/old/new" in files and "/data/old/x" not in files, "the opaque dir replaces /data/old"
    for runtime in (
        "/.singularity.d/runscript",
        "/.singularity.d/labels.json",
        "/singularity",
        "/environment",
    ):
        assert runtime in files


def test_same_image_gives_the_same_sif_and_is_not_rebuilt(tmp_path: Path, pushed: Pushed) -> None:
    tag = ContainerTaggedName(pushed.tag, ContainerType.Singularity)
    first = _factory(tmp_path, "cacheA").materializeContainers([tag])[0]
    other_cache = _factory(tmp_path, "cacheB", "wfB").materializeContainers([tag])[0]
    assert first.image_signature == other_cache.image_signature, "SIF builds must be deterministic"

    f = _factory(tmp_path, "cacheA", "wf2")
    cached_inode = f.cc_handler.store.path(first.image_signature or "").stat().st_ino
    again = f.materializeContainers([tag])[0]
    assert again.image_signature == first.image_signature
    assert f.cc_handler.store.path(again.image_signature or "").stat().st_ino == cached_inode
    assert again.localPath is not None and again.localPath.stat().st_ino == cached_inode


def test_offline_restage_deploy_and_tamper(tmp_path: Path, src_store: BlobStore) -> None:
    reg = start_registry(tmp_path / "reg")
    try:
        pushed = Pushed(reg, src_store)
        online = _factory(tmp_path).materializeContainers(
            [ContainerTaggedName(pushed.tag, ContainerType.Singularity)]
        )
    finally:
        reg.stop()
    f = _factory(tmp_path, stage="wf-offline")
    c = f.materializeContainers([ContainerTaggedName(pushed.tag, ContainerType.Singularity)], offline=True)[0]
    assert c.image_signature == online[0].image_signature
    assert f.deploySingleContainer(c) == (c, False)

    # a staged copy whose bytes changed is refused (a new inode: the cache's copy is untouched)
    assert c.localPath is not None
    data = bytearray(c.localPath.read_bytes())
    data[-100] ^= 0xFF
    c.localPath.unlink()
    c.localPath.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as ei:
        f.deploySingleContainer(c)
    assert "refusing to deploy" in str(ei.value)
    # force re-stages the trustworthy cached copy
    assert f.deploySingleContainer(c, force=True) == (c, False)
    assert sha256_file(c.localPath) == c.image_signature


def test_injected_sif_is_reused_without_network(tmp_path: Path, src_store: BlobStore) -> None:
    reg = start_registry(tmp_path / "reg")
    try:
        pushed = Pushed(reg, src_store)
        earlier = _factory(tmp_path, "cacheA", "wf1").materializeContainers(
            [ContainerTaggedName(pushed.tag, ContainerType.Singularity)]
        )
    finally:
        reg.stop()
    f = _factory(tmp_path, "cacheB", "wf2")
    reused = f.materializeContainers(
        [ContainerTaggedName(pushed.tag, ContainerType.Singularity)],
        offline=True,
        injectable_containers=earlier,
    )[0]
    assert (reused.image_signature, reused.fingerprint) == (
        earlier[0].image_signature,
        earlier[0].fingerprint,
    )
    assert reused.localPath is not None and (tmp_path / "wf2") in reused.localPath.parents
    assert f.cc_handler.query(ContainerTaggedName(pushed.tag, ContainerType.Singularity))[0]


def test_local_sif_file_is_ingested_as_is(tmp_path: Path, pushed: Pushed) -> None:
    built = _factory(tmp_path).materializeContainers(
        [ContainerTaggedName(pushed.tag, ContainerType.Singularity)]
    )[0]
    assert built.localPath is not None
    local = tmp_path / "mine.sif"
    shutil.copy(built.localPath, local)
    f = _factory(tmp_path, "cache2", "wf2")
    c = f.materializeContainers([ContainerTaggedName(str(local), ContainerType.Singularity)])[0]
    assert c.image_signature == built.image_signature and c.fingerprint == built.image_signature
    assert c.source_type == ContainerType.Singularity
    assert c.architecture == "amd64"
    not_sif = tmp_path / "not.sif"
    not_sif.write_bytes(b"<html>404</html>")
    with pytest.raises(ContainerNotFoundException) as ei:
        f.materializeContainers([ContainerTaggedName(str(not_sif), ContainerType.Singularity)])
    assert "not a valid SIF" in str(ei.value)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0),
        lambda *a: _Handler(*a, directory=str(root)),  # type: ignore[misc]
    )
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_sif_url_downloaded_with_digest_check(
    tmp_path: Path, pushed: Pushed, http_dir: tuple[Path, str]
) -> None:
    root, base = http_dir
    built = _factory(tmp_path).materializeContainers(
        [ContainerTaggedName(pushed.tag, ContainerType.Singularity)]
    )[0]
    assert built.localPath is not None
    shutil.copy(built.localPath, root / "tool.sif")
    (root / "page.sif").write_text("<html>not a sif</html>")
    f = _factory(tmp_path, "cache-http", "wf-http")
    c = f.materializeContainers([ContainerTaggedName(f"{base}/tool.sif", ContainerType.Singularity)])[0]
    assert c.image_signature == built.image_signature

    pinned_wrong = Container(
        origTaggedName=f"{base}/tool.sif",
        type=ContainerType.Singularity,
        image_signature="sha256:" + "00" * 32,
    )
    g = _factory(tmp_path, "cache-http2", "wf-http2")
    with pytest.raises(ContainerNotFoundException) as ei:
        g.materializeContainers([pinned_wrong])
    assert "not the expected" in str(ei.value) and "sha256:" + "00" * 32 in str(ei.value)
    with pytest.raises(ContainerNotFoundException) as ei:
        g.materializeContainers(
            [
                ContainerTaggedName(f"{base}/page.sif", ContainerType.Singularity),
                ContainerTaggedName(f"{base}/missing.sif", ContainerType.Singularity),
            ]
        )
    reasons = dict(ei.value.failures)
    assert "not a valid SIF" in reasons[f"{base}/page.sif"]
    assert "404" in reasons[f"{base}/missing.sif"]
    assert not list((tmp_path / "cache-http2" / "refs" / "sif").iterdir()), "nothing was cached"


@pytest.mark.skipif(ENGINE is not None, reason="an apptainer/singularity binary is installed")
def test_engine_only_schemes_need_an_engine(tmp_path: Path) -> None:
    f = _factory(tmp_path)
    with pytest.raises(ContainerNotFoundException) as ei:
        f.materializeContainers(
            [ContainerTaggedName("library://sylabs/examples/lolcow:latest", ContainerType.Singularity)]
        )
    assert "only be pulled by Apptainer or Singularity" in str(ei.value)
    assert "native SIF builder" in f.engine_version()
    with pytest.raises(ContainerEngineException):
        f.materializeSingleContainer(
            ContainerTaggedName("shub://127.0.0.1:1/x/y:1", ContainerType.Singularity)
        )


@pytest.mark.skipif(
    ENGINE is None, reason="no apptainer/singularity binary on PATH (none is packaged for Debian 12)"
)
def test_spython_pulls_with_the_engine(tmp_path: Path, pushed: Pushed) -> None:
    f = SingularityContainerFactory(
        containersCacheDir=tmp_path / "cache",
        stagedContainersDir=tmp_path / "wf",
        use_engine_for_docker=True,
        insecure_registries=[pushed.reg.host],
    )
    c = f.materializeContainers([ContainerTaggedName(pushed.tag, ContainerType.Singularity)])[0]
    assert c.localPath is not None and c.localPath.is_file()
    meta = json.loads((c.metadataLocalPath or Path()).read_text())
    assert meta["extra"]["source"] == "engine"
    assert f.deploySingleContainer(c) == (c, False)

"""``copy`` with the places that need a live service: a registry, Docker, Podman, and the SIF sink.

``test_copy.py`` covers the file formats against each other. Here every
source (registry, Docker, Podman, store, layout, docker-archive,
oci-archive) goes into every sink (store, layout, docker-archive, Docker,
Podman, SIF) through the one ``copy`` function. What must hold on both
sides: the image id (config digest) and diff ids always; the manifest digest
wherever the format keeps the manifest (a docker save re-encodes layers, so
an engine source synthesizes its own); and the SIF's file system is the same
bytes whatever the image came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.imagegen import build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.engines import DockerEngine, PodmanEngine
from wfexs_like.images import (
    BlobStore,
    DockerArchiveImage,
    DockerArchiveSink,
    EngineSink,
    Image,
    LayoutImage,
    LayoutSink,
    OciArchiveImage,
    SifSink,
    StoreImage,
    StoreSink,
    copy,
    write_docker_archive,
    write_oci_archive,
    write_oci_layout,
)
from wfexs_like.images.sif import read_sif
from wfexs_like.registry import RegistryClient

RUN = uuid.uuid4().hex[:10]
SOURCES = ["registry", "docker", "podman", "store", "layout", "docker-archive", "oci-archive"]
SINKS = ["store", "layout", "docker-archive", "docker", "podman", "sif"]
#: Sources whose manifest is the original's (engines re-save layers uncompressed).
KEEPS_MANIFEST = {"registry", "store", "layout", "oci-archive"}
#: What the SIF's definition file names; without it the digest is named, which engine sources change.
SIF_SOURCE = "docker://localhost/copied:1"


@pytest.fixture(scope="module")
def world(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One image, pushed to the registry and loaded into Docker and Podman; cleaned up after."""
    root = tmp_path_factory.mktemp("copy-engines")
    store = BlobStore(root / "store")
    img = build_image(
        store,
        [busybox_base_layer(), {"etc/copied": RUN.encode()}],
        cmd=["/bin/busybox", "cat", "/etc/copied"],
    )
    repo = f"wl-copy-{RUN}/img"
    push_image(registry.url, repo, "1", store, img.manifest)
    original = StoreImage(store, img.digest)
    docker, podman = DockerEngine(), PodmanEngine(tmp_dir=root)
    tag = f"localhost/wl-copy-{RUN}/src:1"
    docker.load(original, tag)
    podman.load(original, tag)
    world = {"root": root, "store": store, "img": img, "original": original, "registry": registry}
    world.update(repo=repo, docker=docker, podman=podman, tag=tag)
    try:
        yield world
    finally:
        for engine_cmd in (["docker", "rmi", "-f"], ["podman", "rmi", "-f"]):
            subprocess.run([*engine_cmd, img.image_id.split(":", 1)[1]], capture_output=True, check=False)
        docker.close()


def _source(kind: str, world: dict, work: Path) -> Image:
    original: StoreImage = world["original"]
    if kind == "registry":
        client = RegistryClient()
        return client.image(world["registry"].host, world["repo"], "1")
    if kind in ("docker", "podman"):
        return world[kind].save(world["tag"], work)
    if kind == "store":
        return original
    if kind == "layout":
        write_oci_layout(original, work / "layout", ref_name="v1")
        return LayoutImage(work / "layout", ref_name="v1")
    if kind == "docker-archive":
        write_docker_archive(original, work / "img.tar", [world["tag"]])
        return DockerArchiveImage(work / "img.tar")
    write_oci_archive(original, work / "img.oci.tar", ref_name="v1")
    return OciArchiveImage(work / "img.oci.tar", ref_name="v1")


def _squashfs_digest(sif: Path) -> str:
    info = read_sif(sif)
    part = info.primary_partition()
    assert part is not None
    h = hashlib.sha256()
    with open(sif, "rb") as fh:
        fh.seek(part.offset)
        h.update(fh.read(part.size))
    return h.hexdigest()


@pytest.fixture(scope="module")
def reference_sif(world: dict) -> str:
    """The file system of the SIF built from the original image, which every source must reproduce."""
    dest = world["root"] / "reference.sif"
    copy(world["original"], SifSink(dest, tmp_dir=world["root"], source=SIF_SOURCE))
    return _squashfs_digest(dest)


def _diff_ids(image: Image) -> list[str]:
    return [layer.diff_id() for layer in image.layers()]


@pytest.mark.parametrize("sink_kind", SINKS)
@pytest.mark.parametrize("source_kind", SOURCES)
def test_copy_between_live_services_and_formats_keeps_the_image(
    source_kind: str, sink_kind: str, world: dict, reference_sif: str, tmp_path: Path
) -> None:
    img = world["img"]
    src = _source(source_kind, world, tmp_path)
    with contextlib.closing(src) if hasattr(src, "close") else contextlib.nullcontext():
        assert src.config_name() == img.image_id
        assert _diff_ids(src) == [layer.diff_id() for layer in world["original"].layers()]
        if source_kind in KEEPS_MANIFEST:
            assert src.digest() == img.digest
        back = _copy_and_read_back(sink_kind, src, world, tmp_path)
        if back is not None:
            assert back.config_name() == img.image_id
            assert _diff_ids(back) == _diff_ids(src)
            if sink_kind in ("store", "layout"):
                assert back.digest() == src.digest(), "these sinks keep the manifest byte for byte"
        if sink_kind == "sif":
            assert _squashfs_digest(tmp_path / "out.sif") == reference_sif


def _copy_and_read_back(sink_kind: str, src: Image, world: dict, work: Path) -> Image | None:
    read: Callable[[], Image]
    if sink_kind == "store":
        store = BlobStore(work / "out-store")
        digest = copy(src, StoreSink(store))
        read = lambda: StoreImage(store, digest)  # noqa: E731
    elif sink_kind == "layout":
        copy(src, LayoutSink(work / "out-layout", ref_name="out"))
        read = lambda: LayoutImage(work / "out-layout", ref_name="out")  # noqa: E731
    elif sink_kind == "docker-archive":
        copy(src, DockerArchiveSink(work / "out.tar", [f"localhost/wl-copy-{RUN}/out:1"]))
        read = lambda: DockerArchiveImage(work / "out.tar")  # noqa: E731
    elif sink_kind in ("docker", "podman"):
        engine = world[sink_kind]
        tag = f"localhost/wl-copy-{RUN}/sunk-{uuid.uuid4().hex[:6]}:1"
        image_id = copy(src, EngineSink(engine, tag))
        assert image_id == world["img"].image_id
        info = engine.inspect(tag)
        assert info is not None and info.image_id == image_id, f"{sink_kind} reports the image under {tag}"
        engine_cmd = "docker" if sink_kind == "docker" else "podman"
        subprocess.run([engine_cmd, "rmi", tag], capture_output=True, check=False)
        return None
    else:
        copy(src, SifSink(work / "out.sif", tmp_dir=work, source=SIF_SOURCE))
        return None
    return read()

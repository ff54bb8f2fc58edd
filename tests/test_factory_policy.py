"""Factory policy against a fake engine: no daemon, the real cache, real registries on loopback.

Each defect found by using the tool as a user would has its regression test
here: offline serving another image whose name flattens the same (1),
records of another kind deployed (2), ``--stage-dir`` ignored on deploy (3),
and a SIF that could not be built offline from layers a Docker materialize
had cached (4). WfExS-backend's own snapshot shape (a gzipped ``docker save``
``.img`` with a ``sha256=<base64>`` fingerprint) is re-staged offline and
deployed, and our ``docker-archive`` snapshot format is what WfExS stages.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.fake_engine import FakeEngine
from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry, running_registry
from tests.support.wfexs import wfexs_record
from wfexs_like.cache import ImageCache
from wfexs_like.container_factories import (
    DockerContainerFactory,
    PodmanContainerFactory,
    SingularityContainerFactory,
)
from wfexs_like.digests import sha256_file
from wfexs_like.errors import (
    ContainerEngineException,
    ContainerFactoryException,
    ContainerNotFoundException,
    IntegrityError,
)
from wfexs_like.images.layout import write_oci_layout
from wfexs_like.images.store import StoreImage
from wfexs_like.model import Container, ContainerTaggedName, ContainerType
from wfexs_like.provenance import read_containers_file, write_containers_file

DOCKER = ContainerType.Docker


def _image(src_store, marker: str) -> BuiltImage:
    return build_image(
        src_store, [busybox_base_layer(), {"etc/marker": marker.encode()}], cmd=["/bin/busybox", "true"]
    )


def _factory(tmp_path: Path, engine: FakeEngine | None = None, **kw) -> DockerContainerFactory:
    return DockerContainerFactory(
        containersCacheDir=tmp_path / "cache", engine=engine or FakeEngine("docker"), **kw
    )


# -- defect 1: two references that flatten to the same file name ---------------------------------


def test_offline_never_serves_another_image_whose_name_flattens_the_same(tmp_path: Path, src_store) -> None:
    with running_registry(tmp_path / "reg") as reg:
        a, b = _image(src_store, "a"), _image(src_store, "b")
        push_image(reg.url, "ns/img1", "1", src_store, a.manifest)
        push_image(reg.url, "ns-img1", "1", src_store, b.manifest)
        tag_a, tag_b = f"{reg.host}/ns/img1:1", f"{reg.host}/ns-img1:1"
        f = _factory(tmp_path)
        [ca] = f.materializeContainers([ContainerTaggedName(tag_a, DOCKER)], tmp_path / "wf")
        assert ca.signature == a.image_id
    # the registry is gone: offline, the second tag is simply not cached
    with pytest.raises(ContainerNotFoundException) as ei:
        f.materializeContainers([ContainerTaggedName(tag_b, DOCKER)], tmp_path / "wf2", offline=True)
    assert tag_b in str(ei.value)


def test_online_two_flattening_tags_keep_their_own_records_and_staged_files(
    tmp_path: Path, registry: RunningRegistry, src_store
) -> None:
    p = f"wl{uuid.uuid4().hex[:8]}"
    a, b = _image(src_store, "a"), _image(src_store, "b")
    push_image(registry.url, f"{p}/img1", "1", src_store, a.manifest)
    push_image(registry.url, f"{p}-img1", "1", src_store, b.manifest)
    tags = [ContainerTaggedName(f"{registry.host}/{p}/img1:1", DOCKER)]
    tags.append(ContainerTaggedName(f"{registry.host}/{p}-img1:1", DOCKER))
    f = _factory(tmp_path)
    ca, cb = f.materializeContainers(tags, tmp_path / "wf")
    assert (ca.signature, cb.signature) == (a.image_id, b.image_id)
    assert ca.localPath != cb.localPath, "both staged, neither overwrites the other"
    offline = f.materializeContainers(tags, tmp_path / "wf2", offline=True)
    assert [c.signature for c in offline] == [a.image_id, b.image_id]
    assert [c.fingerprint for c in offline] == [ca.fingerprint, cb.fingerprint]


# -- the fake engine: deploy policy ---------------------------------------------------------------


@pytest.fixture
def layout_tag(tmp_path: Path, src_store) -> tuple[str, BuiltImage]:
    """An OCI layout on disk, named with skopeo's ``oci:DIR:REF`` syntax: no registry at all."""
    img = _image(src_store, "layout")
    write_oci_layout(StoreImage(src_store, img.digest), tmp_path / "src-layout", ref_name="v1")
    return f"oci:{tmp_path / 'src-layout'}:v1", img


def test_deploy_loads_only_what_the_engine_lacks(tmp_path: Path, layout_tag) -> None:
    tag, img = layout_tag
    engine = FakeEngine("docker")
    f = _factory(tmp_path, engine)
    [c] = f.materializeContainers([ContainerTaggedName(tag, DOCKER)], tmp_path / "wf")
    assert engine.calls == [], "materializing needs no engine"
    assert c.signature == img.image_id and c.fingerprint == f"{tag}@{img.digest}"
    assert f.deploySingleContainer(c)[1] is True
    assert engine.image_ids == {img.image_id}
    assert f.deploySingleContainer(c)[1] is False
    assert [call[0] for call in engine.calls].count("load") == 1
    assert f.deploySingleContainer(c, force=True)[1] is True


def test_an_engine_that_is_down_fails_deploy_not_materialize(tmp_path: Path, layout_tag) -> None:
    tag, _ = layout_tag
    engine = FakeEngine("docker", down=True)
    f = _factory(tmp_path, engine)
    [c] = f.materializeContainers([ContainerTaggedName(tag, DOCKER)], tmp_path / "wf")
    with pytest.raises(ContainerEngineException) as ei:
        f.deploySingleContainer(c)
    assert "cannot reach" in str(ei.value)


def test_engine_only_image_is_taken_from_the_engine_when_the_registry_lacks_it(
    tmp_path: Path, registry: RunningRegistry, src_store
) -> None:
    img = _image(src_store, "local")
    engine = FakeEngine("docker")
    name = f"{registry.host}/wl{uuid.uuid4().hex[:8]}/local-only:1"
    engine.load(StoreImage(src_store, img.digest), name)
    engine.calls.clear()
    f = _factory(tmp_path, engine)
    [c] = f.materializeContainers([ContainerTaggedName(name, DOCKER)], tmp_path / "wf")
    assert c.signature == img.image_id
    assert ("save", img.image_id) in engine.calls
    assert json.loads(Path(c.metadataLocalPath or "").read_text())["extra"]["source"] == "engine"


# -- defect 2: records of another kind --------------------------------------------------------------


def test_a_sif_record_is_refused_by_docker_and_podman(tmp_path: Path, layout_tag) -> None:
    tag, _ = layout_tag
    s = SingularityContainerFactory(containersCacheDir=tmp_path / "cache")
    [sif] = s.materializeContainers([ContainerTaggedName(tag, ContainerType.Singularity)], tmp_path / "wf")
    for cls in (DockerContainerFactory, PodmanContainerFactory):
        f = cls(containersCacheDir=tmp_path / "cache", engine=FakeEngine())
        with pytest.raises(ContainerFactoryException) as ei:
            f.deploySingleContainer(sif, containers_dir=tmp_path / "wf")
        assert "SIF" in str(ei.value) and tag in str(ei.value)


def test_a_docker_record_deployed_for_apptainer_becomes_a_sif(tmp_path: Path, layout_tag) -> None:
    tag, img = layout_tag
    [c] = _factory(tmp_path).materializeContainers([ContainerTaggedName(tag, DOCKER)], tmp_path / "wf")
    s = SingularityContainerFactory(containersCacheDir=tmp_path / "cache")
    converted, loaded = s.deploySingleContainer(c, containers_dir=tmp_path / "wf")
    assert loaded is False and converted.type == ContainerType.Singularity
    sif = Path(converted.localPath or "")
    assert sif.is_file() and sif.read_bytes()[32:42] == b"SIF_MAGIC\x00"
    assert converted.image_signature == sha256_file(sif)
    assert converted.fingerprint == f"{tag}@{img.digest}"


def test_a_file_that_is_not_a_sif_is_not_deployed(tmp_path: Path) -> None:
    fake = tmp_path / "passwd"
    shutil.copy("/etc/passwd", fake)
    record = Container(
        origTaggedName="docker://busybox:1",
        type=ContainerType.Singularity,
        taggedName="docker://docker.io/library/busybox:1",
        localPath=fake,
        signature=sha256_file(fake),
        image_signature=sha256_file(fake),
        source_type=DOCKER,
    )
    s = SingularityContainerFactory(containersCacheDir=tmp_path / "cache")
    with pytest.raises(ContainerFactoryException) as ei:
        s.deploySingleContainer(record, containers_dir=tmp_path / "elsewhere")
    assert "not a SIF" in str(ei.value)


# -- defect 3: the stage dir given to deploy is the one used -----------------------------------------


def test_deploy_uses_the_stage_dir_it_is_given_and_records_travel(tmp_path: Path, layout_tag) -> None:
    tag, img = layout_tag
    engine = FakeEngine("docker")
    f = _factory(tmp_path, engine)
    wf = tmp_path / "wf"
    containers = f.materializeContainers([ContainerTaggedName(tag, DOCKER)], wf / "containers")
    write_containers_file(containers, wf / "containers.yaml", containers_dir=wf / "containers")
    # a copy of the whole workflow dir elsewhere (real copies, no links into the cache)
    moved = tmp_path / "moved"
    shutil.copytree(wf, moved)
    [c] = read_containers_file(moved / "containers.yaml", containers_dir=moved / "containers")
    assert c.localPath is not None and moved in c.localPath.parents
    shutil.rmtree(wf)
    assert f.deploySingleContainer(c, containers_dir=moved / "containers")[1] is True
    # tamper with the copy under the given dir: refused, whatever else exists
    engine.remove(img.image_id)
    layer = next((moved / "containers").rglob("blobs/sha256/*"))
    layer.chmod(0o644)
    layer.write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        f.deploySingleContainer(c, containers_dir=moved / "containers")


# -- defect 4: a SIF built offline from layers another engine cached ----------------------------------


def test_sif_is_built_offline_from_layers_a_docker_materialize_cached(tmp_path: Path, src_store) -> None:
    with running_registry(tmp_path / "reg") as reg:
        img = _image(src_store, "sif")
        push_image(reg.url, "ns/tool", "2", src_store, img.manifest)
        tag = f"{reg.host}/ns/tool:2"
        _factory(tmp_path).materializeContainers([ContainerTaggedName(tag, DOCKER)], tmp_path / "wf")
    s = SingularityContainerFactory(containersCacheDir=tmp_path / "cache")
    [c] = s.materializeContainers(
        [ContainerTaggedName(f"docker://{tag}", ContainerType.Singularity)], tmp_path / "sif", offline=True
    )
    assert c.fingerprint == f"{tag.rsplit(':', 1)[0]}@{img.digest}"
    assert Path(c.localPath or "").read_bytes()[32:42] == b"SIF_MAGIC\x00"


# -- WfExS-backend's snapshots: .img docker-archives -----------------------------------------------------


def test_offline_restage_and_deploy_from_a_wfexs_img_snapshot(tmp_path: Path, src_store) -> None:
    img = _image(src_store, "wfexs")
    record = wfexs_record(tmp_path, src_store, img, "127.0.0.1:1/ns/bookworm:12")
    engine = FakeEngine("docker")
    f = _factory(tmp_path, engine)
    # deploy straight from WfExS's staged dir
    assert f.deploySingleContainer(record, containers_dir=Path(record.localPath or "").parent)[1] is True
    assert engine.image_ids == {img.image_id}
    # and re-stage it offline into a workflow dir of ours (nothing listens on 127.0.0.1:1)
    [c] = f.materializeContainers([record], tmp_path / "ours", offline=True)
    assert c.signature == img.image_id and c.fingerprint == record.fingerprint
    assert Path(c.localPath or "").is_dir(), "re-staged as an OCI layout"


def test_docker_archive_snapshot_format_is_what_wfexs_stages(tmp_path: Path, layout_tag) -> None:
    tag, img = layout_tag
    f = _factory(tmp_path, snapshot_format="docker-archive")
    [c] = f.materializeContainers([ContainerTaggedName(tag, DOCKER)], tmp_path / "wf")
    path = Path(c.localPath or "")
    assert path.name.endswith(".img") and path.read_bytes()[:2] == b"\x1f\x8b"
    meta = json.loads(Path(c.metadataLocalPath or "").read_text())
    raw = base64.b64decode(meta["image_signature"].split("=", 1)[1])
    assert "sha256:" + raw.hex() == sha256_file(path) == c.image_signature
    assert meta["image_id"] == img.image_id and meta["manifests"][0]["Id"] == img.image_id
    # reproducible: the same image gives the same .img, unlike `docker save | gzip`
    again = _factory(tmp_path / "other", snapshot_format="docker-archive")
    [c2] = again.materializeContainers([ContainerTaggedName(tag, DOCKER)], tmp_path / "wf2")
    assert c2.image_signature == c.image_signature
    with gzip.open(path) as fh:
        names = subprocess.run(["tar", "-t"], input=fh.read(), capture_output=True, check=True).stdout
    assert b"manifest.json" in names
    assert ImageCache(tmp_path / "cache").lookup(
        f"oci:{tag.split(':', 1)[1].rsplit(':', 1)[0]}:v1", "docker-archive"
    )


# -- bit rot: one retry, never a loop (issue 13, item 1) ------------------------------------------


def _flip_keep_mtime(path: Path) -> None:
    st = path.stat()
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
    path.chmod(st.st_mode)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_deploy_heals_rot_once_and_rot_that_comes_back_is_an_error_not_a_loop(
    tmp_path: Path, layout_tag
) -> None:
    tag, img = layout_tag
    engine = FakeEngine("docker")
    f = _factory(tmp_path, engine)
    [c] = f.materializeContainers([ContainerTaggedName(tag, DOCKER)], tmp_path / "wf")
    layer = img.manifest.layers[-1].digest
    stored = f.store.path(layer)
    fetches: list[str | None] = []
    real_fetch = f.sources.fetch

    def fetch_then_rot_again(ref, pin):  # the source is fine; the disk rots what it writes
        fetches.append(pin)
        got = real_fetch(ref, pin)
        _flip_keep_mtime(stored)
        return got

    _flip_keep_mtime(stored)
    f.sources.fetch = fetch_then_rot_again  # type: ignore[method-assign]
    with pytest.raises(IntegrityError) as ei:
        f.deploySingleContainer(c)
    assert fetches == [img.digest], "fetched again exactly once, for exactly the record's image"
    assert layer in str(ei.value)  # the retry's failure is final, and says which blob
    assert engine.image_ids == set()

    f.sources.fetch = real_fetch  # type: ignore[method-assign]
    assert f.deploySingleContainer(c)[1] is True  # healed for real this time: one fetch, then loaded
    assert engine.image_ids == {img.image_id}
    assert sha256_file(stored) == layer


def test_offline_deploy_of_a_rotten_layer_names_it_and_fetches_nothing(tmp_path: Path, layout_tag) -> None:
    tag, img = layout_tag
    engine = FakeEngine("docker")
    f = _factory(tmp_path, engine)
    [c] = f.materializeContainers([ContainerTaggedName(tag, DOCKER)], tmp_path / "wf")
    layer = img.manifest.layers[-1].digest
    _flip_keep_mtime(f.store.path(layer))
    f.sources.fetch = lambda *a: pytest.fail("offline deploy fetched")  # type: ignore[method-assign]
    with pytest.raises(IntegrityError) as ei:
        f.deploySingleContainer(c, offline=True)
    assert layer in str(ei.value) and "network access" in str(ei.value) and "verify --repair" in str(ei.value)
    assert (tmp_path / "cache" / "corrupt" / layer.split(":")[1]).is_file()
    assert engine.image_ids == set()

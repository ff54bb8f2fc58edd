"""Docker and Podman factories end to end: real registry, real engines, no mocks.

Each test pushes its own images (unique repository names) so tests are
independent; images loaded into the engines are removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import docker
import pytest

from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry, start_registry
from tests.support.wfexs import wfexs_record
from wfexs_like.container_factories import (
    DockerContainerFactory,
    PodmanContainerFactory,
    SingularityContainerFactory,
)
from wfexs_like.container_factories.docker_like import DockerLikeContainerFactory
from wfexs_like.digests import sha256_file
from wfexs_like.errors import ContainerEngineException, ContainerNotFoundException, IntegrityError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.docker_archive import write_docker_archive
from wfexs_like.images.layout import write_oci_layout
from wfexs_like.images.store import StoreImage
from wfexs_like.model import Container, ContainerTaggedName, ContainerType
from wfexs_like.provenance import read_containers_file, write_containers_file

REPO_ROOT = Path(__file__).resolve().parent.parent


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


class PushedSet:
    """Three images in a registry: one with three layers, two sharing a base layer."""

    def __init__(self, reg: RunningRegistry, store: BlobStore) -> None:
        self.prefix = f"wl-{uuid.uuid4().hex[:8]}"
        self.reg = reg
        base = busybox_base_layer()
        self.images: dict[str, BuiltImage] = {
            "multi": build_image(
                store,
                [
                    base,
                    {"data/": None, "data/one": b"1\n"},
                    {"data/two": b"2\n", "etc/multi": self.prefix.encode()},
                ],
                cmd=["/bin/busybox", "cat", "/data/two"],
            ),
            "left": build_image(
                store, [base, {"etc/left": b"left\n"}], cmd=["/bin/busybox", "cat", "/etc/left"]
            ),
            "right": build_image(
                store, [base, {"etc/right": b"right\n"}], cmd=["/bin/busybox", "cat", "/etc/right"]
            ),
        }
        for name, img in self.images.items():
            push_image(reg.url, f"{self.prefix}/{name}", "1.0", store, img.manifest)

    def tag(self, name: str) -> str:
        return f"{self.reg.host}/{self.prefix}/{name}:1.0"

    def tags(self, ctype: ContainerType = ContainerType.Docker) -> list[ContainerTaggedName]:
        return [ContainerTaggedName(self.tag(n), ctype) for n in self.images]


@pytest.fixture
def pushed(registry: RunningRegistry, src_store: BlobStore) -> PushedSet:
    return PushedSet(registry, src_store)


def _cleanup_docker(client: docker.DockerClient, ids: list[str]) -> None:
    for image_id in ids:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image_id, force=True)


def _cleanup_podman(ids: list[str]) -> None:
    for image_id in ids:
        _podman("rmi", "-f", image_id, check=False)


def _check_records(containers: list[Container], pushed: PushedSet) -> None:
    by_name = {c.origTaggedName: c for c in containers}
    for name, img in pushed.images.items():
        c = by_name[pushed.tag(name)]
        assert c.taggedName == pushed.tag(name)
        assert c.signature == img.image_id
        assert c.fingerprint == f"{pushed.reg.host}/{pushed.prefix}/{name}@{img.digest}"
        assert (c.architecture, c.operatingSystem) == ("amd64", "linux")
        assert c.source_type == ContainerType.Docker
        assert c.localPath is not None and c.localPath.is_dir()
        assert c.image_signature == sha256_file(c.localPath / "index.json")
        assert c.metadataLocalPath is not None
        meta = json.loads(c.metadataLocalPath.read_text())
        assert meta["manifest_digest"] == img.digest and meta["image_signature"] == c.image_signature


def test_docker_materialize_remove_deploy(
    tmp_path: Path, pushed: PushedSet, docker_client: docker.DockerClient
) -> None:
    f = DockerContainerFactory(containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf1")
    containers = f.materializeContainers(pushed.tags())
    assert len(containers) == 3
    _check_records(containers, pushed)
    ids = [c.signature for c in containers if c.signature]
    _cleanup_docker(docker_client, ids)
    try:
        results = [f.deploySingleContainer(c) for c in containers]
        assert [loaded for _, loaded in results] == [True, True, True]
        for c in containers:
            assert docker_client.images.get(c.taggedName).id == c.signature
        # a second deploy finds every image id present and loads nothing
        assert [loaded for _, loaded in (f.deploySingleContainer(c) for c in containers)] == [False] * 3
        out = docker_client.containers.run(pushed.tag("multi"), remove=True, network_mode="none")
        assert out == b"2\n"
    finally:
        _cleanup_docker(docker_client, ids)


def test_podman_materialize_remove_deploy(tmp_path: Path, pushed: PushedSet) -> None:
    f = PodmanContainerFactory(
        containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / ".work" / "Odd_Dir"
    )
    containers = f.materializeContainers(pushed.tags(ContainerType.Podman))
    _check_records(containers, pushed)
    ids = [c.signature for c in containers if c.signature]
    _cleanup_podman(ids)
    try:
        assert [f.deploySingleContainer(c)[1] for c in containers] == [True] * 3
        for c in containers:
            data = json.loads(_podman("image", "inspect", "--format", "json", c.taggedName).stdout)[0]
            assert "sha256:" + data["Id"] == c.signature
            # tagged with the canonical name only, not the layout path podman would invent
            assert data["RepoTags"] == [c.taggedName]
        assert [f.deploySingleContainer(c)[1] for c in containers] == [False] * 3
        run = _podman(
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            pushed.tag("left"),
        )
        assert run.stdout == "left\n"
    finally:
        _cleanup_podman(ids)


def test_podman_per_workdir_storage(tmp_path: Path, pushed: PushedSet) -> None:
    root = tmp_path / "podman-root"
    f = PodmanContainerFactory(
        containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf", podman_root=root
    )
    c = f.materializeContainers([ContainerTaggedName(pushed.tag("right"), ContainerType.Podman)])[0]
    try:
        assert f.deploySingleContainer(c)[1] is True
        private = _podman(*f.engine.command("images", "-q", "--no-trunc")[1:])
        assert c.signature in private.stdout
        assert _podman("image", "exists", c.signature or "", check=False).returncode == 1
    finally:
        _podman(*f.engine.command("rmi", "-af")[1:], check=False)


def test_second_materialize_downloads_no_blob(
    tmp_path: Path, pushed: PushedSet, registry: RunningRegistry
) -> None:
    f = DockerContainerFactory(containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf1")
    mark = registry.mark()
    first = f.materializeContainers(pushed.tags())
    gets = registry.blob_gets(mark)
    # shared base layer fetched once: 3 configs + 4 distinct layers (base, multi x2, left, right) = 8
    assert len(gets) == len({g.path for g in gets}) == 8
    mark = registry.mark()
    second = f.materializeContainers(pushed.tags(), containers_dir=tmp_path / "wf2")
    assert registry.blob_gets(mark) == []
    assert [c.image_signature for c in first] == [c.image_signature for c in second]


def _materialize_then_stop_registry(
    tmp_path: Path, src_store: BlobStore, cache: str, stage: str
) -> tuple[PushedSet, list[Container]]:
    """Push the three images to a registry of the test's own, materialize them, stop the registry."""
    reg = start_registry(tmp_path / "own-registry")
    try:
        pushed = PushedSet(reg, src_store)
        f = DockerContainerFactory(containersCacheDir=tmp_path / cache, stagedContainersDir=tmp_path / stage)
        return pushed, f.materializeContainers(pushed.tags())
    finally:
        reg.stop()


def test_offline_restage_with_registry_stopped(tmp_path: Path, src_store: BlobStore) -> None:
    pushed, online = _materialize_then_stop_registry(tmp_path, src_store, "cache", "wf1")
    f2 = DockerContainerFactory(containersCacheDir=tmp_path / "cache")
    offline = f2.materializeContainers(pushed.tags(), containers_dir=tmp_path / "wf2", offline=True)
    assert [(c.signature, c.fingerprint, c.image_signature) for c in offline] == [
        (c.signature, c.fingerprint, c.image_signature) for c in online
    ]
    assert all(c.localPath and tmp_path / "wf2" in c.localPath.parents for c in offline)
    # an uncached tag offline: every missing tag is named at once
    missing = [
        ContainerTaggedName(f"{pushed.reg.host}/{pushed.prefix}/absent:1", ContainerType.Docker),
        ContainerTaggedName("quay.io/biocontainers/samtools:1.15--h1170115_1", ContainerType.Docker),
    ]
    with pytest.raises(ContainerNotFoundException) as ei:
        f2.materializeContainers([*pushed.tags(), *missing], containers_dir=tmp_path / "wf3", offline=True)
    assert [t for t, _ in ei.value.failures] == [m.origTaggedName for m in missing]
    for m in missing:
        assert m.origTaggedName in str(ei.value)


def test_locally_built_image_materializes_through_the_engine(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "note").write_text(uuid.uuid4().hex)
    (ctx / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nCOPY note /note\nCMD ["/bin/busybox","cat","/note"]\n'
    )
    tag = f"wfexs-like-local/tool:dev-{uuid.uuid4().hex[:8]}"
    image, _ = docker_client.images.build(path=str(ctx), tag=tag, rm=True)
    try:
        f = DockerContainerFactory(containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf")
        c = f.materializeContainers([ContainerTaggedName(tag, ContainerType.Docker)])[0]
        assert c.signature == image.id
        meta = json.loads((c.metadataLocalPath or Path()).read_text())
        assert meta["extra"]["source"] == "engine"
        docker_client.images.remove(image.id, force=True)
        assert f.deploySingleContainer(c)[1] is True
        assert docker_client.images.get(c.taggedName).id == image.id
        # and the same snapshot loads into podman with the same id
        p = PodmanContainerFactory(containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf")
        try:
            assert p.deploySingleContainer(c)[1] is True
            data = json.loads(_podman("image", "inspect", "--format", "json", c.taggedName).stdout)[0]
            assert "sha256:" + data["Id"] == image.id
        finally:
            _cleanup_podman([image.id])
    finally:
        _cleanup_docker(docker_client, [image.id])


def _tamper_copy(path: Path) -> None:
    """Replace a file with different bytes under a new inode (the cache's hard link is untouched)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.unlink()
    path.write_bytes(bytes(data))


def test_tampered_snapshot_is_refused(
    tmp_path: Path, pushed: PushedSet, docker_client: docker.DockerClient
) -> None:
    f = DockerContainerFactory(containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf")
    c = f.materializeContainers([ContainerTaggedName(pushed.tag("multi"), ContainerType.Docker)])[0]
    _cleanup_docker(docker_client, [c.signature or ""])
    assert c.localPath is not None
    layer = pushed.images["multi"].manifest.layers[-1].digest.split(":")[1]
    _tamper_copy(c.localPath / "blobs" / "sha256" / layer)
    with pytest.raises(IntegrityError) as ei:
        f.deploySingleContainer(c)
    assert "refusing to deploy" in str(ei.value) and str(c.localPath) in str(ei.value)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(c.signature)
    # a tampered index.json (pointing elsewhere) is refused too
    c2 = f.materializeContainers([ContainerTaggedName(pushed.tag("left"), ContainerType.Docker)], force=True)[
        0
    ]
    assert c2.localPath is not None
    idx = c2.localPath / "index.json"
    text = idx.read_text()
    idx.unlink()
    idx.write_text(text.replace("1.0", "6.6"))
    with pytest.raises(IntegrityError):
        f.deploySingleContainer(c2)
    # re-materializing with force restores a trustworthy staged copy
    c3 = f.materializeContainers(
        [ContainerTaggedName(pushed.tag("multi"), ContainerType.Docker)], force=True
    )[0]
    try:
        assert f.deploySingleContainer(c3)[1] is True
    finally:
        _cleanup_docker(docker_client, [c3.signature or ""])


def test_pinned_digest_rematerializes_exactly_that_image(
    tmp_path: Path, pushed: PushedSet, src_store: BlobStore
) -> None:
    f = DockerContainerFactory(containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf")
    first = f.materializeContainers([ContainerTaggedName(pushed.tag("left"), ContainerType.Docker)])[0]
    # the tag moves to another image
    moved = build_image(src_store, [busybox_base_layer(), {"etc/left": b"moved\n"}])
    push_image(pushed.reg.url, f"{pushed.prefix}/left", "1.0", src_store, moved.manifest)
    again = f.materializeContainers([first], containers_dir=tmp_path / "wf2")[0]
    assert again.signature == first.signature and again.fingerprint == first.fingerprint
    unpinned = f.materializeContainers(
        [ContainerTaggedName(pushed.tag("left"), ContainerType.Docker)], containers_dir=tmp_path / "wf3"
    )[0]
    assert unpinned.signature == moved.image_id

    # a pin the registry does not have: said so, and the tag is used only when allowed
    gone = Container(
        origTaggedName=pushed.tag("left"),
        type=ContainerType.Docker,
        taggedName=pushed.tag("left"),
        fingerprint=f"{pushed.reg.host}/{pushed.prefix}/left@sha256:{'ab' * 32}",
    )
    with pytest.raises(ContainerNotFoundException) as ei:
        f.materializeContainers([gone], containers_dir=tmp_path / "wf4")
    assert "no longer has the pinned digest" in str(ei.value)
    lenient = DockerContainerFactory(
        containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf5", allow_tag_fallback=True
    )
    assert lenient.materializeContainers([gone])[0].signature == moved.image_id


def test_injected_containers_are_reused_without_network(tmp_path: Path, src_store: BlobStore) -> None:
    pushed, earlier = _materialize_then_stop_registry(tmp_path, src_store, "cacheA", "wf1")
    # a different machine/cache, no network: the earlier staged dir is the only source
    b = DockerContainerFactory(containersCacheDir=tmp_path / "cacheB", stagedContainersDir=tmp_path / "wf2")
    reused = b.materializeContainers(pushed.tags(), offline=True, injectable_containers=earlier)
    assert [c.signature for c in reused] == [c.signature for c in earlier]
    assert all(c.localPath and (tmp_path / "wf2") in c.localPath.parents for c in reused)


_DEPLOY_IN_NEW_PROCESS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from wfexs_like.container_factories import {cls}
    from wfexs_like.provenance import read_containers_file
    containers = read_containers_file(Path(sys.argv[1]))
    f = {cls}(containersCacheDir=Path(sys.argv[2]), stagedContainersDir=Path(sys.argv[3]))
    for c in f.deployContainers(containers):
        print(c.taggedName, c.signature)
    """
)


@pytest.mark.parametrize("factory_cls", [DockerContainerFactory, PodmanContainerFactory])
def test_wfexs_call_sequence_across_processes(
    tmp_path: Path,
    pushed: PushedSet,
    docker_client: docker.DockerClient,
    factory_cls: type[DockerLikeContainerFactory],
) -> None:
    f = factory_cls(containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf")
    containers = f.materializeContainers(pushed.tags(f.ContainerType()))
    yaml_path = tmp_path / "wf" / "containers.yaml"
    write_containers_file(containers, yaml_path)
    assert read_containers_file(yaml_path) == containers
    ids = [c.signature or "" for c in containers]
    cleanup = (
        (lambda: _cleanup_docker(docker_client, ids))
        if factory_cls is DockerContainerFactory
        else (lambda: _cleanup_podman(ids))
    )
    cleanup()
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _DEPLOY_IN_NEW_PROCESS.format(cls=factory_cls.__name__),
                str(yaml_path),
                str(tmp_path / "cache"),
                str(tmp_path / "wf"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert sorted(out.stdout.split()) == sorted(
            x for c in containers for x in (c.taggedName, c.signature or "")
        )
    finally:
        cleanup()


def _states(table: str) -> list[str]:
    """The STATE column of the table ``deploy`` prints (its first line is the header)."""
    lines = table.splitlines()
    assert lines and lines[0].split()[0] == "STATE", table
    return [line.split()[0] for line in lines[1:]]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wfexs_like.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cli_materialize_and_deploy(
    tmp_path: Path, pushed: PushedSet, docker_client: docker.DockerClient
) -> None:
    out = _cli(
        "materialize",
        pushed.tag("left"),
        pushed.tag("right"),
        "--engine",
        "docker",
        "--stage-dir",
        str(tmp_path / "wf"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert out.returncode == 0, out.stderr
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir=tmp_path) as fh:
        fh.write(out.stdout)
    records = read_containers_file(Path(fh.name))
    assert {r.signature for r in records} == {pushed.images["left"].image_id, pushed.images["right"].image_id}
    _cleanup_docker(docker_client, [r.signature or "" for r in records])
    try:
        dep = _cli(
            "deploy",
            fh.name,
            "--engine",
            "docker",
            "--stage-dir",
            str(tmp_path / "wf"),
            "--cache-dir",
            str(tmp_path / "cache"),
        )
        assert dep.returncode == 0, dep.stderr
        assert _states(dep.stdout) == ["loaded", "loaded"]
    finally:
        _cleanup_docker(docker_client, [r.signature or "" for r in records])


def test_cli_names_each_failed_tag_without_traceback(tmp_path: Path, pushed: PushedSet) -> None:
    bad = f"{pushed.reg.host}/{pushed.prefix}/does-not-exist:9"
    gone = f"{pushed.reg.host}/{pushed.prefix}/gone-too:1"
    common = [
        "--engine",
        "podman",
        "--stage-dir",
        str(tmp_path / "wf"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    out = _cli("materialize", pushed.tag("left"), bad, gone, *common)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert bad in out.stderr and gone in out.stderr
    assert "2 container(s) failed" in out.stderr
    assert out.stdout == ""
    # a tag that cannot be parsed is a usage error, found before anything is fetched
    fresh = tmp_path / "cache2"
    usage = _cli(
        "materialize", pushed.tag("left"), "Not_A:Valid Tag", *common[:-2], "--cache-dir", str(fresh)
    )
    assert usage.returncode == 2 and "Not_A:Valid Tag" in usage.stderr and "Traceback" not in usage.stderr
    assert not fresh.exists()


def test_engine_errors_carry_command_exit_code_and_stderr(
    tmp_path: Path, pushed: PushedSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = [ContainerTaggedName(pushed.tag("left"), ContainerType.Docker)]
    # Docker daemon down: materializing needs no daemon at all; deploying says what failed and where.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    d = DockerContainerFactory(containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf")
    c = d.materializeContainers(tag)[0]
    with pytest.raises(ContainerEngineException) as ei:
        d.deploySingleContainer(c)
    assert "cannot reach the Docker engine" in str(ei.value) and "no-such.sock" in str(ei.value)
    monkeypatch.delenv("DOCKER_HOST")

    # Podman with a storage root it cannot use: the real podman error comes through.
    not_a_dir = tmp_path / "not-a-dir"
    not_a_dir.write_text("x")
    p = PodmanContainerFactory(
        containersCacheDir=tmp_path / "cache", stagedContainersDir=tmp_path / "wf", podman_root=not_a_dir
    )
    with pytest.raises(ContainerEngineException) as ei:
        p.deploySingleContainer(c)
    err = ei.value
    assert err.returncode not in (None, 0, 1)
    assert err.command is not None and str(not_a_dir) in " ".join(err.command)
    assert err.stderr_tail and "exit code" in str(err) and "stderr" in str(err)

    # Podman not installed where the mapping says.
    q = PodmanContainerFactory(
        containersCacheDir=tmp_path / "cache",
        stagedContainersDir=tmp_path / "wf",
        progs_mapping={"podman": str(tmp_path / "no-podman")},
    )
    with pytest.raises(ContainerEngineException) as ei:
        q.deploySingleContainer(c)
    assert "not installed or not on PATH" in str(ei.value)


def test_image_loaded_by_deploy_is_still_fetched_from_the_registry(
    tmp_path: Path, pushed: PushedSet, docker_client: docker.DockerClient
) -> None:
    """A docker-loaded image has no repo digests, like a local build, but its pin must stay the registry's."""
    tag = [ContainerTaggedName(pushed.tag("right"), ContainerType.Docker)]
    a = DockerContainerFactory(containersCacheDir=tmp_path / "cacheA", stagedContainersDir=tmp_path / "wfA")
    first = a.materializeContainers(tag)[0]
    _cleanup_docker(docker_client, [first.signature or ""])
    try:
        assert a.deploySingleContainer(first)[1] is True
        assert docker_client.api.inspect_image(first.signature)["RepoDigests"] == []
        b = DockerContainerFactory(
            containersCacheDir=tmp_path / "cacheB", stagedContainersDir=tmp_path / "wfB"
        )
        second = b.materializeContainers(tag)[0]
        assert (
            second.fingerprint
            == first.fingerprint
            == (f"{pushed.reg.host}/{pushed.prefix}/right@{pushed.images['right'].digest}")
        )
        meta = json.loads((second.metadataLocalPath or Path()).read_text())
        assert meta["extra"]["source"] == "registry"
    finally:
        _cleanup_docker(docker_client, [first.signature or ""])


def test_platform_choice_from_an_index(
    tmp_path: Path, registry: RunningRegistry, src_store: BlobStore
) -> None:
    from tests.support.imagegen import build_index

    amd = build_image(src_store, [busybox_base_layer(), {"etc/arch": b"amd64\n"}])
    arm = build_image(src_store, [{"etc/": None, "etc/arch": b"arm64\n"}], arch="arm64", variant="v8")
    repo = f"wl-{uuid.uuid4().hex[:8]}/multi"
    push_image(registry.url, repo, "1", src_store, build_index(src_store, [amd, arm]))
    tag = [ContainerTaggedName(f"{registry.host}/{repo}:1", ContainerType.Docker)]
    arm_f = DockerContainerFactory(
        containersCacheDir=tmp_path / "c", stagedContainersDir=tmp_path / "arm", platform="linux/arm64"
    )
    got = arm_f.materializeContainers(tag)[0]
    assert (got.architecture, got.signature) == ("arm64", arm.image_id)
    assert got.fingerprint == f"{registry.host}/{repo}@{arm.digest}"
    host_f = DockerContainerFactory(containersCacheDir=tmp_path / "c2", stagedContainersDir=tmp_path / "amd")
    assert host_f.materializeContainers(tag)[0].signature == amd.image_id

    out = _cli(
        "materialize",
        tag[0].origTaggedName,
        "--engine",
        "docker",
        "--platform",
        "linux/s390x",
        "--stage-dir",
        str(tmp_path / "s390x"),
        "--cache-dir",
        str(tmp_path / "c3"),
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "linux/amd64" in out.stderr and "linux/arm64" in out.stderr


def test_cli_bad_inputs_get_clear_errors(tmp_path: Path) -> None:
    payload = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"- !!python/object/apply:os.system ['touch {payload}']\n")
    cases = {
        "malicious YAML": (["deploy", str(evil)], "python/object/apply:os.system", 1),
        "missing file": (["deploy", str(tmp_path / "nope.yaml")], "nope.yaml", 1),
        "bad platform": (["materialize", "busybox", "--platform", "linux"], "invalid platform 'linux'", 2),
        "malformed tag": (["materialize", "UPPER/Case:tag"], "UPPER/Case:tag", 2),
    }
    for name, (args, expected, code) in cases.items():
        out = _cli(
            *args,
            "--engine",
            "docker",
            "--stage-dir",
            str(tmp_path / "wf"),
            "--cache-dir",
            str(tmp_path / "cache"),
        )
        assert out.returncode == code, name
        assert "Traceback" not in out.stderr, name
        assert expected in out.stderr, (name, out.stderr)
    assert not payload.exists()


# -- issue 8: transports, WfExS formats and cross-kind deploys through the command ---------------


def test_transports_reach_every_engine(tmp_path: Path, src_store: BlobStore, docker_client) -> None:
    """A docker-archive into Podman, an OCI layout into Docker, a docker-daemon image into a SIF."""
    img = build_image(
        src_store, [busybox_base_layer(), {"etc/t": b"transport\n"}], cmd=["/bin/busybox", "cat", "/etc/t"]
    )
    name = f"localhost/wl-transport-{uuid.uuid4().hex[:8]}:1"
    write_docker_archive(StoreImage(src_store, img.digest), tmp_path / "img.tar", [name])
    write_oci_layout(StoreImage(src_store, img.digest), tmp_path / "layout", ref_name="v1")
    cache = tmp_path / "cache"
    podman = PodmanContainerFactory(containersCacheDir=cache)
    docker_f = DockerContainerFactory(containersCacheDir=cache)
    [from_archive] = podman.materializeContainers(
        [ContainerTaggedName(f"docker-archive:{tmp_path / 'img.tar'}", ContainerType.Podman)],
        tmp_path / "wf-p",
    )
    [from_layout] = docker_f.materializeContainers(
        [ContainerTaggedName(f"oci:{tmp_path / 'layout'}:v1", ContainerType.Docker)], tmp_path / "wf-d"
    )
    try:
        assert from_archive.signature == from_layout.signature == img.image_id
        assert from_layout.fingerprint == f"oci:{tmp_path / 'layout'}:v1@{img.digest}"
        assert podman.deploySingleContainer(from_archive)[1] is True
        # without a REF, an archive's image is named after its file, as Podman names what it loads
        assert _podman("image", "exists", "localhost/img.tar:latest").returncode == 0
        assert docker_f.deploySingleContainer(from_layout)[1] is True
        assert docker_client.images.get(img.image_id).id == img.image_id
        sif_f = SingularityContainerFactory(containersCacheDir=cache)
        daemon_tag = f"docker-daemon:{_docker_tag(docker_client, img.image_id)}"
        [sif] = sif_f.materializeContainers(
            [ContainerTaggedName(daemon_tag, ContainerType.Singularity)], tmp_path / "wf-s"
        )
        assert Path(sif.localPath or "").read_bytes()[32:42] == b"SIF_MAGIC\x00"
        assert sif.source_type == ContainerType.Docker
    finally:
        _cleanup_docker(docker_client, [img.image_id])
        _cleanup_podman([img.image_id])


def _docker_tag(client: docker.DockerClient, image_id: str) -> str:
    tag = f"localhost/wl-daemon-{uuid.uuid4().hex[:8]}:1"
    client.images.get(image_id).tag(tag)
    return tag


def test_cli_wfexs_formats_and_cross_kind_deploys(tmp_path: Path, pushed: PushedSet, docker_client) -> None:
    common = ["--cache-dir", str(tmp_path / "cache")]
    out = _cli(
        "materialize",
        pushed.tag("left"),
        "--engine",
        "docker",
        "--stage-dir",
        str(tmp_path / "wf" / "containers"),
        "--format",
        "wfexs",
        "--snapshot-format",
        "docker-archive",
        "-o",
        str(tmp_path / "wf" / "c.yaml"),
        *common,
    )
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "wf" / "c.yaml").read_text()
    assert "_type: Container" in text and "_enum: ContainerType" in text
    [record] = read_containers_file(tmp_path / "wf" / "c.yaml", containers_dir=tmp_path / "wf" / "containers")
    assert record.localPath is not None and record.localPath.name.endswith(".img")
    # the staged .img loads with plain `docker load`, as WfExS-backend's deploy does
    _cleanup_docker(docker_client, [record.signature or ""])
    try:
        loaded = subprocess.run(
            ["docker", "load", "-i", str(record.localPath)], capture_output=True, text=True
        )
        assert loaded.returncode == 0, loaded.stderr
        assert docker_client.images.get(record.signature).id == record.signature
    finally:
        _cleanup_docker(docker_client, [record.signature or ""])
    # a Docker record deployed for Apptainer: converted to a SIF
    conv = _cli(
        "deploy",
        str(tmp_path / "wf" / "c.yaml"),
        "--engine",
        "singularity",
        "--stage-dir",
        str(tmp_path / "wf" / "containers"),
        *common,
    )
    assert conv.returncode == 0, conv.stderr
    assert _states(conv.stdout) == ["converted"]
    # a SIF record deployed for Docker: refused by name, no traceback
    s = _cli(
        "materialize",
        pushed.tag("right"),
        "--engine",
        "singularity",
        "--stage-dir",
        str(tmp_path / "s"),
        "-o",
        str(tmp_path / "s.yaml"),
        *common,
    )
    assert s.returncode == 0, s.stderr
    refused = _cli(
        "deploy", str(tmp_path / "s.yaml"), "--engine", "docker", "--stage-dir", str(tmp_path / "s"), *common
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert pushed.tag("right") in refused.stderr and "SIF" in refused.stderr


def test_cli_deploy_uses_the_stage_dir_given(tmp_path: Path, pushed: PushedSet, docker_client) -> None:
    common = ["--engine", "podman", "--cache-dir", str(tmp_path / "cache")]
    wf = tmp_path / "wf"
    out = _cli(
        "materialize",
        pushed.tag("multi"),
        "--stage-dir",
        str(wf / "containers"),
        "-o",
        str(wf / "c.yaml"),
        *common,
    )
    assert out.returncode == 0, out.stderr
    assert str(wf) not in (wf / "c.yaml").read_text(), "paths in the record are relative to the stage dir"
    copy_dir = tmp_path / "copy"
    shutil.copytree(wf, copy_dir)
    blob = max((copy_dir / "containers").rglob("blobs/sha256/*"), key=lambda p: p.stat().st_size)
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    [record] = read_containers_file(wf / "c.yaml")
    _cleanup_podman([record.signature or ""])
    bad = _cli("deploy", str(copy_dir / "c.yaml"), "--stage-dir", str(copy_dir / "containers"), *common)
    assert bad.returncode == 1 and "does not match" in bad.stderr, bad.stderr
    good = _cli("deploy", str(wf / "c.yaml"), "--stage-dir", str(wf / "containers"), *common)
    try:
        assert good.returncode == 0 and _states(good.stdout) == ["loaded"], good.stderr
    finally:
        _cleanup_podman([record.signature or ""])


def test_a_wfexs_backend_record_deploys_into_docker_from_its_img(
    tmp_path: Path, src_store: BlobStore, docker_client: docker.DockerClient
) -> None:
    """WfExS-backend's staged `docker save | gzip` snapshot, deployed by its record, into the real engine."""
    img = build_image(
        src_store, [busybox_base_layer(), {"etc/w": b"wfexs\n"}], cmd=["/bin/busybox", "cat", "/etc/w"]
    )
    tag = f"localhost/wl-wfexs-{uuid.uuid4().hex[:8]}:1"
    record = wfexs_record(tmp_path, src_store, img, tag)
    f = DockerContainerFactory(containersCacheDir=tmp_path / "cache")
    try:
        assert f.deploySingleContainer(record, containers_dir=Path(record.localPath or "").parent)[1] is True
        out = docker_client.containers.run(tag, remove=True, network_mode="none")
        assert out == b"wfexs\n"
    finally:
        _cleanup_docker(docker_client, [img.image_id])


def test_docker_daemon_means_docker_whatever_engine_deploys(
    tmp_path: Path, src_store: BlobStore, docker_client: docker.DockerClient
) -> None:
    """skopeo's docker-daemon: reads the Docker daemon, also when materializing for Podman."""
    img = build_image(src_store, [busybox_base_layer(), {"etc/d": b"daemon\n"}], cmd=["/bin/busybox", "true"])
    write_docker_archive(StoreImage(src_store, img.digest), tmp_path / "img.tar", [])
    with open(tmp_path / "img.tar", "rb") as fh:
        docker_client.images.load(fh.read())
    tag = _docker_tag(docker_client, img.image_id)
    try:
        assert _podman("image", "exists", tag, check=False).returncode == 1, "Podman does not have it"
        podman_f = PodmanContainerFactory(containersCacheDir=tmp_path / "cache")
        [c] = podman_f.materializeContainers(
            [ContainerTaggedName(f"docker-daemon:{tag}", ContainerType.Podman)], tmp_path / "wf"
        )
        assert c.signature == img.image_id
        assert json.loads(Path(c.metadataLocalPath or "").read_text())["extra"]["engine"] == "docker"
    finally:
        _cleanup_docker(docker_client, [img.image_id])


def test_cli_with_a_relative_stage_dir_finds_its_snapshots_again(tmp_path: Path, pushed: PushedSet) -> None:
    """A relative --stage-dir must not be joined to itself when the record is read back."""

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "wfexs_like.cli", *args, "--cache-dir", "cache"]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, check=False)

    out = cli(
        "materialize", pushed.tag("left"), "--engine", "docker", "--stage-dir", "wf/c", "-o", "wf/c.yaml"
    )
    assert out.returncode == 0, out.stderr
    conv = cli("deploy", "wf/c.yaml", "--engine", "singularity", "--stage-dir", "wf/c")
    assert conv.returncode == 0, conv.stderr
    assert _states(conv.stdout) == ["converted"]
    assert not (tmp_path / "wf" / "c" / "wf").exists(), "nothing staged under a doubled path"

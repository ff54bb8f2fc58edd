"""Engines behind one protocol: the real Docker and Podman, Apptainer as far as it runs here, and the fake.

Images are built with ``imagegen`` into a BlobStore (a unique marker layer
each, so concurrent tests never share an image id), loaded under unique
``localhost/wl-engines-*`` names and removed afterwards. Apptainer has no
binary on this host: what needs one is the single test that skips, and a
small stand-in script checks the command line and per-call environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support.fake_engine import FakeEngine
from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.engines import (
    ApptainerEngine,
    DockerEngine,
    Engine,
    EngineImageInfo,
    PodmanEngine,
    engine_env,
    make_engine,
    normalize_image_id,
    run_engine,
)
from wfexs_like.engines import podman as podman_module
from wfexs_like.errors import ContainerEngineException, ContainerFactoryException, IntegrityError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.docker_archive import DockerArchiveImage
from wfexs_like.images.layout import LayoutImage, write_oci_layout
from wfexs_like.images.sif import read_sif
from wfexs_like.images.store import StoreImage

REPO_ROOT = Path(__file__).resolve().parent.parent
APPTAINER = shutil.which("apptainer") or shutil.which("singularity")


# -- helpers -------------------------------------------------------------------------------------


def _build(store: BlobStore) -> tuple[BuiltImage, StoreImage]:
    marker = uuid.uuid4().hex
    built = build_image(
        store,
        [busybox_base_layer(), {"etc/marker": marker.encode()}],
        cmd=["/bin/busybox", "cat", "/etc/marker"],
        labels={"org.example.marker": marker},
    )
    return built, StoreImage(store, built.digest)


def _name() -> str:
    return f"localhost/wl-engines-{uuid.uuid4().hex[:12]}/img:1.0"


def _corrupt(store: BlobStore, digest: str) -> None:
    """Flip one byte of a stored blob (same size): only re-hashing can tell."""
    path = store.path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def _check_saved(saved: object, built: BuiltImage, work: Path) -> None:
    assert isinstance(saved, DockerArchiveImage)
    with saved:
        _check_same_image(saved, built)
    files = list(work.iterdir())
    assert len(files) == 1 and files[0].suffix == ".tar", files  # no temporary left beside it


def _check_same_image(saved: DockerArchiveImage, built: BuiltImage) -> None:
    assert saved.config_name() == built.image_id
    assert [layer.diff_id() for layer in saved.layers()] == built.config["rootfs"]["diff_ids"]
    for layer in saved.layers():  # every byte re-verified against its diff id
        with contextlib.closing(layer.uncompressed()) as fh:
            while fh.read(1 << 20):
                pass


@pytest.fixture
def docker_engine() -> Iterator[DockerEngine]:
    """An engine that makes its own client from the environment, as the factories' default does."""
    engine = DockerEngine()
    yield engine
    engine.close()


def _rmi_docker(client: docker.DockerClient, *ids: str) -> None:
    for image_id in ids:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image_id, force=True)


def _rmi_podman(engine: PodmanEngine, *ids: str) -> None:
    for image_id in ids:
        subprocess.run(engine.command("rmi", "-f", image_id), capture_output=True, check=False)


# -- the protocol and the shared helpers -----------------------------------------------------------


def test_every_engine_speaks_the_protocol() -> None:
    for engine in (DockerEngine(), PodmanEngine(), ApptainerEngine(), FakeEngine()):
        assert isinstance(engine, Engine)
    assert {DockerEngine.name, PodmanEngine.name, ApptainerEngine.name} == {"docker", "podman", "apptainer"}


def test_make_engine_by_name(tmp_path: Path) -> None:
    assert isinstance(make_engine("docker"), DockerEngine)
    podman = make_engine("podman", root=tmp_path / "root")
    assert isinstance(podman, PodmanEngine) and podman.root == tmp_path / "root"
    assert isinstance(make_engine("apptainer"), ApptainerEngine)
    assert isinstance(make_engine("singularity", binary="/opt/x/singularity"), ApptainerEngine)
    with pytest.raises(ContainerFactoryException, match=r"unknown container engine 'rkt'.*docker"):
        make_engine("rkt")


def test_importing_engines_imports_neither_sdk() -> None:
    code = (
        "import sys, wfexs_like.engines\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'spython'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_no_engine_sets_the_process_environment() -> None:
    pattern = re.compile(
        r"os\.environ\s*(\[[^\]]*\]\s*=|\.update|\.setdefault|\.pop)|os\.putenv|os\.unsetenv"
    )
    for path in (REPO_ROOT / "wfexs_like" / "engines").glob("*.py"):
        assert not pattern.search(path.read_text()), f"{path} changes os.environ"


def test_engine_env_is_built_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WL_ENGINES_BASE", "base")
    monkeypatch.delenv("WL_ENGINES_EXTRA", raising=False)
    env = engine_env({"WL_ENGINES_EXTRA": "x", "WL_ENGINES_BASE": "over"})
    assert env["WL_ENGINES_EXTRA"] == "x" and env["WL_ENGINES_BASE"] == "over"
    assert "WL_ENGINES_EXTRA" not in os.environ and os.environ["WL_ENGINES_BASE"] == "base"
    assert engine_env(None) == dict(os.environ)


def test_normalize_image_id() -> None:
    assert normalize_image_id(" abc\n") == "sha256:abc"
    assert normalize_image_id("sha256:abc") == "sha256:abc"


def test_run_engine_errors_carry_command_exit_code_and_stderr(tmp_path: Path) -> None:
    out = run_engine(["sh", "-c", "echo $WL_X"], env=engine_env({"WL_X": "per-call"}))
    assert out.stdout == b"per-call\n"
    with pytest.raises(ContainerEngineException) as ei:
        run_engine(["sh", "-c", "echo first >&2; echo 'Error: it broke' >&2; exit 3"], what="the thing")
    err = ei.value
    assert err.returncode == 3 and err.command == ["sh", "-c", err.command[2]]
    assert err.stderr_tail.endswith("Error: it broke")
    assert str(err).startswith("the thing failed") and "exit code: 3" in str(err)
    with pytest.raises(ContainerEngineException, match="not installed or not on PATH"):
        run_engine([str(tmp_path / "no-such-engine"), "version"])
    with pytest.raises(ContainerEngineException, match=r"timed out after 0\.2 s"):
        run_engine(["sleep", "5"], timeout=0.2)


# -- Docker ------------------------------------------------------------------------------------------


def test_docker_load_inspect_tag_save(
    tmp_path: Path, src_store: BlobStore, docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> None:
    built, image = _build(src_store)
    engine = docker_engine
    tag, other = _name(), _name()
    try:
        assert engine.inspect(built.image_id) is None
        info = engine.load(image, tag)
        assert info.image_id == built.image_id and tag in info.repo_tags
        assert docker_client.images.get(tag).id == built.image_id
        assert engine.inspect(tag) == info
        engine.tag(built.image_id, other)
        assert set(engine.inspect(built.image_id).repo_tags) >= {tag, other}  # type: ignore[union-attr]
        work = tmp_path / "work"
        work.mkdir()
        _check_saved(engine.save(other, work), built, work)
        assert engine.version() == docker_client.version()["Version"]
    finally:
        _rmi_docker(docker_client, built.image_id)


def test_docker_accepts_an_injected_client(src_store: BlobStore, docker_client: docker.DockerClient) -> None:
    built, image = _build(src_store)
    engine = DockerEngine(docker_client)
    try:
        assert engine.client is docker_client
        assert engine.load(image, _name()).image_id == built.image_id
    finally:
        _rmi_docker(docker_client, built.image_id)


def test_docker_refuses_a_corrupt_image(
    src_store: BlobStore, docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> None:
    built, image = _build(src_store)
    _corrupt(src_store, built.manifest.layers[-1].digest)
    engine = docker_engine
    try:
        with pytest.raises(IntegrityError, match="does not hash to"):
            engine.load(image, _name())
        assert engine.inspect(built.image_id) is None
    finally:
        _rmi_docker(docker_client, built.image_id)


def test_docker_missing_image(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    engine = DockerEngine(docker_client)
    missing = _name()
    assert engine.inspect(missing) is None
    with pytest.raises(ContainerEngineException) as ei:
        engine.save(missing, tmp_path)
    assert ei.value.returncode == 404 and missing in str(ei.value.command)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ContainerEngineException) as ei:
        engine.tag("sha256:" + "0" * 64, _name())
    assert ei.value.returncode == 404 and ei.value.stderr_tail


def test_docker_unreachable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = tmp_path / "no-such.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{dead}")
    engine = DockerEngine()  # constructing needs no daemon
    with pytest.raises(ContainerEngineException) as ei:
        engine.inspect("busybox")
    err = ei.value
    assert "cannot reach the Docker engine" in str(err) and str(dead) in str(err)
    assert err.command == "docker.from_env().ping()" and err.stderr_tail
    monkeypatch.delenv("DOCKER_HOST")

    # An injected client whose daemon went away says the same, naming the call that failed.
    client = docker.DockerClient(base_url=f"unix://{dead}", version="1.41")
    with contextlib.closing(client), pytest.raises(ContainerEngineException) as ei:
        DockerEngine(client).inspect("busybox")
    assert "cannot reach the Docker engine" in str(ei.value) and str(dead) in str(ei.value)
    assert "inspect_image('busybox')" in str(ei.value.command) and ei.value.stderr_tail


# -- Podman ------------------------------------------------------------------------------------------


def test_podman_load_store_image_and_save(tmp_path: Path, src_store: BlobStore) -> None:
    built, image = _build(src_store)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    engine = PodmanEngine(tmp_dir=scratch)
    tag = _name()
    try:
        assert engine.inspect(built.image_id) is None
        info = engine.load(image, tag)
        # tagged with our name only: the name podman invents from the load path is gone
        assert info.image_id == built.image_id and info.repo_tags == (tag,)
        # unlike Docker, Podman reports a repo digest for a loaded image: the manifest it was given
        assert info.repo_digests == (f"{tag.rsplit(':', 1)[0]}@{built.digest}",)
        assert list(scratch.iterdir()) == []  # the temporary layout is removed
        data = json.loads(
            subprocess.run(
                ["podman", "image", "inspect", "--format", "json", tag], capture_output=True, check=True
            ).stdout
        )[0]
        assert normalize_image_id(data["Id"]) == built.image_id
        work = tmp_path / "work"
        work.mkdir()
        _check_saved(engine.save(tag, work), built, work)
        assert (
            engine.version()
            == subprocess.run(
                ["podman", "--version"], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
    finally:
        _rmi_podman(engine, built.image_id)


def test_podman_loads_a_layout_under_an_awkward_path(
    tmp_path: Path, src_store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    built, image = _build(src_store)
    layout = tmp_path / ".work" / "Snapshot_Dir"  # not a valid image name: podman 4.3 would choke on it
    write_oci_layout(image, layout, ref_name="some/other:name")

    def no_copy(*args: object, **kwargs: object) -> str:
        raise AssertionError("a layout image must be loaded as it is, not copied into another layout")

    monkeypatch.setattr(podman_module, "write_oci_layout", no_copy)
    engine = PodmanEngine(tmp_dir=tmp_path)
    tag = _name()
    try:
        info = engine.load(LayoutImage(layout), tag)
        assert info.image_id == built.image_id and info.repo_tags == (tag,)
    finally:
        _rmi_podman(engine, built.image_id)


def test_podman_private_root(tmp_path: Path, src_store: BlobStore) -> None:
    built, image = _build(src_store)
    engine = PodmanEngine(root=tmp_path / "podman-root", tmp_dir=tmp_path)
    try:
        assert engine.load(image, _name()).image_id == built.image_id
        assert engine.inspect(built.image_id) is not None
        assert PodmanEngine().inspect(built.image_id) is None  # the user's store never saw it
    finally:
        subprocess.run(engine.command("rmi", "-af"), capture_output=True, check=False)
        shutil.rmtree(engine.runroot or "", ignore_errors=True)


def test_podman_refuses_a_corrupt_image(tmp_path: Path, src_store: BlobStore) -> None:
    built, image = _build(src_store)
    _corrupt(src_store, built.manifest.layers[-1].digest)
    engine = PodmanEngine(tmp_dir=tmp_path)
    try:
        with pytest.raises(IntegrityError, match="does not hash to"):
            engine.load(image, _name())
        assert engine.inspect(built.image_id) is None
    finally:
        _rmi_podman(engine, built.image_id)


def test_podman_errors_carry_command_exit_code_and_stderr(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "not-a-dir"
    not_a_dir.write_text("x")
    with pytest.raises(ContainerEngineException) as ei:
        PodmanEngine(root=not_a_dir).inspect("busybox")
    err = ei.value
    assert err.returncode not in (None, 0, 1)
    assert err.command is not None and str(not_a_dir) in " ".join(err.command)
    assert err.stderr_tail and "exit code" in str(err) and "stderr" in str(err)

    missing = str(tmp_path / "no-podman")
    with pytest.raises(ContainerEngineException) as ei:
        PodmanEngine(missing).inspect("busybox")
    assert "not installed or not on PATH" in str(ei.value) and ei.value.command[0] == missing  # type: ignore[index]

    with pytest.raises(ContainerEngineException) as ei:
        PodmanEngine().save(_name(), tmp_path)
    assert "podman has no image" in str(ei.value)


# -- Apptainer ------------------------------------------------------------------------------------


def _standin(tmp_path: Path, body: str) -> Path:
    """A script in apptainer's place: enough to see the command line and environment a pull gets."""
    script = tmp_path / "bin" / "apptainer"
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_apptainer_without_a_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    engine = ApptainerEngine()
    assert engine.binary is None and not engine.available
    for call in (lambda: engine.pull("docker://busybox", tmp_path / "x.sif"), engine.version):
        with pytest.raises(ContainerEngineException, match="neither apptainer nor singularity is installed"):
            call()
    gone = ApptainerEngine(str(tmp_path / "no-apptainer"))
    assert not gone.available
    with pytest.raises(ContainerEngineException, match="could not be run") as ei:
        gone.pull("docker://busybox", tmp_path / "x.sif")
    assert ei.value.command is not None and "pull" in ei.value.command
    assert not (tmp_path / "x.sif").exists()


def test_apptainer_keeps_no_image_store(tmp_path: Path, src_store: BlobStore) -> None:
    engine = ApptainerEngine()
    assert engine.inspect("anything") is None
    _, image = _build(src_store)
    for call in (
        lambda: engine.load(image, "x:1"),
        lambda: engine.tag("sha256:0", "x:1"),
        lambda: engine.save("x:1", tmp_path),
    ):
        with pytest.raises(ContainerEngineException, match="Apptainer runs SIF files in place"):
            call()


def test_apptainer_pull_gets_its_environment_per_call(tmp_path: Path) -> None:
    record = tmp_path / "record"
    script = _standin(
        tmp_path,
        """\
        printf '%s\\n' "$@" > "$WL_RECORD.args"
        env > "$WL_RECORD.env"
        while [ $# -gt 0 ]; do
          if [ "$1" = --name ]; then shift; printf 'SIF-ish' > "$1"; fi
          shift
        done
        """,
    )
    engine = ApptainerEngine(str(script), env={"WL_RECORD": str(record), "APPTAINER_CACHEDIR": "/c"})
    assert engine.available
    dest = tmp_path / "out" / "tool.sif"
    dest.parent.mkdir()
    engine.pull("docker://127.0.0.1:5000/x/tool:1.0", dest, plain_http=True)
    assert dest.read_bytes() == b"SIF-ish" and list(dest.parent.iterdir()) == [dest]
    args = Path(f"{record}.args").read_text().splitlines()
    assert args[0] == "pull" and args[-1] == "docker://127.0.0.1:5000/x/tool:1.0"
    assert "--force" in args and args[args.index("--name") + 1].startswith(str(dest.parent / ".tool.sif."))
    env = Path(f"{record}.env").read_text().splitlines()
    for line in ("APPTAINER_NOHTTPS=1", "SINGULARITY_NOHTTPS=1", "APPTAINER_CACHEDIR=/c"):
        assert line in env
    assert not {"APPTAINER_NOHTTPS", "SINGULARITY_NOHTTPS", "WL_RECORD"} & set(os.environ)

    engine.pull("docker://example.invalid/x:1", dest)  # https: no NOHTTPS switch
    assert "APPTAINER_NOHTTPS=1" not in Path(f"{record}.env").read_text().splitlines()


def test_apptainer_pull_failure_is_named(tmp_path: Path) -> None:
    script = _standin(
        tmp_path, "echo 'FATAL:   While making image from oci registry: no such tag' >&2\nexit 255\n"
    )
    dest = tmp_path / "tool.sif"
    with pytest.raises(ContainerEngineException) as ei:
        ApptainerEngine(str(script)).pull("docker://127.0.0.1:1/x:1", dest)
    err = ei.value
    assert err.returncode == 255 and "no such tag" in err.stderr_tail
    assert err.command is not None and "docker://127.0.0.1:1/x:1" in err.command
    assert list(tmp_path.glob("*.sif*")) == [] and not dest.exists()


@pytest.mark.skipif(
    APPTAINER is None, reason="no apptainer/singularity binary on this host (Debian 12 ships none)"
)
def test_apptainer_pulls_from_a_plain_http_registry(
    tmp_path: Path, registry: RunningRegistry, src_store: BlobStore
) -> None:
    built, _ = _build(src_store)
    repo = f"wl-engines-{uuid.uuid4().hex[:8]}/tool"
    push_image(registry.url, repo, "1.0", src_store, built.manifest)
    engine = ApptainerEngine(
        env={"APPTAINER_CACHEDIR": str(tmp_path / "cache"), "APPTAINER_TMPDIR": str(tmp_path)}
    )
    dest = tmp_path / "tool.sif"
    engine.pull(f"docker://{registry.host}/{repo}:1.0", dest, plain_http=True)
    assert read_sif(dest).primary_partition() is not None
    assert engine.version()


# -- the fake, for factory-policy tests -----------------------------------------------------------


def test_fake_engine_behaves_consistently(tmp_path: Path, src_store: BlobStore) -> None:
    built, image = _build(src_store)
    fake = FakeEngine()
    assert fake.inspect(built.image_id) is None
    info = fake.load(image, "a:1")
    assert info == EngineImageInfo(built.image_id, (), ("a:1",))
    assert fake.inspect("a:1") == info and fake.inspect(built.image_id.split(":", 1)[1]) == info
    fake.tag(built.image_id, "b:1")
    assert fake.inspect(built.image_id).repo_tags == ("a:1", "b:1")  # type: ignore[union-attr]
    assert fake.save("b:1", tmp_path) is image

    other_built, other = _build(src_store)
    fake.load(other, "b:1")  # a tag names one image: loading another under it moves it
    assert fake.inspect(built.image_id).repo_tags == ("a:1",)  # type: ignore[union-attr]
    assert fake.inspect("b:1").image_id == other_built.image_id  # type: ignore[union-attr]
    with pytest.raises(ContainerEngineException, match="no such image"):
        fake.tag("sha256:" + "0" * 64, "c:1")
    fake.remove("a:1")
    assert fake.image_ids == {other_built.image_id}
    assert fake.calls == [
        ("inspect", built.image_id),
        ("load", built.image_id, "a:1"),
        ("inspect", "a:1"),
        ("inspect", built.image_id.split(":", 1)[1]),
        ("tag", built.image_id, "b:1"),
        ("inspect", built.image_id),
        ("save", "b:1"),
        ("load", other_built.image_id, "b:1"),
        ("inspect", built.image_id),
        ("inspect", "b:1"),
        ("tag", "sha256:" + "0" * 64, "c:1"),
    ]


def test_fake_engine_refuses_a_corrupt_image(src_store: BlobStore) -> None:
    built, image = _build(src_store)
    _corrupt(src_store, built.manifest.layers[-1].digest)
    fake = FakeEngine()
    with pytest.raises(IntegrityError, match="does not hash to"):
        fake.load(image, "a:1")
    assert fake.inspect(built.image_id) is None and fake.image_ids == set()


def test_fake_engine_fails_when_told(tmp_path: Path, src_store: BlobStore) -> None:
    _, image = _build(src_store)
    fake = FakeEngine("docker", fail_on={"load"})
    with pytest.raises(ContainerEngineException) as ei:
        fake.load(image, "a:1")
    assert ei.value.returncode == 125 and "docker load failed" in str(ei.value)
    assert fake.inspect("a:1") is None  # other calls still work

    fake.down = True
    for call in (
        fake.version,
        lambda: fake.inspect("a:1"),
        lambda: fake.load(image, "a:1"),
        lambda: fake.tag("x", "a:1"),
        lambda: fake.save("a:1", tmp_path),
    ):
        with pytest.raises(ContainerEngineException, match="cannot reach the docker engine"):
            call()
    assert [c[0] for c in fake.calls] == ["load", "inspect", "version", "inspect", "load", "tag", "save"]

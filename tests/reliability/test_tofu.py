"""Trust on first use: a manifest fetched by tag whose registry sent no ``Docker-Content-Digest``.

Issue 13, item 7. The digest of a manifest fetched by tag is checked
against the registry's ``Docker-Content-Digest`` (HEAD and GET); a proxy or
registry that strips the header leaves nothing but the connection to vouch
that the bytes are what the tag names. Such a pull still works, but says so
(``digest_source == "tofu"``, recorded in the snapshot's ``_meta.json``), and
a client built with ``require_digest`` refuses it with an error that says
what to do. A real registry sits behind the fault proxy, which strips the
header from every manifest answer (HEAD and GET).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.imagegen import BuiltImage, build_image, build_index
from tests.support.proxy import FaultProxy
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.container_factories import DockerContainerFactory
from wfexs_like.errors import RegistryError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.manifest import Platform
from wfexs_like.model import ContainerTaggedName, ContainerType
from wfexs_like.registry.client import RegistryClient

WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"


@dataclass(frozen=True)
class Pushed:
    repo: str
    image: BuiltImage


@pytest.fixture(scope="module")
def pushed(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    src = BlobStore(tmp_path_factory.mktemp("tofu-src"))
    rng = random.Random(13)
    image = build_image(src, [{"data/tofu.bin": rng.randbytes(4096)}], labels={"test": "tofu"})
    repo = f"wl-tofu-{uuid.uuid4().hex[:8]}/img"
    push_image(registry.url, repo, "1", src, image.manifest)
    return Pushed(repo, image)


@pytest.fixture
def stripped(registry_proxy: FaultProxy) -> FaultProxy:
    """The proxy with every manifest answer's ``Docker-Content-Digest`` removed."""
    registry_proxy.strip_header("Docker-Content-Digest", "/manifests/")
    return registry_proxy


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient(retries=0) as c:
        yield c


@pytest.fixture
def strict(client: RegistryClient) -> Iterator[RegistryClient]:
    """The same client with ``require_digest`` (what ``--require-digest`` builds)."""
    with client.copy_with(require_digest=True) as c:
        yield c


def manifest_answers(proxy: FaultProxy) -> list[tuple[str, bool]]:
    """(method, whether the header reached us) for each manifest request the proxy forwarded."""
    return [(s.method, not any(f.startswith("strip") for f in s.faults)) for s in proxy.hits("/manifests/")]


def test_a_tag_without_the_header_is_pulled_and_marked_tofu(
    stripped: FaultProxy, pushed: Pushed, client: RegistryClient, tmp_path: Path
) -> None:
    store = BlobStore(tmp_path / "cache")
    result = client.pull(stripped.host, pushed.repo, "1", store)
    assert result.manifest_digest == pushed.image.digest
    assert result.digest_source == "tofu"
    assert store.has(pushed.image.digest)
    answers = manifest_answers(stripped)
    assert answers and all(not kept for _m, kept in answers), answers  # the header really was stripped


def test_require_digest_refuses_it_with_what_to_do(
    stripped: FaultProxy, pushed: Pushed, strict: RegistryClient, tmp_path: Path
) -> None:
    store = BlobStore(tmp_path / "cache")
    with pytest.raises(RegistryError) as err:
        strict.pull(stripped.host, pushed.repo, "1", store)
    msg = str(err.value)
    assert f"{stripped.host}/{pushed.repo}:1" in msg
    assert "Docker-Content-Digest" in msg and "--require-digest" in msg
    assert "registry (or proxy) that sends the header" in msg
    assert "\n" not in msg
    assert not store.has(pushed.image.digest)  # nothing of the refused image is published
    assert not store.has(pushed.image.manifest.config.digest)


def test_with_the_header_the_registry_vouches(
    registry_proxy: FaultProxy, pushed: Pushed, strict: RegistryClient, tmp_path: Path
) -> None:
    store = BlobStore(tmp_path / "cache")
    result = strict.pull(registry_proxy.host, pushed.repo, "1", store)
    assert result.digest_source == "registry" and result.manifest_digest == pushed.image.digest
    assert all(kept for _m, kept in manifest_answers(registry_proxy))


def test_a_digest_pin_needs_no_header(
    stripped: FaultProxy, pushed: Pushed, strict: RegistryClient, tmp_path: Path
) -> None:
    """The reference names the digest and the bytes are hashed against it: nothing is taken on trust."""
    store = BlobStore(tmp_path / "cache")
    result = strict.pull(stripped.host, pushed.repo, pushed.image.digest, store)
    assert result.digest_source == "pinned" and result.manifest_digest == pushed.image.digest


def test_an_index_fetched_by_tag_without_the_header_is_tofu_too(
    stripped: FaultProxy, registry: RunningRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    """The index pins its manifests, but nothing vouches for the index: the image is as trusted as it."""
    src = BlobStore(tmp_path / "src")
    amd = build_image(src, [{"a.txt": b"amd64"}], arch="amd64")
    arm = build_image(src, [{"a.txt": b"arm64"}], arch="arm64")
    index = build_index(src, [amd, arm])
    repo = f"wl-tofu-{uuid.uuid4().hex[:8]}/multi"
    push_image(registry.url, repo, "1", src, index)
    store = BlobStore(tmp_path / "cache")
    result = client.pull(stripped.host, repo, "1", store, platform=Platform("linux", "arm64"))
    assert result.digest_source == "tofu"
    assert result.index_digest == index.digest and result.manifest_digest == arm.digest
    image = client.image(stripped.host, repo, "1", platform=Platform("linux", "amd64"))
    assert image.digest_source == "tofu" and image.manifest_digest == amd.digest


def materialize(cache: Path, stage: Path, tag: str, client: RegistryClient) -> dict:
    """Materialize ``tag`` as a workflow engine would; the staged sidecar, parsed."""
    f = DockerContainerFactory(containersCacheDir=cache, stagedContainersDir=stage, registry_client=client)
    try:
        [c] = f.materializeContainers([ContainerTaggedName(tag, ContainerType.Docker)])
    finally:
        f.cache.release_holds()
        shutil.rmtree(f.tempDir, ignore_errors=True)
    assert c.metadataLocalPath is not None
    return json.loads(Path(c.metadataLocalPath).read_text())


def test_the_sidecar_records_tofu_and_registry(
    registry_proxy: FaultProxy, pushed: Pushed, client: RegistryClient, strict: RegistryClient, tmp_path: Path
) -> None:
    tag = f"{registry_proxy.host}/{pushed.repo}:1"
    vouched = materialize(tmp_path / "cache-a", tmp_path / "wf-a", tag, client)
    assert vouched["manifest_digest"] == pushed.image.digest
    assert vouched["extra"]["digest_source"] == "registry"

    registry_proxy.strip_header("Docker-Content-Digest", "/manifests/")
    tofu = materialize(tmp_path / "cache-b", tmp_path / "wf-b", tag, client)
    assert tofu["manifest_digest"] == pushed.image.digest
    assert tofu["extra"]["digest_source"] == "tofu"

    with pytest.raises(Exception, match="--require-digest"):
        materialize(tmp_path / "cache-c", tmp_path / "wf-c", tag, strict)


def test_the_command_refuses_tofu_with_require_digest(
    stripped: FaultProxy, pushed: Pushed, tmp_path: Path
) -> None:
    """``materialize --require-digest`` exits 1 naming the image and stages nothing; without it,
    the same pull succeeds and its record's sidecar says tofu."""
    tag = f"{stripped.host}/{pushed.repo}:1"

    def run(stage: str, *extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(WFEXS_LIKE), "materialize", "--engine", "podman", "--cache-dir", str(tmp_path / "cache"),
               "--stage-dir", str(tmp_path / stage), "-o", str(tmp_path / f"{stage}.yaml"), "--retry-times",
               "0", *extra, tag]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    refused = run("strict", "--require-digest")
    assert refused.returncode == 1, refused.stderr
    assert "--require-digest" in refused.stderr and pushed.repo in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "strict.yaml").exists()
    assert not any((tmp_path / "strict").rglob("*_meta.json"))

    accepted = run("loose")
    assert accepted.returncode == 0, accepted.stderr
    [meta] = (tmp_path / "loose").rglob("*_meta.json")
    assert json.loads(meta.read_text())["extra"]["digest_source"] == "tofu"
    # offline, what the cache holds as trusted on first use is refused the same way
    offline = run("offline", "--offline", "--require-digest")
    assert offline.returncode == 1, offline.stderr
    assert "--require-digest" in offline.stderr and "trust on first use" in offline.stderr
    assert not (tmp_path / "offline.yaml").exists()
    assert run("offline-loose", "--offline").returncode == 0

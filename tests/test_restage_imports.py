"""What a re-stage loads: a warm, offline ``materialize`` imports no HTTP stack and no engine SDK.

Start-up is most of what a warm re-stage costs (issue 12), and the HTTP
stack (http.client, ssl) and the Docker SDK are the largest imports the
package has. Offline, no registry is asked and no engine is touched, so
none of them may load; online, the registry serves the images through our
own client on http.client (requests and urllib3 are never loaded) and the
Docker SDK is needed only to deploy or to fall back to the engine. This is
checked on the real command, as a subprocess, by what it had loaded when
it left (every module, whoever imported it): a behaviour, not a timing.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.imagegen import build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from tests.support.tools import cli_modules
from wfexs_like.images.blobstore import BlobStore

CLIENT = "wfexs_like.registry.httpio"
NETWORK = ("requests", "urllib3", "ssl", "http.client", "charset_normalizer", "idna", CLIENT)
SDKS = ("docker", "boto3", "botocore", "spython")
#: What a re-stage never needs: it runs no engine and no thread pool, and names temp files itself.
UNNEEDED = ("subprocess", "tempfile", "concurrent")
#: The factory each engine name uses; the other factories must not load.
OWN = {
    "docker": "wfexs_like.container_factories.docker",
    "podman": "wfexs_like.container_factories.podman",
    "singularity": "wfexs_like.container_factories.singularity",
}


def imported_by(*args: str, tmp: Path) -> set[str]:
    """The modules a ``wfexs-like`` run had loaded when it left (see ``cli_modules``)."""
    _, modules = cli_modules(*args, tmp=tmp)
    assert "wfexs_like.ops.materialize" in modules, "the run did not reach materialize"
    return modules


def loaded(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in roots or m in roots)


@pytest.fixture
def tags(registry: RunningRegistry, src_store: BlobStore) -> list[str]:
    prefix = f"wl-restage-{uuid.uuid4().hex[:8]}"
    base = busybox_base_layer()
    out = []
    for n in range(3):
        img = build_image(src_store, [base, {f"etc/n{n}": f"{prefix}-{n}\n".encode()}])
        push_image(registry.url, f"{prefix}/img{n}", "1.0", src_store, img.manifest)
        out.append(f"{registry.host}/{prefix}/img{n}:1.0")
    return out


@pytest.mark.parametrize("engine", ["docker", "podman", "singularity"])
def test_an_offline_restage_imports_no_network_code_and_no_sdk(
    tags: list[str], tmp_path: Path, engine: str
) -> None:
    cache = tmp_path / "cache"
    common = ["--engine", engine, "--cache-dir", str(cache)]
    warm = ["--stage-dir", str(tmp_path / "warm"), "-q"]
    first = imported_by("materialize", *tags, *common, *warm, tmp=tmp_path)
    assert loaded(first, (CLIENT,)), "the warming run did not use the registry client"

    modules = imported_by(
        "materialize", *tags, *common, "--offline", "--stage-dir", str(tmp_path / "again"),
        "-o", str(tmp_path / "again.yaml"), tmp=tmp_path,
    )  # fmt: skip
    assert (tmp_path / "again.yaml").read_text().count("origTaggedName") == len(tags)
    # Records are written without PyYAML (yamlemit); only reading them needs it.
    assert loaded(modules, (*NETWORK, *SDKS, "yaml")) == []
    assert loaded(modules, UNNEEDED) == []
    assert OWN[engine] in modules
    assert sorted(m for e, m in OWN.items() if e != engine and m in modules) == []
    if engine != "singularity":
        assert "wfexs_like.engines.apptainer" not in modules


def test_an_online_materialize_served_by_the_registry_never_loads_the_docker_sdk(
    tags: list[str], tmp_path: Path
) -> None:
    modules = imported_by(
        "materialize", *tags, "--engine", "docker", "--cache-dir", str(tmp_path / "cache"),
        "--stage-dir", str(tmp_path / "wf"), "-q", tmp=tmp_path,
    )  # fmt: skip
    assert loaded(modules, (CLIENT,)), "the run did not use the registry client"
    assert loaded(modules, (*SDKS, "requests", "urllib3")) == []

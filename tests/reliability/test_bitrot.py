"""Bit rot with the mtime put back (issue 13, item 1): found, evicted, fetched again, never staged.

To reproduce the report: flip one byte of a cached layer blob and restore
its mtime (what ``touch -r`` does). Size and mtime then match the trust
record, which is all a re-stage used to look at; the inode's ctime does
not, and nothing can set it back. Each case runs the real command (or the
library for what the command has no flag for) against a loopback registry
and the real Docker engine:

1. an online materialize catches it with the strict check, moves the blob
   to ``corrupt/``, fetches it again and stages the right bytes; ``--force``
   hashes every reused blob in full, so it heals even what the cheap check
   was fooled about;
2. offline, the rotten blob cannot be replaced: a one-line error names the
   image and the blob and says to materialize with network access. (Healing
   from a staged copy was considered and rejected: staged blobs are hard
   links of the very inode that rotted.)
3. a deploy into Docker evicts the blob, fetches it again and loads;
4. a SIF build whose layer is wrong (the cheap check fooled, as in the one
   window it cannot see) evicts, fetches again and builds a SIF
   byte-identical to a clean build;
5. an offline deploy ends in a clear error, loads nothing, leaves no temp
   file behind, and the bad blob is in ``corrupt/``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import pytest

from tests.reliability.test_disk_full import push_random_image
from tests.support.imagegen import BuiltImage
from tests.support.registry import RunningRegistry
from tests.support.rot import flip_keep_mtime
from wfexs_like.digests import sha256_file
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.ops.deploy import deploy
from wfexs_like.provenance import read_containers_file

WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"
KiB = 1024


@pytest.fixture(scope="module")
def rot_image(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, BuiltImage]:
    store = BlobStore(tmp_path_factory.mktemp("bitrot-src"))
    repo = f"wl-bitrot-{uuid.uuid4().hex[:8]}/img"
    image = push_random_image(registry.url, store, repo, [300 * KiB, 200 * KiB], seed=13)
    return f"{registry.host}/{repo}:1", image


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WFEXS_LIKE), *map(str, args)], capture_output=True, text=True, timeout=300, check=False
    )


def materialize(cache: Path, stage: Path, tag: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run("materialize", "--cache-dir", cache, "--stage-dir", stage, "-o", stage / "c.yaml", *extra, tag)


def layer(image: BuiltImage) -> str:
    """The biggest random layer: gzip cannot hide a flipped byte in it."""
    return max(image.manifest.layers, key=lambda d: d.size).digest


def blob(cache: Path, digest: str) -> Path:
    return cache / "blobs" / "sha256" / digest.split(":", 1)[1]


def corrupt(cache: Path, digest: str) -> Path:
    return cache / "corrupt" / digest.split(":", 1)[1]


def staged_layer(stage: Path, digest: str) -> Path:
    [c] = read_containers_file(stage / "c.yaml", containers_dir=stage)
    assert c.localPath is not None
    return Path(c.localPath) / "blobs" / "sha256" / digest.split(":", 1)[1]


def absent_from_docker(client: docker.DockerClient, image_id: str) -> None:
    """Start from an engine without the image (an earlier case may have loaded the same one)."""
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.remove(image_id, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(image_id)


def cached_then_rotted(rot_image: tuple[str, BuiltImage], tmp_path: Path) -> tuple[str, Path, str]:
    """Materialize into ``wf1``, then rot the biggest layer in the cache: (tag, cache, layer digest)."""
    tag, image = rot_image
    cache, digest = tmp_path / "cache", layer(image)
    first = materialize(cache, tmp_path / "wf1", tag)
    assert first.returncode == 0, first.stderr
    flip_keep_mtime(blob(cache, digest))
    assert sha256_file(blob(cache, digest)) != digest
    return tag, cache, digest


def staged_then_rotted(
    rot_image: tuple[str, BuiltImage], tmp_path: Path, docker_client: docker.DockerClient, made: list[str]
) -> tuple[str, Path, Path, str, str]:
    """Materialize, make sure Docker lacks the image, then rot its biggest layer in the cache:
    (tag, cache, stage dir, layer digest, image id)."""
    tag, image = rot_image
    cache, stage, digest = tmp_path / "cache", tmp_path / "wf", layer(image)
    assert materialize(cache, stage, tag).returncode == 0
    [c] = read_containers_file(stage / "c.yaml", containers_dir=stage)
    assert c.signature is not None
    made.append(c.signature)
    absent_from_docker(docker_client, c.signature)
    flip_keep_mtime(blob(cache, digest))
    return tag, cache, stage, digest, c.signature


def assert_healed(done: subprocess.CompletedProcess[str], cache: Path, stage: Path, digest: str) -> None:
    """The run succeeded, staged and cached the right bytes, and moved the rotten ones aside."""
    assert done.returncode == 0, done.stderr
    assert sha256_file(staged_layer(stage, digest)) == digest
    assert sha256_file(blob(cache, digest)) == digest
    assert corrupt(cache, digest).is_file()


def no_temps(*dirs: Path) -> list[Path]:
    return [p for d in dirs for p in d.rglob("*.tmp")]


def test_online_materialize_catches_the_flip_refetches_and_stages_the_right_bytes(
    rot_image: tuple[str, BuiltImage], tmp_path: Path
) -> None:
    tag, cache, digest = cached_then_rotted(rot_image, tmp_path)

    # the strict check caught it (corrupt/ holds the bad bytes), not a lucky re-hash
    assert_healed(materialize(cache, tmp_path / "wf2", tag), cache, tmp_path / "wf2", digest)


def test_force_rehashes_every_reused_blob_even_when_the_cheap_check_is_fooled(
    rot_image: tuple[str, BuiltImage], tmp_path: Path
) -> None:
    """The window the strict check cannot see (an edit re-recorded as our own link): --force hashes."""
    tag, cache, digest = cached_then_rotted(rot_image, tmp_path)
    BlobStore(cache).relinked([digest])  # the record now vouches for the rotten bytes
    assert BlobStore(cache).unchanged(digest)

    assert_healed(materialize(cache, tmp_path / "wf2", tag, "--force"), cache, tmp_path / "wf2", digest)


def test_offline_materialize_refuses_a_rotten_blob_with_a_clear_error(
    rot_image: tuple[str, BuiltImage], tmp_path: Path
) -> None:
    tag, cache, digest = cached_then_rotted(rot_image, tmp_path)

    offline = materialize(cache, tmp_path / "wf2", tag, "--offline")
    assert offline.returncode == 1, offline.stdout
    assert "Traceback" not in offline.stderr
    assert digest in offline.stderr and "network access" in offline.stderr, offline.stderr
    assert corrupt(cache, digest).is_file() and not blob(cache, digest).exists()
    assert not (tmp_path / "wf2" / "c.yaml").exists()
    assert no_temps(cache / "tmp", tmp_path / "wf2") == []

    healed = materialize(cache, tmp_path / "wf3", tag)  # with network access, as the error says
    assert healed.returncode == 0, healed.stderr
    assert sha256_file(staged_layer(tmp_path / "wf3", digest)) == digest


def test_docker_deploy_of_a_rotten_blob_evicts_refetches_and_loads(
    rot_image: tuple[str, BuiltImage],
    tmp_path: Path,
    docker_client: docker.DockerClient,
    docker_made: list[str],
) -> None:
    # the staged blob is the same inode as the cache's: it rots too
    _tag, cache, stage, digest, image_id = staged_then_rotted(rot_image, tmp_path, docker_client, docker_made)

    deployed = run("deploy", "--cache-dir", cache, stage / "c.yaml")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "loaded" in deployed.stdout
    assert docker_client.images.get(image_id).id == image_id
    assert corrupt(cache, digest).is_file()
    assert sha256_file(blob(cache, digest)) == digest
    assert sha256_file(staged_layer(stage, digest)) == digest


@pytest.mark.parametrize("fooled", [False, True], ids=["strict-check", "cheap-check-fooled"])
def test_sif_build_from_a_rotten_layer_refetches_and_builds_the_same_sif(
    rot_image: tuple[str, BuiltImage], tmp_path: Path, fooled: bool
) -> None:
    tag, image = rot_image
    digest = layer(image)
    clean = materialize(tmp_path / "clean", tmp_path / "wf-clean", tag, "--engine", "singularity")
    assert clean.returncode == 0, clean.stderr
    [ref_sif] = read_containers_file(tmp_path / "wf-clean" / "c.yaml", containers_dir=tmp_path / "wf-clean")

    cache = tmp_path / "cache"
    assert materialize(cache, tmp_path / "wf-docker", tag).returncode == 0  # layers cached by Docker's kind
    flip_keep_mtime(blob(cache, digest))
    if fooled:  # rot the strict check cannot see: the layer's bytes are wrong only when the SIF reads them
        BlobStore(cache).relinked([digest])

    built = materialize(cache, tmp_path / "wf-sif", tag, "--engine", "singularity")
    assert built.returncode == 0, built.stderr
    [sif] = read_containers_file(tmp_path / "wf-sif" / "c.yaml", containers_dir=tmp_path / "wf-sif")
    assert sif.localPath is not None and ref_sif.localPath is not None
    assert sha256_file(Path(sif.localPath)) == sha256_file(Path(ref_sif.localPath))
    assert corrupt(cache, digest).is_file()
    assert sha256_file(blob(cache, digest)) == digest


def test_offline_deploy_of_a_rotten_blob_is_a_clear_error_and_loads_nothing(
    rot_image: tuple[str, BuiltImage],
    tmp_path: Path,
    docker_client: docker.DockerClient,
    docker_made: list[str],
) -> None:
    tag, cache, stage, digest, image_id = staged_then_rotted(rot_image, tmp_path, docker_client, docker_made)

    result = deploy(stage / "c.yaml", engine="docker", cache_dir=cache, offline=True)
    [row] = result.rows
    assert row.state == "failed"
    assert row.reason is not None and digest in row.reason and "network access" in row.reason
    assert tag in row.reason
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)
    assert corrupt(cache, digest).is_file() and not blob(cache, digest).exists()
    assert no_temps(cache / "tmp", stage) == []


def test_the_command_deploy_offline_names_the_rotten_blob(
    rot_image: tuple[str, BuiltImage],
    tmp_path: Path,
    docker_client: docker.DockerClient,
    docker_made: list[str],
) -> None:
    """``wfexs-like deploy --offline``: exit 1, one line naming the blob, nothing loaded or fetched."""
    tag, cache, stage, digest, image_id = staged_then_rotted(rot_image, tmp_path, docker_client, docker_made)

    done = run("deploy", stage / "c.yaml", "--engine", "docker", "--cache-dir", cache, "--offline")
    assert done.returncode == 1, done.stdout + done.stderr
    assert digest in done.stderr and tag in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)
    assert corrupt(cache, digest).is_file()

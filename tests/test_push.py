"""``push``: cached images and SIFs to a site registry, then pulled back by digest from there.

Two real registries: the session's ``registry`` is the origin images are
materialized from, and a module-scoped ``site`` registry is pushed to. What
reached the site is read from its access log (every request counted) and
from its API with plain ``requests``, never through the code under test.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.imagegen import BuiltImage, build_image, build_index, busybox_base_layer
from tests.support.proxy import FaultProxy, Rule
from tests.support.push import push_image
from tests.support.registry import RunningRegistry, _registry_config, free_port, start_registry
from wfexs_like.digests import sha256_file
from wfexs_like.errors import AuthenticationError, ContainerNotFoundException
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.manifest import OCI_INDEX, OCI_MANIFEST
from wfexs_like.model import ContainerType
from wfexs_like.ops.materialize import materialize, write_records
from wfexs_like.ops.push import push
from wfexs_like.registry.oras import SIF_CONFIG, SIF_LAYER

#: The installed command, as a user runs it.
WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(WFEXS_LIKE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """The site registry pushes go to (the session's ``registry`` is the origin)."""
    reg = start_registry(tmp_path_factory.mktemp("site-registry"))
    yield reg
    reg.stop()


class Origin:
    """An image with a private marker layer on a busybox base, pushed to the origin registry."""

    def __init__(self, reg: RunningRegistry, store: BlobStore, name: str = "tool", tag: str = "1.0") -> None:
        self.reg = reg
        self.marker = uuid.uuid4().hex
        self.repo = f"wl-push-{self.marker[:8]}/{name}"
        self.tag = tag
        self.image: BuiltImage = build_image(
            store, [busybox_base_layer(), {"data/": None, "data/marker": self.marker.encode()}]
        )
        push_image(reg.url, self.repo, tag, store, self.image.manifest)

    @property
    def ref(self) -> str:
        return f"{self.reg.host}/{self.repo}:{self.tag}"


def _materialize(tag: str, cache: Path, stage: Path, engine: str = "docker", **kw: object):
    return materialize([tag], engine=engine, stage_dir=stage, cache_dir=cache, **kw).containers[0]


def _manifest(reg: RunningRegistry, repo: str, ref: str) -> tuple[requests.Response, bytes]:
    r = requests.get(f"{reg.url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=10)
    return r, r.content


def _writes(reg: RunningRegistry, mark: int) -> list[str]:
    return [f"{a.method} {a.path}" for a in reg.requests_since(mark) if a.method in ("POST", "PUT", "PATCH")]


def test_pushed_image_pulls_by_digest_with_the_same_digests(
    tmp_path: Path, registry: RunningRegistry, site: RunningRegistry, src_store: BlobStore
) -> None:
    origin = Origin(registry, src_store)
    first = _materialize(origin.ref, tmp_path / "cacheA", tmp_path / "wfA")
    assert first.fingerprint == f"{registry.host}/{origin.repo}@{origin.image.digest}"

    prefix = f"site{uuid.uuid4().hex[:6]}"
    mark = site.mark()
    out = cli("push", "--to", f"{site.host}/{prefix}", "--cache-dir", str(tmp_path / "cacheA"), origin.ref)
    assert out.returncode == 0, out.stderr
    target = f"{site.host}/{prefix}/{origin.repo}"
    assert f"{target}:1.0" in out.stdout and "pushed" in out.stdout
    uploads = [w for w in _writes(site, mark) if w.startswith("PUT") and "/blobs/uploads/" in w]
    assert len(uploads) == 3, uploads  # config and two layers, each once

    # The site serves the exact manifest bytes, under the tag and the original digest.
    resp, raw = _manifest(site, f"{prefix}/{origin.repo}", origin.image.digest)
    assert resp.status_code == 200 and raw == origin.image.manifest.raw
    resp, _ = _manifest(site, f"{prefix}/{origin.repo}", "1.0")
    assert resp.headers["Docker-Content-Digest"] == origin.image.digest

    # A fresh cache pulls by digest from the site: same manifest, config and layers.
    pulled = _materialize(f"{target}@{origin.image.digest}", tmp_path / "cacheB", tmp_path / "wfB")
    assert pulled.fingerprint == f"{target}@{origin.image.digest}"
    assert pulled.signature == first.signature == origin.image.image_id
    meta_a = json.loads(Path(first.metadataLocalPath or "").read_text())
    meta_b = json.loads(Path(pulled.metadataLocalPath or "").read_text())
    assert meta_b["manifest_digest"] == meta_a["manifest_digest"] == origin.image.digest
    assert meta_b["layers"] == meta_a["layers"] == [d.digest for d in origin.image.manifest.layers]

    # Pushing again uploads nothing and writes nothing.
    mark = site.mark()
    again = push(tmp_path / "cacheA", [origin.ref], f"{site.host}/{prefix}")
    assert _writes(site, mark) == []
    [item] = again.items
    assert item.outcome == "present" and item.stats.uploaded_blobs == 0 and item.stats.present_blobs == 3
    assert item.pinned == f"{target}@{origin.image.digest}"


def test_a_layer_pushed_to_one_repository_is_mounted_into_the_next(
    tmp_path: Path, registry: RunningRegistry, site: RunningRegistry, src_store: BlobStore
) -> None:
    one, two = Origin(registry, src_store, "one"), Origin(registry, src_store, "two")
    base = one.image.manifest.layers[0].digest
    assert two.image.manifest.layers[0].digest == base
    cache = tmp_path / "cache"
    materialize([one.ref, two.ref], engine="docker", stage_dir=tmp_path / "wf", cache_dir=cache)

    prefix = f"mnt{uuid.uuid4().hex[:6]}"
    mark = site.mark()
    summary = push(cache, [one.ref, two.ref], f"{site.host}/{prefix}", jobs=1)
    lines = site.requests_since(mark)
    mounts = [a for a in lines if a.method == "POST" and "mount=" in a.path]
    assert [(a.status, f"/v2/{prefix}/{two.repo}/" in a.path) for a in mounts] == [(201, True)]
    assert base.split(":")[1] in mounts[0].path
    base_uploads = [a for a in lines if a.method == "PUT" and f"digest={base.replace(':', '%3A')}" in a.path]
    assert len(base_uploads) == 1, "the shared base layer travels once"
    assert [i.stats.mounted_blobs for i in summary.items] == [0, 1]
    for o in (one, two):
        resp, raw = _manifest(site, f"{prefix}/{o.repo}", o.image.digest)
        assert resp.status_code == 200 and raw == o.image.manifest.raw


def test_the_index_goes_along_only_when_every_platform_is_cached(
    tmp_path: Path, registry: RunningRegistry, site: RunningRegistry, src_store: BlobStore
) -> None:
    marker = uuid.uuid4().hex
    repo = f"wl-push-{marker[:8]}/multi"
    amd = build_image(src_store, [busybox_base_layer(), {"m": marker.encode()}], arch="amd64")
    arm = build_image(src_store, [{"m": marker.encode(), "arm": b"1"}], arch="arm64", variant="v8")
    idx = build_index(src_store, [amd, arm])
    push_image(registry.url, repo, "2.0", src_store, idx)
    tag, cache = f"{registry.host}/{repo}:2.0", tmp_path / "cache"

    _materialize(tag, cache, tmp_path / "wf-amd", platform="linux/amd64")
    prefix = f"idx{uuid.uuid4().hex[:6]}"
    partial = push(cache, [tag], f"{site.host}/{prefix}", platform="linux/amd64")
    [item] = partial.items
    assert item.digest == amd.digest and item.note and "only this platform" in item.note
    resp, _ = _manifest(site, f"{prefix}/{repo}", "2.0")
    assert resp.headers["Docker-Content-Digest"] == amd.digest

    _materialize(tag, cache, tmp_path / "wf-arm", platform="linux/arm64")
    whole = push(cache, [tag], f"{site.host}/{prefix}", platform="linux/amd64")
    [item] = whole.items
    assert item.digest == idx.digest and item.note is None
    resp, raw = _manifest(site, f"{prefix}/{repo}", "2.0")
    assert resp.headers["Docker-Content-Digest"] == idx.digest and raw == idx.raw
    for child in (amd, arm):
        resp, raw = _manifest(site, f"{prefix}/{repo}", child.digest)
        assert resp.status_code == 200 and raw == child.manifest.raw


def test_a_sif_goes_as_oras_and_materializes_back_with_the_same_digest(
    tmp_path: Path, registry: RunningRegistry, site: RunningRegistry, src_store: BlobStore
) -> None:
    origin = Origin(registry, src_store, "sif")
    built = _materialize(f"docker://{origin.ref}", tmp_path / "cacheA", tmp_path / "wfA", "singularity")
    assert built.type == ContainerType.Singularity and built.localPath is not None
    sif_digest = sha256_file(built.localPath)
    assert built.image_signature == sif_digest

    prefix = f"oras{uuid.uuid4().hex[:6]}"
    mark = site.mark()
    # Small chunks: the SIF goes up in several PATCHes (the path a multi-GB SIF takes).
    summary = push(
        tmp_path / "cacheA", [f"docker://{origin.ref}"], f"{site.host}/{prefix}", engine="singularity",
        chunk_size=256 << 10,
    )  # fmt: skip
    [item] = summary.items
    assert item.kind == "sif" and item.target == f"oras://{site.host}/{prefix}/{origin.repo}:1.0-sif"
    patches = [a for a in site.requests_since(mark) if a.method == "PATCH"]
    assert len(patches) >= 2 and all(a.status == 202 for a in patches)

    resp, raw = _manifest(site, f"{prefix}/{origin.repo}", "1.0-sif")
    doc = json.loads(raw)
    assert resp.headers["Docker-Content-Digest"] == item.digest
    assert doc["mediaType"] == OCI_MANIFEST and doc["config"]["mediaType"] == SIF_CONFIG
    assert [(d["mediaType"], d["digest"]) for d in doc["layers"]] == [(SIF_LAYER, sif_digest)]
    assert doc["layers"][0]["annotations"]["org.opencontainers.image.title"] == "sif_1.0.sif"

    oras = f"oras://{site.host}/{prefix}/{origin.repo}:1.0-sif"
    back = _materialize(oras, tmp_path / "cacheB", tmp_path / "wfB", "singularity")
    assert back.localPath is not None and sha256_file(back.localPath) == sif_digest
    assert back.image_signature == back.signature == sif_digest
    assert back.fingerprint == f"oras://{site.host}/{prefix}/{origin.repo}@{item.digest}"
    assert back.source_type == ContainerType.Singularity

    mark = site.mark()
    same = _materialize(oras, tmp_path / "cacheB", tmp_path / "wfB2", "singularity")
    assert same.image_signature == sif_digest
    fetched = [
        f"{a.method} {a.path}"
        for a in site.requests_since(mark)
        if a.path.startswith("/v2/") and a.path != "/v2/"
    ]
    assert fetched == [f"HEAD /v2/{prefix}/{origin.repo}/manifests/1.0-sif"], (
        "an unchanged tag costs one HEAD"
    )

    by_digest = f"oras://{site.host}/{prefix}/{origin.repo}@{item.digest}"
    pinned = _materialize(by_digest, tmp_path / "cacheC", tmp_path / "wfC", "singularity")
    assert pinned.image_signature == sif_digest
    mark = site.mark()
    again = _materialize(by_digest, tmp_path / "cacheC", tmp_path / "wfC2", "singularity", offline=True)
    assert again.image_signature == sif_digest
    assert site.requests_since(mark) == [], "a pinned, cached oras:// reference needs no request"

    # An ORAS SIF pushed on goes with its original manifest: same digest under the new name.
    onward = push(tmp_path / "cacheB", [oras], f"{site.host}/{prefix}-copy")
    [copy] = onward.items
    assert copy.target == f"oras://{site.host}/{prefix}-copy/{prefix}/{origin.repo}:1.0-sif"
    assert copy.digest == item.digest


def test_a_tag_that_is_not_cached_is_named_and_nothing_is_pushed(
    tmp_path: Path, registry: RunningRegistry, site: RunningRegistry, src_store: BlobStore
) -> None:
    origin = Origin(registry, src_store)
    cache = tmp_path / "cache"
    _materialize(origin.ref, cache, tmp_path / "wf")
    absent = f"{registry.host}/wl-never-{uuid.uuid4().hex[:8]}/tool:9"
    mark = site.mark()
    with pytest.raises(ContainerNotFoundException) as ei:
        push(cache, [origin.ref, absent], f"{site.host}/nope")
    assert [name for name, _ in ei.value.failures] == [absent]
    assert "materialize it first" in str(ei.value)
    out = cli("push", "--to", f"{site.host}/nope", "--cache-dir", str(cache), origin.ref, absent)
    assert out.returncode == 1 and absent in out.stderr and "not in the cache" in out.stderr
    sif_only = cli(
        "push", "--to", f"{site.host}/nope", "--cache-dir", str(cache), "--engine", "singularity", origin.ref
    )
    assert sif_only.returncode == 1 and "as a SIF" in sif_only.stderr
    assert site.requests_since(mark) == [], "nothing reached the registry"

    bad = cli("push", "--to", "not a registry!", "--cache-dir", str(cache), origin.ref)
    assert bad.returncode == 2 and "--to" in bad.stderr


def test_a_registry_that_refuses_us_is_a_clear_error_and_a_login_fixes_it(
    tmp_path: Path,
    registry: RunningRegistry,
    token_registry: RunningRegistry,
    src_store: BlobStore,
    isolated_credentials: Path,
) -> None:
    origin = Origin(registry, src_store)
    cache = tmp_path / "cache"
    _materialize(origin.ref, cache, tmp_path / "wf")
    prefix = f"auth{uuid.uuid4().hex[:6]}"
    mark = token_registry.mark()
    with pytest.raises(AuthenticationError) as ei:
        push(cache, [origin.ref], f"{token_registry.host}/{prefix}")
    message = str(ei.value)
    assert token_registry.host in message and "login" in message and "--authfile" in message
    assert not [a for a in token_registry.requests_since(mark) if a.status == 201], "nothing was written"

    out = cli("push", "--to", f"{token_registry.host}/{prefix}", "--cache-dir", str(cache), origin.ref)
    assert out.returncode == 1 and "refused" in out.stderr and token_registry.host in out.stderr

    user, password = next(iter(token_registry.users.items()))
    authfile = tmp_path / "auth.json"
    login = base64.b64encode(f"{user}:{password}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {token_registry.host: {"auth": login}}}))
    out = cli(
        "push", "--to", f"{token_registry.host}/{prefix}", "--cache-dir", str(cache),
        "--authfile", str(authfile), "--json", origin.ref,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    [item] = json.loads(out.stdout)["items"]
    assert item["outcome"] == "pushed" and item["digest"] == origin.image.digest
    scopes = {s for r in token_registry.token_server.token_requests() for s in r["scope"]}  # type: ignore[union-attr]
    assert f"repository:{prefix}/{origin.repo}:pull,push" in scopes


@pytest.fixture
def site_behind_proxy(tmp_path: Path) -> Iterator[tuple[RunningRegistry, FaultProxy]]:
    """A site registry whose upload URLs (``Location``) point at a fault proxy in front of it.

    The registry names itself by the proxy's address (distribution's ``http.host``), so every request
    of an upload, not only the first, passes the proxy and can be made to fail.
    """
    root = tmp_path / "behind"
    root.mkdir()
    port = free_port()
    proxy = FaultProxy(f"http://127.0.0.1:{port}")
    config = root / "config.yml"
    config.write_text(_registry_config(root, port, f"  host: {proxy.url}\n"))
    log_path, err_path = root / "access.log", root / "registry.stderr"
    with open(log_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=out, stderr=err, cwd=root
        )
    reg = RunningRegistry(process, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", root, log_path, err_path)
    try:
        for _ in range(300):
            try:
                requests.get(f"{reg.url}/v2/", timeout=2).close()
                break
            except requests.RequestException:
                assert process.poll() is None, err_path.read_text()
                time.sleep(0.05)
        yield reg, proxy
    finally:
        proxy.stop()
        reg.stop()


def test_a_broken_chunk_continues_where_the_registry_stopped_and_a_failed_upload_starts_over(
    tmp_path: Path,
    registry: RunningRegistry,
    src_store: BlobStore,
    site_behind_proxy: tuple[RunningRegistry, FaultProxy],
) -> None:
    reg, proxy = site_behind_proxy
    origin = Origin(registry, src_store, "resume")
    built = _materialize(f"docker://{origin.ref}", tmp_path / "cache", tmp_path / "wf", "singularity")
    sif_digest = built.image_signature
    # The first chunk is refused once (it never reaches the registry): the upload asks where the
    # registry stands and continues. The closing PUT of the SIF fails once: a new upload session.
    proxy.rules.append(Rule("status", "/blobs/uploads/", 1, status=503, method="PATCH"))
    closing = "digest=" + str(sif_digest).replace(":", "%3A")
    proxy.rules.append(Rule("status", closing, 1, status=503, method="PUT"))
    summary = push(
        tmp_path / "cache", [f"docker://{origin.ref}"], f"{proxy.host}/chunks", engine="singularity",
        chunk_size=256 << 10, retries=3,
    )  # fmt: skip
    [item] = summary.items
    assert item.outcome == "pushed" and item.stats.uploaded_blobs == 2  # the SIF and the empty config
    status_queries = proxy.hits("/blobs/uploads/", "GET")
    assert status_queries and all(s.status == 204 for s in status_queries), "asked where to continue"
    assert len(proxy.hits("/blobs/uploads/", "POST")) == 3, "config, SIF, and the SIF once more"
    back = _materialize(
        f"oras://{reg.host}/chunks/{origin.repo}@{item.digest}",
        tmp_path / "back",
        tmp_path / "wfb",
        "singularity",
    )
    assert back.image_signature == sif_digest


def test_records_files_push_the_digests_they_pin_once_each(
    tmp_path: Path, registry: RunningRegistry, site: RunningRegistry, src_store: BlobStore
) -> None:
    origin = Origin(registry, src_store, "records")
    cache = tmp_path / "cache"
    image = _materialize(origin.ref, cache, tmp_path / "wf")
    sif = _materialize(f"docker://{origin.ref}", cache, tmp_path / "wfs", "singularity")
    records = tmp_path / "containers.yaml"
    write_records([image, sif], records, format="yaml", stage_dir=tmp_path / "wf")

    prefix = f"rec{uuid.uuid4().hex[:6]}"
    # The records file and the tag name the same image: it is pushed once.
    out = cli(
        "push", "--to", f"{site.host}/{prefix}", "--cache-dir", str(cache), "--json", str(records), origin.ref
    )
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)["items"]
    assert [(i["kind"], i["outcome"]) for i in items] == [("image", "pushed"), ("sif", "pushed")]
    assert items[0]["pinned"] == f"{site.host}/{prefix}/{origin.repo}@{origin.image.digest}"
    assert items[1]["target"] == f"oras://{site.host}/{prefix}/{origin.repo}:1.0-sif"
    resp, raw = _manifest(site, f"{prefix}/{origin.repo}", "1.0-sif")
    assert resp.status_code == 200 and json.loads(raw)["layers"][0]["digest"] == sif.image_signature

"""The registry client against a real docker-registry (distribution 2.8) on loopback.

No mocks: a real registry decides what HEAD returns, how Range is answered
and what a 401 challenge looks like; faults come from a proxy in front of it
and request counts from the registry's own access log.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.imagegen import (
    BuiltImage,
    build_image,
    build_index,
    busybox_base_layer,
    gzip_bytes,
    make_tar,
)
from tests.support.proxy import FaultProxy
from tests.support.push import push_image
from tests.support.registry import RunningRegistry, child_env
from wfexs_like.digests import sha256_bytes
from wfexs_like.errors import (
    AuthenticationError,
    ContainerNotFoundException,
    IntegrityError,
    ManifestUnknownError,
    PlatformMismatchError,
    RegistryError,
)
from wfexs_like.images.base import Image
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.manifest import (
    OCI_CONFIG,
    OCI_LAYER_NONDIST_GZIP,
    Manifest,
    Platform,
    parse_manifest_or_index,
)
from wfexs_like.images.store import StoreImage, write_to_store
from wfexs_like.registry import (
    CredentialResolver,
    ProgressEvent,
    PullResult,
    RegistryClient,
    RemoteImage,
)
from wfexs_like.registry.auth import parse_www_authenticate
from wfexs_like.registry.client import is_loopback
from wfexs_like.registry.transport import parse_retry_after

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("isolated_credentials")]

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


def make_image(store: BlobStore, name: str, arch: str = "amd64", variant: str | None = None) -> BuiltImage:
    """busybox base (shared by every image built here) plus one small layer unique to ``name``."""
    return build_image(
        store,
        [busybox_base_layer(), {"etc/": None, f"etc/{name}.txt": f"{name} {arch}\n".encode()}],
        arch=arch,
        variant=variant,
        labels={"wfexs-like.test": name},
    )


def client(**kw) -> RegistryClient:
    """Fast back-off: the retry tests must not dominate the suite's runtime."""
    kw.setdefault("backoff", 0.02)
    kw.setdefault("timeout", 10)
    return RegistryClient(**kw)


def blobs_of(img: BuiltImage) -> list[str]:
    return [img.manifest.config.digest, *(d.digest for d in img.manifest.layers)]


def write_docker_config(directory: Path, content: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(content))
    return directory


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# -- pulling ---------------------------------------------------------------------
def test_pull_single_platform_image(registry: RunningRegistry, src_store, blob_store) -> None:
    img = make_image(src_store, "single")
    assert push_image(registry.url, "t/single", "v1", src_store, img.manifest) == img.digest
    events: list[ProgressEvent] = []
    lock = threading.Lock()

    def progress(ev: ProgressEvent) -> None:
        with lock:
            events.append(ev)

    with client(progress=progress) as c:
        res = c.pull(registry.host, "t/single", "v1", blob_store)

    assert isinstance(res, PullResult)
    assert res.manifest_digest == img.digest and res.index_digest is None
    assert (res.registry, res.repository, res.reference) == (registry.host, "t/single", "v1")
    assert res.config == img.config
    assert res.platform == AMD64
    assert res.manifest.raw == img.manifest.raw
    for d in [*blobs_of(img), img.digest]:
        assert blob_store.has(d) and blob_store.verify(d, full=True), d
    assert (res.downloaded_blobs, res.reused_blobs) == (3, 0)
    assert res.downloaded_bytes == sum(d.size for d in (img.manifest.config, *img.manifest.layers))
    assert list(blob_store.tmp_dir.iterdir()) == []
    kinds = {(e.digest, e.kind) for e in events}
    for d in blobs_of(img):
        assert {(d, "start"), (d, "done")} <= kinds
    assert all(e.image == f"{registry.host}/t/single:v1" for e in events)


def test_multi_platform_index_selects_platform(registry: RunningRegistry, src_store, blob_store) -> None:
    amd = make_image(src_store, "multi", "amd64")
    arm = make_image(src_store, "multi", "arm64", variant="v8")
    idx = build_index(src_store, [amd, arm])
    assert push_image(registry.url, "t/multi", "latest", src_store, idx) == idx.digest

    with client() as c:
        r_arm = c.pull(registry.host, "t/multi", "latest", blob_store, platform=Platform.parse("linux/arm64"))
        r_amd = c.pull(registry.host, "t/multi", "latest", blob_store, platform=Platform.parse("linux/amd64"))
        with pytest.raises(PlatformMismatchError) as ei:
            c.pull(registry.host, "t/multi", "latest", blob_store, platform=Platform.parse("linux/s390x"))
        # An index pinned by digest resolves the same way.
        r_by_digest = c.pull(registry.host, "t/multi", idx.digest, blob_store, platform=ARM64)

    assert r_arm.manifest_digest == arm.digest != amd.digest == r_amd.manifest_digest
    assert r_arm.index_digest == r_amd.index_digest == idx.digest
    assert r_arm.config["architecture"] == "arm64" and r_amd.config["architecture"] == "amd64"
    assert r_arm.platform == Platform("linux", "arm64", "v8")
    assert r_amd.reused_blobs == 1, "the busybox base layer is shared between the two architectures"
    assert blob_store.has(idx.digest)
    assert set(ei.value.available) == {"linux/amd64", "linux/arm64/v8"}
    assert "linux/amd64" in str(ei.value) and "linux/arm64" in str(ei.value)
    assert "t/multi:latest" in str(ei.value)
    assert r_by_digest.manifest_digest == arm.digest


def test_pull_many_fetches_a_shared_layer_once(registry: RunningRegistry, src_store, blob_store) -> None:
    a, b = make_image(src_store, "share-a"), make_image(src_store, "share-b")
    base = a.manifest.layers[0].digest
    assert b.manifest.layers[0].digest == base
    push_image(registry.url, "t/share-a", "1", src_store, a.manifest)
    push_image(registry.url, "t/share-b", "1", src_store, b.manifest)
    wanted = [(registry.host, "t/share-a", "1"), (registry.host, "t/share-b", "1")]

    mark = registry.mark()
    with client(max_workers=4) as c:
        results = c.pull_many(wanted, blob_store)
    assert all(isinstance(r, PullResult) for r in results), results
    gets = registry.blob_gets(mark)
    assert len([g for g in gets if g.path.endswith(base)]) == 1
    assert len(gets) == 5  # shared base + 2 own layers + 2 configs
    assert sum(r.downloaded_blobs for r in results) == 5  # type: ignore[union-attr]

    mark = registry.mark()
    with client() as c:
        again = c.pull_many(wanted, blob_store)
    assert registry.blob_gets(mark) == []
    seen = registry.requests_since(mark)
    assert not [s for s in seen if s.method == "GET" and "/manifests/" in s.path], "HEAD suffices"
    for r in again:
        assert isinstance(r, PullResult) and (r.downloaded_blobs, r.reused_blobs) == (0, 3)


def test_two_clients_pulling_at_once_download_each_blob_once(
    registry: RunningRegistry, src_store, blob_store
) -> None:
    img = make_image(src_store, "concurrent")
    push_image(registry.url, "t/concurrent", "v1", src_store, img.manifest)
    mark = registry.mark()
    results: list[PullResult] = []
    start = threading.Barrier(2)

    def run() -> None:
        with client() as c:
            start.wait()
            results.append(c.pull(registry.host, "t/concurrent", "v1", blob_store))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    assert len(registry.blob_gets(mark)) == 3
    assert sum(r.downloaded_blobs for r in results) == 3


def test_pull_by_digest(registry: RunningRegistry, src_store, blob_store) -> None:
    img = make_image(src_store, "bydigest")
    push_image(registry.url, "t/bydigest", "v1", src_store, img.manifest)
    with client() as c:
        res = c.pull(registry.host, "t/bydigest", img.digest, blob_store)
        assert res.manifest_digest == img.digest and res.reference == img.digest
        mark = registry.mark()
        res2 = c.pull(registry.host, "t/bydigest", img.digest, blob_store)
    assert res2.manifest_digest == img.digest
    assert registry.requests_since(mark) == [], "a pinned image already in the store needs no request"
    with client() as c:
        digest, media_type, raw = c.resolve(registry.host, "t/bydigest", img.digest)
        assert (digest, media_type, raw) == (img.digest, img.manifest.media_type, img.manifest.raw)


def test_explicit_platform_mismatch_on_single_platform_image(registry, src_store, blob_store) -> None:
    img = make_image(src_store, "single-amd")
    push_image(registry.url, "t/single-amd", "v1", src_store, img.manifest)
    mark = registry.mark()
    with client(platform=ARM64) as c, pytest.raises(PlatformMismatchError, match="linux/amd64"):
        c.pull(registry.host, "t/single-amd", "v1", blob_store)
    fetched = [g.path.rsplit("/", 1)[1] for g in registry.blob_gets(mark)]
    assert fetched == [img.manifest.config.digest], "found out from the config, before any layer"


def test_unknown_tag_and_repository(registry: RunningRegistry, src_store, blob_store) -> None:
    img = make_image(src_store, "known")
    push_image(registry.url, "t/known", "v1", src_store, img.manifest)
    with client() as c:
        with pytest.raises(ManifestUnknownError) as ei:
            c.pull(registry.host, "t/known", "no-such-tag", blob_store)
        assert f"{registry.host}/t/known:no-such-tag" in str(ei.value)
        assert "MANIFEST_UNKNOWN" in str(ei.value) and ei.value.status == 404
        assert isinstance(ei.value, ContainerNotFoundException)
        with pytest.raises(ManifestUnknownError, match="t/nobody-home:v1"):
            c.pull(registry.host, "t/nobody-home", "v1", blob_store)


def test_skopeo_agrees_on_the_manifest_digest(registry: RunningRegistry, src_store, blob_store) -> None:
    img = make_image(src_store, "skopeo")
    push_image(registry.url, "t/skopeo", "v1", src_store, img.manifest)
    with client() as c:
        res = c.pull(registry.host, "t/skopeo", "v1", blob_store)
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/t/skopeo:v1"],
        capture_output=True,
        check=True,
        env=child_env(),
        timeout=30,
    ).stdout
    info = json.loads(out)
    assert info["Digest"] == res.manifest_digest == img.digest
    assert info["Layers"] == [d.digest for d in img.manifest.layers]
    assert info["Architecture"] == "amd64"


def test_foreign_layer_comes_from_its_url(
    registry, registry_proxy: FaultProxy, src_store, blob_store
) -> None:
    img = make_image(src_store, "foreign")
    foreign_tar = make_tar({"opt/": None, "opt/licensed.txt": b"non-distributable\n"})
    gz = gzip_bytes(foreign_tar)
    fdigest = sha256_bytes(gz)
    url = registry_proxy.serve(f"/foreign/{fdigest}", gz)
    config = json.loads(json.dumps(img.config))
    config["rootfs"]["diff_ids"].append(sha256_bytes(foreign_tar))
    cfg_raw = json.dumps(config, sort_keys=True).encode()
    manifest = json.loads(img.manifest.raw)
    manifest["config"] = {
        "mediaType": OCI_CONFIG,
        "digest": src_store.put_bytes(cfg_raw),
        "size": len(cfg_raw),
    }
    manifest["layers"].append(
        {"mediaType": OCI_LAYER_NONDIST_GZIP, "digest": fdigest, "size": len(gz), "urls": [url]}
    )
    raw = json.dumps(manifest, sort_keys=True).encode()
    src_store.put_bytes(raw)
    m = parse_manifest_or_index(raw)
    assert isinstance(m, Manifest)
    push_image(registry.url, "t/foreign", "v1", src_store, m)  # the foreign layer is not uploaded

    mark = registry.mark()
    with client() as c:
        res = c.pull(registry.host, "t/foreign", "v1", blob_store)
    assert blob_store.has(fdigest) and res.downloaded_blobs == 4
    assert len(registry_proxy.hits("/foreign/", "GET")) == 1
    assert not [g for g in registry.blob_gets(mark) if g.path.endswith(fdigest)]


# -- the registry as a lazy image source -----------------------------------------
def store_contents(store: BlobStore) -> dict[str, bytes]:
    return {d: store.path(d).read_bytes() for d in store.iter_digests()}


def test_remote_image_is_lazy_and_reads_verified(registry: RunningRegistry, src_store) -> None:
    img = make_image(src_store, "lazy")
    push_image(registry.url, "t/lazy", "v1", src_store, img.manifest)
    with client() as c:
        mark = registry.mark()
        remote = c.image(registry.host, "t/lazy", "v1")
        assert isinstance(remote, RemoteImage) and isinstance(remote, Image)
        assert f"{registry.host}/t/lazy:v1" in remote.describe() and "t/lazy:v1" in repr(remote)
        assert registry.requests_since(mark) == [], "constructing (and naming) it asks nothing"

        assert remote.digest() == img.digest == remote.manifest_digest and remote.index_digest is None
        manifest_calls = [
            (a.method, a.status) for a in registry.requests_since(mark) if "/manifests/" in a.path
        ]
        assert manifest_calls == [("HEAD", 200), ("GET", 200)]
        assert registry.blob_gets(mark) == [], "the manifest alone needs no blob"
        assert img.digest in remote.describe()

        assert remote.config() == img.config and remote.config_name() == img.image_id
        assert remote.platform() == AMD64
        assert [g.path.rsplit("/", 1)[1] for g in registry.blob_gets(mark)] == [img.manifest.config.digest]
        for layer, tar in zip(remote.layers(), img.layer_tars, strict=True):
            with layer.compressed() as fh:
                assert fh.read() == src_store.path(layer.digest()).read_bytes()
            with layer.uncompressed() as fh:
                assert fh.read() == tar
            assert layer.local_path() is None, "nothing local to link"
        assert remote.size() == len(img.manifest.raw) + sum(
            d.size for d in (img.manifest.config, *img.manifest.layers)
        )
        mark = registry.mark()
        remote.digest()
        remote.config()
        assert registry.requests_since(mark) == [], "resolved once, config read once"


def test_remote_image_layer_stream_is_verified_and_resumed(
    registry, registry_proxy: FaultProxy, src_store
) -> None:
    img = make_image(src_store, "remote-stream")
    push_image(registry.url, "t/remote-stream", "v1", src_store, img.manifest)
    base, own = img.manifest.layers
    registry_proxy.corrupt(match=own.digest)
    registry_proxy.truncate(match=base.digest, times=1)
    with client() as c:
        remote = c.image(registry_proxy.host, "t/remote-stream", "v1")
        with remote.layer_by_digest(base.digest).compressed() as fh:
            assert fh.read() == src_store.path(base.digest).read_bytes()
        with remote.layer_by_digest(own.digest).compressed() as fh, pytest.raises(IntegrityError) as ei:
            fh.read()
    assert ei.value.expected == own.digest and "t/remote-stream:v1" in str(ei.value)
    first, second = registry_proxy.hits(base.digest, "GET")
    assert first.faults == ["truncate"] and "Range" not in first.headers
    kept = int(second.headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < kept < base.size and second.status == 206


def test_remote_image_selects_its_platform_lazily(registry: RunningRegistry, src_store) -> None:
    amd = make_image(src_store, "lazy-multi", "amd64")
    arm = make_image(src_store, "lazy-multi", "arm64", variant="v8")
    idx = build_index(src_store, [amd, arm])
    push_image(registry.url, "t/lazy-multi", "latest", src_store, idx)
    single = make_image(src_store, "lazy-single")
    push_image(registry.url, "t/lazy-single", "v1", src_store, single.manifest)

    mark = registry.mark()
    with client() as c, client(platform=AMD64) as c_amd:
        on_arm = c.image(registry.host, "t/lazy-multi", "latest", platform=ARM64)
        on_default = c_amd.image(registry.host, "t/lazy-multi", "latest")
        nowhere = c.image(registry.host, "t/lazy-multi", "latest", platform=Platform.parse("linux/s390x"))
        wrong_single = c.image(registry.host, "t/lazy-single", "v1", platform=ARM64)
        assert registry.requests_since(mark) == []

        assert on_arm.digest() == arm.digest and on_arm.index_digest == idx.digest
        assert on_arm.platform() == Platform("linux", "arm64", "v8")
        assert on_default.digest() == amd.digest and on_default.config()["architecture"] == "amd64"
        with pytest.raises(PlatformMismatchError) as ei:
            nowhere.digest()
        assert set(ei.value.available) == {"linux/amd64", "linux/arm64/v8"}
        assert "t/lazy-multi:latest" in str(ei.value) and "linux/s390x" in str(ei.value)

        assert wrong_single.digest() == single.digest, "the manifest does not say its platform"
        mark = registry.mark()
        with pytest.raises(PlatformMismatchError, match="linux/amd64") as ei:
            wrong_single.config()
        assert "t/lazy-single:v1" in str(ei.value)
        fetched = [g.path.rsplit("/", 1)[1] for g in registry.blob_gets(mark)]
        assert fetched == [single.manifest.config.digest], "found out from the config, before any layer"


def test_write_to_store_of_a_remote_image_equals_pull(registry: RunningRegistry, src_store, tmp_path) -> None:
    amd = make_image(src_store, "copy", "amd64")
    arm = make_image(src_store, "copy", "arm64", variant="v8")
    idx = build_index(src_store, [amd, arm])
    push_image(registry.url, "t/copy", "latest", src_store, idx)
    pulled, copied, pinned_store = (BlobStore(tmp_path / n) for n in ("pulled", "copied", "pinned"))

    with client() as c:
        res = c.pull(registry.host, "t/copy", "latest", pulled, platform=ARM64)
        remote = c.image(registry.host, "t/copy", "latest", platform=ARM64)
        assert write_to_store(remote, copied) == res.manifest_digest == arm.digest
        last = remote.last_pull
        assert last is not None and last.index_digest == idx.digest
        assert (last.downloaded_blobs, last.downloaded_bytes) == (res.downloaded_blobs, res.downloaded_bytes)
        mark = registry.mark()
        assert remote.index_digest == idx.digest and remote.digest() == arm.digest
        assert registry.requests_since(mark) == [], "the pull resolved it"

        # Resolved (and its config read) before the copy: the copy asks for no manifest and no config again.
        pinned = c.image(registry.host, "t/copy", "latest", platform=ARM64)
        pinned.config()
        mark = registry.mark()
        assert write_to_store(pinned, pinned_store) == arm.digest
        assert not [a for a in registry.requests_since(mark) if "/manifests/" in a.path]
        assert {g.path.rsplit("/", 1)[1] for g in registry.blob_gets(mark)} == {
            d.digest for d in arm.manifest.layers
        }
        assert pinned.last_pull is not None and pinned.last_pull.downloaded_blobs == 3
        assert pinned.last_pull.reference == "latest"

    assert store_contents(pulled) == store_contents(copied) == store_contents(pinned_store)
    assert idx.digest in store_contents(copied)
    assert StoreImage(copied, arm.digest).blob_digests() == remote.blob_digests()
    assert list(copied.tmp_dir.iterdir()) == []


def test_remote_image_stays_pinned_when_the_tag_moves(
    registry: RunningRegistry, src_store, blob_store
) -> None:
    old, new = make_image(src_store, "moving-old"), make_image(src_store, "moving-new")
    push_image(registry.url, "t/moving", "v1", src_store, old.manifest)
    with client() as c:
        remote = c.image(registry.host, "t/moving", "v1")
        assert remote.digest() == old.digest
        push_image(registry.url, "t/moving", "v1", src_store, new.manifest)
        assert write_to_store(remote, blob_store) == old.digest
        assert not blob_store.has(new.digest)
        assert write_to_store(c.image(registry.host, "t/moving", "v1"), blob_store) == new.digest


# -- authentication --------------------------------------------------------------
def _push_private(reg: RunningRegistry, src_store: BlobStore, repo: str) -> BuiltImage:
    img = make_image(src_store, repo.replace("/", "-"))
    user, pw = next(iter(reg.users.items()))
    push_image(reg.url, repo, "v1", src_store, img.manifest, auth=(user, pw), verify=reg.verify)
    return img


def test_tls_basic_auth_with_docker_config(auth_registry, src_store, blob_store, tmp_path) -> None:
    img = _push_private(auth_registry, src_store, "private/app")
    user, pw = next(iter(auth_registry.users.items()))
    cfg = write_docker_config(
        tmp_path / "dockercfg", {"auths": {auth_registry.host: {"auth": b64(user, pw)}}}
    )
    with client(docker_config=cfg, ca_bundle=auth_registry.ca_cert) as c:
        res = c.pull(auth_registry.host, "private/app", "v1", blob_store)
        assert c.base_url(auth_registry.host) == auth_registry.url, "loopback TLS detected, not assumed"
    assert res.manifest_digest == img.digest and blob_store.has(img.manifest.layers[0].digest)


def test_tls_basic_auth_without_credentials(auth_registry, src_store, blob_store, tmp_path) -> None:
    _push_private(auth_registry, src_store, "private/nocreds")
    with client(ca_bundle=auth_registry.ca_cert) as c, pytest.raises(AuthenticationError) as ei:
        c.pull(auth_registry.host, "private/nocreds", "v1", blob_store)
    msg = str(ei.value)
    assert ei.value.status == 401
    assert f"{auth_registry.host}/private/nocreds:v1" in msg
    assert f"docker login {auth_registry.host}" in msg and "REGISTRY_AUTH_FILE" in msg
    assert "config.json" in msg
    assert not list(blob_store.blobs_dir.iterdir())

    cfg = write_docker_config(
        tmp_path / "badcfg", {"auths": {auth_registry.host: {"auth": b64("wfexs", "nope")}}}
    )
    with (
        client(docker_config=cfg, ca_bundle=auth_registry.ca_cert) as c,
        pytest.raises(AuthenticationError) as ei,
    ):
        c.pull(auth_registry.host, "private/nocreds", "v1", blob_store)
    assert str(cfg / "config.json") in str(ei.value), "says which credentials were rejected"


def test_tls_credential_helper(auth_registry, src_store, blob_store, tmp_path, monkeypatch) -> None:
    img = _push_private(auth_registry, src_store, "private/helper")
    user, pw = next(iter(auth_registry.users.items()))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    asked = tmp_path / "helper-asked.txt"
    helper = bindir / "docker-credential-testhelper"
    helper.write_text(
        f"""#!/bin/sh
[ "$1" = get ] || exit 3
read -r server || true
echo "$server" >> {asked}
if [ "$server" = "{auth_registry.host}" ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{pw}"}}\\n' "$server"
else
  echo "credentials not found in native keychain"
  exit 1
fi
"""
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    cfg = write_docker_config(tmp_path / "helpercfg", {"auths": {}, "credsStore": "testhelper"})
    with client(docker_config=cfg, ca_bundle=auth_registry.ca_cert) as c:
        res = c.pull(auth_registry.host, "private/helper", "v1", blob_store)
    assert res.manifest_digest == img.digest
    assert asked.read_text().split() == [auth_registry.host], "asked once, with the bare host"


def test_tls_certificate_is_verified(auth_registry, src_store, blob_store, tmp_path, caplog) -> None:
    _push_private(auth_registry, src_store, "private/tls")
    user, pw = next(iter(auth_registry.users.items()))
    cfg = write_docker_config(
        tmp_path / "cfg", {"auths": {auth_registry.host: {"username": user, "password": pw}}}
    )
    with client(docker_config=cfg, retries=0) as c, pytest.raises(RegistryError, match="--cert-dir"):
        c.pull(f"https://{auth_registry.host}", "private/tls", "v1", blob_store)
    # Declared insecure: TLS is still used, but not verified.
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING),
        client(docker_config=cfg, insecure_registries=[auth_registry.host]) as c,
    ):
        assert c.pull(auth_registry.host, "private/tls", "v1", blob_store).manifest_digest
    said = [r.getMessage() for r in caplog.records if "not verified" in r.getMessage()]
    assert said == [f"{auth_registry.host}: TLS certificate not verified (declared an insecure registry)"]


def test_bearer_token_anonymous_and_with_credentials(token_registry, src_store, blob_store, tmp_path) -> None:
    ts = token_registry.token_server
    assert ts is not None
    public = _push_private(token_registry, src_store, "public/app")
    private = _push_private(token_registry, src_store, "private/app")

    n0 = len(ts.token_requests())
    with client() as c:
        res = c.pull(token_registry.host, "public/app", "v1", blob_store)
    asks = ts.token_requests()[n0:]
    assert res.manifest_digest == public.digest
    assert len(asks) == 1, "one token, reused for the HEAD, GET and every blob"
    assert asks[0]["user"] is None and asks[0]["scope"] == ["repository:public/app:pull"]

    with client() as c, pytest.raises(AuthenticationError) as ei:
        c.pull(token_registry.host, "private/app", "v1", blob_store)
    assert "anonymous" in str(ei.value) and "docker login" in str(ei.value)

    user, pw = next(iter(token_registry.users.items()))
    cfg = write_docker_config(
        tmp_path / "cfg", {"auths": {f"http://{token_registry.host}": {"auth": b64(user, pw)}}}
    )
    n1 = len(ts.token_requests())
    with client(docker_config=cfg) as c:
        res = c.pull(token_registry.host, "private/app", "v1", blob_store)
    assert res.manifest_digest == private.digest
    assert [a["user"] for a in ts.token_requests()[n1:]] == [user]

    # `docker login` against an OAuth2-capable service stores a refresh token instead.
    blob_store.remove(private.digest)
    cfg = write_docker_config(
        tmp_path / "cfg-oauth", {"auths": {token_registry.host: {"identitytoken": f"refresh-{user}"}}}
    )
    n2 = len(ts.token_requests())
    with client(docker_config=cfg) as c:
        assert c.pull(token_registry.host, "private/app", "v1", blob_store).manifest_digest == private.digest
    assert [(a["user"], a.get("grant")) for a in ts.token_requests()[n2:]] == [(user, "refresh_token")]


def test_redirected_blob_gets_do_not_leak_the_token(token_registry, src_store, blob_store) -> None:
    img = _push_private(token_registry, src_store, "public/redirect")
    proxy = FaultProxy(token_registry.url)
    try:
        proxy.redirect_blobs()
        with client() as c:
            res = c.pull(proxy.host, "public/redirect", "v1", blob_store)
        assert res.manifest_digest == img.digest
        to_registry = proxy.hits("/blobs/", "GET")
        to_storage = proxy.hits("/_storage/", "GET")
    finally:
        proxy.stop()
    assert len(to_registry) == len(to_storage) == 3
    assert all(h.headers.get("Authorization", "").startswith("Bearer ") for h in to_registry)
    assert all("Authorization" not in h.headers for h in to_storage)
    assert all(h.host.startswith("localhost:") for h in to_storage)


# -- a registry (or what is in front of it) misbehaving --------------------------
def test_corrupted_blob_is_never_published(
    registry, registry_proxy: FaultProxy, src_store, blob_store
) -> None:
    img = make_image(src_store, "corrupt")
    push_image(registry.url, "t/corrupt", "v1", src_store, img.manifest)
    layer = img.manifest.layers[0].digest
    registry_proxy.corrupt(match=layer)
    with client() as c, pytest.raises(IntegrityError) as ei:
        c.pull(registry_proxy.host, "t/corrupt", "v1", blob_store)
    assert ei.value.expected == layer
    assert not blob_store.has(layer)
    assert not blob_store.has(img.digest), "no manifest for an incomplete image"
    assert list(blob_store.tmp_dir.iterdir()) == [], "the bad partial is deleted, not kept for resume"


def test_truncated_body_is_resumed_with_range(
    registry, registry_proxy: FaultProxy, src_store, blob_store
) -> None:
    img = make_image(src_store, "truncate")
    push_image(registry.url, "t/truncate", "v1", src_store, img.manifest)
    layer = img.manifest.layers[0]
    registry_proxy.truncate(match=layer.digest, times=2)
    mark = registry.mark()
    with client() as c:
        res = c.pull(registry_proxy.host, "t/truncate", "v1", blob_store)
    assert blob_store.verify(layer.digest, full=True) and res.manifest_digest == img.digest
    hits = registry_proxy.hits(layer.digest, "GET")
    assert len(hits) == 3
    assert "Range" not in hits[0].headers
    first, second = (int(h.headers["Range"].removeprefix("bytes=").rstrip("-")) for h in hits[1:])
    assert 0 < first < second < layer.size
    statuses = [g.status for g in registry.blob_gets(mark, layer.digest)]
    assert statuses == [200, 206, 206]


def test_broken_download_resumes_in_a_later_run(registry, registry_proxy, src_store, blob_store) -> None:
    img = make_image(src_store, "resume")
    push_image(registry.url, "t/resume", "v1", src_store, img.manifest)
    layer = img.manifest.layers[0]
    registry_proxy.truncate(match=layer.digest, times=1)
    with client(retries=0) as c, pytest.raises(RegistryError, match="resumes"):
        c.pull(registry_proxy.host, "t/resume", "v1", blob_store)
    partials = list(blob_store.tmp_dir.glob("*.partial"))
    assert [p.name for p in partials] == [f"sha256-{layer.digest.split(':')[1]}.partial"]
    assert not blob_store.has(layer.digest)
    kept = partials[0].stat().st_size
    assert 0 < kept < layer.size
    with client() as c:
        c.pull(registry_proxy.host, "t/resume", "v1", blob_store)
    last = registry_proxy.hits(layer.digest, "GET")[-1]
    assert last.headers["Range"] == f"bytes={kept}-" and last.status == 206
    assert blob_store.verify(layer.digest, full=True)
    assert list(blob_store.tmp_dir.iterdir()) == []


def test_range_ignored_by_server_restarts_and_bad_partial_is_dropped(
    registry, registry_proxy: FaultProxy, src_store, blob_store
) -> None:
    img = make_image(src_store, "norange")
    push_image(registry.url, "t/norange", "v1", src_store, img.manifest)
    layer = img.manifest.layers[0]
    full = src_store.path(layer.digest).read_bytes()
    partial = blob_store.tmp_dir / f"sha256-{layer.digest.split(':')[1]}.partial"

    # A good partial, but the server answers the Range request with 200 and everything.
    partial.write_bytes(full[: len(full) // 3])
    registry_proxy.ignore_range(match=layer.digest, times=1)
    with client() as c:
        c.pull(registry_proxy.host, "t/norange", "v1", blob_store)
    hit = registry_proxy.hits(layer.digest, "GET")[-1]
    assert hit.faults == ["ignore_range"] and hit.headers["Range"] == f"bytes={len(full) // 3}-"
    assert blob_store.verify(layer.digest, full=True)

    # A partial with wrong bytes: resuming it can only produce a mismatch, which is never published;
    # the blob is then fetched once more from the start, in the same pull.
    blob_store.release_pins()  # the pull above pinned it; this process is done with it
    assert blob_store.remove(layer.digest) == "removed"
    partial.write_bytes(b"\0" * (len(full) // 2))
    before = len(registry_proxy.hits(layer.digest, "GET"))
    with client() as c:
        c.pull(registry_proxy.host, "t/norange", "v1", blob_store)
    resumed, again = registry_proxy.hits(layer.digest, "GET")[before:]
    assert "Range" in resumed.headers and "Range" not in again.headers
    assert blob_store.verify(layer.digest, full=True) and not partial.exists()


def test_lying_manifest_digest_header(registry, registry_proxy: FaultProxy, src_store, blob_store) -> None:
    img = make_image(src_store, "lie")
    push_image(registry.url, "t/lie", "v1", src_store, img.manifest)
    registry_proxy.lie_digest("/manifests/")
    with client() as c:
        with pytest.raises(IntegrityError, match="Docker-Content-Digest"):
            c.resolve(registry_proxy.host, "t/lie", "v1")
        with pytest.raises(IntegrityError):
            c.pull(registry_proxy.host, "t/lie", "v1", blob_store)
    assert not blob_store.has(img.digest)


def test_429_with_retry_after_is_honoured(
    registry, registry_proxy: FaultProxy, src_store, blob_store
) -> None:
    img = make_image(src_store, "ratelimit")
    push_image(registry.url, "t/ratelimit", "v1", src_store, img.manifest)
    registry_proxy.fail(429, "/t/ratelimit/manifests/v1", times=1, retry_after="1")
    t0 = time.monotonic()
    with client() as c:
        res = c.pull(registry_proxy.host, "t/ratelimit", "v1", blob_store)
    elapsed = time.monotonic() - t0
    assert res.manifest_digest == img.digest
    hits = registry_proxy.hits("/t/ratelimit/manifests/v1")
    assert [(h.method, h.status) for h in hits] == [("HEAD", 429), ("HEAD", 200), ("GET", 200)]
    assert elapsed >= 1.0, "Retry-After: 1 was honoured"


def test_500s_are_retried(registry, registry_proxy: FaultProxy, src_store, blob_store) -> None:
    img = make_image(src_store, "flaky")
    push_image(registry.url, "t/flaky", "v1", src_store, img.manifest)
    layer = img.manifest.layers[1].digest
    registry_proxy.fail(500, layer, times=2)
    with client() as c:
        res = c.pull(registry_proxy.host, "t/flaky", "v1", blob_store)
    assert blob_store.has(layer) and res.downloaded_blobs == 3
    assert [h.status for h in registry_proxy.hits(layer, "GET")] == [500, 500, 200]

    # And when it never recovers, the error says so and names the image.
    other = make_image(src_store, "down")
    push_image(registry.url, "t/down", "v1", src_store, other.manifest)
    registry_proxy.fail(503, "/t/down/", times=100)
    with client(retries=2) as c, pytest.raises(RegistryError) as ei:
        c.pull(registry_proxy.host, "t/down", "v1", blob_store)
    assert ei.value.status == 503 and "t/down:v1" in str(ei.value)
    assert len(registry_proxy.hits("/t/down/manifests/v1", "GET")) == 3


# -- pure units (no registry needed, but cheap enough to live here) --------------
def test_parse_www_authenticate() -> None:
    [c] = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/ubuntu:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/ubuntu:pull,push",
    }
    both = parse_www_authenticate('Basic realm="a \\"b\\"", Bearer realm="https://x/t",service=reg')
    assert [(c.scheme, dict(c.params)) for c in both] == [
        ("basic", {"realm": 'a "b"'}),
        ("bearer", {"realm": "https://x/t", "service": "reg"}),
    ]
    assert parse_www_authenticate("") == []


def test_credential_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_credentials: Path
) -> None:
    docker_dir = isolated_credentials / ".docker"
    write_docker_config(
        docker_dir,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hubuser", "hubpass")},
                "registry.example.org:5000": {"username": "u", "password": "p"},
            }
        },
    )
    podman = tmp_path / "auth.json"
    podman.write_text(
        json.dumps(
            {"auths": {"quay.io/team": {"auth": b64("team", "t")}, "quay.io": {"auth": b64("any", "a")}}}
        )
    )
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(podman))
    r = CredentialResolver()
    hub, _ = r.lookup("docker.io", "library/ubuntu")
    assert hub is not None and (hub.username, hub.password) == ("hubuser", "hubpass")
    assert r.lookup("registry-1.docker.io")[0] == hub
    own, _ = r.lookup("registry.example.org:5000", "x")
    assert own is not None and own.username == "u"
    team, _ = r.lookup("quay.io", "team/tool")
    other, _ = r.lookup("quay.io", "someone/else")
    assert team is not None and team.username == "team" and other is not None and other.username == "any"
    # credHelpers beats auths for its host; "<token>" as username means an identity token.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-pertest"
    helper.write_text('#!/bin/sh\nread -r s\nprintf \'{"Username":"<token>","Secret":"tok-%s"}\' "$s"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    cfg = json.loads((docker_dir / "config.json").read_text())
    cfg["credHelpers"] = {"registry.example.org:5000": "pertest"}
    write_docker_config(docker_dir, cfg)
    via_helper, _ = CredentialResolver().lookup("registry.example.org:5000")
    assert via_helper is not None and via_helper.identity_token == "tok-registry.example.org:5000"
    assert "pertest" in via_helper.source

    none, tried = r.lookup("ghcr.io", "org/img")
    assert none is None and any(str(podman) in t for t in tried) and any("config.json" in t for t in tried)
    assert "hubpass" not in repr(hub)


def test_scheme_and_host_rules() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:5000")
    assert not is_loopback("10.0.0.1:5000") and not is_loopback("quay.io")
    with RegistryClient(insecure_registries=["10.0.0.0/8", "myreg.lan:5000"]) as c:
        assert c.base_url("docker.io") == "https://registry-1.docker.io"
        assert c.base_url("quay.io") == "https://quay.io"
        assert c.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
        assert c.base_url("10.1.2.3:5000") == "http://10.1.2.3:5000"
        assert c.base_url("myreg.lan:5000") == "http://myreg.lan:5000"
        assert c.base_url("https://127.0.0.2:5000") == "https://127.0.0.2:5000"
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0

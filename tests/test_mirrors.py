"""Mirrors and pull-through caches: registries.conf v2, ``--mirror``, fall-back and verification.

Real registries on loopback: an origin ``docker-registry``, a second one as
its pull-through cache (``proxy.remoteurl``), and the fault proxy in front of
a mirror to corrupt bytes, fail requests and count them. The origin's own
access log says what reached it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.support.imagegen import BuiltImage, build_image, build_index
from tests.support.proxy import FaultProxy
from tests.support.push import push_image
from tests.support.registry import RunningRegistry, free_port, running_registry
from wfexs_like.config import ConfigError
from wfexs_like.container_factories import make_factory
from wfexs_like.errors import RegistryError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.manifest import Platform
from wfexs_like.model import ContainerTaggedName, ContainerType
from wfexs_like.registry import MirrorConfig, PullSource, RegistryClient
from wfexs_like.registry.mirrors import (
    load_registries_conf,
    merge_mirror_tables,
    parse_registries_conf,
    registries_conf_files,
)

AMD64 = Platform("linux", "amd64")


def conf(text: str, where: str = "registries.conf") -> MirrorConfig:
    return MirrorConfig(rules=tuple(parse_registries_conf(text, where)))


def hosts(sources: list[PullSource]) -> list[tuple[str, str, str]]:
    return [(s.registry, s.repository, s.reference) for s in sources]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_image(store: BlobStore, name: str, arch: str = "amd64") -> BuiltImage:
    """Two small layers unique to ``name`` (and a random token, so no other test shares a blob)."""
    token = uuid.uuid4().hex.encode()
    return build_image(
        store,
        [
            {"etc/": None, f"etc/{name}.txt": b"base of " + name.encode() + b" " + token + b"\n" * 300},
            {"data/": None, "data/payload": token * 2000},
        ],
        arch=arch,
        labels={"wfexs-like.test": name},
    )


def blobs_of(img: BuiltImage) -> list[str]:
    return [img.manifest.config.digest, *(d.digest for d in img.manifest.layers)]


def client(**kw) -> RegistryClient:
    kw.setdefault("backoff", 0.02)
    kw.setdefault("timeout", 10)
    kw.setdefault("registries_conf", False)
    kw.setdefault("platform", AMD64)
    return RegistryClient(**kw)


# -- registries.conf: parsing and matching ------------------------------------------------
def test_longest_prefix_wins_and_needs_a_separator() -> None:
    c = conf(
        """
        [[registry]]
        prefix = "example.com"
        location = "all.lab"
        [[registry]]
        prefix = "example.com/foo"
        location = "foo.lab/f"
        [[registry]]
        prefix = "example.com/foo/bar:1"
        location = "pinned.lab/b:one"
        """
    )
    assert hosts(c.sources("example.com", "foo/img", "2")) == [("foo.lab", "f/img", "2")]
    assert hosts(c.sources("example.com", "foobar/img", "2")) == [("all.lab", "foobar/img", "2")]
    assert hosts(c.sources("example.com", "foo/bar", "1")) == [("pinned.lab", "b", "one")]
    assert hosts(c.sources("example.com", "foo/bar", "2")) == [("foo.lab", "f/bar", "2")]
    digest = "sha256:" + "a" * 64
    assert hosts(c.sources("example.com", "x/y", digest)) == [("all.lab", "x/y", digest)]
    # a bare host prefix does not cover the same host on another port, nor a longer host name
    assert hosts(c.sources("example.com:5000", "x", "1")) == [("example.com:5000", "x", "1")]
    assert hosts(c.sources("example.community", "x", "1")) == [("example.community", "x", "1")]


def test_wildcard_prefix_applies_settings_without_rewriting() -> None:
    c = conf(
        """
        [[registry]]
        prefix = "*.example.com"
        insecure = true
        [[registry.mirror]]
        location = "cache.lab:5000"
        [[registry]]
        prefix = "deep.sub.example.com/ns"
        location = "deep.lab/ns"
        """
    )
    assert hosts(c.sources("a.example.com", "x/y", "1")) == [
        ("cache.lab:5000", "x/y", "1"),
        ("a.example.com", "x/y", "1"),
    ]
    # the whole host, port included, is what a mirror replaces
    assert hosts(c.sources("b.a.example.com:8443", "x", "1")) == [
        ("cache.lab:5000", "x", "1"),
        ("b.a.example.com:8443", "x", "1"),
    ]
    assert hosts(c.sources("deep.sub.example.com", "ns/z", "1")) == [("deep.lab", "ns/z", "1")]
    for not_covered in ("example.com", "a.example.com.evil", "aexample.com"):
        assert hosts(c.sources(not_covered, "x", "1")) == [(not_covered, "x", "1")]
    assert c.is_insecure("a.example.com") and not c.is_insecure("example.com")
    assert not c.is_insecure("cache.lab:5000")


def test_location_rewrite_and_mirrors_in_order() -> None:
    c = conf(
        """
        unqualified-search-registries = ["example.com"]
        [[registry]]
        prefix = "example.com/foo"
        location = "internal.lab:5000/bar"
        [[registry.mirror]]
        location = "mirror-0.lab/mirror-for-foo"
        [[registry.mirror]]
        location = "mirror-1.lab/mirrors/foo"
        insecure = true
        """
    )
    assert hosts(c.sources("example.com", "foo/image", "latest")) == [
        ("mirror-0.lab", "mirror-for-foo/image", "latest"),
        ("mirror-1.lab", "mirrors/foo/image", "latest"),
        ("internal.lab:5000", "bar/image", "latest"),
    ]
    assert [s.mirror for s in c.sources("example.com", "foo/image", "latest")] == [True, True, False]
    assert c.is_insecure("mirror-1.lab") and not c.is_insecure("mirror-0.lab")
    assert not c.is_insecure("internal.lab:5000")


def test_pull_from_mirror_modes() -> None:
    c = conf(
        """
        [[registry]]
        location = "quay.io"
        [[registry.mirror]]
        location = "digests.lab"
        pull-from-mirror = "digest-only"
        [[registry.mirror]]
        location = "tags.lab"
        pull-from-mirror = "tag-only"
        [[registry.mirror]]
        location = "both.lab"
        [[registry]]
        location = "ghcr.io"
        mirror-by-digest-only = true
        [[registry.mirror]]
        location = "ghcr-mirror.lab"
        """
    )
    digest = "sha256:" + "b" * 64
    by_tag = [s.registry for s in c.sources("quay.io", "org/tool", "1.0")]
    by_digest = [s.registry for s in c.sources("quay.io", "org/tool", digest)]
    assert by_tag == ["tags.lab", "both.lab", "quay.io"]
    assert by_digest == ["digests.lab", "both.lab", "quay.io"]
    assert [s.registry for s in c.sources("ghcr.io", "o/t", "1")] == ["ghcr.io"]
    assert [s.registry for s in c.sources("ghcr.io", "o/t", digest)] == ["ghcr-mirror.lab", "ghcr.io"]


def test_blocked_prefix_refuses_the_pull() -> None:
    c = conf('[[registry]]\nprefix = "evil.example/bad"\nblocked = true\n', where="/etc/site.conf")
    with pytest.raises(RegistryError, match=r"blocked by /etc/site\.conf.*evil\.example/bad"):
        c.sources("evil.example", "bad/thing", "1")
    assert hosts(c.sources("evil.example", "good/thing", "1")) == [("evil.example", "good/thing", "1")]


def test_explicit_mirrors_come_first_and_docker_hub_aliases_fold() -> None:
    rules = tuple(
        parse_registries_conf(
            '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
            '[[registry.mirror]]\nlocation = "site-cache.lab/hub"\n',
            "registries.conf",
        )
    )
    explicit = merge_mirror_tables(
        {"index.docker.io": ["127.0.0.1:5001"]}, {"index.docker.io": ["127.0.0.1:5002", "127.0.0.1:5001"]}
    )
    assert explicit == {"index.docker.io": ["127.0.0.1:5001", "127.0.0.1:5002"]}
    c = MirrorConfig.load(explicit, False)
    c = MirrorConfig(c.explicit, rules)
    assert hosts(c.sources("docker.io", "library/alpine", "3")) == [
        ("127.0.0.1:5001", "library/alpine", "3"),
        ("127.0.0.1:5002", "library/alpine", "3"),
        ("site-cache.lab", "hub/library/alpine", "3"),
        ("docker.io", "library/alpine", "3"),
    ]
    # a mirror listed twice, or naming the registry itself, is asked once, as the registry
    again = MirrorConfig.load({"quay.io": ["quay.io", "m.lab", "m.lab/"]}, False)
    assert [(s.registry, s.mirror) for s in again.sources("quay.io", "o/t", "1")] == [
        ("m.lab", True),
        ("quay.io", False),
    ]
    with pytest.raises(ConfigError, match="--mirror"):
        MirrorConfig.load({"docker.io": ["not a host"]}, False)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[[registry]\nprefix = 1", ["not valid TOML"]),
        ('[[registry]]\nlocation = "a.lab"\ninsecure = "yes"\n', ["'a.lab'", "insecure", "true or false"]),
        ("[[registry]]\nlocation = 5\n", ["location", "string"]),
        ("[[registry]]\nblocked = true\n", ["prefix or a location"]),
        (
            '[[registry]]\nlocation = "a.lab"\n[[registry.mirror]]\nlocation = "m.lab"\n'
            'pull-from-mirror = "sometimes"\n',
            ["'a.lab'", "pull-from-mirror", "digest-only"],
        ),
        ('[[registry]]\nlocation = "a.lab"\n[[registry.mirror]]\ninsecure = true\n', ["mirror", "location"]),
        ('[[registry]]\nprefix = "*.a.lab"\nlocation = "b.lab"\n', ["'*.a.lab'", "location must be empty"]),
        ('[[registry]]\nprefix = "a.*.lab"\n', ["'*' may only start"]),
        ('[[registry]]\nlocation = "http://a.lab"\n', ["http://a.lab", "scheme"]),
        ('[[registry]]\nlocation = "a.lab"\n[[registry]]\nprefix = "a.lab"\n', ["'a.lab'", "more than one"]),
        ('[registries.search]\nregistries = ["a.lab"]\n[[registry]]\nlocation = "b.lab"\n', ["version 1"]),
        ('registry = "a.lab"\n', ["array of tables"]),
        (
            '[[registry]]\nlocation = "a.lab"\nmirror-by-digest-only = true\n[[registry.mirror]]\n'
            'location = "m.lab"\npull-from-mirror = "all"\n',
            ["mirror-by-digest-only"],
        ),
    ],
)
def test_malformed_file_names_file_and_key(tmp_path: Path, text: str, names: list[str]) -> None:
    path = write(tmp_path / "site-registries.conf", text)
    with pytest.raises(ConfigError) as ei:
        load_registries_conf(path)
    msg = str(ei.value)
    assert str(path) in msg
    for n in names:
        assert n in msg, msg


def test_version_1_insecure_and_block_lists(tmp_path: Path) -> None:
    c = conf(
        '[registries.search]\nregistries = ["a.lab"]\n'
        '[registries.insecure]\nregistries = ["plain.lab:5000"]\n'
        '[registries.block]\nregistries = ["evil.lab"]\n'
    )
    assert c.is_insecure("plain.lab:5000")
    with pytest.raises(RegistryError, match="blocked"):
        c.sources("evil.lab", "x", "1")


def test_which_files_are_read(tmp_path: Path) -> None:
    system = write(
        tmp_path / "etc" / "registries.conf",
        '[[registry]]\nlocation = "sys.lab"\ninsecure = true\n[[registry]]\nlocation = "both.lab"\n',
    )
    write(
        tmp_path / "etc" / "registries.conf.d" / "10-site.conf",
        '[[registry]]\nlocation = "both.lab"\nblocked = true\n',
    )
    write(tmp_path / "etc" / "registries.conf.d" / "README", "not a drop-in")
    home = tmp_path / "home"
    user_dropin = write(
        home / ".config" / "containers" / "registries.conf.d" / "50-me.conf",
        '[[registry]]\nlocation = "me.lab"\ninsecure = true\n',
    )
    env: dict[str, str] = {}
    files = registries_conf_files(env=env, home=home, system=system)
    assert files == [system, tmp_path / "etc" / "registries.conf.d" / "10-site.conf", user_dropin]
    c = MirrorConfig.load(None, None, env=env, home=home, system=system)
    assert c.files == tuple(files)
    assert c.is_insecure("sys.lab") and c.is_insecure("me.lab")
    with pytest.raises(RegistryError, match=r"10-site\.conf"):  # the drop-in replaced the table
        c.sources("both.lab", "x", "1")

    # the user's own registries.conf replaces the system one and the system drop-ins
    user = write(home / ".config" / "containers" / "registries.conf", '[[registry]]\nlocation = "user.lab"\n')
    assert registries_conf_files(env=env, home=home, system=system) == [user, user_dropin]
    c = MirrorConfig.load(None, None, env=env, home=home, system=system)
    assert not c.is_insecure("sys.lab") and hosts(c.sources("both.lab", "x", "1")) == [("both.lab", "x", "1")]

    # $CONTAINERS_REGISTRIES_CONF, like --registries-conf, is the only file read
    only = write(tmp_path / "only.conf", '[[registry]]\nlocation = "only.lab"\ninsecure = true\n')
    env = {"CONTAINERS_REGISTRIES_CONF": str(only)}
    assert registries_conf_files(env=env, home=home, system=system) == [only]
    explicit = MirrorConfig.load(None, only, env={}, home=home, system=system)
    assert explicit.files == (only,) and explicit.is_insecure("only.lab")
    assert not MirrorConfig.load(None, False, env=env, home=home, system=system)
    with pytest.raises(ConfigError, match=r"--registries-conf .*missing\.conf"):
        MirrorConfig.load(None, tmp_path / "missing.conf")
    # nothing at all: no rules, no error
    assert not MirrorConfig.load(None, None, env={}, home=tmp_path / "nohome", system=tmp_path / "none.conf")


def test_client_reads_registries_conf_unless_told_not_to(
    tmp_path: Path, registry: RunningRegistry, src_store: BlobStore, blob_store: BlobStore, monkeypatch
) -> None:
    img = make_image(src_store, "blocked")
    push_image(registry.url, "mirrors/blocked", "v1", src_store, img.manifest)
    site = write(
        tmp_path / "site.conf", f'[[registry]]\nprefix = "{registry.host}/mirrors"\nblocked = true\n'
    )
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(site))
    with RegistryClient(timeout=10) as c, pytest.raises(RegistryError, match="blocked"):
        c.pull(registry.host, "mirrors/blocked", "v1", blob_store)
    assert list(blob_store.iter_digests()) == []
    with client() as c:
        assert c.pull(registry.host, "mirrors/blocked", "v1", blob_store).manifest_digest == img.digest


# -- falling back ---------------------------------------------------------------------------
def test_mirror_serving_a_wrong_blob_is_caught_and_upstream_used(
    registry: RunningRegistry,
    registry_proxy: FaultProxy,
    src_store: BlobStore,
    blob_store: BlobStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    img = make_image(src_store, "wrongblob")
    push_image(registry.url, "mirrors/wrongblob", "v1", src_store, img.manifest)
    bad = img.manifest.layers[1]
    rule = registry_proxy.corrupt(f"/blobs/{bad.digest}")  # same length, one byte flipped
    mark = registry.mark()
    with caplog.at_level(logging.WARNING), client(mirrors={registry.host: [registry_proxy.host]}) as c:
        res = c.pull(registry.host, "mirrors/wrongblob", "v1", blob_store)

    assert rule.fired == 1
    assert res.manifest_digest == img.digest and res.registry == registry.host
    for d in [*blobs_of(img), img.digest]:
        assert blob_store.has(d) and blob_store.verify(d, full=True), d
    assert list(blob_store.tmp_dir.iterdir()) == []  # the wrong bytes were never kept
    assert res.served_by[bad.digest] == registry.host
    for d in [img.manifest.config.digest, img.manifest.layers[0].digest]:
        assert res.served_by[d] == registry_proxy.host
    assert res.served_by["manifest"] == registry_proxy.host
    # the mirror was asked once for the bad blob; the origin was then asked directly
    assert len(registry_proxy.hits(f"/blobs/{bad.digest}", "GET")) == 1
    assert len(registry.blob_gets(mark, bad.digest)) == 2  # once through the mirror, once directly
    assert any("mirror " + registry_proxy.host in r.getMessage() for r in caplog.records)


def test_mirror_serving_a_wrong_manifest_by_digest_is_caught(
    registry: RunningRegistry, registry_proxy: FaultProxy, src_store: BlobStore, blob_store: BlobStore
) -> None:
    amd = make_image(src_store, "wrongmanifest", "amd64")
    arm = make_image(src_store, "wrongmanifest", "arm64")
    idx = build_index(src_store, [amd, arm])
    push_image(registry.url, "mirrors/wrongmanifest", "v1", src_store, idx)
    registry_proxy.corrupt(f"/manifests/{amd.digest}")
    with client(mirrors={registry.host: [registry_proxy.host]}) as c:
        res = c.pull(registry.host, "mirrors/wrongmanifest", idx.digest, blob_store)
    assert (res.index_digest, res.manifest_digest) == (idx.digest, amd.digest)
    assert res.served_by["index"] == registry_proxy.host
    assert res.served_by["manifest"] == registry.host
    assert blob_store.verify(amd.digest, full=True)
    assert len(registry_proxy.hits(f"/manifests/{amd.digest}", "GET")) == 1


def test_mirror_that_is_down_falls_back_to_upstream(
    registry: RunningRegistry, src_store: BlobStore, blob_store: BlobStore
) -> None:
    img = make_image(src_store, "down")
    push_image(registry.url, "mirrors/down", "v1", src_store, img.manifest)
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    with client(mirrors={registry.host: [closed]}, backoff=0.5, retries=5) as c:
        res = c.pull(registry.host, "mirrors/down", "v1", blob_store)
    assert res.manifest_digest == img.digest
    assert set(res.served_by.values()) == {registry.host}
    assert set(res.served_by) == {"manifest", *blobs_of(img)}


def test_failing_mirror_is_asked_little_and_then_skipped(
    registry: RunningRegistry, registry_proxy: FaultProxy, src_store: BlobStore, blob_store: BlobStore
) -> None:
    """A mirror answering 503 to everything: one retry of its ping, then no more requests at all."""
    img = make_image(src_store, "failing")
    push_image(registry.url, "mirrors/failing", "v1", src_store, img.manifest)
    registry_proxy.fail(503, "/v2/", times=1000)
    with client(mirrors={registry.host: [registry_proxy.host]}, retries=5) as c:
        res = c.pull(registry.host, "mirrors/failing", "v1", blob_store)
        again = c.pull(registry.host, "mirrors/failing", "v1", BlobStore(blob_store.root.parent / "two"))
    assert res.manifest_digest == again.manifest_digest == img.digest
    assert set(again.served_by.values()) == {registry.host}
    assert len(registry_proxy.hits("/v2/")) == 2  # the ping and its one retry, for both pulls


def test_mirror_without_the_image_falls_back(
    tmp_path: Path, registry: RunningRegistry, src_store: BlobStore, blob_store: BlobStore
) -> None:
    img = make_image(src_store, "absent")
    push_image(registry.url, "mirrors/absent", "v1", src_store, img.manifest)
    with running_registry(tmp_path / "empty") as empty, client(mirrors={registry.host: [empty.host]}) as c:
        res = c.pull(registry.host, "mirrors/absent", "v1", blob_store)
        assert [a.status for a in empty.requests_since(0) if "/manifests/" in a.path] == [404, 404]
    assert res.manifest_digest == img.digest and set(res.served_by.values()) == {registry.host}


def test_location_rewrite_pulls_from_the_relocated_registry(
    tmp_path: Path, registry: RunningRegistry, src_store: BlobStore, blob_store: BlobStore
) -> None:
    """``example.invalid/team`` is served by the loopback registry under ``mirrors/relocated``."""
    img = make_image(src_store, "relocated")
    push_image(registry.url, "mirrors/relocated/tool", "v1", src_store, img.manifest)
    site = write(
        tmp_path / "registries.conf",
        f'[[registry]]\nprefix = "example.invalid/team"\nlocation = "{registry.host}/mirrors/relocated"\n',
    )
    with client(registries_conf=site) as c:
        res = c.pull("example.invalid", "team/tool", "v1", blob_store)
    assert (res.registry, res.repository, res.manifest_digest) == ("example.invalid", "team/tool", img.digest)
    assert set(res.served_by.values()) == {registry.host}


def test_lazy_image_reads_blobs_through_the_mirror(
    registry: RunningRegistry, registry_proxy: FaultProxy, src_store: BlobStore
) -> None:
    """``RemoteImage`` (read blob by blob, not pulled) asks the mirror first, then the registry."""
    img = make_image(src_store, "lazy")
    push_image(registry.url, "mirrors/lazy", "v1", src_store, img.manifest)
    layer = img.manifest.layers[0]
    registry_proxy.fail(503, f"/blobs/{layer.digest}", times=1000)
    with client(mirrors={registry.host: [registry_proxy.host]}) as c:
        remote = c.image(registry.host, "mirrors/lazy", "v1")
        assert remote.digest() == img.digest
        assert json.loads(remote.raw_config_file()) == img.config
        with remote.open_blob(layer) as fh:
            assert fh.read() == src_store.path(layer.digest).read_bytes()
    assert registry_proxy.hits(f"/blobs/{img.manifest.config.digest}", "GET")  # the mirror sent the config
    assert len(registry_proxy.hits(f"/blobs/{layer.digest}", "GET")) == 2  # refused twice, then upstream


# -- pull-through cache -------------------------------------------------------------------
def test_three_caches_pull_through_one_proxy_origin_sees_each_blob_once(
    tmp_path: Path, src_store: BlobStore
) -> None:
    """Only the first node's pull reaches the origin for blobs; the next two are served by the cache.

    distribution 2.8's proxy fills a cold blob with two origin GETs at once
    (one stores it, one streams it to the first client), so "once" is per
    blob and per cache fill: every blob is fetched in the first pull only,
    the same number of times, and never again.
    """
    with running_registry(tmp_path / "origin") as origin:
        img = make_image(src_store, "pullthrough")
        push_image(origin.url, "lab/tool", "1.0", src_store, img.manifest)
        with running_registry(tmp_path / "cache", proxy_remote=origin.url) as cache:
            results, origin_blobs, origin_manifest_gets = [], [], []
            for n in range(3):
                store = BlobStore(tmp_path / f"node{n}" / "store")
                mark = origin.mark()
                with client(mirrors={origin.host: [cache.host]}) as c:
                    results.append(c.pull(origin.host, "lab/tool", "1.0", store))
                seen = origin.requests_since(mark)
                origin_blobs.append(Counter(a.path.rsplit("/", 1)[1] for a in origin.blob_gets(mark)))
                origin_manifest_gets.append(
                    [a for a in seen if a.method == "GET" and "/manifests/" in a.path]
                )
                for d in [*blobs_of(img), img.digest]:
                    assert store.verify(d, full=True), d
            assert len(cache.blob_gets(0)) == 3 * len(blobs_of(img))  # every node got every blob from it
    first, *later = origin_blobs
    assert set(first) == set(blobs_of(img)) and len(set(first.values())) == 1
    assert later == [Counter(), Counter()]
    assert [len(g) for g in origin_manifest_gets[1:]] == [0, 0]
    assert {r.manifest_digest for r in results} == {img.digest}
    for r in results:
        assert r.registry == origin.host
        assert {r.served_by[d] for d in blobs_of(img)} == {cache.host}


# -- records keep the upstream name ---------------------------------------------------------
def test_factory_records_name_the_upstream(
    tmp_path: Path, registry: RunningRegistry, registry_proxy: FaultProxy, src_store: BlobStore
) -> None:
    img = make_image(src_store, "records")
    push_image(registry.url, "mirrors/records", "v1", src_store, img.manifest)
    tag = f"{registry.host}/mirrors/records:v1"
    with client(mirrors={registry.host: [registry_proxy.host]}) as c:
        f = make_factory(
            "podman",
            containersCacheDir=tmp_path / "cache",
            stagedContainersDir=tmp_path / "wf",
            registry_client=c,
        )
        [got] = f.materializeContainers([ContainerTaggedName(tag, ContainerType.Podman)])
    assert registry_proxy.hits(f"/blobs/{img.manifest.layers[1].digest}", "GET")  # the mirror sent it
    assert got.origTaggedName == got.taggedName == tag
    assert got.fingerprint == f"{registry.host}/mirrors/records@{img.digest}"
    assert got.metadataLocalPath is not None
    meta = json.loads(got.metadataLocalPath.read_text())
    assert meta["manifest_digest"] == img.digest
    assert meta["registry"] == registry.host and meta["repository"] == "mirrors/records"
    assert registry_proxy.host not in json.dumps({k: v for k, v in meta.items() if k != "extra"})
    assert meta["extra"]["fetched_from"][img.manifest.layers[1].digest] == registry_proxy.host
    assert registry_proxy.host not in str(got.localPath)

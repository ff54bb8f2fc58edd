"""A registry, a mirror and an S3 tier that misbehave: every fault is retried to success or ends in one line.

Issue 13 ("Faults"). A loopback fault-injection proxy (``tests/support/proxy.py``)
stands in front of a real ``docker-registry``, of a mirror, and of a real
SeaweedFS S3 gateway, and breaks requests the way real servers, CDNs and
corporate proxies do: connections reset, bodies cut short, bodies sent
slowly, 429 with ``Retry-After``, 500, wrong bytes of the right length, a
manifest that does not match its digest. The installed command runs
against it and, for each fault:

- a transient fault is retried (a broken body resumed with ``Range``) and
  the image arrives with exactly the registry's digests;
- a fault that does not go away ends in one line naming the tag and the
  reason, exit status 1, no traceback;
- nothing wrong is ever published: every blob in the store hashes to its
  name, ``cache verify --full`` is clean, no cache entry names another
  digest, and every staged snapshot is complete.

Each fault gets an image of its own (in its own repository), so one run of
``materialize`` tries many faults at once: the proxy's rules match one
repository (or, for S3, one blob) each. Behind a mirror every fault must
end in success, since the registry itself is the next source; each fault's
mirror is a proxy of its own, so one failing mirror is not skipped for the
others. The S3 tier's proxy forwards the ``Host`` header unchanged: SigV4
signs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.reliability.test_concurrency import (
    layout_problems,
    no_ambient_config,  # noqa: F401 - autouse fixture
    store_problems,
)
from tests.support.imagegen import BuiltImage, build_image
from tests.support.proxy import FaultProxy, Rule
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from tests.support.seaweed import RunningS3
from wfexs_like.images.blobstore import BlobStore

WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"
KiB = 1 << 10
#: Bytes per second of a slow body: the faulted layer (~300 kB) takes about two seconds.
SLOW = 150_000
#: Retries a run may make: enough for every transient fault below (each fires at most twice).
RETRIES = "2"


@dataclass(frozen=True)
class Target:
    """The image one fault is tried on, pushed as ``<repo>:1``."""

    repo: str
    image: BuiltImage

    def expects(self, reason: str) -> str:
        return reason.format(layer=re.escape(self.layer), manifest=re.escape(self.image.digest))

    @property
    def layer(self) -> str:
        """The biggest layer: the blob a blob fault is aimed at where it must hit one blob only."""
        return max(self.image.manifest.layers, key=lambda d: d.size).digest

    def match(self, on: str) -> str:
        """The paths a fault on ``on`` (blobs: the biggest layer; or manifests) of this image hits."""
        return f"/{self.repo}/blobs/{self.layer}" if on == "blobs" else f"/{self.repo}/manifests/"


Arm = Callable[[FaultProxy, str], list[Rule]]


@dataclass(frozen=True)
class Fault:
    """``arm(proxy, match)`` adds the fault's rules for paths containing ``match``; ``retried``: the run
    must succeed; else its one-line reason must match ``reason`` (``{layer}`` and ``{manifest}``: the
    faulted image's digests). ``pinned``: materialize by digest. ``alone``: the fault makes a process
    leave the whole source alone for a while (an S3 endpoint that cannot be reached), so it gets a
    process of its own rather than taking the other faults' images with it."""

    name: str
    on: str  # "blobs" | "manifests"
    arm: Arm
    retried: bool
    reason: str = ""
    pinned: bool = False
    alone: bool = False


# fmt: off
REGISTRY_FAULTS: tuple[Fault, ...] = (
    # transient: a retry (or a resumed Range request) gets the right bytes
    Fault("reset-blob", "blobs", lambda p, m: [p.reset(m, times=2)], True),
    Fault("reset-manifest", "manifests", lambda p, m: [p.reset(m, times=1)], True),
    Fault("truncated-blob", "blobs", lambda p, m: [p.truncate(m, times=2)], True),
    Fault("slow-blob", "blobs", lambda p, m: [p.throttle(SLOW, m)], True),
    Fault("429-retry-after-blob", "blobs", lambda p, m: [p.fail(429, m, 2, retry_after="1")], True),
    Fault("429-retry-after-manifest", "manifests", lambda p, m: [p.fail(429, m, 1, retry_after="1")], True),
    Fault("500-blob", "blobs", lambda p, m: [p.fail(500, m, 2)], True),
    Fault("500-manifest", "manifests", lambda p, m: [p.fail(500, m, 2)], True),
    Fault("wrong-bytes-once", "blobs", lambda p, m: [p.corrupt(m, times=1)], True),
    Fault("wrong-manifest-once", "manifests", lambda p, m: [p.corrupt(m, times=1)], True),
    # persistent: one line that says what is wrong, and nothing published
    Fault("reset-always", "blobs", lambda p, m: [p.reset(m, times=None)], False,
          r"could not reach .* blob {layer} .* after \d+ attempts: the connection was reset"),
    Fault("truncated-always", "blobs", lambda p, m: [p.truncate(m, times=None)], False,
          r"blob {layer} .* kept breaking off .* after \d+ attempts"),
    Fault("500-always", "blobs", lambda p, m: [p.fail(500, m, 10_000)], False,
          r"blob {layer} .*HTTP 500 .*still failing after every retry"),
    Fault("429-retry-after-hours", "manifests", lambda p, m: [p.fail(429, m, 10_000, retry_after="86400")],
          False, r"HTTP 429 .* 86400 s \(Retry-After\)"),
    Fault("wrong-bytes-always", "blobs", lambda p, m: [p.corrupt(m)], False,
          r"does not match its digest: expected {layer}"),
    Fault("manifest-digest-header-lies", "manifests", lambda p, m: [p.lie_digest(m)], False,
          r"Docker-Content-Digest .* says sha256:0{{63}}1 but the manifest it sent hashes to {manifest}"),
    Fault("wrong-manifest-always", "manifests", lambda p, m: [p.corrupt(m)], False,
          r"Docker-Content-Digest .* says {manifest} but the manifest it sent hashes to sha256:"),
    Fault("pinned-manifest-not-its-digest", "manifests", lambda p, m: [p.corrupt(m)], False,
          r"@{manifest} whose sha256 is sha256:[0-9a-f]{{64}}, not the digest asked for", pinned=True),
)
# fmt: on


# fmt: off
#: Offline, a blob the bucket cannot serve right: the line names it, the tier, and what to do.
S3_OFFLINE = r"blob {layer} .* not in the cache .* nor usable in a tier .*; materialize it once with network"
#: Faults of the S3 tier's proxy, each aimed at one blob of its own image.
S3_FAULTS: tuple[Fault, ...] = (
    Fault("reset", "blobs", lambda p, m: [p.reset(m, times=1, method="GET")], True),
    Fault("truncated", "blobs", lambda p, m: [p.truncate(m, times=2)], True),
    Fault("slow", "blobs", lambda p, m: [p.throttle(SLOW, m)], True),
    Fault("503-slow-down", "blobs", lambda p, m: [p.fail(503, m, 2, retry_after="1")], True),
    Fault("500", "blobs", lambda p, m: [p.fail(500, m, 2)], True),
    Fault("wrong-bytes-always", "blobs", lambda p, m: [p.corrupt(m)], False, S3_OFFLINE),
    Fault("500-always", "blobs", lambda p, m: [p.fail(500, m, 10_000)], False, S3_OFFLINE),
    Fault("reset-always", "blobs", lambda p, m: [p.reset(m, times=None, method="GET")], False, S3_OFFLINE,
          alone=True),
)
# fmt: on


# -- images: one per fault, none sharing a blob -----------------------------------------------------------


@pytest.fixture(scope="module")
def targets(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Target]:
    """One small image per fault name (random bytes: no blob shared, so a rule hits one image only)."""
    src = BlobStore(tmp_path_factory.mktemp("faults-src"))
    prefix = f"wl-faults-{uuid.uuid4().hex[:8]}"
    rng = random.Random(5)
    out = {}
    for name in [f.name for f in REGISTRY_FAULTS] + [f"s3-{f.name}" for f in S3_FAULTS]:
        # a cut body is resumed from the last whole chunk the client kept (256 KiB): 1 MiB shows it
        size = 1024 * KiB if "truncated" in name else 300 * KiB
        layers = [{"etc/name": name.encode()}, {"data/blob.bin": rng.randbytes(size)}]
        img = build_image(src, layers, labels={"fault": name})
        repo = f"{prefix}/{name}"
        push_image(registry.url, repo, "1", src, img.manifest)
        out[name] = Target(repo, img)
    return out


# -- running and checking ----------------------------------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(WFEXS_LIKE), *args], capture_output=True, text=True, timeout=600, check=False, env=env
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


def materialize(
    cache: Path, stage: Path, records: Path, tags: list[str], *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run(
        "materialize", "-q", "--retry-times", RETRIES, "--cache-dir", str(cache), "--stage-dir", str(stage),
        "-o", str(records), *extra, *tags, env=env,
    )  # fmt: skip


def reasons(out: subprocess.CompletedProcess[str], tags: list[str]) -> dict[str, str]:
    """Each failed tag's one-line reason; the output must be exactly the header and one line per tag."""
    assert out.returncode == 1, (out.returncode, out.stderr)
    lines = out.stderr.splitlines()
    assert lines[0] == f"wfexs-like: {len(tags)} container(s) failed:", out.stderr
    assert len(lines) == 1 + len(tags), out.stderr
    found = {}
    for line in lines[1:]:
        tag = next((t for t in tags if line.startswith(f"  {t}: ")), None)
        assert tag is not None, f"not a one-line reason for one of the tags: {line!r}"
        found[tag] = line.removeprefix(f"  {tag}: ")
    assert set(found) == set(tags), out.stderr
    return found


def tag_of(host: str, target: Target, pinned: bool = False) -> str:
    return f"{host}/{target.repo}@{target.image.digest}" if pinned else f"{host}/{target.repo}:1"


def check_records(stage: Path, records: Path, want: dict[str, Target]) -> dict[str, dict]:
    """Every record names the pushed digests and its staged snapshot is complete; returns the sidecars."""
    rows = {r["origTaggedName"]: r for r in yaml.safe_load(records.read_text())["containers"]}
    assert set(rows) == set(want), f"{records} names {sorted(rows)}, not {sorted(want)}"
    sidecars = {}
    for tag, row in rows.items():
        img = want[tag].image
        assert row["signature"] == img.image_id, (tag, row)
        assert row["fingerprint"].endswith("@" + img.digest), (tag, row)
        problems = layout_problems(stage / row["localPath"], row["image_signature"])
        assert not problems, "\n".join(problems)
        sidecars[tag] = json.loads((stage / row["metadataLocalPath"]).read_bytes())
    return sidecars


def nothing_wrong_published(cache: Path, want: dict[str, Target], env: dict[str, str] | None = None) -> None:
    """The store holds only right bytes, verifies clean, and no entry names a digest not pushed."""
    assert not store_problems(cache), store_problems(cache)
    out = run("cache", "verify", "--full", "--cache-dir", str(cache), env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    listing = run("cache", "ls", "--json", "--cache-dir", str(cache), env=env)
    assert listing.returncode == 0, listing.stderr
    digests = {t.repo: t.image.digest for t in want.values()}
    for entry in json.loads(listing.stdout):
        repo = next(
            (r for r in digests if f"/{r}:" in entry["reference"] or f"/{r}@" in entry["reference"]), None
        )
        if repo is not None and entry["kind"] == "image":
            assert entry["digest"] == digests[repo], (
                f"the cache maps {entry['reference']} to {entry['digest']}"
            )


def fired(rules: list[Rule], name: str) -> None:
    assert all(r.fired for r in rules), f"{name}: the fault never fired; this test proves nothing"


# -- the registry itself misbehaves ------------------------------------------------------------------------


def test_registry_faults_are_retried_or_refused_in_one_line(
    registry: RunningRegistry, targets: dict[str, Target], tmp_path: Path, tries
) -> None:
    for n in range(tries(1, 5)):
        root = tmp_path / f"round-{n}"
        proxy = FaultProxy(registry.url)
        try:
            armed = {f.name: f.arm(proxy, targets[f.name].match(f.on)) for f in REGISTRY_FAULTS}
            ok = {tag_of(proxy.host, targets[f.name], f.pinned): f for f in REGISTRY_FAULTS if f.retried}
            bad = {tag_of(proxy.host, targets[f.name], f.pinned): f for f in REGISTRY_FAULTS if not f.retried}

            out = materialize(root / "cache", root / "stage", root / "ok.yaml", list(ok))
            assert out.returncode == 0, out.stderr
            check_records(root / "stage", root / "ok.yaml", {t: targets[f.name] for t, f in ok.items()})
            resumed = [s for s in proxy.hits(targets["truncated-blob"].layer, "GET") if "Range" in s.headers]
            assert resumed, "a truncated body was fetched again from the start instead of resumed with Range"

            out = materialize(root / "cache", root / "stage", root / "bad.yaml", list(bad))
            for tag, reason in reasons(out, list(bad)).items():
                f = bad[tag]
                print(f"{f.name}: {reason}")
                assert re.search(targets[f.name].expects(f.reason), reason), f"{f.name}: unclear {reason!r}"
                assert len(reason) < 600, f"{bad[tag].name}: a reason of {len(reason)} characters"
            assert not (root / "bad.yaml").exists(), "a failed materialize wrote its records file"
        finally:
            proxy.stop()
        for f in REGISTRY_FAULTS:
            fired(armed[f.name], f.name)
        nothing_wrong_published(root / "cache", targets)


# -- a mirror misbehaves: the registry behind it is the next source ---------------------------------------


def test_mirror_faults_fall_back_to_the_registry_and_publish_nothing_wrong(
    registry: RunningRegistry, targets: dict[str, Target], tmp_path: Path, tries
) -> None:
    """Every fault of the registry list, at a mirror (one proxy per fault): all end in success, with the
    registry's digests; a mirror that kept sending wrong bytes is never the source of a stored blob."""
    for n in range(tries(1, 5)):
        root = tmp_path / f"round-{n}"
        mirrors = {f.name: FaultProxy(registry.url) for f in REGISTRY_FAULTS}
        try:
            armed = {f.name: f.arm(mirrors[f.name], targets[f.name].match(f.on)) for f in REGISTRY_FAULTS}
            flags = []
            for f in REGISTRY_FAULTS:
                repo = targets[f.name].repo
                flags += ["--mirror", f"{registry.host}/{repo}={mirrors[f.name].host}/{repo}"]
            want = {
                tag_of(registry.host, targets[f.name], f.pinned): targets[f.name] for f in REGISTRY_FAULTS
            }
            out = materialize(root / "cache", root / "stage", root / "records.yaml", list(want), *flags)
            assert out.returncode == 0, out.stderr
            sidecars = check_records(root / "stage", root / "records.yaml", want)
        finally:
            for m in mirrors.values():
                m.stop()
        for f in REGISTRY_FAULTS:
            fired(armed[f.name], f"mirror {f.name}")
            if f.name == "wrong-bytes-always":
                sent = sidecars[tag_of(registry.host, targets[f.name])]["extra"]["fetched_from"]
                assert sent[targets[f.name].layer] == registry.host, sent
        nothing_wrong_published(root / "cache", targets)


# -- the S3 tier misbehaves ---------------------------------------------------------------------------------


@pytest.fixture
def s3_env(s3_server: RunningS3, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, **s3_server.env(), "XDG_CONFIG_HOME": str(tmp_path / "no-config")}


def test_s3_tier_faults_are_retried_or_left_for_the_registry(
    registry: RunningRegistry,
    s3_server: RunningS3,
    s3_env: dict[str, str],
    targets: dict[str, Target],
    tmp_path: Path,
    tries,
) -> None:
    """Node A publishes every image to the bucket; node B, with an empty cache, reads them through a
    faulty proxy in front of the S3 gateway. Transient faults: the blob still comes from S3 (retried
    or resumed). Lasting ones: online, the registry sends it instead; offline, one line per tag.
    A bucket that keeps resetting is left alone for a minute by the process that met it, so that
    fault gets processes of its own."""
    chosen = {f.name: targets[f"s3-{f.name}"] for f in S3_FAULTS}
    tags = {f.name: tag_of(registry.host, chosen[f.name]) for f in S3_FAULTS}
    for n in range(tries(1, 5)):
        root = tmp_path / f"round-{n}"
        prefix = s3_server.new_prefix()
        out = materialize(
            root / "a", root / "a-stage", root / "a.yaml", list(tags.values()),
            "--remote-cache", s3_server.url(prefix), env=s3_env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        published = set(s3_server.keys(prefix))
        for t in chosen.values():
            assert f"{prefix}/blobs/sha256/{t.layer.split(':')[1]}" in published, sorted(published)

        proxy = FaultProxy(s3_server.endpoint, keep_host=True)
        remote = f"s3://{s3_server.bucket}/{prefix}?endpoint={proxy.url}"
        groups = [[f for f in S3_FAULTS if not f.alone]] + [[f] for f in S3_FAULTS if f.alone]
        sidecars: dict[str, dict] = {}
        try:
            armed = {f.name: f.arm(proxy, chosen[f.name].layer.split(":")[1]) for f in S3_FAULTS}
            mark = registry.mark()
            for g, group in enumerate(groups):
                node = root / f"b{g}"
                lasting = [tags[f.name] for f in group if not f.retried]
                out = materialize(
                    node / "offline", node / "offline-stage", node / "offline.yaml", lasting,
                    "--offline", "--remote-cache", remote, env=s3_env,
                )  # fmt: skip
                said = reasons(out, lasting)
                for f in group:
                    if not f.retried:
                        reason = said[tags[f.name]]
                        print(f"s3 {f.name}: {reason}")
                        assert re.search(chosen[f.name].expects(f.reason), reason), f"s3 {f.name}: {reason!r}"
                nothing_wrong_published(node / "offline", targets, env=s3_env)

                online = [tags[f.name] for f in group]
                out = materialize(
                    node / "cache", node / "stage", node / "records.yaml", online,
                    "--remote-cache", remote, env=s3_env,
                )  # fmt: skip
                assert out.returncode == 0, out.stderr
                want = {tags[f.name]: chosen[f.name] for f in group}
                sidecars |= check_records(node / "stage", node / "records.yaml", want)
                nothing_wrong_published(node / "cache", targets, env=s3_env)
        finally:
            proxy.stop()
        for f in S3_FAULTS:
            fired(armed[f.name], f"s3 {f.name}")
            layer = chosen[f.name].layer
            sent = sidecars[tags[f.name]]["extra"]["fetched_from"].get(layer)
            from_registry = registry.blob_gets(mark, layer)
            if f.retried:  # the bucket served it in the end: the registry never saw a request for it
                assert sent is None and not from_registry, f"s3 {f.name}: the registry sent the layer"
            else:
                assert sent == registry.host and from_registry, f"s3 {f.name}: the layer came from {sent}"
        for key in s3_server.keys(prefix):  # nor in the bucket: every blob object holds its digest's bytes
            if "/blobs/sha256/" in key:
                body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
                assert hashlib.sha256(body).hexdigest() == key[-64:], f"{key} holds other bytes"

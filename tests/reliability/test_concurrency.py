"""Many ``wfexs-like`` processes on one shared cache at once: every blob fetched once, nothing pulled away.

Issue 13 ("Concurrency"). A cache is shared by every job of a site, so
these run the installed command as real processes (8 at a time) against a
registry of the test's own (its access log then counts only these
requests) and check what a user relies on:

- eight materializes of the same three tags from an empty cache all
  succeed and download each blob once: a per-digest lock makes the others
  wait and reuse, never fetch a second copy;
- materializes racing ``cache prune`` (everything, by size and by age) and
  ``cache gc --min-age 0s`` all succeed, and every snapshot a materialize
  reported staged is intact afterwards, whether each has its own stage dir
  or all share one: a prune or gc never takes what a live process holds;
- ``cache verify --full`` is clean at the end.

The staged snapshots are checked here by hand (hashlib, the OCI layout's
own chain of digests), not with the library's verifier: a bug there must
not make both agree on something wrong.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.proxy import FaultProxy
from tests.support.push import push_image
from tests.support.registry import RunningRegistry, start_registry
from wfexs_like.images.blobstore import BlobStore

WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"
PROCESSES = 8
MiB = 1 << 20


@pytest.fixture(autouse=True)
def no_ambient_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No site settings (mirrors, a remote cache) from the machine running the tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    for name in ("WFEXS_LIKE_CONFIG", "WFEXS_LIKE_REMOTE_CACHE", "WFEXS_LIKE_LIBRARY_DIRS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CONTAINERS_REGISTRIES_CONF", raising=False)


# -- a registry of the test's own, three images sharing a base layer --------------------------------------


@dataclass
class Images:
    registry: RunningRegistry
    repos: list[str]
    built: list[BuiltImage]

    def tags(self, host: str | None = None) -> list[str]:
        return [f"{host or self.registry.host}/{repo}:1" for repo in self.repos]

    def blobs(self) -> set[str]:
        """Every blob a registry serves for the three images (configs and layers; the base once)."""
        return {d.digest for b in self.built for d in (b.manifest.config, *b.manifest.layers)}

    def by_tag(self, host: str | None = None) -> dict[str, BuiltImage]:
        return dict(zip(self.tags(host), self.built, strict=True))


def push_images(registry: RunningRegistry, src: BlobStore, seed: int) -> Images:
    """Three runnable images: the busybox base (shared) and two random layers of their own each."""
    rng = random.Random(seed)
    prefix = f"wl-conc-{uuid.uuid4().hex[:8]}"
    repos, built = [], []
    for i in range(3):
        layers = [busybox_base_layer()] + [{f"data/{i}-{j}.bin": rng.randbytes(MiB)} for j in range(2)]
        img = build_image(src, layers, labels={"image": str(i)})
        repo = f"{prefix}/img{i}"
        push_image(registry.url, repo, "1", src, img.manifest)
        repos.append(repo)
        built.append(img)
    return Images(registry, repos, built)


@pytest.fixture
def images(tmp_path: Path) -> Iterator[Images]:
    """A private registry per test, so its access log holds only this test's requests."""
    reg = start_registry(tmp_path / "registry")
    try:
        yield push_images(reg, BlobStore(tmp_path / "src"), seed=7)
    finally:
        reg.stop()


# -- running the command ---------------------------------------------------------------------------------


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(WFEXS_LIKE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, f"{proc.args}:\n{err}"
    return proc.returncode, out, err


def run(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(WFEXS_LIKE), *args], capture_output=True, text=True, timeout=300, check=False)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def materialize_args(cache: Path, stage: Path, records: Path, tags: list[str]) -> list[str]:
    return ["materialize", "-q", "--cache-dir", str(cache), "--stage-dir", str(stage), "-o", str(records),
            *tags]  # fmt: skip


def verify_clean(cache: Path) -> None:
    out = run("cache", "verify", "--full", "--cache-dir", str(cache))
    assert out.returncode == 0, out.stdout + out.stderr


# -- what must hold ----------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def layout_problems(layout: Path, image_signature: str) -> list[str]:
    """Why ``layout`` is not the complete, intact OCI layout ``image_signature`` names (empty: it is).

    ``index.json`` hashes to the signature and pins the manifest, which
    pins the config and every layer: all must be present and hash right.
    """
    index = layout / "index.json"
    if not index.is_file():
        return [f"{layout}: no index.json"]
    if sha256_of(index) != image_signature:
        return [f"{index} hashes to {sha256_of(index)}, the record says {image_signature}"]
    problems = []

    def blob(digest: str) -> Path | None:
        path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
        if not path.is_file():
            problems.append(f"{path}: missing")
            return None
        if sha256_of(path) != digest:
            problems.append(f"{path}: hashes to {sha256_of(path)}")
            return None
        return path

    for m in json.loads(index.read_bytes())["manifests"]:
        manifest_path = blob(m["digest"])
        if manifest_path is None:
            continue
        manifest = json.loads(manifest_path.read_bytes())
        for d in (manifest["config"], *manifest["layers"]):
            blob(d["digest"])
    return problems


def staged_problems(stage: Path, records: Path, want: dict[str, BuiltImage]) -> list[str]:
    """Check every record of one materialize against what it staged and what the registry holds."""
    data = yaml.safe_load(records.read_text())
    rows = {r["origTaggedName"]: r for r in data["containers"]}
    assert set(rows) == set(want), f"{records} names {sorted(rows)}, not {sorted(want)}"
    problems = []
    for tag, row in rows.items():
        img = want[tag]
        if row["signature"] != img.image_id or not row["fingerprint"].endswith("@" + img.digest):
            problems.append(f"{tag}: recorded {row['signature']} / {row['fingerprint']}, pushed {img.digest}")
        problems += layout_problems(stage / row["localPath"], row["image_signature"])
        sidecar = json.loads((stage / row["metadataLocalPath"]).read_bytes())
        if sidecar.get("image_signature") != row["image_signature"]:
            problems.append(f"{tag}: its staged sidecar names {sidecar.get('image_signature')}")
    return problems


def store_problems(cache: Path) -> list[str]:
    """Blobs in the store whose bytes do not hash to their name (none may ever be published)."""
    blobs = cache / "blobs" / "sha256"
    return [
        f"{p}: hashes to {sha256_of(p)}"
        for p in (sorted(blobs.iterdir()) if blobs.is_dir() else [])
        if sha256_of(p) != "sha256:" + p.name
    ]


def downloads(registry: RunningRegistry, mark: int) -> Counter[str]:
    """How many times each blob was downloaded since ``mark``: every 200, and a blob's 206s once
    (the ranged requests that resume one broken download are parts of that download)."""
    full: Counter[str] = Counter()
    ranged: set[str] = set()
    for line in registry.blob_gets(mark):
        digest = line.path.rsplit("/", 1)[1].split("?", 1)[0]
        if line.status == 200:
            full[digest] += 1
        elif line.status == 206:
            ranged.add(digest)
    return full + Counter(ranged)


# -- the tests ---------------------------------------------------------------------------------------------


def test_eight_processes_download_each_blob_once_from_an_empty_cache(
    images: Images, tmp_path: Path, tries
) -> None:
    """All eight have resolved their tags before any blob is answered (a barrier in the proxy), so
    all of them race for the same blobs: the first takes each blob's lock, the others wait and reuse."""
    for n in range(tries(1, 4)):
        root = tmp_path / f"round-{n}"
        cache = root / "cache"
        proxy = FaultProxy(images.registry.url)
        try:
            gate = proxy.hold("/blobs/")
            tags = images.tags(proxy.host)
            mark = images.registry.mark()
            procs = [
                start(*materialize_args(cache, root / f"stage-{i}", root / f"records-{i}.yaml", tags))
                for i in range(PROCESSES)
            ]
            first = f"/{images.repos[0]}/manifests/1"
            deadline = time.monotonic() + 90
            while len(proxy.hits(first, "HEAD")) < PROCESSES and time.monotonic() < deadline:
                assert all(p.poll() is None for p in procs), "a materialize ended before any blob was sent"
                time.sleep(0.02)
            began = len(proxy.hits(first, "HEAD"))
            gate.set()
            results = [finish(p) for p in procs]
        finally:
            proxy.stop()
        assert began >= PROCESSES, f"only {began} of {PROCESSES} processes began before the first blob"
        for i, (rc, _out, err) in enumerate(results):
            assert rc == 0, f"materialize {i} exited {rc}: {err}"

        counted = downloads(images.registry, mark)
        assert set(counted) == images.blobs(), f"fetched {sorted(counted)}, want {sorted(images.blobs())}"
        twice = {d: c for d, c in counted.items() if c != 1}
        assert not twice, f"round {n}: blobs downloaded more than once: {twice}"
        want = images.by_tag(proxy.host)
        for i in range(PROCESSES):
            problems = staged_problems(root / f"stage-{i}", root / f"records-{i}.yaml", want)
            assert not problems, "\n".join(problems)
        assert not store_problems(cache)
        verify_clean(cache)


#: The cache-emptying commands that race the materializes; each slot re-runs its own until they end.
PRUNERS: tuple[tuple[str, ...], ...] = (
    ("cache", "prune", "--max-size", "1"),
    ("cache", "prune", "--older-than", "0s"),
    ("cache", "gc", "--min-age", "0s"),
)


def tally(cmd: tuple[str, ...], proc: subprocess.Popen[str], seen: Counter[str]) -> None:
    """Count what one prune or gc run did (from its JSON): removed entries or items, entries in use."""
    rc, out, err = finish(proc)
    assert rc == 0, f"{' '.join(cmd)} exited {rc}: {err}"
    seen["runs"] += 1
    if out.startswith("no cache yet"):  # before the first materialize made one (printed even with --json)
        return
    report = json.loads(out)
    if cmd[1] == "prune":
        seen["entries removed"] += len(report["removed"])
        seen["entries in use, kept"] += len(report["in_use"])
    else:
        seen["gc items removed"] += len(report["removed"])


@dataclass
class Pruner:
    """A slot that runs ``cmd`` again as soon as its last run ends."""

    cmd: tuple[str, ...]
    proc: subprocess.Popen[str]


@dataclass
class Materialize:
    name: str
    stage: Path
    records: Path
    proc: subprocess.Popen[str]


@pytest.mark.parametrize("shared_stage", [False, True], ids=["own-stage-dirs", "one-stage-dir"])
def test_prune_and_gc_never_take_what_a_live_materialize_staged(
    images: Images, tmp_path: Path, tries, shared_stage: bool
) -> None:
    """Eight processes at all times: five slots run materializes of the three tags (shuffled order)
    back to back, and three slots run ``cache prune --max-size 1``, ``cache prune --older-than 0s``
    and ``cache gc --min-age 0s`` over and over until the materializes are done.

    Every materialize must succeed and what it staged must be intact afterwards. Prune removes the
    cache's entries the moment nobody holds them, so a later materialize downloads them again. What
    keeps a blob a materialize has found in the store (or just downloaded) until its entry is
    published is its pin (``BlobStore.pin``): gc and prune leave a pinned blob alone."""
    cache = tmp_path / "cache"
    rng = random.Random(11)
    tags = images.tags()
    want = images.by_tag()
    seen: Counter[str] = Counter()
    mark = images.registry.mark()
    per_slot = tries(1, 6)
    done: list[Materialize] = []

    def materialize(slot: int, n: int) -> Materialize:
        stage = tmp_path / "stage" if shared_stage else tmp_path / f"stage-{slot}-{n}"
        records = tmp_path / f"records-{slot}-{n}.yaml"
        proc = start(*materialize_args(cache, stage, records, rng.sample(tags, len(tags))))
        return Materialize(f"slot {slot} run {n}", stage, records, proc)

    def prune(cmd: tuple[str, ...]) -> Pruner:
        return Pruner(cmd, start(*cmd, "--json", "--cache-dir", str(cache)))

    active = {i: materialize(i, 0) for i in range(PROCESSES - len(PRUNERS))}
    runs = dict.fromkeys(active, 1)
    pruners = [prune(cmd) for cmd in PRUNERS]
    while active:
        for i, m in list(active.items()):
            if m.proc.poll() is not None:
                done.append(m)
                if runs[i] < per_slot:
                    active[i] = materialize(i, runs[i])
                    runs[i] += 1
                else:
                    del active[i]
        for k, slot in enumerate(pruners):
            if slot.proc.poll() is not None:
                tally(slot.cmd, slot.proc, seen)
                pruners[k] = prune(slot.cmd)
        time.sleep(0.01)
    for slot in pruners:
        tally(slot.cmd, slot.proc, seen)

    failed = []
    for m in done:
        rc, _out, err = finish(m.proc)
        if rc != 0:
            failed.append(f"{m.name}: materialize exited {rc}: {err.strip()}")
        else:
            failed += [f"{m.name}: {p}" for p in staged_problems(m.stage, m.records, want)]
    again = sum(downloads(images.registry, mark).values()) - len(images.blobs())
    exits = Counter(m.proc.returncode for m in done)
    print(f"{len(done)} materializes (exit statuses {dict(exits)}); prune and gc: {dict(seen)}; "
          f"blobs downloaded again: {again}")  # fmt: skip
    assert not failed, "\n".join(failed)
    assert not store_problems(cache)
    verify_clean(cache)
    # The race had teeth: the prunes (started while materializes ran, by construction) met the
    # cache's entries, held by a live materialize (kept) or free again (removed). Which of the two,
    # and how often, is down to timing: printed above.
    assert seen["entries removed"] + seen["entries in use, kept"] > 0, dict(seen)

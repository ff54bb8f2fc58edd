"""The cache lifecycle as a library: ls/du/inspect, verify (and repair), rm, prune, gc, usage records.

Every cache here is filled by real materializes against the loopback
registry; damage is done the way it happens (a byte flipped in place, the
mtime put back), and concurrency comes from real processes holding real locks.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.cache import (
    ImageCache,
    claim_dir,
    collect_garbage,
    disk_usage,
    inspect_entries,
    prune,
    remove_references,
    scan_entries,
    verify_cache,
)
from wfexs_like.cache.snapshots import STAGE_LOCKS, entry_key
from wfexs_like.container_factories import DockerContainerFactory, SingularityContainerFactory
from wfexs_like.digests import sha256_file
from wfexs_like.errors import CacheError, ContainerNotFoundException
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.model import Container, ContainerTaggedName, ContainerType

REPO = Path(__file__).resolve().parent.parent
DAY = 86400.0


def _noise(seed: int, n: int) -> bytes:
    """Incompressible, deterministic bytes: layers whose size is what the test says it is."""
    return random.Random(seed).randbytes(n)


class Images:
    """Three images: ``x`` and ``y`` share a busybox base layer, ``z`` shares nothing."""

    def __init__(self, reg: RunningRegistry, store: BlobStore) -> None:
        self.reg = reg
        self.prefix = f"lc-{uuid.uuid4().hex[:8]}"
        base = busybox_base_layer()
        self.built: dict[str, BuiltImage] = {
            "x": build_image(store, [base, {"x/": None, "x/data": _noise(1, 300_000)}]),
            "y": build_image(store, [base, {"y/": None, "y/data": _noise(2, 200_000)}]),
            "z": build_image(store, [{"z/": None, "z/data": _noise(3, 100_000)}]),
        }
        for name, img in self.built.items():
            push_image(reg.url, f"{self.prefix}/{name}", "1", store, img.manifest)

    def tag(self, name: str) -> str:
        return f"{self.reg.host}/{self.prefix}/{name}:1"

    def digest(self, name: str) -> str:
        return self.built[name].digest

    def blobs(self, name: str) -> set[str]:
        m = self.built[name].manifest
        return {m.digest, m.config.digest, *(layer.digest for layer in m.layers)}

    @property
    def base(self) -> str:
        return self.built["x"].manifest.layers[0].digest


@pytest.fixture
def images(registry: RunningRegistry, src_store: BlobStore) -> Images:
    return Images(registry, src_store)


def materialize(
    cache_dir: Path, stage: Path, tags: list[str], *, offline: bool = False, sif: bool = False
) -> list[Container]:
    """Materialize as a workflow engine would, then let go of the entries (as the process exiting would)."""
    cls = SingularityContainerFactory if sif else DockerContainerFactory
    ctype = ContainerType.Singularity if sif else ContainerType.Docker
    f = cls(containersCacheDir=cache_dir, stagedContainersDir=stage)
    try:
        return f.materializeContainers([ContainerTaggedName(t, ctype) for t in tags], offline=offline)
    finally:
        f.cache.release_holds()
        shutil.rmtree(f.tempDir, ignore_errors=True)


def listing(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every path under ``root`` with its type, size, mtime and inode: what 'changes nothing' compares."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = os.lstat(p)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Change one byte in place and put the mtime (and mode) back, as ``touch -r`` would."""
    st = path.stat()
    offset = st.st_size // 2 if offset is None else offset
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x01]))
    os.chmod(path, st.st_mode & 0o7777)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def backdate(cache: ImageCache, reference: str, days: float) -> None:
    """Make every record and usage mark of ``reference`` look ``days`` old (last used then)."""
    ts = time.time() - days * DAY
    for e in scan_entries(cache):
        if e.reference == reference:
            os.utime(e.record, (ts, ts))
            usage = cache.usage.record_path(e.kind, e.key)
            if usage.exists():
                os.utime(usage, (ts, ts))


HOLDER = textwrap.dedent(
    """
    import sys, time
    from wfexs_like.cache import ImageCache
    cache = ImageCache(sys.argv[1])
    cache.hold(sys.argv[2], None)
    print("held", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def holder() -> Iterator[Callable[[Path, str], subprocess.Popen]]:
    """Start a process holding a reference as in use (as a running materialize does) until the test ends."""
    procs: list[subprocess.Popen] = []

    def start(cache_dir: Path, reference: str) -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(cache_dir), reference],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.stdin.close()  # type: ignore[union-attr]
            p.wait(timeout=10)


# -- ls / du / inspect ------------------------------------------------------------------------------------
def test_entries_sizes_and_usage_of_real_materializes(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    docker = materialize(cache_dir, tmp_path / "wf1", [images.tag("x"), images.tag("y")])
    materialize(cache_dir, tmp_path / "wf2", [images.tag("x")], sif=True)
    cache = ImageCache(cache_dir)
    entries = scan_entries(cache)
    got = {(e.reference, e.kind) for e in entries}
    assert got == {
        (images.tag("x"), "image"),
        (images.tag("x"), "oci-layout"),
        (images.tag("x"), "sif"),
        (images.tag("y"), "image"),
        (images.tag("y"), "oci-layout"),
    }
    store = cache.store
    for e in entries:
        assert e.problems == () and e.missing == ()
        assert e.image_platform == "linux/amd64" and e.platform is None
        name = e.reference.rsplit("/", 1)[1].split(":")[0]
        assert e.digest == images.digest(name)
        assert e.last_used is not None and time.time() - e.last_used < 600
        if e.kind in ("image", "oci-layout"):
            assert set(e.blobs) == images.blobs(name)
            assert e.size == sum(store.size(d) for d in images.blobs(name))
        else:
            assert e.blobs == (e.fingerprint,) and e.size == store.size(e.fingerprint)
    layouts = {e.reference: e for e in entries if e.kind == "oci-layout"}
    assert {c.image_signature for c in docker} == {e.fingerprint for e in layouts.values()}

    du = disk_usage(cache, entries)
    all_blobs = list(store.iter_digests())
    assert du.blobs.files == len(all_blobs) and du.blobs.bytes == sum(store.size(d) for d in all_blobs)
    assert du.shared.files == 1 and du.shared.bytes == store.size(images.base)  # x and y share the base
    assert du.unreferenced.files == 0
    assert du.unique.files == len(all_blobs) - 1
    assert du.entries == {"image": 2, "oci-layout": 2, "sif": 1, "docker-archive": 0}
    xy = images.blobs("x") | images.blobs("y")
    assert du.per_kind["image"].bytes == sum(store.size(d) for d in xy)
    assert du.total >= du.blobs.bytes + du.snapshots.bytes

    info = inspect_entries(cache, images.tag("x"))
    assert info.references == (images.tag("x"),) and not info.in_use
    assert [d.entry.kind for d in info.entries] == ["image", "oci-layout", "sif"]
    layout = info.entries[1]
    assert layout.metadata is not None and layout.metadata["manifest_digest"] == images.digest("x")
    assert [(c.path, present) for c, present in layout.staged] == [
        ((tmp_path / "wf1" / Path(docker[0].localPath).name), True)  # type: ignore[arg-type]
    ]
    base = next(b for b in layout.blobs if b.digest == images.base)
    assert base.shared_with == (images.tag("y"),) and base.in_store
    # selected by digest prefix and by the canonical form of what was typed
    assert inspect_entries(cache, images.digest("y")[:19]).references == (images.tag("y"),)
    assert inspect_entries(cache, "docker://" + images.tag("y")).references == (images.tag("y"),)
    with pytest.raises(CacheError, match="matches"):
        inspect_entries(cache, "busybox:does-not-exist")


def test_restage_records_last_use_with_one_small_write(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf1", [images.tag("x")])
    cache = ImageCache(cache_dir)
    key = entry_key(images.tag("x"), None)
    mark = cache.usage.record_path("oci-layout", key)
    old = time.time() - 5 * DAY
    os.utime(mark, (old, old))
    before = listing(cache_dir)
    materialize(cache_dir, tmp_path / "wf1", [images.tag("x")], offline=True)
    after = listing(cache_dir)
    changed = sorted(p for p in after if before.get(p) != after[p])
    # the re-stage wrote the entry's usage marks and nothing per blob (no blob, trust or snapshot file)
    assert changed, "the re-stage left no trace of its use"
    assert all(p.startswith(("usage/", "locks/", "tmp")) for p in changed), changed
    assert time.time() - mark.stat().st_mtime < 600
    # a new stage dir is remembered once; re-staging there within a minute writes nothing more
    materialize(cache_dir, tmp_path / "wf2", [images.tag("x")], offline=True)
    staged = [c.path.parent for c in cache.usage.staged_copies("oci-layout", key)]
    assert staged == [tmp_path / "wf1", tmp_path / "wf2"]
    st = mark.stat()
    materialize(cache_dir, tmp_path / "wf2", [images.tag("x")], offline=True)
    assert mark.stat().st_mtime_ns == st.st_mtime_ns and mark.stat().st_size == st.st_size


def test_the_usage_record_is_appended_to_never_read_and_listed_without_repeats(
    tmp_path: Path, images: Images
) -> None:
    """A re-stage never reads the usage record (it grows by a line per workflow run), so a dir staged
    again after its workflow deleted it is a second line: listed once. A record that is gone is
    written again by a re-stage into a dir that is still there."""
    cache_dir = tmp_path / "cache"
    tag = images.tag("x")
    materialize(cache_dir, tmp_path / "wf1", [tag])
    cache = ImageCache(cache_dir)
    key = entry_key(tag, None)
    mark = cache.usage.record_path("oci-layout", key)
    shutil.rmtree(tmp_path / "wf1")
    materialize(cache_dir, tmp_path / "wf1", [tag], offline=True)
    assert len(mark.read_text().splitlines()) == 2
    assert [c.path.parent for c in cache.usage.staged_copies("oci-layout", key)] == [tmp_path / "wf1"]
    mark.unlink()
    materialize(cache_dir, tmp_path / "wf1", [tag], offline=True)  # the copy there matches: kept
    assert [c.path.parent for c in cache.usage.staged_copies("oci-layout", key)] == [tmp_path / "wf1"]
    # gc keeps the record the size of what is staged now, and its time (the entry's last use)
    for n in range(2, 6):
        materialize(cache_dir, tmp_path / f"wf{n}", [tag], offline=True)
    for n in range(1, 5):
        shutil.rmtree(tmp_path / f"wf{n}")
    os.utime(mark, (time.time() - DAY, time.time() - DAY))
    used = mark.stat().st_mtime_ns
    collect_garbage(cache)
    assert [c.path.parent for c in cache.usage.staged_copies("oci-layout", key)] == [tmp_path / "wf5"]
    assert len(mark.read_text().splitlines()) == 1
    assert mark.stat().st_mtime_ns == used


def test_workflow_runs_do_not_grow_the_lock_dir(tmp_path: Path, images: Images) -> None:
    """Every run stages into new dirs; the stage locks are a fixed set, not a file per dir per run."""
    cache_dir = tmp_path / "cache"
    tag = images.tag("x")
    materialize(cache_dir, tmp_path / "warm", [tag])
    f = DockerContainerFactory(containersCacheDir=cache_dir, stagedContainersDir=tmp_path / "default")
    try:
        for run in range(300):
            f.materializeContainers(
                [ContainerTaggedName(tag, ContainerType.Docker)],
                containers_dir=tmp_path / f"run-{run}",
                offline=True,
            )
    finally:
        f.cache.release_holds()
        shutil.rmtree(f.tempDir, ignore_errors=True)
    stage_locks = [n for n in os.listdir(cache_dir / "locks") if n.startswith("stage-")]
    assert 0 < len(stage_locks) <= STAGE_LOCKS


# -- verify -----------------------------------------------------------------------------------------------
def test_verify_names_a_flipped_byte_with_mtime_restored_and_the_images_it_breaks(
    tmp_path: Path, images: Images
) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y"), images.tag("z")])
    cache = ImageCache(cache_dir)
    first = verify_cache(cache)
    assert first.ok and first.bad_blobs == () and first.broken == ()
    again = verify_cache(cache)
    assert again.ok and again.blobs_hashed == 0  # nothing changed since: the cheap check hashes nothing

    flip_byte(cache.store.path(images.base))
    report = verify_cache(cache)
    assert not report.ok and report.blobs_hashed == 1
    [bad] = report.bad_blobs
    assert bad.digest == images.base and "not what its name says" in bad.problem
    assert set(bad.breaks) == {(images.tag(n), k) for n in "xy" for k in ("image", "oci-layout")}
    assert len(bad.staged) == 2 and all(p.parent == tmp_path / "wf" for p in bad.staged)
    assert {(b.entry.reference, b.entry.kind) for b in report.broken} == set(bad.breaks)
    assert not cache.store.has(images.base)  # moved aside: nothing can serve it any more
    assert (cache_dir / "corrupt" / images.base.split(":")[1]).is_file()
    assert cache.lookup(images.tag("x"), "oci-layout") is None
    assert cache.lookup(images.tag("z"), "oci-layout") is not None


def test_full_verify_rehashes_what_the_cheap_check_trusts(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("z")])
    cache = ImageCache(cache_dir)
    assert verify_cache(cache).ok  # records every blob as it is now (links made since changed ctimes)
    layer = images.built["z"].manifest.layers[0].digest
    flip_byte(cache.store.path(layer))
    cache.store.mark_verified(layer)  # bit rot under an unchanged inode: the record agrees with the disk
    cheap = verify_cache(cache)
    assert cheap.ok and cheap.blobs_hashed == 0
    full = verify_cache(cache, full=True, jobs=2)
    assert not full.ok and [b.digest for b in full.bad_blobs] == [layer]
    assert full.blobs_hashed == len(images.blobs("z"))


def test_verify_repair_online_refetches_the_same_bytes(
    tmp_path: Path, images: Images, registry: RunningRegistry
) -> None:
    cache_dir = tmp_path / "cache"
    before = materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y")])
    cache = ImageCache(cache_dir)
    flip_byte(cache.store.path(images.base))
    mark = registry.mark()
    report = verify_cache(cache, repair=True)
    assert report.ok, report.to_json()
    [bad] = report.bad_blobs
    assert bad.digest == images.base and bad.action == "re-fetched"
    assert all(b.action == "repaired" for b in report.broken) and len(report.broken) == 4
    gets = registry.blob_gets(mark)
    assert [g.path.rsplit("/", 1)[1] for g in gets] == [images.base]  # only the bad blob travelled
    assert sha256_file(cache.store.path(images.base)) == images.base
    assert not (cache_dir / "corrupt").exists() or not any((cache_dir / "corrupt").iterdir())
    clean = verify_cache(cache, full=True)
    assert clean.ok and clean.bad_blobs == () and clean.broken == ()
    # the staged copy still holds the bad bytes until re-staged; a re-materialize (offline) heals it
    staged = Path(before[0].localPath)  # type: ignore[arg-type]
    assert cache.verify_snapshot(staged, before[0].image_signature or "")
    after = materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y")], offline=True)
    assert [(c.fingerprint, c.image_signature, c.signature) for c in after] == [
        (c.fingerprint, c.image_signature, c.signature) for c in before
    ]
    assert cache.verify_snapshot(staged, before[0].image_signature or "") == []


def test_verify_repair_offline_removes_the_entries_that_need_a_bad_blob(
    tmp_path: Path, images: Images
) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y"), images.tag("z")])
    cache = ImageCache(cache_dir)
    flip_byte(cache.store.path(images.base))
    report = verify_cache(cache, repair=True, offline=True)
    assert report.ok
    assert [(b.digest, b.action) for b in report.bad_blobs] == [(images.base, "removed")]
    assert {(b.entry.reference, b.action) for b in report.broken} == {
        (images.tag("x"), "removed"),
        (images.tag("y"), "removed"),
    }
    assert {e.reference for e in scan_entries(cache)} == {images.tag("z")}
    assert verify_cache(cache, full=True).ok
    with pytest.raises(ContainerNotFoundException):
        materialize(cache_dir, tmp_path / "wf2", [images.tag("x")], offline=True)
    [z] = materialize(cache_dir, tmp_path / "wf2", [images.tag("z")], offline=True)
    assert z.fingerprint is not None and z.fingerprint.endswith(images.digest("z"))


# -- rm ---------------------------------------------------------------------------------------------------
def test_rm_then_materialize_fetches_again(tmp_path: Path, images: Images, registry: RunningRegistry) -> None:
    cache_dir = tmp_path / "cache"
    [x0, _y0] = materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y")])
    cache = ImageCache(cache_dir)
    x_only = images.blobs("x") - images.blobs("y")
    report = remove_references(cache, [images.tag("x"), "nothing/like:this"])
    assert {(e.reference, e.kind) for e in report.removed} == {
        (images.tag("x"), "image"),
        (images.tag("x"), "oci-layout"),
    }
    assert report.unmatched == ("nothing/like:this",) and report.in_use == ()
    assert {b.digest for b in report.blobs} == x_only
    assert all(not cache.store.has(d) for d in x_only) and cache.store.has(images.base)
    assert not cache.snapshot_path(x0.image_signature or "").exists()
    with pytest.raises(ContainerNotFoundException):
        materialize(cache_dir, tmp_path / "wf2", [images.tag("x")], offline=True)
    mark = registry.mark()
    [x1] = materialize(cache_dir, tmp_path / "wf2", [images.tag("x")])
    fetched = {g.path.rsplit("/", 1)[1] for g in registry.blob_gets(mark)}
    assert fetched == x_only - {images.digest("x")}  # config and layer again; the shared base stayed
    assert (x1.fingerprint, x1.image_signature) == (x0.fingerprint, x0.image_signature)


def test_rm_narrowed_to_a_kind_keeps_the_image(
    tmp_path: Path, images: Images, registry: RunningRegistry
) -> None:
    cache_dir = tmp_path / "cache"
    [x0] = materialize(cache_dir, tmp_path / "wf", [images.tag("x")])
    cache = ImageCache(cache_dir)
    report = remove_references(cache, [images.digest("x")[:20]], kinds=["oci-layout"], dry_run=True)
    assert [e.kind for e in report.removed] == ["oci-layout"] and report.blobs == ()
    report = remove_references(cache, [images.digest("x")[:20]], kinds=["oci-layout"])
    assert [e.kind for e in report.removed] == ["oci-layout"] and report.blobs == ()
    assert [e.kind for e in scan_entries(cache)] == ["image"]
    mark = registry.mark()
    [x1] = materialize(cache_dir, tmp_path / "wf2", [images.tag("x")], offline=True)  # rebuilt from blobs
    assert registry.requests_since(mark) == []
    assert x1.image_signature == x0.image_signature


def test_rm_and_prune_leave_what_a_running_process_holds(tmp_path: Path, images: Images, holder) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("z")])
    cache = ImageCache(cache_dir)
    proc = holder(cache_dir, images.tag("x"))
    assert inspect_entries(cache, images.tag("x")).in_use
    report = remove_references(cache, [images.tag("x"), images.tag("z")])
    assert {e.reference for e in report.in_use} == {images.tag("x")}
    assert {e.reference for e in report.removed} == {images.tag("z")}
    assert all(cache.store.has(d) for d in images.blobs("x"))
    pruned = prune(cache, older_than=0)
    assert pruned.removed == () and {e.reference for e in pruned.in_use} == {images.tag("x")}
    proc.stdin.close()
    proc.wait(timeout=10)
    assert not inspect_entries(cache, images.tag("x")).in_use
    assert {e.reference for e in prune(cache, older_than=0).removed} == {images.tag("x")}
    assert list(cache.store.iter_digests()) == []


# -- prune ------------------------------------------------------------------------------------------------
def test_prune_older_than_dry_run_changes_nothing_then_frees_exactly_that(
    tmp_path: Path, images: Images
) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y"), images.tag("z")])
    cache = ImageCache(cache_dir)
    backdate(cache, images.tag("x"), 40)
    backdate(cache, images.tag("z"), 10)
    before = listing(cache_dir)
    dry = prune(cache, older_than=30 * DAY, dry_run=True)
    assert listing(cache_dir) == before
    x_only = images.blobs("x") - images.blobs("y")
    assert {(e.reference, e.kind) for e in dry.removed} == {
        (images.tag("x"), "image"),
        (images.tag("x"), "oci-layout"),
    }
    assert {b.digest for b in dry.blobs} == x_only and dry.snapshot_bytes > 0
    real = prune(cache, older_than=30 * DAY)
    assert real.to_json() == {**dry.to_json(), "dry_run": False}
    assert all(not cache.store.has(d) for d in x_only)
    assert all(cache.store.has(d) for d in images.blobs("y") | images.blobs("z"))
    assert {e.reference for e in scan_entries(cache)} == {images.tag("y"), images.tag("z")}
    assert verify_cache(cache).ok


def test_prune_max_size_goes_least_recently_used_first(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y"), images.tag("z")])
    cache = ImageCache(cache_dir)
    backdate(cache, images.tag("y"), 3)
    backdate(cache, images.tag("z"), 2)
    backdate(cache, images.tag("x"), 1)
    store = cache.store
    total = sum(store.size(d) for d in store.iter_digests())
    y_only = images.blobs("y") - images.blobs("x")
    # just under the whole cache: the least recently used image (y) goes, and only its own blobs
    report = prune(cache, max_size=total - 1)
    assert {e.reference for e in report.removed} == {images.tag("y")}
    assert {b.digest for b in report.blobs} == y_only
    # small enough for one image only: z (older) goes before x
    x_bytes = sum(store.size(d) for d in images.blobs("x"))
    report = prune(cache, max_size=x_bytes)
    assert {e.reference for e in report.removed} == {images.tag("z")}
    assert sum(store.size(d) for d in store.iter_digests()) == x_bytes


def test_prune_unused_keeps_what_a_stage_dir_still_holds(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf1", [images.tag("x")])
    materialize(cache_dir, tmp_path / "wf2", [images.tag("y")])
    materialize(cache_dir, tmp_path / "wf3", [images.tag("x")], sif=True)
    cache = ImageCache(cache_dir)
    assert prune(cache, unused=True, dry_run=True).removed == ()
    shutil.rmtree(tmp_path / "wf1")
    report = prune(cache, unused=True)
    # x's layout is staged nowhere now; its image still feeds the SIF staged in wf3, so it stays
    assert {(e.reference, e.kind) for e in report.removed} == {(images.tag("x"), "oci-layout")}
    assert report.blobs == ()
    shutil.rmtree(tmp_path / "wf3")
    report = prune(cache, unused=True)
    assert {(e.reference, e.kind) for e in report.removed} == {
        (images.tag("x"), "image"),
        (images.tag("x"), "sif"),
    }
    assert {e.reference for e in scan_entries(cache)} == {images.tag("y")}
    with pytest.raises(CacheError, match="say what to prune"):
        prune(cache)


# -- gc ---------------------------------------------------------------------------------------------------
LOCK_HOLDER = textwrap.dedent(
    """
    import sys
    from wfexs_like.filelocks import FileLock
    from wfexs_like.cache import claim_dir
    lock = FileLock(sys.argv[1])
    lock.acquire()
    fd = claim_dir(sys.argv[2])
    print("held", flush=True)
    sys.stdin.read()
    """
)


def test_gc_sweeps_litter_and_unreferenced_blobs_and_keeps_everything_in_use(
    tmp_path: Path, images: Images
) -> None:
    cache_dir = tmp_path / "cache"
    [x0] = materialize(cache_dir, tmp_path / "wf", [images.tag("x")])
    cache = ImageCache(cache_dir)
    store = cache.store
    referenced = set(store.iter_digests())
    orphan = store.put_bytes(b"nobody needs me")
    stale_partial = store.tmp_dir / ("sha256-" + "a" * 64 + ".partial")
    stale_partial.write_bytes(b"half a layer")
    busy_partial = store.tmp_dir / ("sha256-" + "b" * 64 + ".partial")
    busy_partial.write_bytes(b"being downloaded")
    build = store.tmp_dir / "sif-abandoned"
    (build / "rootfs" / "bin").mkdir(parents=True)
    (build / "rootfs" / "bin" / "sh").write_bytes(b"x" * 1000)
    live = store.tmp_dir / "factory-alive"
    live.mkdir()
    stale_lock = store.locks_dir / "stale.lock"
    stale_lock.touch()
    cache.forget(images.tag("x"), "oci-layout")  # its snapshot is now named by no entry
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LOCK_HOLDER,
            str(store.locks_dir / ("sha256-" + "b" * 64 + ".lock")),
            str(live),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        young = collect_garbage(cache)  # everything planted is seconds old: all spared
        assert young.removed == ()
        assert store.has(orphan) and stale_partial.exists() and build.exists()

        later = time.time() + 2 * 3600  # as if the litter had been left two hours ago
        before = listing(cache_dir)
        dry = collect_garbage(cache, dry_run=True, now=later)
        assert listing(cache_dir) == before
        real = collect_garbage(cache, now=later)
        said = {(str(i.path.relative_to(cache_dir)), i.what) for i in dry.removed}
        done = {(str(i.path.relative_to(cache_dir)), i.what) for i in real.removed}
        assert done == said, (sorted(done - said), sorted(said - done))
        removed = {i.path for i in real.removed}
        assert {
            store.path(orphan),
            stale_partial,
            build,
            stale_lock,
            cache.snapshot_path(x0.image_signature or ""),
        } <= removed
        assert busy_partial.exists() and live.exists()
        assert {i.path for i in real.spared} >= {busy_partial, live}
        assert set(store.iter_digests()) == referenced  # the image entry still references all of them
        assert real.freed_bytes >= len(b"nobody needs me") + 1000
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(timeout=10)
    # the image entry alone rebuilds the snapshot offline
    [x1] = materialize(cache_dir, tmp_path / "wf2", [images.tag("x")], offline=True)
    assert x1.image_signature == x0.image_signature
    assert verify_cache(cache, full=True).ok


def test_claimed_dir_is_released_with_its_fd(tmp_path: Path) -> None:
    from wfexs_like.cache.usage import dir_claimed

    d = tmp_path / "work"
    d.mkdir()
    assert not dir_claimed(d)
    fd = claim_dir(d)
    assert dir_claimed(d)
    os.close(fd)
    assert not dir_claimed(d)


def test_a_work_dir_a_gc_swept_before_it_was_claimed_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instant between ``mkdtemp`` and the claim: a gc that removed the dir then (both ways it can
    happen) must not leave the run working in a dir that no longer exists."""
    from wfexs_like.cache import usage

    real_claim = usage.claim_dir
    calls = {"n": 0}

    def racing_claim(path: Path) -> int:
        calls["n"] += 1
        if calls["n"] == 1:  # gc removed it before we opened it
            path.rmdir()
        fd = real_claim(path)
        if calls["n"] == 2:  # gc removed it after we opened it, before our lock could stop it
            path.rmdir()
        return fd

    monkeypatch.setattr(usage, "claim_dir", racing_claim)
    path, fd = usage.claimed_temp_dir(tmp_path, "factory-")
    try:
        assert calls["n"] == 3 and path.is_dir()
        assert usage.hold_unlocked(path, directory=True) is None  # claimed: gc keeps its hands off
    finally:
        os.close(fd)
    held = usage.hold_unlocked(path, directory=True)
    assert held is not None
    os.close(held)

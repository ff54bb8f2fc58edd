"""Pins: a blob a live process relies on is never removed from under it (issue 13, concurrency).

A materialize pins every blob before it relies on "the store has it" and
keeps the pins until its entries are published; ``BlobStore.remove`` (which
``cache gc`` and ``prune`` go through) leaves a pinned blob alone and says
"in use". The other process here is a real one: pins are POSIX record
locks, which a process's own threads never conflict on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wfexs_like.cache import ImageCache
from wfexs_like.cache.garbage import collect_garbage
from wfexs_like.images.blobstore import BlobStore

REPO = Path(__file__).resolve().parents[1]

#: Another process: pins the digests given, says "pinned", and keeps them until its stdin closes.
PINNER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from wfexs_like.images.blobstore import BlobStore
    store = BlobStore(Path(sys.argv[1]))
    for d in sys.argv[2:]:
        store.pin(d)
    print("pinned", flush=True)
    sys.stdin.read()
    """
)

#: Another process in the middle of a removal: holds the digest's pin byte exclusively until told.
REMOVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from wfexs_like.images.blobstore import BlobStore, _pin_offset
    store = BlobStore(Path(sys.argv[1]))
    with store._pin_file.exclusive(_pin_offset(sys.argv[2])) as free:
        assert free
        print("removing", flush=True)
        sys.stdin.readline()
        store.path(sys.argv[2]).unlink()
    """
)


def other_process(script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # its first line: the pin (or the removal) is in place
    return proc


def done(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BlobStore]:
    s = BlobStore(tmp_path / "cache")
    yield s
    s.release_pins()


def test_a_blob_another_process_pins_is_left_in_use_until_it_lets_go(store: BlobStore) -> None:
    kept = store.put_bytes(b"relied on")
    free = store.put_bytes(b"nobody's")
    holder = other_process(PINNER, str(store.root), kept)
    try:
        assert store.is_pinned(kept) and not store.is_pinned(free)
        assert store.remove(kept) == "in use" and store.has(kept)
        assert store.remove(free) == "removed" and not store.has(free)
        assert store.remove(free) == "absent"
    finally:
        done(holder)
    assert not store.is_pinned(kept)
    assert store.remove(kept) == "removed" and not store.has(kept)


def test_pins_die_with_their_process(store: BlobStore) -> None:
    """The kernel drops a killed process's record locks: no stale pin keeps a blob forever."""
    digest = store.put_bytes(b"x")
    holder = other_process(PINNER, str(store.root), digest)
    holder.kill()
    holder.wait(timeout=30)
    assert store.remove(digest) == "removed"


def test_this_process_pins_across_store_objects_until_released(store: BlobStore, tmp_path: Path) -> None:
    """Another ``BlobStore`` of the same cache (gc in another thread) sees this process's pins too,
    even through a symlinked path, and ``release_pins`` lets them go."""
    digest = store.put_bytes(b"in use here")
    store.pin(digest)
    store.pin(digest)  # idempotent
    assert digest in store.pins and len(store.pins) == 1
    (tmp_path / "link").symlink_to(store.root)
    other = BlobStore(tmp_path / "link")
    assert other.remove(digest) == "in use" and store.has(digest)
    store.release_pins()
    assert len(store.pins) == 0
    assert other.remove(digest) == "removed"


def test_a_pin_shared_by_two_stores_holds_until_both_release(tmp_path: Path) -> None:
    a, b = BlobStore(tmp_path / "cache"), BlobStore(tmp_path / "cache")
    digest = a.put_bytes(b"shared")
    a.pin(digest)
    b.pin(digest)
    a.release_pins()
    assert a.remove(digest) == "in use"
    b.release_pins()
    assert a.remove(digest) == "removed"


def test_pinning_block_releases_at_its_end(store: BlobStore) -> None:
    digest = store.put_bytes(b"scoped")
    with store.pinning() as pins:
        with store.pinning():
            store.pin(digest)
        assert digest in pins  # the inner block is not the outermost one
        assert store.remove(digest) == "in use"
    assert len(store.pins) == 0
    assert store.remove(digest) == "removed"


def test_a_pin_waits_for_a_removal_in_progress_then_sees_the_blob_gone(store: BlobStore) -> None:
    """Pin first, ask ``has`` second: a removal that won the race is finished before the answer."""
    digest = store.put_bytes(b"being removed")
    remover = other_process(REMOVER, str(store.root), digest)
    pinned = threading.Event()
    worker = threading.Thread(target=lambda: (store.pin(digest), pinned.set()), daemon=True)
    worker.start()
    try:
        assert not pinned.wait(0.5), "the pin did not wait for the removal holding the blob"
    finally:
        assert remover.stdin is not None
        remover.stdin.write("go\n")
        remover.stdin.flush()
        done(remover)
    assert pinned.wait(30)
    assert not store.has(digest)


def test_thousands_of_pins_take_one_fd(store: BlobStore) -> None:
    """A long-lived process may pin every blob of many images: the cost is one fd per cache."""
    before = len(os.listdir("/proc/self/fd"))
    for i in range(3000):
        store.pin("sha256:" + f"{i:064x}")
    assert len(store.pins) == 3000
    assert len(os.listdir("/proc/self/fd")) <= before + 1
    store.release_pins()


def test_a_read_only_store_pins_nothing(store: BlobStore) -> None:
    digest = store.put_bytes(b"library")
    ro = BlobStore(store.root, readonly=True)
    ro.pin(digest)
    assert len(ro.pins) == 0 and not store.is_pinned(digest)


def test_gc_spares_a_pinned_unreferenced_blob_as_in_use(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    pinned = cache.store.put_bytes(b"downloaded, entry not yet published")
    loose = cache.store.put_bytes(b"nobody's")
    holder = other_process(PINNER, str(cache.root), pinned)
    try:
        dry = collect_garbage(cache, grace=0, dry_run=True)
        report = collect_garbage(cache, grace=0)
    finally:
        done(holder)
    for r in (dry, report):
        assert (cache.store.path(pinned), "blob in use by a running process") in {
            (i.path, i.what) for i in r.spared
        }
        assert cache.store.path(loose) in {i.path for i in r.removed}
        assert cache.store.path(pinned) not in {i.path for i in r.removed}
    assert cache.store.has(pinned) and not cache.store.has(loose)
    again = collect_garbage(cache, grace=0)
    assert cache.store.path(pinned) in {i.path for i in again.removed} and not cache.store.has(pinned)


def test_gc_spares_a_live_writers_temp_file_and_removes_a_dead_ones_at_once(tmp_path: Path) -> None:
    """A blob writer's ``tmp/blob-*.tmp`` holds a flock while it lives: ``gc --min-age 0s`` must not
    remove it under the writer, and must remove one whose process is gone, however young."""
    cache = ImageCache(tmp_path / "cache")
    data = b"in progress" * 1000
    live = cache.store.writer(None, len(data))
    live.write(data[:100])
    # a writer killed mid-download: its temp file exists, and its lock went with its process
    child = (
        "import os, sys; from pathlib import Path; from wfexs_like.images.blobstore import BlobStore; "
        "w = BlobStore(Path(sys.argv[1])).writer(None, 10); w.write(b'x'); w._fh.flush(); "
        "print(w.tmp_path, flush=True); os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", child, str(cache.store.root)], capture_output=True, text=True)
    dead = Path(out.stdout.strip())
    assert dead.is_file() and live.tmp_path.is_file()

    collect_garbage(cache, grace=0)
    assert live.tmp_path.is_file(), "gc removed the temp file of a live writer"
    assert not dead.exists(), "gc kept the temp file of a dead writer"
    live.write(data[100:])
    digest = live.commit()
    assert cache.store.verify(digest, full=True)

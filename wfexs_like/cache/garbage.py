"""Sweeping what nobody needs: the library side of ``cache gc``.

``prune`` and ``rm`` remove *entries* by policy; gc removes what no entry
needs and no process is using, and is safe to run at any time, alongside
materializes: everything it deletes is either unreferenced *and* older than
a grace period (a download in progress has not recorded its entry yet), or
guarded by a lock its owner would hold (a partial download, a work dir
claimed with ``usage.claim_dir``, a lock file), which gc must be able to
take first. A blob a live process has pinned (``BlobStore.pin``: it relies
on it and has not published the entry that references it yet) is spared
whatever its age, and reported as in use.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..filelocks import Timeout
from ..images.blobstore import Removal
from ..images.staging import remove_path
from ..model import META_JSON_POSTFIX
from .inventory import ENTRY_KINDS, CacheEntry, blob_referrers, scan_entries
from .lifecycle import extra_bytes, store_inodes
from .names import SNAPSHOT_KINDS
from .snapshots import ImageCache
from .usage import flock_held, hold_unlocked, remove_unheld_lock

#: What gc spares: unreferenced blobs, temporary and partial files younger than this (seconds).
DEFAULT_GRACE = 3600.0
#: A lock file younger than this may be about to be locked by the process that just created it.
_LOCK_GRACE = 60.0
#: A temporary file younger than this (a record's, or any in ``tmp/`` but a blob writer's, which holds
#: a flock instead) may be a live writer's, and nothing guards it: spared whatever ``--min-age`` says,
#: or the writer's rename fails.
_TEMP_GRACE = 60.0
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: What ``BlobWriter`` names its temp files (``tempfile.mkstemp(prefix="blob-", suffix=".tmp")``).
_BLOB_TEMP = re.compile(r"blob-[A-Za-z0-9_]+\.tmp")


@dataclass(frozen=True)
class GcItem:
    path: Path
    what: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "what": self.what, "size": self.size}


@dataclass(frozen=True)
class GcReport:
    dry_run: bool
    removed: tuple[GcItem, ...]
    #: Left alone: held by a live process, or too young to be sure it is abandoned.
    spared: tuple[GcItem, ...] = field(default=())

    @property
    def freed_bytes(self) -> int:
        return sum(i.size for i in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": [i.to_json() for i in self.removed],
            "spared": [i.to_json() for i in self.spared],
            "freed_bytes": self.freed_bytes,
        }


def _tree_size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        total = 0
        for r, _d, fs in os.walk(path):
            for f in fs:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(r, f)).st_size
        return total
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _newest(path: Path) -> float:
    """The latest mtime/ctime in ``path`` (a tree: any file in it), i.e. when someone last worked there."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0.0
    newest = max(st.st_mtime, st.st_ctime)
    if path.is_dir() and not path.is_symlink():
        for r, ds, fs in os.walk(path):
            for n in (*ds, *fs):
                with contextlib.suppress(OSError):
                    s = os.lstat(os.path.join(r, n))
                    newest = max(newest, s.st_mtime, s.st_ctime)
    return newest


class _Gc:
    def __init__(self, cache: ImageCache, grace: float, dry_run: bool, now: float) -> None:
        self.cache = cache
        self.grace = grace
        self.dry_run = dry_run
        self.now = now
        self.removed: list[GcItem] = []
        self.spared: list[GcItem] = []
        self._inodes: set[tuple[int, int]] | None = None
        try:
            self.lock_names = sorted(os.listdir(cache.store.locks_dir))
        except OSError:
            self.lock_names = []

    def store_inodes(self) -> set[tuple[int, int]]:
        if self._inodes is None:
            self._inodes = store_inodes(self.cache)
        return self._inodes

    def old(self, path: Path, grace: float | None = None) -> bool:
        return self.now - _newest(path) >= (self.grace if grace is None else grace)

    def remove(self, path: Path, what: str, size: int | None = None) -> None:
        item = GcItem(path, what, _tree_size(path) if size is None else size)
        if not self.dry_run:
            remove_path(path)
        self.removed.append(item)

    def spare(self, path: Path, what: str) -> None:
        self.spared.append(GcItem(path, what, _tree_size(path)))

    # -- tmp/ ----------------------------------------------------------------------------------------
    def tmp(self) -> None:
        tmp = self.cache.store.tmp_dir
        try:
            names = sorted(os.listdir(tmp))
        except OSError:
            return
        for name in names:
            path = tmp / name
            if name.startswith("retired-"):
                self.remove(path, "retired snapshot")
            elif name.endswith(".partial"):
                self.partial(path)
            elif path.is_dir() and not path.is_symlink():
                self.unless_locked(path, True, "work dir of a running process", "abandoned work dir")
            elif _BLOB_TEMP.fullmatch(name):  # a blob writer's: it holds a flock while it lives
                self.unless_locked(
                    path, False, "temporary file of a running download", "temporary file of a dead process"
                )
            elif self.old(path, max(self.grace, _TEMP_GRACE)):  # a live writer's: see _TEMP_GRACE
                self.remove(path, "stale temporary file")
            else:
                self.spare(path, "recent temporary file")

    def unless_locked(self, path: Path, directory: bool, live: str, dead: str) -> None:
        """Remove ``path`` (once older than the grace) unless its owner's flock says it lives; the
        lock is held while removing, so no owner can take it in between."""
        held = hold_unlocked(path, directory=directory)
        if held is None:
            self.spare(path, live)
            return
        try:
            if self.old(path):
                self.remove(path, dead)
            else:
                self.spare(path, "recent " + ("work dir" if directory else "temporary file"))
        finally:
            os.close(held)

    def partial(self, path: Path) -> None:
        m = re.fullmatch(r"sha256-([0-9a-f]{64})\.partial", path.name)
        if not self.old(path):
            self.spare(path, "recent partial download")
            return
        if m is None or self.dry_run:
            lock_path = None if m is None else self.cache.store.locks_dir / f"sha256-{m.group(1)}.lock"
            if lock_path is not None and flock_held(lock_path):
                self.spare(path, "partial download in progress")
            else:
                self.remove(path, "stale partial download")
            return
        lock = self.cache.store.lock("sha256:" + m.group(1), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            self.spare(path, "partial download in progress")
            return
        try:
            self.remove(path, "stale partial download")
        finally:
            lock.release()

    # -- leftovers of writers killed mid-rename ------------------------------------------------------------
    def leftovers(self) -> None:
        cache = self.cache
        dirs = [
            cache.tags_dir,
            cache.snapshots_dir,
            cache.store.trust_dir,
            cache.store.diff_ids_dir,
            cache.usage.root,
            cache.store.blobs_dir,
        ]
        dirs += [cache.refs_dir / k for k in SNAPSHOT_KINDS] + [cache.usage.root / k for k in ENTRY_KINDS]
        for d in dirs:
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            for name in names:
                if name.startswith(".") and name.endswith(".tmp"):
                    path = d / name
                    if self.old(path, max(self.grace, _TEMP_GRACE)):
                        self.remove(path, "stale temporary file")
                    else:
                        self.spare(path, "recent temporary file")

    # -- snapshots no record names -----------------------------------------------------------------------
    def orphan_snapshots(self, entries: Sequence[CacheEntry]) -> None:
        named = {e.fingerprint.split(":", 1)[1] for e in entries if e.fingerprint}
        try:
            names = sorted(os.listdir(self.cache.snapshots_dir))
        except OSError:
            return
        for name in names:
            m = re.fullmatch(r"sha256-([0-9a-f]{64})(" + re.escape(META_JSON_POSTFIX) + ")?", name)
            if m is None or m.group(1) in named:
                continue
            path = self.cache.snapshots_dir / name
            # ``ImageCache.put`` publishes the snapshot, then writes the record naming it: one just
            # published is spared whatever --min-age says, or its materialize finds it gone.
            if not self.old(path, max(self.grace, _TEMP_GRACE)):
                self.spare(path, "recent snapshot not recorded yet")
                continue
            if self.dry_run:
                self.remove(path, "snapshot no entry names")
                continue
            lock = self.cache.store.lock(f"snapshot-sha256:{m.group(1)}", timeout=0)
            try:
                lock.acquire()
            except Timeout:
                self.spare(path, "snapshot being published")
                continue
            try:
                size = extra_bytes([path], self.store_inodes())
                self.removed.append(GcItem(path, "snapshot no entry names", size))
                self.cache.retire(path)
            finally:
                lock.release()

    # -- blobs -------------------------------------------------------------------------------------------
    def blobs(self, entries: Sequence[CacheEntry]) -> None:
        referenced = set(blob_referrers(entries))
        for d in list(self.cache.store.iter_digests()):
            if d in referenced:
                continue
            path = self.cache.store.path(d)
            if not self.old(path):
                self.spare(path, "recent unreferenced blob (a download in progress may need it)")
                continue
            size = _tree_size(path)
            outcome = (
                ("in use" if self.cache.store.is_pinned(d) else "removed") if self.dry_run else self.blob(d)
            )
            if outcome == "removed":
                self.removed.append(GcItem(path, "unreferenced blob", size))
            elif outcome == "in use":
                self.spared.append(GcItem(path, "blob in use by a running process", size))

    def blob(self, digest: str) -> Removal:
        """Delete one blob unless a writer is fetching it again (its lock) or a live process pins it."""
        lock = self.cache.store.lock(digest, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return "in use"
        try:
            return self.cache.store.remove(digest)
        finally:
            lock.release()

    def quarantined(self) -> None:
        corrupt = self.cache.root / "corrupt"
        try:
            names = sorted(os.listdir(corrupt))
        except OSError:
            return
        for name in names:
            self.remove(corrupt / name, "quarantined (corrupt) blob")

    # -- small records -----------------------------------------------------------------------------------
    def records(self, entries: Sequence[CacheEntry]) -> None:
        cache = self.cache
        for e in entries:
            if not e.reference and e.problems and self.old(e.record):
                self.remove(e.record, "unreadable record")
        per_blob = ((cache.store.trust_dir, "trust record"), (cache.store.diff_ids_dir, "diff id record"))
        for records_dir, what in per_blob:
            try:
                names = sorted(os.listdir(records_dir))
            except OSError:
                names = []
            for name in names:
                if _HEX64.match(name) and not cache.store.has("sha256:" + name):
                    self.remove(records_dir / name, f"{what} of a missing blob")
        live = {(e.kind, e.key) for e in entries}
        for kind in ENTRY_KINDS:
            d = cache.usage.root / kind
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            for name in names:
                if _HEX64.match(name) and (kind, name) not in live and self.old(d / name):
                    self.remove(d / name, "usage record of a removed entry")
                elif _HEX64.match(name) and not self.dry_run:
                    cache.usage.compact(kind, name)  # forget the stage dirs workflows have deleted
        keys = {e.key for e in entries}
        try:
            names = sorted(os.listdir(cache.usage.root))
        except OSError:
            names = []
        for name in names:
            path = cache.usage.root / name
            key = name.removesuffix(".lock")
            if name.endswith(".lock") and key not in keys and self.old(path, _LOCK_GRACE):
                self.lock_file(path, "in-use marker of a removed entry")
        for name in self.lock_names:  # as found at the start: not the ones this run took itself
            path = cache.store.locks_dir / name
            if name.endswith(".lock") and self.old(path, _LOCK_GRACE):
                self.lock_file(path, "stale lock")

    def lock_file(self, path: Path, what: str) -> None:
        if self.dry_run:
            if not flock_held(path):
                self.removed.append(GcItem(path, what, 0))
            return
        if remove_unheld_lock(path):
            self.removed.append(GcItem(path, what, 0))


#: A work dir is claimed (``usage.claimed_temp_dir``) by its owner for as long as it lives, whatever its
#: age, and a claim lost to a sweep in the instant after ``mkdtemp`` is retried; the grace only spares
#: a dir some other tool made there.
WORK_DIR_GRACE = 10.0


def sweep_dead_work(cache: ImageCache, *, grace: float = WORK_DIR_GRACE) -> GcReport:
    """What every run does first, cheaply: remove the work dirs in ``tmp/`` (``sif-*``, ``factory-*``...)
    that killed runs left, so they never pile up between two ``cache gc``. Files (partial downloads a run
    may resume, a writer's temp) are left to ``cache gc`` and its longer grace."""
    run = _Gc(cache, grace, False, time.time())
    tmp = cache.store.tmp_dir
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(tmp)):
            path = tmp / name
            if path.is_dir() and not path.is_symlink():
                run.unless_locked(path, True, "work dir of a running process", "abandoned work dir")
    return GcReport(dry_run=False, removed=tuple(run.removed), spared=tuple(run.spared))


def collect_garbage(
    cache: ImageCache, *, grace: float = DEFAULT_GRACE, dry_run: bool = False, now: float | None = None
) -> GcReport:
    """``cache gc``: remove what no entry needs and nobody is using.

    - blobs no entry references, older than ``grace`` (a download in
      progress has not recorded its entry yet);
    - snapshots no entry names (``forget``/``invalidate`` leave them), older than ``grace``;
    - in ``tmp/``: partial downloads and temporary files older than ``grace``
      whose lock nobody holds, work dirs (``sif-*``, ``oci-layout-*``,
      ``factory-*``...) older than ``grace`` that no live process claims
      (``usage.claim_dir``), retired snapshots;
    - temporary files of writers killed mid-publish, quarantined blobs,
      trust and usage records of what is gone, lock files nobody holds;
    - and, in the usage records of entries nobody is using, the lines of
      stage dirs that are gone (not a removal: nothing is listed for it).
    """
    now = time.time() if now is None else now
    run = _Gc(cache, grace, dry_run, now)
    run.tmp()
    run.leftovers()
    entries = scan_entries(cache)
    run.orphan_snapshots(entries)
    run.blobs(entries)
    run.quarantined()
    run.records(entries)
    return GcReport(dry_run=dry_run, removed=tuple(run.removed), spared=tuple(run.spared))

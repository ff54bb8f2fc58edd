"""Removing entries safely: the library side of ``cache rm`` and ``cache prune``.

The rules every removal here follows:

- **Never what a running process holds.** An entry is removed only while
  its reference+platform is held exclusively (``usage.Usage.exclusive``);
  a materialize that looked it up, built or staged it holds it shared, so
  the entry is skipped and reported, never pulled from under it.
- **Never a blob a kept entry references.** Blobs are deleted after the
  entries, and only those no remaining entry references (re-read from
  disk at that moment, so an entry published meanwhile keeps its blobs).
- **Nothing half-removed is visible.** A snapshot is renamed out of
  ``snapshots/`` in one step before it is deleted; records go first, so a
  reader sees an entry or no entry, never one whose snapshot is gone.
- **A dry run is the same plan, not executed**: it prints exactly what the
  real run would remove, and writes nothing (not even a lock file).

``rm`` removes the blobs it leaves unreferenced at once (``keep_blobs``
leaves them for ``gc``): ``gc`` spares young unreferenced blobs for an hour,
since a download in progress has not recorded its entry yet.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CacheError
from ..filelocks import Timeout
from .inspection import still_staged
from .inventory import (
    ENTRY_KINDS,
    CacheEntry,
    blob_referrers,
    record_files,
    scan_entries,
    select_entries,
)
from .names import IMAGE_KIND, SNAPSHOT_KINDS
from .snapshots import ImageCache, read_json


@dataclass(frozen=True)
class FreedBlob:
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class RemovalReport:
    """What ``rm``/``prune`` removed (or, with ``dry_run``, would remove), and what they spared."""

    dry_run: bool
    removed: tuple[CacheEntry, ...]
    #: Selected, but held by a running process: left alone.
    in_use: tuple[CacheEntry, ...]
    blobs: tuple[FreedBlob, ...]
    #: Bytes removed with the snapshots beyond their blobs (layout indexes, sidecars, copies).
    snapshot_bytes: int
    #: ``rm`` arguments that matched nothing.
    unmatched: tuple[str, ...] = ()

    @property
    def blob_bytes(self) -> int:
        return sum(b.size for b in self.blobs)

    @property
    def freed_bytes(self) -> int:
        return self.blob_bytes + self.snapshot_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": [e.to_json() for e in self.removed],
            "in_use": [e.to_json() for e in self.in_use],
            "blobs": [b.to_json() for b in self.blobs],
            "blob_bytes": self.blob_bytes,
            "snapshot_bytes": self.snapshot_bytes,
            "freed_bytes": self.freed_bytes,
            "unmatched": list(self.unmatched),
        }


# -- removal mechanics ---------------------------------------------------------------------------------
def store_inodes(cache: ImageCache) -> set[tuple[int, int]]:
    out = set()
    for d in cache.store.iter_digests():
        with contextlib.suppress(OSError):
            st = os.lstat(cache.store.path(d))
            out.add((st.st_dev, st.st_ino))
    return out


def extra_bytes(
    paths: Iterable[Path], store_inodes: set[tuple[int, int]] | None, cache: ImageCache | None = None
) -> int:
    """Bytes of ``paths`` (files or trees) that are not hard links of store blobs, each inode once.

    Without ``store_inodes`` (``cache`` then says where the store is), a file is compared only
    with the store blob it would be a link of (a layout's ``blobs/sha256/<hex>`` and a snapshot
    file ``sha256-<hex>`` with blob ``<hex>``): a few ``stat``s per snapshot instead of one per
    blob of the store. A file linked some other way counts as extra then."""
    if store_inodes is None and cache is None:
        raise ValueError("extra_bytes needs store_inodes or the cache")
    blobs = str(cache.store.blobs_dir) if cache is not None else ""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in paths:
        files: Iterable[str]
        if os.path.isdir(path) and not os.path.islink(path):
            files = (os.path.join(r, f) for r, _d, fs in os.walk(path) for f in fs)
        else:
            files = (str(path),)
        for f in files:
            try:
                st = os.lstat(f)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                continue
            if store_inodes is not None:
                if ident in store_inodes:
                    continue
            elif st.st_nlink > 1 and _is_store_link(blobs, f, ident):
                continue
            seen.add(ident)
            total += st.st_size
    return total


def _is_store_link(blobs: str, path: str, ident: tuple[int, int]) -> bool:
    name = os.path.basename(path)
    hexd = name[7:] if name.startswith("sha256-") else name
    if len(hexd) != 64:
        return False
    try:
        st = os.lstat(f"{blobs}/{hexd}")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == ident


def _named_fingerprints(cache: ImageCache) -> set[str]:
    """Fingerprints the refs records on disk name right now (records only: cheap)."""
    out = set()
    for kind in SNAPSHOT_KINDS:
        for e in record_files(cache.refs_dir / kind):
            with contextlib.suppress(CacheError):
                fp = read_json(e).get("fingerprint")
                if isinstance(fp, str):
                    out.add(fp)
    return out


def _snapshot_paths(cache: ImageCache, fingerprint: str) -> list[Path]:
    return [cache.snapshot_path(fingerprint), cache.metadata_path(fingerprint)]


def _drop(cache: ImageCache, entry: CacheEntry) -> None:
    """Remove one entry's record and usage mark (its snapshot and blobs are decided by the caller)."""
    with contextlib.suppress(FileNotFoundError):
        entry.record.unlink()
    cache.usage.forget(entry.kind, entry.key)


def _changed(entry: CacheEntry) -> bool:
    try:
        rec = read_json(entry.record)
    except CacheError:
        return not entry.record.exists() or bool(entry.reference)
    current = rec.get("fingerprint") if entry.kind != IMAGE_KIND else rec.get("manifest_digest")
    recorded = entry.fingerprint if entry.kind != IMAGE_KIND else entry.digest
    return current != recorded


def remove_entries(
    cache: ImageCache,
    chosen: Sequence[CacheEntry],
    *,
    dry_run: bool = False,
    keep_blobs: bool = False,
    unmatched: Sequence[str] = (),
    in_use: Sequence[CacheEntry] = (),
    entries: Sequence[CacheEntry] | None = None,
) -> RemovalReport:
    """Remove ``chosen`` entries, their snapshots (unless another reference shares one) and the blobs
    no remaining entry references; skip entries a running process holds (reported in ``in_use``,
    with the ones the caller already set aside). See the module docstring.

    ``entries``: every entry of the cache as the caller just scanned it (a dry run plans with
    them instead of scanning again; a real run re-reads the disk after removing, whatever it is
    given)."""
    all_entries = entries if entries is not None or not dry_run else None
    by_key: dict[str, list[CacheEntry]] = {}
    for e in chosen:
        by_key.setdefault(e.key, []).append(e)
    removed: list[CacheEntry] = []
    busy: list[CacheEntry] = list(in_use)
    snapshot_targets: dict[str, list[Path]] = {}

    removed_records = {e.record_file for e in chosen}
    for key, group in by_key.items():
        if dry_run:
            (busy if cache.usage.is_held(key) else removed).extend(group)
            continue
        with cache.usage.exclusive(key) as owned:
            if not owned:
                busy.extend(group)
                continue
            for e in group:
                if _changed(e):
                    continue  # re-written by a materialize since we looked: it is not what was chosen
                _drop(cache, e)
                removed.append(e)
    removed_records -= {e.record_file for e in busy}
    if dry_run and all_entries is None:
        all_entries = scan_entries(cache)

    # Snapshots: only when no record left names the same fingerprint.
    if dry_run:
        assert all_entries is not None
        still_named = {
            e.fingerprint for e in all_entries if e.fingerprint and e.record_file not in removed_records
        }
    else:
        still_named = _named_fingerprints(cache)
    for e in removed:
        if e.fingerprint and e.fingerprint not in still_named:
            snapshot_targets[e.fingerprint] = _snapshot_paths(cache, e.fingerprint)
    snapshot_bytes = extra_bytes((p for ps in snapshot_targets.values() for p in ps), None, cache)
    if not dry_run:
        for fingerprint, paths in snapshot_targets.items():
            with cache.store.lock(f"snapshot-{fingerprint}"):  # not while ``put`` publishes it
                for p in paths:
                    cache.retire(p)

    blobs: list[FreedBlob] = []
    if not keep_blobs:
        candidates = {d for e in removed for d in e.blobs}
        if dry_run:
            assert all_entries is not None
            kept = {d for e in all_entries if e.record_file not in removed_records for d in e.blobs}
        else:
            kept = set(blob_referrers(scan_entries(cache, keep_summary=True)))
        for d in sorted(candidates - kept):
            size = _blob_size(cache, d)
            if size is None:
                continue
            if dry_run or delete_blob(cache, d):
                blobs.append(FreedBlob(d, size))
    return RemovalReport(
        dry_run=dry_run,
        removed=tuple(removed),
        in_use=tuple(busy),
        blobs=tuple(blobs),
        snapshot_bytes=snapshot_bytes,
        unmatched=tuple(unmatched),
    )


def _blob_size(cache: ImageCache, digest: str) -> int | None:
    """``store.size`` on a plain string path: a prune sizes thousands of blobs."""
    if not digest.startswith("sha256:"):
        return None
    try:
        return os.stat(f"{cache.store.blobs_dir}/{digest[7:]}").st_size
    except OSError:
        return None


def delete_blob(cache: ImageCache, digest: str) -> bool:
    """Delete a stored blob unless a writer holds its lock (it is being fetched again) or a live
    process has pinned it (it decided to reuse it): True only when this call removed it."""
    lock = cache.store.lock(digest, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    try:
        return cache.store.remove(digest) == "removed"
    finally:
        lock.release()


# -- rm -------------------------------------------------------------------------------------------------
def remove_references(
    cache: ImageCache,
    queries: Sequence[str],
    *,
    kinds: Sequence[str] | None = None,
    platform: str | None = None,
    dry_run: bool = False,
    keep_blobs: bool = False,
) -> RemovalReport:
    """``cache rm``: every entry each query selects (all kinds and platforms unless narrowed).

    A query is a tag as typed or canonical, or a digest (prefix); see
    ``inventory.select_entries``. Queries that select nothing are listed
    in ``unmatched``.
    """
    for k in kinds or ():
        if k not in ENTRY_KINDS:
            raise CacheError(f"unknown entry kind {k!r}; use one of: {', '.join(ENTRY_KINDS)}")
    entries = scan_entries(cache, keep_summary=not dry_run)
    chosen: dict[str, CacheEntry] = {}
    unmatched = []
    for q in queries:
        found = select_entries(entries, q, kinds=kinds, platform=platform)
        if not found:
            unmatched.append(q)
        for e in found:
            chosen.setdefault(e.record_file, e)
    return remove_entries(
        cache,
        list(chosen.values()),
        dry_run=dry_run,
        keep_blobs=keep_blobs,
        unmatched=unmatched,
        entries=entries,
    )


# -- prune ----------------------------------------------------------------------------------------------
def is_unused(cache: ImageCache, entry: CacheEntry, entries: Sequence[CacheEntry]) -> bool:
    """Not staged in any stage dir that still holds it.

    A snapshot entry is unused when none of the stage dir copies recorded
    for it is still there with its fingerprint (the stage dir was deleted,
    or re-staged with another image). An ``image`` entry is unused when
    every snapshot made from it (same reference and platform) is unused.
    """
    if entry.kind != IMAGE_KIND:
        return not any(
            still_staged(c, entry.fingerprint) for c in cache.usage.staged_copies(entry.kind, entry.key)
        )
    siblings = [e for e in entries if e.key == entry.key and e.kind != IMAGE_KIND]
    return all(is_unused(cache, s, entries) for s in siblings)


def _sizes(cache: ImageCache, entries: Sequence[CacheEntry]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in entries:
        for d in e.blobs:
            if d in out:
                continue
            size = _blob_size(cache, d)
            if size is None and e.kind == "oci-layout" and e.snapshot is not None:
                with contextlib.suppress(OSError):
                    size = (e.snapshot / "blobs" / "sha256" / d.split(":", 1)[1]).stat().st_size
            out[d] = size or 0
    return out


def select_for_prune(
    cache: ImageCache,
    entries: Sequence[CacheEntry],
    *,
    older_than: float | None = None,
    max_size: int | None = None,
    unused: bool = False,
    now: float | None = None,
) -> tuple[list[CacheEntry], list[CacheEntry]]:
    """(the entries a prune removes, least recently used first; those it would but a process holds).

    ``older_than`` (seconds) and ``unused`` are filters (an entry must pass
    every one given); without ``max_size`` all that pass go, with it they go
    least recently used first only until the bytes of blobs referenced by
    the remaining entries (each blob once) are at most ``max_size``.
    Entries a running process holds are never selected, and count as kept.
    """
    if older_than is None and max_size is None and not unused:
        raise CacheError("say what to prune: --older-than, --max-size and/or --unused")
    now = time.time() if now is None else now
    candidates = list(entries)
    if older_than is not None:
        candidates = [e for e in candidates if e.recency < now - older_than]
    if unused:
        candidates = [e for e in candidates if is_unused(cache, e, entries)]
    held = {k for k in {e.key for e in candidates} if cache.usage.is_held(k)}
    busy = [e for e in candidates if e.key in held]
    candidates = [e for e in candidates if e.key not in held]
    candidates.sort(key=lambda e: (e.recency, e.reference, ENTRY_KINDS.index(e.kind)))
    if max_size is None:
        return candidates, busy
    sizes = _sizes(cache, entries)
    refs: dict[str, int] = {}
    for e in entries:
        for d in set(e.blobs):
            refs[d] = refs.get(d, 0) + 1
    total = sum(sizes[d] for d in refs)
    chosen = []
    for e in candidates:
        if total <= max_size:
            break
        chosen.append(e)
        for d in set(e.blobs):
            refs[d] -= 1
            if refs[d] == 0:
                total -= sizes[d]
    return chosen, busy


def prune(
    cache: ImageCache,
    *,
    older_than: float | None = None,
    max_size: int | None = None,
    unused: bool = False,
    dry_run: bool = False,
    now: float | None = None,
) -> RemovalReport:
    """``cache prune``: remove what ``select_for_prune`` picks, with its snapshots and freed blobs."""
    entries = scan_entries(cache, keep_summary=not dry_run)
    chosen, busy = select_for_prune(
        cache, entries, older_than=older_than, max_size=max_size, unused=unused, now=now
    )
    return remove_entries(cache, chosen, dry_run=dry_run, in_use=busy, entries=entries)

"""What the cache dir holds on disk (``cache du``): every inode counted once, by area and by kind.

Kept apart from ``inventory`` so that listing the cache loads none of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .inventory import ENTRY_KINDS, CacheEntry, blob_referrers, scan_entries

if TYPE_CHECKING:
    from .snapshots import ImageCache


@dataclass
class Tally:
    """How many files and how many bytes."""

    files: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size

    def to_json(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}


@dataclass
class DiskUsage:
    """What the cache dir holds on disk, every inode counted once (apparent sizes, in bytes).

    ``snapshots`` counts only what snapshots add to the blobs (an OCI
    layout's ``index.json``, sidecars, copies where a hard link was
    impossible): their blob files are hard links of ``blobs``.
    ``per_kind`` counts each kind's referenced blobs once per kind;
    ``shared`` are blobs referenced by more than one image, ``unique`` by
    exactly one, ``unreferenced`` by none (``cache gc`` removes them).
    """

    root: Path
    total: int = 0
    blobs: Tally = field(default_factory=Tally)
    snapshots: Tally = field(default_factory=Tally)
    partials: Tally = field(default_factory=Tally)
    temporary: Tally = field(default_factory=Tally)
    quarantined: Tally = field(default_factory=Tally)
    records: Tally = field(default_factory=Tally)
    per_kind: dict[str, Tally] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)
    shared: Tally = field(default_factory=Tally)
    unique: Tally = field(default_factory=Tally)
    unreferenced: Tally = field(default_factory=Tally)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "total_bytes": self.total,
            "blobs": self.blobs.to_json(),
            "snapshots": self.snapshots.to_json(),
            "partials": self.partials.to_json(),
            "temporary": self.temporary.to_json(),
            "quarantined": self.quarantined.to_json(),
            "records": self.records.to_json(),
            "per_kind": {
                k: {"entries": self.entries.get(k, 0), **t.to_json()} for k, t in self.per_kind.items()
            },
            "shared": self.shared.to_json(),
            "unique": self.unique.to_json(),
            "unreferenced": self.unreferenced.to_json(),
        }


def _walk_files(top: Path) -> Iterable[os.stat_result]:
    for root, _dirs, files in os.walk(top):
        for f in files:
            try:
                yield os.lstat(os.path.join(root, f))
            except OSError:
                continue


def disk_usage(cache: ImageCache, entries: Sequence[CacheEntry] | None = None) -> DiskUsage:
    """Sizes of the cache by area, by kind, and shared vs unique; reads only."""
    entries = scan_entries(cache) if entries is None else entries
    du = DiskUsage(cache.root)
    seen: set[tuple[int, int]] = set()

    def count(st: os.stat_result, tally: Tally) -> None:
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            return
        seen.add(ident)
        tally.add(st.st_size)
        du.total += st.st_size

    blob_sizes: dict[str, int] = {}
    for d in cache.store.iter_digests():
        try:
            st = os.lstat(cache.store.path(d))
        except OSError:
            continue
        blob_sizes[d] = st.st_size
        count(st, du.blobs)
    for st in _walk_files(cache.snapshots_dir):
        count(st, du.snapshots)
    try:
        tmp_names = os.listdir(cache.store.tmp_dir)
    except OSError:
        tmp_names = []
    for name in tmp_names:
        path = cache.store.tmp_dir / name
        tally = du.partials if name.endswith(".partial") else du.temporary
        if path.is_dir() and not path.is_symlink():
            for st in _walk_files(path):
                count(st, tally)
        else:
            with contextlib.suppress(OSError):
                count(os.lstat(path), tally)
    for st in _walk_files(cache.root / "corrupt"):
        count(st, du.quarantined)
    for st in _walk_files(cache.root):  # what is left: records, trust, usage, locks
        count(st, du.records)

    referrers = blob_referrers(entries)
    for kind in ENTRY_KINDS:
        tally = Tally()
        kind_entries = [e for e in entries if e.kind == kind]
        for d in sorted({d for e in kind_entries for d in e.blobs}):
            if d in blob_sizes:
                tally.add(blob_sizes[d])
        du.per_kind[kind] = tally
        du.entries[kind] = len(kind_entries)
    for d, size in blob_sizes.items():
        users = referrers.get(d, set())
        (du.shared if len(users) > 1 else du.unique if users else du.unreferenced).add(size)
    return du

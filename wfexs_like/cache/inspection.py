"""Everything the cache knows about the entries a user names (``cache inspect``).

Kept apart from ``inventory`` so that listing the cache loads none of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..digests import normalize_fingerprint
from ..errors import CacheError, IntegrityError
from .inventory import CacheEntry, blob_referrers, scan_entries, select_entries
from .usage import StagedCopy

if TYPE_CHECKING:
    from .snapshots import ImageCache


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int | None
    in_store: bool
    #: The store's copy looks exactly as when last hashed (inode, size, mtime, ctime).
    unchanged: bool
    #: Other images (references) that reference this blob too.
    shared_with: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "in_store": self.in_store,
            "unchanged_since_verified": self.unchanged,
            "shared_with": list(self.shared_with),
        }


@dataclass(frozen=True)
class EntryDetail:
    entry: CacheEntry
    metadata: Mapping[str, Any] | None
    #: Stage dirs it was staged into, and whether that copy is still there (same fingerprint).
    staged: tuple[tuple[StagedCopy, bool], ...]
    blobs: tuple[BlobInfo, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.entry.to_json(),
            "metadata": dict(self.metadata) if self.metadata is not None else None,
            "staged": [
                {"path": str(c.path), "metadata_path": str(c.metadata_path), "present": present}
                for c, present in self.staged
            ],
            "blobs": [b.to_json() for b in self.blobs],
        }


@dataclass(frozen=True)
class Inspection:
    """Everything the cache knows about what a user named."""

    query: str
    references: tuple[str, ...]
    #: Held by a running process (a materialize that looked it up, built or staged it).
    in_use: bool
    entries: tuple[EntryDetail, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "references": list(self.references),
            "in_use": self.in_use,
            "entries": [d.to_json() for d in self.entries],
        }


def still_staged(copy: StagedCopy, fingerprint: str | None) -> bool:
    """Is this stage dir copy still there and still this snapshot? (its copied sidecar says so)"""
    if fingerprint is None or not (copy.path.exists() or copy.path.is_symlink()):
        return False
    try:
        data = json.loads(copy.metadata_path.read_bytes())
        return normalize_fingerprint(str(data.get("image_signature"))) == fingerprint
    except (OSError, ValueError, AttributeError, IntegrityError):
        return False


def inspect_entries(cache: ImageCache, query: str, entries: Sequence[CacheEntry] | None = None) -> Inspection:
    """Details of every entry ``query`` selects (see ``select_entries``); CacheError when none does."""
    from .snapshots import read_json

    entries = scan_entries(cache) if entries is None else entries
    chosen = select_entries(entries, query)
    if not chosen:
        raise CacheError(
            f"nothing in the cache at {cache.root} matches {query!r}; `wfexs-like cache ls` lists it"
        )
    referrers = blob_referrers(entries)
    details = []
    for e in chosen:
        meta = None
        if e.metadata_path is not None:
            try:
                meta = read_json(e.metadata_path)
            except CacheError:
                meta = None
        blobs = []
        for d in e.blobs:
            in_store = cache.store.has(d)
            size = None
            try:
                size = cache.store.size(d)
            except OSError:
                if e.kind == "oci-layout" and e.snapshot is not None:
                    try:
                        size = (e.snapshot / "blobs" / "sha256" / d.split(":", 1)[1]).stat().st_size
                    except OSError:
                        size = None
            others = sorted({r for r, _p in referrers.get(d, set()) if r != e.reference})
            blobs.append(BlobInfo(d, size, in_store, in_store and cache.store.unchanged(d), tuple(others)))
        staged = tuple((c, still_staged(c, e.fingerprint)) for c in cache.usage.staged_copies(e.kind, e.key))
        details.append(EntryDetail(e, meta, staged, tuple(blobs)))
    keys = {e.key for e in chosen}
    return Inspection(
        query=query,
        references=tuple(sorted({e.reference for e in chosen})),
        in_use=any(cache.usage.is_held(k) for k in keys),
        entries=tuple(details),
    )

"""What the cache holds, entry by entry: the library side of ``cache ls``, ``du`` and ``inspect``.

An **entry** is one record a later materialize can be served from:

- kind ``image``: ``tags/<key>.json``, a reference (and requested platform)
  resolved to a manifest digest, whose manifest, config and layers are
  blobs in the store. Every snapshot kind can be built from it offline.
- kinds ``oci-layout``, ``sif``, ``docker-archive``: ``refs/<kind>/<key>.json``,
  the snapshot of that kind staged for the reference.

The blobs an entry *references* are what must stay for it to work: the
image's manifest/config/layers, the files of an OCI layout (hard links of
store blobs), the SIF or archive blob. ``size`` is their sum, so a blob
shared by several images counts once for each of them; what the disk really
holds is ``disk_usage``'s business, which counts every inode once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..digests import is_digest, normalize_fingerprint
from ..errors import CacheError, ContainerFactoryException, IntegrityError
from ..images.manifest import Index, Manifest, ManifestError, image_platform, parse_manifest_or_index
from ..references import parse_reference
from .snapshots import SNAPSHOT_KINDS, ImageCache, entry_key, read_json
from .usage import IMAGE_KIND, StagedCopy

ENTRY_KINDS: tuple[str, ...] = (IMAGE_KIND, *SNAPSHOT_KINDS)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CacheEntry:
    """One record of the cache (see the module docstring), with what it needs and when it was used."""

    reference: str
    #: The platform the entry was materialized for (None: the host's default).
    platform: str | None
    kind: str
    key: str
    record: Path
    #: The manifest digest: the pin a record of this image carries.
    digest: str | None
    #: The snapshot's fingerprint (None for kind ``image``).
    fingerprint: str | None
    snapshot: Path | None
    metadata_path: Path | None
    #: ``os/arch[/variant]`` of the image itself.
    image_platform: str | None
    blobs: tuple[str, ...]
    #: Bytes of ``blobs`` (a blob shared with other entries counts here too).
    size: int
    #: Referenced blobs that are neither in the store nor in the snapshot.
    missing: tuple[str, ...]
    #: When the record was (last) written.
    created: float
    #: When the entry was last staged or resolved (None: not since usage is recorded).
    last_used: float | None
    problems: tuple[str, ...] = ()

    @property
    def group(self) -> tuple[str, str | None]:
        """The image this entry is a form of: its reference and requested platform."""
        return (self.reference, self.platform)

    @property
    def recency(self) -> float:
        """What least-recently-used order sorts by: the last use, else the time it was recorded."""
        return self.last_used if self.last_used is not None else self.created

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "platform": self.image_platform,
            "requested_platform": self.platform,
            "kind": self.kind,
            "digest": self.digest,
            "fingerprint": self.fingerprint,
            "size": self.size,
            "blobs": list(self.blobs),
            "missing": list(self.missing),
            "snapshot": str(self.snapshot) if self.snapshot else None,
            "created": _iso(self.created),
            "last_used": _iso(self.last_used),
            "problems": list(self.problems),
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def record_files(directory: Path) -> Iterable[Path]:
    """Record files of one dir; temporary files of a writer (``.name.xxx.tmp``) are not records."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [directory / n for n in names if n.endswith(".json") and not n.startswith(".")]


class _Sizes:
    """Blob sizes, one ``stat`` each; a blob absent from the store is looked for in the snapshot."""

    def __init__(self, cache: ImageCache) -> None:
        self.store = cache.store
        self._known: dict[str, int | None] = {}

    def of(self, digest: str, fallback: Path | None = None) -> int | None:
        if digest not in self._known:
            try:
                self._known[digest] = self.store.path(digest).stat().st_size
            except (OSError, IntegrityError, CacheError):
                self._known[digest] = None
        size = self._known[digest]
        if size is None and fallback is not None:
            try:
                return fallback.stat().st_size
            except OSError:
                return None
        return size


def _image_blobs(cache: ImageCache, manifest_digest: str) -> tuple[list[str], str | None, list[str]]:
    """(blobs, image platform, problems) of a stored image, read from its manifest and config."""
    store = cache.store
    try:
        raw = store.path(manifest_digest).read_bytes()
    except FileNotFoundError:
        return [manifest_digest], None, [f"manifest {manifest_digest} is not in the blob store"]
    except (OSError, CacheError) as e:
        return [manifest_digest], None, [f"manifest {manifest_digest}: {e}"]
    try:
        doc = parse_manifest_or_index(raw)
    except ManifestError as e:
        return [manifest_digest], None, [f"manifest {manifest_digest} is unreadable: {e}"]
    if isinstance(doc, Index):
        return [manifest_digest, *(d.digest for d in doc.manifests)], None, []
    assert isinstance(doc, Manifest)
    blobs = [manifest_digest, doc.config.digest, *(layer.digest for layer in doc.layers)]
    plat = None
    try:
        config = json.loads(store.path(doc.config.digest).read_bytes())
        if isinstance(config, dict):
            plat = str(image_platform(config))
    except (OSError, ValueError):
        pass
    return list(dict.fromkeys(blobs)), plat, []


def _layout_blobs(snapshot: Path) -> list[str]:
    try:
        names = os.listdir(snapshot / "blobs" / "sha256")
    except OSError:
        return []
    return sorted("sha256:" + n for n in names if _HEX64.match(n))


def _platform_of(meta: Mapping[str, Any]) -> str | None:
    os_name, arch = meta.get("os"), meta.get("architecture")
    if not os_name or not arch:
        return None
    return f"{os_name}/{arch}" + (f"/{meta['variant']}" if meta.get("variant") else "")


def _unreadable(kind: str, record: Path, error: Exception) -> CacheEntry:
    """A record that cannot be read: listed (so it can be seen and removed), naming nothing."""
    return CacheEntry(
        reference="",
        platform=None,
        kind=kind,
        key=record.stem,
        record=record,
        digest=None,
        fingerprint=None,
        snapshot=None,
        metadata_path=None,
        image_platform=None,
        blobs=(),
        size=0,
        missing=(),
        created=_mtime(record),
        last_used=None,
        problems=(str(error),),
    )


def _read_record(record: Path) -> tuple[dict[str, Any], str, Any, list[str]]:
    """A record's JSON, the reference and platform it answers for, and whether it is filed right.

    Raises ``CacheError`` when it cannot be read (the caller lists it as unreadable)."""
    rec = read_json(record)
    reference, platform = str(rec.get("reference") or ""), rec.get("platform")
    problems: list[str] = []
    if entry_key(reference, platform) != record.stem:
        problems.append(f"{record} is filed under the wrong key")
    return rec, reference, platform, problems


def _snapshot_entry(cache: ImageCache, kind: str, record: Path, sizes: _Sizes) -> CacheEntry:
    key = record.stem
    created = _mtime(record)
    try:
        rec, reference, platform, problems = _read_record(record)
    except CacheError as e:
        return _unreadable(kind, record, e)
    fingerprint = rec.get("fingerprint")
    if not isinstance(fingerprint, str) or not is_digest(fingerprint):
        problems.append(f"{record} names no valid fingerprint")
        fingerprint = None
    snapshot = cache.snapshot_path(fingerprint) if fingerprint else None
    meta_path = cache.metadata_path(fingerprint) if fingerprint else None
    meta: dict[str, Any] = {}
    if meta_path is not None:
        try:
            meta = read_json(meta_path)
        except CacheError as e:
            problems.append(str(e))
    if snapshot is not None and not (snapshot.exists() or snapshot.is_symlink()):
        problems.append(f"snapshot {snapshot} is missing")
    if kind == "oci-layout":
        blobs = _layout_blobs(snapshot) if snapshot is not None else []
        layout_blobs = snapshot / "blobs" / "sha256" if snapshot is not None else None
    else:
        blobs = [fingerprint] if fingerprint else []
        layout_blobs = None
    total, missing = 0, []
    for d in blobs:
        fallback = layout_blobs / d.split(":", 1)[1] if layout_blobs is not None else snapshot
        size = sizes.of(d, fallback)
        if size is None:
            missing.append(d)
        else:
            total += size
    digest = meta.get("manifest_digest")
    return CacheEntry(
        reference=reference,
        platform=platform if isinstance(platform, str) else None,
        kind=kind,
        key=key,
        record=record,
        digest=digest if isinstance(digest, str) else None,
        fingerprint=fingerprint,
        snapshot=snapshot,
        metadata_path=meta_path,
        image_platform=_platform_of(meta),
        blobs=tuple(blobs),
        size=total,
        missing=tuple(missing),
        created=created,
        last_used=cache.usage.last_used(kind, key),
        problems=tuple(problems),
    )


def _image_entry(cache: ImageCache, record: Path, sizes: _Sizes, index_digests: Sequence[str]) -> CacheEntry:
    key = record.stem
    created = _mtime(record)
    try:
        rec, reference, platform, problems = _read_record(record)
    except CacheError as e:
        return _unreadable(IMAGE_KIND, record, e)
    digest = rec.get("manifest_digest")
    blobs: list[str] = []
    plat = None
    if isinstance(digest, str) and is_digest(digest):
        blobs, plat, found = _image_blobs(cache, digest)
        problems.extend(found)
        blobs.extend(d for d in index_digests if d not in blobs and cache.store.has(d))
    else:
        problems.append(f"{record} names no valid manifest digest")
        digest = None
    total, missing = 0, []
    for d in blobs:
        size = sizes.of(d)
        if size is None:
            missing.append(d)
        else:
            total += size
    return CacheEntry(
        reference=reference,
        platform=platform if isinstance(platform, str) else None,
        kind=IMAGE_KIND,
        key=key,
        record=record,
        digest=digest,
        fingerprint=None,
        snapshot=None,
        metadata_path=None,
        image_platform=plat,
        blobs=tuple(blobs),
        size=total,
        missing=tuple(missing),
        created=created,
        last_used=cache.usage.last_used(IMAGE_KIND, key),
        problems=tuple(problems),
    )


def scan_entries(cache: ImageCache) -> list[CacheEntry]:
    """Every entry of the cache, sorted by reference, platform and kind. Reads records; changes nothing.

    An image entry counts as used whenever a snapshot made from it is: its
    last use is the latest of its own and its siblings'.
    """
    sizes = _Sizes(cache)
    snaps: list[CacheEntry] = []
    for kind in SNAPSHOT_KINDS:
        snaps.extend(_snapshot_entry(cache, kind, r, sizes) for r in record_files(cache.refs_dir / kind))
    index_digests: dict[str, list[str]] = {}
    for e in snaps:
        if e.metadata_path is None:
            continue
        try:
            extra = read_json(e.metadata_path).get("extra") or {}
        except CacheError:
            continue
        idx = extra.get("index_digest") if isinstance(extra, dict) else None
        if isinstance(idx, str) and is_digest(idx):
            index_digests.setdefault(e.key, []).append(idx)
    images = [
        _image_entry(cache, r, sizes, index_digests.get(r.stem, [])) for r in record_files(cache.tags_dir)
    ]
    latest: dict[str, float] = {}
    for e in snaps:
        if e.last_used is not None:
            latest[e.key] = max(latest.get(e.key, 0.0), e.last_used)
    images = [
        replace(e, last_used=max(e.last_used or 0.0, latest[e.key])) if e.key in latest else e for e in images
    ]
    order = {k: i for i, k in enumerate(ENTRY_KINDS)}
    return sorted([*images, *snaps], key=lambda e: (e.reference, e.platform or "", order[e.kind]))


def blob_referrers(entries: Iterable[CacheEntry]) -> dict[str, set[tuple[str, str | None]]]:
    """Blob digest -> the images (reference, platform) whose entries reference it."""
    out: dict[str, set[tuple[str, str | None]]] = {}
    for e in entries:
        for d in e.blobs:
            out.setdefault(d, set()).add(e.group)
    return out


# -- selecting entries by what a user types ---------------------------------------------------------
def _names_for(query: str) -> set[str]:
    names = {query}
    with contextlib.suppress(ContainerFactoryException, ValueError):
        names.add(parse_reference(query).canonical())
    return names


def _digest_query(query: str) -> str | None:
    """``sha256:<12+ hex>`` or ``<12+ hex>``: a (prefix of a) manifest digest or fingerprint."""
    m = re.fullmatch(r"(?:sha256:)?([0-9a-f]{12,64})", query.strip().lower())
    return "sha256:" + m.group(1) if m else None


def platform_matches(entry: CacheEntry, wanted: str) -> bool:
    """``amd64``, ``linux/arm64`` or ``linux/arm64/v8`` against the image's platform (or the one asked)."""
    wanted = wanted.strip()
    for have in filter(None, (entry.image_platform, entry.platform)):
        if have == wanted or have.startswith(wanted + "/"):
            return True
        if "/" not in wanted and have.split("/")[1:2] == [wanted]:
            return True
    return False


def select_entries(
    entries: Iterable[CacheEntry],
    query: str,
    *,
    kinds: Sequence[str] | None = None,
    platform: str | None = None,
) -> list[CacheEntry]:
    """Entries a user means by ``query``: a tag as typed or canonical (``busybox:1.36`` is
    ``docker.io/library/busybox:1.36``), or a manifest digest / fingerprint (or a 12+ hex prefix)."""
    names = _names_for(query)
    prefix = _digest_query(query)
    out = []
    for e in entries:
        hit = e.reference in names or (
            prefix is not None and any(d and d.startswith(prefix) for d in (e.digest, e.fingerprint))
        )
        if not hit or (kinds and e.kind not in kinds):
            continue
        if platform is not None and not platform_matches(e, platform):
            continue
        out.append(e)
    return out


# -- du ---------------------------------------------------------------------------------------------
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


# -- inspect ----------------------------------------------------------------------------------------
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

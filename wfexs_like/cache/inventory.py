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
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..digests import is_digest, split_digest
from ..errors import CacheError, ContainerFactoryException
from ..fsutil import atomic_write_bytes, read_with_stat
from .names import IMAGE_KIND, META_JSON_POSTFIX, SNAPSHOT_KINDS, CacheDirs

if TYPE_CHECKING:
    from .snapshots import ImageCache

# The manifest parser and the snapshot code are imported where a scan needs them (a record or
# manifest the summary does not vouch for, an unreadable record): ``cache ls`` of a cache whose
# summary is current reads the cache's files and nothing else.

ENTRY_KINDS: tuple[str, ...] = (IMAGE_KIND, *SNAPSHOT_KINDS)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class CacheEntry(NamedTuple):
    """One record of the cache (see the module docstring), with what it needs and when it was used.

    A named tuple, not a dataclass: a scan makes thousands of entries, most of them only to be
    listed, and a frozen dataclass takes three times as long to build (and ``dataclasses``
    itself, with ``inspect``, a tenth of ``cache ls``'s start-up to import). Its files are kept
    as strings; ``record``, ``snapshot`` and ``metadata_path`` are their ``Path``s."""

    reference: str
    #: The platform the entry was materialized for (None: the host's default).
    platform: str | None
    kind: str
    key: str
    record_file: str
    #: The manifest digest: the pin a record of this image carries.
    digest: str | None
    #: The snapshot's fingerprint (None for kind ``image``).
    fingerprint: str | None
    snapshot_file: str | None
    metadata_file: str | None
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
    def record(self) -> Path:
        return Path(self.record_file)

    @property
    def snapshot(self) -> Path | None:
        return Path(self.snapshot_file) if self.snapshot_file is not None else None

    @property
    def metadata_path(self) -> Path | None:
        return Path(self.metadata_file) if self.metadata_file is not None else None

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
            "snapshot": self.snapshot_file,
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
    return [Path(p) for p in _record_names(str(directory))]


def _record_names(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [f"{directory}/{n}" for n in names if n.endswith(".json") and not n.startswith(".")]


def _read(path: str) -> tuple[bytes, float]:
    """A small file's bytes and mtime, from one open."""
    raw, st = read_with_stat(path)
    return raw, st.st_mtime


def _load_record(path: str) -> tuple[dict[str, Any], float]:
    """A record's JSON object and mtime; CacheError (``read_json``'s words) when it cannot be read."""
    try:
        raw, mtime = _read(path)
        data = json.loads(raw)
    except (OSError, ValueError):
        data, mtime = None, 0.0
    if not isinstance(data, dict):
        from .snapshots import read_json

        read_json(Path(path))  # raises, naming what is wrong the way every reader of records does
        raise CacheError(f"metadata file {path} could not be read; re-materialize the container")
    return data, mtime


def _references(raw: bytes) -> tuple[bool, list[str], str | None]:
    """(is an index, the digests it references in order, its config digest) of a manifest document.

    The well-formed case is read straight from the JSON; anything else goes
    through ``parse_manifest_or_index``, which raises ``ManifestError`` with
    the reason (or accepts what this shortcut is too strict for)."""
    from ..images.manifest import (
        INDEX_TYPES,
        MANIFEST_TYPES,
        OCI_INDEX,
        OCI_MANIFEST,
        Index,
        Manifest,
        parse_manifest_or_index,
    )

    try:
        data = json.loads(raw)
        mt = data.get("mediaType") or (OCI_INDEX if "manifests" in data else OCI_MANIFEST)
        if mt in INDEX_TYPES:
            children = [d["digest"] for d in data["manifests"]]
            if _well_formed(data["manifests"]):
                return True, children, None
        elif mt in MANIFEST_TYPES and data.get("schemaVersion") == 2:
            config, layers = data["config"], data["layers"]
            if isinstance(layers, list) and _well_formed([config, *layers]):
                return False, [config["digest"], *(d["digest"] for d in layers)], config["digest"]
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    doc = parse_manifest_or_index(raw)
    if isinstance(doc, Index):
        return True, [d.digest for d in doc.manifests], None
    assert isinstance(doc, Manifest)
    return False, [doc.config.digest, *(d.digest for d in doc.layers)], doc.config.digest


def _well_formed(descriptors: Any) -> bool:
    return isinstance(descriptors, list) and all(
        isinstance(d, dict)
        and isinstance(d.get("digest"), str)
        and is_digest(d["digest"])
        and type(d.get("size")) is int
        and d["size"] >= 0
        for d in descriptors
    )


#: Where ``scan_entries`` keeps what it derived, so the next scan reads only what changed.
SUMMARY_FILE = "inventory.json"
_SUMMARY_VERSION = 2
#: A record changed this close to when the summary was written may have changed again unseen
#: within one tick of the file system's clock (git's "racily clean" index entries): re-read it.
_RACY_NS = 2_000_000_000


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class _Summary:
    """What earlier scans derived, each piece keyed so that it cannot go stale unseen.

    - ``records``: a record's (reference, platform, digest or fingerprint), under the record's
      inode, size, mtime and ctime, trusted only when it last changed well before the summary
      was written.
    - ``images``: a manifest digest's blobs and platform: content addressed, never stale.
    - ``snapshots``: a fingerprint's sidecar fields (under the sidecar's stat key) and, for a
      layout, the blobs its dir holds.
    - ``sizes``: a stored blob's size (content addressed), under its digest.
    - ``blobs_dir``: the blob store dir's stat key when that scan listed it, kept only when it
      had last changed well before: while the dir keeps it, no blob was added or removed since
      (a directory's mtime and ctime move with every entry made, renamed or unlinked in it), so
      ``sizes`` still says which blobs are stored and the 10,000-name listing is skipped.

    It is a cache of the files, never a source: missing, unreadable or of another version, it is
    ignored and rebuilt; ``cache verify`` does not read it at all.
    """

    def __init__(self, data: Any = None) -> None:
        ok = isinstance(data, dict) and data.get("version") == _SUMMARY_VERSION
        get = (lambda k: data.get(k) if isinstance(data.get(k), dict) else {}) if ok else (lambda k: {})
        self.written_ns: int = data.get("written_ns", 0) if ok and type(data.get("written_ns")) is int else 0
        self.records: dict[str, Any] = get("records")
        self.images: dict[str, Any] = get("images")
        self.snapshots: dict[str, Any] = get("snapshots")
        self.sizes: dict[str, Any] = get("sizes")
        blobs_dir = data.get("blobs_dir") if ok else None
        self.blobs_dir: list[int] | None = blobs_dir if isinstance(blobs_dir, list) else None

    def to_json(self, written_ns: int) -> dict[str, Any]:
        return {
            "version": _SUMMARY_VERSION,
            "written_ns": written_ns,
            "records": self.records,
            "images": self.images,
            "snapshots": self.snapshots,
            "sizes": self.sizes,
            "blobs_dir": self.blobs_dir,
        }


def _load_summary(path: str) -> _Summary:
    try:
        return _Summary(json.loads(_read(path)[0]))
    except (OSError, ValueError):
        return _Summary()


class _Scan:
    """One pass over a cache's files: blob sizes (one ``stat`` each, remembered) and the paths of
    records, snapshots and usage marks as plain strings, since ``pathlib`` costs more than the
    system calls at a few thousand entries. With ``summary``, what ``_Summary`` vouches for is
    taken from it, and what was derived anew is written back at the end."""

    def __init__(self, cache: ImageCache | CacheDirs, *, summary: bool) -> None:
        self.root = str(cache.root)
        if isinstance(cache, CacheDirs):
            self.blobs, self.usage = str(cache.blobs_dir), str(cache.usage_dir)
        else:
            self.blobs, self.usage = str(cache.store.blobs_dir), str(cache.usage.root)
        self.snapshots = str(cache.snapshots_dir)
        self._sizes: dict[str, int | None] = {}
        self.use_summary = summary
        self.old = _load_summary(f"{self.root}/{SUMMARY_FILE}") if summary else _Summary()
        self.new = _Summary()
        self.dirty = False
        self.started_ns = time.time_ns()
        self.stored: set[str] | None = None
        #: The store dir is as the summary saw it: its sizes say which blobs are stored.
        self.store_unchanged = False
        self.snapshot_names: set[str] | None = None

    def list_after_records(self) -> None:
        """List the store and the snapshots, once the records are listed: whatever a listed record
        names was published before it, so it is in these lists unless it was removed since. The
        store is not listed again while its dir is as the summary saw it (``_Summary.blobs_dir``)."""
        if not self.use_summary:
            return
        try:
            st = os.stat(self.blobs)  # before the listing: a change after it shows next time
        except OSError:
            st = None
        if st is not None and st.st_mtime_ns < self.started_ns - _RACY_NS:
            self.new.blobs_dir = _stat_key(st)
        old = self.old
        if self.new.blobs_dir is not None and self.new.blobs_dir == old.blobs_dir and old.written_ns:
            self.store_unchanged = True
            # of the blobs stored then, which are the blobs stored now
            self._sizes = {d: n for d, n in old.sizes.items() if type(n) is int}
        else:
            with contextlib.suppress(OSError):
                self.stored = {n for n in os.listdir(self.blobs) if len(n) == 64}
            if self.stored is not None:
                stored = self.stored
                # the summary's sizes, of blobs still stored; what it keeps next is taken from
                # these (and what ``size`` learns) when it is written
                self._sizes = {d: n for d, n in old.sizes.items() if d[7:] in stored and type(n) is int}
        if self.new.blobs_dir != old.blobs_dir:
            self.dirty = True
        with contextlib.suppress(OSError):
            self.snapshot_names = set(os.listdir(self.snapshots))

    def holds(self, digest: str) -> bool:
        """Whether the store holds ``digest``, as far as this scan's listing tells (False: it does
        not, or the scan cannot tell without reading)."""
        if self.stored is not None:
            return digest[7:] in self.stored
        return self.store_unchanged and type(self._sizes.get(digest)) is int

    def size(self, digest: str, fallback: str | None = None) -> int | None:
        """Bytes of the store's blob; of ``fallback`` (a snapshot's own copy) when the store lacks it."""
        size = self._sizes.get(digest, -1)
        if size == -1:
            size = None
            hexd = digest[7:] if digest.startswith("sha256:") else None
            if hexd is not None and (self.stored is None or hexd in self.stored):
                with contextlib.suppress(OSError):
                    size = os.stat(f"{self.blobs}/{hexd}").st_size
                if size is not None and self.use_summary:
                    self.dirty = True
            self._sizes[digest] = size
        if size is None and fallback is not None:
            try:
                return os.stat(fallback).st_size
            except OSError:
                return None
        return size

    def blob(self, digest: str) -> bytes:
        if not digest.startswith("sha256:"):
            raise CacheError(f"only sha256 blobs are stored, not {digest}")
        return _read(f"{self.blobs}/{digest[7:]}")[0]

    def last_used(self, kind: str, key: str) -> float | None:
        try:
            return os.stat(f"{self.usage}/{kind}/{key}").st_mtime
        except OSError:
            return None

    def snapshot_name(self, fingerprint: str) -> str:
        algo, hexd = split_digest(fingerprint)
        return f"{self.snapshots}/{algo}-{hexd}"

    def snapshot_exists(self, path: str) -> bool:
        if self.snapshot_names is not None:
            return path.rsplit("/", 1)[-1] in self.snapshot_names
        return os.path.lexists(path)

    def record(self, path: str, field: str) -> tuple[str, Any, Any, float, bool]:
        """(reference, platform, the value of ``field``, mtime, whether it is filed under the key of
        its reference and platform) of a record; CacheError if unreadable."""
        name = path[len(self.root) + 1 :]
        if self.use_summary:
            try:
                st = os.stat(path)
            except OSError:
                st = None
            known = self.old.records.get(name)
            if st is not None and isinstance(known, list) and len(known) == 7:
                key = _stat_key(st)
                if known[:4] == key and st.st_mtime_ns < self.old.written_ns - _RACY_NS:
                    self.new.records[name] = known
                    return known[4], known[5], known[6], st.st_mtime, True
        from .snapshots import entry_key

        rec, mtime = _load_record(path)
        reference, platform, value = str(rec.get("reference") or ""), rec.get("platform"), rec.get(field)
        filed_right = _plain(platform) and entry_key(reference, platform) == _stem(path)
        if self.use_summary and filed_right and _plain(platform) and _plain(value):
            with contextlib.suppress(OSError):
                self.new.records[name] = [*_stat_key(os.stat(path)), reference, platform, value]
                self.dirty = True
        return reference, platform, value, mtime, filed_right

    def write_summary(self) -> None:
        """Keep what this scan derived for the next one; best effort (a read-only cache is scanned
        the slow way every time)."""
        if not self.use_summary or not (self.dirty or self.new.records.keys() != self.old.records.keys()):
            return
        self.new.sizes = {d: n for d, n in self._sizes.items() if type(n) is int}
        data = json.dumps(self.new.to_json(self.started_ns), separators=(",", ":")).encode()
        with contextlib.suppress(OSError, CacheError):
            atomic_write_bytes(Path(self.root) / SUMMARY_FILE, data)


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _image_blobs(scan: _Scan, manifest_digest: str) -> tuple[list[str], str | None, list[str]]:
    """(blobs, image platform, problems) of a stored image, read from its manifest and config."""
    from ..images.manifest import ManifestError, image_platform

    try:
        raw = scan.blob(manifest_digest)
    except FileNotFoundError:
        return [manifest_digest], None, [f"manifest {manifest_digest} is not in the blob store"]
    except (OSError, CacheError) as e:
        return [manifest_digest], None, [f"manifest {manifest_digest}: {e}"]
    try:
        is_index, children, config_digest = _references(raw)
    except ManifestError as e:
        return [manifest_digest], None, [f"manifest {manifest_digest} is unreadable: {e}"]
    if is_index or config_digest is None:
        return [manifest_digest, *children], None, []
    plat = None
    try:
        config = json.loads(scan.blob(config_digest))
        if isinstance(config, dict):
            plat = str(image_platform(config))
    except (OSError, ValueError, CacheError):
        pass
    return list(dict.fromkeys([manifest_digest, *children])), plat, []


def _layout_blobs(blobs_dir: str) -> list[str] | None:
    """The blobs an OCI layout holds (None: no such dir)."""
    try:
        names = os.listdir(blobs_dir)
    except OSError:
        return None
    return sorted("sha256:" + n for n in names if len(n) == 64 and _HEX64.match(n))


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
        record_file=str(record),
        digest=None,
        fingerprint=None,
        snapshot_file=None,
        metadata_file=None,
        image_platform=None,
        blobs=(),
        size=0,
        missing=(),
        created=_mtime(record),
        last_used=None,
        problems=(str(error),),
    )


def _read_record(scan: _Scan, record: str, field: str) -> tuple[str, Any, Any, list[str], float]:
    """A record's reference and platform, its ``field``, whether it is filed right, and when it was
    written.

    Raises ``CacheError`` when it cannot be read (the caller lists it as unreadable)."""
    reference, platform, value, mtime, filed_right = scan.record(record, field)
    problems: list[str] = []
    if not filed_right:
        problems.append(f"{record} is filed under the wrong key")
    return reference, platform, value, problems, mtime


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def _sidecar(scan: _Scan, kind: str, fingerprint: str, snapshot: str, meta_path: str) -> list[Any]:
    """[manifest digest, image platform, index digest, the blobs of a layout (None: no layout dir),
    problems] of a snapshot, from its sidecar and dir (or from the summary, while the sidecar is
    the same file)."""
    meta_key: list[int] | None = None
    if scan.use_summary:
        with contextlib.suppress(OSError):
            st = os.stat(meta_path)
            if st.st_mtime_ns < scan.started_ns - _RACY_NS:  # else it may change unseen: not kept
                meta_key = _stat_key(st)
    known = scan.old.snapshots.get(fingerprint) if meta_key is not None else None
    if (
        isinstance(known, list)
        and len(known) == 6
        and known[0] == meta_key
        and scan.old.written_ns > 0
        and (kind != "oci-layout" or isinstance(known[4], list))
    ):
        scan.new.snapshots[fingerprint] = known
        return known[1:]
    problems: list[str] = []
    meta: dict[str, Any] = {}
    try:
        meta = _load_record(meta_path)[0]
    except CacheError as e:
        problems.append(str(e))
    digest = meta.get("manifest_digest")
    extra = meta.get("extra")
    index = extra.get("index_digest") if isinstance(extra, dict) else None
    listed = _layout_blobs(f"{snapshot}/blobs/sha256") if kind == "oci-layout" else None
    out = [
        digest if isinstance(digest, str) else None,
        _platform_of(meta),
        index if isinstance(index, str) and is_digest(index) else None,
        listed,
        problems,
    ]
    if meta_key is not None and not problems and (listed is not None or kind != "oci-layout"):
        scan.new.snapshots[fingerprint] = [meta_key, *out]
        scan.dirty = True
    return out


def _snapshot_entry(scan: _Scan, kind: str, record: str) -> tuple[CacheEntry, str | None]:
    """The entry of one refs record, and the index digest its sidecar names (an image pulled through
    an index keeps that index, which its image entry then references too)."""
    key = _stem(record)
    try:
        reference, platform, fingerprint, problems, created = _read_record(scan, record, "fingerprint")
    except CacheError as e:
        return _unreadable(kind, Path(record), e), None
    if not isinstance(fingerprint, str) or not is_digest(fingerprint):
        problems.append(f"{record} names no valid fingerprint")
        fingerprint = None
    snapshot = meta_path = digest = plat = index = listed = None
    if fingerprint is not None:
        snapshot = scan.snapshot_name(fingerprint)
        meta_path = snapshot + META_JSON_POSTFIX
        digest, plat, index, listed, found = _sidecar(scan, kind, fingerprint, snapshot, meta_path)
        problems.extend(found)
        if (listed is None or scan.use_summary) and not scan.snapshot_exists(snapshot):
            problems.append(f"snapshot {snapshot} is missing")
            listed = None
    layout_dir = f"{snapshot}/blobs/sha256" if snapshot is not None and kind == "oci-layout" else None
    blobs = (listed or []) if kind == "oci-layout" else ([fingerprint] if fingerprint else [])
    total, missing = _total_size(scan, blobs, layout_dir, snapshot)
    entry = CacheEntry(
        reference=reference,
        platform=platform if isinstance(platform, str) else None,
        kind=kind,
        key=key,
        record_file=record,
        digest=digest,
        fingerprint=fingerprint,
        snapshot_file=snapshot,
        metadata_file=meta_path,
        image_platform=plat,
        blobs=tuple(blobs),
        size=total,
        missing=tuple(missing),
        created=created,
        last_used=scan.last_used(kind, key),
        problems=tuple(problems),
    )
    return entry, index


def _total_size(
    scan: _Scan, blobs: Sequence[str], layout_dir: str | None = None, snapshot: str | None = None
) -> tuple[int, list[str]]:
    """(bytes of ``blobs``, those found nowhere). A blob the store lacks is looked for in the
    layout dir, or is the snapshot file itself. Sizes the scan already knows (nearly all, from the
    summary) are summed here without a call each: ``cache ls`` of 1,000 images adds 20,000."""
    known = scan._sizes
    sizes = list(map(known.get, blobs))
    if None not in sizes:  # every size known (a blob the scan found missing is known as None)
        return sum(sizes), []
    total, missing = 0, []
    for d in blobs:
        size = known.get(d, -1)
        if size is None or size == -1:
            fallback = f"{layout_dir}/{d[7:]}" if layout_dir is not None else snapshot
            size = scan.size(d, fallback)
            if size is None:
                missing.append(d)
                continue
        total += size
    return total, missing


def _stored_image(scan: _Scan, digest: str) -> tuple[list[str], str | None, list[str]]:
    """``_image_blobs``, remembered by manifest digest once the manifest could be read."""
    known = scan.old.images.get(digest) if scan.holds(digest) else None
    if isinstance(known, list) and len(known) == 2 and isinstance(known[0], list):
        scan.new.images[digest] = known
        return list(known[0]), known[1], []
    blobs, plat, problems = _image_blobs(scan, digest)
    if scan.use_summary and not problems:
        scan.new.images[digest] = [blobs, plat]
        scan.dirty = True
    return blobs, plat, problems


def _image_entry(
    scan: _Scan, record: str, index_digests: Sequence[str], sibling_use: float | None
) -> CacheEntry:
    key = _stem(record)
    try:
        reference, platform, digest, problems, created = _read_record(scan, record, "manifest_digest")
    except CacheError as e:
        return _unreadable(IMAGE_KIND, Path(record), e)
    blobs: list[str] = []
    plat = None
    if isinstance(digest, str) and is_digest(digest):
        blobs, plat, found = _stored_image(scan, digest)
        problems.extend(found)
        blobs.extend(d for d in index_digests if d not in blobs and scan.size(d) is not None)
    else:
        problems.append(f"{record} names no valid manifest digest")
        digest = None
    total, missing = _total_size(scan, blobs)
    last_used = scan.last_used(IMAGE_KIND, key)
    if sibling_use is not None:
        last_used = max(last_used or 0.0, sibling_use)
    return CacheEntry(
        reference=reference,
        platform=platform if isinstance(platform, str) else None,
        kind=IMAGE_KIND,
        key=key,
        record_file=record,
        digest=digest,
        fingerprint=None,
        snapshot_file=None,
        metadata_file=None,
        image_platform=plat,
        blobs=tuple(blobs),
        size=total,
        missing=tuple(missing),
        created=created,
        last_used=last_used,
        problems=tuple(problems),
    )


def scan_entries(
    cache: ImageCache | CacheDirs, *, summary: bool = True, keep_summary: bool = False
) -> list[CacheEntry]:
    """Every entry of the cache, sorted by reference, platform and kind. Reads; changes nothing
    unless ``keep_summary``.

    An image entry counts as used whenever a snapshot made from it is: its
    last use is the latest of its own and its siblings'. What the summary
    (``SUMMARY_FILE``) vouches for is taken from it; ``keep_summary`` writes
    back what this scan derived anew, so the next one reads only what changed
    (``cache ls`` and real removals do; a dry run writes nothing at all).
    ``summary=False`` reads every record, sidecar and manifest (``cache
    verify`` does: it must check the real thing).
    """
    scan = _Scan(cache, summary=summary)
    refs = str(cache.refs_dir)
    listing = [(kind, _record_names(f"{refs}/{kind}")) for kind in SNAPSHOT_KINDS]
    tags = _record_names(str(cache.tags_dir))
    scan.list_after_records()
    snaps: list[CacheEntry] = []
    index_digests: dict[str, list[str]] = {}
    latest: dict[str, float] = {}
    for kind, records in listing:
        for record in records:
            entry, index = _snapshot_entry(scan, kind, record)
            snaps.append(entry)
            if index is not None:
                index_digests.setdefault(entry.key, []).append(index)
            if entry.last_used is not None:
                latest[entry.key] = max(latest.get(entry.key, 0.0), entry.last_used)
    images = []
    for record in tags:
        key = _stem(record)
        images.append(_image_entry(scan, record, index_digests.get(key, []), latest.get(key)))
    if keep_summary:
        scan.write_summary()
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
    from ..references import parse_reference  # only to select: ``cache ls`` does without it

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

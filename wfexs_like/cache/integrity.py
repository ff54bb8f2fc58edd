"""Finding and healing damaged blobs: the library side of ``cache verify``.

**Cheap by default, thorough on request.** Without ``full`` a blob is
re-hashed only when it no longer looks exactly as when it was last hashed:
same inode, size, mtime *and* ctime (``BlobStore.unchanged``). Bytes edited
in place with the mtime put back (``touch -r``) change the ctime, which no
user tool can restore, so this catches them; what it cannot catch is the
disk flipping bits under an unchanged inode, which is what ``full`` (every
blob re-hashed, on a small thread pool: ``hashlib`` releases the GIL) is for.
A blob hard-linked since it was last hashed (a new snapshot, a stage) has a
new ctime too and is re-hashed once, then recorded again.

**A bad blob is moved aside at once** (``corrupt/``), as the store does
whenever it finds one, so nothing serves it while the report is read. Every
bad blob is named with the images (references) whose entries need it.

**Repair** re-fetches, through the registry, the images whose entries need
a bad or missing blob (by their pinned manifest digest: exactly the same
bytes), re-links the cached OCI layouts to the fresh blobs, and removes the
entries that still cannot work: all of them ``offline``, online those that
no registry can restore (a SIF built here: the next materialize rebuilds it
from the cached layers). Staged copies in workflow dirs are never touched:
the next materialize re-stages them, and deploy refuses them meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import progress
from ..digests import CHUNK, normalize_fingerprint, split_digest
from ..errors import CacheError, ContainerFactoryException, IntegrityError
from ..images.manifest import (
    MANIFEST_TYPES,
    OCI_INDEX,
    Index,
    Manifest,
    ManifestError,
    parse_manifest_or_index,
)
from ..images.regular import SMALL_LIMIT
from ..images.staging import link_or_copy
from ..references import parse_reference
from .inspection import still_staged
from .inventory import CacheEntry, scan_entries
from .lifecycle import remove_entries
from .names import IMAGE_KIND
from .snapshots import ImageCache, read_json

if TYPE_CHECKING:
    from ..images.blobstore import BlobStore
    from ..registry.client import RegistryClient

_LABEL = "cache verify"


@dataclass(frozen=True)
class BadBlob:
    """A blob whose bytes are not what its name says (or that entries need and nobody has)."""

    digest: str
    problem: str
    size: int | None
    #: The entries that need it, as (reference, kind).
    breaks: tuple[tuple[str, str], ...]
    #: Stage dir copies of those entries still there (they share the bad bytes until re-staged).
    staged: tuple[Path, ...] = ()
    #: ``re-fetched``, ``removed``, or None (still bad).
    action: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "problem": self.problem,
            "size": self.size,
            "breaks": [{"reference": r, "kind": k} for r, k in self.breaks],
            "staged": [str(p) for p in self.staged],
            "action": self.action,
        }


@dataclass(frozen=True)
class BrokenEntry:
    entry: CacheEntry
    problems: tuple[str, ...]
    #: ``repaired``, ``removed``, or None (still broken; ``reason`` says why).
    action: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        e = self.entry
        return {
            "reference": e.reference,
            "platform": e.image_platform,
            "kind": e.kind,
            "digest": e.digest,
            "problems": list(self.problems),
            "action": self.action,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class VerifyReport:
    full: bool
    blobs_checked: int
    blobs_hashed: int
    bytes_hashed: int
    bad_blobs: tuple[BadBlob, ...]
    broken: tuple[BrokenEntry, ...]

    @property
    def ok(self) -> bool:
        """No problem remains (none found, or every one repaired or removed)."""
        return all(b.action for b in self.bad_blobs) and all(b.action for b in self.broken)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "full": self.full,
            "blobs_checked": self.blobs_checked,
            "blobs_hashed": self.blobs_hashed,
            "bytes_hashed": self.bytes_hashed,
            "bad_blobs": [b.to_json() for b in self.bad_blobs],
            "broken": [b.to_json() for b in self.broken],
        }


# -- hashing ---------------------------------------------------------------------------------------------
class _Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._lock = threading.Lock()
        self.reporter = progress.current()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            done = self.done
        self.reporter.advance(_LABEL, "blobs", done, self.total)


def _hash_file(path: Path, on_bytes: Callable[[int], None]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            progress.check_cancelled()
            h.update(chunk)
            on_bytes(len(chunk))
    return "sha256:" + h.hexdigest()


def _hash_all(paths: dict[str, Path], jobs: int) -> dict[str, str | None]:
    """digest -> actual digest of its file (None: it vanished meanwhile), hashed ``jobs`` at a time."""
    sizes = {}
    for d, p in paths.items():
        with contextlib.suppress(OSError):
            sizes[d] = p.stat().st_size
    meter = _Progress(sum(sizes.values()))
    out: dict[str, str | None] = {}
    if not paths:
        return out
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="wfexs-verify")
    try:
        futs = {pool.submit(_hash_file, p, meter.add): d for d, p in paths.items()}
        for fut in as_completed(futs):
            try:
                out[futs[fut]] = fut.result()
            except FileNotFoundError:
                out[futs[fut]] = None
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return out


def default_jobs() -> int:
    """Hashing is disk- and CPU-bound: one thread per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


# -- checking entries -------------------------------------------------------------------------------------
def _copies_problems(cache: ImageCache, entry: CacheEntry) -> list[str]:
    """``full``: re-hash snapshot files that are copies of store blobs rather than links to them."""
    files: list[tuple[str, Path]] = []
    if entry.kind == "oci-layout" and entry.snapshot is not None:
        files = [(d, entry.snapshot / "blobs" / "sha256" / split_digest(d)[1]) for d in entry.blobs]
    elif entry.fingerprint and entry.snapshot is not None:
        files = [(entry.fingerprint, entry.snapshot)]
    problems = []
    for d, f in files:
        try:
            st, sst = f.stat(), cache.store.path(d).stat()
            if (st.st_dev, st.st_ino) == (sst.st_dev, sst.st_ino):
                continue  # the store's blob itself: hashed already
        except OSError:
            pass
        try:
            actual = _hash_file(f, lambda n: None)
        except OSError:
            continue
        if actual != d:
            problems.append(f"{f}: content is {actual}, not {d}")
    return problems


def _entry_problems(
    cache: ImageCache,
    entry: CacheEntry,
    bad: Mapping[str, str],
    full: bool,
    good: Mapping[str, tuple[int, int]] | None = None,
) -> list[str]:
    """What is wrong with one entry. ``bad``: digest -> ``corrupt`` or ``missing``; ``good``: the
    store blobs found intact by this check, with their (device, inode), which lets a snapshot
    made of links to them pass without reading it again (``_links_intact``)."""
    problems = list(entry.problems)
    if entry.kind == IMAGE_KIND:
        for d in entry.blobs:
            if d in bad:
                problems.append(f"blob {d} is {bad[d]}")
            elif not cache.store.has(d):
                problems.append(f"blob {d} is missing from the store")
        return problems
    if entry.snapshot is None or entry.fingerprint is None:
        return problems or [f"{entry.record} names no snapshot"]
    if good is None or not _links_intact(entry, good):
        problems.extend(cache.verify_snapshot(entry.snapshot, entry.fingerprint, full=False))
    if full:
        problems.extend(_copies_problems(cache, entry))
    if entry.metadata_path is not None:
        try:
            sig = read_json(entry.metadata_path).get("image_signature")
            if not isinstance(sig, str) or normalize_fingerprint(sig) != entry.fingerprint:
                problems.append(f"sidecar {entry.metadata_path} names another snapshot ({sig})")
        except (CacheError, ContainerFactoryException) as e:
            problems.append(str(e))
    return list(dict.fromkeys(problems))


def _regular(path: str, good: Mapping[str, tuple[int, int]], digest: str, size: int | None) -> bool:
    """``path`` is a regular file (not a link out of the snapshot) that is the store's intact blob
    ``digest`` itself (same inode), of the ``size`` its descriptor says."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and good.get(digest) == (st.st_dev, st.st_ino)
        and (size is None or st.st_size == size)
    )


def _links_intact(entry: CacheEntry, good: Mapping[str, tuple[int, int]]) -> bool:
    """The cheap check's shortcut for a snapshot whose files are hard links of intact store blobs.

    Such a file holds exactly the bytes just found right in the store, so
    there is nothing to hash; what is left is that the layout's index is the
    fingerprint and every blob it leads to is such a link. Anything else
    (a copy, a symlink, a nested index, an odd media type) answers False and
    gets ``verify_snapshot``'s full treatment, which also says what is wrong.
    """
    snapshot, fingerprint = entry.snapshot_file, entry.fingerprint
    if snapshot is None or fingerprint is None:
        return False
    if entry.kind != "oci-layout":
        return _regular(snapshot, good, fingerprint, None)
    try:
        for d in (snapshot, f"{snapshot}/blobs", f"{snapshot}/blobs/sha256"):
            if not stat.S_ISDIR(os.lstat(d).st_mode):
                return False
        marker = f"{snapshot}/oci-layout"
        if not stat.S_ISREG(os.lstat(marker).st_mode):
            return False
        with open(marker, "rb") as fh:
            layout = json.loads(fh.read(4096))
        index_file = f"{snapshot}/index.json"
        if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
            return False
        if not stat.S_ISREG(os.lstat(index_file).st_mode):
            return False
        with open(index_file, "rb") as fh:
            raw = fh.read(SMALL_LIMIT + 1)
        if len(raw) > SMALL_LIMIT or "sha256:" + hashlib.sha256(raw).hexdigest() != fingerprint:
            return False
        index = parse_manifest_or_index(raw, OCI_INDEX)
        if not isinstance(index, Index) or not index.manifests:
            return False
        blobs = f"{snapshot}/blobs/sha256/"
        for desc in index.manifests:
            path = blobs + split_digest(desc.digest)[1]
            if desc.media_type not in MANIFEST_TYPES or not _regular(path, good, desc.digest, desc.size):
                return False
            with open(path, "rb") as fh:
                manifest = parse_manifest_or_index(fh.read(SMALL_LIMIT + 1), desc.media_type)
            if not isinstance(manifest, Manifest) or manifest.media_type not in MANIFEST_TYPES:
                return False
            for blob in (manifest.config, *manifest.layers):
                if not _regular(blobs + split_digest(blob.digest)[1], good, blob.digest, blob.size):
                    return False
    except (OSError, ValueError, ManifestError, IntegrityError):
        return False
    return True


def _unchanged(store: BlobStore, digests: Sequence[str]) -> dict[str, tuple[int, int]]:
    """The blobs of ``digests`` that pass the store's strict check (any ctime move fails it: what
    verify is asked for), with their (device, inode). The others are hashed."""
    out: dict[str, tuple[int, int]] = {}
    for d in digests:
        st = store.unchanged_stat(d, strict=True)
        if st is not None:
            out[d] = (st.st_dev, st.st_ino)
    return out


def _missing(cache: ImageCache, digest: str) -> tuple[str, int | None]:
    """Why an entry's blob is not in the store: moved aside as corrupt by an earlier check, or lost."""
    corrupt = cache.root / "corrupt" / split_digest(digest)[1]
    try:
        size = corrupt.stat().st_size
    except OSError:
        return "missing: an entry needs it and the store does not have it", None
    return f"corrupt: moved aside to {corrupt} by an earlier check", size


def _staged_copies(cache: ImageCache, entries: Iterable[CacheEntry]) -> tuple[Path, ...]:
    out = []
    for e in entries:
        out.extend(c.path for c in cache.usage.staged_copies(e.kind, e.key) if still_staged(c, e.fingerprint))
    return tuple(dict.fromkeys(out))


# -- repair ---------------------------------------------------------------------------------------------
def _refetch(
    cache: ImageCache, broken: Sequence[BrokenEntry], client: RegistryClient
) -> dict[tuple[str, str | None], str]:
    """Pull again, by pinned digest, every image a broken entry is a form of; group -> error (failures)."""
    wanted: dict[tuple[str, str | None], str] = {}
    needs: dict[tuple[str, str | None], set[str]] = {}
    for b in broken:
        needs.setdefault(b.entry.group, set()).update(b.entry.blobs)
        if b.entry.digest and (b.entry.kind == IMAGE_KIND or b.entry.group not in wanted):
            wanted[b.entry.group] = b.entry.digest
    errors: dict[tuple[str, str | None], str] = {}
    for group, digest in wanted.items():
        progress.check_cancelled()
        if all(cache.store.has(d) for d in needs[group]):
            continue  # restored by an earlier pull of an image sharing the blob: no network needed
        reference = group[0]
        try:
            ref = parse_reference(reference)
        except (ContainerFactoryException, ValueError) as e:
            errors[group] = str(e)
            continue
        if not ref.is_registry or ref.scheme not in ("docker", "oras"):
            continue  # not a registry image: nothing to fetch, the entry is removed if still broken
        progress.current().step(_LABEL, f"re-fetching {reference}@{digest}")
        try:
            client.pull(ref.registry or "docker.io", ref.repository, digest, cache.store)
        except (ContainerFactoryException, OSError) as e:
            errors[group] = str(e)
    return errors


def _relink_layout(cache: ImageCache, entry: CacheEntry) -> None:
    """Point an OCI layout's damaged or missing blob files at the (re-fetched) store blobs."""
    if entry.kind != "oci-layout" or entry.snapshot is None:
        return
    blobs_dir = entry.snapshot / "blobs" / "sha256"
    for d in entry.blobs:
        target = blobs_dir / split_digest(d)[1]
        if not cache.store.has(d):
            continue
        try:
            st, sst = target.stat(), cache.store.path(d).stat()
            if (st.st_dev, st.st_ino) == (sst.st_dev, sst.st_ino):
                continue
        except FileNotFoundError:
            pass
        link_or_copy(cache.store.path(d), target)


def verify_cache(
    cache: ImageCache,
    *,
    full: bool = False,
    repair: bool = False,
    offline: bool = False,
    jobs: int | None = None,
    client: RegistryClient | None = None,
    insecure_registries: Sequence[str] = (),
) -> VerifyReport:
    """Check every blob and entry of the cache; with ``repair``, heal what can be healed.

    See the module docstring for what the cheap check trusts, what ``full``
    adds, and what ``repair`` does online and ``offline``. ``client`` (a
    ``RegistryClient``) is made on demand from ``insecure_registries``.
    """
    progress.current().begin(_LABEL)
    store = cache.store
    entries = scan_entries(cache, summary=False)
    try:  # ``iter_digests`` on plain names: a Path per blob costs more than the listing
        digests = ["sha256:" + n for n in os.listdir(store.blobs_dir) if len(n) == 64]
    except FileNotFoundError:
        digests = []
    good = {} if full else _unchanged(store, digests)
    to_hash = [d for d in digests if d not in good]
    progress.current().step(_LABEL, f"hashing {len(to_hash)} of {len(digests)} blobs")
    results = _hash_all({d: store.path(d) for d in to_hash}, jobs or default_jobs())
    bad: dict[str, tuple[str, int | None]] = {}
    hashed_bytes = 0
    for d, actual in results.items():
        if actual is None:
            continue
        size = None
        with contextlib.suppress(OSError):
            st = os.stat(store.path(d))
            size = st.st_size
            if actual == d:
                good[d] = (st.st_dev, st.st_ino)
        hashed_bytes += size or 0
        if actual == d:
            store.mark_verified(d)
        else:
            bad[d] = (f"content is {actual}, not what its name says", size)
            store.quarantine(d)
    for e in entries:  # needed, but in no store (and, for layouts, nowhere else either)
        for d in e.missing:
            bad.setdefault(d, _missing(cache, d))

    why = {d: problem.split(":", 1)[0] for d, (problem, _size) in bad.items()}
    why = {d: w if w == "missing" else "corrupt" for d, w in why.items()}
    broken = []
    for e in entries:
        problems = _entry_problems(cache, e, why, full, None if full else good)
        if problems:
            broken.append(BrokenEntry(e, tuple(problems)))

    if repair and (bad or broken):
        broken = _repair(cache, broken, offline=offline, client=client, insecure=insecure_registries)

    bad_blobs = []
    for d, (problem, size) in sorted(bad.items()):
        needing = [b for b in broken if d in b.entry.blobs]
        action = None
        if repair:
            if store.has(d):
                action = "re-fetched"
            elif all(b.action == "removed" for b in needing):
                action = "removed"
            if action is not None:
                with contextlib.suppress(FileNotFoundError):
                    (cache.root / "corrupt" / split_digest(d)[1]).unlink()
        breaks = tuple(sorted({(r, e.kind) for e in entries if d in e.blobs for r in [e.reference]}))
        staged = _staged_copies(cache, (e for e in entries if d in e.blobs))
        bad_blobs.append(BadBlob(d, problem, size, breaks, staged, action))
    return VerifyReport(
        full=full,
        blobs_checked=len(digests),
        blobs_hashed=len(results),
        bytes_hashed=hashed_bytes,
        bad_blobs=tuple(bad_blobs),
        broken=tuple(broken),
    )


def _repair(
    cache: ImageCache,
    broken: list[BrokenEntry],
    *,
    offline: bool,
    client: RegistryClient | None,
    insecure: Sequence[str],
) -> list[BrokenEntry]:
    errors: dict[tuple[str, str | None], str] = {}
    if not offline and broken:
        own = client is None
        if client is None:
            from ..registry.client import RegistryClient

            client = RegistryClient(insecure_registries=insecure)
        try:
            errors = _refetch(cache, broken, client)
        finally:
            if own:
                client.close()
        for b in broken:
            _relink_layout(cache, b.entry)
    fresh = {e.record_file: e for e in scan_entries(cache, summary=False)} if not offline else {}
    out: list[BrokenEntry] = []
    to_remove: list[BrokenEntry] = []
    for b in broken:
        now = fresh.get(b.entry.record_file)
        if now is not None and not _entry_problems(cache, now, {}, False):
            out.append(BrokenEntry(b.entry, b.problems, "repaired"))
        elif b.entry.group in errors:
            out.append(BrokenEntry(b.entry, b.problems, None, f"re-fetch failed: {errors[b.entry.group]}"))
        else:
            to_remove.append(b)
    if to_remove:
        report = remove_entries(cache, [b.entry for b in to_remove], keep_blobs=True)
        removed = {e.record_file for e in report.removed}
        for b in to_remove:
            if b.entry.record_file in removed:
                out.append(BrokenEntry(b.entry, b.problems, "removed"))
            else:
                busy = "in use by a running process; try again when it ends"
                out.append(BrokenEntry(b.entry, b.problems, None, busy))
    order = {id(b.entry): i for i, b in enumerate(broken)}
    return sorted(out, key=lambda b: order[id(b.entry)])

"""The typed cache: what a reference resolved to, and which snapshot of it is cached.

Layout under the cache dir (shared by every engine and every workflow)::

    blobs/sha256/<hex>               every layer, config, manifest, SIF and archive once
    tags/<key>.json                  reference + platform -> manifest digest (engine-agnostic)
    refs/<kind>/<key>.json           reference + platform -> snapshot fingerprint of that kind
    snapshots/sha256-<hex>           one snapshot per fingerprint: an OCI layout dir (blobs
                                     hard-linked from the store) or a file (a link of its blob)
    snapshots/sha256-<hex>_meta.json its metadata sidecar
    usage/                           last use, stage dirs and in-use holds of each entry (``usage.py``)

**Keys never collide.** ``<key>`` is the sha256 of the canonical reference
and platform, and every record repeats the reference it answers for; a hit
counts only when that equals what was asked. Flattening names (``ns/img``
and ``ns-img`` both become ``ns-img``) can therefore never hand out another
image, online or offline.

**Resolution is shared by every kind.** A Docker materialize records
``reference -> manifest digest`` in ``tags/``; a later SIF materialize of the
same reference, offline, finds the manifest and its layers in the blob store
and builds the SIF from them: no network, no second copy of the layers.

**Publishing is a rename under a lock**, as everywhere here: two processes
putting the same entry both succeed and leave one consistent entry.

**A process holds what it touches.** ``resolved``, ``record_resolution``,
``lookup``, ``put`` and ``stage`` take a shared hold on the entry's
reference+platform (``usage.Usage.acquire_shared``) *before* reading or
writing it and keep it until ``release_holds`` or the end of the process, so
``cache prune``/``rm`` (which need the hold exclusively) skip whatever a live
materialize looked up, built or staged, including between its lookup and
its stage. ``stage`` also records the entry's last use and the stage dir.

**The strict check on every reuse.** A snapshot's blobs are the store's own
files (hard links), and ``verify_snapshot`` vouches for them with
``BlobStore.unchanged`` (size, mtime, inode *and* ctime as recorded), which
an edit whose mtime was put back with ``touch -r`` fails; ``is_trusted``
(size and mtime) only vouches for copies. A blob that fails the strict
check is hashed once: a link someone else made or removed is then recorded
again, and rotten bytes are moved to ``corrupt/`` and reported. Our own
links and unlinks change the ctime too, so ``stage`` and ``put`` re-record
it (``relinked``, one ``stat`` and a small unsynced write per blob) right
after they link, and a warm re-stage stays a ``stat`` per blob.

**Beyond this machine** (``tiered.TieredImageCache``): ``find``,
``resolved``, ``fetch_image`` and ``share`` are where library dirs and the
remote cache come in; here they answer from the local cache alone, so code
written against them works with or without tiers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..digests import is_digest, normalize_fingerprint, sha256_file, split_digest
from ..errors import CacheError, DiskFullError, IntegrityError
from ..fsutil import atomic_write_bytes, fsync_dir, random_hex, read_with_stat, reword_disk_full
from ..images.blobstore import BlobStore
from ..images.layout import trusted_by, verify_oci_layout
from ..images.manifest import Manifest, ManifestError, parse_manifest_or_index
from ..images.staging import link_layout, link_or_copy, link_tree, remove_path, sweep_temps, write_file
from ..model import META_JSON_POSTFIX, ImageMetadata
from .names import IMAGE_KIND, CacheDirs, SnapshotKind
from .paths import default_cache_dir
from .usage import StagedCopy, Usage

#: What to do when the stage dir is full (the default advice names no option).
STAGE_FULL_HINT = "free space there or choose another --stage-dir"

logger = logging.getLogger(__name__)


def fingerprint_to_name(fingerprint: str) -> str:
    algo, hexd = split_digest(fingerprint)
    return f"{algo}-{hexd}"


def write_json_atomic(path: Path, data: Any) -> None:
    """Sidecars are tiny but must never be seen half-written by a concurrent reader."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_with_stat(path)[0])
    except (OSError, ValueError) as e:
        raise CacheError(
            f"metadata file {path} is unreadable or corrupted ({e}); "
            "re-materialize the container (or run with --force) to rebuild it"
        ) from e
    if not isinstance(data, dict):
        raise CacheError(f"metadata file {path} is not a JSON object; re-materialize the container")
    return data


def _key(*parts: str | None) -> str:
    return hashlib.sha256("\0".join(p or "" for p in parts).encode("utf-8", "surrogatepass")).hexdigest()


def entry_key(reference: str, platform: str | None) -> str:
    """The file name (without suffix) every record of ``reference`` + ``platform`` is kept under."""
    return _key(reference, platform)


def _close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _metadata(reference: str, fingerprint: str, raw: Mapping[str, Any]) -> ImageMetadata:
    # Sidecars written through the reference's API may hold only some of our keys.
    defaults = {"tagged_name": reference, "manifest_digest": fingerprint, "image_id": fingerprint}
    return ImageMetadata.from_json({**defaults, **raw})


def layout_blobs(layout: Path) -> list[str]:
    """The digests of the blob files an OCI layout dir holds (one listing: what a stage linked)."""
    try:
        names = os.listdir(layout / "blobs" / "sha256")
    except OSError:
        return []
    return ["sha256:" + name for name in names if len(name) == 64]


@dataclass(frozen=True)
class CacheHit:
    """A verified cached snapshot of ``reference``."""

    reference: str
    kind: SnapshotKind
    platform: str | None
    fingerprint: str
    snapshot: Path
    metadata_path: Path
    metadata: ImageMetadata


#: Stage dirs share this many lock files (``_stage_lock``).
STAGE_LOCKS = 256


def _stage_lock(path: Path) -> str:
    """The lock that serializes stagings into ``path``: one of ``STAGE_LOCKS``, chosen by its name.

    Why not one per path: every workflow run stages into new dirs, so a
    lock file per path left one more file in ``locks/`` per image per run,
    forever (until ``cache gc``), each one a new inode to create. Two paths
    that share a lock only wait for each other's few milliseconds of links;
    nothing takes a second stage lock while holding one.
    """
    bucket = hashlib.sha256(os.fsencode(os.path.abspath(path))).digest()[0] % STAGE_LOCKS
    return f"stage-{bucket:02x}"


class ImageCache:
    """Tag resolutions, snapshots and their sidecars over one ``BlobStore``; see the module docstring."""

    def __init__(self, root: Path | None = None, *, store: BlobStore | None = None) -> None:
        """``store``: the blob store to use (a ``TieredBlobStore`` reading through the tiers);
        a plain one under ``root`` by default."""
        dirs = CacheDirs(root or default_cache_dir())
        self.root = dirs.root
        self.store = store if store is not None else BlobStore(self.root)
        self.snapshots_dir = dirs.snapshots_dir
        self.tags_dir = dirs.tags_dir
        self.refs_dir = dirs.refs_dir
        self.usage = Usage(dirs.usage_dir)
        for d in (self.snapshots_dir, self.tags_dir, self.refs_dir):
            d.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # a cache we may only read still stages
            self.usage.root.mkdir(exist_ok=True)
        self._holds: dict[str, int] = {}
        self._holds_lock = threading.Lock()
        weakref.finalize(self, _close_all, self._holds)

    # -- in use ----------------------------------------------------------------------------------
    def hold(self, reference: str, platform: str | None) -> None:
        """Mark ``reference`` + ``platform`` in use by this process (prune and rm skip it) until
        ``release_holds`` or exit. Idempotent; blocks only while a prune is removing that entry."""
        key = _key(reference, platform)
        with self._holds_lock:
            if key not in self._holds:
                try:
                    self._holds[key] = self.usage.acquire_shared(key)
                except OSError as e:  # a read-only cache: nobody can prune it from here either
                    logger.debug("cannot mark %s in use: %s", reference, e)

    def release_holds(self) -> None:
        """Let prune/rm/gc remove what this process used (a long-lived caller between two runs)."""
        with self._holds_lock:
            _close_all(self._holds)
        self.store.release_pins()

    # -- resolution: reference -> manifest digest, for every kind ------------------------
    def _tag_file(self, reference: str, platform: str | None) -> Path:
        return self.tags_dir / f"{_key(reference, platform)}.json"

    def record_resolution(
        self, reference: str, platform: str | None, manifest_digest: str, **extra: Any
    ) -> None:
        """Remember what ``reference`` named when it was last fetched (offline runs resolve with it)."""
        split_digest(manifest_digest)
        self.hold(reference, platform)
        self.usage.touch(IMAGE_KIND, _key(reference, platform))
        data = {"reference": reference, "platform": platform, "manifest_digest": manifest_digest, **extra}
        write_json_atomic(self._tag_file(reference, platform), data)

    def resolved(
        self, reference: str, platform: str | None, *, authoritative_only: bool = False
    ) -> str | None:
        """The manifest digest ``reference`` resolved to, if recorded *and* its manifest is stored.

        ``authoritative_only``: only a source that says what a tag *means*
        may answer (a site library); the local cache only remembers what a
        registry said once, so it does not.
        """
        if authoritative_only:
            return None
        self.hold(reference, platform)
        path = self._tag_file(reference, platform)
        try:
            data = read_json(path)
        except CacheError:
            return None
        if data.get("reference") != reference or data.get("platform") != platform:
            return None
        digest = data.get("manifest_digest")
        if not isinstance(digest, str) or not is_digest(digest) or not self.store.has(digest):
            return None
        self.usage.touch(IMAGE_KIND, _key(reference, platform))
        return digest

    # -- snapshots ---------------------------------------------------------------------------
    def _ref_file(self, reference: str, kind: SnapshotKind, platform: str | None) -> Path:
        return self.refs_dir / kind / f"{_key(reference, platform)}.json"

    def snapshot_path(self, fingerprint: str) -> Path:
        return self.snapshots_dir / fingerprint_to_name(fingerprint)

    def metadata_path(self, fingerprint: str) -> Path:
        return self.snapshots_dir / (fingerprint_to_name(fingerprint) + META_JSON_POSTFIX)

    def entry(self, reference: str, kind: SnapshotKind, platform: str | None = None) -> str | None:
        """The fingerprint recorded for ``reference`` (unverified), or None."""
        try:
            rec = read_json(self._ref_file(reference, kind, platform))
        except CacheError:
            return None
        fingerprint = rec.get("fingerprint")
        if rec.get("reference") != reference or rec.get("platform") != platform:
            return None
        return fingerprint if isinstance(fingerprint, str) and is_digest(fingerprint) else None

    def lookup(
        self, reference: str, kind: SnapshotKind, platform: str | None = None, *, full: bool = False
    ) -> CacheHit | None:
        """The cached snapshot of ``reference`` of this kind, verified; None when absent or damaged.

        Only a record whose reference (and platform) equals the one asked
        for counts. Verification costs a ``stat`` per blob unless ``full``.
        """
        self.hold(reference, platform)
        fingerprint = self.entry(reference, kind, platform)
        if fingerprint is None:
            return None
        snapshot, meta_path = self.snapshot_path(fingerprint), self.metadata_path(fingerprint)
        try:
            meta = _metadata(reference, fingerprint, read_json(meta_path))
        except (CacheError, KeyError, TypeError, ValueError) as e:
            logger.warning("cached metadata of %s is unusable: %s", reference, e)
            return None
        if normalize_fingerprint(meta.image_signature) != fingerprint:
            return None
        problems = self.verify_snapshot(snapshot, fingerprint, full=full)
        if problems:
            logger.warning("cached snapshot of %s is damaged: %s", reference, "; ".join(problems))
            return None
        return CacheHit(reference, kind, platform, fingerprint, snapshot, meta_path, meta)

    def find(
        self,
        reference: str,
        kind: SnapshotKind,
        platform: str | None = None,
        *,
        tag: str | None = None,
        manifest: str | None = None,
        authoritative_only: bool = False,
    ) -> CacheHit | None:
        """``lookup``, where the tiers may answer too (see ``tiered``); ``manifest``: only a
        snapshot of that image; ``tag``: the tag as the workflow wrote it (library file names)."""
        if authoritative_only:
            return None
        hit = self.lookup(reference, kind, platform)
        if hit is None or (manifest is not None and hit.metadata.manifest_digest != manifest):
            return None
        return hit

    def fetch_image(self, manifest_digest: str) -> None:
        """Make sure the image's manifest, config and layers are all in the store (reading through the
        tiers when there are any); ``CacheError`` naming the first blob that is not."""
        missing = self._missing_blob(manifest_digest, manifest_digest, "manifest")
        if missing:
            raise CacheError(missing)
        try:
            manifest = parse_manifest_or_index(self.store.path(manifest_digest).read_bytes())
        except ManifestError as e:
            raise CacheError(f"manifest blob {manifest_digest} is unreadable: {e}") from e
        if not isinstance(manifest, Manifest):
            raise CacheError(f"{manifest_digest} is an image index, not one image; choose a --platform")
        wanted = [(manifest.config.digest, "config"), *((d.digest, "layer") for d in manifest.layers)]
        from concurrent.futures import ThreadPoolExecutor  # here: only a tier read needs threads

        with ThreadPoolExecutor(max_workers=min(8, len(wanted)), thread_name_prefix="wfexs-tier") as pool:
            problems = list(pool.map(lambda w: self._missing_blob(w[0], manifest_digest, w[1]), wanted))
        first = next((p for p in problems if p), None)
        if first:
            raise CacheError(first)

    def _missing_blob(self, digest: str, manifest_digest: str, what: str) -> str | None:
        if self.store.has(digest):
            return None
        return f"{what} blob {digest} of image {manifest_digest} is not in the cache at {self.root}"

    def share(self, hit: CacheHit) -> None:
        """Publish a materialized entry where other machines look (no-op without a write tier)."""

    def elsewhere(self) -> str:
        """Where else this cache looks (library dirs, the remote cache), for messages; empty: nowhere."""
        return ""

    def served_by(self, digests: Sequence[str]) -> dict[str, Any]:
        """Which tiers served ``digests`` to this process (``{}`` without tiers): for sidecars."""
        return {}

    def put(
        self,
        reference: str,
        kind: SnapshotKind,
        snapshot: Path,
        metadata: ImageMetadata | Mapping[str, Any],
        *,
        platform: str | None = None,
        move: bool = True,
        hashed: str | None = None,
    ) -> CacheHit:
        """Publish a freshly built snapshot and point ``reference`` at it.

        The sidecar's ``image_signature`` is set to the computed fingerprint,
        so the two can never disagree. ``hashed``: a file snapshot's digest as
        its builder computed it in this process, the file having stayed in
        the builder's own work dir since; it is taken instead of hashing the
        file again (three more passes over a multi-GB SIF otherwise).
        """
        snapshot = Path(snapshot)
        self.hold(reference, platform)
        if hashed is not None and snapshot.is_dir():
            raise ValueError("hashed= is for a file snapshot; a layout's fingerprint is its index.json's")
        fingerprint = hashed or self.stored_digest(snapshot) or self.compute_fingerprint(snapshot)
        stored = self.store.path(fingerprint) == snapshot
        move = move and not stored
        meta = dict(metadata.to_json() if isinstance(metadata, ImageMetadata) else metadata)
        if (
            kind == "docker-archive"
            and isinstance(meta.get("image_signature"), str)
            and "=" in str(meta["image_signature"])
        ):
            # WfExS-style sidecars keep their own spelling of the same digest.
            if normalize_fingerprint(meta["image_signature"]) != fingerprint:
                raise IntegrityError(f"{snapshot}: the sidecar's image_signature does not match it")
        else:
            meta["image_signature"] = fingerprint
        meta.setdefault("snapshot_kind", kind)
        canonical, canonical_meta = self.snapshot_path(fingerprint), self.metadata_path(fingerprint)
        with self.store.lock(f"snapshot-{fingerprint}"):
            if canonical.exists() and not self.verify_snapshot(canonical, fingerprint):
                if move:
                    remove_path(snapshot)
            else:
                if canonical.exists() or canonical.is_symlink():
                    logger.warning("replacing damaged cached snapshot %s", canonical)
                    self.retire(canonical)
                self._publish_snapshot(snapshot, canonical, fingerprint, move, hashed=hashed is not None)
            write_json_atomic(canonical_meta, meta)
        ref_file = self._ref_file(reference, kind, platform)
        write_json_atomic(
            ref_file, {"reference": reference, "kind": kind, "platform": platform, "fingerprint": fingerprint}
        )
        # Verified above (kept) or just now (published): no need to read it all back.
        meta_obj = _metadata(reference, fingerprint, meta)
        return CacheHit(reference, kind, platform, fingerprint, canonical, canonical_meta, meta_obj)

    def forget(self, reference: str, kind: SnapshotKind, platform: str | None = None) -> None:
        """Drop this reference's entry (its snapshot stays until gc: other references may share it)."""
        with contextlib.suppress(FileNotFoundError):
            self._ref_file(reference, kind, platform).unlink()

    def evict(self, reference: str, kind: SnapshotKind, platform: str | None = None) -> None:
        """Drop ``reference``'s entry of ``kind`` and, when it is damaged, the snapshot it names.

        For a snapshot built from a blob found rotten (and already moved to
        ``corrupt/`` by the store): the next materialize builds it again from
        what it fetches instead of finding the damaged one. A snapshot that
        still verifies (a SIF, made before the blob rotted) is kept.
        """
        fingerprint = self.entry(reference, kind, platform)
        self.forget(reference, kind, platform)
        if fingerprint is None:
            return
        canonical = self.snapshot_path(fingerprint)
        with self.store.lock(f"snapshot-{fingerprint}"):
            if os.path.lexists(canonical) and self.verify_snapshot(canonical, fingerprint):
                logger.warning(
                    "removing cached snapshot %s of %s: it holds rotten bytes", canonical, reference
                )
                self.retire(canonical)

    # -- staging ------------------------------------------------------------------------------
    def stage(self, hit: CacheHit, path: Path, meta_path: Path, *, force: bool = False) -> tuple[Path, Path]:
        """Put the snapshot and its sidecar at ``path``/``meta_path``: links for blobs, copies of the rest.

        A staged copy already there is kept when it is the same snapshot
        (O(1)); a stale one is replaced atomically. Only content-addressed
        blobs are shared with the cache (hard links, read-only like the
        store's); the sidecar, ``index.json`` and ``oci-layout`` are copied
        (reflinked where the filesystem can), so a workflow that writes to
        them cannot corrupt the cache (docs/staged-files.md).

        Nothing here is fsynced: a stage dir is disposable per run, a killed
        process is covered by building under temporary names and renaming,
        and what a power cut could leave torn is checked against the cache
        (``_staged_matches``, the sidecar's bytes) and re-staged on the next
        run. Records the entry's last use and this stage dir (one small write).
        """
        self.hold(hit.reference, hit.platform)
        path.parent.mkdir(parents=True, exist_ok=True)
        new_copy = False
        with self.store.lock(_stage_lock(path)):
            sweep_temps(path, meta_path)  # what a run killed while staging here left (a copy can be big)
            try:
                if force or not self._staged_matches(path, hit.fingerprint):
                    new_copy = True
                    if hit.snapshot.is_dir():
                        held = layout_blobs(hit.snapshot)
                        link_layout(hit.snapshot, path, [d[7:] for d in held], sync=False)
                        # Layers only: manifests and configs are re-hashed on every check anyway.
                        linked = list(hit.metadata.layers) or held
                    else:  # a SIF or an archive: the snapshot file is a link of its blob
                        link_or_copy(hit.snapshot, path, sync=False)
                        linked = [hit.fingerprint]
                    # Vouched for by the lookup that gave ``hit``, just before these links.
                    self.store.relinked(linked)
                meta_bytes = read_with_stat(hit.metadata_path)[0]
                try:
                    current = read_with_stat(meta_path)[0]
                except OSError:
                    current = None
                if force or current != meta_bytes:
                    write_file(meta_path, meta_bytes, mode=0o644, sync=False)
            except DiskFullError as e:
                raise reword_disk_full(e, hint=STAGE_FULL_HINT) from e
        self.usage.touch(
            hit.kind,
            _key(hit.reference, hit.platform),
            StagedCopy(path.absolute(), meta_path.absolute()),
            new_copy=new_copy,
        )
        return path, meta_path

    def _staged_matches(self, path: Path, fingerprint: str) -> bool:
        if not os.path.lexists(path):
            return False
        return not self.verify_snapshot(path, fingerprint)

    # -- fingerprints and verification ---------------------------------------------------------
    def compute_fingerprint(self, snapshot: Path) -> str:
        """A snapshot's fingerprint: of the file, or of an OCI layout's ``index.json``.

        ``index.json`` pins the manifest by digest, which pins the config and
        every layer, so its hash is the root of the whole layout: hashing a
        few hundred bytes identifies gigabytes, and ``verify_snapshot`` checks
        the rest of the chain.
        """
        if snapshot.is_dir():
            return sha256_file(snapshot / "index.json")
        return sha256_file(snapshot)

    def verify_snapshot(self, snapshot: Path, fingerprint: str, full: bool = False) -> list[str]:
        """Problems found in ``snapshot`` (empty when it is intact).

        Without ``full``, blobs that still look as when they were verified
        are not re-hashed: the store's own files by the strict check (see the
        module docstring), copies by size and mtime.
        """
        fingerprint = normalize_fingerprint(fingerprint)
        if snapshot.is_dir():
            if not (snapshot / "index.json").is_file():
                return [f"{snapshot}: missing index.json"]
            return verify_oci_layout(snapshot, self.store, full, fingerprint=fingerprint, strict=True)
        if not snapshot.is_file():
            return [f"{snapshot}: missing"]
        # path().is_file(), not has(): a trust shortcut must not fetch the blob from a tier.
        if (
            not full
            and self.store.path(fingerprint).is_file()
            and trusted_by(self.store, fingerprint, snapshot, strict=True)
        ):
            return []
        actual = sha256_file(snapshot)
        if actual != fingerprint:
            return [f"{snapshot}: content is {actual}, recorded fingerprint is {fingerprint}"]
        return []

    def stored_digest(self, path: Path) -> str | None:
        """The digest of ``path`` when it is one of the store's own blobs and still as verified:
        a SIF brought in from a tier is not hashed a second time to be cached."""
        path = Path(path)
        if path.parent != self.store.blobs_dir or len(path.name) != 64:
            return None
        digest = "sha256:" + path.name
        return digest if self.store.is_trusted(digest) else None

    def _publish_snapshot(
        self, src: Path, canonical: Path, fingerprint: str, move: bool, *, hashed: bool = False
    ) -> None:
        if src == self.store.path(fingerprint):
            # A blob the store verified (``stored_digest``): linking it is all there is to do.
            link_or_copy(src, canonical)
            fsync_dir(self.snapshots_dir)
            self.store.relinked([fingerprint])
            return
        if src.is_dir():
            same_fs = src.stat().st_dev == self.snapshots_dir.stat().st_dev
            if move and same_fs:
                os.replace(src, canonical)
            else:
                link_tree(src, canonical, force=True)
                if move:
                    shutil.rmtree(src)
        else:
            if move:
                self.store.adopt_file(src, fingerprint, hashed=hashed)
            else:
                self.store.put_file(src, fingerprint)
            link_or_copy(self.store.path(fingerprint), canonical)
        fsync_dir(self.snapshots_dir)
        if not hashed and self.compute_fingerprint(canonical) != fingerprint:
            raise IntegrityError(
                f"snapshot {canonical} changed while it was being cached; retry the operation",
                expected=fingerprint,
            )
        self.store.relinked(layout_blobs(canonical) if canonical.is_dir() else [fingerprint])

    def retire(self, path: Path) -> None:
        """Rename ``path`` out of sight in one step, then delete it (a reader never sees half of it).

        Already gone (another process retired it first) is fine."""
        if not (path.exists() or path.is_symlink()):
            return
        graveyard = self.store.tmp_dir / f"retired-{random_hex(16)}"
        try:
            os.replace(path, graveyard)
        except FileNotFoundError:
            return
        remove_path(graveyard)

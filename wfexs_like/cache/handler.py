"""``ContainerCacheHandler``: the reference's cache contract on a content-addressed store.

Layout under the cache dir (shared by every engine and every workflow)::

    blobs/sha256/<hex>                 every layer, config, manifest and SIF once
    snapshots/sha256-<hex>             one snapshot per fingerprint: an OCI layout
                                       dir (blobs hard-linked from the store) or a
                                       SIF file (a hard link of its blob)
    snapshots/sha256-<hex>_meta.json   its metadata sidecar
    refs/<engine>/<name>               symlink -> ../../snapshots/sha256-<hex>
    refs/<engine>/<name>_meta.json     symlink -> its sidecar

The reference keeps the same two levels (per-tag symlinks onto
fingerprint-named files) but re-hashes whole images on every query, stores
each image whole, and has no locking. Here a query costs a few ``stat``\\s
(blob trust records), snapshots share blobs, and every publish is an atomic
rename taken under a cross-process lock, so two processes updating the same
entry both succeed and leave one consistent entry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..digests import is_digest, normalize_fingerprint, sha256_file, split_digest
from ..errors import CacheError, IntegrityError
from ..fsutil import atomic_write_bytes, fsync_dir
from ..images.oci_layout import verify_oci_layout
from ..images.staging import link_or_copy, link_tree, remove_path
from ..model import META_JSON_POSTFIX, ContainerTaggedName
from .blobstore import BlobStore
from .paths import default_cache_dir

logger = logging.getLogger(__name__)

ContainerFileNamingMethod = Callable[[str], str]


def _default_naming(tag: str) -> str:
    from ..references import nextflow_file_name

    return nextflow_file_name(tag)


def fingerprint_to_name(fingerprint: str) -> str:
    algo, hexd = split_digest(fingerprint)
    return f"{algo}-{hexd}"


def name_to_fingerprint(name: str) -> str | None:
    algo, sep, hexd = name.partition("-")
    candidate = f"{algo}:{hexd}"
    return candidate if sep and is_digest(candidate) else None


def write_json_atomic(path: Path, data: Any) -> None:
    """Sidecars are tiny but must never be seen half-written by a concurrent reader."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as e:
        raise CacheError(
            f"metadata file {path} is unreadable or corrupted ({e}); "
            "re-materialize the container (or run with force=True) to rebuild it"
        ) from e
    if not isinstance(data, dict):
        raise CacheError(f"metadata file {path} is not a JSON object; re-materialize the container")
    return data


def _symlink_atomic(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` by renaming a fresh symlink over it: never a moment without one."""
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}.tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class ContainerCacheHandler:
    """Query, fill, stage and invalidate container snapshots; see the module docstring."""

    def __init__(
        self,
        containers_cache_dir: Path | None,
        engine_name: str,
        simple_file_name_method: ContainerFileNamingMethod | None = None,
    ) -> None:
        self.containersCacheDir = Path(containers_cache_dir or default_cache_dir()).absolute()
        self.store = BlobStore(self.containersCacheDir)
        self.snapshotsDir = self.containersCacheDir / "snapshots"
        self.snapshotsDir.mkdir(parents=True, exist_ok=True)
        self.engine_name = engine_name
        self.engineContainersSymlinkDir = self.containersCacheDir / "refs" / engine_name
        self.engineContainersSymlinkDir.mkdir(parents=True, exist_ok=True)
        self.simpleFileNameMethod: ContainerFileNamingMethod = simple_file_name_method or _default_naming

    # -- naming -----------------------------------------------------------
    def _file_name(self, container: ContainerTaggedName) -> str:
        name = self.simpleFileNameMethod(container.origTaggedName)
        if not name or "/" in name or name in (".", "..") or name.startswith("."):
            raise CacheError(
                f"the file naming method gave {name!r} for {container.origTaggedName!r}; "
                "it must be a plain file name (no '/', not starting with '.')"
            )
        return name

    def _genContainerPaths(self, container: ContainerTaggedName) -> tuple[Path, Path]:
        name = self._file_name(container)
        return (
            self.engineContainersSymlinkDir / name,
            self.engineContainersSymlinkDir / (name + META_JSON_POSTFIX),
        )

    def genStagedContainersDirPaths(
        self, container: ContainerTaggedName, stagedContainersDir: Path
    ) -> tuple[Path, Path]:
        name = self._file_name(container)
        staged = Path(stagedContainersDir)
        return staged / name, staged / (name + META_JSON_POSTFIX)

    def snapshot_path(self, fingerprint: str) -> Path:
        return self.snapshotsDir / fingerprint_to_name(fingerprint)

    def _lock(self, key: str) -> FileLock:
        return self.store.lock(f"ref-{self.engine_name}-{key}")

    # -- fingerprints and verification -----------------------------------
    def compute_fingerprint(self, snapshot: Path) -> str:
        """A snapshot's fingerprint: of the file, or of an OCI layout's ``index.json``.

        ``index.json`` pins the manifest by digest, which pins the config and
        every layer, so its hash is the root of the whole layout: hashing
        a few hundred bytes identifies gigabytes, and ``verify`` checks the
        rest of the chain.
        """
        if snapshot.is_dir():
            return sha256_file(snapshot / "index.json")
        return sha256_file(snapshot)

    def verify_snapshot(self, snapshot: Path, fingerprint: str, full: bool = False) -> list[str]:
        """Problems found in ``snapshot`` (empty when it is intact).

        Without ``full``, blobs that still look as when they were verified
        (trust records: size and mtime) are not re-hashed.
        """
        fingerprint = normalize_fingerprint(fingerprint)
        if snapshot.is_dir():
            problems: list[str] = []
            index = snapshot / "index.json"
            if not index.is_file():
                return [f"{snapshot}: missing index.json"]
            if sha256_file(index) != fingerprint:
                problems.append(f"{index}: does not match the recorded fingerprint {fingerprint}")
            problems.extend(verify_oci_layout(snapshot, self.store, full))
            return problems
        if not snapshot.is_file():
            return [f"{snapshot}: missing"]
        if not full and self.store.has(fingerprint) and self.store.is_trusted(fingerprint, snapshot):
            return []
        actual = sha256_file(snapshot)
        if actual != fingerprint:
            return [f"{snapshot}: content is {actual}, recorded fingerprint is {fingerprint}"]
        return []

    # -- the reference's four operations ---------------------------------
    def query(self, container: ContainerTaggedName) -> tuple[bool, Path, Path, str | None]:
        """Is a trustworthy snapshot of this tag cached? (trusted, path, meta path, fingerprint)."""
        local, local_meta = self._genContainerPaths(container)
        if not local.is_symlink():
            return False, local, local_meta, None
        target = local.readlink()
        fingerprint = name_to_fingerprint(target.name)
        if fingerprint is None:
            return False, local, local_meta, None
        canonical = self.snapshot_path(fingerprint)
        try:
            trusted = local.resolve(strict=True) == canonical.resolve(strict=True)
        except OSError:
            trusted = False
        if trusted:
            try:
                meta = read_json(local_meta)
                trusted = meta.get("image_signature") == fingerprint
            except CacheError as e:
                logger.warning("%s", e)
                trusted = False
        if trusted:
            problems = self.verify_snapshot(canonical, fingerprint)
            if problems:
                logger.warning("cached snapshot of %s is damaged: %s", container.origTaggedName, problems)
                trusted = False
        return trusted, local, local_meta, fingerprint

    def transfer(
        self, container: ContainerTaggedName, stagedContainersDir: Path, force: bool = False
    ) -> tuple[Path, Path] | None:
        """Stage the cached snapshot and its sidecar into ``stagedContainersDir``.

        Hard links when the staged dir shares the cache's filesystem (O(1) in
        image size), reflinks or copies otherwise. An existing staged copy is
        kept only when it is the same snapshot; a stale one is replaced.
        """
        trusted, _, _, fingerprint = self.query(container)
        if not trusted or fingerprint is None:
            return None
        staged_dir = Path(stagedContainersDir)
        staged_dir.mkdir(parents=True, exist_ok=True)
        path, meta_path = self.genStagedContainersDirPaths(container, staged_dir)
        canonical = self.snapshot_path(fingerprint)
        with self._lock(f"stage-{path}"):
            if force or not self._staged_matches(path, fingerprint):
                if canonical.is_dir():
                    link_tree(canonical, path, force=True)
                else:
                    link_or_copy(canonical, path)
            if force or not self._staged_meta_matches(meta_path, fingerprint):
                link_or_copy(self.snapshotsDir / (canonical.name + META_JSON_POSTFIX), meta_path)
        return path, meta_path

    def _staged_matches(self, path: Path, fingerprint: str) -> bool:
        if not (path.exists() or path.is_symlink()):
            return False
        return not self.verify_snapshot(path, fingerprint)

    @staticmethod
    def _staged_meta_matches(meta_path: Path, fingerprint: str) -> bool:
        try:
            return read_json(meta_path).get("image_signature") == fingerprint
        except CacheError:
            return False

    def update(
        self,
        container: ContainerTaggedName,
        image_path: Path,
        image_metadata_path: Path,
        do_move: bool = True,
    ) -> str:
        """Put a freshly built snapshot in the cache and point this tag at it. Returns its fingerprint.

        The sidecar's ``image_signature`` is set to the computed fingerprint,
        so the two can never disagree. Safe to call from several processes
        at once for the same tag: each publishes by rename under a lock.
        """
        image_path = Path(image_path)
        fingerprint = self.compute_fingerprint(image_path)
        meta = read_json(Path(image_metadata_path))
        meta["image_signature"] = fingerprint
        canonical = self.snapshot_path(fingerprint)
        canonical_meta = canonical.with_name(canonical.name + META_JSON_POSTFIX)

        with self.store.lock(f"snapshot-{fingerprint}"):
            if canonical.exists() and not self.verify_snapshot(canonical, fingerprint):
                if do_move:
                    remove_path(image_path)
            else:
                if canonical.exists() or canonical.is_symlink():
                    logger.warning("replacing damaged cached snapshot %s", canonical)
                    self._retire(canonical)
                self._publish_snapshot(image_path, canonical, fingerprint, do_move)
            write_json_atomic(canonical_meta, meta)
            if do_move and Path(image_metadata_path).exists():
                Path(image_metadata_path).unlink()

        local, local_meta = self._genContainerPaths(container)
        with self._lock(local.name):
            _symlink_atomic(os.path.relpath(canonical, local.parent), local)
            _symlink_atomic(os.path.relpath(canonical_meta, local_meta.parent), local_meta)
        fsync_dir(self.engineContainersSymlinkDir)
        return fingerprint

    def _publish_snapshot(self, src: Path, canonical: Path, fingerprint: str, do_move: bool) -> None:
        if src.is_dir():
            same_fs = src.stat().st_dev == self.snapshotsDir.stat().st_dev
            if do_move and same_fs:
                os.replace(src, canonical)
            else:
                link_tree(src, canonical, force=True)
                if do_move:
                    shutil.rmtree(src)
        else:
            if do_move:
                self.store.adopt_file(src, fingerprint)
            else:
                self.store.put_file(src, fingerprint)
            link_or_copy(self.store.path(fingerprint), canonical)
        fsync_dir(self.snapshotsDir)
        if self.compute_fingerprint(canonical) != fingerprint:
            raise IntegrityError(
                f"snapshot {canonical} changed while it was being cached; retry the operation",
                expected=fingerprint,
            )

    def _retire(self, path: Path) -> None:
        """Move a damaged entry out of the way atomically, then delete it."""
        graveyard = self.containersCacheDir / "tmp" / f"retired-{uuid.uuid4().hex}"
        os.replace(path, graveyard)
        remove_path(graveyard)

    def invalidate(self, container: ContainerTaggedName) -> None:
        """Forget this tag's entry (the snapshot stays until gc: other tags may share it)."""
        local, local_meta = self._genContainerPaths(container)
        with self._lock(local.name):
            for p in (local, local_meta):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    # -- extras -----------------------------------------------------------
    def read_metadata(self, container: ContainerTaggedName) -> dict[str, Any] | None:
        _, local_meta = self._genContainerPaths(container)
        if not local_meta.exists():
            return None
        return read_json(local_meta)

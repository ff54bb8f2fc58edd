"""Where snapshots are staged, and where a record's staged snapshot is found again.

Records are portable: a snapshot is found under the containers dir a caller
gives (a copied or moved workflow dir works), by the record's relative path
or, for absolute paths written elsewhere, by its file name; the dir given
always wins over a path recorded on another machine. What is found there is
verified against the record's fingerprint before anything runs it.
"""

from __future__ import annotations

import abc
import hashlib
import json
from pathlib import Path

from ..cache import CacheHit, ContainerCacheHandler, ImageCache, SnapshotKind
from ..digests import normalize_fingerprint
from ..errors import ContainerNotFoundException, IntegrityError
from ..model import META_JSON_POSTFIX, Container, ContainerTaggedName
from ..references import Reference


class StagedSnapshots(abc.ABC):
    """Staging and finding staged snapshots; mixed into the image-backed factories."""

    # Provided by the factory this is mixed into.
    cc_handler: ContainerCacheHandler
    cache: ImageCache
    kind: SnapshotKind
    platform_key: str | None

    def generateCanonicalTag(self, container: ContainerTaggedName) -> str:
        raise NotImplementedError

    def _stage(
        self, tag: ContainerTaggedName, ref: Reference, hit: CacheHit, cdir: Path, force: bool
    ) -> Container:
        path, meta_path = self.cc_handler.genStagedContainersDirPaths(tag, cdir)
        if _staged_for_other(meta_path, hit.reference):
            # Two references that flatten to one file name: keep both, the second under a hashed name.
            suffix = "-" + hashlib.sha256(hit.reference.encode()).hexdigest()[:12]
            path = path.with_name(path.name + suffix)
            meta_path = path.with_name(path.name + META_JSON_POSTFIX)
        self.cache.stage(hit, path, meta_path, force=force)
        self.cache.share(hit)  # to the remote cache, if any; a failure there is only a warning
        return self._record(tag, ref, hit, path, meta_path)

    @abc.abstractmethod
    def _record(
        self, tag: ContainerTaggedName, ref: Reference, hit: CacheHit, path: Path, meta_path: Path
    ) -> Container:
        """The Container record for a staged snapshot (engines differ in what they call signature)."""

    # -- deploy: the staged snapshot must be there and intact ----------------------------------------
    def staged_paths(self, container: Container, cdir: Path) -> tuple[Path, Path]:
        """Where ``container``'s snapshot is under ``cdir``: records are portable, the stage dir wins.

        A relative ``localPath`` is relative to the containers dir; an
        absolute one (WfExS records, records of another machine) is looked up
        by its file name under ``cdir`` first and used as it is only when
        that is absent.
        """
        if container.localPath is None:
            return self.cc_handler.genStagedContainersDirPaths(container, cdir)
        local = Path(container.localPath)
        path = cdir / local if not local.is_absolute() else cdir / local.name
        if local.is_absolute() and not path.exists() and local.exists():
            path = local
        meta_path = path.with_name(path.name + META_JSON_POSTFIX)
        return path, meta_path

    def verified_staged_snapshot(self, container: Container, cdir: Path, *, restage: bool) -> Path:
        """The staged snapshot of ``container`` under ``cdir``, re-staged from the cache when missing
        (or when ``restage``), and verified against its recorded fingerprint.

        A snapshot whose bytes no longer match is refused: deploying it would
        run something other than what provenance says.
        """
        path, meta_path = self.staged_paths(container, cdir)
        if restage or not path.exists():
            hit = self.cache.lookup(self.generateCanonicalTag(container), self.kind, self.platform_key)
            if hit is None or (
                container.image_signature
                and normalize_fingerprint(container.image_signature) != hit.fingerprint
            ):
                raise ContainerNotFoundException(
                    f"{container.origTaggedName}: no staged snapshot at {path} and none in the cache; "
                    "materialize it first"
                )
            self.cache.stage(hit, path, meta_path, force=restage)
        if not container.image_signature:
            raise IntegrityError(
                f"{container.origTaggedName}: the record has no image_signature to verify against; "
                "re-materialize it to get a verifiable record"
            )
        problems = self.cache.verify_snapshot(path, container.image_signature)
        if problems:
            raise IntegrityError(
                f"refusing to deploy {container.origTaggedName}: the staged snapshot at {path} "
                f"does not match its recorded fingerprint {container.image_signature}: "
                + "; ".join(problems)
                + ". Re-materialize it with --force to restore a trustworthy copy.",
                expected=container.image_signature,
            )
        return path


def _staged_for_other(meta_path: Path, reference: str) -> bool:
    try:
        data = json.loads(meta_path.read_bytes())
    except (OSError, ValueError):
        return False
    other = data.get("tagged_name") if isinstance(data, dict) else None
    return isinstance(other, str) and other != reference


def record_fingerprint(ref: Reference, hit: CacheHit) -> str:
    """``name@manifest digest``: a registry image keeps its registry name, anything else its reference."""
    meta = hit.metadata
    if ref.is_registry or ref.scheme == "docker-daemon":
        name = f"{meta.registry or ref.registry}/{meta.repository or ref.repository}"
    else:
        name = ref.canonical()
    return f"{name}@{meta.manifest_digest}"

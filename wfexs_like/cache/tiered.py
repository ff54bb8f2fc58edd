"""The local cache, reading through library dirs and the remote cache, and publishing to it.

``TieredImageCache`` is ``ImageCache`` over a ``TieredBlobStore``: blobs
missing here are read through the tiers by the store itself, and the
records that give blobs meaning are read through the same chain, under the
same keys as the local layout (``storage.base``), so a library dir in our
layout and an S3 prefix answer alike:

- ``tags/<key>.json`` (reference + platform -> manifest digest): an offline
  node resolves a tag from a tier alone; the record must repeat the
  reference and platform asked for, as a local one must;
- ``refs/<kind>/<key>.json`` + ``snapshots/<name>_meta.json`` + the snapshot's
  blob: a file snapshot (a SIF, a docker-archive) is taken as it is, never
  rebuilt; an OCI layout is rebuilt locally from its blobs, which costs
  links, not bytes;
- a file named after the image in a library dir (a Nextflow SIF library).

Read order is the tiers' order, and a source answers only what it is
trusted with: online, a tag is what the registry says unless a site
library (``authoritative``) pins it; offline, or for a pinned digest,
every tier may answer. Whatever a tier gives is verified (digests, the
record's reference) and lands in the local cache, with ``served_by`` in its
sidecar, so the next run needs no tier at all.

Publishing (``share``) runs after a successful materialize: every blob of
the entry (manifest, config, layers; the SIF), then the sidecar, the tag
record and, last, the entry record, so a record on a tier means everything
it names is there. A failure to publish is a warning: the materialize
itself worked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import progress
from ..digests import is_digest
from ..errors import CacheError, ContainerFactoryException, IntegrityError
from ..images.manifest import Manifest, ManifestError, Platform, parse_manifest_or_index
from ..model import META_JSON_POSTFIX, ImageMetadata
from ..references import parse_reference
from ..storage import StorageError, StorageUnreachableError, TieredBlobStore, Tiers
from ..storage.base import read_record
from .build import put_sif_file
from .library import nextflow_names
from .names import SnapshotKind
from .paths import default_cache_dir
from .snapshots import CacheHit, ImageCache, entry_key, fingerprint_to_name

logger = logging.getLogger(__name__)

#: Snapshot kinds a tier holds as one file (taken as is); an OCI layout is rebuilt from blobs.
FILE_KINDS: tuple[SnapshotKind, ...] = ("sif", "docker-archive")
#: Per-run transfer counts of the machine that built an entry: not true of the one that imports it.
_RUN_KEYS = ("downloaded_bytes", "downloaded_blobs", "reused_blobs", "served_by")
#: Parallel uploads when publishing one entry.
PUBLISH_JOBS = 4


def tag_key(reference: str, platform: str | None) -> str:
    return f"tags/{entry_key(reference, platform)}.json"


def ref_key(reference: str, kind: SnapshotKind, platform: str | None) -> str:
    return f"refs/{kind}/{entry_key(reference, platform)}.json"


def sidecar_key(fingerprint: str) -> str:
    return f"snapshots/{fingerprint_to_name(fingerprint)}{META_JSON_POSTFIX}"


def _json(data: bytes, where: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except ValueError:
        logger.warning("%s is not JSON; ignored", where)
        return None
    return doc if isinstance(doc, dict) else None


class TieredImageCache(ImageCache):
    """``ImageCache`` whose lookups read through ``tiers`` and whose entries are published to them."""

    def __init__(self, root: Path | None, tiers: Tiers) -> None:
        self.tiers = tiers
        super().__init__(root, store=TieredBlobStore(Path(root) if root else default_cache_dir(), tiers))

    # -- tag resolutions --------------------------------------------------------------------------
    def resolved(
        self, reference: str, platform: str | None, *, authoritative_only: bool = False
    ) -> str | None:
        digest = super().resolved(reference, platform, authoritative_only=authoritative_only)
        if digest is not None:
            return digest
        key = tag_key(reference, platform)
        found = self.tiers.fetch_record(key, authoritative=True if authoritative_only else None)
        if found is None:
            return None
        data, tier = found
        rec = _json(data, f"{tier}/{key}")
        if rec is None or rec.get("reference") != reference or rec.get("platform") != platform:
            logger.warning("%s/%s does not answer for %s; ignored", tier, key, reference)
            return None
        digest = rec.get("manifest_digest")
        if not isinstance(digest, str) or not is_digest(digest) or not self.store.has(digest):
            return None
        # Kept here too (same bytes as the tier's), so the next run resolves without the tier; but
        # only once the whole image is here: a local record must never name an image the local
        # store cannot give (a tier that serves the record but not a layer would leave one that
        # `cache verify` rightly calls broken). The caller's own fetch_image names what is missing.
        try:
            self.fetch_image(digest)
        except CacheError:
            return digest
        self.record_resolution(reference, platform, digest)
        return digest

    # -- snapshots --------------------------------------------------------------------------------
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
        """The local entry, else one from a library dir (our layout, then Nextflow-named SIFs), else
        (unless ``authoritative_only``) one from the remote cache; imported into the local cache."""
        hit = super().find(
            reference, kind, platform, tag=tag, manifest=manifest, authoritative_only=authoritative_only
        )
        if hit is None:
            hit = self._import_entry(reference, kind, platform, manifest, authoritative=True)
        if hit is None and kind == "sif" and manifest is None:
            hit = self._import_named(reference, platform, tag)
        if hit is None and not authoritative_only:
            hit = self._import_entry(reference, kind, platform, manifest, authoritative=False)
        return hit

    def _import_entry(
        self,
        reference: str,
        kind: SnapshotKind,
        platform: str | None,
        manifest: str | None,
        *,
        authoritative: bool,
    ) -> CacheHit | None:
        if kind not in FILE_KINDS:
            return None
        key = ref_key(reference, kind, platform)
        found = self.tiers.fetch_record(key, authoritative=authoritative)
        if found is None:
            return None
        data, tier = found
        rec = _json(data, f"{tier}/{key}")
        fingerprint = rec.get("fingerprint") if rec is not None else None
        if (
            rec is None
            or (rec.get("reference"), rec.get("kind"), rec.get("platform")) != (reference, kind, platform)
            or not isinstance(fingerprint, str)
            or not is_digest(fingerprint)
        ):
            logger.warning("%s/%s does not answer for %s; ignored", tier, key, reference)
            return None
        meta_found = self.tiers.fetch_record(sidecar_key(fingerprint), authoritative=authoritative)
        meta = _json(meta_found[0], f"{tier}/{sidecar_key(fingerprint)}") if meta_found else None
        if meta is None or meta.get("tagged_name") != reference:
            logger.warning("%s has no usable sidecar for %s; ignored", tier, reference)
            return None
        if manifest is not None and meta.get("manifest_digest") != manifest:
            return None
        if not self.store.has(fingerprint):
            logger.warning(
                "%s names %s for %s, but no tier holds an intact copy of it", tier, fingerprint, reference
            )
            return None
        theirs = meta.get("extra")
        extra = {k: v for k, v in theirs.items() if k not in _RUN_KEYS} if isinstance(theirs, dict) else {}
        meta["extra"] = {**extra, "served_by": self._served(fingerprint, tier)}
        try:
            return self.put(
                reference, kind, self.store.path(fingerprint), meta, platform=platform, move=False
            )
        except (CacheError, KeyError, TypeError, ValueError) as e:
            logger.warning("the entry %s/%s for %s is unusable: %s", tier, key, reference, e)
            return None

    def _import_named(self, reference: str, platform: str | None, tag: str | None) -> CacheHit | None:
        """A SIF a library dir keeps under the name Nextflow gives the image."""
        try:
            ref = parse_reference(reference)
        except ContainerFactoryException:
            return None
        known = self.entry(reference, "sif", platform)
        found = self.tiers.fetch_named(self.store, nextflow_names(ref, tag), known=known)
        if found is None:
            return None
        digest, tier, name = found
        path = self.store.path(digest)
        if platform is not None and not _sif_fits(path, platform):
            logger.info("%s/%s is not for %s; not used", tier, name, platform)
            return None
        try:
            return put_sif_file(
                self,
                reference,
                path,
                platform=platform,
                source={
                    "source": "library",
                    "file": f"{tier}/{name}",
                    "served_by": self._served(digest, tier),
                },
                move=False,
                registry=ref.registry,
                repository=ref.repository if ref.is_registry else None,
            )
        except IntegrityError as e:
            logger.warning("%s/%s is not a usable SIF: %s", tier, name, e)
            return None

    def _served(self, digest: str, tier: str) -> dict[str, dict[str, int]]:
        return self.tiers.served_by([digest]) or {tier: {"blobs": 0, "bytes": 0}}

    def served_by(self, digests: Sequence[str]) -> dict[str, Any]:
        return self.tiers.served_by(digests)

    def elsewhere(self) -> str:
        return self.tiers.describe()

    def _missing_blob(self, digest: str, manifest_digest: str, what: str) -> str | None:
        missing = super()._missing_blob(digest, manifest_digest, what)
        if missing is None:
            return None
        problems = self.tiers.problems.get(digest)
        where = "; ".join(problems) if problems else f"none of {self.tiers.describe()} has it"
        return f"{missing}, nor usable in a tier ({where})"

    # -- publishing -------------------------------------------------------------------------------
    def share(self, hit: CacheHit) -> None:
        writer = self.tiers.writer
        if writer is None or self.tiers.is_down(writer):
            return
        try:
            uploaded = self._publish(hit)
        except (StorageError, CacheError, OSError) as e:
            if isinstance(e, StorageUnreachableError):
                self.tiers.mark_down(writer)  # the next entries of this run do not wait on it again
            text = (
                f"{hit.reference} is materialized, but publishing it to {writer.name} failed ({e}); "
                "other machines will not find it there"
            )
            logger.warning(text)
            progress.current().warn(text, key=f"publish:{writer.name}")
            return
        if uploaded:
            logger.info("published %s to %s (%d blobs uploaded)", hit.reference, writer.name, uploaded)

    def _publish(self, hit: CacheHit) -> int:
        """Blobs first, records last (the entry record is the "it is all there" mark); blobs uploaded."""
        entry = ref_key(hit.reference, hit.kind, hit.platform)
        entry_bytes = self._ref_file(hit.reference, hit.kind, hit.platform).read_bytes()
        writer = self.tiers.writer
        assert writer is not None
        with self.store.lock(f"publish-{entry}"):
            if read_record(writer, entry) == entry_bytes:
                return 0
            progress.current().step(hit.reference, f"publishing to {writer.name}")
            digests = self._entry_blobs(hit)
            from concurrent.futures import ThreadPoolExecutor  # here: only publishing needs threads

            with ThreadPoolExecutor(max_workers=PUBLISH_JOBS, thread_name_prefix="wfexs-publish") as pool:
                uploaded = sum(pool.map(lambda d: self.tiers.publish_blob(self.store, d), digests))
            self.tiers.publish_record(sidecar_key(hit.fingerprint), hit.metadata_path.read_bytes())
            tag_file = self._tag_file(hit.reference, hit.platform)
            tag_rec = _json(tag_file.read_bytes(), str(tag_file)) if tag_file.is_file() else None
            if tag_rec is not None and tag_rec.get("manifest_digest") == hit.metadata.manifest_digest:
                self.tiers.publish_record(tag_key(hit.reference, hit.platform), tag_file.read_bytes())
            self.tiers.publish_record(entry, entry_bytes)
        return int(uploaded)

    def _entry_blobs(self, hit: CacheHit) -> list[str]:
        """Every blob an entry needs elsewhere: the snapshot's own (file kinds), the image's, its index."""
        meta: ImageMetadata = hit.metadata
        digests: list[str] = [hit.fingerprint] if hit.kind in FILE_KINDS else []
        index = meta.extra.get("index_digest")
        for candidate in (meta.manifest_digest, index):
            if not isinstance(candidate, str) or not self.store.path(candidate).is_file():
                continue
            try:
                doc = parse_manifest_or_index(self.store.path(candidate).read_bytes())
            except (ManifestError, OSError, ValueError):
                continue  # a SIF's "manifest digest" is the SIF itself
            digests.append(candidate)
            if isinstance(doc, Manifest):
                digests += [doc.config.digest, *(layer.digest for layer in doc.layers)]
        return [d for d in dict.fromkeys(digests) if self.store.path(d).is_file()]


def _sif_fits(path: Path, platform: str) -> bool:
    """A Nextflow library SIF carries no platform but its architecture: it must be the one asked for."""
    from ..images.sif import read_sif  # only for library SIFs: a re-stage never reads one

    try:
        part = read_sif(path).primary_partition()
        want = Platform.parse(platform).architecture
    except Exception:  # unreadable: put_sif_file refuses it with the reason
        return True
    return part is None or part.arch in (None, "unknown", want)

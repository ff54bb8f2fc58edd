"""Air-gapped bundles: the format that ``bundle_export`` writes and ``bundle_import`` reads.

A bundle is one plain tar file, written in this member order with fixed
headers (mtime 0, uid/gid 0, mode 0644, regular files only), so the same
selection of the same cache gives the same bytes on any machine::

    oci-layout                 the OCI image layout marker
    index.json                 one manifest descriptor per image: ``org.opencontainers.image.ref.name``
                               is its canonical reference, PLATFORM_ANNOTATION the platform key its
                               cache entry had (absent: the host's default)
    wfexs-like-bundle.json     what an import records: tag resolutions and snapshot entries with
                               their sidecars (BundleManifest)
    containers.yaml            the records it was made from (only when made from records)
    blobs/sha256/<hex>         every manifest, config, layer, SIF and layout index, once
    SHA256SUMS                 ``sha256sum`` lines for every member above

**Why an OCI layout.** The tar is an ``oci-archive``: skopeo and Podman read
the images straight from it, with no wfexs-like on the other side, and a
layer shared by several images is stored once because blobs are named by
content. **Why a separate manifest.** The layout can say which images there
are, not which cache entries pointed at them; ``wfexs-like-bundle.json``
carries exactly the entries (and sidecars) an offline materialize looks up,
so the other machine answers with identical digests. **Why SHA256SUMS
last.** An export streams, hashing every member on the way out; the list
can then be checked with ``sha256sum -c`` after a plain ``tar x`` too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..digests import is_digest, normalize_fingerprint, split_digest
from ..errors import CacheError, IntegrityError
from ..images.manifest import Descriptor, Index, ManifestError, parse_manifest_or_index
from ..model import ImageMetadata
from .names import SNAPSHOT_KINDS, SnapshotKind

OCI_LAYOUT_MEMBER = "oci-layout"
INDEX_MEMBER = "index.json"
MANIFEST_MEMBER = "wfexs-like-bundle.json"
RECORDS_MEMBER = "containers.yaml"
SUMS_MEMBER = "SHA256SUMS"
BLOBS_PREFIX = "blobs/sha256/"
#: The documents a bundle may hold besides its blobs, in the order they are written.
DOCUMENT_MEMBERS = (OCI_LAYOUT_MEMBER, INDEX_MEMBER, MANIFEST_MEMBER, RECORDS_MEMBER)
#: Directory entries a repacked bundle may carry (ours writes none); anything else is refused.
DIRECTORY_MEMBERS = frozenset({"blobs", "blobs/sha256"})
#: Our annotation on an index.json descriptor: the platform key of the cache entry it came from.
PLATFORM_ANNOTATION = "org.wfexs-like.cache.platform"
#: The largest document member (index, manifest, records, sums) an import reads into memory.
DOCUMENT_LIMIT = 16 << 20
FORMAT_KEY = "wfexs_like_bundle"
FORMAT_VERSION = 1
#: Snapshot kinds carried as one file blob (the others are rebuilt from image blobs).
FILE_KINDS: frozenset[str] = frozenset({"sif", "docker-archive"})
_BLOB_NAME = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_MAX_NESTING = 4
_MAX_TEXT = 4096


def blob_member(digest: str) -> str:
    return BLOBS_PREFIX + split_digest(digest)[1]


def blob_of_member(name: str) -> str | None:
    """The digest a ``blobs/sha256/<hex>`` member name promises, or None for any other name."""
    m = _BLOB_NAME.match(name)
    return "sha256:" + m.group(1) if m else None


# -- SHA256SUMS ----------------------------------------------------------------------------------


def sums_bytes(digests: Mapping[str, str]) -> bytes:
    """``sha256sum`` text-mode lines (``<hex>  <name>``) in the order given."""
    return "".join(f"{split_digest(d)[1]}  {name}\n" for name, d in digests.items()).encode("utf-8")


def parse_sums(raw: bytes, where: str) -> dict[str, str]:
    """Member name -> digest, from a SHA256SUMS member; malformed or repeated lines are refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise IntegrityError(f"{where}: {SUMS_MEMBER} is not UTF-8 text ({e})") from e
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        m = _SUMS_LINE.match(line)
        if m is None:
            raise IntegrityError(f"{where}: line {n} of {SUMS_MEMBER} is not '<sha256 hex>  <member>'")
        name = m.group(2)
        if name in sums:
            raise IntegrityError(f"{where}: {SUMS_MEMBER} lists member {name!r} twice")
        sums[name] = "sha256:" + m.group(1)
    return sums


# -- the bundle manifest -------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """A ``tags/`` entry: what ``reference`` (on ``platform``) resolved to when it was fetched."""

    reference: str
    platform: str | None
    manifest_digest: str

    @property
    def sort_key(self) -> tuple[str, str, str]:
        return (self.reference, self.platform or "", self.manifest_digest)

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "platform": self.platform,
            "manifest_digest": self.manifest_digest,
        }


@dataclass(frozen=True)
class SnapshotEntry:
    """A ``refs/<kind>/`` entry and its sidecar.

    ``fingerprint`` names the blob that carries the snapshot: the file itself
    for SIF and docker-archive, the layout's ``index.json`` for an OCI layout
    (whose other blobs are the image's own).
    """

    reference: str
    platform: str | None
    kind: SnapshotKind
    fingerprint: str
    metadata: Mapping[str, Any] = field(compare=False)

    @property
    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.reference, self.platform or "", self.kind, self.fingerprint)

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "platform": self.platform,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class BundleManifest:
    """``wfexs-like-bundle.json``: the cache entries an import records, and the records file if any."""

    resolutions: tuple[Resolution, ...]
    snapshots: tuple[SnapshotEntry, ...]
    records: str | None = None

    def to_bytes(self) -> bytes:
        data = {
            FORMAT_KEY: FORMAT_VERSION,
            "resolutions": [r.to_json() for r in sorted(self.resolutions, key=lambda r: r.sort_key)],
            "snapshots": [s.to_json() for s in sorted(self.snapshots, key=lambda s: s.sort_key)],
            "records": self.records,
        }
        return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> BundleManifest:
        """Parse and check every field: it comes from a file someone handed over, not from us."""
        data = load_json_document(raw, f"{where}: {MANIFEST_MEMBER}")
        version = data.get(FORMAT_KEY)
        if version != FORMAT_VERSION:
            raise CacheError(
                f"{where}: {MANIFEST_MEMBER} has format version {version!r}; this wfexs-like reads "
                f"version {FORMAT_VERSION}: import it with the wfexs-like version that exported it"
            )
        resolutions = tuple(
            Resolution(
                _text(r, "reference", where),
                _platform(r, where),
                _digest(r, "manifest_digest", where),
            )
            for r in _list(data, "resolutions", where)
        )
        snapshots = tuple(_snapshot_entry(s, where) for s in _list(data, "snapshots", where))
        records = data.get("records")
        if records not in (None, RECORDS_MEMBER):
            raise CacheError(
                f"{where}: {MANIFEST_MEMBER} names records member {records!r}, not {RECORDS_MEMBER}"
            )
        return cls(resolutions, snapshots, records)


def load_json_document(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise CacheError(f"{where} is not valid JSON ({e}); the bundle is damaged: export it again") from e
    if not isinstance(data, dict):
        raise CacheError(f"{where} is not a JSON object; the bundle is damaged: export it again")
    return data


def _bad(where: str, what: str) -> CacheError:
    return CacheError(f"{where}: {MANIFEST_MEMBER} {what}; the bundle is damaged: export it again")


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    items = data.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise _bad(where, f"has no list of objects under {key!r}")
    return items


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT or "\0" in value:
        raise _bad(where, f"has an invalid {key} {value!r}")
    return value


def _platform(data: Mapping[str, Any], where: str) -> str | None:
    return None if data.get("platform") is None else _text(data, "platform", where)


def _digest(data: Mapping[str, Any], key: str, where: str) -> str:
    value = _text(data, key, where)
    if not is_digest(value) or not value.startswith("sha256:"):
        raise _bad(where, f"has an invalid {key} {value!r}")
    return value


def _snapshot_entry(s: Mapping[str, Any], where: str) -> SnapshotEntry:
    kind = s.get("kind")
    if kind not in SNAPSHOT_KINDS:
        raise _bad(where, f"has an unknown snapshot kind {kind!r}")
    fingerprint = _digest(s, "fingerprint", where)
    meta = s.get("metadata")
    if not isinstance(meta, dict):
        raise _bad(where, f"has no metadata for the {kind} snapshot {fingerprint}")
    try:
        parsed = ImageMetadata.from_json(meta)
        signature = normalize_fingerprint(parsed.image_signature) if parsed.image_signature else fingerprint
    except (KeyError, TypeError, ValueError, IntegrityError) as e:
        raise _bad(where, f"has unusable metadata for the {kind} snapshot {fingerprint} ({e})") from e
    if signature != fingerprint or not is_digest(parsed.manifest_digest):
        raise _bad(where, f"has metadata that contradicts the {kind} snapshot {fingerprint}")
    return SnapshotEntry(_text(s, "reference", where), _platform(s, where), kind, fingerprint, meta)


# -- what an index reaches -----------------------------------------------------------------------


def reachable_blobs(root_raw: bytes, read_small: Callable[[str], bytes], where: str) -> Iterator[Descriptor]:
    """Every descriptor an index or manifest reaches (manifests, nested indexes, configs, layers), once.

    ``read_small`` returns a manifest's or index's bytes, verified; it raises
    when the blob is missing, which is how an incomplete image is caught.
    """
    seen: set[str] = set()

    def walk(raw: bytes, media_type: str | None, depth: int) -> Iterator[Descriptor]:
        try:
            doc = parse_manifest_or_index(raw, media_type)
        except ManifestError as e:
            raise CacheError(f"{where}: {e}; the bundle is damaged: export it again") from e
        if isinstance(doc, Index):
            if depth > _MAX_NESTING:
                raise CacheError(f"{where}: image indexes nested too deeply")
            for desc in doc.manifests:
                if desc.digest not in seen:
                    seen.add(desc.digest)
                    yield desc
                    yield from walk(read_small(desc.digest), desc.media_type or None, depth + 1)
            return
        for desc in (doc.config, *doc.layers):
            if desc.digest not in seen:
                seen.add(desc.digest)
                yield desc

    yield from walk(root_raw, None, 0)


@dataclass(frozen=True)
class BundleSummary:
    """What ``export_bundle`` wrote: counts for the summary line, and the file's digest to compare."""

    path: Path
    references: tuple[str, ...]
    images: int
    snapshots: int
    blobs: int
    bytes: int
    digest: str
    records: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path), "references": list(self.references)}


@dataclass(frozen=True)
class ImportSummary:
    """What ``import_bundle`` published into the cache."""

    bundle: Path
    cache_dir: Path
    references: tuple[str, ...]
    images: int
    snapshots: int
    blobs: int
    new_blobs: int
    bytes: int
    digest: str
    records: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "bundle": str(self.bundle),
            "cache_dir": str(self.cache_dir),
            "references": list(self.references),
        }


@dataclass(frozen=True)
class ImportLimits:
    """Bounds an import enforces from the tar headers, before reading a member's bytes.

    They keep a hostile or mistaken file from filling the disk: the defaults
    fit the largest real images (multi-GB SIFs) with room to spare.
    """

    max_member_bytes: int = 64 << 30
    max_total_bytes: int = 1 << 40
    max_members: int = 200_000

"""``export_bundle``: carry cached images, their SIFs and records to a machine with no network.

Export never touches the network: every tag must already be in the cache,
and a tag that is not is named in the error, with every other missing one,
before anything is written. What a tag selects is what an offline
materialize on the other machine will look up: its tag resolutions (the
image's manifest, config and layers) and its snapshot entries (a SIF or a
docker-archive as one file, an OCI layout as its ``index.json``, the rest
being the image's blobs). ``--engine`` narrows that to one engine's needs,
``--platform`` to one platform key.

The bundle streams from the blob store to a temporary file beside ``dest``
(renamed when complete), every blob re-hashed on the way: a blob that rotted
in the cache fails the export instead of travelling. See ``bundle`` for the
format.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .. import progress
from ..digests import CHUNK, is_digest, normalize_fingerprint, sha256_bytes, split_digest
from ..errors import CacheError, ContainerNotFoundException, IntegrityError
from ..images.archive import tar_end, tar_padding, write_tar_stream
from ..images.layout import REF_NAME_ANNOTATION, blob_file, oci_layout_bytes
from ..images.manifest import OCI_INDEX, Descriptor, Index, Platform, parse_manifest_or_index
from ..images.store import StoreImage
from ..model import Container, ContainerTaggedName, ContainerType
from ..provenance import dump_containers, read_containers_file
from ..references import parse_reference
from ..safeyaml import read_bounded
from .bundle import (
    DOCUMENT_LIMIT,
    FILE_KINDS,
    INDEX_MEMBER,
    MANIFEST_MEMBER,
    OCI_LAYOUT_MEMBER,
    PLATFORM_ANNOTATION,
    RECORDS_MEMBER,
    SUMS_MEMBER,
    BundleManifest,
    BundleSummary,
    Resolution,
    SnapshotEntry,
    blob_member,
    reachable_blobs,
    sums_bytes,
)
from .inventory import CacheEntry, scan_entries
from .names import IMAGE_KIND, SNAPSHOT_KINDS, SnapshotKind
from .paths import default_cache_dir
from .snapshots import CacheHit, ImageCache, read_json

#: The snapshot kinds each engine stages; None (no --engine) takes every kind.
ENGINE_KINDS: dict[str | None, tuple[SnapshotKind, ...]] = {
    None: SNAPSHOT_KINDS,
    "docker": ("oci-layout", "docker-archive"),
    "podman": ("oci-layout", "docker-archive"),
    "singularity": ("sif",),
}
_RECORD_ENGINES = {
    ContainerType.Docker: "docker",
    ContainerType.Podman: "podman",
    ContainerType.Singularity: "singularity",
}

BundleInput = Path | Sequence[str | ContainerTaggedName]
"""A containers YAML (carried as it is), or tags and records (``Container``) in any mix."""


@dataclass(frozen=True)
class _Want:
    """One thing the user asked for: a tag, or a record (which pins a manifest and a snapshot)."""

    label: str
    reference: str
    engine: str | None
    pin: str | None = None
    snapshot: str | None = None


@dataclass
class _Plan:
    """Everything the bundle will hold, gathered before a byte is written."""

    blobs: dict[str, Path] = field(default_factory=dict)
    descriptors: dict[tuple[str, str, str], Descriptor] = field(default_factory=dict)
    resolutions: set[Resolution] = field(default_factory=set)
    snapshots: dict[tuple[str, str, str, str], SnapshotEntry] = field(default_factory=dict)
    references: set[str] = field(default_factory=set)

    def add_image(self, reference: str, platform: str | None, desc: Descriptor) -> None:
        annotations = {REF_NAME_ANNOTATION: reference}
        if platform is not None:
            annotations[PLATFORM_ANNOTATION] = platform
        self.descriptors[(reference, platform or "", desc.digest)] = Descriptor(
            desc.media_type, desc.digest, desc.size, desc.platform, annotations
        )
        self.references.add(reference)


def export_bundle(
    cache_dir: Path | None,
    containers: BundleInput,
    dest: Path,
    *,
    engine: str | None = None,
    platform: str | Platform | None = None,
) -> BundleSummary:
    """Write the bundle of ``containers`` (a containers YAML path, or tags and records) to ``dest``.

    ``engine`` (docker, podman, singularity) keeps only what that engine's
    materialize needs; ``platform`` keeps only cache entries of that
    platform key (default: entries of every platform).
    """
    if engine not in ENGINE_KINDS:
        choices = ", ".join(sorted(e for e in ENGINE_KINDS if e))
        raise CacheError(f"cannot export for engine {engine!r}: choose one of {choices}")
    root = Path(cache_dir or default_cache_dir()).absolute()
    if not (root / "blobs").is_dir():
        raise CacheError(
            f"there is no cache at {root}; materialize the images there first, or point --cache-dir "
            "at the cache that holds them"
        )
    dest = Path(dest).absolute()
    if not dest.parent.is_dir():
        raise CacheError(f"cannot write the bundle to {dest}: directory {dest.parent} does not exist")
    if dest.is_dir():
        raise CacheError(f"cannot write the bundle to {dest}: it is a directory; name a file with -o")
    if isinstance(platform, str):
        platform = Platform.parse(platform)
    plat_key = str(platform) if platform is not None else None
    cache = ImageCache(root)
    wants, records_doc, n_records = _wants(containers, engine)
    plan = _plan(cache, wants, plat_key)
    manifest = BundleManifest(
        tuple(plan.resolutions), tuple(plan.snapshots.values()), RECORDS_MEMBER if records_doc else None
    )
    documents = [
        (OCI_LAYOUT_MEMBER, oci_layout_bytes()),
        (INDEX_MEMBER, _index_bytes(plan)),
        (MANIFEST_MEMBER, manifest.to_bytes()),
    ]
    if records_doc is not None:
        documents.append((RECORDS_MEMBER, records_doc))
    blobs = sorted(plan.blobs.items())
    sizes = {d: _size(p, d) for d, p in blobs}
    total = sum(len(raw) for _, raw in documents) + sum(sizes.values())
    label = f"export {dest.name}"
    reporter = progress.current()
    reporter.begin(label)
    started = time.monotonic()
    try:
        digest = write_tar_stream(_stream(documents, blobs, sizes, total, label, cache.root), dest)
    except Exception as e:
        reporter.finish(
            progress.ImageSummary(label, "failed", seconds=time.monotonic() - started, reason=str(e))
        )
        raise
    size = dest.stat().st_size
    reporter.finish(progress.ImageSummary(label, "built", digest, size, time.monotonic() - started))
    return BundleSummary(
        path=dest,
        references=tuple(sorted(plan.references)),
        images=len(plan.descriptors),
        snapshots=len(plan.snapshots),
        blobs=len(blobs),
        bytes=size,
        digest=digest,
        records=n_records,
    )


# -- what was asked ------------------------------------------------------------------------------


def _wants(containers: BundleInput, engine: str | None) -> tuple[list[_Want], bytes | None, int]:
    """The wanted entries, the records document to carry (if any) and how many records it holds."""
    if isinstance(containers, Path):
        text = read_bounded(containers, max_bytes=DOCUMENT_LIMIT, what="containers YAML")
        records = read_containers_file(containers)
        if not records:
            raise CacheError(f"{containers} holds no container records: nothing to export")
        return [_record_want(c, engine) for c in records], text.encode("utf-8"), len(records)
    if isinstance(containers, (str, bytes)) or not containers:
        raise CacheError("name at least one tag or a containers YAML to export")
    wants: list[_Want] = []
    records: list[Container] = []
    ctype = ContainerType.Singularity if engine == "singularity" else ContainerType.Docker
    for item in containers:
        if isinstance(item, Container):
            records.append(item)
            wants.append(_record_want(item, engine))
        elif isinstance(item, ContainerTaggedName):
            ref = parse_reference(item.origTaggedName, container_type=item.type, registries=item.registries)
            wants.append(_Want(item.origTaggedName, ref.canonical(), engine))
        else:
            wants.append(_Want(item, parse_reference(item, container_type=ctype).canonical(), engine))
    doc = (dump_containers(records) or "").encode("utf-8") if records else None
    return wants, doc, len(records)


def _record_want(c: Container, engine: str | None) -> _Want:
    """A record pins its manifest (``fingerprint``) and its snapshot (``image_signature``)."""
    rec_engine = _RECORD_ENGINES.get(c.type)
    if rec_engine is None:
        raise CacheError(f"{c.origTaggedName}: a {c.type.value} record has no container image to export")
    ref = parse_reference(c.origTaggedName, container_type=c.type, registries=c.registries)
    pin = None
    if c.fingerprint and "@sha256:" in c.fingerprint:
        candidate = "sha256:" + c.fingerprint.rsplit("@sha256:", 1)[1]
        pin = candidate if is_digest(candidate) else None
    snapshot = normalize_fingerprint(c.image_signature) if c.image_signature else None
    return _Want(c.origTaggedName, ref.canonical(), engine or rec_engine, pin, snapshot)


# -- what the cache holds ------------------------------------------------------------------------


def _resolutions(cache: ImageCache, held: Sequence[CacheEntry]) -> list[Resolution]:
    found: list[Resolution] = []
    for e in held:
        if e.kind == IMAGE_KIND and e.reference and e.digest is not None and cache.store.has(e.digest):
            found.append(Resolution(e.reference, e.platform, e.digest))
    return found


def _entries(held: Sequence[CacheEntry]) -> list[tuple[str, SnapshotKind, str | None]]:
    kinds: dict[str, SnapshotKind] = {k: k for k in SNAPSHOT_KINDS}
    return [(e.reference, kinds[e.kind], e.platform) for e in held if e.kind in kinds and e.reference]


def _plan(cache: ImageCache, wants: Sequence[_Want], platform: str | None) -> _Plan:
    held = scan_entries(cache)
    resolutions = _resolutions(cache, held)
    entries = _entries(held)
    hits: dict[tuple[str, SnapshotKind, str | None], CacheHit | None] = {}
    plan = _Plan()
    failures: list[tuple[str, str]] = []
    for want in wants:
        kinds = ENGINE_KINDS[want.engine]
        snaps: list[CacheHit] = []
        for key in entries:
            ref, kind, plat = key
            if ref != want.reference or kind not in kinds or (platform is not None and plat != platform):
                continue
            if key not in hits:
                hits[key] = cache.lookup(ref, kind, plat)
            hit = hits[key]
            if hit is not None and (want.snapshot is None or hit.fingerprint == want.snapshot):
                snaps.append(hit)
        res = [
            r
            for r in resolutions
            if r.reference == want.reference
            and (platform is None or r.platform == platform)
            and (want.pin is None or r.manifest_digest == want.pin)
        ]
        if want.pin is not None and not res and cache.store.has(want.pin):
            res = [Resolution(want.reference, platform, want.pin)]
        if want.engine == "singularity":
            # A SIF is what Apptainer runs: its layers travel only where no SIF does.
            with_sif = {h.platform for h in snaps}
            res = [r for r in res if r.platform not in with_sif]
        if not res and not snaps:
            failures.append((want.label, _absent(want, resolutions, entries, cache.root)))
            continue
        try:
            for r in res:
                _add_resolution(plan, cache, r)
            for hit in snaps:
                _add_snapshot(plan, cache, hit)
        except CacheError as e:
            failures.append((want.label, str(e)))
    if failures:
        raise ContainerNotFoundException.for_failures("export", failures)
    return plan


def _absent(
    want: _Want,
    resolutions: Sequence[Resolution],
    entries: Sequence[tuple[str, SnapshotKind, str | None]],
    root: Path,
) -> str:
    have = sorted(
        {f"{kind} ({plat or 'default platform'})" for ref, kind, plat in entries if ref == want.reference}
        | {
            f"image ({r.platform or 'default platform'})"
            for r in resolutions
            if r.reference == want.reference
        }
    )
    exact = " at that digest" if want.pin or want.snapshot else ""
    if have:
        return (
            f"{want.reference} is not in the cache at {root}{exact} for what was asked "
            f"(it holds: {', '.join(have)}); change --engine/--platform, or materialize it first"
        )
    return (
        f"{want.reference} is not in the cache at {root}{exact}; materialize it there first "
        "(export never uses the network)"
    )


def _add_resolution(plan: _Plan, cache: ImageCache, r: Resolution) -> None:
    image = StoreImage(cache.store, r.manifest_digest)  # checks every blob is there
    m = image.manifest()
    plan.add_image(
        r.reference, r.platform, Descriptor(m.media_type, image.digest(), len(m.raw), image.platform())
    )
    plan.resolutions.add(r)
    plan.blobs[image.digest()] = cache.store.path(image.digest())
    for desc in (m.config, *m.layers):
        plan.blobs[desc.digest] = cache.store.path(desc.digest)


def _add_snapshot(plan: _Plan, cache: ImageCache, hit: CacheHit) -> None:
    entry = SnapshotEntry(
        hit.reference, hit.platform, hit.kind, hit.fingerprint, read_json(hit.metadata_path)
    )
    plan.snapshots[entry.sort_key] = entry
    plan.references.add(hit.reference)
    if hit.kind in FILE_KINDS:
        stored = cache.store.path(hit.fingerprint)
        plan.blobs[hit.fingerprint] = stored if stored.is_file() else hit.snapshot
        return
    index_path = hit.snapshot / "index.json"
    raw = index_path.read_bytes()
    if sha256_bytes(raw) != hit.fingerprint:
        raise IntegrityError(
            f"the cached layout {hit.snapshot} changed while being exported; run the export again",
            expected=hit.fingerprint,
        )
    plan.blobs[hit.fingerprint] = index_path

    def source(digest: str) -> Path:
        stored = cache.store.path(digest)
        return stored if stored.is_file() else blob_file(hit.snapshot, digest)

    def read_small(digest: str) -> bytes:
        data = source(digest).read_bytes()
        if sha256_bytes(data) != digest:
            raise IntegrityError(
                f"manifest blob {digest} of {hit.reference} in the cache at {cache.root} is corrupt; "
                "run 'wfexs-like cache verify --repair', then export again",
                expected=digest,
            )
        return data

    for desc in reachable_blobs(raw, read_small, f"cached layout of {hit.reference}"):
        plan.blobs[desc.digest] = source(desc.digest)
    index = parse_manifest_or_index(raw)
    assert isinstance(index, Index)  # reachable_blobs parsed it
    for desc in index.manifests:
        plan.add_image(hit.reference, hit.platform, desc)


def _index_bytes(plan: _Plan) -> bytes:
    manifests = [plan.descriptors[k].to_json() for k in sorted(plan.descriptors)]
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- writing -------------------------------------------------------------------------------------


def _size(path: Path, digest: str) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise CacheError(
            f"blob {digest} vanished from the cache ({path}: {e.strerror}); "
            "materialize the image again, then export"
        ) from e


def _header(name: str, size: int) -> bytes:
    """A fixed header; PAX only for what ustar cannot hold (members of 8 GiB or more)."""
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _stream(
    documents: Sequence[tuple[str, bytes]],
    blobs: Sequence[tuple[str, Path]],
    sizes: dict[str, int],
    total: int,
    label: str,
    root: Path,
) -> Iterator[bytes]:
    """The tar, member by member, every byte hashed for SHA256SUMS and every blob checked against its name."""
    reporter = progress.current()
    sums: dict[str, str] = {}
    done = 0

    def member(name: str, size: int, src: BinaryIO, expected: str | None) -> Iterator[bytes]:
        nonlocal done
        yield _header(name, size)
        h = hashlib.sha256()
        sent = 0
        while sent < size:
            progress.check_cancelled()
            chunk = src.read(min(CHUNK, size - sent))
            if not chunk:
                break
            h.update(chunk)
            sent += len(chunk)
            done += len(chunk)
            reporter.advance(label, "bundle", done, total)
            yield chunk
        digest = "sha256:" + h.hexdigest()
        if sent != size or src.read(1):
            raise CacheError(f"{name} changed size while being exported; run the export again")
        if expected is not None and digest != expected:
            raise IntegrityError(
                f"blob {expected} in the cache at {root} is corrupt (its bytes hash to {digest}); "
                "run 'wfexs-like cache verify --repair', then export again",
                expected=expected,
                actual=digest,
            )
        sums[name] = digest
        yield tar_padding(size)

    for name, raw in documents:
        yield from member(name, len(raw), io.BytesIO(raw), None)
    for digest, path in blobs:
        split_digest(digest)
        with open(path, "rb") as fh:
            yield from member(blob_member(digest), sizes[digest], fh, digest)
    raw_sums = sums_bytes(sums)
    yield from member(SUMS_MEMBER, len(raw_sums), io.BytesIO(raw_sums), None)
    yield tar_end()

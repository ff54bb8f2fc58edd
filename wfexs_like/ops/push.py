"""``push`` as a library function: cached images and SIFs copied to a site registry, nothing fetched.

A lab or cluster that pulled its images once pushes them to its own
registry; nodes then pull from there (by digest, which stays the same).

**Naming.** Each image keeps its repository path under the destination; the
source registry's host is dropped::

    docker.io/library/busybox:1.36 (--to HOST/PREFIX)  ->  HOST/PREFIX/library/busybox:1.36
    quay.io/biocontainers/samtools:1.15--h1170115_1  ->  HOST/PREFIX/biocontainers/samtools:1.15--h1170115_1
    oras://reg.example/tools/blast:2.14 (a SIF)      ->  oras://HOST/PREFIX/tools/blast:2.14

(so two registries' ``library/busybox`` land on one name: push them to two
prefixes). A reference with only a digest is pushed by digest, untagged.

**SIFs** go as ORAS artifacts (``registry.oras``). A SIF that *is* the
artifact (``oras://``, ``library://``, ``shub://``) keeps its tag; a SIF built
here from an OCI image is tagged ``<tag>-sif`` (``SIF_TAG_SUFFIX``), whether
or not the image is pushed too, so the two never overwrite each other and
the name never depends on what else a run pushed:
``oras://HOST/PREFIX/library/busybox:1.36-sif``.

**Byte-identical.** Manifests go up as the cache holds them, so
``HOST/PREFIX/library/busybox@sha256:<the digest the records pin>`` pulls.
The index a tag resolved to goes too when the cache holds every platform it
lists (a registry accepts an index only then); otherwise the one cached
platform's manifest is pushed under the tag, and the item says so.

**Nothing is fetched.** Every source must be in the cache; all of them are
looked up before the first request, and any that is missing is an error
naming it, with nothing pushed. Credentials, certificates and insecure
registries are the pull's (``RegistryClient`` options).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from .. import progress
from ..cache import ImageCache
from ..cache.names import SNAPSHOT_KINDS
from ..cache.snapshots import read_json
from ..container_factories.sif_files import ORAS_MANIFEST_KEY
from ..container_factories.sources import pin_from_fingerprint
from ..digests import is_digest, normalize_fingerprint, split_digest
from ..errors import (
    CacheError,
    ContainerFactoryException,
    ContainerNotFoundException,
    InvalidReferenceError,
)
from ..images.manifest import Platform
from ..images.store import StoreImage
from ..model import Container, ContainerType
from ..references import Reference, parse_reference
from ..registry.client import RegistryClient
from ..registry.oras import push_sif
from ..registry.push import UPLOAD_CHUNK, PushedImage, Pusher, PushStats, complete_index
from .materialize import parse_platform
from .taglist import check_tags, read_tag_source

__all__ = [
    "ENGINE_KINDS",
    "PUSH_KINDS",
    "SIF_TAG_SUFFIX",
    "Destination",
    "PushItem",
    "PushKind",
    "PushSummary",
    "parse_destination",
    "push",
]

logger = logging.getLogger(__name__)

PushKind = Literal["image", "sif"]
PUSH_KINDS: tuple[PushKind, ...] = ("image", "sif")
#: Which kinds ``--engine`` selects: what that engine runs.
ENGINE_KINDS: dict[str, tuple[PushKind, ...]] = {
    "docker": ("image",),
    "podman": ("image",),
    "singularity": ("sif",),
}
#: Appended to the tag of a SIF built from an OCI image (its image may sit at the plain tag).
SIF_TAG_SUFFIX = "-sif"
_TAG_MAX = 128

PushSource = str | Path | Container
"""A tag as a workflow writes it, a records/tag-list file, or a record (pushed at the digest it pins)."""


@dataclasses.dataclass(frozen=True)
class Destination:
    """``--to HOST[:PORT][/PREFIX]`` (an ``http://``/``https://`` in front forces the scheme)."""

    #: What the registry client is given: ``host:port``, or ``scheme://host:port``.
    registry: str
    #: ``host:port`` as it appears in image names.
    host: str
    prefix: str

    def repository(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path


def parse_destination(to: str) -> Destination:
    """Check ``--to`` before any work: a registry host, then an optional repository prefix."""
    text = to.strip()
    scheme = ""
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme.lower() not in ("http", "https"):
            raise InvalidReferenceError(f"--to {to}: only http:// or https:// may come before the host")
        scheme = scheme.lower() + "://"
    host, _, prefix = text.partition("/")
    host, prefix = host.lower(), prefix.strip("/")
    if not host:
        raise InvalidReferenceError(f"--to {to!r}: give a registry, HOST[:PORT][/PREFIX]")
    try:
        Reference("docker", host, f"{prefix}/x" if prefix else "x", "latest")
    except InvalidReferenceError as e:
        raise InvalidReferenceError(
            f"--to {to}: not a registry and repository prefix (HOST[:PORT][/PREFIX], prefix in lower "
            f"case): {e}"
        ) from None
    return Destination(registry=scheme + host, host=host, prefix=prefix)


@dataclasses.dataclass
class PushItem:
    """One image or SIF pushed (or not): where from, where to, what it cost."""

    source: str
    reference: str
    kind: PushKind
    #: ``HOST/PREFIX/repo``: where it goes.
    name: str
    repository: str
    tags: tuple[str, ...]
    #: What a pull by digest asks for (the index, when one was pushed); None until pushed.
    digest: str | None = None
    size: int = 0
    stats: PushStats = dataclasses.field(default_factory=PushStats)
    seconds: float = 0.0
    outcome: Literal["pushed", "present", "failed", "pending"] = "pending"
    reason: str | None = None
    note: str | None = None

    @property
    def label(self) -> str:
        """What progress is reported under: the source as given (and which kind of it)."""
        return self.source + (" [sif]" if self.kind == "sif" else "")

    @property
    def target(self) -> str:
        """``HOST/PREFIX/repo:tag`` (``oras://`` in front for a SIF; ``@digest`` when untagged)."""
        scheme = "oras://" if self.kind == "sif" else ""
        if self.tags:
            return f"{scheme}{self.name}:{self.tags[0]}"
        return f"{scheme}{self.name}" + (f"@{self.digest}" if self.digest else "")

    @property
    def pinned(self) -> str | None:
        """What to pull by digest: ``HOST/PREFIX/repo@sha256:...`` (``oras://`` for a SIF)."""
        if self.digest is None:
            return None
        scheme = "oras://" if self.kind == "sif" else ""
        return f"{scheme}{self.name}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "reference": self.reference,
            "kind": self.kind,
            "target": self.target,
            "pinned": self.pinned,
            "digest": self.digest,
            "size": self.size,
            "outcome": self.outcome,
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
            "note": self.note,
            **self.stats.to_json(),
        }


@dataclasses.dataclass
class PushSummary:
    destination: Destination
    items: list[PushItem]

    @property
    def ok(self) -> bool:
        return all(i.outcome != "failed" for i in self.items)

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(i.source, i.reason or "failed") for i in self.items if i.outcome == "failed"]

    @property
    def uploaded_bytes(self) -> int:
        return sum(i.stats.uploaded_bytes for i in self.items)

    def to_json(self) -> dict[str, Any]:
        return {
            "registry": self.destination.host,
            "prefix": self.destination.prefix,
            "uploaded_bytes": self.uploaded_bytes,
            "items": [i.to_json() for i in self.items],
        }


# -- what is cached ----------------------------------------------------------------------------------
@dataclasses.dataclass
class _Plan:
    item: PushItem
    #: image: the manifest and (when complete in the cache) the index to push.
    manifest_digest: str | None = None
    index_digest: str | None = None
    #: sif: the SIF blob, its file name, and its original ORAS manifest if it came from one.
    sif_digest: str | None = None
    title: str | None = None
    oras_manifest: bytes | None = None


def _sidecars(cache: ImageCache, reference: str, platform: str | None) -> list[dict[str, Any]]:
    """The metadata of every snapshot cached for ``reference`` (one per kind that has one).

    ``tags/`` records only the platform's manifest; which index it was chosen
    from is in the sidecars of the snapshots built from that pull.
    """
    found = []
    for kind in SNAPSHOT_KINDS:
        fingerprint = cache.entry(reference, kind, platform)
        if fingerprint is None:
            continue
        try:
            found.append(read_json(cache.metadata_path(fingerprint)))
        except CacheError:
            continue
    return found


def _index_for(
    cache: ImageCache, reference: str, platform: str | None, manifest: str, label: str
) -> tuple[str | None, bool]:
    """(the index ``manifest`` came from, if the cache can push it whole; whether a sidecar names one)."""
    recorded = False
    for meta in _sidecars(cache, reference, platform):
        extra = meta.get("extra")
        index = extra.get("index_digest") if isinstance(extra, dict) else None
        if meta.get("manifest_digest") != manifest or not isinstance(index, str) or not is_digest(index):
            continue
        recorded = True
        found = complete_index(cache.store, index, label)
        if found is not None and manifest in {m.digest for m in found[1]}:
            return index, True
    return None, recorded


def _cached_manifest(cache: ImageCache, reference: str, platform: str | None) -> str | None:
    """The manifest digest ``reference`` resolved to in the cache (tags/, else a snapshot's sidecar)."""
    digest = cache.resolved(reference, platform)
    if digest is not None:
        return digest
    for meta in _sidecars(cache, reference, platform):
        if meta.get("snapshot_kind") == "sif":
            continue
        candidate = meta.get("manifest_digest")
        if isinstance(candidate, str) and is_digest(candidate) and cache.store.has(candidate):
            return candidate
    return None


def _sif_tag(ref: Reference) -> tuple[str, ...]:
    if ref.tag is None:
        return ()
    tag = ref.tag + (SIF_TAG_SUFFIX if ref.scheme == "docker" else "")
    if len(tag) > _TAG_MAX:
        raise InvalidReferenceError(
            f"{ref.canonical()}: the tag {tag!r} for its SIF is longer than {_TAG_MAX}"
        )
    return (tag,)


def _title(ref: Reference, sif_digest: str) -> str:
    base = ref.repository.rsplit("/", 1)[-1]
    return f"{base}_{ref.tag or split_digest(sif_digest)[1][:12]}.sif"


def _item(source: str, ref: Reference, kind: PushKind, dest: Destination, tags: tuple[str, ...]) -> PushItem:
    repository = dest.repository(ref.repository)
    try:
        Reference(
            "docker", dest.host, repository, tags[0] if tags else None, None if tags else "sha256:" + "0" * 64
        )
    except InvalidReferenceError as e:
        raise InvalidReferenceError(
            f"{source}: cannot be pushed under {dest.host}/{repository}: {e}"
        ) from None
    return PushItem(source, ref.canonical(), kind, f"{dest.host}/{repository}", repository, tags)


class _Planner:
    """Sources -> what to push, from the cache alone; every problem collected, none raised midway."""

    def __init__(
        self, cache: ImageCache, dest: Destination, kinds: Sequence[PushKind], platform: str | None
    ) -> None:
        self.cache, self.dest, self.kinds, self.platform = cache, dest, tuple(kinds), platform
        self.plans: list[_Plan] = []
        self.missing: list[tuple[str, str]] = []
        self._seen: set[tuple[str, ...]] = set()

    def _keep(self, plan: _Plan) -> None:
        """Plan it, unless another spelling of the same source already did (``busybox`` and
        ``docker://busybox``, a tag and its record)."""
        item = plan.item
        key = (item.kind, item.name, *item.tags, plan.manifest_digest or plan.sif_digest or "")
        if key not in self._seen:
            self._seen.add(key)
            self.plans.append(plan)

    def add(self, source: PushSource) -> None:
        if isinstance(source, Path):
            for entry in read_tag_source(source):
                self.add(entry)
            return
        name = source.origTaggedName if isinstance(source, Container) else source
        try:
            if isinstance(source, Container):
                self._record(source)
            else:
                self._tag(source)
        except (ContainerFactoryException, OSError) as e:
            self.missing.append((name, str(e)))

    def _ref(
        self, name: str, container_type: ContainerType | None = None, registries: Any = None
    ) -> Reference:
        ref = parse_reference(name, container_type=container_type, registries=registries)
        if not ref.is_registry or ref.registry is None:
            raise ContainerFactoryException(
                f"{ref.canonical()} names no registry repository to push it under; only images named like "
                "busybox:1.36, docker://..., oras://..., library://... or shub://... are pushed"
            )
        return ref

    def _tag(self, tag: str) -> None:
        ref = self._ref(tag)
        reference = ref.canonical()
        found = False
        where = "any platform" if self.platform is None else self.platform
        if "image" in self.kinds:
            manifest = _cached_manifest(self.cache, reference, self.platform)
            if manifest is not None:
                self._image(tag, ref, manifest)
                found = True
        if "sif" in self.kinds:
            hit = self.cache.lookup(reference, "sif", self.platform)
            if hit is not None:
                extra = dict(hit.metadata.extra)
                self._sif(tag, ref, hit.fingerprint, extra.get(ORAS_MANIFEST_KEY))
                found = True
        if not found:
            what = " or ".join("a SIF" if k == "sif" else "an image" for k in self.kinds)
            plat = "" if self.platform is None else f" for platform {where}"
            raise ContainerNotFoundException(
                f"not in the cache at {self.cache.root} as {what}{plat}; push copies only cached images: "
                f"materialize it first (wfexs-like materialize ... {tag})"
            )

    def _record(self, record: Container) -> None:
        ref = self._ref(record.origTaggedName, record.type, record.registries)
        kind: PushKind = "sif" if record.type == ContainerType.Singularity else "image"
        if kind not in self.kinds:
            return
        reference = ref.canonical()
        if kind == "image":
            manifest = pin_from_fingerprint(record.fingerprint) or ref.digest
            manifest = manifest or _cached_manifest(self.cache, reference, self.platform)
            if manifest is None or not self.cache.store.has(manifest):
                raise ContainerNotFoundException(
                    f"its image {manifest or '(no pin)'} is not in the cache at {self.cache.root}; "
                    "materialize the records first (wfexs-like materialize -f FILE ...)"
                )
            self._image(record.origTaggedName, ref, manifest)
            return
        signature = record.image_signature or record.signature
        sif = normalize_fingerprint(signature) if signature else None
        if sif is None or not self.cache.store.has(sif):
            raise ContainerNotFoundException(
                f"its SIF {sif or '(no image_signature)'} is not in the cache at {self.cache.root}; "
                "materialize the records first (wfexs-like materialize --engine singularity -f FILE ...)"
            )
        original = None
        hit = self.cache.lookup(reference, "sif", self.platform)
        if hit is not None and hit.fingerprint == sif:
            original = dict(hit.metadata.extra).get(ORAS_MANIFEST_KEY)
        self._sif(record.origTaggedName, ref, sif, original)

    def _image(self, source: str, ref: Reference, manifest: str) -> None:
        reference = ref.canonical()
        StoreImage(self.cache.store, manifest)  # every blob present, or a CacheError naming the missing one
        tags = (ref.tag,) if ref.tag else ()
        item = _item(source, ref, "image", self.dest, tags)
        index, recorded = _index_for(self.cache, reference, self.platform, manifest, reference)
        if index is None and recorded:
            item.note = "only this platform is cached: its manifest is pushed, not the multi-platform index"
        self._keep(_Plan(item, manifest_digest=manifest, index_digest=index))

    def _sif(self, source: str, ref: Reference, sif: str, original: object) -> None:
        item = _item(source, ref, "sif", self.dest, _sif_tag(ref))
        raw = original.encode("utf-8") if isinstance(original, str) else None
        self._keep(_Plan(item, sif_digest=sif, title=_title(ref, sif), oras_manifest=raw))


# -- the run ---------------------------------------------------------------------------------------
def push(
    cache_dir: Path | None,
    sources: Sequence[PushSource],
    to: str,
    *,
    engine: str | None = None,
    platform: str | Platform | None = None,
    insecure_registries: Sequence[str] = (),
    auth_file: Path | None = None,
    cert_dir: Path | None = None,
    retries: int | None = None,
    jobs: int = 4,
    keep_going: bool = False,
    chunk_size: int = UPLOAD_CHUNK,
    client: RegistryClient | None = None,
) -> PushSummary:
    """Copy cached images and SIFs to the registry ``to`` (``HOST[:PORT][/PREFIX]``); see the module doc.

    ``sources`` are tags, records (``Container``: pushed at the digest they
    pin) or ``Path``s of a containers YAML or tag list. ``engine`` picks the
    kinds (docker/podman: images; singularity: SIFs); without it, every kind
    the cache holds for a tag is pushed. ``platform`` selects the cache
    entries materialized with that ``--platform``. Blobs larger than
    ``chunk_size`` are uploaded in chunks of that size.

    Raises ``ContainerNotFoundException`` naming every source not in the cache
    before anything is pushed. A failed push raises its error (an
    ``AuthenticationError`` for a registry that refuses us) unless
    ``keep_going``, which pushes the rest and reports failures in the summary.
    """
    dest = parse_destination(to)
    if engine is not None and engine not in ENGINE_KINDS:
        raise ContainerFactoryException(
            f"--engine {engine}: push takes docker, podman (images) or singularity (SIFs)"
        )
    kinds = ENGINE_KINDS[engine] if engine is not None else PUSH_KINDS
    plat = parse_platform(platform) if platform is not None else None
    check_tags([s for s in sources if isinstance(s, str)])
    cache = ImageCache(cache_dir)
    planner = _Planner(cache, dest, kinds, str(plat) if plat is not None else None)
    for source in sources:
        planner.add(source)
    if planner.missing:
        raise ContainerNotFoundException.for_failures("push", planner.missing)
    if not planner.plans:
        raise ContainerNotFoundException(
            f"nothing to push: no source is {' or '.join(kinds)} (--engine {engine} selects those)"
        )
    own = client is None
    if client is None:
        options: dict[str, Any] = {"retries": retries} if retries is not None else {}
        client = RegistryClient(
            insecure_registries=insecure_registries,
            max_workers=jobs,
            auth_file=auth_file,
            cert_dir=cert_dir,
            **options,
        )
    try:
        pusher = Pusher(client, dest.registry, jobs=jobs, chunk_size=chunk_size)
        reporter = progress.current()
        for plan in planner.plans:
            reporter.begin(plan.item.label)
        for plan in planner.plans:
            progress.check_cancelled()
            _push_one(pusher, cache, plan, keep_going)
    finally:
        if own:
            client.close()
    return PushSummary(dest, [p.item for p in planner.plans])


def _push_one(pusher: Pusher, cache: ImageCache, plan: _Plan, keep_going: bool) -> None:
    item = plan.item
    started = time.monotonic()
    try:
        if plan.sif_digest is not None:
            assert plan.title is not None
            pushed: PushedImage = push_sif(
                pusher,
                item.repository,
                cache.store,
                plan.sif_digest,
                tags=item.tags,
                title=plan.title,
                manifest=plan.oras_manifest,
                label=item.label,
            )
        else:
            assert plan.manifest_digest is not None
            pushed = pusher.push_image(
                item.repository,
                cache.store,
                plan.manifest_digest,
                tags=item.tags,
                index_digest=plan.index_digest,
                label=item.label,
            )
    except ContainerFactoryException as e:
        item.outcome, item.reason = "failed", str(e)
        item.seconds = time.monotonic() - started
        progress.current().step(item.label, "failed")
        if not keep_going:
            raise
        return
    item.digest, item.size, item.stats = pushed.digest, pushed.size, pushed.stats
    item.outcome = "pushed" if pushed.stats.wrote else "present"
    item.seconds = time.monotonic() - started
    progress.current().step(item.label, f"{item.outcome}: {item.pinned}")

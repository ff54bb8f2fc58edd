"""``materialize`` as a library function: many tags fetched together, each one summarized.

Parallelism: every registry image of the run, and every layer of each, goes
through one download pool of ``jobs`` workers (the factory's prefetch pulls
them all at once, so a layer shared by several images is fetched once).
What follows per tag (building the snapshot from the store, staging it,
writing its record) runs one tag at a time. That split is deliberate: the
network is where the time goes and where parallelism is safe, while
staging is not safe to run concurrently inside one factory (two tags that
flatten to one staged file name are told apart only by a check-then-write
on the stage dir, and the factory's collaborators are created lazily
without locks), and SIF builds are CPU- and disk-bound anyway.

Progress goes to ``progress.current()``: ``begin`` for every tag up front,
the registry client's per-blob events as ``advance`` on the tag that asked
for the blob, what the library reports while a tag is finished (SIF build
stages, file downloads) relabelled to that tag, and one ``finish`` row per
tag with how it was obtained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import progress
from ..container_factories import ContainerFactory, factory_class, make_factory
from ..container_factories.cached import CachedImageFactory
from ..container_factories.sources import pin_from_fingerprint
from ..digests import normalize_fingerprint
from ..errors import ContainerFactoryException, ContainerNotFoundException, ProvenanceError
from ..fsutil import atomic_write_bytes
from ..images.manifest import Platform
from ..model import Container, ContainerTaggedName, ContainerType
from ..progress import ImageSummary, Outcome
from ..records import FORMAT_KEY, FORMAT_VERSION, container_to_dict, dump_records
from ..safeyaml import read_bounded
from ..storage import Tiers, open_tiers
from .taglist import TagSource

if TYPE_CHECKING:  # the HTTP stack loads only for a run that may ask a registry
    from ..registry.client import ProgressEvent, RegistryClient

__all__ = [
    "RECORD_FORMATS",
    "STAGE_DIR_COMMENT",
    "MaterializeResult",
    "RecordFormat",
    "check_output_path",
    "materialize",
    "parse_platform",
    "recorded_stage_dir",
    "records_text",
    "write_records",
]

logger = logging.getLogger(__name__)

RecordFormat = Literal["yaml", "json", "wfexs"]
RECORD_FORMATS: tuple[RecordFormat, ...] = ("yaml", "json", "wfexs")

#: First line of a YAML records file: where its snapshots are staged (a JSON string, so any
#: path survives), relative to the file's own directory when the stage dir is under it.
STAGE_DIR_COMMENT = "# wfexs-like stage-dir: "
#: The same, as a key of the JSON document (JSON has no comments).
STAGE_DIR_KEY = "stage_dir"


# -- platform --------------------------------------------------------------------------------------

_KNOWN_OS = frozenset(
    {
        *("aix", "android", "darwin", "dragonfly", "freebsd", "illumos", "ios", "linux"),
        *("netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos"),
    }
)
_KNOWN_ARCH = frozenset(
    {
        *("386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle", "mips64", "mips64le"),
        *("ppc", "ppc64", "ppc64le", "riscv64", "s390x", "sparc64", "wasm"),
    }
)
_PLATFORM_FORMS = "expected ARCH, OS/ARCH or OS/ARCH/VARIANT, e.g. arm64, linux/arm64, linux/arm64/v8"


def parse_platform(text: str | Platform) -> Platform:
    """``arm64``, ``linux/arm64`` or ``linux/arm64/v8`` (a bare architecture means Linux).

    Names are checked against the operating systems and architectures OCI
    images are published for, so a typo fails here, not after a pull that
    finds no such platform in an index.
    """
    if isinstance(text, Platform):
        return text
    parts = text.strip().lower().split("/")
    if len(parts) == 1 and parts[0] and parts[0] not in _KNOWN_OS:
        parts = ["linux", *parts]
    if len(parts) not in (2, 3) or not all(parts):
        raise ContainerFactoryException(f"invalid platform {text!r}: {_PLATFORM_FORMS}")
    platform = Platform.parse("/".join(parts))
    if platform.os not in _KNOWN_OS:
        raise ContainerFactoryException(
            f"invalid platform {text!r}: unknown operating system {platform.os!r} "
            f"(known: {', '.join(sorted(_KNOWN_OS))})"
        )
    if platform.architecture not in _KNOWN_ARCH:
        raise ContainerFactoryException(
            f"invalid platform {text!r}: unknown architecture {platform.architecture!r} "
            f"(known: {', '.join(sorted(_KNOWN_ARCH))})"
        )
    return platform


# -- the run ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class MaterializeResult:
    """What a run produced: the records of the tags that worked, and why the others did not."""

    containers: list[Container]
    failures: list[tuple[str, str]]
    summaries: list[ImageSummary]
    stage_dir: Path

    @property
    def ok(self) -> bool:
        return not self.failures


class _Bridge:
    """Registry client events -> ``advance`` on the user's tag; remembers which tags got bytes.

    An event names the image by the client's label (``registry/repo:ref`` or
    ``@digest``); each tag's label is computed the way the factory asks the
    client, and a label seen only by its ``registry/repo`` (a pin fell back to
    its tag) still maps when one tag alone has that name.
    """

    def __init__(self, reporter: progress.Reporter) -> None:
        self.reporter = reporter
        self.by_label: dict[str, str] = {}
        self.by_name: dict[str, list[str]] = {}
        self.fetched: set[str] = set()
        self.last_event: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, tag: str, registry: str, repository: str, reference: str) -> None:
        from ..registry.client import image_label

        self.by_label.setdefault(image_label(registry, repository, reference), tag)
        self.by_name.setdefault(f"{registry}/{repository}", []).append(tag)

    def _tag_for(self, label: str) -> str | None:
        tag = self.by_label.get(label)
        if tag is None:
            base = label.split("@", 1)[0]
            head, colon, tail = base.rpartition(":")
            same = self.by_name.get(head if colon and "/" not in tail else base, [])
            tag = same[0] if len(same) == 1 else None
        return tag

    def __call__(self, event: ProgressEvent) -> None:
        tag = self._tag_for(event.image)
        if tag is None or event.kind == "reused":
            return
        with self._lock:
            self.last_event[tag] = time.monotonic()
            if event.kind == "advance":
                self.fetched.add(tag)
        self.reporter.advance(tag, event.digest, event.done, event.total)


class _OneTag:
    """The reporter while one tag is finished: what the library reports under its own names (a SIF
    build under the snapshot name, a download under its URL) lands on the tag the user wrote.

    Only one tag is finished at a time, so everything reported meanwhile is about it; its
    ``begin``/``finish`` are the run's, so the library's own are not passed on.
    """

    def __init__(self, bridge: _Bridge, tag: str) -> None:
        self.bridge, self.tag = bridge, tag

    def begin(self, tag: str) -> None:
        pass

    def advance(self, tag: str, key: str, done: int, total: int | None) -> None:
        if done > 0:
            self.bridge.fetched.add(self.tag)
        self.bridge.reporter.advance(self.tag, key, done, total)

    def step(self, tag: str, text: str) -> None:
        self.bridge.reporter.step(self.tag, text)

    def finish(self, summary: ImageSummary) -> None:
        pass

    def warn(self, text: str, *, key: str | None = None) -> None:
        self.bridge.reporter.warn(text, key=key)


def _request(tag: TagSource, ctype: ContainerType) -> ContainerTaggedName:
    return tag if isinstance(tag, Container) else ContainerTaggedName(tag, ctype)


def _tag_type(factory: ContainerFactory) -> ContainerType:
    """The type plain tags get: the factory's own; Podman pulls Docker images."""
    ctype = factory.ContainerType()
    return ContainerType.Docker if ctype == ContainerType.Podman else ctype


def _factory(
    engine: str,
    *,
    stage_dir: Path,
    cache_dir: Path | None,
    platform: Platform | None,
    insecure_registries: Sequence[str],
    client: RegistryClient | None,
    snapshot_format: str | None,
    tiers: Tiers | None = None,
    require_digest: bool = False,
) -> ContainerFactory:
    kwargs: dict[str, Any] = {
        "containersCacheDir": cache_dir,
        "stagedContainersDir": stage_dir,
        "platform": platform,
        "insecure_registries": tuple(insecure_registries),
    }
    if snapshot_format is not None:
        if engine not in ("docker", "podman"):
            raise ContainerFactoryException(
                f"a snapshot format (--snapshot-format) applies to the docker and podman engines, "
                f"not {engine}"
            )
        kwargs["snapshot_format"] = snapshot_format
    if client is not None:
        kwargs["registry_client"] = client
    if tiers is not None:
        kwargs["tiers"] = tiers
    if require_digest and _uses_registry(engine):
        kwargs["require_digest"] = True
    return make_factory(engine, **kwargs)


def _uses_registry(engine: str) -> bool:
    try:
        return issubclass(factory_class(engine), CachedImageFactory)
    except ValueError:  # an unknown engine: make_factory names the choices
        return False


def _prior_fingerprint(factory: ContainerFactory, tag: ContainerTaggedName) -> str | None:
    """The snapshot the cache holds for ``tag`` before the run (unverified: a stat-free read)."""
    if not isinstance(factory, CachedImageFactory):
        return None
    try:
        reference = factory.parse_tag(tag).canonical()
    except ContainerFactoryException:
        return None
    return factory.cache.entry(reference, factory.kind, factory.platform_key)


def _staged_meta(container: Container) -> dict[str, Any]:
    if container.metadataLocalPath is None:
        return {}
    try:
        data = json.loads(Path(container.metadataLocalPath).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _outcome(
    factory: ContainerFactory,
    container: Container,
    meta: dict[str, Any],
    *,
    prior: str | None,
    fetched: bool,
    force: bool,
) -> Outcome:
    """fetched: bytes came over the network; cached: the cache already had this snapshot;
    built: a new snapshot from bytes already here (cached layers, a local file, the engine)."""
    if not isinstance(factory, CachedImageFactory):
        return "skipped"
    signature = None
    with contextlib.suppress(ContainerFactoryException, ValueError):
        signature = normalize_fingerprint(container.image_signature or "")
    if not force and not fetched and prior is not None and signature == prior:
        return "cached"
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    if fetched or extra.get("downloaded_bytes") or extra.get("source") == "url":
        return "fetched"
    return "built"


def _digest(container: Container, meta: dict[str, Any]) -> str | None:
    pin = pin_from_fingerprint(container.fingerprint)
    if pin is not None:
        return pin
    manifest = meta.get("manifest_digest")
    return manifest if isinstance(manifest, str) else container.signature


def _size(meta: dict[str, Any]) -> int | None:
    size = meta.get("size")
    return size if isinstance(size, int) and size > 0 else None


def _watch(bridge: _Bridge, factory: ContainerFactory, name: str, tag: ContainerTaggedName) -> None:
    """Teach the bridge which client label ``tag`` will be pulled under."""
    try:
        ref = factory.parse_tag(tag)
    except ContainerFactoryException:
        return
    if not ref.is_registry or ref.scheme not in ("docker", "oras"):
        return
    pin = ref.digest or (pin_from_fingerprint(tag.fingerprint) if isinstance(tag, Container) else None)
    bridge.add(name, ref.registry or "docker.io", ref.repository, pin or ref.tag or "latest")


def _fetch_together(
    factory: ContainerFactory, tags: Sequence[ContainerTaggedName], offline: bool, force: bool
) -> None:
    """Pull every registry image of the run through one pool; a failure here is only an early
    attempt: each tag that did not arrive is fetched (and fails, with its reason) on its own."""
    try:
        factory._prefetch(tags, offline=offline, force=force)
    except ContainerFactoryException as e:
        logger.info("fetching the images together failed (%s); fetching them one by one", e)


def materialize(
    tags: Sequence[TagSource],
    *,
    engine: str,
    stage_dir: Path,
    cache_dir: Path | None = None,
    platform: str | Platform | None = None,
    offline: bool = False,
    force: bool = False,
    jobs: int = 4,
    keep_going: bool = False,
    insecure_registries: Sequence[str] = (),
    auth_file: Path | None = None,
    cert_dir: Path | None = None,
    retries: int | None = None,
    require_digest: bool = False,
    snapshot_format: str | None = None,
    mirrors: Mapping[str, Sequence[str]] | None = None,
    registries_conf: Path | Literal[False] | None = None,
    remote_cache: str | None = None,
    library_dirs: Sequence[Path] = (),
    no_remote: bool = False,
) -> MaterializeResult:
    """Fetch, cache and stage every tag into ``stage_dir``; one record and one summary row per tag.

    ``tags`` are plain tags or records (``ops.taglist``): a record is
    re-materialized at exactly the digest it pins. Every tag is attempted.
    Without ``keep_going`` any failure raises one ``ContainerNotFoundException``
    naming each failed tag with its reason; with it, the failures are
    returned beside the records of what worked. ``mirrors`` (``{"docker.io": ["host:port"]}``)
    come before those of ``registries_conf`` (None: the files podman reads; False: none).
    ``library_dirs`` (read-only) and ``remote_cache`` (``s3://BUCKET/PREFIX?endpoint=URL``) are
    read before any registry, also ``offline``; ``no_remote`` leaves the remote cache out.
    ``require_digest`` refuses a manifest fetched by tag without a ``Docker-Content-Digest``
    header instead of recording it as trusted on first use.
    """
    stage_dir = Path(stage_dir).absolute()
    plat = parse_platform(platform) if platform is not None else None
    tiers = open_tiers(remote_cache, library_dirs, no_remote=no_remote)
    reporter = progress.current()
    bridge = _Bridge(reporter)
    client: RegistryClient | None = None
    if _uses_registry(engine) and not offline:  # offline: no registry is asked, none is set up
        from ..registry.client import RegistryClient

        options: dict[str, Any] = {"retries": retries} if retries is not None else {}
        client = RegistryClient(
            insecure_registries=insecure_registries,
            platform=plat,
            max_workers=max(1, jobs),
            progress=bridge,
            auth_file=auth_file,
            cert_dir=cert_dir,
            mirrors=mirrors,
            registries_conf=registries_conf,
            require_digest=require_digest,
            **options,
        )
    try:
        factory = _factory(
            engine,
            stage_dir=stage_dir,
            cache_dir=cache_dir,
            platform=plat,
            insecure_registries=insecure_registries,
            client=client,
            snapshot_format=snapshot_format,
            tiers=tiers,
            require_digest=require_digest,
        )
        return _run(
            factory, tags, engine, stage_dir, bridge, offline=offline, force=force, keep_going=keep_going
        )
    finally:
        if client is not None:
            client.close()


def _run(
    factory: ContainerFactory,
    tags: Sequence[TagSource],
    engine: str,
    stage_dir: Path,
    bridge: _Bridge,
    *,
    offline: bool,
    force: bool,
    keep_going: bool,
) -> MaterializeResult:
    reporter = bridge.reporter
    ctype = _tag_type(factory)
    wanted = [(_request(t, ctype), t.origTaggedName if isinstance(t, Container) else t) for t in tags]
    result = MaterializeResult([], [], [], stage_dir)

    def fail(name: str, reason: str, seconds: float) -> None:
        result.failures.append((name, reason))
        summary = ImageSummary(name, "failed", seconds=seconds, reason=reason)
        result.summaries.append(summary)
        reporter.finish(summary)

    accepted: list[tuple[ContainerTaggedName, str]] = []
    for request, name in wanted:
        reporter.begin(name)
        if factory.AcceptsContainer(request):
            accepted.append((request, name))
            if not offline:  # offline nothing is pulled, so no client event needs a tag
                _watch(bridge, factory, name, request)
        else:
            fail(name, f"a {request.type.value} record, which --engine {engine} cannot materialize", 0.0)

    started = time.monotonic()
    _fetch_together(factory, [r for r, _ in accepted], offline, force)
    prefetch_events = dict(bridge.last_event)
    for request, name in accepted:
        progress.check_cancelled()
        t0 = time.monotonic()
        waited = prefetch_events[name] - started if name in prefetch_events else 0.0
        prior = _prior_fingerprint(factory, request)
        try:
            with progress.reporting(_OneTag(bridge, name)):
                container = factory.materializeSingleContainer(
                    request, containers_dir=stage_dir, offline=offline, force=force
                )
            if container is None:
                raise ContainerNotFoundException(f"{name}: not found")
        except ContainerFactoryException as e:
            fail(name, str(e), waited + time.monotonic() - t0)
            continue
        meta = _staged_meta(container)
        outcome = _outcome(factory, container, meta, prior=prior, fetched=name in bridge.fetched, force=force)
        summary = ImageSummary(
            name,
            outcome,
            digest=_digest(container, meta),
            size=_size(meta),
            seconds=waited + time.monotonic() - t0,
        )
        result.summaries.append(summary)
        reporter.finish(summary)
        if container not in result.containers:
            result.containers.append(container)
    if result.failures and not keep_going:
        raise ContainerNotFoundException.for_failures("materialize", result.failures)
    return result


# -- records out -----------------------------------------------------------------------------------


def check_output_path(output: Path, *, stage_dir: Path | None = None) -> None:
    """Refuse, before any work, a records file that could not be written afterwards.

    A directory that does not exist yet is fine when it is the stage dir or
    one of its parents (``--stage-dir wf/containers -o wf/c.yaml`` on a fresh
    machine): staging creates it before the records are written.
    """
    output = Path(output)
    parent = output.absolute().parent
    if output.is_dir():
        raise ProvenanceError(f"the output {output} is a directory; give a file name, e.g. {output}/c.yaml")
    existing = parent
    if not parent.is_dir():
        if stage_dir is None or not Path(stage_dir).absolute().is_relative_to(parent):
            raise ProvenanceError(
                f"the output directory {parent} does not exist; create it first (mkdir -p {parent})"
            )
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ProvenanceError(
                f"cannot create the output directory {parent}: {existing} is not a directory"
            )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ProvenanceError(f"the output directory {existing} is not writable")


def _stage_dir_value(stage_dir: Path, output: Path | None) -> str:
    """Relative to the records file's directory when the stage dir is under it (they move together)."""
    stage = Path(stage_dir).absolute()
    if output is not None:
        base = Path(output).absolute().parent
        if stage.is_relative_to(base):
            return stage.relative_to(base).as_posix() or "."
    return str(stage)


def records_text(
    containers: Sequence[Container], *, format: RecordFormat, stage_dir: Path, output: Path | None = None
) -> str:
    """The records as ``format`` text, saying where they are staged (``output``: where they will live)."""
    where = _stage_dir_value(stage_dir, output)
    if format == "json":
        document = {
            FORMAT_KEY: FORMAT_VERSION,
            STAGE_DIR_KEY: where,
            "containers": [container_to_dict(c, containers_dir=stage_dir) for c in containers],
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if format not in RECORD_FORMATS:
        raise ValueError(f"unknown records format {format!r}; choose one of {', '.join(RECORD_FORMATS)}")
    if format == "wfexs":
        from ..provenance import dump_containers  # the reference's shape needs PyYAML's tags

        body = dump_containers(containers, style="wfexs", containers_dir=stage_dir) or ""
    else:
        body = dump_records(containers, containers_dir=stage_dir)
    return f"{STAGE_DIR_COMMENT}{json.dumps(where, ensure_ascii=False)}\n{body}"


def write_records(
    containers: Sequence[Container], output: Path, *, format: RecordFormat, stage_dir: Path
) -> None:
    """Replace ``output`` with the records, all or nothing (fsync + rename)."""
    text = records_text(containers, format=format, stage_dir=stage_dir, output=output)
    try:
        atomic_write_bytes(Path(output), text.encode("utf-8"))
    except OSError as e:
        raise ProvenanceError(f"could not write the records to {output}: {e.strerror or e}") from e


def recorded_stage_dir(containers_file: Path) -> Path | None:
    """The stage dir ``write_records`` noted in ``containers_file``, absolute; None when it noted none."""
    containers_file = Path(containers_file)
    text = read_bounded(containers_file, what="containers record")
    value: Any = None
    if text.lstrip().startswith("{"):
        with contextlib.suppress(ValueError):
            document = json.loads(text)
            value = document.get(STAGE_DIR_KEY) if isinstance(document, dict) else None
    else:
        for line in text.splitlines():
            if line.startswith(STAGE_DIR_COMMENT):
                with contextlib.suppress(ValueError):
                    value = json.loads(line[len(STAGE_DIR_COMMENT) :])
                break
            if line.strip() and not line.lstrip().startswith("#"):
                break
    if not isinstance(value, str) or not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else (containers_file.absolute().parent / path)

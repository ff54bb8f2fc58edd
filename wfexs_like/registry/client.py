"""A native OCI distribution client: tag -> pinned manifest -> verified blobs in the store.

Why not ``docker pull`` + ``docker save``: that needs a daemon, decompresses
every layer into the daemon's storage only to compress it again, and gives
no say over where bytes land. Talking to the registry directly lets every
blob stream once into the content-addressed store, verified by digest as it
arrives, shared between images, resumable, and skipped with no request at
all when it is already there.

Order of publication matters: layers and config first, then the manifest,
then the index, so a manifest found in the store means a complete image.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from ..digests import is_digest, sha256_bytes
from ..errors import (
    IntegrityError,
    ManifestUnknownError,
    PlatformMismatchError,
    RegistryError,
    UnvouchedDigestError,
)
from ..filelocks import FileLock, Timeout
from ..images.blobstore import BlobStore, BlobWriter
from ..images.manifest import (
    ACCEPT_MANIFESTS,
    Descriptor,
    Index,
    Manifest,
    ManifestError,
    Platform,
    detect_media_type,
    image_platform,
    parse_manifest_or_index,
)
from ..progress import cancel_requested, check_cancelled, request_cancel, reset_cancel
from .auth import RegistryAuth
from .certs import HostTls
from .credentials import DOCKER_HUB_HOSTS, CredentialResolver
from .httpio import Response
from .mirrors import MirrorConfig
from .pool import DaemonPool
from .transport import (
    RETRY_STATUSES,
    STREAM_ERRORS,
    RetryPolicy,
    ShortRead,
    Transport,
    content_range_start,
    describe,
    pause,
    safe_url,
)

if TYPE_CHECKING:
    from .image import RemoteImage

log = logging.getLogger(__name__)
T = TypeVar("T")

DOCKER_HUB_API = "registry-1.docker.io"
#: containerd's limit: a manifest bigger than this is an attack or a mistake, not an image.
MAX_MANIFEST_BYTES = 4 << 20
STREAM_CHUNK = 256 << 10
#: After a Ctrl-C, how long workers get to keep their partial files before the pull returns anyway.
CANCEL_GRACE = 0.5
#: How often a wait for another process's lock on a blob looks at the cancellation flag.
LOCK_POLL = 0.2
#: A mirror that could not be reached is not asked again for this long (seconds).
MIRROR_DOWN_FOR = 60.0

#: Where a manifest's digest came from. ``registry``: the registry named it (``Docker-Content-Digest``)
#: and the bytes hash to it; ``pinned``: the reference itself named it (``@sha256:``) and the bytes hash
#: to it; ``tofu``: fetched by tag with no digest from the registry, so the digest is only that of the
#: bytes that arrived (trust on first use: nothing but the connection vouches that they are the tag's).
DigestSource = Literal["registry", "pinned", "tofu"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of one blob. ``image`` names the image that asked for it (first one, if shared)."""

    digest: str
    kind: Literal["start", "advance", "done", "reused"]
    total: int | None
    done: int
    image: str


#: Called from worker threads; keep it quick. An exception raised here aborts that blob.
ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class PullResult:
    registry: str
    repository: str
    reference: str
    manifest_digest: str
    index_digest: str | None
    manifest: Manifest
    config: dict
    platform: Platform
    downloaded_bytes: int
    downloaded_blobs: int
    reused_blobs: int
    #: Which host (``host[:port]``) sent what this pull fetched: ``"index"``, ``"manifest"`` (the host
    #: that resolved them) and each downloaded blob's digest. A mirror's name here, never in the image's.
    served_by: dict[str, str] = field(default_factory=dict)
    #: Who vouches for ``manifest_digest`` (of the index, when there is one): see ``DigestSource``.
    digest_source: DigestSource = "registry"


def image_label(registry: str, repository: str, reference: str) -> str:
    sep = "@" if is_digest(reference) else ":"
    return f"{registry}/{repository}{sep}{reference}"


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1, with or without a port, the way Docker decides."""
    name = _strip_port(host)
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _host_matches(host: str, patterns: Iterable[str]) -> bool:
    """``insecure_registries`` entries: ``host``, ``host:port`` or a CIDR like ``10.0.0.0/8``."""
    bare = _strip_port(host).lower()
    for pat in patterns:
        pat = pat.strip().lower()
        for prefix in ("http://", "https://"):
            pat = pat.removeprefix(prefix)
        pat = pat.rstrip("/")
        if pat in (host.lower(), bare):
            return True
        if "/" in pat:
            try:
                net = ipaddress.ip_network(pat, strict=False)
                if ipaddress.ip_address(bare) in net:
                    return True
            except ValueError:
                continue
    return False


class _Endpoint:
    """One registry as the API sees it: base URL (scheme decided once), auth state.

    A mirror has its own endpoint (and a transport that retries less: the
    next host is the better retry); one that could not even be pinged is
    skipped until ``down_until`` (``time.monotonic()``), then asked again.
    """

    def __init__(
        self,
        name: str,
        api_host: str,
        scheme: str,
        explicit_scheme: bool,
        auth: RegistryAuth,
        *,
        registry: str = "",
        transport: Transport,
        policy: RetryPolicy,
        mirror: bool = False,
    ):
        self.name = name
        self.api_host = api_host
        self.scheme = scheme
        self.explicit_scheme = explicit_scheme
        self.auth = auth
        #: The registry string this endpoint was made for (the cache key).
        self.registry = registry or name
        self.transport = transport
        self.policy = policy
        self.mirror = mirror
        self.down_until = 0.0
        self.pinged = False
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.api_host}"


@dataclass(frozen=True)
class _Source:
    """One host to ask for an image (a mirror or the primary), with the name the image has there."""

    endpoint: _Endpoint
    repository: str
    reference: str

    @property
    def host(self) -> str:
        return self.endpoint.name


@dataclass
class _BlobOutcome:
    downloaded: bool
    nbytes: int
    host: str | None = None


@dataclass(frozen=True)
class ManifestChoice:
    """The one image manifest a reference resolved to, and the index it was chosen from (if any)."""

    manifest: Manifest
    index: Index | None
    #: ``"index"`` / ``"manifest"`` -> the host that resolved it (absent: it came from the store).
    served_by: Mapping[str, str] = field(default_factory=dict, compare=False)
    #: Who vouches for the digest of what the reference named (the index's, when there is one).
    digest_source: DigestSource = field(default="registry", compare=False)


@dataclass(frozen=True)
class _Resolved:
    """One manifest or index as one host answered for it."""

    digest: str
    media_type: str
    raw: bytes
    #: The host that answered; None when the store alone did (a digest already stored).
    host: str | None
    digest_source: DigestSource


def check_platform(
    label: str, config: dict, from_index: bool, want: Platform, explicit: Platform | None
) -> Platform:
    """The platform the config declares; an explicit request a single-platform image can't meet fails.

    An index entry was already chosen by platform, so only a single manifest
    needs this check, and it needs the config: the manifest doesn't say.
    """
    actual = image_platform(config)
    if from_index:
        return actual
    if explicit is not None and not explicit.matches(actual):
        raise PlatformMismatchError(
            f"the image is for {actual} only, not the requested {explicit} ({label} is a "
            "single-platform image); pull it without --platform or pick another tag.",
            available=[str(actual)],
        )
    if explicit is None and not want.matches(actual):
        log.warning("%s is built for %s, which is not this machine's platform", label, actual)
    return actual


@dataclass
class _Plan:
    """What one image needs, once its manifests are resolved."""

    index: int
    sources: list[_Source]
    registry: str
    repository: str
    reference: str
    label: str
    manifest: Manifest
    index_obj: Index | None
    config: dict
    platform: Platform
    #: Blobs fetched while planning (the config), with what it took.
    prefetched: dict[str, _BlobOutcome]
    served_by: dict[str, str]
    digest_source: DigestSource

    @property
    def blobs(self) -> list[Descriptor]:
        """Config and layers, each digest once (a manifest may repeat an empty layer)."""
        seen: dict[str, Descriptor] = {}
        for d in (self.manifest.config, *self.manifest.layers):
            seen.setdefault(d.digest, d)
        return list(seen.values())


class RegistryClient:
    """Pull images from OCI / Docker v2 registries into a BlobStore.

    Scheme: HTTPS, except loopback hosts and ``insecure_registries`` which
    start with plain HTTP (as Docker does) and switch to HTTPS when the
    server turns out to speak TLS; a registry written ``https://host`` or
    ``http://host`` is taken at its word.

    TLS is verified against the system store (or ``ca_bundle``, which then
    replaces it) plus the CA certificates of ``cert_dir`` — or, without one,
    of the host's directory under ``~/.config/containers/certs.d``,
    ``/etc/containers/certs.d`` or ``/etc/docker/certs.d`` — except for hosts
    in ``insecure_registries``. Credentials come from ``auth_file`` alone when
    given, else from where docker and podman keep them (see ``credentials``).
    ``retries`` is how many times a transient failure is tried again (0: one
    attempt only).

    Mirrors: ``mirrors`` (``{"docker.io": ["127.0.0.1:5001"]}``, what
    ``--mirror`` and the config file's ``[mirrors]`` give) come first, then
    those of ``registries_conf``: a containers-registries.conf(5) file, or
    None for where podman looks (when those files exist), or False for none.
    A pull tries each mirror in order and falls back to the next, and finally
    to the primary, on any error; every digest is checked whichever host sent
    the bytes, a wrong blob is discarded before it is published, and results
    keep the name asked for (``PullResult.served_by`` says who sent what).

    A manifest fetched by tag whose registry sent no ``Docker-Content-Digest``
    is trusted on first use and said so (``PullResult.digest_source ==
    "tofu"``); with ``require_digest`` it is refused instead.
    """

    def __init__(
        self,
        *,
        insecure_registries: Iterable[str] = (),
        platform: Platform | None = None,
        max_workers: int = 4,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 60,
        docker_config: Path | None = None,
        progress: ProgressCallback | None = None,
        ca_bundle: str | Path | None = None,
        auth_file: Path | None = None,
        cert_dir: Path | None = None,
        mirrors: Mapping[str, Sequence[str]] | None = None,
        registries_conf: Path | Literal[False] | None = None,
        require_digest: bool = False,
    ) -> None:
        if auth_file is not None and not Path(auth_file).is_file():
            raise RegistryError(
                f"--authfile {auth_file}: no such file; give the auth.json that `podman login` or "
                "`skopeo login` writes, or a docker config.json"
            )
        if retries < 0:
            raise RegistryError(f"--retry-times {retries}: give 0 or more")
        self._options: dict[str, Any] = {
            "insecure_registries": tuple(insecure_registries),
            "platform": platform,
            "max_workers": max_workers,
            "retries": retries,
            "backoff": backoff,
            "timeout": timeout,
            "docker_config": docker_config,
            "progress": progress,
            "ca_bundle": ca_bundle,
            "auth_file": auth_file,
            "cert_dir": cert_dir,
            "mirrors": mirrors,
            "registries_conf": registries_conf,
            "require_digest": require_digest,
        }
        self.mirrors = MirrorConfig.load(mirrors, registries_conf)
        self.insecure_registries = self._options["insecure_registries"]
        self.platform = platform
        self.require_digest = require_digest
        self.max_workers = max(1, max_workers)
        self.policy = RetryPolicy(retries=retries, backoff=backoff)
        self.tls = HostTls(insecure=self._insecure, cert_dir=cert_dir, ca_bundle=ca_bundle)
        self.transport = Transport(
            policy=self.policy, timeout=timeout, pool_size=self.max_workers + 4, tls_for=self.tls.for_url
        )
        #: A mirror that fails is worth one more try at most: the next host is the better retry.
        self.mirror_policy = RetryPolicy(retries=min(1, retries), backoff=backoff)
        self.mirror_transport = Transport(
            policy=self.mirror_policy,
            timeout=timeout,
            pool_size=self.max_workers + 4,
            tls_for=self.tls.for_url,
        )
        self.credentials = CredentialResolver(docker_config, auth_file=auth_file)
        self.progress = progress
        self._endpoints: dict[str, _Endpoint] = {}
        self._mirror_endpoints: dict[str, _Endpoint] = {}
        self._lock = threading.Lock()

    def _insecure(self, host: str) -> bool:
        return _host_matches(host, self.insecure_registries) or self.mirrors.is_insecure(host)

    def copy_with(self, **changes: Any) -> RegistryClient:
        """A new client with this one's settings except ``changes`` (``retries=0`` for a quick probe).

        A probe asking a registry one question must reach it the way the pull
        does: same logins (``auth_file``), same certificates (``cert_dir``).
        """
        return RegistryClient(**{**self._options, **changes})

    # -- lifecycle --------------------------------------------------------------
    def close(self) -> None:
        self.transport.close()
        self.mirror_transport.close()
        self.tls.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API -------------------------------------------------------------
    def resolve(
        self, registry: str, repository: str, reference: str, *, store: BlobStore | None = None
    ) -> tuple[str, str, bytes]:
        """(digest, media type, raw bytes) of what ``reference`` names; the digest is of those bytes.

        A HEAD comes first because it is cheap and, on Docker Hub, does not count
        against the pull quota: when ``store`` already holds the digest it names,
        no GET follows. A ``Docker-Content-Digest`` that disagrees with the bytes
        is an IntegrityError, never silently corrected. Mirrors are asked first.
        """
        label = image_label(registry, repository, reference)
        sources = self._sources(registry, repository, reference)
        got = self._first(
            sources, label, "resolving it", lambda src: self._resolve_at(src, src.reference, label, store)
        )
        return got.digest, got.media_type, got.raw

    def _resolve_at(self, src: _Source, reference: str, label: str, store: BlobStore | None) -> _Resolved:
        """``resolve`` on one host.

        A manifest that does not match its digest is fetched once more (see ``_fetch_again``).
        """
        wrong = 0
        while True:
            try:
                return self._resolve_once(src, reference, label, store)
            except IntegrityError as e:
                if not _fetch_again(src.endpoint, wrong, src.endpoint.policy):
                    raise
                wrong += 1
                log.warning("%s: %s; fetching it once more", label, e)
                pause(src.endpoint.policy.delay(0))

    def _resolve_once(self, src: _Source, reference: str, label: str, store: BlobStore | None) -> _Resolved:
        ep, repository = src.endpoint, src.repository
        if is_digest(reference):
            cached = _from_store(store, reference)
            if cached is not None:
                return _Resolved(reference, detect_media_type(cached), cached, None, "pinned")
            raw, header_digest, ctype = self._get_manifest(ep, repository, reference, label)
            actual = sha256_bytes(raw)
            if actual != reference:
                raise IntegrityError(
                    f"the registry sent a manifest for {label} whose sha256 is {actual}, not the "
                    "digest asked for; the registry (or something between us) is serving wrong data.",
                    expected=reference,
                    actual=actual,
                )
            _check_header_digest(header_digest, actual, label)
            return _Resolved(actual, detect_media_type(raw, ctype), raw, src.host, "pinned")

        head_digest = self._head_manifest(ep, repository, reference, label)
        if head_digest is not None:
            cached = _from_store(store, head_digest)
            if cached is not None:
                return _Resolved(head_digest, detect_media_type(cached), cached, src.host, "registry")
        raw, header_digest, ctype = self._get_manifest(ep, repository, reference, label)
        actual = sha256_bytes(raw)
        _check_header_digest(header_digest, actual, label)
        if head_digest is not None and head_digest != actual and header_digest != actual:
            raise IntegrityError(
                f"the registry said (HEAD) that {label} is {head_digest} but the manifest fetched "
                f"hashes to {actual}. Either the tag moved in between (pull again) or the registry lies.",
                expected=head_digest,
                actual=actual,
            )
        vouched = actual in (head_digest, (header_digest or "").strip())
        if not vouched and self.require_digest:
            raise UnvouchedDigestError(
                f"the registry sent the manifest of {label} without a Docker-Content-Digest header, so "
                f"nothing but the connection vouches that {actual} is what the tag names; refused because "
                "--require-digest is set. Drop --require-digest to accept it (recorded as trust on first "
                "use), pin the image by digest, or use a registry (or proxy) that sends the header."
            )
        source: DigestSource = "registry" if vouched else "tofu"
        return _Resolved(actual, detect_media_type(raw, ctype), raw, src.host, source)

    def pull(
        self,
        registry: str,
        repository: str,
        reference: str,
        store: BlobStore,
        *,
        platform: Platform | None = None,
    ) -> PullResult:
        """Fetch one image (manifest, index, config, layers) into ``store``; see ``pull_many``."""
        result = self.pull_many([(registry, repository, reference)], store, platform=platform)[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def pull_many(
        self,
        requests: Sequence[tuple[str, str, str]],
        store: BlobStore,
        *,
        platform: Platform | None = None,
    ) -> list[PullResult | BaseException]:
        """Pull several images through one worker pool; one result or exception per request.

        Each image's layers are scheduled as soon as its manifest is resolved,
        every distinct blob once, so a base layer shared by several images is
        downloaded once and the layers of all images stream in parallel
        (``max_workers`` at a time). ``downloaded_*`` count the transfers
        attributed to the image that scheduled a blob; the others count it in
        ``reused_blobs``, so sums over all results are the real network totals.
        """
        return self._pull_all([(*r, None) for r in requests], store, platform)

    def image(
        self, registry: str, repository: str, reference: str, *, platform: Platform | None = None
    ) -> RemoteImage:
        """The image ``reference`` names, as a lazy ``Image``: nothing is asked until it is needed."""
        from .image import RemoteImage

        return RemoteImage(self, registry, repository, reference, platform=platform)

    def download(self, url: str, dest: Path, *, expected_digest: str | None = None) -> str:
        """Fetch a plain file (a SIF) over http(s) to ``dest``; see ``registry.download.download``."""
        from .download import download

        return download(self, url, dest, expected_digest=expected_digest)

    # -- planning ---------------------------------------------------------------
    def _pull_all(
        self,
        wanted: Sequence[tuple[str, str, str, ManifestChoice | None]],
        store: BlobStore,
        platform: Platform | None,
    ) -> list[PullResult | BaseException]:
        """``pull_many``, where an entry may carry the manifests already chosen (a resolved RemoteImage)."""
        explicit = platform or self.platform
        want = explicit or Platform.host()
        results: list[PullResult | BaseException | None] = [None] * len(wanted)
        plans: list[_Plan] = []
        blob_futs: dict[str, Future[_BlobOutcome]] = {}
        owner: dict[str, int] = {}
        pool = DaemonPool(self.max_workers, "wfexs-pull")
        try:
            plan_futs = {
                pool.submit(self._plan, i, reg, repo, ref, store, want, explicit, chosen): i
                for i, (reg, repo, ref, chosen) in enumerate(wanted)
            }
            for fut in as_completed(plan_futs):
                try:
                    plan = fut.result()
                except Exception as e:
                    results[plan_futs[fut]] = e
                    continue
                plans.append(plan)
                for digest, outcome in plan.prefetched.items():
                    if digest not in blob_futs or outcome.downloaded:
                        done: Future[_BlobOutcome] = Future()
                        done.set_result(outcome)
                        blob_futs[digest] = done
                        owner[digest] = plan.index
                for desc in plan.blobs:
                    if desc.digest not in blob_futs:
                        owner[desc.digest] = plan.index
                        blob_futs[desc.digest] = pool.submit(
                            self._fetch_blob_locked, plan.sources, desc, store, plan.label
                        )
            for plan in plans:
                try:
                    results[plan.index] = self._finish(plan, store, blob_futs, owner)
                except Exception as e:
                    results[plan.index] = e
        except BaseException as e:
            self._stop_workers(pool, interrupted=isinstance(e, KeyboardInterrupt))
            raise
        pool.shutdown()
        pool.join()
        return [r if r is not None else RegistryError("internal error: no result") for r in results]

    def _stop_workers(self, pool: DaemonPool, *, interrupted: bool) -> None:
        """Stop a pull's workers without waiting for the network.

        On a Ctrl-C every worker is told to stop (the flag they poll per
        chunk) and the sockets they read are cut, so each keeps its partial
        file and returns within moments; the pull waits for that at most
        ``CANCEL_GRACE`` seconds, then leaves the daemon threads behind.
        A flag this pull raised itself (a library caller's plain Ctrl-C, no
        command-line handler) is lowered again afterwards, so the next call
        in the same process (a notebook's next cell) is not cancelled too.
        """
        raised_here = interrupted and not cancel_requested()
        if interrupted:
            request_cancel()
            self.transport.abort_streams()
            self.mirror_transport.abort_streams()
        pool.shutdown(cancel_futures=True)
        if interrupted:
            pool.join(CANCEL_GRACE)
        if raised_here:
            reset_cancel()

    def _select(
        self,
        registry: str,
        repository: str,
        reference: str,
        want: Platform,
        store: BlobStore | None = None,
    ) -> ManifestChoice:
        """Resolve ``reference`` to one image manifest, choosing ``want`` from an index.

        The index's entry is fetched by digest from the same hosts, mirrors first.
        """
        label = image_label(registry, repository, reference)
        sources = self._sources(registry, repository, reference)

        def top(src: _Source) -> tuple[Manifest | Index, _Resolved]:
            got = self._resolve_at(src, src.reference, label, store)
            return parse_manifest_or_index(got.raw), got

        doc, got = self._first(sources, label, "resolving it", top)
        host, vouched_by = got.host, got.digest_source
        if isinstance(doc, Manifest):
            return ManifestChoice(doc, None, {"manifest": host} if host else {}, vouched_by)
        try:
            chosen = doc.select(want)
        except PlatformMismatchError as e:
            offered = ", ".join(e.available) or "no platform-tagged manifests"
            raise PlatformMismatchError(
                f"no image for platform {want} in {label}; it offers: {offered}. "
                "Choose one with --platform os/arch[/variant].",
                available=e.available,
            ) from None
        child_got = self._first(
            sources,
            label,
            f"fetching manifest {chosen.digest}",
            lambda src: self._resolve_at(src, chosen.digest, label, store),
        )
        child_raw, child_host = child_got.raw, child_got.host
        if len(child_raw) != chosen.size:
            raise IntegrityError(
                f"manifest {chosen.digest} of {label} is {len(child_raw)} bytes, its index says "
                f"{chosen.size}; the registry is serving wrong data",
                expected=chosen.digest,
            )
        child = parse_manifest_or_index(child_raw)
        if not isinstance(child, Manifest):
            raise ManifestError(f"index entry {chosen.digest} of {label} is not an image manifest")
        served = {"index": host, "manifest": child_host}
        # The index pins the child by digest: the image is as vouched for as the index is.
        return ManifestChoice(child, doc, {k: v for k, v in served.items() if v}, vouched_by)

    def _plan(
        self,
        i: int,
        registry: str,
        repository: str,
        reference: str,
        store: BlobStore,
        want: Platform,
        explicit: Platform | None,
        chosen: ManifestChoice | None = None,
    ) -> _Plan:
        sources = self._sources(registry, repository, reference)
        label = image_label(registry, repository, reference)
        if chosen is None:
            chosen = self._select(registry, repository, reference, want, store)
        # The config is tiny and says which platform the image is really for: get it
        # before any layer, so a wrong platform costs one small blob, not the image.
        cfg = chosen.manifest.config
        outcome = self._fetch_blob_locked(sources, cfg, store, label)
        config = _load_config(store, cfg.digest, label)
        actual = check_platform(label, config, chosen.index is not None, want, explicit)
        return _Plan(
            index=i,
            sources=sources,
            registry=registry,
            repository=repository,
            reference=reference,
            label=label,
            manifest=chosen.manifest,
            index_obj=chosen.index,
            config=config,
            platform=actual,
            prefetched={cfg.digest: outcome},
            served_by=dict(chosen.served_by),
            digest_source=chosen.digest_source,
        )

    def _finish(
        self,
        plan: _Plan,
        store: BlobStore,
        blob_futs: dict[str, Future[_BlobOutcome]],
        owner: dict[str, int],
    ) -> PullResult:
        dl_bytes = dl_blobs = reused = 0
        first_error: BaseException | None = None
        served_by = dict(plan.served_by)
        for desc in plan.blobs:
            try:
                outcome = blob_futs[desc.digest].result()
            except Exception as e:
                first_error = first_error or e
                continue
            if outcome.host is not None:
                served_by[desc.digest] = outcome.host
            if outcome.downloaded and owner[desc.digest] == plan.index:
                dl_blobs += 1
                dl_bytes += outcome.nbytes
            else:
                reused += 1
        if first_error is not None:
            raise first_error
        _put_if_missing(store, plan.manifest.raw, plan.manifest.digest)
        if plan.index_obj is not None:
            _put_if_missing(store, plan.index_obj.raw, plan.index_obj.digest)
        return PullResult(
            registry=plan.registry,
            repository=plan.repository,
            reference=plan.reference,
            manifest_digest=plan.manifest.digest,
            index_digest=plan.index_obj.digest if plan.index_obj is not None else None,
            manifest=plan.manifest,
            config=plan.config,
            platform=plan.platform,
            downloaded_bytes=dl_bytes,
            downloaded_blobs=dl_blobs,
            reused_blobs=reused,
            served_by=served_by,
            digest_source=plan.digest_source,
        )

    # -- blobs ------------------------------------------------------------------
    def _emit(self, digest: str, kind: str, total: int | None, done: int, image: str) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(digest, kind, total, done, image))  # type: ignore[arg-type]

    def _fetch_blob_locked(
        self, sources: Sequence[_Source], desc: Descriptor, store: BlobStore, label: str
    ) -> _BlobOutcome:
        """Download unless present; the per-digest file lock makes other processes wait, not repeat.

        Pinned first, so a blob found present (or downloaded here) stays until the pins are released.
        """
        store.pin(desc.digest)
        if store.has(desc.digest):
            self._emit(desc.digest, "reused", desc.size, desc.size, label)
            return _BlobOutcome(False, 0)
        lock = store.lock(desc.digest)
        _acquire(lock)
        try:
            if store.has(desc.digest):
                self._emit(desc.digest, "reused", desc.size, desc.size, label)
                return _BlobOutcome(False, 0)
            nbytes, host = self._download(sources, desc, store, label)
            return _BlobOutcome(True, nbytes, host)
        finally:
            lock.release()

    def _download(
        self, sources: Sequence[_Source], desc: Descriptor, store: BlobStore, label: str
    ) -> tuple[int, str]:
        """(bytes, host that sent them): a foreign layer's ``urls`` first, then mirrors, then the registry.

        A mirror's failure leaves nothing behind: a wrong blob is discarded by
        the writer, a broken-off one's partial file is dropped too, so the next
        host's bytes are never appended to a failed host's.
        """
        primary = sources[-1]
        errors: list[str] = []
        for url in foreign_urls(desc):
            try:
                nbytes = self._download_from(primary.endpoint, primary.repository, desc, store, label, url)
                return nbytes, urlsplit(url).netloc.rpartition("@")[2]
            except (RegistryError, IntegrityError) as e:
                errors.append(f"{safe_url(url)}: {e}")
                log.warning(
                    "%s: foreign layer %s not fetched from %s: %s", label, desc.digest, safe_url(url), e
                )

        def attempt(src: _Source) -> tuple[int, str]:
            try:
                return self._download_from(src.endpoint, src.repository, desc, store, label, None), src.host
            except Exception:
                if src.endpoint.mirror and src.endpoint.pinged:  # unreached, it sent nothing to drop
                    store.writer(desc.digest, desc.size, resumable=True).discard()
                raise

        try:
            return self._first(sources, label, f"downloading blob {desc.digest}", attempt)
        except (RegistryError, IntegrityError) as e:
            if errors:
                raise RegistryError(
                    f"layer {desc.digest} of {label} could be fetched neither from its URLs "
                    f"({'; '.join(errors)}) nor from the registry ({e})",
                    status=getattr(e, "status", None),
                ) from e
            raise

    def _download_from(
        self,
        ep: _Endpoint,
        repository: str,
        desc: Descriptor,
        store: BlobStore,
        label: str,
        url: str | None,
    ) -> int:
        digest, size = desc.digest, desc.size
        what = f"downloading blob {digest} of {label}" + (
            f" from {safe_url(url)}" if url else f" from mirror {ep.name}" if ep.mirror else ""
        )
        policy = self.policy if url else ep.policy
        attempt = 0
        fetched = 0
        wrong = 0
        while True:
            check_cancelled()
            writer = store.writer(digest, size, resumable=True)
            try:
                if writer.offset < size:
                    self._emit(digest, "start", size, writer.offset, label)
                    headers = {"Range": f"bytes={writer.offset}-"} if writer.offset else {}
                    resp = self._blob_get(ep, repository, digest, url, headers, what)
                    with resp:
                        if resp.status_code == 206:
                            if content_range_start(resp) != writer.offset:
                                writer.restart()
                                raise ShortRead("unexpected Content-Range; starting over")
                        elif resp.status_code == 200:
                            if writer.offset:
                                log.info("%s: server ignored Range, restarting from 0", what)
                                writer.restart()
                        elif resp.status_code == 416 and writer.offset:
                            writer.restart()
                            raise ShortRead("range not satisfiable; starting over")
                        else:
                            _raise_for(resp, what, kind="blob", label=label)
                        for chunk in resp.iter_content(STREAM_CHUNK):
                            writer.write(chunk)
                            fetched += len(chunk)
                            self._emit(digest, "advance", size, writer.written, label)
                            check_cancelled()
                if writer.written < size:
                    raise ShortRead(f"body ended at {writer.written} of {size} bytes")
                writer.commit()
            except IntegrityError as e:
                writer.discard()
                if not _fetch_again(ep, wrong, policy):
                    raise
                wrong += 1
                log.warning("%s: %s; fetching it once more", what, e)
                pause(policy.delay(0))
                continue
            except (*STREAM_ERRORS, ShortRead) as e:
                _park(writer)
                check_cancelled()  # a body cut by Ctrl-C is not a network failure to retry
                why = e if isinstance(e, ShortRead) else describe(e, url or ep.base)
                if attempt >= policy.retries:
                    raise RegistryError(
                        f"{what}: the transfer kept breaking off ({why}) after {attempt + 1} attempts. "
                        "What arrived is kept and the next pull resumes from there.",
                    ) from e
                delay = policy.delay(attempt)
                log.info("%s: %s; resuming in %.2f s", what, why, delay)
                attempt += 1
                pause(delay)
                continue
            except BaseException:
                _park(writer)
                raise
            self._emit(digest, "done", size, size, label)
            return fetched

    def _blob_get(
        self,
        ep: _Endpoint,
        repository: str,
        digest: str,
        url: str | None,
        headers: dict[str, str],
        what: str,
    ) -> Response:
        """A blob's GET response (any status), from the registry or, for a foreign layer, its ``url``."""
        if url is None:
            return self._blob_response(ep, repository, digest, headers, what)
        return self.transport.get_following_redirects(url, headers=headers, auth_headers={}, what=what)

    def _open_blob_at(
        self, ep: _Endpoint, repository: str, desc: Descriptor, url: str | None, offset: int, label: str
    ) -> Response:
        """A streaming 200/206 answer for ``desc`` from byte ``offset``; any other answer raises.

        ``ep`` names the image's registry: its mirrors are asked first. Only
        opening falls back to the next host; the bytes are checked by the
        reader's digest, and a wrong blob is an IntegrityError there.
        """
        what = f"reading blob {desc.digest} of {label}" + (f" from {safe_url(url)}" if url else "")
        headers = {"Range": f"bytes={offset}-"} if offset else {}

        def attempt(src: _Source) -> Response:
            resp = self._blob_get(src.endpoint, src.repository, desc.digest, url, headers, what)
            if resp.status_code not in (200, 206):
                with resp:
                    _raise_for(resp, what, kind="blob", label=label)
            return resp

        if url is not None or ep.mirror:
            return attempt(_Source(ep, repository, desc.digest))
        return self._first(self._sources(ep.registry, repository, desc.digest), label, what, attempt)

    def _blob_response(
        self, ep: _Endpoint, repository: str, digest: str, headers: dict[str, str], what: str
    ) -> Response:
        self._ping(ep, what)
        url = f"{ep.base}/v2/{repository}/blobs/{digest}"
        auth_h = ep.auth.headers(repository, what)
        resp = ep.transport.get_following_redirects(url, headers=headers, auth_headers=auth_h, what=what)
        if resp.status_code == 401:
            resp.close()
            auth_h = ep.auth.challenged(resp, repository, what, auth_h.get("Authorization"))
            resp = ep.transport.get_following_redirects(url, headers=headers, auth_headers=auth_h, what=what)
        if resp.status_code in (401, 403):
            resp.close()
            raise ep.auth.failure(what, resp.status_code, url, repository)
        return resp

    # -- manifests --------------------------------------------------------------
    def _head_manifest(self, ep: _Endpoint, repository: str, reference: str, label: str) -> str | None:
        resp = self._request(ep, "HEAD", f"/v2/{repository}/manifests/{reference}", repository, label)
        with resp:
            if resp.status_code != 200:
                return None  # the GET that follows produces the real error, with a body
            d = resp.headers.get("Docker-Content-Digest", "").strip()
            return d if is_digest(d) and d.startswith("sha256:") else None

    def _get_manifest(
        self, ep: _Endpoint, repository: str, reference: str, label: str
    ) -> tuple[bytes, str | None, str | None]:
        what = f"fetching the manifest of {label}"
        attempt = 0
        while True:
            resp = self._request(
                ep, "GET", f"/v2/{repository}/manifests/{reference}", repository, label, stream=True
            )
            with resp:
                if resp.status_code != 200:
                    _raise_for(resp, what, kind="manifest", label=label)
                try:
                    raw = _read_limited(resp, MAX_MANIFEST_BYTES, what)
                except STREAM_ERRORS as e:
                    check_cancelled()
                    if attempt >= ep.policy.retries:
                        raise RegistryError(
                            f"{what}: the transfer kept breaking off ({describe(e, resp.url)}) after "
                            f"{attempt + 1} attempts; try again later"
                        ) from e
                    pause(ep.policy.delay(attempt))
                    attempt += 1
                    continue
                return raw, resp.headers.get("Docker-Content-Digest"), resp.headers.get("Content-Type")

    def _request(
        self,
        ep: _Endpoint,
        method: str,
        path: str,
        repository: str,
        label: str,
        *,
        stream: bool = False,
    ) -> Response:
        """A registry API call with the Accept header for manifests and one re-authentication on 401."""
        what = f"{'checking' if method == 'HEAD' else 'fetching'} the manifest of {label}"
        self._ping(ep, label)
        url = ep.base + path
        headers = {"Accept": ACCEPT_MANIFESTS}

        def send(auth_headers: dict[str, str]) -> Response:
            return ep.transport.get_following_redirects(
                url,
                headers=headers,
                auth_headers=auth_headers,
                what=what,
                method=method,
                stream=stream,
            )

        auth_h = ep.auth.headers(repository, what)
        resp = send(auth_h)
        if resp.status_code == 401:
            resp.close()
            resp = send(ep.auth.challenged(resp, repository, what, auth_h.get("Authorization")))
        if resp.status_code in (401, 403):
            resp.close()
            raise ep.auth.failure(f"{what}", resp.status_code, url, repository)
        return resp

    # -- endpoints --------------------------------------------------------------
    def _sources(self, registry: str, repository: str, reference: str) -> list[_Source]:
        """The hosts to ask for an image, in order: its mirrors, then its (maybe relocated) registry."""
        if not self.mirrors:
            return [_Source(self._endpoint(registry), repository, reference)]
        return [
            _Source(self._endpoint(s.registry, mirror=s.mirror), s.repository, s.reference)
            for s in self.mirrors.sources(registry, repository, reference)
        ]

    def _first(self, sources: Sequence[_Source], label: str, what: str, attempt: Callable[[_Source], T]) -> T:
        """``attempt`` on each host in turn until one succeeds; the last one's error is the one raised.

        Any error from a mirror sends us on (unreachable, 5xx, 404, refused
        credentials, wrong bytes): the primary registry is the authority and
        the digests decide what is right. A mirror that could not be reached
        at all is skipped from then on.
        """
        last = len(sources) - 1
        for i, src in enumerate(sources):
            if i < last and src.endpoint.down_until > time.monotonic():
                continue
            try:
                return attempt(src)
            except Exception as e:
                if i == last:
                    raise
                if not src.endpoint.pinged:
                    src.endpoint.down_until = time.monotonic() + MIRROR_DOWN_FOR
                log.warning(
                    "%s: mirror %s failed while %s (%s); trying %s",
                    label,
                    src.host,
                    what,
                    e,
                    sources[i + 1].host,
                )
        raise AssertionError("unreachable: the primary registry is always the last source")

    def _endpoint(self, registry: str, *, mirror: bool = False) -> _Endpoint:
        endpoints = self._mirror_endpoints if mirror else self._endpoints
        with self._lock:
            ep = endpoints.get(registry)
            if ep is not None:
                return ep
            name = registry.strip().rstrip("/")
            explicit = None
            if "://" in name:
                explicit, _, name = name.partition("://")
                explicit = explicit.lower()
                if explicit not in ("http", "https"):
                    raise RegistryError(f"unsupported registry scheme {explicit!r} in {registry!r}")
            host = name.lower()
            api_host = DOCKER_HUB_API if host in DOCKER_HUB_HOSTS else host
            if explicit:
                scheme = explicit
            elif is_loopback(api_host) or self._insecure(api_host):
                scheme = "http"
            else:
                scheme = "https"
            transport = self.mirror_transport if mirror else self.transport
            # A mirror's logins are looked up under the mirror's own name.
            auth = RegistryAuth(registry=host, transport=transport, resolver=self.credentials)
            ep = _Endpoint(
                host,
                api_host,
                scheme,
                explicit is not None,
                auth,
                registry=registry,
                transport=transport,
                policy=self.mirror_policy if mirror else self.policy,
                mirror=mirror,
            )
            endpoints[registry] = ep
            return ep

    def base_url(self, registry: str) -> str:
        """The API base URL used for ``registry`` (``docker.io`` -> ``https://registry-1.docker.io``)."""
        return self._endpoint(registry).base

    def _ping(self, ep: _Endpoint, purpose: str) -> None:
        """``GET /v2/`` once per registry: learn the auth challenge and whether it really speaks TLS."""
        if ep.pinged:
            return
        with ep.lock:
            if ep.pinged:
                return
            for _ in range(2):
                url = f"{ep.base}/v2/"
                what = f"contacting {url} ({purpose})"
                resp = ep.transport.send("GET", url, what=what)
                with resp:
                    if (
                        resp.status_code == 400
                        and ep.scheme == "http"
                        and not ep.explicit_scheme
                        and "https" in resp.text.lower()
                    ):
                        log.info("%s speaks TLS; switching to https", ep.api_host)
                        ep.scheme = "https"
                        continue
                    if resp.status_code == 401:
                        ep.auth.learn(resp.headers.get("WWW-Authenticate"))
                    elif resp.status_code >= 500:
                        raise RegistryError(
                            f"{what}: the registry is failing (HTTP {resp.status_code}); try again "
                            "later, or allow more retries with --retry-times N",
                            status=resp.status_code,
                            url=url,
                        )
                break
            ep.pinged = True


# -- helpers --------------------------------------------------------------------
def _acquire(lock: FileLock) -> None:
    """Wait for another process's download of the same blob, but not past a Ctrl-C."""
    while True:
        try:
            lock.acquire(timeout=LOCK_POLL)
            return
        except Timeout:
            check_cancelled()


def _park(writer: BlobWriter) -> None:
    """Keep what arrived for a later resume; an empty partial is just litter."""
    if writer.written:
        writer.close_keep_partial()
    else:
        writer.discard()


def _from_store(store: BlobStore | None, digest: str) -> bytes | None:
    """The stored bytes of ``digest`` if present and right, pinned: the pull relies on them staying."""
    if store is None:
        return None
    store.pin(digest)
    if not store.has(digest):
        return None
    try:
        raw = store.path(digest).read_bytes()
    except OSError:
        return None
    return raw if sha256_bytes(raw) == digest else None


def _load_config(store: BlobStore, digest: str, label: str) -> dict:
    try:
        config = json.loads(store.path(digest).read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"the image config {digest} of {label} is not JSON: {e}") from e
    if not isinstance(config, dict):
        raise ManifestError(f"the image config {digest} of {label} is not a JSON object")
    return config


def foreign_urls(desc: Descriptor) -> list[str]:
    """The http(s) ``urls`` of a non-distributable layer: tried before the registry itself."""
    return [u for u in desc.urls if urlsplit(u).scheme in ("http", "https")]


def _fetch_again(ep: _Endpoint, wrong: int, policy: RetryPolicy) -> bool:
    """Whether bytes that arrived wrong are worth one more fetch from ``ep``: once, from the registry.

    A flipped bit in transit (a flaky proxy, a bad NIC) is gone on the next
    try, while a server that stores wrong bytes sends them again: one more
    fetch tells the two apart at the cost of one blob. A mirror is not asked
    again (the registry behind it is the better retry), nor is anything
    with ``--retry-times 0``.
    """
    return not ep.mirror and wrong < min(1, policy.retries)


def _put_if_missing(store: BlobStore, raw: bytes, digest: str) -> None:
    store.pin(digest)
    if not store.has(digest):
        store.put_bytes(raw, digest)


def _check_header_digest(header: str | None, actual: str, label: str) -> None:
    header = (header or "").strip()
    if header.startswith("sha256:") and header != actual:
        raise IntegrityError(
            f"the registry's Docker-Content-Digest for {label} says {header} but the manifest it sent "
            f"hashes to {actual}; refusing it (a broken registry or proxy, or tampering).",
            expected=header,
            actual=actual,
        )


def _read_limited(resp: Response, limit: int, what: str) -> bytes:
    buf = bytearray()
    for chunk in resp.iter_content(64 << 10):
        check_cancelled()
        buf += chunk
        if len(buf) > limit:
            raise RegistryError(
                f"{what}: response larger than {limit} bytes; refusing it", url=safe_url(resp.url)
            )
    return bytes(buf)


def _error_codes(resp: Response) -> list[tuple[str, str]]:
    try:
        data: Any = resp.json()
    except ValueError:
        return []
    out = []
    if isinstance(data, dict):
        for err in data.get("errors") or []:
            if isinstance(err, dict):
                out.append((str(err.get("code", "")), str(err.get("message", ""))))
    return out


def _raise_for(resp: Response, what: str, *, kind: str, label: str) -> None:
    """Turn a final non-success answer into the error a user can act on."""
    status = resp.status_code
    codes = _error_codes(resp) if resp.method != "HEAD" else []
    detail = "; ".join(f"{c}: {m}" if m else c for c, m in codes)
    names = {c for c, _ in codes}
    suffix = f" ({detail})" if detail else ""
    if kind == "manifest" and (status == 404 or names & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}):
        raise ManifestUnknownError(
            f"image {label} not found: the registry answered HTTP {status}{suffix}. Check the "
            "repository name and tag (e.g. `skopeo list-tags docker://REGISTRY/REPOSITORY`).",
            status=status,
            url=safe_url(resp.url),
        )
    if kind == "blob" and (status == 404 or "BLOB_UNKNOWN" in names):
        raise RegistryError(
            f"{what}: the registry does not have this blob (HTTP {status}{suffix}); the image's "
            "manifest references a blob that was deleted or never pushed. Ask the image owner to push "
            "it again.",
            status=status,
            url=safe_url(resp.url),
        )
    transient = status in RETRY_STATUSES
    hint = " (still failing after every retry; try again later, or allow more with --retry-times N)"
    hint = hint if transient else ""
    raise RegistryError(f"{what}: HTTP {status}{suffix}{hint}", status=status, url=safe_url(resp.url))

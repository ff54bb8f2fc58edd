"""Pushing to a registry: every blob once (skipped, mounted or uploaded), then manifests byte for byte.

Why byte for byte: a manifest's digest is the sha256 of its exact bytes, and
that digest is what records pin. Re-serialising a manifest (even re-ordering
its keys) would give the site registry's copy another digest, and a
``name@sha256:...`` pulled from there would find nothing. So the bytes the
cache got from the origin are PUT unchanged, with the media type they name.

Blobs cost as little as the protocol allows: a ``HEAD`` finds what the
repository already has; a blob this pusher saw in another repository of the
same registry is mounted (``POST .../uploads/?mount=<digest>&from=<repo>``),
which links it without a byte travelling; the rest are uploaded, in one
``PUT`` when small and in ``PATCH`` chunks when large, so a broken connection
costs one chunk (the registry says how much it holds and the upload
continues there), not the whole blob. An upload that cannot continue starts
over with a new session, within the client's retry count.

Order of publication: blobs, then an index's child manifests by digest, then
the top manifest under its tags, so a tag the registry serves always names a
complete image. Requests authenticate for ``pull,push`` on the repository
written (plus ``pull`` on a mount's source) with the client's credentials,
certificates and insecure-registry rules: a push reaches a registry exactly
the way a pull does.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from ..digests import CHUNK, sha256_bytes
from ..errors import AuthenticationError, CacheError, IntegrityError, RegistryError
from ..images.blobstore import BlobStore
from ..images.manifest import (
    ACCEPT_MANIFESTS,
    Descriptor,
    Index,
    Manifest,
    ManifestError,
    detect_media_type,
    parse_manifest_or_index,
)
from ..progress import check_cancelled, current
from .auth import repository_scope
from .client import RegistryClient, image_label
from .httpio import BodyBroken, ConnectFailure, Readable, Response, TlsFailure
from .pool import DaemonPool
from .transport import RETRY_STATUSES, describe, hopeless, origin, pause, safe_url

log = logging.getLogger(__name__)

#: Blobs up to this size go up in one ``PUT``; larger ones in ``PATCH`` chunks of it: what a broken
#: connection can cost.
UPLOAD_CHUNK = 32 << 20
#: An upload reports progress every this many bytes (and at its end).
PROGRESS_STEP = 1 << 20
PUSH_ACTIONS = "pull,push"

BlobOutcome = Literal["present", "mounted", "uploaded", "foreign"]
_RANGE = re.compile(r"^\s*(?:bytes=)?0-(-?\d+)\s*$")


@dataclass
class PushStats:
    """What a push did, blob by blob and manifest by manifest."""

    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    present_blobs: int = 0
    mounted_blobs: int = 0
    foreign_blobs: int = 0
    manifests_put: int = 0
    manifests_present: int = 0

    def count(self, outcome: BlobOutcome, size: int) -> None:
        if outcome == "uploaded":
            self.uploaded_blobs += 1
            self.uploaded_bytes += size
        elif outcome == "mounted":
            self.mounted_blobs += 1
        elif outcome == "present":
            self.present_blobs += 1
        else:
            self.foreign_blobs += 1

    @property
    def wrote(self) -> bool:
        """Whether the registry changed: a blob uploaded or mounted, or a manifest or tag written."""
        return bool(self.uploaded_blobs or self.mounted_blobs or self.manifests_put)

    def to_json(self) -> dict[str, int]:
        return {
            "uploaded_blobs": self.uploaded_blobs,
            "uploaded_bytes": self.uploaded_bytes,
            "present_blobs": self.present_blobs,
            "mounted_blobs": self.mounted_blobs,
            "foreign_blobs": self.foreign_blobs,
            "manifests_put": self.manifests_put,
            "manifests_present": self.manifests_present,
        }


@dataclass(frozen=True)
class PushedImage:
    """One manifest (or index) now in ``registry/repository`` under ``tags`` and its digest."""

    registry: str
    repository: str
    tags: tuple[str, ...]
    #: What a pull by digest asks for: the index when one was pushed, else the manifest.
    digest: str
    manifest_digest: str
    index_digest: str | None
    media_type: str
    #: Bytes of every blob and manifest pushed (present ones included).
    size: int
    stats: PushStats

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def pinned(self) -> str:
        """``registry/repository@digest``: what a later pull asks for."""
        return f"{self.name}@{self.digest}"


def read_stored_manifest(store: BlobStore, digest: str, label: str) -> Manifest | Index:
    """A manifest or index from the store, its bytes re-hashed (they are what gets pushed)."""
    try:
        raw = store.path(digest).read_bytes()
    except FileNotFoundError:
        raise CacheError(
            f"the manifest {digest} of {label} is not in the cache ({store.path(digest)}); "
            "materialize the image again"
        ) from None
    if sha256_bytes(raw) != digest:
        raise IntegrityError(
            f"the cached manifest {digest} of {label} is damaged (its bytes hash to {sha256_bytes(raw)}); "
            "run `wfexs-like cache verify --repair`",
            expected=digest,
            actual=sha256_bytes(raw),
        )
    try:
        return parse_manifest_or_index(raw)
    except ManifestError as e:
        raise CacheError(f"the cached manifest {digest} of {label} is unreadable: {e}") from e


def missing_blobs(store: BlobStore, manifest: Manifest) -> list[str]:
    """Config and layers of ``manifest`` the store lacks (foreign layers live at their URLs: not counted)."""
    return [d.digest for d in (manifest.config, *manifest.layers) if not d.urls and not store.has(d.digest)]


def complete_index(store: BlobStore, index_digest: str, label: str) -> tuple[Index, list[Manifest]] | None:
    """The index and every manifest it lists, when the store holds all of them and all their blobs.

    A registry accepts an index only when every manifest it names is already
    there, so an index can be pushed only from a cache that pulled every
    platform; None otherwise (push the one platform's manifest instead).
    """
    if not store.has(index_digest):
        return None
    doc = read_stored_manifest(store, index_digest, label)
    if not isinstance(doc, Index):
        return None
    children: list[Manifest] = []
    for entry in doc.manifests:
        if not store.has(entry.digest):
            return None
        child = read_stored_manifest(store, entry.digest, label)
        if not isinstance(child, Manifest) or missing_blobs(store, child):
            return None
        children.append(child)
    return doc, children


class _Retry(Exception):
    """A transient failure of an upload: start it over (or continue it) after a pause."""


class _Attempts:
    """One blob's retry budget, shared by restarts and resumes, with the client's back-off."""

    def __init__(self, client: RegistryClient, what: str) -> None:
        self.policy = client.policy
        self.what = what
        self.used = 0

    def another(self, why: object) -> None:
        if self.used >= self.policy.retries:
            raise RegistryError(
                f"{self.what}: the upload kept failing ({why}) after {self.used + 1} attempts; try again "
                "later, or allow more with --retry-times N"
            )
        delay = self.policy.delay(self.used)
        log.info("%s: %s; trying again in %.2f s", self.what, why, delay)
        self.used += 1
        pause(delay)


class _Progress:
    """Bytes of one blob's upload, reported to ``progress.current()`` under the image's label."""

    def __init__(self, label: str, digest: str, total: int) -> None:
        self.label, self.digest, self.total = label, digest, total
        self.done = 0
        self._reported = -1

    def at(self, done: int) -> None:
        self.done = done
        self._report()

    def add(self, n: int) -> None:
        self.done += n
        if self.done - self._reported >= PROGRESS_STEP or self.done >= self.total:
            self._report()

    def _report(self) -> None:
        self._reported = self.done
        current().advance(self.label, self.digest, self.done, self.total)


class _FileBody:
    """``length`` bytes of a blob file from ``start``, as a streamed request body.

    Every read polls the cancellation flag, so a Ctrl-C stops an upload
    within one block. ``__len__`` gives the Content-Length.
    """

    def __init__(self, path: Path, start: int, length: int, progress: _Progress) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed at the end of the body or by close()
        self._fh.seek(start)
        self._left = length
        self._length = length
        self._progress = progress
        self._path = path

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        check_cancelled()
        if self._left <= 0:
            return b""
        n = self._left if size is None or size < 0 else min(size, self._left)
        data = self._fh.read(n)
        if not data:
            raise IntegrityError(f"{self._path} ended {self._left} bytes early while it was being uploaded")
        self._left -= len(data)
        self._progress.add(len(data))
        return data

    def __iter__(self) -> Any:
        while chunk := self.read(CHUNK):
            yield chunk

    def close(self) -> None:
        self._fh.close()


def _with_digest(location: str, digest: str) -> str:
    parts = urlsplit(location)
    query = parts.query + ("&" if parts.query else "") + urlencode({"digest": digest})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _error_codes(resp: Response) -> list[tuple[str, str]]:
    if resp.method == "HEAD":
        return []
    try:
        data: Any = resp.json()
    except ValueError:
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    return [(str(e.get("code", "")), str(e.get("message", ""))) for e in errors or [] if isinstance(e, dict)]


def _raise_for(resp: Response, what: str) -> None:
    """A final refusal, in words a user can act on."""
    status = resp.status_code
    codes = _error_codes(resp)
    names = {c for c, _ in codes}
    detail = "; ".join(f"{c}: {m}" if m else c for c, m in codes)
    suffix = f" ({detail})" if detail else ""
    url = safe_url(resp.url)
    if status == 405 or "UNSUPPORTED" in names:
        hint = (
            "; this registry does not accept pushes here (a pull-through cache or a read-only mirror?): "
            "push to the registry itself"
        )
    elif "NAME_INVALID" in names:
        hint = "; the registry refuses this repository name: choose another --to prefix"
    elif names & {"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"}:
        hint = "; the registry lacks a blob this manifest names: push again"
    elif status == 413:
        hint = "; the registry (or a proxy in front of it) refuses a request this large"
    elif status in RETRY_STATUSES:
        hint = " (still failing after every retry; try again later, or allow more with --retry-times N)"
    else:
        hint = ""
    raise RegistryError(f"{what}: HTTP {status}{suffix}{hint}", status=status, url=url)


def _transient(e: RegistryError) -> str | None:
    """Why a request failed for a reason another attempt may fix (a reset, a timeout); else None."""
    cause = e.__cause__
    if isinstance(cause, TlsFailure):
        return None
    if isinstance(cause, ConnectFailure | BodyBroken):
        if hopeless(cause):
            return None
        return describe(cause, e.url or "")
    return None


class Pusher:
    """Push blobs and manifests from a ``BlobStore`` to one registry, through ``client``'s transport.

    ``jobs`` blobs upload at once. Blobs larger than ``chunk_size`` go up in
    pieces of that size. The pusher remembers which repositories of
    the registry it found or put each blob in, and mounts from there.
    """

    def __init__(
        self,
        client: RegistryClient,
        registry: str,
        *,
        jobs: int = 4,
        chunk_size: int = UPLOAD_CHUNK,
    ) -> None:
        if chunk_size < 1:
            raise RegistryError(f"upload chunk size {chunk_size}: give 1 byte or more")
        self.client = client
        self.registry = registry
        self.ep = client._endpoint(registry)
        self.jobs = max(1, jobs)
        self.chunk_size = chunk_size
        self._known: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    # -- images ---------------------------------------------------------------------------
    def push_image(
        self,
        repository: str,
        store: BlobStore,
        manifest_digest: str,
        *,
        tags: Sequence[str] = (),
        index_digest: str | None = None,
        label: str | None = None,
    ) -> PushedImage:
        """Push a stored image (with ``index_digest``: the whole index) as ``repository`` under ``tags``.

        Without tags the manifest is put by digest only. An index needs every
        manifest it lists in the store (``complete_index``).
        """
        label = label or image_label(self.registry, repository, tags[0] if tags else manifest_digest)
        manifest = read_stored_manifest(store, manifest_digest, label)
        if not isinstance(manifest, Manifest):
            raise CacheError(f"{manifest_digest} of {label} is an index, not one image's manifest")
        children = [manifest]
        top: Manifest | Index = manifest
        if index_digest is not None:
            found = complete_index(store, index_digest, label)
            if found is None:
                raise CacheError(
                    f"the index {index_digest} of {label} cannot be pushed: the cache lacks some of the "
                    "manifests or layers it lists (only the platforms pulled are cached)"
                )
            top, children = found
            if manifest_digest not in {c.digest for c in children}:
                raise CacheError(f"the index {index_digest} of {label} does not list {manifest_digest}")
        return self._push(repository, store, top, children, tags, label, manifest_digest)

    def push_manifest(
        self, repository: str, raw: bytes, store: BlobStore, *, tags: Sequence[str] = (), label: str
    ) -> PushedImage:
        """Push the manifest ``raw`` (bytes as given; not stored anywhere) and the blobs it names."""
        doc = parse_manifest_or_index(raw)
        if not isinstance(doc, Manifest):
            raise ManifestError(f"{label}: push_manifest takes one image's manifest, not an index")
        return self._push(repository, store, doc, [doc], tags, label, doc.digest)

    def _push(
        self,
        repository: str,
        store: BlobStore,
        top: Manifest | Index,
        children: Sequence[Manifest],
        tags: Sequence[str],
        label: str,
        manifest_digest: str,
    ) -> PushedImage:
        blobs: dict[str, Descriptor] = {}
        for m in children:
            for d in (m.config, *m.layers):
                blobs.setdefault(d.digest, d)
        stats = PushStats()
        current().step(label, f"pushing to {self.registry}/{repository}")
        self._push_blobs(repository, list(blobs.values()), store, label, stats)
        if isinstance(top, Index):
            for child in children:
                self._put_counted(repository, child.digest, child.raw, label, stats)
        for ref in tags or (top.digest,):
            self._put_counted(repository, ref, top.raw, label, stats)
        size = sum(d.size for d in blobs.values()) + sum(len(m.raw) for m in children)
        if isinstance(top, Index):
            size += len(top.raw)
        return PushedImage(
            registry=self.registry,
            repository=repository,
            tags=tuple(tags),
            digest=top.digest,
            manifest_digest=manifest_digest,
            index_digest=top.digest if isinstance(top, Index) else None,
            media_type=top.media_type,
            size=size,
            stats=stats,
        )

    def _put_counted(self, repository: str, ref: str, raw: bytes, label: str, stats: PushStats) -> None:
        if self.put_manifest(repository, ref, raw, label=label):
            stats.manifests_put += 1
        else:
            stats.manifests_present += 1

    def _push_blobs(
        self, repository: str, blobs: Sequence[Descriptor], store: BlobStore, label: str, stats: PushStats
    ) -> None:
        if self.jobs == 1 or len(blobs) < 2:
            for d in blobs:
                stats.count(self.push_blob(repository, d, store, label=label), d.size)
            return
        pool = DaemonPool(self.jobs, "wfexs-push")
        first_error: BaseException | None = None
        try:
            futures = [(d, pool.submit(self.push_blob, repository, d, store, label)) for d in blobs]
            for d, fut in futures:
                try:
                    stats.count(fut.result(), d.size)
                except Exception as e:
                    first_error = first_error or e
        except BaseException as e:
            self.client._stop_workers(pool, interrupted=isinstance(e, KeyboardInterrupt))
            raise
        pool.shutdown()
        pool.join()
        if first_error is not None:
            raise first_error

    # -- manifests ------------------------------------------------------------------------
    def put_manifest(self, repository: str, reference: str, raw: bytes, *, label: str) -> bool:
        """Put ``raw`` as ``repository:reference``; False when the registry already had exactly it."""
        digest = sha256_bytes(raw)
        media_type = detect_media_type(raw)
        sep = "@" if reference.startswith("sha256:") else ":"
        what = f"pushing the manifest of {label} as {self.registry}/{repository}{sep}{reference}"
        path = f"/v2/{repository}/manifests/{reference}"
        resp = self._call("HEAD", path, repository, what, headers={"Accept": ACCEPT_MANIFESTS})
        with resp:
            if resp.status_code == 200 and resp.headers.get("Docker-Content-Digest", "").strip() == digest:
                return False
        resp = self._call("PUT", path, repository, what, headers={"Content-Type": media_type}, body=raw)
        with resp:
            if resp.status_code not in (200, 201):
                _raise_for(resp, what)
            stored = resp.headers.get("Docker-Content-Digest", "").strip()
        if stored and stored != digest:
            raise IntegrityError(
                f"{what}: the registry stored the manifest as {stored}, not {digest} (it rewrote the "
                "bytes), so pulling by digest from it would fail; use a registry that keeps manifests "
                "as pushed",
                expected=digest,
                actual=stored,
            )
        return True

    # -- blobs ----------------------------------------------------------------------------
    def remember(self, digest: str, repository: str) -> None:
        """Note that ``repository`` of this registry holds ``digest`` (a source for later mounts)."""
        with self._lock:
            repos = self._known.setdefault(digest, [])
            if repository not in repos:
                repos.append(repository)

    def _mount_source(self, digest: str, repository: str) -> str | None:
        with self._lock:
            return next((r for r in self._known.get(digest, ()) if r != repository), None)

    def blob_present(self, repository: str, digest: str, what: str = "") -> bool:
        what = what or f"checking blob {digest} in {self.registry}/{repository}"
        resp = self._call("HEAD", f"/v2/{repository}/blobs/{digest}", repository, what)
        with resp:
            if resp.status_code == 200 or 300 <= resp.status_code < 400:
                return True
            if resp.status_code == 404:
                return False
            _raise_for(resp, what)
        return False

    def push_blob(self, repository: str, desc: Descriptor, store: BlobStore, label: str) -> BlobOutcome:
        """Make ``repository`` hold ``desc``'s blob: already there, mounted, or uploaded from ``store``."""
        if desc.urls:
            return "foreign"  # a non-distributable layer lives at its URLs, as `docker push` leaves it
        digest = desc.digest
        path = _checked_local(store, desc, label)
        what = f"pushing blob {digest} of {label} to {self.registry}/{repository}"
        if self.blob_present(repository, digest, what):
            self.remember(digest, repository)
            return "present"
        attempts = _Attempts(self.client, what)
        while True:
            check_cancelled()
            try:
                location = self._start_upload(repository, digest, what)
                if location is None:
                    self.remember(digest, repository)
                    return "mounted"
                self._upload(location, repository, desc, path, what, label, attempts)
            except _Retry as why:
                attempts.another(why)
                continue
            self.remember(digest, repository)
            return "uploaded"

    def _start_upload(self, repository: str, digest: str, what: str) -> str | None:
        """A new upload session's URL; None when a mount from a sibling repository did the job."""
        source = self._mount_source(digest, repository)
        query = "?" + urlencode({"mount": digest, "from": source}) if source else ""
        resp = self._call(
            "POST", f"/v2/{repository}/blobs/uploads/{query}", repository, what, mount_from=source, body=b""
        )
        with resp:
            if resp.status_code == 201 and source:
                log.debug("%s: mounted from %s", what, source)
                return None
            if resp.status_code == 202:
                location = resp.headers.get("Location")
                if not location:
                    raise RegistryError(
                        f"{what}: the registry opened an upload without saying where (no Location)"
                    )
                return urljoin(resp.url, location)
            if resp.status_code in RETRY_STATUSES:
                raise _Retry(f"HTTP {resp.status_code} on starting the upload")
            _raise_for(resp, what)
        raise AssertionError("unreachable")

    def _upload(
        self,
        location: str,
        repository: str,
        desc: Descriptor,
        path: Path,
        what: str,
        label: str,
        attempts: _Attempts,
    ) -> None:
        progress = _Progress(label, desc.digest, desc.size)
        progress.at(0)
        if desc.size <= self.chunk_size:
            body: Callable[[], bytes | Readable] = (
                functools.partial(_FileBody, path, 0, desc.size, progress) if desc.size else bytes
            )
            self._finish(_with_digest(location, desc.digest), repository, desc, what, body)
            return
        offset = 0
        while offset < desc.size:
            n = min(self.chunk_size, desc.size - offset)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + n - 1}",
            }
            try:
                resp = self._call(
                    "PATCH",
                    location,
                    repository,
                    what,
                    headers=headers,
                    body=functools.partial(_FileBody, path, offset, n, progress),
                    retries=0,
                )
            except RegistryError as e:
                why = _transient(e)
                if why is None:
                    raise
                attempts.another(why)
                location, offset = self._resume_point(location, repository, what)
                progress.at(offset)
                continue
            with resp:
                status = resp.status_code
                if status == 202:
                    location = urljoin(resp.url, resp.headers.get("Location") or location)
                    end = _range_end(resp.headers.get("Range"))
                    offset = end + 1 if end is not None else offset + n
                    progress.at(offset)
                    continue
                if status not in (*RETRY_STATUSES, 416):
                    _raise_for(resp, what)
            attempts.another(f"HTTP {status} on a chunk")
            location, offset = self._resume_point(location, repository, what)
            progress.at(offset)
        self._finish(_with_digest(location, desc.digest), repository, desc, what, bytes)

    def _resume_point(self, location: str, repository: str, what: str) -> tuple[str, int]:
        """Where a broken chunked upload continues: the registry says how many bytes it holds."""
        try:
            resp = self._call("GET", location, repository, what)
        except AuthenticationError:
            raise
        except RegistryError as e:
            raise _Retry(f"asking how much of the upload arrived failed: {e}") from e
        with resp:
            end = _range_end(resp.headers.get("Range"))
            if resp.status_code not in (200, 204) or end is None:
                raise _Retry(f"the registry lost the upload (HTTP {resp.status_code})")
            return urljoin(resp.url, resp.headers.get("Location") or location), end + 1

    def _finish(
        self,
        url: str,
        repository: str,
        desc: Descriptor,
        what: str,
        body: Callable[[], bytes | Readable],
    ) -> None:
        """The closing ``PUT ...?digest=``: the registry checks the digest and publishes the blob."""
        headers = {"Content-Type": "application/octet-stream"}
        try:
            resp = self._call("PUT", url, repository, what, headers=headers, body=body, retries=0)
        except RegistryError as e:
            why = _transient(e)
            if why is None:
                raise
            raise _Retry(why) from e
        with resp:
            if resp.status_code in (201, 204):
                stored = resp.headers.get("Docker-Content-Digest", "").strip()
                if stored and stored != desc.digest:
                    raise IntegrityError(
                        f"{what}: the registry stored the blob as {stored}",
                        expected=desc.digest,
                        actual=stored,
                    )
                return
            names = {c for c, _ in _error_codes(resp)}
            if resp.status_code in RETRY_STATUSES or names & {"DIGEST_INVALID", "BLOB_UPLOAD_UNKNOWN"}:
                raise _Retry(f"HTTP {resp.status_code} {' '.join(sorted(names))}".strip())
            _raise_for(resp, what)

    # -- HTTP calls ---------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        target: str,
        repository: str,
        what: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], bytes | Readable] | None = None,
        mount_from: str | None = None,
        retries: int | None = None,
    ) -> Response:
        """One request with ``pull,push`` credentials (sent to the registry's own origin only).

        ``body`` may be a function making a fresh body: a 401 answered with a
        new token needs the upload sent again from its start.
        """
        self.client._ping(self.ep, what)
        url = target if "://" in target else self.ep.base + target
        mine = origin(url) == origin(self.ep.base)
        extra = (repository_scope(mount_from, "pull"),) if mount_from else ()
        made: list[Any] = []

        def send(auth_headers: dict[str, str]) -> Response:
            data = body() if callable(body) else body
            if hasattr(data, "close"):
                made.append(data)
            hdrs = {**(headers or {}), **(auth_headers if mine else {})}
            return self.client.transport.send(
                method, url, headers=hdrs, data=data, what=what, retries=retries
            )

        try:
            auth = self.ep.auth.headers(repository, what, actions=PUSH_ACTIONS, extra_scopes=extra)
            resp = send(auth)
            if resp.status_code == 401 and mine:
                resp.close()
                auth = self.ep.auth.challenged(
                    resp,
                    repository,
                    what,
                    auth.get("Authorization"),
                    actions=PUSH_ACTIONS,
                    extra_scopes=extra,
                )
                resp = send(auth)
            if resp.status_code in (401, 403):
                resp.close()
                raise self.ep.auth.failure(what, resp.status_code, safe_url(url), repository)
            return resp
        finally:
            for data in made:
                data.close()


def _range_end(value: str | None) -> int | None:
    """``Range: 0-1023`` (what an upload holds) -> 1023; ``0--1`` (nothing yet) -> -1."""
    m = _RANGE.match(value or "")
    return int(m.group(1)) if m else None


def _checked_local(store: BlobStore, desc: Descriptor, label: str) -> Path:
    """The blob's file, after making sure it is whole: uploading rotten bytes wastes the link."""
    path = store.path(desc.digest)
    if not path.is_file():
        raise CacheError(
            f"blob {desc.digest} of {label} is not in the cache ({path}); materialize the image again"
        )
    size = path.stat().st_size
    if size != desc.size:
        raise IntegrityError(
            f"blob {desc.digest} of {label} in the cache is {size} bytes, its manifest says {desc.size}; "
            "run `wfexs-like cache verify --repair`, then push again",
            expected=desc.digest,
        )
    if not store.verify(desc.digest):
        raise IntegrityError(
            f"blob {desc.digest} of {label} in the cache is damaged (its bytes do not hash to its name; "
            "it was moved aside): run `wfexs-like cache verify --repair`, then push again",
            expected=desc.digest,
        )
    return path

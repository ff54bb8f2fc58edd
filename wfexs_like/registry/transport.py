"""HTTP plumbing shared by every registry call: one connection pool, retries, redirects, TLS per host.

Why it lives apart from the client: which failures are worth another try
(connection resets, 408, 429, 5xx) and which are final (401/403/404, a TLS
certificate we do not trust, a name that does not resolve, a refused
connection) is one policy, and the blob download loop needs the same
back-off when a body breaks mid-stream. Redirects are followed by hand
because registries send blob GETs to object storage on another host, and
the registry's ``Authorization`` header must never travel there.

Streaming responses are remembered while open, so that a Ctrl-C can cut
their sockets from the main thread: a worker blocked reading a slow body
then returns at once instead of when the next chunk arrives.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import logging
import random
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

from ..errors import RegistryError
from ..progress import check_cancelled
from .certs import TlsSettings, default_ca_bundle
from .httpio import (
    BodyBroken,
    ConnectFailure,
    Pool,
    ProxyUnsupported,
    Readable,
    Response,
    TlsFailure,
    basic_auth,
)

log = logging.getLogger(__name__)

#: Statuses a registry (or the CDN in front of it) returns when trying again later can help.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
USER_AGENT = "wfexs-like/0.1 (+OCI distribution client)"
#: What a body that breaks off mid-stream raises; each is worth resuming with a Range request.
STREAM_ERRORS = (BodyBroken, ConnectFailure)
#: A refused connection is tried once more after this long (a registry restarting), never with back-off.
REFUSED_RETRY_DELAY = 0.1
#: How often a back-off sleep looks at the cancellation flag.
PAUSE_SLICE = 0.05


class ShortRead(Exception):
    """The body ended cleanly but short of the promised size: resume it like a broken one."""


def safe_url(url: str) -> str:
    """``url`` fit for a message: no ``user:password@``, no query (signed URLs carry secrets there)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scrub(text: str, url: str) -> str:
    """Remove ``url``'s secrets from an exception text that may quote it."""
    parts = urlsplit(url)
    if parts.query:
        text = text.replace(parts.query, "<redacted>")
    if "@" in parts.netloc:
        text = text.replace(parts.netloc.rpartition("@")[0] + "@", "")
    return text


def content_range_start(resp: Response) -> int | None:
    """Where a 206 body starts (``Content-Range: bytes 100-999/1000`` -> 100); None if unreadable."""
    unit, _, rng = resp.headers.get("Content-Range", "").partition(" ")
    if unit.strip().lower() != "bytes":
        return None
    try:
        return int(rng.split("-", 1)[0])
    except ValueError:
        return None


def content_range_total(resp: Response) -> int | None:
    """The full size a 206 names (``.../1000`` -> 1000); None when absent or ``*``."""
    total = resp.headers.get("Content-Range", "").rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def origin(url: str) -> tuple[str, str]:
    """(scheme, host:port) with default ports made explicit, the unit credentials are scoped to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, f"{host}:{port}"


@dataclass
class RetryPolicy:
    """Exponential back-off with jitter and a cap; a server's ``Retry-After`` wins when sane.

    ``max_retry_after`` exists because Docker Hub answers a spent pull quota
    with 429 and a Retry-After of hours: sleeping that long inside a workflow
    run is worse than failing with a message that says when to come back.
    """

    retries: int = 5
    backoff: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return retry_after
        base = min(self.cap, self.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent/garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def pause(seconds: float) -> None:
    """``time.sleep`` that a Ctrl-C cuts short (raising ``Cancelled``), even in a worker thread."""
    deadline = time.monotonic() + seconds
    while True:
        check_cancelled()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(PAUSE_SLICE, left))


def _causes(e: BaseException) -> Iterator[BaseException]:
    """``e`` and everything it wraps: our failure -> the OSError or ssl error that caused it."""
    stack: list[BaseException] = [e]
    seen: set[int] = set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        nxt = [x.__cause__, x.__context__, getattr(x, "reason", None), *x.args]
        stack.extend(n for n in nxt if isinstance(n, BaseException))


def hopeless(e: BaseException) -> str | None:
    """``"dns"`` or ``"refused"`` for connection failures that waiting a few seconds will not fix."""
    for x in _causes(e):
        if isinstance(x, socket.gaierror):
            return "dns"
        if isinstance(x, ConnectionRefusedError):
            return "refused"
    return None


def describe(e: BaseException, url: str) -> str:
    """A short reason in plain words for a connection-level failure."""
    parts = urlsplit(url)
    kind = hopeless(e)
    if kind == "dns":
        return f"the name {parts.hostname} does not resolve"
    if kind == "refused":
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"the connection was refused (nothing listens on port {port})"
    for x in _causes(e):
        if isinstance(x, ssl.SSLCertVerificationError):
            return f"its certificate is not trusted ({x.verify_message or x.reason})"
        if isinstance(x, ConnectionResetError):
            return "the connection was reset"
        if isinstance(x, socket.timeout):
            return "no answer in time"
        if isinstance(x, http.client.IncompleteRead | http.client.RemoteDisconnected | BrokenPipeError):
            return "the connection broke off"
        if isinstance(x, ssl.SSLError):
            return f"TLS error: {x.reason or x}"
        if isinstance(x, OSError) and x.errno and x.strerror:
            return x.strerror[:1].lower() + x.strerror[1:]  # "network is unreachable"
    if isinstance(e, BodyBroken):
        return "the connection broke off"
    return scrub(str(e), url)


class Transport:
    """A pool of keep-alive connections plus the retry, redirect and TLS rules above.

    ``tls_for(url)`` decides verification and client certificate per URL (a
    CA bundle for one host, no verification for a host the user declared
    insecure), because a redirect or a token service may be on another host
    than the registry.
    """

    def __init__(
        self,
        *,
        policy: RetryPolicy,
        timeout: float,
        pool_size: int = 8,
        tls_for: Callable[[str], TlsSettings] | None = None,
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.tls_for = tls_for or (lambda url: TlsSettings())
        self.pool = Pool(timeout=timeout, default_bundle=default_ca_bundle, max_idle=max(pool_size, 4))
        self._streams: weakref.WeakSet[Response] = weakref.WeakSet()
        self._streams_lock = threading.Lock()

    def close(self) -> None:
        self.pool.close()

    def abort_streams(self) -> None:
        """Cut the sockets of every streaming body still open, so the threads reading them return now.

        Called from the main thread on Ctrl-C. Shutting a socket down (not
        closing it) is what wakes a ``recv`` blocked in another thread; the
        reader then sees a broken body, finds the cancellation flag set and
        keeps its partial file.
        """
        with self._streams_lock:
            streams = list(self._streams)
        for resp in streams:
            sock = resp.socket
            if sock is not None:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        what: str = "",
        data: bytes | Mapping[str, str] | Readable | None = None,
        auth: tuple[str, str] | None = None,
        retries: int | None = None,
    ) -> Response:
        """One request, retried on transient failures; never follows redirects itself.

        Returns the final response, whatever its status (callers decide what
        a 404 means); raises RegistryError only when retries ran out on a
        transient failure or the connection could not be made at all. A name
        that does not resolve fails at once; a refused connection is tried
        once more after a moment, never with back-off.

        ``retries`` overrides the policy's count: a body read from a stream
        (an upload) can be sent only once, so its caller passes 0 and starts
        the upload over itself.
        """
        retries = self.policy.retries if retries is None else retries
        what = what or f"{method} {safe_url(url)}"
        host = urlsplit(safe_url(url)).netloc
        tls = self.tls_for(url)
        hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
        if auth is not None:
            hdrs["Authorization"] = basic_auth(*auth)
        attempt = 0
        while True:
            check_cancelled()
            try:
                resp = self.pool.request(
                    method, url, headers=hdrs, data=data, verify=tls.verify, cert=tls.cert
                )
                if not stream:
                    resp.content  # noqa: B018 - read it now, so the connection serves the next request
            except TlsFailure as e:
                check_cancelled()
                raise RegistryError(_tls_failure(host, what, e, url), url=safe_url(url)) from e
            except ProxyUnsupported as e:  # a setting: no retry fixes it
                raise RegistryError(f"cannot reach {host} while {what}: {e}", url=safe_url(url)) from e
            except (ConnectFailure, BodyBroken) as e:
                check_cancelled()
                kind = hopeless(e)
                limit = 0 if kind == "dns" else min(1, retries) if kind else retries
                if attempt >= limit:
                    raise RegistryError(
                        _unreachable(host, what, e, url, attempt + 1), url=safe_url(url)
                    ) from e
                if kind:
                    log.info("retrying in %.2f s after %s", REFUSED_RETRY_DELAY, describe(e, url))
                    pause(REFUSED_RETRY_DELAY)
                else:
                    self._sleep(attempt, None, f"{describe(e, url)} on {method} {safe_url(url)}")
                attempt += 1
                continue
            if resp.status_code not in RETRY_STATUSES:
                if stream:
                    with self._streams_lock:
                        self._streams.add(resp)
                return resp
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self.policy.max_retry_after:
                resp.close()
                raise RegistryError(
                    f"{host} answered HTTP {resp.status_code} while {what} and asks to wait "
                    f"{retry_after:.0f} s (Retry-After); try again later, or log in (`docker login "
                    f"{host}`) for a higher quota.",
                    status=resp.status_code,
                    url=safe_url(url),
                )
            if attempt >= retries:
                return resp  # the caller turns the final status into a proper error
            resp.close()
            self._sleep(attempt, retry_after, f"HTTP {resp.status_code} on {method} {safe_url(url)}")
            attempt += 1

    def _sleep(self, attempt: int, retry_after: float | None, why: str) -> None:
        delay = self.policy.delay(attempt, retry_after)
        log.info("retrying in %.2f s after %s (retry %d of %d)", delay, why, attempt + 1, self.policy.retries)
        pause(delay)

    def get_following_redirects(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        auth_headers: Mapping[str, str],
        what: str,
        method: str = "GET",
        stream: bool = True,
    ) -> Response:
        """GET (or HEAD) ``url``, following redirects; ``auth_headers`` go only to ``url``'s own origin.

        Object storage behind a registry authenticates with a signed URL; sending it
        the registry's bearer token would leak the token and can even make S3 reject
        the request for carrying two kinds of authentication.
        """
        home = origin(url)
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            hdrs = dict(headers)
            if origin(current) == home:
                hdrs.update(auth_headers)
            resp = self.send(method, current, headers=hdrs, stream=stream, what=what)
            if resp.status_code not in REDIRECT_STATUSES:
                return resp
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise RegistryError(
                    f"{what}: the server redirected without a Location header",
                    status=resp.status_code,
                    url=safe_url(current),
                )
            current = urljoin(current, location)
        raise RegistryError(f"{what}: more than {MAX_REDIRECTS} redirects", url=safe_url(url))


#: TLS alerts a server sends when it wants a client certificate it did not get (or did not like).
CLIENT_CERT_ALERTS = frozenset({"SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"})


def _tls_failure(host: str, what: str, e: BaseException, url: str) -> str:
    where = f"--cert-dir DIR, or in /etc/containers/certs.d/{host}/"
    if any(isinstance(x, ssl.SSLError) and x.reason in CLIENT_CERT_ALERTS for x in _causes(e)):
        return (
            f"TLS with {host} failed while {what}: the registry wants a client certificate and did not "
            f"accept ours ({describe(e, url)}). Put the certificate and its key, as NAME.cert and "
            f"NAME.key, in the directory given with {where}."
        )
    return (
        f"TLS with {host} failed while {what}: {describe(e, url)}. If the registry uses a private or "
        "self-signed certificate, put its CA certificate (a .crt file) in a directory and pass "
        f"{where}; to skip verification, pass --insecure-registry {host}."
    )


def _unreachable(host: str, what: str, e: BaseException, url: str, attempts: int) -> str:
    kind = hopeless(e)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    reason = describe(e, url)
    if kind == "dns":
        advice = "Check the registry name in the tag for a typo, and the DNS or proxy settings."
    elif kind == "refused":
        advice = "Check the host and port, and that the registry is running."
    else:
        advice = "Check the host is up and reachable (proxy settings, firewall), or raise --retry-times."
    return f"could not reach {host} while {what}{tries}: {reason}. {advice}"

"""HTTP plumbing shared by every registry call: one session, retries, redirects.

Why it lives apart from the client: which failures are worth another try
(connection resets, 408, 429, 5xx) and which are final (401/403/404, a TLS
certificate we do not trust) is one policy, and the blob download loop needs
the same back-off when a body breaks mid-stream. Redirects are followed by
hand because registries send blob GETs to object storage on another host,
and the registry's ``Authorization`` header must never travel there.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from ..errors import RegistryError

log = logging.getLogger(__name__)

#: Statuses a registry (or the CDN in front of it) returns when trying again later can help.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
USER_AGENT = "wfexs-like/0.1 (+OCI distribution client)"
#: What a body that breaks off mid-stream raises; each is worth resuming with a Range request.
STREAM_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
)


class ShortRead(Exception):
    """The body ended cleanly but short of the promised size: resume it like a broken one."""


def safe_url(url: str) -> str:
    """``url`` fit for a message: no ``user:password@``, no query (signed URLs carry secrets there)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scrub(text: str, url: str) -> str:
    """Remove ``url``'s secrets from an exception text that may quote it (requests' messages do)."""
    parts = urlsplit(url)
    if parts.query:
        text = text.replace(parts.query, "<redacted>")
    if "@" in parts.netloc:
        text = text.replace(parts.netloc.rpartition("@")[0] + "@", "")
    return text


def content_range_start(resp: requests.Response) -> int | None:
    """Where a 206 body starts (``Content-Range: bytes 100-999/1000`` -> 100); None if unreadable."""
    unit, _, rng = resp.headers.get("Content-Range", "").partition(" ")
    if unit.strip().lower() != "bytes":
        return None
    try:
        return int(rng.split("-", 1)[0])
    except ValueError:
        return None


def content_range_total(resp: requests.Response) -> int | None:
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


class Transport:
    """A pooled ``requests`` session plus the retry and redirect rules above.

    ``verify`` is decided per call by the client (a CA bundle for one host,
    no verification for a host the user declared insecure), so it is an
    argument here rather than session state.
    """

    def __init__(self, *, policy: RetryPolicy, timeout: float, pool_size: int = 8) -> None:
        self.policy = policy
        self.timeout = timeout
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=16, pool_maxsize=max(pool_size, 4), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT

    def close(self) -> None:
        self.session.close()

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        verify: bool | str = True,
        what: str = "",
        data: bytes | Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> requests.Response:
        """One request, retried on transient failures; never follows redirects itself.

        Returns the final response, whatever its status (callers decide what
        a 404 means); raises RegistryError only when retries ran out on a
        transient failure or the connection could not be made at all.
        """
        attempt = 0
        while True:
            try:
                resp = self.session.request(
                    method,
                    url,
                    headers=dict(headers or {}),
                    stream=stream,
                    verify=verify,
                    timeout=self.timeout,
                    allow_redirects=False,
                    data=data,
                    auth=auth,
                )
            except requests.exceptions.SSLError as e:
                host = urlsplit(safe_url(url)).netloc
                raise RegistryError(
                    f"TLS handshake with {host} failed while {what or method + ' ' + safe_url(url)}: "
                    f"{scrub(str(e), url)}. "
                    "If the registry uses a private or self-signed certificate pass its CA with "
                    "ca_bundle=..., or list the host in insecure_registries to skip verification.",
                    url=safe_url(url),
                ) from e
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
                if attempt >= self.policy.retries:
                    raise RegistryError(
                        f"could not reach {urlsplit(safe_url(url)).netloc} while "
                        f"{what or method + ' ' + safe_url(url)} after {attempt + 1} attempts: "
                        f"{scrub(str(e), url)}. Check the host is up and reachable "
                        "(proxy settings, firewall, DNS).",
                        url=safe_url(url),
                    ) from e
                self._sleep(attempt, None, f"{type(e).__name__} on {method} {safe_url(url)}")
                attempt += 1
                continue
            if resp.status_code not in RETRY_STATUSES:
                return resp
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self.policy.max_retry_after:
                resp.close()
                raise RegistryError(
                    f"{urlsplit(safe_url(url)).netloc} answered HTTP {resp.status_code} while "
                    f"{what or method + ' ' + safe_url(url)} and asks to wait {retry_after:.0f} s "
                    "(Retry-After); try again later or use authenticated pulls for a higher quota.",
                    status=resp.status_code,
                    url=safe_url(url),
                )
            if attempt >= self.policy.retries:
                return resp  # the caller turns the final status into a proper error
            resp.close()
            self._sleep(attempt, retry_after, f"HTTP {resp.status_code} on {method} {safe_url(url)}")
            attempt += 1

    def _sleep(self, attempt: int, retry_after: float | None, why: str) -> None:
        delay = self.policy.delay(attempt, retry_after)
        log.info("retrying in %.2f s after %s (retry %d of %d)", delay, why, attempt + 1, self.policy.retries)
        time.sleep(delay)

    def get_following_redirects(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        auth_headers: Mapping[str, str],
        verify_for: Callable[[str], bool | str],
        what: str,
        method: str = "GET",
        stream: bool = True,
    ) -> requests.Response:
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
            verify = verify_for(current)
            resp = self.send(method, current, headers=hdrs, stream=stream, verify=verify, what=what)
            if resp.status_code not in REDIRECT_STATUSES:
                return resp
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise RegistryError(
                    f"redirect without a Location header while {what}",
                    status=resp.status_code,
                    url=safe_url(current),
                )
            current = urljoin(current, location)
        raise RegistryError(f"more than {MAX_REDIRECTS} redirects while {what}", url=safe_url(url))


def verify_setting(ca_bundle: str | Path | None, skip: bool) -> bool | str:
    if skip:
        return False
    if ca_bundle is not None:
        return str(ca_bundle)
    return True

"""Plain files over http(s) — a SIF at a URL — through the registry client's transport.

Why not a bare GET: a URL download deserves what an image pull
gets — the same retries and back-off, CA bundle and insecure-host rules, and
redirect handling (credentials in the URL go to its own origin only) — plus
what a multi-GB SIF needs: a broken body continues with a Range request into
``<dest>.partial`` instead of starting over, and ``dest`` only ever appears
complete and checked (fsync, rename).

A partial left by an earlier call is resumed only when ``expected_digest``
is given: without it nothing could tell a stale prefix of a file that has
since changed on the server from a good one. One download per ``dest`` at a
time; callers that may race hold their own lock (the factories do).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

from ..digests import CHUNK, normalize_fingerprint
from ..errors import ContainerNotFoundException, IntegrityError, RegistryError
from ..fsutil import fsync_dir
from ..progress import check_cancelled, current
from .httpio import Response
from .transport import (
    STREAM_ERRORS,
    ShortRead,
    content_range_start,
    content_range_total,
    describe,
    pause,
    safe_url,
)

if TYPE_CHECKING:
    from .client import RegistryClient

log = logging.getLogger(__name__)
#: Network reads block until this much arrived: small enough to see a Ctrl-C and show progress often.
NET_CHUNK = 256 << 10


def download(client: RegistryClient, url: str, dest: Path, *, expected_digest: str | None = None) -> str:
    """Fetch ``url`` to ``dest`` (whose directory must exist); return the file's ``sha256:<hex>``.

    Raises ``ContainerNotFoundException`` for a 404, ``IntegrityError`` when the
    bytes don't hash to ``expected_digest`` (nothing is kept then), and
    ``RegistryError`` for other HTTP errors, an unreachable host, or a body that
    kept breaking off (what arrived is kept for the next call when resumable).
    Bytes are reported to ``progress.current()`` under the URL (without its
    secrets); a Ctrl-C stops the transfer within a chunk, keeping what arrived
    when it is resumable.
    """
    dest = Path(dest)
    shown = safe_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryError(
            f"cannot download {shown}: only http:// and https:// URLs are supported", url=shown
        )
    expected = normalize_fingerprint(expected_digest) if expected_digest else None
    if expected is not None and not expected.startswith("sha256:"):
        raise IntegrityError(f"cannot check {shown} against {expected}: only sha256 digests are supported")
    clean, auth_headers = _split_credentials(url)
    job = _Download(client, clean, auth_headers, shown, dest, resumable=expected is not None)
    actual = job.run()
    if expected is not None and actual != expected:
        job.partial.unlink(missing_ok=True)
        raise IntegrityError(
            f"{shown}: the downloaded file hashes to {actual}, not the expected {expected}; it changed on "
            "the server or was corrupted in transit. Check the URL, or update the recorded digest if the "
            "change is intended",
            expected=expected,
            actual=actual,
        )
    os.replace(job.partial, dest)
    fsync_dir(dest.parent)
    return actual


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``https://user:pw@host/x`` -> (``https://host/x``, Basic header): kept out of every message."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return clean, {"Authorization": f"Basic {token}"}


class _Download:
    """One file's transfer into ``<dest>.partial``: the state a resume needs, kept in one place."""

    def __init__(
        self,
        client: RegistryClient,
        url: str,
        auth_headers: dict[str, str],
        shown: str,
        dest: Path,
        *,
        resumable: bool,
    ) -> None:
        self.client = client
        self.url = url
        self.auth_headers = auth_headers
        self.shown = shown
        self.what = f"downloading {shown}"
        #: What the progress display calls this file (the tag is the URL).
        self.key = dest.name
        self.partial = dest.with_name(dest.name + ".partial")
        self.resumable = resumable
        self.hash = hashlib.sha256()
        self.offset = 0
        #: Size of the whole file once a response told it; a later answer that disagrees means it changed.
        self.total: int | None = None
        #: ETag or Last-Modified of the first answer, sent as If-Range so a changed file comes back whole.
        self.validator: str | None = None

    def run(self) -> str:
        fh = self._open_partial()
        try:
            self._transfer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        except BaseException as e:
            fh.close()
            keep = self.resumable and self.offset > 0 and not isinstance(e, IntegrityError)
            if not keep:
                self.partial.unlink(missing_ok=True)
            raise
        fh.close()
        return "sha256:" + self.hash.hexdigest()

    def _open_partial(self) -> BinaryIO:
        if not self.resumable:
            return open(self.partial, "w+b")
        fh = open(self.partial, "a+b")  # noqa: SIM115 - closed by run()
        fh.seek(0)
        while chunk := fh.read(CHUNK):
            self.hash.update(chunk)
            self.offset += len(chunk)
        if self.offset:
            log.info("%s: resuming the %d bytes in %s", self.what, self.offset, self.partial)
        return fh

    def _restart(self, fh: BinaryIO) -> None:
        fh.seek(0)
        fh.truncate(0)
        self.hash = hashlib.sha256()
        self.offset = 0

    def _transfer(self, fh: BinaryIO) -> None:
        policy = self.client.policy
        attempt = 0
        while True:
            try:
                if self._one_response(fh):
                    return
            except (*STREAM_ERRORS, ShortRead) as e:
                check_cancelled()  # a body cut by Ctrl-C is not a network failure to retry
                why = str(e) if isinstance(e, ShortRead) else describe(e, self.url)
                if attempt >= policy.retries:
                    kept = (
                        f" What arrived is kept in {self.partial} and the next download with the same "
                        "expected digest resumes from there."
                        if self.resumable and self.offset
                        else ""
                    )
                    raise RegistryError(
                        f"{self.what}: the transfer kept breaking off ({why}) after {attempt + 1} "
                        f"attempts.{kept}",
                        url=self.shown,
                    ) from None
                delay = policy.delay(attempt)
                log.info("%s: %s; resuming at byte %d in %.2f s", self.what, why, self.offset, delay)
                attempt += 1
                pause(delay)

    def _one_response(self, fh: BinaryIO) -> bool:
        """One GET from ``offset``; True when the file is complete, ShortRead/stream errors to resume."""
        headers = {"Accept-Encoding": "identity"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        resp = self.client.transport.get_following_redirects(
            self.url, headers=headers, auth_headers=self.auth_headers, what=self.what
        )
        with resp:
            if not self._accept(resp, fh):
                return True
            self._remember_validator(resp)
            # Raw bytes: the file as served, never decompressed (a .gz stays a .gz). A short body
            # is checked below, after keeping every byte that did arrive.
            reporter = current()
            for chunk in resp.iter_content(NET_CHUNK):
                fh.write(chunk)
                self.hash.update(chunk)
                self.offset += len(chunk)
                reporter.advance(self.shown, self.key, self.offset, self.total)
                check_cancelled()
        if self.total is not None and self.offset != self.total:
            raise ShortRead(f"got {self.offset} of the {self.total} bytes announced")
        return True

    def _accept(self, resp: Response, fh: BinaryIO) -> bool:
        """Check the status and size headers; False when there is no body to read (already complete)."""
        status = resp.status_code
        if status == 200:
            if self.offset:
                log.info("%s: the server sent the whole file (changed, or Range unsupported)", self.what)
                self._restart(fh)
            length = resp.headers.get("Content-Length")
            self.total = int(length) if length and length.isdigit() else None
            return True
        if status == 206:
            total = content_range_total(resp)
            if content_range_start(resp) != self.offset or (
                self.total is not None and total is not None and total != self.total
            ):
                self._restart(fh)
                raise ShortRead(
                    f"unexpected Content-Range {resp.headers.get('Content-Range')!r}; starting over"
                )
            self.total = total
            return True
        if status == 416 and self.offset:
            held = content_range_total(resp)
            if held == self.offset and self.total in (None, self.offset):
                self.total = self.offset
                return False  # the partial already holds the whole file
            announced, self.total = self.total, None
            self._restart(fh)
            if held is not None and announced is not None:
                raise ShortRead(
                    f"the server announced {announced} bytes but says the file has {held}; starting over"
                )
            raise ShortRead("the server cannot serve the rest (HTTP 416); starting over")
        if status == 404:
            raise ContainerNotFoundException(
                f"{self.shown} was not found (HTTP 404); check the URL", failures=[(self.shown, "HTTP 404")]
            )
        hint = ""
        if status in (401, 403):
            hint = " (access refused: put credentials in the URL as https://user:password@host/...)"
        elif status >= 500 or status == 429:
            hint = " (the server kept failing after all retries; try later)"
        raise RegistryError(f"{self.what}: HTTP {status}{hint}", status=status, url=self.shown)

    def _remember_validator(self, resp: Response) -> None:
        if self.validator is not None:
            return
        etag = resp.headers.get("ETag", "")
        if etag and not etag.startswith("W/"):
            self.validator = etag
        else:
            self.validator = resp.headers.get("Last-Modified") or None

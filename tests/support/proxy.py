"""A misbehaving HTTP proxy in front of a real registry, for failure tests.

Real registries, CDNs and corporate proxies do all of these, and a client
that has never seen them will publish a wrong blob or give up too early:
corrupted bytes, bodies cut short, 429 with ``Retry-After``, bursts of 500,
a ``Docker-Content-Digest`` that does not match the body or is missing, a Range request
answered with the whole blob, blob GETs redirected to another host
(storage), a slow link, a connection reset before any answer. Each fault is a rule
matching a path substring, optionally only the first N times; every request
is recorded so tests can count hits. A ``hold`` rule is no fault but a
barrier: matching requests wait until the test lets them go, so many
clients are sure to be mid-transfer at once.

``keep_host=True`` forwards the client's ``Host`` header unchanged, which an
S3 server needs: a SigV4 signature covers the host the client spoke to.

Bounded: bodies are read whole (test images are small), one upstream
connection per request, daemon threads, ``stop()`` at the end of each test.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: The longest a ``hold`` rule keeps a request waiting.
HOLD_LIMIT = 120.0
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}


@dataclass
class Rule:
    #: status | corrupt | truncate | lie_digest | strip | ignore_range | redirect | throttle | reset | hold
    kind: str
    match: str
    times: int | None = None  # None: always
    status: int = 0
    retry_after: str | None = None
    method: str | None = None
    rate: float = 0.0  # throttle: bytes per second, shared by every body the rule slows
    fired: int = 0
    next_at: float = 0.0  # throttle: when the link is free for the next slice
    gate: threading.Event | None = None  # hold: set it to let the waiting requests through
    header: str = ""  # strip: the response header removed

    def wants(self, method: str, path: str) -> bool:
        if self.match not in path:
            return False
        if self.method is not None and method != self.method:
            return False
        return self.times is None or self.fired < self.times


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    host: str
    status: int = 0
    faults: list[str] = field(default_factory=list)


class FaultProxy:
    """``url``/``host`` point at the proxy; rules are added with the methods below."""

    def __init__(self, upstream: str, *, keep_host: bool = False) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http":
            raise ValueError("the fault proxy only fronts plain-HTTP registries")
        self.keep_host = keep_host
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.rules: list[Rule] = []
        self.seen: list[Seen] = []
        self.static: dict[str, bytes] = {}
        self._stash: dict[str, bytes] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    # -- configuration --------------------------------------------------------
    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail(self, status: int, match: str, times: int, retry_after: str | None = None) -> Rule:
        """Answer ``status`` (e.g. 429, 500) instead of forwarding, the first ``times`` matches."""
        return self._add(Rule("status", match, times, status=status, retry_after=retry_after))

    def corrupt(self, match: str = "/blobs/", times: int | None = None) -> Rule:
        """Flip one byte in the middle of matching GET bodies."""
        return self._add(Rule("corrupt", match, times, method="GET"))

    def truncate(self, match: str = "/blobs/", times: int | None = 1) -> Rule:
        """Send the full Content-Length, half the body, then drop the connection."""
        return self._add(Rule("truncate", match, times, method="GET"))

    def lie_digest(self, match: str = "/manifests/") -> Rule:
        """Replace ``Docker-Content-Digest`` with the digest of something else."""
        return self._add(Rule("lie_digest", match))

    def strip_header(self, header: str = "Docker-Content-Digest", match: str = "/manifests/") -> Rule:
        """Remove a response header (any case) from every matching answer, as some proxies and CDNs do."""
        return self._add(Rule("strip", match, header=header.lower()))

    def ignore_range(self, match: str = "/blobs/", times: int | None = None) -> Rule:
        """Drop the Range header, so the registry answers 200 with the whole blob."""
        return self._add(Rule("ignore_range", match, times, method="GET"))

    def redirect_blobs(self, match: str = "/blobs/") -> Rule:
        """Answer blob GETs with 307 to ``localhost:PORT/_storage/...`` — another host, as S3 would be."""
        return self._add(Rule("redirect", match, method="GET"))

    def throttle(self, rate: float, match: str = "/blobs/", times: int | None = None) -> Rule:
        """Send matching GET bodies at ``rate`` bytes per second in all (one slow link), in small slices."""
        return self._add(Rule("throttle", match, times, method="GET", rate=rate))

    def reset(self, match: str = "/blobs/", times: int | None = 1, method: str | None = None) -> Rule:
        """Drop the connection with a TCP reset (RST) before any answer, the first ``times`` matches."""
        return self._add(Rule("reset", match, times, method=method))

    def hold(self, match: str = "/blobs/", method: str | None = "GET") -> threading.Event:
        """Keep matching requests waiting (before they go upstream) until the returned event is set.

        Waits at most ``HOLD_LIMIT`` seconds, so a test that forgets to open
        the gate fails on its own checks rather than hanging.
        """
        gate = threading.Event()
        self._add(Rule("hold", match, None, method=method, gate=gate))
        return gate

    def _pace(self, rule: Rule, nbytes: int) -> None:
        """Wait for this slice's turn on the rule's link, then let it go."""
        with self._lock:
            now = time.monotonic()
            start = max(now, rule.next_at)
            rule.next_at = start + nbytes / rule.rate
        if start > now:
            time.sleep(start - now)

    def serve(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path`` (a foreign layer's URL); returns the full URL."""
        self.static[path] = data
        return self.url + path

    # -- inspection -----------------------------------------------------------
    def hits(self, match: str, method: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if match in s.path and (method is None or s.method == method)]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- the proxy itself -----------------------------------------------------
    def _take(self, kind: str, method: str, path: str) -> Rule | None:
        with self._lock:
            for r in self.rules:
                if r.kind == kind and r.wants(method, path):
                    r.fired += 1
                    return r
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        seen = Seen(method, path, dict(h.headers.items()), h.headers.get("Host", ""))
        with self._lock:
            self.seen.append(seen)

        if path in self.static:
            seen.status = 200
            return _reply(h, 200, {"Content-Type": "application/octet-stream"}, self.static[path], method)
        if path.startswith("/_storage/"):
            data = self._stash.get(path.rsplit("/", 1)[1])
            seen.status = 200 if data is not None else 404
            return _reply(h, seen.status, {"Content-Type": "application/octet-stream"}, data or b"", method)

        held = self._take("hold", method, path)
        if held is not None and held.gate is not None:
            held.gate.wait(HOLD_LIMIT)
        if self._take("reset", method, path):
            seen.faults.append("reset")
            return _reset(h)

        rule = self._take("status", method, path)
        if rule is not None:
            seen.status = rule.status
            seen.faults.append(f"status {rule.status}")
            headers = {"Content-Type": "application/json"}
            if rule.retry_after is not None:
                headers["Retry-After"] = rule.retry_after
            err = {"errors": [{"code": "TOOMANYREQUESTS" if rule.status == 429 else "UNAVAILABLE"}]}
            return _reply(h, rule.status, headers, json.dumps(err).encode(), method)

        fwd_headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        if "range" in {k.lower() for k in fwd_headers} and self._take("ignore_range", method, path):
            fwd_headers = {k: v for k, v in fwd_headers.items() if k.lower() != "range"}
            seen.faults.append("ignore_range")
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            upstream = f"{self.upstream_host}:{self.upstream_port}"
            fwd_headers["Host"] = h.headers.get("Host", upstream) if self.keep_host else upstream
            conn.request(method, path, body=body or None, headers=fwd_headers)
            up = conn.getresponse()
            data = up.read() if method != "HEAD" else b""
            status = up.status
            headers = {k: v for k, v in up.getheaders() if k.lower() not in HOP_BY_HOP}
            head_length = up.getheader("Content-Length")
        finally:
            conn.close()
        seen.status = status

        strip = self._take("strip", method, path)
        if strip is not None and any(k.lower() == strip.header for k in headers):
            headers = {k: v for k, v in headers.items() if k.lower() != strip.header}
            seen.faults.append(f"strip {strip.header}")
        if self._take("lie_digest", method, path) and any(
            k.lower() == "docker-content-digest" for k in headers
        ):
            headers = {k: v for k, v in headers.items() if k.lower() != "docker-content-digest"}
            headers["Docker-Content-Digest"] = "sha256:" + "0" * 63 + "1"
            seen.faults.append("lie_digest")
        if status in (200, 206) and data and self._take("corrupt", method, path):
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
            seen.faults.append("corrupt")
        if status == 200 and self._take("redirect", method, path):
            key = uuid.uuid4().hex
            self._stash[key] = data
            seen.faults.append("redirect")
            seen.status = 307
            return _reply(h, 307, {"Location": f"http://localhost:{self.port}/_storage/{key}"}, b"", method)
        if status in (200, 206) and len(data) > 1 and self._take("truncate", method, path):
            seen.faults.append("truncate")
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return None
        if method == "HEAD" and head_length is not None:
            headers["Content-Length"] = head_length
        slow = self._take("throttle", method, path) if status in (200, 206) and data else None
        if slow is None:
            return _reply(h, status, headers, data, method)
        seen.faults.append("throttle")
        return _reply(h, status, headers, data, method, pace=lambda n: self._pace(slow, n))


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Close the client's connection abortively: with a zero linger the kernel sends RST, not FIN."""
    h.close_connection = True
    with contextlib.suppress(OSError):
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # The file objects hold the socket open: close them so the close below is real, and leave
    # harmless stand-ins for the handler's own flush and close that follow.
    h.wfile.close()
    h.rfile.close()
    h.connection.close()
    h.wfile, h.rfile = io.BytesIO(), io.BytesIO()


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-body (a cancelled download) is normal here, not worth a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _reply(
    h: BaseHTTPRequestHandler,
    status: int,
    headers: dict[str, str],
    data: bytes,
    method: str,
    *,
    pace: Callable[[int], None] | None = None,
) -> None:
    h.send_response(status)
    has_length = False
    for k, v in headers.items():
        if k.lower() == "content-length":
            has_length = True
        h.send_header(k, v)
    if not has_length:
        h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    if method == "HEAD" or not data:
        return
    if pace is None:
        h.wfile.write(data)
        return
    step = 16 << 10
    try:
        for sent in range(0, len(data), step):
            piece = data[sent : sent + step]
            pace(len(piece))
            h.wfile.write(piece)
            h.wfile.flush()
    except ConnectionError:
        h.close_connection = True

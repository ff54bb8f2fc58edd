"""The HTTP layer under the registry client, against real sockets on 127.0.0.1.

What ``requests`` used to do for us and a registry pull depends on:
connections kept alive and reused, a kept-alive connection the server
dropped replaced without a failed pull, a body cut short never put back
in the pool, a stream of unknown length sent chunked, and the proxy
variables (``http_proxy``, ``https_proxy`` through CONNECT, ``no_proxy``)
honoured the way curl reads them. Each server here is a plain socket
server, so what reaches the wire is exactly what the client sent.
"""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.registry import make_tls_cert
from wfexs_like.registry.httpio import BodyBroken, ConnectFailure, Pool, proxy_for


class SocketServer:
    """Accepts connections on 127.0.0.1 and runs ``serve(conn, number)`` for each in a thread."""

    def __init__(
        self, serve: Callable[[socket.socket, int], None], tls: ssl.SSLContext | None = None
    ) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.seen: list[bytes] = []
        self._serve = serve
        self._tls = tls
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            threading.Thread(target=self._run, args=(conn, self.connections), daemon=True).start()

    def _run(self, conn: socket.socket, n: int) -> None:
        with contextlib.suppress(OSError), conn:
            self._serve(conn, n)

    def close(self) -> None:
        self.sock.close()


def read_request(f: io.BufferedReader) -> tuple[bytes, dict[str, str], bytes] | None:
    """One request from ``f``: (request line, headers, body); None at EOF."""
    line = f.readline()
    if not line:
        return None
    headers: dict[str, str] = {}
    while (h := f.readline()) not in (b"\r\n", b"\n", b""):
        k, _, v = h.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while (size := int(f.readline().strip(), 16)) > 0:
            body += f.read(size)
            f.readline()
        f.readline()
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    return line.rstrip(b"\r\n"), headers, body


def answer(conn: socket.socket, body: bytes, *, length: int | None = None, extra: str = "") -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body) if length is None else length}\r\n{extra}\r\n"
    conn.sendall(head.encode() + body)


def keep_alive(conn: socket.socket, server_number: int, server: list[SocketServer]) -> None:
    f = conn.makefile("rb")
    while (req := read_request(f)) is not None:
        server[0].seen.append(req[0] + b" " + req[2])
        answer(conn, b"hello " + req[0].split()[1])


@pytest.fixture
def pool() -> Iterator[Pool]:
    p = Pool(timeout=10)
    yield p
    p.close()


def serving(serve: Callable[..., None], tls: ssl.SSLContext | None = None) -> SocketServer:
    box: list[SocketServer] = []
    srv = SocketServer(lambda c, n: serve(c, n, box), tls)
    box.append(srv)
    return srv


def test_keep_alive_reuses_one_connection(pool: Pool) -> None:
    srv = serving(keep_alive)
    try:
        for path in ("/a", "/b", "/c"):
            with pool.request("GET", f"http://127.0.0.1:{srv.port}{path}", headers={}) as r:
                assert r.status_code == 200
                assert r.content == b"hello " + path.encode()
        assert srv.connections == 1
    finally:
        srv.close()


def test_a_connection_the_server_dropped_is_replaced_without_a_failure(pool: Pool) -> None:
    def once_per_connection(conn: socket.socket, n: int, box: list[SocketServer]) -> None:
        """Answers the first request, then reads the next one and hangs up without a word."""
        f = conn.makefile("rb")
        req = read_request(f)
        assert req is not None
        answer(conn, b"first")
        read_request(f)

    srv = serving(once_per_connection)
    try:
        url = f"http://127.0.0.1:{srv.port}/x"
        assert pool.request("GET", url, headers={}).content == b"first"
        # The pooled connection looks alive (the server has not closed it yet) but will not answer.
        assert pool.request("GET", url, headers={}).content == b"first"
        assert srv.connections == 2
    finally:
        srv.close()


def test_a_body_cut_short_keeps_its_bytes_and_its_connection_is_not_reused(pool: Pool) -> None:
    def short(conn: socket.socket, n: int, box: list[SocketServer]) -> None:
        f = conn.makefile("rb")
        read_request(f)
        if n == 1:
            answer(conn, b"x" * 40, length=100)  # then the connection closes
        else:
            answer(conn, b"whole")

    srv = serving(short)
    try:
        url = f"http://127.0.0.1:{srv.port}/x"
        r = pool.request("GET", url, headers={})
        assert b"".join(r.iter_content(16)) == b"x" * 40
        assert pool.request("GET", url, headers={}).content == b"whole"
        assert srv.connections == 2
    finally:
        srv.close()


def test_a_stream_of_unknown_length_goes_up_chunked(pool: Pool) -> None:
    class Unsized:
        def __init__(self, data: bytes) -> None:
            self._f = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self._f.read(min(size, 7000))

    srv = serving(keep_alive)
    data = bytes(range(256)) * 1000
    try:
        r = pool.request("PUT", f"http://127.0.0.1:{srv.port}/up", headers={}, data=Unsized(data))
        assert r.status_code == 200
        assert srv.seen == [b"PUT /up HTTP/1.1 " + data]
    finally:
        srv.close()


def test_connection_failures_and_broken_bodies_name_the_stage(pool: Pool) -> None:
    port = SocketServer(lambda c, n: None).port  # accepts, then closes at once
    with pytest.raises(ConnectFailure) as e:
        pool.request("GET", f"http://127.0.0.1:{port}/x", headers={})
    assert "127.0.0.1" in str(e.value)

    def stall(conn: socket.socket, n: int, box: list[SocketServer]) -> None:
        f = conn.makefile("rb")
        read_request(f)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
        conn.shutdown(socket.SHUT_WR)

    srv = serving(stall)
    try:
        r = pool.request("GET", f"http://127.0.0.1:{srv.port}/x", headers={})
        with pytest.raises(BodyBroken):
            r.content  # noqa: B018
    finally:
        srv.close()


def forward_proxy(conn: socket.socket, n: int, box: list[SocketServer]) -> None:
    """An HTTP proxy: absolute-form requests are forwarded, CONNECT opens a tunnel."""
    f = conn.makefile("rb")
    req = read_request(f)
    if req is None:
        return
    line, headers, body = req
    box[0].seen.append(line + b" auth=" + headers.get("proxy-authorization", "").encode())
    method, target, _ = line.decode().split()
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        upstream = socket.create_connection((host, int(port)))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(a: socket.socket, b: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := a.recv(65536):
                    b.sendall(data)
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)

        threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()
        pump(conn, upstream)
        return
    hostport = target.split("/")[2]
    host, _, port = hostport.rpartition(":")
    with socket.create_connection((host, int(port))) as up:
        path = "/" + target.split("/", 3)[3]
        up.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode() + body
        )
        up.shutdown(socket.SHUT_WR)  # one request: the origin answers it and hangs up
        reply = b""
        while data := up.recv(65536):
            reply += data
    conn.sendall(reply.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))


def test_http_proxy_and_no_proxy(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    origin, proxy = serving(keep_alive), serving(forward_proxy)
    try:
        url = f"http://127.0.0.1:{origin.port}/via"
        monkeypatch.setenv("http_proxy", f"http://user:pa%40ss@127.0.0.1:{proxy.port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert pool.request("GET", url, headers={}).content == b"hello /via"
        assert proxy.seen == [f"GET {url} HTTP/1.1 auth=Basic dXNlcjpwYUBzcw==".encode()]  # user:pa@ss

        monkeypatch.setenv("no_proxy", "example.org, 127.0.0.1")
        assert pool.request("GET", url, headers={}).content == b"hello /via"
        assert len(proxy.seen) == 1, "no_proxy names the host: asked directly"
    finally:
        origin.close()
        proxy.close()


def test_https_through_a_connect_tunnel(pool: Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = make_tls_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    origin, proxy = serving(keep_alive, tls=ctx), serving(forward_proxy)
    try:
        monkeypatch.setenv("https_proxy", f"127.0.0.1:{proxy.port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        r = pool.request("GET", f"https://127.0.0.1:{origin.port}/secret", headers={}, verify=str(cert))
        assert r.content == b"hello /secret"
        assert proxy.seen == [f"CONNECT 127.0.0.1:{origin.port} HTTP/1.0 auth=".encode()]
    finally:
        origin.close()
        proxy.close()


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypass"),
    [
        ("", "registry.example.org", 443, False),
        ("*", "registry.example.org", 443, True),
        ("example.org", "registry.example.org", 443, True),
        (".example.org", "registry.example.org", 443, True),
        ("example.org", "badexample.org", 443, False),
        ("registry.example.org:5000", "registry.example.org", 443, False),
        ("registry.example.org:5000", "registry.example.org", 5000, True),
    ],
)
def test_no_proxy_reads_like_curl(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, host: str, port: int, bypass: bool
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("no_proxy", no_proxy)
    got = proxy_for("https", host, port)
    assert (got is None) is bypass
    if not bypass:
        assert got == ("proxy.invalid", 3128, None)


def test_a_proxy_of_another_kind_is_a_clear_error_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from wfexs_like.errors import RegistryError
    from wfexs_like.registry import RegistryClient

    origin = serving(keep_alive)
    try:
        monkeypatch.setenv("http_proxy", "socks5://user:secret@127.0.0.1:1080")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        with RegistryClient(retries=3, backoff=0.01) as c, pytest.raises(RegistryError) as e:
            c.download(f"http://127.0.0.1:{origin.port}/file", tmp_path / "file")
        message = str(e.value)
        assert "http_proxy" in message and "socks5://" in message and "no_proxy" in message
        assert "secret" not in message
        assert not [r for r in caplog.records if "retrying" in r.getMessage()]
        assert origin.connections == 0
    finally:
        origin.close()


def test_a_header_sent_twice_reads_as_both_values(pool: Pool) -> None:
    def two_challenges(conn: socket.socket, n: int, box: list[SocketServer]) -> None:
        read_request(conn.makefile("rb"))
        answer(conn, b"", extra='WWW-Authenticate: Basic realm="r"\r\nWWW-Authenticate: Bearer realm="t"\r\n')

    srv = serving(two_challenges)
    try:
        r = pool.request("GET", f"http://127.0.0.1:{srv.port}/v2/", headers={})
        assert r.headers.get("www-authenticate") == 'Basic realm="r", Bearer realm="t"'
        assert r.headers.get("X-Missing", "none") == "none"
    finally:
        srv.close()

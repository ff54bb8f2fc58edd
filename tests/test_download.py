"""``RegistryClient.download``: plain files (SIFs) over http(s), against real loopback HTTP servers.

The origin below is a small ``http.server`` that honours Range and If-Range
the way static file servers do; faults (cut bodies, 500s, a Range ignored)
come from the same ``FaultProxy`` the registry tests put in front of the
registry, and every request either saw is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.proxy import FaultProxy
from tests.support.registry import free_port, make_tls_cert
from wfexs_like.digests import sha256_bytes
from wfexs_like.errors import ContainerNotFoundException, IntegrityError, RegistryError
from wfexs_like.registry import RegistryClient

SIF = os.urandom(300_000)
SIF_DIGEST = sha256_bytes(SIF)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class Origin:
    """A file server on 127.0.0.1: ``files`` by path, ``redirects`` path -> Location, optional TLS.

    ``lie_length`` adds that many bytes to every Content-Length it announces and
    then closes the connection short, as a broken server or middlebox would.
    """

    files: dict[str, bytes]
    redirects: dict[str, str] = field(default_factory=dict)
    tls: tuple[Path, Path] | None = None
    lie_length: int = 0
    hits: list[Hit] = field(default_factory=list)

    def start(self) -> None:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                origin._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        hit = Hit(h.path, dict(h.headers.items()))
        self.hits.append(hit)
        path = h.path.split("?", 1)[0]
        if path in self.redirects:
            hit.status = 302
            return self._send(h, 302, {"Location": self.redirects[path]}, b"")
        data = self.files.get(path)
        if data is None:
            hit.status = 404
            return self._send(h, 404, {}, b"not found\n")
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        rng = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        if rng and rng.startswith("bytes=") and (if_range is None or if_range == etag):
            start = int(rng.removeprefix("bytes=").split("-", 1)[0])
            if start >= len(data):
                hit.status = 416
                return self._send(h, 416, {"Content-Range": f"bytes */{len(data)}"}, b"")
            hit.status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._send(h, 206, headers, data[start:])
        hit.status = 200
        return self._send(h, 200, headers, data)

    def _send(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) + (self.lie_length if status in (200, 206) else 0)))
        h.end_headers()
        h.wfile.write(body)
        if self.lie_length and status in (200, 206):
            h.wfile.flush()
            h.close_connection = True


@pytest.fixture
def origin() -> Iterator[Origin]:
    o = Origin({"/images/tool.sif": SIF, "/small.sif": b"SIF_MAGIC small\n"})
    o.start()
    yield o
    o.stop()


@pytest.fixture
def proxy(origin: Origin) -> Iterator[FaultProxy]:
    p = FaultProxy(origin.url)
    yield p
    p.stop()


def client(**kw) -> RegistryClient:
    kw.setdefault("backoff", 0.02)
    kw.setdefault("timeout", 10)
    return RegistryClient(**kw)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_download_publishes_the_file_and_returns_its_sha256(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "tool.sif"
    with client() as c:
        assert c.download(f"{origin.url}/images/tool.sif", dest) == SIF_DIGEST
        wfexs_form = "sha256=" + base64.b64encode(hashlib.sha256(b"SIF_MAGIC small\n").digest()).decode()
        assert c.download(f"{origin.url}/small.sif", tmp_path / "small.sif", expected_digest=wfexs_form)
    assert dest.read_bytes() == SIF
    assert leftovers(tmp_path) == ["small.sif", "tool.sif"], "no .partial, no temp file left behind"
    assert origin.hits[0].headers.get("Accept-Encoding") == "identity", (
        "the bytes as served, never re-encoded"
    )


def test_truncated_body_is_resumed_with_range(origin: Origin, proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.truncate(match="/images/tool.sif", times=2)
    dest = tmp_path / "tool.sif"
    with client() as c:
        assert c.download(f"{proxy.url}/images/tool.sif", dest) == SIF_DIGEST
    assert dest.read_bytes() == SIF and leftovers(tmp_path) == ["tool.sif"]
    hits = proxy.hits("/images/tool.sif", "GET")
    assert [h.status for h in hits] == [200, 206, 206]
    assert "Range" not in hits[0].headers
    first, second = (int(h.headers["Range"].removeprefix("bytes=").rstrip("-")) for h in hits[1:])
    assert 0 < first < second < len(SIF)
    etag = '"' + hashlib.sha256(SIF).hexdigest()[:16] + '"'
    assert [h.headers["If-Range"] for h in hits[1:]] == [etag, etag], "resumes only the same file (its ETag)"


def test_a_server_ignoring_range_restarts_the_file(origin: Origin, proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.truncate(match="/images/tool.sif", times=1)
    proxy.ignore_range(match="/images/tool.sif", times=1)
    with client() as c:
        assert c.download(f"{proxy.url}/images/tool.sif", tmp_path / "tool.sif") == SIF_DIGEST
    assert (tmp_path / "tool.sif").read_bytes() == SIF
    assert proxy.hits("/images/tool.sif", "GET")[1].faults == ["ignore_range"]


def test_a_broken_download_resumes_in_a_later_call_only_with_a_digest(
    origin: Origin, proxy: FaultProxy, tmp_path: Path
) -> None:
    url, dest = f"{proxy.url}/images/tool.sif", tmp_path / "tool.sif"
    proxy.truncate(match="/images/tool.sif", times=1)
    with client(retries=0) as c, pytest.raises(RegistryError, match="resumes") as ei:
        c.download(url, dest, expected_digest=SIF_DIGEST)
    assert "kept breaking off" in str(ei.value)
    partial = tmp_path / "tool.sif.partial"
    assert leftovers(tmp_path) == ["tool.sif.partial"]
    kept = partial.stat().st_size
    assert 0 < kept < len(SIF)
    with client() as c:
        assert c.download(url, dest, expected_digest=SIF_DIGEST) == SIF_DIGEST
    last = proxy.hits("/images/tool.sif", "GET")[-1]
    assert last.headers["Range"] == f"bytes={kept}-" and last.status == 206
    assert dest.read_bytes() == SIF and leftovers(tmp_path) == ["tool.sif"]

    # Without a digest nothing could vouch for a stale prefix: nothing is kept, nothing resumed.
    other = tmp_path / "again.sif"
    proxy.truncate(match="/images/tool.sif", times=1)
    with client(retries=0) as c, pytest.raises(RegistryError) as ei:
        c.download(url, other)
    assert "resumes" not in str(ei.value)
    assert leftovers(tmp_path) == ["tool.sif"]


def test_500s_are_retried_then_reported(origin: Origin, proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.fail(500, "/images/tool.sif", times=2)
    with client() as c:
        assert c.download(f"{proxy.url}/images/tool.sif", tmp_path / "tool.sif") == SIF_DIGEST
    assert [h.status for h in proxy.hits("/images/tool.sif", "GET")] == [500, 500, 200]

    proxy.fail(503, "/small.sif", times=100)
    url = f"{proxy.url}/small.sif"
    with client(retries=2) as c, pytest.raises(RegistryError) as ei:
        c.download(url, tmp_path / "small.sif")
    assert ei.value.status == 503 and url in str(ei.value) and "HTTP 503" in str(ei.value)
    assert len(proxy.hits("/small.sif", "GET")) == 3
    assert leftovers(tmp_path) == ["tool.sif"]


def test_404_is_container_not_found(origin: Origin, tmp_path: Path) -> None:
    url = f"{origin.url}/images/missing.sif"
    with client() as c, pytest.raises(ContainerNotFoundException) as ei:
        c.download(url, tmp_path / "missing.sif")
    assert url in str(ei.value) and "404" in str(ei.value)
    assert not isinstance(ei.value, RegistryError)
    assert leftovers(tmp_path) == []


def test_wrong_digest_publishes_nothing(origin: Origin, tmp_path: Path) -> None:
    wrong = sha256_bytes(b"something else")
    with client() as c, pytest.raises(IntegrityError) as ei:
        c.download(f"{origin.url}/images/tool.sif", tmp_path / "tool.sif", expected_digest=wrong)
    assert ei.value.expected == wrong and ei.value.actual == SIF_DIGEST
    assert "/images/tool.sif" in str(ei.value)
    assert leftovers(tmp_path) == [], "neither the file nor a partial that could only be wrong"


def test_body_shorter_than_its_content_length_is_refused(tmp_path: Path) -> None:
    liar = Origin({"/short.sif": b"0123456789" * 100}, lie_length=100)
    liar.start()
    try:
        with client(retries=2) as c, pytest.raises(RegistryError, match="kept breaking off") as ei:
            c.download(f"{liar.url}/short.sif", tmp_path / "short.sif")
    finally:
        liar.stop()
    assert f"{liar.url}/short.sif" in str(ei.value) and "got 1000 of the 1100 bytes" in str(ei.value)
    assert leftovers(tmp_path) == []
    # A short body is first taken for a broken one and resumed; the server then contradicts itself.
    assert [(h.status, h.headers.get("Range")) for h in liar.hits] == [
        (200, None),
        (416, "bytes=1000-"),
        (200, None),
    ]


def test_unreachable_host_and_secrets_kept_out_of_messages(origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    with client(retries=1) as c, pytest.raises(RegistryError) as ei:
        c.download(f"http://alice:hunter2@127.0.0.1:{port}/x.sif?token=s3cr3t", tmp_path / "x.sif")
    msg = str(ei.value)
    assert f"could not reach 127.0.0.1:{port}" in msg
    assert "hunter2" not in msg and "alice" not in msg and "s3cr3t" not in msg
    assert "hunter2" not in str(ei.value.url) and "s3cr3t" not in str(ei.value.url)

    with client() as c, pytest.raises(ContainerNotFoundException) as ei2:
        c.download(f"http://alice:hunter2@127.0.0.1:{origin.port}/nope.sif?token=s3cr3t", tmp_path / "x.sif")
    assert "hunter2" not in str(ei2.value) and "s3cr3t" not in str(ei2.value)
    sent = origin.hits[-1].headers["Authorization"]
    assert sent == "Basic " + base64.b64encode(b"alice:hunter2").decode(), "the URL's login is used"
    assert leftovers(tmp_path) == []


def test_credentials_do_not_follow_a_redirect_to_another_host(origin: Origin, tmp_path: Path) -> None:
    origin.redirects["/moved.sif"] = f"http://localhost:{origin.port}/images/tool.sif"
    with client() as c:
        url = f"http://alice:hunter2@127.0.0.1:{origin.port}/moved.sif"
        assert c.download(url, tmp_path / "tool.sif") == SIF_DIGEST
    first, second = origin.hits[-2:]
    assert first.status == 302 and "Authorization" in first.headers
    assert second.status == 200 and "Authorization" not in second.headers


def test_tls_is_verified_with_the_ca_bundle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = make_tls_cert(certs)
    secure = Origin({"/tool.sif": SIF}, tls=(cert, key))
    secure.start()
    out = tmp_path / "out"
    out.mkdir()
    try:
        url = f"{secure.url}/tool.sif"
        with client(ca_bundle=cert) as c:
            assert c.download(url, out / "tool.sif", expected_digest=SIF_DIGEST) == SIF_DIGEST
        with client(retries=0) as c, pytest.raises(RegistryError, match="--cert-dir"):
            c.download(url, out / "untrusted.sif")
        caplog.clear()
        with caplog.at_level(logging.WARNING), client(insecure_registries=["127.0.0.1"]) as c:
            assert c.download(url, out / "insecure.sif") == SIF_DIGEST
        assert any("TLS certificate not verified" in r.getMessage() for r in caplog.records)
    finally:
        secure.stop()
    assert leftovers(out) == ["insecure.sif", "tool.sif"]

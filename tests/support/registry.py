"""Real ``docker-registry`` (distribution 2.8) processes on loopback, for tests.

Why a real registry rather than a mock: the quirks that break clients —
which headers a HEAD carries, how a Range request is answered, what a 401
challenge looks like, how a missing tag is reported — are exactly what a mock
would get wrong. Three flavours: plain HTTP and open; TLS (self-signed,
``IP:127.0.0.1`` in subjectAltName) behind htpasswd Basic auth; and Bearer
token auth with a tiny token service written here (JWTs signed RS256 with
``openssl``, key id in libtrust form, as distribution's token verifier wants).

The registry's access log (Apache combined format, on stdout) goes to a file,
so tests can count exactly which requests reached the registry.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

REGISTRY_BIN = "docker-registry"
_ACCESS_RE = re.compile(
    r'^(?P<remote>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<proto>[^"]+)" '
    r"(?P<status>\d{3}) (?P<size>\S+)"
)


def have_registry() -> bool:
    return shutil.which(REGISTRY_BIN) is not None


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports: every socket stays bound until all are picked (closing
    each before the next pick could hand out the same port twice)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def child_env() -> dict[str, str]:
    """The environment for anything we start: no AWS_CA_BUNDLE (it breaks plain-HTTP S3 drivers)."""
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    return env


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, env=child_env(), **kw)


def make_tls_cert(directory: Path, cn: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed cert valid for IP 127.0.0.1 and localhost (Go refuses certs without a SAN)."""
    cert, key = directory / "tls-cert.pem", directory / "tls-key.pem"
    _run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ]
    )  # fmt: skip
    return cert, key


def make_htpasswd(directory: Path, users: dict[str, str]) -> Path:
    path = directory / "htpasswd"
    lines = [_run(["htpasswd", "-Bbn", u, p]).stdout.decode().strip() for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class AccessLine:
    method: str
    path: str
    status: int
    raw: str


@dataclass
class RunningRegistry:
    """A registry process; ``host`` is ``127.0.0.1:PORT``, ``url`` includes the scheme."""

    process: subprocess.Popen
    host: str
    url: str
    root: Path
    log_path: Path
    stderr_path: Path
    ca_cert: Path | None = None
    users: dict[str, str] = field(default_factory=dict)
    token_server: TokenServer | None = None

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def verify(self) -> bool | str:
        return str(self.ca_cert) if self.ca_cert else True

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.token_server is not None:
            self.token_server.stop()

    # -- access log -----------------------------------------------------------
    def mark(self) -> int:
        """A position in the access log; count requests made after it with ``requests_since``."""
        self.sync()
        return self.log_path.stat().st_size

    def sync(self, timeout: float = 5.0) -> None:
        """Wait until every request made so far is in the log.

        The log line is written when the registry's handler returns, which can be a
        hair after the client has its bytes: a sentinel request, once logged, means
        all earlier ones are too.
        """
        token = uuid.uuid4().hex
        with contextlib.suppress(requests.RequestException):
            requests.get(f"{self.url}/v2/?sync={token}", verify=self.verify, timeout=5).close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if token in self.log_path.read_text(errors="replace"):
                time.sleep(0.05)
                return
            time.sleep(0.02)
        raise TimeoutError(f"registry access log {self.log_path} did not show the sync request")

    def requests_since(self, mark: int) -> list[AccessLine]:
        self.sync()
        with open(self.log_path, "rb") as fh:
            fh.seek(mark)
            text = fh.read().decode("utf-8", errors="replace")
        out = []
        for line in text.splitlines():
            m = _ACCESS_RE.match(line)
            if m and "sync=" not in m.group("path"):
                out.append(AccessLine(m.group("method"), m.group("path"), int(m.group("status")), line))
        return out

    def blob_gets(self, mark: int, digest: str | None = None) -> list[AccessLine]:
        """``GET /v2/<repo>/blobs/sha256:...`` lines since ``mark`` (optionally for one digest)."""
        return [
            a
            for a in self.requests_since(mark)
            if a.method == "GET"
            and "/blobs/sha256:" in a.path
            and (digest is None or a.path.endswith("/blobs/" + digest))
        ]


def _registry_config(root: Path, port: int, extra: str) -> str:
    # Foreign-layer URLs are refused unless an allow list is set (distribution's default).
    return f"""version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root / "data"}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
validation:
  manifests:
    urls:
      allow:
        - ^https?://
http:
  addr: 127.0.0.1:{port}
  secret: {secrets.token_hex(16)}
{extra}"""


def start_registry(
    root: Path,
    *,
    tls: bool = False,
    users: dict[str, str] | None = None,
    token_server: TokenServer | None = None,
    proxy_remote: str | None = None,
    attempts: int = 3,
) -> RunningRegistry:
    """Start ``docker-registry serve`` and wait until ``/v2/`` answers (any status).

    ``proxy_remote`` (a URL) makes it a pull-through cache of that registry
    (distribution's ``proxy.remoteurl``): it fetches what it lacks from there
    once, keeps it, and refuses pushes.
    """
    root.mkdir(parents=True, exist_ok=True)
    extra = ""
    cert = key = None
    if tls:
        cert, key = make_tls_cert(root)
        extra += f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    if users and token_server is None:
        htp = make_htpasswd(root, users)
        extra += f"auth:\n  htpasswd:\n    realm: wfexs-test-registry\n    path: {htp}\n"
    if token_server is not None:
        extra += (
            "auth:\n  token:\n"
            f"    realm: {token_server.url}/token\n"
            f"    service: {token_server.service}\n"
            f"    issuer: {token_server.issuer}\n"
            f"    rootcertbundle: {token_server.cert}\n"
        )
    if proxy_remote is not None:  # top level: after the tls block, which belongs under http
        extra += f"proxy:\n  remoteurl: {proxy_remote}\n"
    last_err = ""
    for _ in range(attempts):
        port = free_port()
        cfg = root / "config.yml"
        cfg.write_text(_registry_config(root, port, extra))
        log_path, err_path = root / "access.log", root / "registry.stderr"
        with open(log_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(cfg)], stdout=out, stderr=err, env=child_env(), cwd=root
            )
        scheme = "https" if tls else "http"
        reg = RunningRegistry(
            process=proc,
            host=f"127.0.0.1:{port}",
            url=f"{scheme}://127.0.0.1:{port}",
            root=root,
            log_path=log_path,
            stderr_path=err_path,
            ca_cert=cert,
            users=dict(users or {}),
            token_server=token_server,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                requests.get(f"{reg.url}/v2/", verify=reg.verify, timeout=2).close()
                return reg
            except requests.RequestException:
                time.sleep(0.05)
        last_err = err_path.read_text(errors="replace")[-2000:]
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise RuntimeError(f"docker-registry did not start; stderr tail:\n{last_err}")


# -- token service ----------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(der_public_key: bytes) -> str:
    """The ``kid`` distribution looks a token's signing key up by (libtrust's fingerprint)."""
    s = base64.b32encode(hashlib.sha256(der_public_key).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i : i + 4] for i in range(0, len(s), 4))


class TokenServer:
    """A Docker-style token service: anonymous ``pull`` except under ``private/``; users get all.

    It also records every token request (scope, user) so tests can check the
    client asked for what it should, and only as often as it should.
    """

    def __init__(self, directory: Path, users: dict[str, str], *, private_prefix: str = "private/"):
        directory.mkdir(parents=True, exist_ok=True)
        self.users = dict(users)
        #: OAuth2 refresh tokens (what ``docker login`` stores as ``identitytoken``) -> user.
        self.refresh_tokens = {f"refresh-{u}": u for u in users}
        self.private_prefix = private_prefix
        self.service = "wfexs-test-registry"
        self.issuer = "wfexs-test-issuer"
        self.key = directory / "token-key.pem"
        self.cert = directory / "token-cert.pem"
        _run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                "-out", str(self.cert), "-days", "2", "-subj", "/CN=wfexs-test-token-signer",
            ]
        )  # fmt: skip
        der = _run(["openssl", "pkey", "-in", str(self.key), "-pubout", "-outform", "DER"]).stdout
        self.kid = libtrust_key_id(der)
        self.requests: list[dict[str, object]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/token":
                    self.send_error(404)
                    return
                q = parse_qs(parts.query)
                user = None
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(u) != p:
                        self._send(401, {"details": "incorrect username or password"})
                        return
                    user = u
                scopes = q.get("scope", [])
                with server._lock:
                    server.requests.append({"scope": scopes, "user": user, "service": q.get("service")})
                token = server.issue(user, scopes)
                self._send(200, {"token": token, "access_token": token, "expires_in": 300})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                if urlsplit(self.path).path != "/token" or form.get("grant_type") != ["refresh_token"]:
                    self._send(400, {"error": "unsupported_grant_type"})
                    return
                user = server.refresh_tokens.get((form.get("refresh_token") or [""])[0])
                if user is None:
                    self._send(401, {"error": "invalid_grant"})
                    return
                scopes = " ".join(form.get("scope", [])).split()
                with server._lock:
                    server.requests.append({"scope": scopes, "user": user, "grant": "refresh_token"})
                token = server.issue(user, scopes)
                self._send(200, {"access_token": token, "expires_in": 300})

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def grant(self, user: str | None, scope: str) -> dict[str, object] | None:
        try:
            kind, name, actions = scope.split(":", 2)
        except ValueError:
            return None
        if kind != "repository":
            return None
        wanted = [a for a in actions.split(",") if a]
        if user is None:
            allowed = [] if name.startswith(self.private_prefix) else [a for a in wanted if a == "pull"]
        else:
            allowed = wanted
        return {"type": "repository", "name": name, "actions": allowed}

    def issue(self, user: str | None, scopes: list[str]) -> str:
        now = int(time.time())
        access = [g for s in scopes for g in [self.grant(user, s)] if g is not None]
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sign = ["openssl", "dgst", "-sha256", "-sign", str(self.key)]
        sig = _run(sign, input=signing_input.encode()).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def token_requests(self) -> list[dict[str, object]]:
        with self._lock:
            return list(self.requests)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextlib.contextmanager
def running_registry(root: Path, **kw) -> Iterator[RunningRegistry]:
    reg = start_registry(root, **kw)
    try:
        yield reg
    finally:
        reg.stop()

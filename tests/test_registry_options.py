"""The registry options of the everyday command: ``--authfile``, ``--cert-dir`` (and the per-host
certificate directories), ``--retry-times``, and failing fast when a registry cannot be reached.

Real registries throughout: the TLS one here has its own CA, a server
certificate signed by it and, because it demands a client certificate, it
also checks the ``*.cert``/``*.key`` pair is sent. It shares its storage with
a plain-HTTP twin that the images are pushed through (the push helper speaks
no client certificates).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.proxy import FaultProxy
from tests.support.push import push_image
from tests.support.registry import REGISTRY_BIN, RunningRegistry, child_env, free_port, start_registry
from wfexs_like.errors import AuthenticationError, RegistryError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.registry import RegistryClient

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("isolated_credentials")]

WFEXS_LIKE = Path(sys.executable).with_name("wfexs-like")


def client(**kw) -> RegistryClient:
    kw.setdefault("backoff", 0.02)
    kw.setdefault("timeout", 10)
    return RegistryClient(**kw)


def make_image(store: BlobStore, name: str) -> BuiltImage:
    return build_image(store, [busybox_base_layer(), {"etc/": None, f"etc/{name}.txt": name.encode()}])


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def write_json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


# -- a registry with a private CA that wants a client certificate ---------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ec_request(cwd: Path, name: str, subject: str) -> None:
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd,
    )  # fmt: skip


def _sign(cwd: Path, name: str, out: str, extensions: str) -> None:
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", out, "-days", "2", "-extfile", f"{name}.ext", cwd=cwd,
    )  # fmt: skip


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(d: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA."""
    d.mkdir(parents=True)
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=wfexs-like test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    _ec_request(d, "server", "/CN=127.0.0.1")
    _sign(
        d, "server", "server.pem", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _ec_request(d, "client", "/CN=wfexs-like test client")
    _sign(d, "client", "client.cert", "extendedKeyUsage=clientAuth\n")
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.cert", d / "client.key")


@dataclass
class TlsPair:
    """Two registries, one storage: ``plain`` (pushed to) and ``tls`` (CA-signed, wants a client cert)."""

    plain: RunningRegistry
    tls_host: str
    tls_url: str
    pki: Pki
    process: subprocess.Popen


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPair]:
    if shutil.which(REGISTRY_BIN) is None or shutil.which("openssl") is None:
        pytest.fail("docker-registry and openssl are needed; run scripts/setup-host.sh")
    root = tmp_path_factory.mktemp("tls-pair")
    plain = start_registry(root / "plain")
    pki = make_pki(root / "pki")
    port = free_port()
    cfg = root / "tls.yml"
    cfg.write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {plain.root / "data"}
http:
  addr: 127.0.0.1:{port}
  secret: wfexs-like-test
  tls:
    certificate: {pki.server_cert}
    key: {pki.server_key}
    clientcas:
      - {pki.ca}
"""
    )
    with open(root / "tls.log", "wb") as log:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=log, env=child_env())
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(
                f"{url}/v2/", verify=str(pki.ca), cert=(str(pki.client_cert), str(pki.client_key)), timeout=2
            ).close()
            break
        except requests.RequestException:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                plain.stop()
                pytest.fail(f"TLS registry did not start: {(root / 'tls.log').read_text()[-2000:]}")
            time.sleep(0.05)
    yield TlsPair(plain, f"127.0.0.1:{port}", url, pki, proc)
    proc.terminate()
    proc.wait(timeout=10)
    plain.stop()


@pytest.fixture(scope="module")
def tls_image(tls_pair: TlsPair, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    store = BlobStore(tmp_path_factory.mktemp("tls-src"))
    img = make_image(store, "tls")
    push_image(tls_pair.plain.url, "t/tls", "v1", store, img.manifest)
    return img


def cert_dir(tmp_path: Path, pki: Pki, *, ca: bool = True, client: bool = True) -> Path:
    d = tmp_path / "certs"
    d.mkdir(parents=True, exist_ok=True)
    if ca:
        shutil.copy(pki.ca, d / "ca.crt")
    if client:
        shutil.copy(pki.client_cert, d / "client.cert")
        shutil.copy(pki.client_key, d / "client.key")
    return d


def test_untrusted_tls_fails_with_a_message_naming_the_flags(tls_pair, tls_image, blob_store) -> None:
    with client() as c, pytest.raises(RegistryError) as ei:
        c.pull(tls_pair.tls_host, "t/tls", "v1", blob_store)
    msg = str(ei.value)
    assert "not trusted" in msg and tls_pair.tls_host in msg
    assert "--cert-dir DIR" in msg and f"/etc/containers/certs.d/{tls_pair.tls_host}/" in msg
    assert f"--insecure-registry {tls_pair.tls_host}" in msg
    assert "ca_bundle" not in msg and "insecure_registries" not in msg


def test_cert_dir_gives_the_ca_and_the_client_certificate(tls_pair, tls_image, blob_store, tmp_path) -> None:
    with client(cert_dir=cert_dir(tmp_path, tls_pair.pki)) as c:
        res = c.pull(tls_pair.tls_host, "t/tls", "v1", blob_store)
        assert c.base_url(tls_pair.tls_host) == tls_pair.tls_url
    assert res.manifest_digest == tls_image.digest
    assert all(blob_store.verify(d.digest, full=True) for d in tls_image.manifest.layers)


def test_a_missing_client_certificate_is_reported(tls_pair, tls_image, blob_store, tmp_path) -> None:
    only_ca = cert_dir(tmp_path, tls_pair.pki, client=False)
    with client(cert_dir=only_ca) as c, pytest.raises(RegistryError) as ei:
        c.pull(tls_pair.tls_host, "t/tls", "v1", blob_store)
    assert "client certificate" in str(ei.value) and "--cert-dir" in str(ei.value)

    (only_ca / "client.cert").write_bytes(tls_pair.pki.client_cert.read_bytes())
    with client(cert_dir=only_ca) as c, pytest.raises(RegistryError) as ei:
        c.pull(tls_pair.tls_host, "t/tls", "v1", blob_store)
    assert "client.cert but no client.key" in str(ei.value)


def test_per_host_certificate_directory_is_found(tls_pair, tls_image, blob_store, tmp_path) -> None:
    """No option at all: the certificates sit where podman looks for that host:port."""
    home = Path(os.environ["HOME"])
    per_host = home / ".config" / "containers" / "certs.d" / tls_pair.tls_host
    cert_dir(per_host.parent, tls_pair.pki).rename(per_host)
    with client() as c:
        assert c.pull(tls_pair.tls_host, "t/tls", "v1", blob_store).manifest_digest == tls_image.digest


def test_a_cert_dir_that_does_not_exist_is_named(tmp_path) -> None:
    with pytest.raises(RegistryError, match=r"--cert-dir .*no such directory"):
        RegistryClient(cert_dir=tmp_path / "nope")


# -- --authfile ---------------------------------------------------------------------------------------
def test_authfile_is_the_only_credential_source(auth_registry, src_store, blob_store, tmp_path) -> None:
    user, pw = next(iter(auth_registry.users.items()))
    img = make_image(src_store, "authfile")
    push_image(auth_registry.url, "private/authfile", "v1", src_store, img.manifest, auth=(user, pw),
               verify=auth_registry.verify)  # fmt: skip
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(auth_registry.ca_cert, certs / "ca.crt")  # a self-signed certificate is its own CA
    # The usual places hold a wrong password: only the given file may be used.
    home = Path(os.environ["HOME"])
    wrong = {"auths": {auth_registry.host: {"auth": b64(user, "wrong")}}}
    write_json(Path(os.environ["DOCKER_CONFIG"]) / "config.json", wrong)
    write_json(home / ".config" / "containers" / "auth.json", wrong)
    authfile = write_json(tmp_path / "auth.json", {"auths": {auth_registry.host: {"auth": b64(user, pw)}}})

    with client(auth_file=authfile, cert_dir=certs) as c:
        res = c.pull(auth_registry.host, "private/authfile", "v1", blob_store)
    assert res.manifest_digest == img.digest

    # A file without an entry for the host: the right password in DOCKER_CONFIG is not consulted.
    right = {"auths": {auth_registry.host: {"auth": b64(user, pw)}}}
    write_json(Path(os.environ["DOCKER_CONFIG"]) / "config.json", right)
    other = write_json(tmp_path / "other.json", {"auths": {"elsewhere.example": {"auth": b64(user, pw)}}})
    blob_store.remove(img.digest)
    with client(auth_file=other, cert_dir=certs) as c, pytest.raises(AuthenticationError) as ei:
        c.pull(auth_registry.host, "private/authfile", "v1", blob_store)
    msg = str(ei.value)
    looked = msg.partition("Sources looked at: ")[2].partition(". To authenticate")[0]
    assert looked == f"--authfile {other} (no 'auths' entry for {auth_registry.host})"
    assert f"add an 'auths' entry for {auth_registry.host} to {other}" in msg
    assert "docker_config=" not in msg


def test_authfile_with_a_token_registry(token_registry, src_store, blob_store, tmp_path) -> None:
    ts = token_registry.token_server
    assert ts is not None
    user, pw = next(iter(token_registry.users.items()))
    img = make_image(src_store, "authfile-token")
    push_image(token_registry.url, "private/authfile", "v1", src_store, img.manifest, auth=(user, pw))
    # podman's format: a key may name a namespace, the most specific wins.
    authfile = write_json(
        tmp_path / "auth.json",
        {
            "auths": {
                token_registry.host: {"auth": b64(user, "wrong")},
                f"{token_registry.host}/private": {"auth": b64(user, pw)},
            }
        },
    )
    n = len(ts.token_requests())
    with client(auth_file=authfile) as c:
        assert c.pull(token_registry.host, "private/authfile", "v1", blob_store).manifest_digest == img.digest
    assert [a["user"] for a in ts.token_requests()[n:]] == [user]


def test_a_probe_client_keeps_logins_and_certificates(auth_registry, src_store, tmp_path) -> None:
    """``copy_with(retries=0)``: one attempt, but the same way in as the pull."""
    user, pw = next(iter(auth_registry.users.items()))
    img = make_image(src_store, "probe")
    push_image(auth_registry.url, "private/probe", "v1", src_store, img.manifest, auth=(user, pw),
               verify=auth_registry.verify)  # fmt: skip
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(auth_registry.ca_cert, certs / "ca.crt")
    authfile = write_json(tmp_path / "auth.json", {"auths": {auth_registry.host: {"auth": b64(user, pw)}}})
    with client(auth_file=authfile, cert_dir=certs) as c, c.copy_with(retries=0) as probe:
        assert probe.policy.retries == 0 and c.policy.retries == 5
        digest, _, _ = probe.resolve(auth_registry.host, "private/probe", "v1")
    assert digest == img.digest


def test_an_authfile_that_does_not_exist_is_named(tmp_path) -> None:
    with pytest.raises(RegistryError, match=r"--authfile .*no such file"):
        RegistryClient(auth_file=tmp_path / "missing.json")


# -- failing fast ---------------------------------------------------------------------------------
def test_a_name_that_does_not_resolve_fails_at_once() -> None:
    """Default retries and back-off: only the kind of failure keeps this fast.

    The name is one the C resolver refuses on its own (a label starting with
    a dash), so the lookup fails like any unknown name without a DNS query
    leaving the machine.
    """
    t0 = time.monotonic()
    with RegistryClient() as c, pytest.raises(RegistryError) as ei:
        c.resolve("-no-such-registry-.invalid", "t/app", "v1")
    elapsed = time.monotonic() - t0
    assert "does not resolve" in str(ei.value) and "-no-such-registry-.invalid" in str(ei.value)
    assert "attempts" not in str(ei.value), "not retried"
    assert elapsed < 6, f"took {elapsed:.1f} s"


def test_a_refused_connection_fails_at_once() -> None:
    port = free_port()
    t0 = time.monotonic()
    with RegistryClient() as c, pytest.raises(RegistryError) as ei:
        c.resolve(f"127.0.0.1:{port}", "t/app", "v1")
    elapsed = time.monotonic() - t0
    msg = str(ei.value)
    assert f"could not reach 127.0.0.1:{port}" in msg and "refused" in msg
    assert "after 2 attempts" in msg, "one quick retry, no more"
    assert elapsed < 6, f"took {elapsed:.1f} s"


def test_the_command_fails_fast_on_a_refused_connection(tmp_path: Path) -> None:
    """End to end: the old back-off made this take 13 s. The bound also holds a subprocess
    start-up on a loaded machine, so it is loose."""
    tag = f"127.0.0.1:{free_port()}/t/app:v1"
    cmd = [str(WFEXS_LIKE), "materialize", "--engine", "podman", "--stage-dir", str(tmp_path / "stage"),
           "--cache-dir", str(tmp_path / "cache"), tag]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    assert "refused" in proc.stderr and "Traceback" not in proc.stderr
    assert f"{tag}: {tag}" not in proc.stderr, "the tag is not repeated as a prefix"
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_retries_zero_means_exactly_one_request(registry, src_store, blob_store) -> None:
    img = make_image(src_store, "once")
    push_image(registry.url, "t/once", "v1", src_store, img.manifest)
    proxy = FaultProxy(registry.url)
    try:
        proxy.fail(500, "/v2/", times=1000)
        with client(retries=0) as c, pytest.raises(RegistryError) as ei:
            c.pull(proxy.host, "t/once", "v1", blob_store)
        assert len(proxy.seen) == 1 and ei.value.status == 500
        assert "HTTP 500" in str(ei.value) and "--retry-times" in str(ei.value)

        proxy.rules.clear()
        layer = img.manifest.layers[1].digest
        proxy.fail(503, layer, times=1000)
        with client(retries=0) as c, pytest.raises(RegistryError) as ei:
            c.pull(proxy.host, "t/once", "v1", blob_store)
        assert len(proxy.hits(layer, "GET")) == 1
        assert "--retry-times" in str(ei.value)

        with client(retries=2) as c, pytest.raises(RegistryError):
            c.pull(proxy.host, "t/once", "v1", blob_store)
        assert len(proxy.hits(layer, "GET")) == 1 + 3
    finally:
        proxy.stop()


# -- the same options through the command ---------------------------------------------------------
def run_materialize(tmp_path: Path, tag: str, *options: str) -> subprocess.CompletedProcess:
    cmd = [str(WFEXS_LIKE), "materialize", "--engine", "podman", "--stage-dir", str(tmp_path / "stage"),
           "--cache-dir", str(tmp_path / "cache"), *options, tag]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_the_command_reads_authfile_and_cert_dir(auth_registry, src_store, tmp_path) -> None:
    user, pw = next(iter(auth_registry.users.items()))
    img = make_image(src_store, "cli-authfile")
    push_image(auth_registry.url, "private/cli", "v1", src_store, img.manifest, auth=(user, pw),
               verify=auth_registry.verify)  # fmt: skip
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(auth_registry.ca_cert, certs / "ca.crt")
    wrong = {"auths": {auth_registry.host: {"auth": b64(user, "wrong")}}}
    write_json(Path(os.environ["DOCKER_CONFIG"]) / "config.json", wrong)
    authfile = write_json(tmp_path / "auth.json", {"auths": {auth_registry.host: {"auth": b64(user, pw)}}})
    tag = f"{auth_registry.host}/private/cli:v1"

    done = run_materialize(tmp_path, tag, "--authfile", str(authfile), "--cert-dir", str(certs))
    assert done.returncode == 0, done.stderr
    assert img.digest in done.stdout

    untrusted = run_materialize(tmp_path / "again", tag, "--authfile", str(authfile))
    assert untrusted.returncode == 1
    assert "--cert-dir DIR" in untrusted.stderr and "not trusted" in untrusted.stderr
    assert "ca_bundle" not in untrusted.stderr and "Traceback" not in untrusted.stderr


def test_the_command_retry_times(registry, src_store, tmp_path) -> None:
    img = make_image(src_store, "cli-retry")
    push_image(registry.url, "t/cli-retry", "v1", src_store, img.manifest)
    proxy = FaultProxy(registry.url)
    try:
        proxy.fail(500, "/v2/", times=1000)
        tag = f"{proxy.host}/t/cli-retry:v1"
        once = run_materialize(tmp_path / "once", tag, "--retry-times", "0")
        assert once.returncode == 1 and "HTTP 500" in once.stderr, once.stderr
        assert len(proxy.seen) == 1
        thrice = run_materialize(tmp_path / "thrice", tag, "--retry-times", "2")
        assert thrice.returncode == 1
        assert len(proxy.seen) == 1 + 3
    finally:
        proxy.stop()

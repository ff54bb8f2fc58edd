"""TLS trust per registry host, from where docker, podman and skopeo keep it.

A site registry with a private CA is set up once per machine, for every
tool: ``/etc/containers/certs.d/<host[:port]>/`` (podman, skopeo, buildah),
``/etc/docker/certs.d/<host[:port]>/`` (docker) or, for one user,
``~/.config/containers/certs.d/<host[:port]>/``. Such a directory holds CA
certificates (``*.crt``) and client certificate pairs (``*.cert`` with the
``*.key`` of the same name). Reading the same directories means a registry
that works with ``podman pull`` works here with no extra flag; ``--cert-dir
DIR`` (skopeo's flag) names one such directory for every registry instead.

The CA certificates are added to the usual trust store, as those tools do,
not put in its place. A TLS context loads one bundle file, so the store and
the directory's certificates are concatenated into a file in a private
temporary directory, once per host, removed when the client is closed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import RegistryError

log = logging.getLogger(__name__)

#: Consulted in this order after the user's own directory; the first that has the host wins.
SYSTEM_CERT_ROOTS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


def user_cert_root() -> Path:
    return Path.home() / ".config" / "containers" / "certs.d"


@dataclass(frozen=True)
class TlsSettings:
    """TLS for one URL: ``verify`` (True, False or a bundle path) and ``cert`` (client cert, key)."""

    verify: bool | str = True
    cert: tuple[str, str] | None = None


@dataclass(frozen=True)
class CertDir:
    """What one certificate directory offers."""

    path: Path
    cas: tuple[Path, ...]
    client_cert: tuple[Path, Path] | None


def read_cert_dir(path: Path, flag: str) -> CertDir:
    """The CAs and the client pair in ``path``; a certificate without its key (or a key without its
    certificate) is an error, as docker makes it, rather than a silently anonymous connection."""
    try:
        names = sorted(p for p in path.iterdir() if p.is_file())
    except OSError as e:
        raise RegistryError(f"cannot read the certificate directory {path} ({flag}): {e.strerror}") from e
    cas = tuple(p for p in names if p.suffix == ".crt")
    certs = {p.stem: p for p in names if p.suffix == ".cert"}
    keys = {p.stem: p for p in names if p.suffix == ".key"}
    for stem in sorted(certs.keys() ^ keys.keys()):
        have, lacks = (certs[stem], f"{stem}.key") if stem in certs else (keys[stem], f"{stem}.cert")
        raise RegistryError(
            f"the certificate directory {path} ({flag}) has {have.name} but no {lacks}; a client "
            "certificate needs both files with the same name. Add the missing one or remove the other."
        )
    pairs = [(certs[s], keys[s]) for s in sorted(certs)]
    if len(pairs) > 1:
        log.warning("%s holds %d client certificates; using %s", path, len(pairs), pairs[0][0].name)
    return CertDir(path, cas, pairs[0] if pairs else None)


def default_ca_bundle() -> str | None:
    """The bundle verified against when told nothing: ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, then
    certifi's when installed, else None (the system's store)."""
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


class HostTls:
    """Decides ``TlsSettings`` per URL: skip verification, a CA bundle, a client certificate.

    ``cert_dir`` (``--cert-dir``) applies to every host; without it the
    per-host directories are looked up. ``ca_bundle`` (a file) replaces the
    default trust store and directories' CAs are added to it.
    """

    def __init__(
        self,
        *,
        insecure: Callable[[str], bool],
        cert_dir: Path | None = None,
        ca_bundle: str | Path | None = None,
        roots: Sequence[Path] | None = None,
    ) -> None:
        if cert_dir is not None and not Path(cert_dir).is_dir():
            raise RegistryError(
                f"--cert-dir {cert_dir}: no such directory; give a directory holding the registry's CA "
                "certificate as a .crt file"
            )
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            raise RegistryError(
                f"the CA bundle {ca_bundle} does not exist; give a PEM file of CA certificates"
            )
        self._insecure = insecure
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self._ca_bundle = str(ca_bundle) if ca_bundle is not None else None
        self._roots = tuple(roots) if roots is not None else None
        self._cache: dict[str, TlsSettings] = {}
        self._lock = threading.Lock()
        self._tmp: Path | None = None
        self._finalizer: weakref.finalize | None = None

    def for_url(self, url: str) -> TlsSettings:
        parts = urlsplit(url)
        if parts.scheme.lower() != "https":
            return TlsSettings()
        hostport = parts.netloc.rpartition("@")[2].lower()
        with self._lock:
            settings = self._cache.get(hostport)
            if settings is None:
                settings = self._cache[hostport] = self._settings(hostport, parts.port)
            return settings

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def _settings(self, hostport: str, port: int | None) -> TlsSettings:
        found = self._find_dir(hostport, port)
        cert = (str(found.client_cert[0]), str(found.client_cert[1])) if found and found.client_cert else None
        if self._insecure(hostport):
            # Said once per host: the user chose it, but a log of the run should show it.
            log.warning("%s: TLS certificate not verified (declared an insecure registry)", hostport)
            return TlsSettings(False, cert)
        if found is None or not found.cas:
            return TlsSettings(self._ca_bundle or True, cert)
        return TlsSettings(self._bundle(hostport, found.cas), cert)

    def _find_dir(self, hostport: str, port: int | None) -> CertDir | None:
        if self._cert_dir is not None:
            return read_cert_dir(self._cert_dir, f"--cert-dir {self._cert_dir}")
        names = [hostport]
        if port == 443:
            names.append(hostport.rsplit(":", 1)[0])
        roots = self._roots if self._roots is not None else (user_cert_root(), *SYSTEM_CERT_ROOTS)
        for root in roots:
            for name in names:
                d = root / name
                if d.is_dir():
                    log.debug("TLS material for %s from %s", hostport, d)
                    return read_cert_dir(d, f"certificates for {hostport}")
        return None

    def _bundle(self, hostport: str, cas: Sequence[Path]) -> str:
        base = self._ca_bundle or default_ca_bundle()
        parts: list[bytes] = []
        if base and Path(base).is_file():
            parts.append(Path(base).read_bytes())
        for ca in cas:
            try:
                parts.append(ca.read_bytes())
            except OSError as e:
                raise RegistryError(f"cannot read the CA certificate {ca}: {e.strerror}") from e
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="wfexs-like-tls-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        path = self._tmp / (hostport.replace(":", "_").replace("/", "_") + ".pem")
        path.write_bytes(b"\n".join(p.rstrip(b"\n") + b"\n" for p in parts))
        return str(path)

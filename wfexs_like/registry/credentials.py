"""Find registry credentials where the user already put them.

Users log in with ``docker login``, ``podman login`` or ``skopeo login``; asking
them to configure wfexs-like separately would just mean a second copy of a
secret. So we read the same files those tools write, in the same formats:

- Docker's ``config.json`` (``$DOCKER_CONFIG`` or ``~/.docker``): ``auths``
  entries (base64 ``auth`` or ``username``/``password``, ``identitytoken``),
  ``credHelpers`` per registry and ``credsStore`` for all, through the
  ``docker-credential-<name> get`` protocol (server URL on stdin, JSON out).
- Podman/skopeo's ``auth.json`` (``$REGISTRY_AUTH_FILE``, else
  ``$XDG_RUNTIME_DIR/containers/auth.json``, else
  ``~/.config/containers/auth.json``), whose keys may also name a namespace
  (``quay.io/org``) — the most specific key wins.

``--authfile FILE`` (skopeo's flag; either format) replaces all of these.

Every place looked at is remembered, so an authentication failure can say
exactly which sources were tried and came up empty.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DOCKER_HUB_HOSTS = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
#: The key ``docker login`` (no argument) stores Docker Hub credentials under.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Credentials:
    """A username/secret pair or an OAuth2 refresh (identity) token, and where it came from."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)
    source: str = ""

    @property
    def usable(self) -> bool:
        return bool(self.identity_token) or (self.username is not None and self.password is not None)


def normalize_host(registry: str) -> str:
    """``https://Index.Docker.io/v1/`` -> ``index.docker.io``; any Docker Hub alias -> ``docker.io``."""
    host = registry.strip()
    for prefix in ("https://", "http://"):
        if host.lower().startswith(prefix):
            host = host[len(prefix) :]
            host = host.split("/", 1)[0]
            break
    host = host.rstrip("/").lower()
    if host.split("/", 1)[0] in DOCKER_HUB_HOSTS:
        rest = host.split("/", 1)[1] if "/" in host else ""
        host = "docker.io" + (f"/{rest}" if rest else "")
    return host


def _key_of(raw_key: str) -> str:
    """Normalise an ``auths`` key; schemeful keys (Docker) lose their path, bare ones (podman) keep it."""
    return normalize_host(raw_key)


def _candidates(registry: str, repository: str | None) -> list[str]:
    """Keys to look up, most specific first: ``host/a/b``, ``host/a``, ``host``."""
    host = normalize_host(registry)
    out = []
    if repository:
        parts = repository.strip("/").split("/")
        for i in range(len(parts), 0, -1):
            out.append(f"{host}/{'/'.join(parts[:i])}")
    out.append(host)
    return out


def _helper_server_urls(registry: str) -> list[str]:
    host = normalize_host(registry)
    if host == "docker.io":
        return [DOCKER_HUB_AUTH_KEY, "docker.io", "index.docker.io"]
    return [host, f"https://{host}"]


def _decode_auth_entry(entry: Mapping[str, Any], source: str) -> Credentials | None:
    username = entry.get("username")
    password = entry.get("password")
    token = entry.get("identitytoken") or None
    auth = entry.get("auth")
    if auth:
        try:
            decoded = base64.b64decode(str(auth), validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            log.warning("ignoring undecodable 'auth' field in %s", source)
            decoded = ""
        if ":" in decoded:
            username, _, password = decoded.partition(":")
    creds = Credentials(
        username=str(username) if username is not None else None,
        password=str(password) if password is not None else None,
        identity_token=str(token) if token else None,
        source=source,
    )
    return creds if creds.usable else None


def run_credential_helper(
    name: str, server_url: str, env: Mapping[str, str] | None = None
) -> Credentials | None:
    """``docker-credential-<name> get``; None when the helper knows nothing about ``server_url``.

    Raises LookupError (with a message fit for the user) when the helper is
    missing or fails for another reason, so callers can report it.
    """
    exe_name = f"docker-credential-{name}"
    path_env = (env or os.environ).get("PATH")
    exe = shutil.which(exe_name, path=path_env)
    if exe is None:
        raise LookupError(f"credential helper {exe_name} is not on PATH")
    try:
        proc = subprocess.run(
            [exe, "get"],
            input=server_url.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LookupError(f"credential helper {exe_name} did not answer within {HELPER_TIMEOUT:.0f} s") from e
    out = proc.stdout.decode("utf-8", errors="replace").strip()
    err = proc.stderr.decode("utf-8", errors="replace").strip()
    if proc.returncode != 0:
        if "credentials not found" in (out + err).lower():
            return None
        raise LookupError(f"credential helper {exe_name} exited {proc.returncode}: {(err or out)[-300:]}")
    try:
        data = json.loads(out)
    except ValueError as e:
        raise LookupError(f"credential helper {exe_name} printed something that is not JSON") from e
    username = data.get("Username")
    secret = data.get("Secret")
    if not secret:
        return None
    source = f"credential helper {exe_name} ({server_url})"
    if username == "<token>":
        return Credentials(identity_token=str(secret), source=source)
    return Credentials(username=str(username or ""), password=str(secret), source=source)


@dataclass
class _AuthFile:
    path: Path
    label: str


class CredentialResolver:
    """Looks credentials up on demand and caches the answer per registry/repository.

    Helpers can be slow (or pop up a keychain prompt), so each is asked at
    most once per client; ``tried`` keeps a line per source for error messages.
    """

    def __init__(
        self,
        docker_config: Path | None = None,
        env: Mapping[str, str] | None = None,
        *,
        auth_file: Path | None = None,
    ) -> None:
        self._env = dict(env) if env is not None else None
        self._docker_config = Path(docker_config) if docker_config is not None else None
        self._auth_file = Path(auth_file) if auth_file is not None else None
        self._cache: dict[tuple[str, str | None], tuple[Credentials | None, list[str]]] = {}
        self._helper_answers: dict[tuple[str, str], Credentials | LookupError | None] = {}
        self._lock = threading.Lock()

    @property
    def auth_file(self) -> Path | None:
        """The one file credentials come from (``--authfile``), or None for the usual places."""
        return self._auth_file

    @property
    def env(self) -> Mapping[str, str]:
        return self._env if self._env is not None else os.environ

    def auth_files(self) -> list[_AuthFile]:
        """Where to look, in order: only the ``auth_file`` when one is given; an explicit
        ``docker_config`` replaces the default Docker one."""
        if self._auth_file is not None:
            return [_AuthFile(self._auth_file, "--authfile")]
        env = self.env
        files: list[_AuthFile] = []
        if self._docker_config is not None:
            p = self._docker_config
            files.append(_AuthFile(p / "config.json" if p.is_dir() else p, "docker config"))
        if env.get("REGISTRY_AUTH_FILE"):
            files.append(_AuthFile(Path(env["REGISTRY_AUTH_FILE"]), "REGISTRY_AUTH_FILE"))
        if self._docker_config is None:
            base = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
            files.append(_AuthFile(base / "config.json", "docker config"))
        if env.get("XDG_RUNTIME_DIR"):
            files.append(
                _AuthFile(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json", "podman auth.json")
            )
        files.append(_AuthFile(Path.home() / ".config" / "containers" / "auth.json", "podman auth.json"))
        return files

    def lookup(self, registry: str, repository: str | None = None) -> tuple[Credentials | None, list[str]]:
        """Credentials for ``registry`` (and ``repository``, for namespaced keys), plus what was tried."""
        key = (normalize_host(registry), repository)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        result = self._lookup(registry, repository)
        with self._lock:
            self._cache[key] = result
        return result

    def forget(self, registry: str) -> None:
        """Drop cached answers for ``registry`` (after a ``docker login`` mid-run, say)."""
        host = normalize_host(registry)
        with self._lock:
            for k in [k for k in self._cache if k[0] == host]:
                del self._cache[k]
            for k in [k for k in self._helper_answers if normalize_host(k[1]) == host]:
                del self._helper_answers[k]

    def _ask_helper(self, name: str, url: str) -> Credentials | None:
        """One helper run per (helper, server) per resolver, however many repositories ask."""
        key = (name, url)
        with self._lock:
            known = self._helper_answers.get(key, ...)
        if known is ...:
            try:
                known = run_credential_helper(name, url, self._env)
            except LookupError as e:
                known = e
            with self._lock:
                self._helper_answers[key] = known
        if isinstance(known, LookupError):
            raise known
        return known

    def _lookup(self, registry: str, repository: str | None) -> tuple[Credentials | None, list[str]]:
        tried: list[str] = []
        host = normalize_host(registry)
        seen: set[Path] = set()
        for af in self.auth_files():
            if af.path in seen:
                continue
            seen.add(af.path)
            if not af.path.is_file():
                tried.append(f"{af.label} {af.path} (absent)")
                continue
            try:
                data = json.loads(af.path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as e:
                tried.append(f"{af.label} {af.path} (unreadable: {e})")
                continue
            creds = self._from_config(data, af, host, registry, repository, tried)
            if creds is not None:
                return creds, tried
        return None, tried

    def _from_config(
        self,
        data: Mapping[str, Any],
        af: _AuthFile,
        host: str,
        registry: str,
        repository: str | None,
        tried: list[str],
    ) -> Credentials | None:
        helpers = {normalize_host(k): v for k, v in (data.get("credHelpers") or {}).items()}
        helper_names = []
        if helpers.get(host):
            helper_names.append(str(helpers[host]))
        if data.get("credsStore"):
            helper_names.append(str(data["credsStore"]))
        for name in helper_names:
            for url in _helper_server_urls(registry):
                try:
                    creds = self._ask_helper(name, url)
                except LookupError as e:
                    tried.append(f"{af.label} {af.path}: {e}")
                    break
                if creds is not None:
                    return creds
            else:
                tried.append(f"{af.label} {af.path}: docker-credential-{name} has nothing for {host}")
        auths = data.get("auths") or {}
        entries = {_key_of(k): v for k, v in auths.items() if isinstance(v, Mapping)}
        for cand in _candidates(registry, repository):
            entry = entries.get(cand)
            if entry is None:
                continue
            creds = _decode_auth_entry(entry, f"{af.label} {af.path} (auths[{cand!r}])")
            if creds is not None:
                return creds
        tried.append(f"{af.label} {af.path} (no 'auths' entry for {host})")
        return None

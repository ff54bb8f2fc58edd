"""Registry authentication: answer a 401's challenge the way docker does.

A registry tells us how to authenticate only when it refuses us: a 401 with
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` (a token
service, anonymous or with credentials — Docker Hub, quay, ghcr, harbor) or
``Basic realm=...`` (an htpasswd registry). We remember the challenge per
registry so later requests (other repositories, other blobs) authenticate
up front instead of paying a 401 round trip each, and cache bearer tokens
per scope until shortly before they expire.

Pulls ask for ``repository:<name>:pull``; a push asks for ``pull,push`` on
the repository it writes, plus ``pull`` on the repository a blob is mounted
from (``extra_scopes``), all in one token, as token services expect.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from ..errors import AuthenticationError, RegistryError
from .credentials import CredentialResolver, Credentials
from .httpio import Response
from .transport import Transport

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME_RE = re.compile(rf"[\s,]*({_TOKEN})(?:\s+|$)")
_PARAM_RE = re.compile(rf"\s*({_TOKEN})\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^,\s]*)\s*")
_UNESCAPE_RE = re.compile(r"\\(.)")
#: Refresh a token this long before the registry would start refusing it.
TOKEN_MARGIN = 10.0
CLIENT_ID = "wfexs-like"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer", "basic", ...
    params: Mapping[str, str] = field(default_factory=dict)


def parse_www_authenticate(value: str) -> list[Challenge]:
    """Parse RFC 7235 challenges; quoted values may hold commas (``scope="repository:a:pull,push"``)."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(value):
        m = _SCHEME_RE.match(value, pos)
        if not m:
            break
        scheme = m.group(1)
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(value):
            pm = _PARAM_RE.match(value, pos)
            if not pm:
                break
            raw = pm.group(2)
            if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
                raw = _UNESCAPE_RE.sub(r"\1", raw[1:-1])
            params[pm.group(1).lower()] = raw
            pos = pm.end()
            if pos < len(value) and value[pos] == ",":
                pos += 1
            else:
                break
        out.append(Challenge(scheme.lower(), params))
        if pos < len(value) and value[pos] not in " ,":
            # token68 or junk we do not understand: skip to the next comma
            nxt = value.find(",", pos)
            pos = len(value) if nxt < 0 else nxt + 1
    return out


def repository_scope(repository: str, actions: str = "pull") -> str:
    return f"repository:{repository}:{actions}"


@dataclass
class _Token:
    value: str
    expires_at: float


class RegistryAuth:
    """Authentication state for one registry host; safe to share between threads."""

    def __init__(
        self,
        *,
        registry: str,
        transport: Transport,
        resolver: CredentialResolver,
    ) -> None:
        self.registry = registry
        self.transport = transport
        self.resolver = resolver
        self._challenge: Challenge | None = None
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.Lock()
        self._scope_locks: dict[str, threading.Lock] = {}
        #: What was last used (for error messages): "anonymous" or a credential source.
        self.last_used: dict[str, str] = {}
        self.token_requests = 0

    # -- public ---------------------------------------------------------------
    def credentials(self, repository: str | None) -> tuple[Credentials | None, list[str]]:
        return self.resolver.lookup(self.registry, repository)

    def learn(self, www_authenticate: str | None) -> None:
        """Remember a challenge seen on the ``/v2/`` ping so the first real request is authenticated."""
        challenges = parse_www_authenticate(www_authenticate or "")
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is not None:
            self._challenge = chosen

    def headers(
        self,
        repository: str,
        what: str = "",
        *,
        actions: str = "pull",
        extra_scopes: Sequence[str] = (),
    ) -> dict[str, str]:
        """Authorization for a request to ``repository``, if this registry is known to want one.

        ``actions`` is what the request does to ``repository`` (``pull``, or
        ``pull,push`` for an upload); ``extra_scopes`` are further scopes the
        same token must carry (``repository:<other>:pull`` for a mount).
        """
        challenge = self._challenge
        if challenge is None:
            return {}
        scopes = (repository_scope(repository, actions), *extra_scopes)
        return self._headers_for(challenge, repository, force=False, what=what, scopes=scopes)

    def challenged(
        self,
        resp: Response,
        repository: str,
        what: str,
        sent: str | None = None,
        *,
        actions: str = "pull",
        extra_scopes: Sequence[str] = (),
    ) -> dict[str, str]:
        """Learn from a 401 and return the headers for one more try (fresh token, credentials).

        ``sent`` is the Authorization value the refused request carried: when
        another thread has meanwhile fetched a different token we reuse that
        one instead of asking the token service again.
        """
        header = resp.headers.get("WWW-Authenticate", "")
        challenges = parse_www_authenticate(header)
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            raise AuthenticationError(
                f"{what}: {self.registry} answered HTTP 401 with a challenge we cannot answer "
                f"({header or 'no WWW-Authenticate header'}); only Bearer and Basic are supported.",
                status=401,
                url=resp.url,
            )
        self._challenge = chosen
        return self._headers_for(
            chosen,
            repository,
            force=True,
            hinted_scope=chosen.params.get("scope"),
            sent=sent,
            what=what,
            scopes=(repository_scope(repository, actions), *extra_scopes),
        )

    def failure(self, what: str, status: int, url: str | None, repository: str) -> AuthenticationError:
        """The error for a registry that still refuses us after we authenticated as well as we could."""
        creds, tried = self.credentials(repository)
        used = self.last_used.get(repository) or ("anonymous" if creds is None else creds.source)
        looked = "; ".join(tried) if tried else "nothing"
        verb = "refused" if status == 401 else "forbade"
        host = self.registry
        authfile = self.resolver.auth_file
        if authfile is not None:
            how = (
                f"add an 'auths' entry for {host} to {authfile} (`podman login --authfile {authfile} "
                f"{host}` writes one), or leave out --authfile to use the usual places"
            )
        else:
            how = (
                f"run `docker login {host}` (or `podman login {host}`), add an 'auths' entry for {host} "
                "to ~/.docker/config.json (or to config.json in the directory DOCKER_CONFIG names), "
                "point REGISTRY_AUTH_FILE at a podman auth.json, or pass --authfile FILE"
            )
        return AuthenticationError(
            f"{what}: registry {host} {verb} access (HTTP {status}). Credentials used: {used}. "
            f"Sources looked at: {looked}. To authenticate, {how}. Some registries also answer this "
            "way for a repository that does not exist: check the name.",
            status=status,
            url=url,
        )

    # -- internals ------------------------------------------------------------
    def _headers_for(
        self,
        challenge: Challenge,
        repository: str,
        *,
        force: bool,
        hinted_scope: str | None = None,
        sent: str | None = None,
        what: str = "",
        scopes: Sequence[str] = (),
    ) -> dict[str, str]:
        what = what or f"accessing {self.registry}/{repository}"
        if challenge.scheme == "basic":
            creds, _ = self.credentials(repository)
            if creds is None or creds.username is None or creds.password is None:
                if force:
                    raise self.failure(
                        f"{what} (the registry wants a username and password)",
                        401,
                        None,
                        repository,
                    )
                return {}
            self.last_used[repository] = creds.source
            raw = f"{creds.username}:{creds.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        token = self._token(
            challenge,
            repository,
            force=force,
            hinted_scope=hinted_scope,
            sent=sent,
            what=what,
            scopes=tuple(scopes) or (repository_scope(repository),),
        )
        return {"Authorization": f"Bearer {token}"}

    def _scope_lock(self, scope: str) -> threading.Lock:
        with self._lock:
            return self._scope_locks.setdefault(scope, threading.Lock())

    def _token(
        self,
        challenge: Challenge,
        repository: str,
        *,
        force: bool,
        hinted_scope: str | None,
        sent: str | None,
        what: str,
        scopes: tuple[str, ...],
    ) -> str:
        key = " ".join(scopes)
        with self._scope_lock(key):
            cached = self._tokens.get(key)
            fresh = cached is not None and cached.expires_at > time.monotonic()
            if cached is not None and fresh and (not force or f"Bearer {cached.value}" != sent):
                return cached.value
            wanted = list(scopes)
            if hinted_scope and hinted_scope not in wanted:
                wanted.append(hinted_scope)
            value, lifetime = self._fetch_token(challenge, repository, wanted, what)
            self._tokens[key] = _Token(value, time.monotonic() + max(1.0, lifetime - TOKEN_MARGIN))
            return value

    def _fetch_token(
        self, challenge: Challenge, repository: str, scopes: list[str], what: str
    ) -> tuple[str, float]:
        realm = challenge.params.get("realm")
        what = f"{what} (getting a token for scope {' '.join(scopes)})"
        if not realm or urlsplit(realm).scheme not in ("http", "https"):
            raise AuthenticationError(
                f"{what}: the registry's Bearer challenge has no usable realm ({realm!r})", status=401
            )
        creds, _ = self.credentials(repository)
        params: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        params.extend(("scope", s) for s in scopes)
        self.token_requests += 1
        if creds is not None and creds.identity_token:
            form = dict(params)
            form.update(
                grant_type="refresh_token",
                refresh_token=creds.identity_token,
                client_id=CLIENT_ID,
                scope=" ".join(scopes),
            )
            resp = self.transport.send("POST", realm, data=form, what=what)
        else:
            basic = (creds.username, creds.password) if creds and creds.username is not None else None
            url = realm + ("&" if "?" in realm else "?") + urlencode(params)
            resp = self.transport.send("GET", url, what=what, auth=basic)  # type: ignore[arg-type]
        self.last_used[repository] = "anonymous" if creds is None else creds.source
        with resp:
            if resp.status_code in (401, 403):
                raise self.failure(what, resp.status_code, realm, repository)
            if resp.status_code != 200:
                raise RegistryError(
                    f"{what}: token service {realm} answered HTTP {resp.status_code}: {resp.text[:300]}",
                    status=resp.status_code,
                    url=realm,
                )
            try:
                data = resp.json()
            except ValueError as e:
                raise RegistryError(f"{what}: token service {realm} sent no JSON", url=realm) from e
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f"{what}: token service {realm} sent no token", url=realm)
        try:
            lifetime = float(data.get("expires_in") or 60)
        except (TypeError, ValueError):
            lifetime = 60.0
        return str(token), lifetime

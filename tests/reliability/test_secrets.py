"""Credentials never appear in metadata, YAML, logs or error messages.

Real materializes run against the two authenticating registries of
``tests/conftest.py`` (TLS + Basic auth, and Bearer tokens from a token
service), with ``-vvv`` (every library's debug log), with the right
password, a wrong one, an OAuth2 refresh token, and with credentials
written into a URL. Then every file the runs wrote (caches, stage dirs,
records, an exported bundle, the captured stdout and stderr, and whatever
landed in their HOME, TMPDIR and XDG dirs) is searched for each secret: the
passwords, ``base64(user:password)`` as an ``Authorization: Basic`` header
carries it, the refresh token, and every bearer token the token service
issued during the test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote as url_quote

import pytest

from tests.conftest import TEST_USERS
from tests.support.imagegen import build_image
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.images.blobstore import BlobStore

WFEXS_LIKE = Path(sys.executable).with_name("wfexs-like")
USER, PASSWORD = next(iter(TEST_USERS.items()))
WRONG = f"Wr0ng-{uuid.uuid4().hex[:12]}"


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Workspace:
    """Everything the runs may write goes under ``work``; the logins live apart, in ``secrets``."""

    root: Path
    work: Path
    secrets: Path
    env: dict[str, str]
    runs: list[tuple[list[str], int]] = field(default_factory=list)

    def run(self, name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        argv = [str(WFEXS_LIKE), *map(str, args)]
        p = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=300, check=False)
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        (logs / f"{name}.stdout").write_text(p.stdout)
        (logs / f"{name}.stderr").write_text(p.stderr)
        self.runs.append((argv, p.returncode))
        assert "Traceback" not in p.stderr, p.stderr
        return p


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    work, secrets = tmp_path / "work", tmp_path / "secrets"
    for d in (work, secrets, work / "home", work / "tmp", work / "xdg-cache", work / "xdg-config"):
        d.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WFEXS_LIKE_CACHE_DIR", "REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "DOCKER_AUTH_CONFIG")
    }
    env.update(
        HOME=str(work / "home"),
        TMPDIR=str(work / "tmp"),
        XDG_CACHE_HOME=str(work / "xdg-cache"),
        XDG_CONFIG_HOME=str(work / "xdg-config"),
        XDG_RUNTIME_DIR=str(work / "home" / "run"),
        DOCKER_CONFIG=str(work / "home" / ".docker"),
        REGISTRY_AUTH_FILE="",
    )
    return Workspace(tmp_path, work, secrets, env)


@pytest.fixture
def issued_tokens(token_registry: RunningRegistry) -> Iterator[list[str]]:
    """Every bearer token the token service hands out while the test runs."""
    ts = token_registry.token_server
    assert ts is not None
    issued: list[str] = []
    original = ts.issue

    def issue(*args: object, **kwargs: object) -> str:
        token = original(*args, **kwargs)
        issued.append(token)
        return token

    ts.issue = issue  # type: ignore[method-assign]
    try:
        yield issued
    finally:
        del ts.issue


def _push_private(reg: RunningRegistry, src: BlobStore, name: str) -> str:
    img = build_image(src, [{"etc/": None, f"etc/{name}": f"{name}\n".encode()}], cmd=None)
    repo = f"private/wl-secrets-{uuid.uuid4().hex[:8]}/{name}"
    push_image(reg.url, repo, "1", src, img.manifest, auth=(USER, PASSWORD), verify=reg.verify)
    return f"{reg.host}/{repo}:1"


def _authfile(path: Path, host: str, entry: dict[str, str]) -> Path:
    path.write_text(json.dumps({"auths": {host: entry}}))
    return path


def _written_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def _find(needles: dict[str, bytes], root: Path) -> list[str]:
    found = []
    for path in _written_files(root):
        data = path.read_bytes()
        found += [f"{what} in {path.relative_to(root)}" for what, needle in needles.items() if needle in data]
    return found


def test_credentials_never_reach_an_artifact(
    workspace: Workspace,
    auth_registry: RunningRegistry,
    token_registry: RunningRegistry,
    issued_tokens: list[str],
    src_store: BlobStore,
) -> None:
    ws, work, secrets = workspace, workspace.work, workspace.secrets
    basic_tag = _push_private(auth_registry, src_store, "basic")
    token_tag = _push_private(token_registry, src_store, "token")
    refresh = f"refresh-{USER}"

    certs = secrets / "certs"
    certs.mkdir()
    assert auth_registry.ca_cert is not None
    shutil.copy(auth_registry.ca_cert, certs / "ca.crt")
    logins = {
        "basic": _authfile(secrets / "basic.json", auth_registry.host, {"auth": b64(USER, PASSWORD)}),
        "basic-wrong": _authfile(
            secrets / "basic-wrong.json", auth_registry.host, {"auth": b64(USER, WRONG)}
        ),
        "token": _authfile(secrets / "token.json", token_registry.host, {"auth": b64(USER, PASSWORD)}),
        "token-wrong": _authfile(
            secrets / "token-wrong.json", token_registry.host, {"auth": b64(USER, WRONG)}
        ),
        "token-refresh": _authfile(secrets / "refresh.json", token_registry.host, {"identitytoken": refresh}),
    }

    def materialize(
        name: str, tag: str, login: str | None, *extra: str | Path
    ) -> subprocess.CompletedProcess[str]:
        auth = ("--authfile", logins[login]) if login else ()
        return ws.run(
            name, "materialize", "-vvv", "--progress", "plain", "--retry-times", "0", *auth,
            "--cache-dir", work / f"cache-{name}", "--stage-dir", work / f"stage-{name}",
            "-o", work / f"{name}.yaml", *extra, tag,
        )  # fmt: skip

    tls = ("--cert-dir", certs)
    # The right logins work (so the secrets really were sent), the wrong ones fail.
    for name, tag, login, extra, ok in [
        ("basic", basic_tag, "basic", tls, True),
        ("basic-wrong", basic_tag, "basic-wrong", tls, False),
        ("basic-none", basic_tag, None, tls, False),
        ("token", token_tag, "token", (), True),
        ("token-wrong", token_tag, "token-wrong", (), False),
        ("token-refresh", token_tag, "token-refresh", (), True),
        ("basic-sif", f"docker://{basic_tag}", "basic", (*tls, "--engine", "singularity"), True),
    ]:
        p = materialize(name, tag, login, *extra)
        assert (p.returncode == 0) == ok, f"{name}: exit {p.returncode}\n{p.stderr[-3000:]}"
        if not ok:
            assert tag.split("/", 1)[0] in p.stderr, "the failure names the registry"
    assert issued_tokens, "the token service issued tokens (the bearer path ran)"

    # Credentials written into a URL: refused, and the refusal does not repeat them.
    url = f"https://{USER}:{url_quote(PASSWORD)}@{auth_registry.host}/images/x.sif"
    (secrets / "tags.txt").write_text(url + "\n")
    for name, args in [
        ("url-arg", ("--engine", "singularity", url)),
        ("url-docker", ("--engine", "docker", url)),
        ("url-list", ("--engine", "singularity", "-f", secrets / "tags.txt")),
    ]:
        p = ws.run(name, "materialize", "-vvv", "--stage-dir", work / "stage-url", "--cache-dir",
                   work / "cache-url", *args)  # fmt: skip
        assert p.returncode == 2 and "credentials in a URL" in p.stderr, p.stderr

    # What reads the caches back: listings, verification, an exported bundle.
    cache = work / "cache-basic"
    for name, args in [
        ("ls", ("cache", "ls", "--cache-dir", cache, "--json")),
        ("verify", ("cache", "verify", "--cache-dir", cache)),
        ("export", ("export", "--cache-dir", cache, "-o", work / "bundle.tar", basic_tag)),
    ]:
        p = ws.run(name, *args, "-vvv")
        assert p.returncode == 0, p.stderr

    needles = {
        "the password": PASSWORD.encode(),
        "the password, URL-quoted": url_quote(PASSWORD).encode(),
        "the wrong password": WRONG.encode(),
        "base64(user:password)": b64(USER, PASSWORD).encode(),
        "base64(user:wrong)": b64(USER, WRONG).encode(),
        "the refresh token": refresh.encode(),
        **{f"bearer token {i}": t.encode() for i, t in enumerate(issued_tokens)},
    }
    # The search is real: each login file holds its secret, and the runs wrote plenty to search.
    assert _find(needles, secrets), "the needles match the logins the runs were given"
    files = _written_files(work)
    assert len(files) > 50 and any(f.name.endswith("_meta.json") for f in files)
    assert sum(f.stat().st_size for f in work.joinpath("logs").iterdir()) > 10_000, "-vvv logged"
    leaks = _find(needles, work)
    assert leaks == [], "credentials leaked:\n" + "\n".join(leaks)

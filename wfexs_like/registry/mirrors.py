"""Which servers a pull asks, in order: ``--mirror`` / ``[mirrors]`` and ``registries.conf`` v2.

Why: a site puts a pull-through cache or a mirror in front of the public
registries (rate limits, pull storms, nodes without internet), and tells
podman about it in ``registries.conf``. Reading the same file means one
setting serves every tool on the node. The name the user wrote stays the
image's identity (fingerprint, records, cache keys); a mirror or a
``location`` only changes which server is asked, and every byte is checked
against the digests, whichever server sent it.

The file, as containers-registries.conf(5) describes it: ``[[registry]]``
tables chosen by the longest ``prefix`` (``host``, ``host/namespace``, a
repository, a repository with tag or digest, or ``*.example.com`` for any
subdomain), each with a ``location`` the prefix is rewritten to, ``insecure``,
``blocked``, and ``[[registry.mirror]]`` tables (``location``, ``insecure``,
``pull-from-mirror`` = ``all`` | ``digest-only`` | ``tag-only``) tried before
the primary. Where it is read from, as podman does: ``$CONTAINERS_REGISTRIES_CONF``
alone if set; else ``~/.config/containers/registries.conf`` if it exists,
else ``/etc/containers/registries.conf``, then the ``*.conf`` drop-ins of
``registries.conf.d`` beside them (the system directory's only when the
system file was the one read), a drop-in's table replacing the one with the
same prefix. ``--registries-conf FILE`` replaces all of that.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, merge_mirror_tables  # noqa: F401 - part of this module's API
from ..digests import is_digest
from ..errors import RegistryError
from .credentials import DOCKER_HUB_HOSTS

log = logging.getLogger(__name__)

SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")
REGISTRIES_CONF_ENV = "CONTAINERS_REGISTRIES_CONF"
PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")
#: Bigger than any real registries.conf; refused before parsing.
MAX_REGISTRIES_CONF_BYTES = 1 << 20

_TOP_KEYS = frozenset(
    {
        "registry",
        "unqualified-search-registries",
        "aliases",
        "short-name-mode",
        "credential-helpers",
        "additional-layer-store-auth-helper",
    }
)
_REGISTRY_KEYS = frozenset({"prefix", "location", "insecure", "blocked", "mirror", "mirror-by-digest-only"})
_MIRROR_KEYS = frozenset({"location", "insecure", "pull-from-mirror"})


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from: str = "all"

    def serves(self, by_digest: bool) -> bool:
        """``digest-only`` mirrors answer only pulls by digest, ``tag-only`` ones only pulls by tag."""
        return self.pull_from == "all" or (self.pull_from == "digest-only") == by_digest


@dataclass(frozen=True)
class RegistryRule:
    """One ``[[registry]]`` table, or one ``--mirror`` key; ``location`` is empty for a wildcard prefix."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    #: Where it was written ("FILE" or "--mirror"), for messages.
    origin: str = ""

    def matched(self, name: str) -> int | None:
        """How many leading characters of ``name`` (``host/repo:tag``) the prefix covers; None: no match."""
        return _match_len(self.prefix, name)


@dataclass(frozen=True)
class PullSource:
    """One server to ask for an image: where, under which name, and whether it is a mirror."""

    registry: str
    repository: str
    reference: str
    insecure: bool
    mirror: bool


@dataclass(frozen=True)
class MirrorConfig:
    """Explicit mirrors (flags, config file) first, then the ``registries.conf`` rules."""

    explicit: tuple[RegistryRule, ...] = ()
    rules: tuple[RegistryRule, ...] = ()
    #: The registries.conf files read, in order.
    files: tuple[Path, ...] = ()

    @classmethod
    def load(
        cls,
        mirrors: Mapping[str, Sequence[str]] | None = None,
        registries_conf: Path | Literal[False] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        home: Path | None = None,
        system: Path = SYSTEM_REGISTRIES_CONF,
    ) -> MirrorConfig:
        """``mirrors`` as ``{"docker.io": ["host:port", ...]}``; ``registries_conf`` False reads no file."""
        explicit = explicit_rules(mirrors or {})
        if registries_conf is False:
            return cls(explicit)
        rules, files = load_registries_conf(registries_conf, env=env, home=home, system=system)
        return cls(explicit, tuple(rules), tuple(files))

    def __bool__(self) -> bool:
        return bool(self.explicit or self.rules)

    def sources(self, registry: str, repository: str, reference: str) -> list[PullSource]:
        """Mirrors in order, then the primary; RegistryError if a ``blocked`` table covers the image."""
        name = f"{_fold_hub(registry.split('://', 1)[-1])}/{repository}"
        by_digest = is_digest(reference)
        full = f"{name}{'@' if by_digest else ':'}{reference}"
        out: list[PullSource] = []
        ex = _longest(self.explicit, full)
        conf = _longest(self.rules, full)
        if conf is not None and conf[0].blocked:
            rule = conf[0]
            raise RegistryError(
                f"pulling {full} is blocked by {rule.origin} ([[registry]] prefix = {rule.prefix!r} has "
                "blocked = true); pull another image, or ask whoever manages that file"
            )
        if conf is not None and conf[0].location:
            primary = _rewrite(conf[0].location, full, conf[1], conf[0].insecure, False, conf[0])
        else:
            primary = PullSource(
                registry, repository, reference, conf is not None and conf[0].insecure, False
            )
        seen = {(primary.registry.lower(), primary.repository)}
        for rule, n in (r for r in (ex, conf) if r is not None):
            for m in rule.mirrors:
                if m.serves(by_digest):
                    s = _rewrite(m.location, full, n, m.insecure, True, rule)
                    if (s.registry.lower(), s.repository) not in seen:  # listed twice, or the primary itself
                        seen.add((s.registry.lower(), s.repository))
                        out.append(s)
        return [*out, primary]

    def is_insecure(self, host: str) -> bool:
        """Whether a table or mirror with ``insecure = true`` names ``host`` (plain HTTP, unverified TLS)."""
        host = host.lower()
        for rule in self.rules:
            if rule.insecure:
                if rule.location and _host_of(rule.location) == host:
                    return True
                if not rule.location and _match_len(rule.prefix, host) is not None:
                    return True
            for m in rule.mirrors:
                if m.insecure and _host_of(m.location) == host:
                    return True
        return False


def explicit_rules(mirrors: Mapping[str, Sequence[str]]) -> tuple[RegistryRule, ...]:
    """``--mirror``/``[mirrors]`` entries as rules: the key is a prefix (``docker.io``, ``quay.io/org``)."""
    out = []
    for key, hosts in mirrors.items():
        prefix = _fold_hub(str(key).strip().rstrip("/"))
        if isinstance(hosts, str):
            hosts = [hosts]
        if not prefix or "://" in prefix or any(c.isspace() for c in prefix):
            raise ConfigError(
                f"--mirror {key}=...: {key!r} is not a registry name; give e.g. docker.io=127.0.0.1:5001"
            )
        locations = []
        for h in hosts:
            loc = str(h).strip().rstrip("/")
            bare = loc.split("://", 1)[-1]
            if (
                not bare
                or any(c.isspace() for c in loc)
                or loc.split("://", 1)[0] not in (loc, "http", "https")
            ):
                raise ConfigError(
                    f"--mirror {key}={h}: {h!r} is not a mirror; give HOST[:PORT][/PATH], "
                    "optionally with http:// or https://"
                )
            locations.append(Mirror(loc))
        out.append(RegistryRule(prefix, prefix, mirrors=tuple(locations), origin="--mirror"))
    return tuple(out)


# -- reading files -------------------------------------------------------------------------
def registries_conf_files(
    *, env: Mapping[str, str] | None = None, home: Path | None = None, system: Path = SYSTEM_REGISTRIES_CONF
) -> list[Path]:
    """The files podman would read, in order, that exist."""
    env = os.environ if env is None else env
    if env.get(REGISTRIES_CONF_ENV):
        return [Path(env[REGISTRIES_CONF_ENV])]
    home = Path.home() if home is None else home
    user = home / ".config" / "containers" / "registries.conf"
    files: list[Path] = []
    dropin_dirs = [Path(str(user) + ".d")]
    if user.is_file():
        files.append(user)
    else:
        if system.is_file():
            files.append(system)
        dropin_dirs.insert(0, Path(str(system) + ".d"))
    for d in dropin_dirs:
        try:
            files.extend(sorted(p for p in d.iterdir() if p.suffix == ".conf" and p.is_file()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise ConfigError(f"cannot read the registries.conf drop-in directory {d}: {e.strerror}") from e
    return files


def load_registries_conf(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    system: Path = SYSTEM_REGISTRIES_CONF,
) -> tuple[list[RegistryRule], list[Path]]:
    """Rules from ``path`` (``--registries-conf``, must exist) or from where podman looks; and the files."""
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(
                f"--registries-conf {path}: no such file; give a containers-registries.conf(5) TOML file"
            )
        files = [Path(path)]
    else:
        files = registries_conf_files(env=env, home=home, system=system)
    by_prefix: dict[str, RegistryRule] = {}
    for i, f in enumerate(files):
        for rule in parse_registries_conf(_read(f), str(f), dropin=i > 0):
            by_prefix[rule.prefix] = rule
    return list(by_prefix.values()), files


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_REGISTRIES_CONF_BYTES:
            raise ConfigError(f"{path} is {path.stat().st_size} bytes; that is not a registries.conf")
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text: {e}") from e


def parse_registries_conf(text: str, where: str, *, dropin: bool = False) -> list[RegistryRule]:
    """The ``[[registry]]`` tables of one file (version 2; version 1's insecure and block lists too)."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}") from e
    if "registries" in data:
        if dropin or "registry" in data:
            raise ConfigError(
                f"{where}: mixes the version 1 [registries.*] tables with version 2 [[registry]] tables "
                "(or is a drop-in in version 1); rewrite it in version 2, see containers-registries.conf(5)"
            )
        return _v1_rules(data["registries"], where)
    for key in data:
        if key not in _TOP_KEYS:
            log.warning("%s: ignoring unknown key %r", where, key)
    tables = data.get("registry", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{where}: registry must be an array of tables, written [[registry]]")
    rules: list[RegistryRule] = []
    seen: set[str] = set()
    for i, table in enumerate(tables):
        rule = _rule(table, f"{where}: [[registry]] #{i + 1}", where)
        if rule.prefix in seen:
            raise ConfigError(f"{where}: prefix {rule.prefix!r} is defined by more than one [[registry]]")
        seen.add(rule.prefix)
        rules.append(rule)
    return rules


def _rule(table: dict[str, Any], at: str, where: str) -> RegistryRule:
    for key in table:
        if key not in _REGISTRY_KEYS:
            log.warning("%s: ignoring unknown key %r", at, key)
    location = _string(table, "location", at).rstrip("/")
    prefix = _string(table, "prefix", at).rstrip("/") or location
    if not prefix:
        raise ConfigError(f"{at}: needs a prefix or a location")
    at = f"{where}: [[registry]] prefix {prefix!r}"
    if prefix.startswith("*"):
        suffix = prefix[1:]
        if not suffix.startswith(".") or "*" in suffix or "/" in suffix or len(suffix) < 2:
            raise ConfigError(f"{at}: a wildcard prefix is written *.example.com (a domain, no path)")
        if location:
            raise ConfigError(f"{at}: location must be empty for a wildcard prefix (nothing to rewrite)")
    elif "*" in prefix:
        raise ConfigError(f"{at}: '*' may only start a prefix, as in *.example.com")
    _check_location(location, f"{at}: location")
    by_digest_only = _bool(table, "mirror-by-digest-only", at)
    raw_mirrors = table.get("mirror", [])
    if not isinstance(raw_mirrors, list) or not all(isinstance(m, dict) for m in raw_mirrors):
        raise ConfigError(f"{at}: mirror must be an array of tables, written [[registry.mirror]]")
    mirrors = []
    for j, m in enumerate(raw_mirrors):
        mat = f"{at}: [[registry.mirror]] #{j + 1}"
        for key in m:
            if key not in _MIRROR_KEYS:
                log.warning("%s: ignoring unknown key %r", mat, key)
        loc = _string(m, "location", mat).rstrip("/")
        if not loc:
            raise ConfigError(f"{mat}: location is required")
        _check_location(loc, f"{mat}: location")
        pull_from = _string(m, "pull-from-mirror", mat)
        if pull_from and pull_from not in PULL_FROM_MIRROR:
            raise ConfigError(
                f"{mat}: pull-from-mirror must be one of {', '.join(PULL_FROM_MIRROR)}; got {pull_from!r}"
            )
        if pull_from and by_digest_only:
            raise ConfigError(
                f"{mat}: pull-from-mirror cannot be set when the [[registry]] sets mirror-by-digest-only"
            )
        pull_from = "digest-only" if by_digest_only else (pull_from or "all")
        mirrors.append(Mirror(loc, _bool(m, "insecure", mat), pull_from))
    return RegistryRule(
        prefix=prefix,
        location=location,
        insecure=_bool(table, "insecure", at),
        blocked=_bool(table, "blocked", at),
        mirrors=tuple(mirrors),
        origin=where,
    )


def _v1_rules(v1: Any, where: str) -> list[RegistryRule]:
    if not isinstance(v1, dict):
        raise ConfigError(f"{where}: registries must be a table ([registries.search] ...)")
    hosts: dict[str, dict[str, bool]] = {}
    for kind in ("insecure", "block"):
        sub = v1.get(kind, {})
        regs = sub.get("registries", []) if isinstance(sub, dict) else None
        if not isinstance(regs, list) or not all(isinstance(r, str) for r in regs):
            raise ConfigError(f"{where}: registries.{kind}.registries must be a list of host names")
        for r in regs:
            hosts.setdefault(r.rstrip("/"), {})[kind] = True
    return [
        RegistryRule(h, h, insecure=f.get("insecure", False), blocked=f.get("block", False), origin=where)
        for h, f in hosts.items()
    ]


def _string(table: Mapping[str, Any], key: str, at: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"{at}: {key} must be a string; got {value!r}")
    return value.strip()


def _bool(table: Mapping[str, Any], key: str, at: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{at}: {key} must be true or false; got {value!r}")
    return value


def _check_location(location: str, at: str) -> None:
    if "://" in location:
        raise ConfigError(
            f"{at} {location!r} has a scheme; write host[:port][/namespace] (insecure = true for plain HTTP)"
        )
    if any(c.isspace() for c in location):
        raise ConfigError(f"{at} {location!r} contains white space")


# -- matching and rewriting ----------------------------------------------------------------
def _fold_hub(name: str) -> str:
    """Docker Hub's aliases as ``docker.io``: ``index.docker.io`` keys and tags match ``docker.io`` rules."""
    host, sep, rest = name.partition("/")
    return ("docker.io" if host.lower() in DOCKER_HUB_HOSTS else host) + sep + rest


def _match_len(prefix: str, name: str) -> int | None:
    """containers/image's rule: the prefix, then the end or a separator; ``*.dom`` covers a host's name."""
    if prefix.startswith("*."):
        # The whole host, port included, is what matched: a mirror's location replaces all of it.
        host = name.split("/", 1)[0]
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if len(hostname) > len(prefix) - 1 and hostname.lower().endswith(prefix[1:].lower()):
            return len(host)
        return None
    if not name.startswith(prefix):
        return None
    if len(name) == len(prefix):
        return len(prefix)
    # After a bare host only a path may follow ("example.com" must not match "example.com:5000/x").
    seps = "/" if "/" not in prefix else "/:@"
    return len(prefix) if name[len(prefix)] in seps else None


def _longest(rules: Iterable[RegistryRule], name: str) -> tuple[RegistryRule, int] | None:
    best: tuple[RegistryRule, int] | None = None
    for rule in rules:
        n = rule.matched(name)
        if n is not None and (best is None or len(rule.prefix) > len(best[0].prefix)):
            best = (rule, n)
    return best


def _rewrite(
    location: str, full: str, matched: int, insecure: bool, mirror: bool, rule: RegistryRule
) -> PullSource:
    """``location`` + what follows the matched prefix, split back into registry, repository, reference."""
    target = location + full[matched:]
    scheme, sep, rest = target.partition("://")
    if not sep:
        scheme, rest = "", target
    host, slash, path = rest.partition("/")
    if "@" in path:
        repo, _, ref = path.partition("@")
    else:
        head, _, last = path.rpartition("/")
        name, colon, ref = last.partition(":")
        repo = f"{head}/{name}" if head else name
        if not colon:
            ref = ""
    if not slash or not host or not repo or not ref:
        raise RegistryError(
            f"{rule.origin}: prefix {rule.prefix!r} rewrites {full} to {target!r}, which is not an image "
            "reference (host/repository:tag); fix the location"
        )
    return PullSource(f"{scheme}://{host}" if scheme else host, repo, ref, insecure, mirror)


def _host_of(location: str) -> str:
    return location.split("://", 1)[-1].split("/", 1)[0].lower()

"""One configuration file for the settings a site sets once: mirrors, tiers, libraries, jobs.

Precedence, lowest first: built-in defaults, the TOML file (``--config``,
``$WFEXS_LIKE_CONFIG``, or ``<XDG config home>/wfexs-like/config.toml``),
environment variables, then command-line flags. Every value remembers where
it came from, because "why is it using that mirror?" is the first question a
site administrator asks, and ``wfexs-like config show`` answers it.

The file::

    cache-dir = "/scratch/wfexs-like"
    jobs = 8
    insecure-registries = ["registry.lab:5000"]
    library-dirs = ["/shared/images"]
    remote-cache = "s3://bucket/prefix?endpoint=http://s3.lab:8333"
    registries-conf = "/etc/containers/registries.conf"

    [mirrors]
    "docker.io" = ["mirror.lab:5000"]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ContainerFactoryException

CONFIG_ENV = "WFEXS_LIKE_CONFIG"
#: Bigger than any real configuration; refused before parsing.
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(ContainerFactoryException, ValueError):
    """The configuration file (or a variable) is malformed; the message names the file and the key."""


class Setting(NamedTuple):
    value: Any
    #: "default", "config file <path>", "environment <VAR>", "flag <--name>"
    source: str


#: key -> (default, environment variable, type) ; a list type takes os.pathsep-separated env values
_KEYS: dict[str, tuple[Any, str | None, type]] = {
    "cache-dir": (None, "WFEXS_LIKE_CACHE_DIR", Path),
    "jobs": (4, "WFEXS_LIKE_JOBS", int),
    "insecure-registries": ((), None, list),
    "library-dirs": ((), "WFEXS_LIKE_LIBRARY_DIRS", list),
    "remote-cache": (None, "WFEXS_LIKE_REMOTE_CACHE", str),
    "registries-conf": (None, None, Path),
    "mirrors": ({}, None, dict),
}


class Config:
    """Every setting with where it came from, and the file read (None: none was).

    A plain class, not a dataclass: every command loads its settings, and ``dataclasses`` (with
    ``inspect``) is a tenth of the start-up of a command that needs nothing else of it."""

    def __init__(self, settings: dict[str, Setting] | None = None, path: Path | None = None) -> None:
        self.settings: dict[str, Setting] = {} if settings is None else settings
        self.path = path

    def __repr__(self) -> str:
        return f"Config(settings={self.settings!r}, path={self.path!r})"

    def __getitem__(self, key: str) -> Any:
        return self.settings[key].value

    def source(self, key: str) -> str:
        return self.settings[key].source

    def override(self, key: str, value: Any, flag: str) -> None:
        """A command-line flag wins over everything; ``None`` / empty means the flag was not given."""
        if value is None or (isinstance(value, list | tuple | dict) and not value):
            return
        if key not in _KEYS:
            raise KeyError(key)
        self.settings[key] = Setting(_coerce(key, value, flag), f"flag {flag}")

    def rows(self) -> list[tuple[str, Any, str]]:
        """(key, value, source) for every setting, for ``config show``."""
        return [(k, self.settings[k].value, self.settings[k].source) for k in _KEYS]


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    base = env.get("XDG_CONFIG_HOME")
    if base and os.path.isabs(base):
        return Path(base) / "wfexs-like" / "config.toml"
    return Path.home() / ".config" / "wfexs-like" / "config.toml"


def load_config(path: Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the file (an explicit ``path`` must exist; the default one may not), then env."""
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get(CONFIG_ENV))
    file_path = Path(path) if path is not None else default_config_path(env)
    cfg = Config({k: Setting(_copy(default), "default") for k, (default, _v, _t) in _KEYS.items()})
    data = _read_toml(file_path, required=explicit)
    if data is not None:
        cfg.path = file_path
        for key, value in data.items():
            if key not in _KEYS:
                known = ", ".join(_KEYS)
                raise ConfigError(f"{file_path}: unknown setting {key!r}; the known ones are: {known}")
            coerced = _coerce(key, value, f"{file_path}: {key}")
            cfg.settings[key] = Setting(coerced, f"config file {file_path}")
    for key, (_default, var, typ) in _KEYS.items():
        if var and env.get(var):
            raw: Any = env[var]
            if typ is list:
                raw = [p for p in raw.split(os.pathsep) if p]
            cfg.settings[key] = Setting(_coerce(key, raw, f"${var}"), f"environment {var}")
    return cfg


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, tuple) else value


def _read_toml(path: Path, *, required: bool) -> dict[str, Any] | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if required:
            raise ConfigError(f"configuration file {path} does not exist") from None
        return None
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from e
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration file {path} is {size} bytes; that is not a configuration file")
    import tomllib  # only when there is a file to read

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"configuration file {path} is not valid TOML: {e}") from e


def _coerce(key: str, value: Any, where: str) -> Any:
    _default, _var, typ = _KEYS[key]
    try:
        if typ is Path:
            if not isinstance(value, str | Path) or not str(value):
                raise TypeError("a path")
            return Path(os.path.expanduser(str(value)))
        if typ is int:
            if isinstance(value, bool) or int(value) < 1:
                raise TypeError("a positive integer")
            return int(value)
        if typ is str:
            if not isinstance(value, str) or not value:
                raise TypeError("a string")
            return value
        if typ is list:
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise TypeError("a list of strings")
            items = [str(v) for v in value]
            return [Path(os.path.expanduser(v)) for v in items] if key == "library-dirs" else items
        if typ is dict:
            return _mirrors(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {key} must be {e}; got {value!r}") from e
    raise AssertionError(key)


def _mirrors(value: Any) -> dict[str, list[str]]:
    """``{"docker.io": ["host:port", ...]}``; the flag form ``docker.io=host:port`` is parsed by the CLI."""
    if not isinstance(value, Mapping):
        raise TypeError('a table like [mirrors] "docker.io" = ["host:port"]')
    out: dict[str, list[str]] = {}
    for registry, hosts in value.items():
        if isinstance(hosts, str):
            hosts = [hosts]
        if not isinstance(hosts, Sequence) or not all(isinstance(h, str) and h for h in hosts):
            raise TypeError(f'a table of registry = ["host:port", ...] (bad entry for {registry!r})')
        out[str(registry)] = list(hosts)
    return out


def merge_mirror_tables(*tables: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Several ``{"registry": [hosts]}`` tables as one; earlier tables' hosts first (flags, then file)."""
    out: dict[str, list[str]] = {}
    for table in tables:
        for key, hosts in table.items():
            lst = out.setdefault(key, [])
            lst.extend(h for h in ([hosts] if isinstance(hosts, str) else hosts) if h not in lst)
    return out


def parse_mirror_flags(values: Sequence[str]) -> dict[str, list[str]]:
    """``--mirror docker.io=127.0.0.1:5001`` (repeatable, order kept) as the ``mirrors`` table."""
    out: dict[str, list[str]] = {}
    for v in values:
        registry, sep, host = v.partition("=")
        if not sep or not registry or not host:
            raise ConfigError(f"--mirror {v!r}: expected REGISTRY=HOST[:PORT], e.g. docker.io=127.0.0.1:5001")
        out.setdefault(registry, []).append(host)
    return out

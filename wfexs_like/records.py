"""Our records format, written: the ``Container`` fields as plain data, and its YAML without PyYAML.

Why apart from ``provenance``: every ``materialize -o`` writes records, and
reading them (with the bounded, tag-checking loader) is what needs PyYAML;
writing our own format does not (``yamlemit``), so a re-stage never imports
it. ``provenance`` re-exports all of this and keeps the readers and the
reference's ``style="wfexs"`` writer.
"""

from __future__ import annotations

import dataclasses
import os
import reprlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import yamlemit
from .errors import ProvenanceError, quote
from .model import Container, ContainerType

FORMAT_KEY = "wfexs_like_containers"
FORMAT_VERSION = 1

_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Container))
_REQUIRED_STR = ("origTaggedName", "taggedName")
_PATH_FIELDS = ("localPath", "metadataLocalPath")


def container_to_dict(c: Container, *, containers_dir: Path | None = None) -> dict[str, Any]:
    """The record as plain YAML-safe data, so no tag ever reaches the file.

    Values are checked rather than trusted: a field holding something other
    than its declared type would not load back equal, and a provenance record
    that silently differs from what ran is worse than none. Paths under
    ``containers_dir`` become relative, so the record moves with that dir.
    """
    base = None if containers_dir is None else Path(containers_dir).absolute()
    if not isinstance(c, Container):
        raise ProvenanceError(f"cannot record {_shown(c)}: expected a Container, got {type(c).__name__}")
    where = f"Container {_shown(getattr(c, 'origTaggedName', '?'))}"
    out: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(c, name)
        if name == "type":
            out[name] = _type_for_dump(value, where, name)
        elif name == "source_type":
            out[name] = None if value is None else _type_for_dump(value, where, name)
        elif name == "registries":
            if value is None:
                out[name] = None
            elif isinstance(value, Mapping):
                regs: dict[str, str] = {}
                for key, registry in value.items():
                    if not isinstance(registry, str):
                        raise ProvenanceError(
                            f"cannot record {where}: registries[{_shown(key)}] is "
                            f"{type(registry).__name__}, expected text"
                        )
                    regs[_type_for_dump(key, where, "registries key")] = registry
                out[name] = regs
            else:
                raise ProvenanceError(
                    f"cannot record {where}: registries is {type(value).__name__}, expected a mapping"
                )
        elif name in _PATH_FIELDS:
            if value is None:
                out[name] = None
            elif isinstance(value, (str, os.PathLike)):
                path = os.fspath(value)
                if not isinstance(path, str):
                    raise ProvenanceError(f"cannot record {where}: {name} is a bytes path, expected text")
                out[name] = _portable_path(path, base)
            else:
                raise ProvenanceError(
                    f"cannot record {where}: {name} is {type(value).__name__}, expected a path"
                )
        else:
            optional = name not in _REQUIRED_STR
            if not (isinstance(value, str) or (optional and value is None)):
                raise ProvenanceError(
                    f"cannot record {where}: {name} is {type(value).__name__}, expected text"
                    + (" or None" if optional else "")
                )
            out[name] = value
    return out


def _portable_path(path: str, base: Path | None) -> str:
    """Relative POSIX text for an absolute path under ``base``; any other path as given.

    The test is lexical, as the reference's own: a path reaching ``base``
    through a symlink is another place as far as the record is concerned.
    A relative path is already relative to the containers dir.
    """
    if base is not None:
        candidate = Path(path)
        if candidate.is_absolute() and candidate.is_relative_to(base):
            return candidate.relative_to(base).as_posix()
    return path


def _type_for_dump(value: Any, where: str, what: str) -> str:
    if isinstance(value, ContainerType):
        return value.value
    raise ProvenanceError(f"cannot record {where}: {what} is {_shown(value)}, expected a ContainerType")


class _ShortRepr(reprlib.Repr):
    """A few items of a few levels, short strings: what a message needs to show a value read from a
    file. The whole ``repr`` is never taken: a value holding aliases repeats them on every path, and
    a 560-byte alias bomb once made a ``repr`` of billions of items."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxtuple = self.maxlist = self.maxdict = self.maxset = self.maxfrozenset = 3
        self.maxstring = self.maxother = 40
        self.maxlong = 40

    def repr__TaggedRecord(self, value: Any, level: int) -> str:  # provenance._TaggedRecord, by name
        return f"<Container record at line {value.line}>"

    def repr_bytes(self, value: bytes, level: int) -> str:
        return quote(value, self.maxstring)


_REPR = _ShortRepr()
_REPR = _ShortRepr()


def _shown(value: Any) -> str:
    """``value`` as a message quotes it: bounded in size and in the work it takes, escaped."""
    if isinstance(value, str):
        return quote(value, 60)
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def dump_records(containers: Sequence[Container], *, containers_dir: Path | None = None) -> str:
    """Our format's YAML text for ``containers`` (what ``dump_containers`` writes by default)."""
    plain = [container_to_dict(c, containers_dir=containers_dir) for c in containers]
    return yamlemit.dump({FORMAT_KEY: FORMAT_VERSION, "containers": plain})

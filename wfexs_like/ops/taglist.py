"""Where the tags to materialize come from: arguments, a list file, stdin, or a containers YAML.

A list is one tag per line, ``#`` comments and blank lines allowed. A
containers YAML (ours, or WfExS-backend's records or stage state) is told
apart by its first significant line, which a tag can never look like (a
tag holds no whitespace and never ends a word with ``:``). Its records are
kept as ``Container`` objects so the factories pin each one to the digest
its fingerprint names: re-materializing a record gives exactly what it
recorded, not what its tag points to today.

Every tag is parsed here, before any network or disk work, and all the bad
ones are reported together: a typo found after a 10-minute pull is the
late error the command must not make.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from ..errors import InvalidReferenceError, UnsafeInputError, quote
from ..model import Container
from ..references import parse_reference
from ..safeyaml import MAX_BYTES, read_bounded

__all__ = [
    "STDIN",
    "TagSource",
    "check_tags",
    "collect_tags",
    "looks_like_records",
    "read_tag_source",
]

#: The ``-f`` argument that means standard input.
STDIN = "-"

TagSource = str | Container
"""A plain tag as a workflow writes it, or a record whose pin is re-materialized."""

# What only YAML (never a tag) can start with: a document marker or directive, a sequence
# entry, a flow collection, a tag/anchor/alias, a quote, or a ``key:`` followed by a blank.
_YAML_START = re.compile(r"""^(?:---|\.\.\.|%|[-{\[!&*'"|>]|[^\s:]+:(?:\s|$))""")


def _significant_lines(text: str) -> Iterable[tuple[int, str]]:
    """(line number, content) of lines that are neither blank nor comments; trailing comments cut."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        # A comment needs a blank before it, as in YAML: an http(s) tag may carry a '#'.
        line = re.split(r"\s#", line, maxsplit=1)[0].strip()
        if line:
            yield number, line


def looks_like_records(text: str) -> bool:
    """Whether ``text`` is a containers YAML rather than a list of tags (decided by its first line)."""
    first = next(iter(_significant_lines(text)), None)
    return first is not None and _YAML_START.match(first[1]) is not None


def _tag_lines(text: str, where: str) -> list[str]:
    tags: list[str] = []
    problems: list[str] = []
    for number, line in _significant_lines(text):
        if len(line.split()) > 1:
            problems.append(f"{where}, line {number}: {quote(line)}: one tag per line")
        else:
            tags.append(line)
    if problems:
        raise InvalidReferenceError(_together(problems))
    return tags


def _as_pin(record: Container) -> Container:
    """The record as a request: its pins (fingerprint, image_signature) without the old stage paths.

    A staged path belongs to the run that wrote it; left in, the factory would
    look for (and adopt) snapshots wherever that path happens to point from
    the current directory.
    """
    return dataclasses.replace(record, localPath=None, metadataLocalPath=None)


def _read_text(source: str | Path, stdin: TextIO | None) -> tuple[str, str]:
    """(text, name for messages) of a ``-f`` source, size-bounded like every input file."""
    if str(source) == STDIN:
        stream = stdin if stdin is not None else sys.stdin
        text = stream.read(MAX_BYTES + 1)
        if len(text) > MAX_BYTES:
            raise UnsafeInputError(f"the tag list on standard input is larger than {MAX_BYTES} bytes")
        return text, "<stdin>"
    return read_bounded(Path(source), what="tag list"), str(source)


def read_tag_source(source: str | Path, *, stdin: TextIO | None = None) -> list[TagSource]:
    """The tags of one ``-f`` source (``-``: ``stdin``, by default the process's standard input)."""
    text, where = _read_text(source, stdin)
    if not looks_like_records(text):
        return list(_tag_lines(text, where))
    from ..provenance import load_containers, read_containers_file  # PyYAML, only for a records file

    records = load_containers(text) if where == "<stdin>" else read_containers_file(Path(source))
    return [_as_pin(r) for r in records]


def check_tags(tags: Sequence[TagSource]) -> None:
    """Parse every tag; one ``InvalidReferenceError`` naming all the bad ones, if any."""
    problems: list[str] = []
    for tag in tags:
        try:
            if isinstance(tag, Container):
                parse_reference(tag.origTaggedName, container_type=tag.type, registries=tag.registries)
            else:
                parse_reference(tag)
        except InvalidReferenceError as e:
            problems.append(str(e))
    if problems:
        raise InvalidReferenceError(_together(problems))


def _together(problems: Sequence[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} bad tags:\n" + "\n".join(f"  {p}" for p in problems)


def from_workflows(paths: Sequence[Path], *, engine: str = "docker") -> list[TagSource]:
    """The pullable tags a workflow names (``materialize --from-workflow``), found by the scanners.

    References the scanners could not resolve, or that name nothing pullable
    (a Dockerfile, a conda package), are reported as warnings, never dropped
    silently: the user must pin those by hand.
    """
    from ..progress import current
    from ..workflows import ScanOptions, is_pullable, scan_paths, tags

    refs = scan_paths(list(paths), ScanOptions(engine=engine))
    for ref in refs:
        if not is_pullable(ref):
            why = ref.note or f"{ref.kind}, {ref.confidence}"
            current().warn(
                f"{ref.file}:{ref.line}: {ref.raw!r} is not materialized ({why})", key="from-workflow"
            )
    return list(tags(refs))


def from_crates(crates: Sequence[Path]) -> list[TagSource]:
    """The records of RO-Crates (``materialize --from-crate``), pinned to the digests they recorded."""
    from ..rocrate import read_crate

    found: list[TagSource] = []
    for crate in crates:
        found.extend(read_crate(Path(crate)))
    return found


def collect_tags(
    positional: Sequence[str],
    files: Sequence[str | Path] = (),
    *,
    stdin: TextIO | None = None,
    extra: Sequence[TagSource] = (),
) -> list[TagSource]:
    """Arguments first, then each ``-f`` source in order; a repeated tag once; all of them checked.

    Raises ``InvalidReferenceError`` (bad tags, or none at all), or
    ``ProvenanceError``/``UnsafeInputError`` (an unreadable or refused file), all found before
    any work starts.
    """
    if sum(1 for f in files if str(f) == STDIN) > 1:
        raise InvalidReferenceError("standard input ('-f -') can be read only once")
    found: list[TagSource] = [*positional, *extra]
    for source in files:
        try:
            found.extend(read_tag_source(source, stdin=stdin))
        except UnicodeDecodeError as e:
            raise UnsafeInputError(f"tag list {source} is not UTF-8 text: {e.reason}") from None
    unique: list[TagSource] = []
    seen: set[str] = set()
    for tag in found:
        key = f"{tag.fingerprint or ''} {tag.origTaggedName}" if isinstance(tag, Container) else tag
        if key not in seen:
            seen.add(key)
            unique.append(tag)
    if not unique:
        where = " (the lists given hold none)" if files else ""
        raise InvalidReferenceError(
            f"no tags to materialize{where}: give TAG arguments, -f FILE, --from-workflow or --from-crate"
        )
    check_tags(unique)
    return unique

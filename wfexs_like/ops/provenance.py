"""``provenance show / convert / rocrate`` as library functions: read any record, write any record.

One reader serves all three verbs, because users hand them whatever they
have: our YAML, a WfExS-backend stage state (or its bare records), or an
RO-Crate (a directory, or its ``ro-crate-metadata.json``). What came in is
reported (``RecordSource``) so a caller can say what it converted from.
Every input is bounded before it is parsed; every output is written
atomically (or returned as text for stdout).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..digests import is_digest
from ..errors import ProvenanceError
from ..fsutil import atomic_write_bytes
from ..model import Container
from ..provenance import RecordStyle, container_to_dict, dump_containers, load_containers
from ..rocrate import read_crate, write_crate
from ..safeyaml import MAX_BYTES, read_bounded

__all__ = [
    "LoadedRecords",
    "RecordRow",
    "RecordSource",
    "convert_records",
    "crate_from_records",
    "load_records",
    "record_rows",
    "records_json",
]

RecordSource = Literal["wfexs-like", "wfexs", "ro-crate"]
"""What a records file turned out to be."""

_OURS = re.compile(r"^wfexs_like_containers\s*:", re.MULTILINE)


@dataclass(frozen=True)
class LoadedRecords:
    """The records of one input, and what kind of input it was."""

    path: Path
    source: RecordSource
    containers: list[Container]


def load_records(path: Path, *, containers_dir: Path | None = None) -> LoadedRecords:
    """Read records from our YAML, a WfExS-backend stage state or records, or an RO-Crate.

    ``containers_dir`` joins relative paths in YAML records to the staged
    containers dir (as ``read_containers_file`` does); crates carry no such
    paths except snapshots inside the crate, which are absolute once read.
    """
    path = Path(path)
    if path.is_dir() or _looks_like_json(path):
        return LoadedRecords(path, "ro-crate", read_crate(path))
    try:
        text = read_bounded(path, max_bytes=MAX_BYTES, what="containers record")
    except UnicodeDecodeError as e:
        raise ProvenanceError(
            f"{path} is not a containers record: not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    containers = load_containers(text, containers_dir=containers_dir, where=str(path))
    return LoadedRecords(path, "wfexs-like" if _OURS.search(text) else "wfexs", containers)


def _looks_like_json(path: Path) -> bool:
    """A crate's metadata file: named ``*.json``/``*.jsonld``, or a JSON-LD object from its first bytes.

    JSON is YAML too, so a JSON list of records still goes to the YAML reader.
    """
    if path.suffix in (".json", ".jsonld"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False  # the YAML reader reports it, naming the file
    opened = head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")
    return opened and (b'"@context"' in head or b'"@graph"' in head)


# --------------------------------------------------------------------------
# show


@dataclass(frozen=True)
class RecordRow:
    """One record as ``provenance show`` lists it; ``digest``: the manifest digest it is pinned to, if any."""

    tag: str
    type: str
    source_type: str | None
    digest: str | None
    fingerprint: str | None
    platform: str | None
    local_path: str | None
    signature: str | None
    image_signature: str | None


def record_rows(containers: Sequence[Container]) -> list[RecordRow]:
    return [_row(c) for c in containers]


def _row(c: Container) -> RecordRow:
    platform = "/".join(p for p in (c.operatingSystem, c.architecture) if p) or None
    return RecordRow(
        tag=c.origTaggedName,
        type=c.type.value,
        source_type=None if c.source_type is None else c.source_type.value,
        digest=_pinned_digest(c.fingerprint),
        fingerprint=c.fingerprint,
        platform=platform,
        local_path=None if c.localPath is None else str(c.localPath),
        signature=c.signature,
        image_signature=c.image_signature,
    )


def _pinned_digest(fingerprint: str | None) -> str | None:
    if not fingerprint:
        return None
    candidate = fingerprint.rsplit("@", 1)[1] if "@" in fingerprint else fingerprint
    return candidate if is_digest(candidate) else None


def records_json(loaded: LoadedRecords) -> dict[str, Any]:
    """What ``show --json`` prints: the input, its kind, and every record in our format's fields."""
    return {
        "file": str(loaded.path),
        "source": loaded.source,
        "containers": [container_to_dict(c) for c in loaded.containers],
    }


# --------------------------------------------------------------------------
# convert


def convert_records(
    src: Path,
    dest: Path | None = None,
    *,
    style: RecordStyle = "wfexs-like",
    containers_dir: Path | None = None,
) -> str:
    """Re-write the records of ``src`` in ``style``; return the text, and replace ``dest`` with it if given.

    ``containers_dir``: absolute paths under it become relative (our records
    are portable; WfExS-backend's old ones hold absolute paths).
    """
    loaded = load_records(src)
    text = dump_containers(loaded.containers, style=style, containers_dir=containers_dir)
    assert text is not None
    if dest is not None:
        try:
            atomic_write_bytes(Path(dest), text.encode("utf-8"))
        except OSError as e:
            raise ProvenanceError(f"could not write containers record {dest}: {e.strerror or e}") from e
    return text


# --------------------------------------------------------------------------
# rocrate


def crate_from_records(
    records: Path,
    dest_dir: Path,
    *,
    stage_dir: Path | None = None,
    date_published: dt.datetime | str | None = None,
    name: str | None = None,
) -> tuple[Path, list[Container]]:
    """Write ``dest_dir/ro-crate-metadata.json`` for a records file; (its path, the records described).

    ``stage_dir`` is the containers dir the records' relative paths are
    relative to (default: the records file's own dir). ``date_published``
    defaults to when the records were written (the file's mtime), so the
    crate dates the run, not the conversion, and stays byte-identical.
    """
    records = Path(records)
    stage = Path(stage_dir) if stage_dir is not None else records.parent
    loaded = load_records(records, containers_dir=stage)
    if date_published is None:
        date_published = _mtime(records)
    path = write_crate(
        loaded.containers,
        dest_dir,
        containers_dir=stage,
        name=name or f"Container images of {records.name}",
        date_published=date_published,
    )
    return path, loaded.containers


def _mtime(path: Path) -> dt.datetime | None:
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return None  # write_crate honours it
    try:
        return dt.datetime.fromtimestamp(int(path.stat().st_mtime), tz=dt.UTC)
    except OSError:
        return None

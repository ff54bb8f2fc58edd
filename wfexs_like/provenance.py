"""YAML records of materialized containers, written and read without ever running code.

Our format
----------
A plain YAML mapping, no tags at all, so any YAML reader in any language can
consume it and a safe loader can never be talked into building objects::

    wfexs_like_containers: 1          # format version; a newer one is refused
    containers:
    - origTaggedName: quay.io/biocontainers/samtools:1.15--h1170115_1
      type: singularity                # ContainerType values, not names
      registries: {docker: quay.io}    # or null
      taggedName: docker://quay.io/biocontainers/samtools:1.15--h1170115_1
      architecture: amd64
      ...
      localPath: samtools.sif          # relative to the staged containers dir
      source_type: docker

Every field of :class:`~wfexs_like.model.Container` is written, in field
order, ``None`` as ``null``. Scalars are emitted by PyYAML's safe dumper,
which quotes any string a YAML 1.1 reader would re-type (``"yes"``,
``"null"``, ``"1.0"``, ``"1:20"``, ``"2001-12-14"``...) and escapes what is
not printable, so ``load_containers(dump_containers(cs)) == cs`` holds
exactly. A bare list of such records is also accepted.

Portable paths
--------------
A record travels with the containers dir it describes, so paths inside it are
relative to that dir. Given ``containers_dir``, the writers store a
``localPath``/``metadataLocalPath`` under it as a relative POSIX string and
leave any other path absolute; the readers join relative paths to their own
``containers_dir``, or keep them relative for a factory to resolve against
its containers dir at deploy time. Absolute paths are read as written.

WfExS-backend records
---------------------
Records written by the reference are read too, in the shapes its versions
actually produced (``inab/WfExS-backend``), all found in the ``containers``
list of a working directory's ``meta/stage-state.yaml``, which
``Workflow.marshallStage`` writes as ``yaml.dump(marshall_namedtuple(stage,
workdir=...))`` with PyYAML's full dumper:

* NamedTuple era (to mid 2023): ``_type: Container`` mappings with ``type:
  {_enum: ContainerType, value: docker}`` (``utils/marshalling_handling.py``)
  and absolute path strings.
* Dataclass era (mid 2023 to mid 2024): the marshaller passed dataclasses
  through untouched, so the full dumper wrote
  ``!!python/object:wfexs_backend.common.Container`` (later
  ``wfexs_backend.container.Container``, then
  ``wfexs_backend.container_factories.Container``), with ``!!python/object/apply:
  wfexs_backend.common.ContainerType [docker]`` enums (also as ``registries``
  keys), plain-string paths, or ``!!python/object/apply:pathlib.PosixPath``
  once the reference switched to ``pathlib``; it reads them back with the
  full loader (``Container.RegisterYAMLConstructor``).
* Marshalled dataclass (since mid 2024): ``_type: Container`` again, every
  field, enums marshalled but ``registries`` keys still Python-object tags,
  and paths under the working directory written relative to it. The
  reference stages containers in ``<workdir>/containers``, so a relative
  ``containers/x.sif`` there is ``x.sif`` here (and ``cache/y`` is ``../cache/y``).

Those tags are honoured by a :class:`yaml.SafeLoader` subclass that knows
exactly that short list (:data:`KNOWN_TAGS`) and builds our own
``Container``/``ContainerType``/``Path`` from the node data; it never imports
or calls anything a document names. Before anything is constructed the nodes
to be built are checked, and a document carrying any other tag there
(``!!python/object/apply:os.system``, ``!!python/object/new:``,
``!!python/name:``, ``!!python/module:``, ``!local``...) is refused whole
with a :class:`~wfexs_like.errors.ProvenanceError` that names the tag and its
line. In a stage state (a top-level mapping with ``containers`` and without
``wfexs_like_containers``) only the ``containers`` value is checked and
built: the rest describes the reference's own objects (``engineDesc.uriMatch``
is a list of ``!!python/object/apply:re._compile``) and is skipped unbuilt.
Anything else is checked whole. WfExS records get the reference's
``_value_defaults_fixes`` (old ones lack ``metadataLocalPath``/``source_type``);
fields newer reference versions add are ignored with a warning. Records in our
format are returned as written.

Bounds
------
A records file comes from elsewhere, so it is read within bounds
(``safeyaml``): a file larger than ``RECORDS_MAX_BYTES`` is refused from its
size, unread; composing stops past ``RECORDS_MAX_NODES`` nodes or 200 levels
of nesting; and a document whose aliases would expand past that many nodes
(a 560-byte "billion laughs") is refused before anything is built. No
message takes the ``repr`` of a value read from a file: values are quoted a
few items and characters deep, escaped.

``style="wfexs"`` writes the reference's marshalled shape instead: a
``containers`` mapping of ``_type: Container`` records, sorted keys, enums as
``{_enum: ContainerType, value: ...}``, ``registries`` keys as the
``ContainerType`` tag its full loader builds, and paths under
``containers_dir`` as ``containers/<relative>``, as it writes them for its own
working directory. Its ``unmarshall_namedtuple`` turns each record back into
its ``Container``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, Any, Literal, get_args

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ProvenanceError, UnsafeInputError, UnsafeRecordsError
from .fsutil import atomic_write_bytes
from .model import Container, ContainerType
from .records import (
    _FIELDS,
    _PATH_FIELDS,
    _REQUIRED_STR,
    FORMAT_KEY,
    FORMAT_VERSION,
    _shown,
    container_to_dict,
    dump_records,
)
from .safeyaml import compose_bounded

__all__ = [
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "KNOWN_TAGS",
    "RECORDS_MAX_BYTES",
    "RECORDS_MAX_NODES",
    "RecordStyle",
    "container_from_dict",
    "container_to_dict",
    "dump_containers",
    "load_containers",
    "read_containers_file",
    "write_containers_file",
]

logger = logging.getLogger(__name__)

#: The largest containers record read: 16 MiB is tens of thousands of records; a larger file is
#: not one, and is refused from its size before a byte of it is read.
RECORDS_MAX_BYTES = 16 << 20
#: The most YAML nodes a record may hold, and expand to with aliases counted at every use: three
#: hundred times a WfExS-backend stage state of a few containers (a record of ours is ~30 nodes per
#: container), far below what a 560-byte alias bomb expands to. Composing stops at this count.
RECORDS_MAX_NODES = 100_000

RecordStyle = Literal["wfexs-like", "wfexs"]
"""What the writers emit: our plain format, or the reference's marshalled stage-state shape."""
_STYLES: frozenset[str] = frozenset(get_args(RecordStyle))

# Record types the reference's marshaller names in ``_type``; a tagged name is
# a Container with nothing materialized yet.
_WFEXS_RECORD_TYPES = frozenset({"Container", "ContainerTaggedName"})

_YAML = "tag:yaml.org,2002:"
_PY = _YAML + "python/"

# Where the reference's classes lived, across its versions: ``common`` from
# mid 2023, ``container`` from late 2023, ``container_factories`` from 2024.
_CONTAINER_TAGS = frozenset(
    _PY + "object:" + cls
    for cls in (
        "wfexs_backend.common.Container",
        "wfexs_backend.container.Container",
        "wfexs_backend.container_factories.Container",
        "wfexs_backend.common.ContainerTaggedName",
    )
)
_CONTAINER_TYPE_TAGS = frozenset(
    _PY + "object/apply:" + cls
    for cls in (
        "wfexs_backend.common.ContainerType",
        "wfexs_backend.container_factories.ContainerType",
    )
)
# pathlib's classes pickle under ``pathlib`` up to 3.12 and ``pathlib._local``
# from 3.13; only POSIX flavours, as the reference runs on Linux and macOS.
_PATH_TAGS = frozenset(
    _PY + "object/apply:" + module + "." + cls
    for module in ("pathlib", "pathlib._local")
    for cls in ("PosixPath", "PurePosixPath", "Path", "PurePath")
)
_TUPLE_TAG = _PY + "tuple"

KNOWN_TAGS: frozenset[str] = _CONTAINER_TAGS | _CONTAINER_TYPE_TAGS | _PATH_TAGS | {_TUPLE_TAG}
"""The only non-standard tags allowed where a document is built; any other one is refused."""

# Standard YAML tags the safe loader understands (``<<`` merge keys keep their
# tag until the mapping is flattened, so it is listed too).
_STANDARD_TAGS: frozenset[str] = frozenset(
    tag for tag in yaml.SafeLoader.yaml_constructors if tag is not None
) | {_YAML + "merge"}
_ALLOWED_TAGS = _STANDARD_TAGS | KNOWN_TAGS

# The reference's working directory keeps staged containers here
# (``WORKDIR_CONTAINERS_RELDIR``); its stage state stores paths relative to
# the working directory, ours are relative to this dir.
_WFEXS_CONTAINERS_RELDIR = "containers"
# What the reference's marshaller writes for its enums and classes.
_WFEXS_RECORD_TYPE = "Container"
_WFEXS_ENUM = "ContainerType"
_WFEXS_CONTAINER_TYPE_TAG = _PY + "object/apply:wfexs_backend.common.ContainerType"


# --------------------------------------------------------------------------
# Container <-> plain data


def container_from_dict(d: Mapping[str, Any]) -> Container:
    """Build a Container from one record, exactly as written (no defaults fixes).

    Accepts our format and the WfExS marshalled shape (``_type``, ``_enum``);
    ``load_containers`` decides which records also get the reference's fixes.
    """
    return _record_to_container(d, "record")


def _container_type(value: Any, where: str, what: str) -> ContainerType:
    """Accept every spelling a record may carry: enum, value, name, marshalled enum."""
    if isinstance(value, ContainerType):
        return value
    if isinstance(value, Mapping) and "_enum" in value:
        if value.get("_enum") != "ContainerType":
            raise ProvenanceError(
                f"{where}: {what} is a marshalled {_shown(value.get('_enum'))}, expected a ContainerType"
            )
        value = value.get("value")
    if isinstance(value, str):
        try:
            return ContainerType(value)
        except ValueError:
            with contextlib.suppress(KeyError):
                return ContainerType[value]
    choices = ", ".join(sorted({t.value for t in ContainerType}))
    raise ProvenanceError(
        f"{where}: unknown container type {_shown(value)} in {what}; expected one of: {choices}"
    )


def _record_to_container(record: Mapping[Any, Any], where: str) -> Container:
    if not isinstance(record, Mapping):
        raise ProvenanceError(f"{where}: expected a mapping of Container fields, got {type(record).__name__}")
    fields = dict(record)
    record_type = fields.pop("_type", None)
    if record_type is not None and (
        not isinstance(record_type, str) or record_type not in _WFEXS_RECORD_TYPES
    ):
        raise ProvenanceError(f"{where}: a {_shown(record_type)} record is not a container record")

    unknown = [k for k in fields if k not in _FIELDS]
    if unknown:
        logger.warning(
            "%s: ignoring field(s) unknown to this version: %s",
            where,
            ", ".join(_shown(k) for k in unknown[:_MAX_LISTED])
            + (" ..." if len(unknown) > _MAX_LISTED else ""),
        )
    for name in ("origTaggedName", "type"):
        if name not in fields:
            raise ProvenanceError(f"{where}: missing required field {name!r}")

    kwargs: dict[str, Any] = {}
    for name in _FIELDS:
        if name not in fields:
            continue
        value = fields[name]
        if name == "type":
            kwargs[name] = _container_type(value, where, name)
        elif name == "source_type":
            kwargs[name] = None if value is None else _container_type(value, where, name)
        elif name == "registries":
            kwargs[name] = _registries(value, where)
        elif name in _PATH_FIELDS:
            if value is None or isinstance(value, PurePath):
                kwargs[name] = None if value is None else Path(value)
            elif isinstance(value, str):
                kwargs[name] = Path(value)
            else:
                raise ProvenanceError(f"{where}: {name} is {_describe(value)}, expected a path string")
        else:
            optional = name not in _REQUIRED_STR
            if not (isinstance(value, str) or (optional and value is None)):
                raise ProvenanceError(
                    f"{where}: {name} is {_describe(value)}, expected text" + (" or null" if optional else "")
                )
            kwargs[name] = value
    return Container(**kwargs)


def _registries(value: Any, where: str) -> dict[ContainerType, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ProvenanceError(f"{where}: registries is {_describe(value)}, expected a mapping")
    regs: dict[ContainerType, str] = {}
    for key, registry in value.items():
        ctype = _container_type(key, where, "registries")
        if not isinstance(registry, str):
            raise ProvenanceError(
                f"{where}: registries[{_shown(key)}] is {_describe(registry)}, expected text"
            )
        regs[ctype] = registry
    return regs


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {_shown(value)}"


# How many unknown field names a warning lists.
_MAX_LISTED = 10


# --------------------------------------------------------------------------
# Dumping


class _Dumper(yaml.SafeDumper):
    """Safe dumper that never emits anchors, so records stay independent."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_str(self, data: str) -> ScalarNode:
        # PyYAML may pick single quotes for a string holding NEL or a Unicode
        # line/paragraph separator, writes it as a raw break, and reads the
        # break back folded into a space. Double quotes escape every break.
        if any(ch in _LINE_BREAKS for ch in data):
            return self.represent_scalar(_YAML + "str", data, style='"')
        return super().represent_str(data)


_LINE_BREAKS = frozenset("\n\r\x85\u2028\u2029")
_Dumper.add_representer(str, _Dumper.represent_str)


@dataclasses.dataclass(frozen=True)
class _WfexsTypeKey:
    """A ``registries`` key the reference's full dumper would write as its enum's tag."""

    value: str


class _WfexsDumper(_Dumper):
    """Our safe dumper plus the one tag the reference's records need for ``registries`` keys.

    Its marshaller leaves mapping keys alone, so a ``ContainerType`` key is
    written as the enum's own tag, and a ``{_enum: ...}`` mapping there could
    not even be a key when its loader reads the file back.
    """

    def represent_type_key(self, data: _WfexsTypeKey) -> Node:
        return self.represent_sequence(_WFEXS_CONTAINER_TYPE_TAG, [data.value])


_WfexsDumper.add_representer(_WfexsTypeKey, _WfexsDumper.represent_type_key)


def _wfexs_enum(value: str | None) -> dict[str, str] | None:
    return None if value is None else {"_enum": _WFEXS_ENUM, "value": value}


def _wfexs_path(path: str | None) -> str | None:
    # Ours are relative to the containers dir, the reference's to the working
    # dir holding it as ``containers``.
    if path is None or PurePosixPath(path).is_absolute():
        return path
    return PurePosixPath(_WFEXS_CONTAINERS_RELDIR, path).as_posix()


def _wfexs_record(plain: dict[str, Any]) -> dict[str, Any]:
    """The reference's marshalled form of one record, keys sorted as its dumper sorts them."""
    record: dict[str, Any] = dict(plain, _type=_WFEXS_RECORD_TYPE)
    record["type"] = _wfexs_enum(plain["type"])
    record["source_type"] = _wfexs_enum(plain["source_type"])
    if plain["registries"] is not None:
        record["registries"] = {_WfexsTypeKey(k): v for k, v in sorted(plain["registries"].items())}
    for name in _PATH_FIELDS:
        record[name] = _wfexs_path(plain[name])
    return dict(sorted(record.items()))


def dump_containers(
    containers: Sequence[Container],
    stream: IO[str] | None = None,
    *,
    style: RecordStyle = "wfexs-like",
    containers_dir: Path | None = None,
) -> str | None:
    """Write ``containers`` in our format or the reference's; the text is returned when no stream is given.

    The whole text is rendered before the stream is touched, so a record that
    cannot be dumped leaves nothing half-written behind.
    """
    if style not in _STYLES:
        raise ValueError(f"unknown record style {style!r}; expected one of: {', '.join(sorted(_STYLES))}")
    if style != "wfexs":
        text = dump_records(containers, containers_dir=containers_dir)
        if stream is None:
            return text
        stream.write(text)
        return None
    plain = [container_to_dict(c, containers_dir=containers_dir) for c in containers]
    text = yaml.dump(
        {"containers": [_wfexs_record(p) for p in plain]},
        Dumper=_WfexsDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        # Never fold long scalars: unfolded lines are what a reviewer greps.
        width=float("inf"),
    )
    if stream is None:
        return text
    stream.write(text)
    return None


# --------------------------------------------------------------------------
# Loading


@dataclasses.dataclass
class _TaggedRecord:
    """A reference Container read from its Python-object tag, not yet converted."""

    fields: dict[Any, Any]
    line: int


class _RecordLoader(yaml.SafeLoader):
    """Safe loader plus constructors for exactly the reference's record tags."""

    def __init__(self, stream: Any, where: str = "<string>") -> None:
        super().__init__(stream)
        self.where = where

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        # Keys of a marshalled ``registries`` may be ``{_enum: ContainerType,
        # value: ...}`` mappings, which plain YAML cannot hash.
        if not isinstance(node, MappingNode):
            raise ProvenanceError(f"{self.where}: line {_line(node)}: expected a mapping, found a {node.id}")
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Mapping) and "_enum" in key:
                key = _container_type(key, f"{self.where}: line {_line(key_node)}", "a mapping key")
            try:
                hash(key)
            except TypeError:
                raise ProvenanceError(
                    f"{self.where}: line {_line(key_node)}: a {type(key).__name__} cannot be a mapping key"
                ) from None
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def _apply_args(self, node: Node) -> list[Any]:
        # The full dumper writes ``apply`` as a bare argument list; the long
        # form is a mapping whose only meaningful key here is ``args``.
        if isinstance(node, SequenceNode):
            return list(self.construct_sequence(node, deep=True))
        if isinstance(node, MappingNode):
            value = self.construct_mapping(node, deep=True)
            extra = {k for k, v in value.items() if k != "args" and v not in (None, {}, [])}
            if not extra and isinstance(value.get("args", []), list):
                return list(value.get("args", []))
        raise ProvenanceError(
            f"{self.where}: line {_line(node)}: {_short(node.tag)} must carry a plain list of arguments"
        )

    def construct_container_record(self, node: Node) -> _TaggedRecord:
        if not isinstance(node, MappingNode):
            raise ProvenanceError(f"{self.where}: line {_line(node)}: {_short(node.tag)} must be a mapping")
        return _TaggedRecord(self.construct_mapping(node, deep=True), _line(node))

    def construct_container_type(self, node: Node) -> ContainerType:
        args = self._apply_args(node)
        if len(args) != 1:
            raise ProvenanceError(
                f"{self.where}: line {_line(node)}: a ContainerType takes one value, got {_shown(args)}"
            )
        return _container_type(args[0], f"{self.where}: line {_line(node)}", "ContainerType")

    def construct_path(self, node: Node) -> Path:
        args = self._apply_args(node)
        if not all(isinstance(a, str) for a in args):
            raise ProvenanceError(
                f"{self.where}: line {_line(node)}: a path takes text parts, got {_shown(args)}"
            )
        return Path(*args)

    def construct_tuple(self, node: Node) -> tuple[Any, ...]:
        if not isinstance(node, SequenceNode):
            raise ProvenanceError(f"{self.where}: line {_line(node)}: !!python/tuple must be a sequence")
        return tuple(self.construct_sequence(node, deep=True))


def _register(tags: frozenset[str], method: Callable[..., Any]) -> None:
    for tag in tags:
        _RecordLoader.add_constructor(tag, method)


_register(_CONTAINER_TAGS, _RecordLoader.construct_container_record)
_register(_CONTAINER_TYPE_TAGS, _RecordLoader.construct_container_type)
_register(_PATH_TAGS, _RecordLoader.construct_path)
_register(frozenset({_TUPLE_TAG}), _RecordLoader.construct_tuple)


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _short(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


def _walk(root: Node) -> Iterator[Node]:
    """Every node once, in document order; aliases may share or even loop."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, MappingNode):
            for key, value in reversed(node.value):
                stack.extend((value, key))


def _refuse_unknown_tags(root: Node, where: str) -> None:
    """Refuse the whole document before a single constructor has run."""
    for node in _walk(root):
        if node.tag in _ALLOWED_TAGS:
            continue
        position = f"{where}: line {_line(node)}, column {node.start_mark.column + 1}"
        tag = _short(node.tag)
        if node.tag.startswith(_PY):
            raise ProvenanceError(
                f"{position}: refused: tag {tag} asks to construct Python objects. "
                "This reader never builds objects a file names; it accepts plain YAML "
                "and only the WfExS-backend Container, ContainerType and path tags."
            )
        raise ProvenanceError(
            f"{position}: refused: unknown tag {tag}. Only plain YAML and the "
            "WfExS-backend Container, ContainerType and path tags are accepted."
        )


def _top_level(root: Node) -> tuple[Node | None, bool]:
    """The last ``containers`` value node of a top-level mapping, and whether it is a stage state.

    Decided on the composed nodes, before anything is built, so a stage
    state's foreign objects never reach a constructor. A top-level merge key
    could bring ``containers`` in from anywhere, so such a document is
    treated as an ordinary one and checked whole.
    """
    if not isinstance(root, MappingNode):
        return None, False
    found: Node | None = None
    ours = merged = False
    for key_node, value_node in root.value:
        if key_node.tag == _YAML + "merge":
            merged = True
        elif isinstance(key_node, ScalarNode) and key_node.tag == _YAML + "str":
            if key_node.value == "containers":
                found = value_node
            elif key_node.value == FORMAT_KEY:
                ours = True
    return found, found is not None and not ours and not merged


def load_containers(
    source: str | bytes | IO[str] | IO[bytes],
    *,
    containers_dir: Path | None = None,
    where: str | None = None,
) -> list[Container]:
    """Read records in our format or any WfExS-backend form.

    ``source`` is YAML text (``str``/``bytes``) or an open stream; a path is
    for :func:`read_containers_file`, so it is rejected here rather than
    parsed as a one-word YAML document. Relative paths in the records are
    joined to ``containers_dir`` when one is given, and stay relative (to
    the containers dir) when none is. ``where`` names the document in
    messages (by default ``<string>``, or the stream's name): pass the file
    name when the text was read from one.
    """
    if isinstance(source, os.PathLike):
        raise TypeError("load_containers takes YAML text or a stream; use read_containers_file for a path")
    if where is None:
        where = "<string>" if isinstance(source, (str, bytes)) else str(getattr(source, "name", "<stream>"))
    return _load(source, where, containers_dir)


def _load(source: Any, where: str, containers_dir: Path | None) -> list[Container]:
    text = _bounded_text(source, where)
    root, loader = _compose(text, where)
    containers_node: Node | None = None
    try:
        if root is None:
            raise ProvenanceError(f"{where}: empty document; expected a containers record")
        containers_node, stage_state = _top_level(root)
        if stage_state:
            assert containers_node is not None
            _refuse_unknown_tags(containers_node, where)
            data: Any = {"containers": loader.construct_document(containers_node)}
        else:
            _refuse_unknown_tags(root, where)
            data = loader.construct_document(root)
    except ProvenanceError:
        raise
    except yaml.YAMLError as e:
        raise _malformed(where, e) from e
    except RecursionError:
        raise ProvenanceError(f"{where}: YAML nested too deeply to be a containers record") from None
    except (ValueError, TypeError, OverflowError, LookupError, AttributeError) as e:
        # A standard tag fed a value it cannot hold: PyYAML's safe constructors raise these for
        # ``!!int abc``, an empty ``!!int``, ``!!bool x``, ``!!timestamp x``.
        raise ProvenanceError(f"{where}: malformed YAML: {type(e).__name__}: {_one_line(str(e))}") from e
    finally:
        loader.dispose()
    item_nodes = containers_node.value if isinstance(containers_node, SequenceNode) else None
    return _records(data, root, item_nodes, where, containers_dir)


def _bounded_text(source: Any, where: str) -> str | bytes:
    """The document, refused past ``RECORDS_MAX_BYTES`` (a stream is read no further than that)."""
    if isinstance(source, str | bytes):
        data = source
    else:
        try:
            data = _read_capped(source)
        except UnicodeDecodeError as e:
            raise ProvenanceError(f"{where}: not UTF-8 text: {e.reason}") from e
        except OSError as e:
            raise ProvenanceError(f"cannot read containers record {where}: {e.strerror or e}") from e
        if not isinstance(data, str | bytes):
            raise ProvenanceError(f"{where}: the stream gave {type(data).__name__}, not text")
    if len(data) > RECORDS_MAX_BYTES:
        raise _too_large(where, None)
    return data


def _read_capped(stream: Any) -> str | bytes:
    """At most one unit past ``RECORDS_MAX_BYTES`` of ``stream``, in chunks: ``read(n)`` would set
    aside ``n`` bytes up front, 16 MiB for every small file."""
    parts: list[Any] = []
    total = 0
    while total <= RECORDS_MAX_BYTES:
        chunk = stream.read(_READ_CHUNK)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    if not parts:
        return b""
    return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)


_READ_CHUNK = 1 << 16


def _too_large(where: str, size: int | None) -> UnsafeRecordsError:
    what = f"{size} bytes" if size is not None else "larger"
    return UnsafeRecordsError(
        f"{where}: {what}, more than the {RECORDS_MAX_BYTES} bytes a containers record can be; "
        "refused unread. It is not a containers record (check the path), or split it"
    )


def _compose(text: str | bytes, where: str) -> tuple[Node | None, _RecordLoader]:
    """The document's node graph, measured before anything is built: an alias bomb, or a file far
    deeper or larger than a record, is refused here (``safeyaml``'s bounds), in milliseconds."""
    try:
        loader, root = compose_bounded(
            text,  # type: ignore[arg-type]  # PyYAML's reader takes bytes too (and sniffs UTF-16)
            where,
            loader=_RecordLoader,
            max_bytes=RECORDS_MAX_BYTES,
            max_nodes=RECORDS_MAX_NODES,
        )
    except UnsafeInputError as e:
        if isinstance(e.__cause__, yaml.YAMLError):
            raise _malformed(where, e.__cause__) from e.__cause__
        raise UnsafeRecordsError(str(e)) from e
    loader.where = where
    return root, loader


def _malformed(where: str, e: yaml.YAMLError) -> ProvenanceError:
    """One line, whatever PyYAML's message holds (its own marks span lines; problems quote input)."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = "; ".join(part for part in (e.context, e.problem) if part) or str(e)
    elif isinstance(e, yaml.reader.ReaderError):
        at, what = f"character {e.position}: ", f"{e.reason} ({e.character!r})"
    else:
        at, what = "", str(e)
    return ProvenanceError(f"{where}: {at}malformed YAML: {_one_line(what)}")


def _one_line(text: str) -> str:
    """``text`` with line breaks and control characters escaped, and cut short."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:400])
    return escaped if len(text) <= 400 else escaped + "..."


def _records(
    data: Any, root: Node, item_nodes: list[Node] | None, where: str, containers_dir: Path | None
) -> list[Container]:
    items: Any
    nodes: list[Node] | None
    label: str
    stage_state = False
    if isinstance(data, dict) and FORMAT_KEY in data:
        version = data[FORMAT_KEY]
        if type(version) is not int or version < 1:
            raise ProvenanceError(
                f"{where}: {FORMAT_KEY} is {_shown(version)}, expected a format version number"
            )
        if version > FORMAT_VERSION:
            raise ProvenanceError(
                f"{where}: written in format {version} by a newer wfexs-like; "
                f"this one reads format {FORMAT_VERSION}: upgrade wfexs-like to read it"
            )
        if "containers" not in data:
            raise ProvenanceError(f"{where}: missing the 'containers' list")
        items, nodes, label = data["containers"], item_nodes, "containers[{}]"
    elif isinstance(data, dict) and "containers" in data:
        # A WfExS-backend marshalled stage state: only its containers are ours.
        # Its engine may have needed no container at all (``containers: null``).
        items, nodes, label = data["containers"], item_nodes, "containers[{}]"
        if items is None:
            items = []
        stage_state = True
    elif isinstance(data, list):
        items, nodes, label = data, root.value, "record {}"
    elif isinstance(data, _TaggedRecord) or (isinstance(data, dict) and "_type" in data):
        items, nodes, label = [data], [root], "record {}"
    else:
        raise ProvenanceError(
            f"{where}: not a containers record: expected a mapping with {FORMAT_KEY!r} and "
            f"'containers', a WfExS-backend stage state, or a list of records; got {_describe(data)}"
        )
    if not isinstance(items, list):
        raise ProvenanceError(f"{where}: 'containers' is {_describe(items)}, expected a list")

    containers: list[Container] = []
    for index, item in enumerate(items):
        position = f"{where}: {label.format(index)}"
        line = item.line if isinstance(item, _TaggedRecord) else None
        if line is None and nodes is not None and index < len(nodes):
            line = _line(nodes[index])
        if line is not None:
            position += f" (line {line})"

        if isinstance(item, _TaggedRecord):
            container, from_wfexs = _record_to_container(item.fields, position), True
        elif isinstance(item, Mapping):
            from_wfexs = stage_state or "_type" in item or _has_marshalled_enum(item)
            container = _record_to_container(item, position)
        else:
            raise ProvenanceError(f"{position}: expected a container record, got {_describe(item)}")
        _place_paths(container, stage_state, containers_dir)
        if from_wfexs:
            try:
                container._value_defaults_fixes()
            except ValueError as e:
                # ``with_name`` on a path with no name (``/``, ``.``).
                raise ProvenanceError(f"{position}: cannot derive metadataLocalPath: {e}") from None
        containers.append(container)
    return containers


def _place_paths(container: Container, stage_state: bool, containers_dir: Path | None) -> None:
    """Make relative paths relative to the containers dir, then join them to ``containers_dir``
    (made absolute, like the writer takes it, so a factory never joins the dir a second time)."""
    for name in _PATH_FIELDS:
        path = getattr(container, name)
        if path is None or path.is_absolute():
            continue
        if stage_state:
            path = _from_wfexs_workdir(path)
        setattr(container, name, path if containers_dir is None else Path(containers_dir).absolute() / path)


def _from_wfexs_workdir(path: Path) -> Path:
    """A stage state's relative path, re-based from the working dir onto its ``containers`` dir."""
    parts = path.parts
    if parts and parts[0] == _WFEXS_CONTAINERS_RELDIR:
        return Path(*parts[1:])
    return Path(os.pardir, path)


def _has_marshalled_enum(record: Mapping[Any, Any]) -> bool:
    return any(isinstance(v, Mapping) and "_enum" in v for v in record.values())


# --------------------------------------------------------------------------
# Files


def write_containers_file(
    containers: Sequence[Container],
    path: Path,
    *,
    style: RecordStyle = "wfexs-like",
    containers_dir: Path | None = None,
) -> None:
    """Replace ``path`` with the records, all or nothing.

    A workflow re-staged from a half-written record would pin the wrong
    images, so the text goes to a temporary file beside ``path`` (same
    filesystem, so the rename is atomic), is fsynced, and only then renamed
    over the final name; the directory is fsynced so the rename survives a
    crash. On any failure the temporary file is removed and ``path`` keeps
    its previous content, if it had one.
    """
    path = Path(path)
    data = dump_containers(containers, style=style, containers_dir=containers_dir)
    assert data is not None
    try:
        atomic_write_bytes(path, data.encode("utf-8"))
    except OSError as e:
        raise ProvenanceError(f"could not write containers record {path}: {e}") from e


def read_containers_file(path: Path, *, containers_dir: Path | None = None) -> list[Container]:
    """Read a records file; every failure is a ProvenanceError naming ``path``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            # A regular file is refused from its size alone; a pipe is read no further than the bound.
            if size > RECORDS_MAX_BYTES:
                raise _too_large(str(path), size)
            data = _read_capped(fh)
    except OSError as e:
        raise ProvenanceError(f"cannot read containers record {path}: {e.strerror or e}") from e
    return _load(data, str(path), containers_dir)

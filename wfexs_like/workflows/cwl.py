"""CWL: the containers a workflow's command-line tools run in, after CWL's inheritance rules.

Read with our bounded safe YAML loader rather than cwl-utils: a scan must
never fetch a ``$schemas`` URL or a remote ``run:``, must refuse an alias bomb
before constructing it, and must not fail on a workflow that is valid enough to
run but not to validate; and it needs the line of every declaration, which the
node graph keeps. ``$import`` and ``run:`` are followed for local files only,
relative to the file that names them, under the scan's ``IncludeGuard``.

Inheritance (CWL 1.2, "Requirements and hints"): a ``requirements`` entry wins
over any ``hints`` entry; among requirements, and among hints, the innermost
declaration wins (tool over step over workflow, for nested workflows too). The
whole requirement object is replaced, never merged field by field. So a
reference is reported once per declaration that some tool actually uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UnsafeInputError
from ..progress import check_cancelled
from .base import (
    MAX_INCLUDE_DEPTH,
    Confidence,
    ContainerRef,
    IncludeGuard,
    Kind,
    ScanOptions,
    WorkflowScanError,
    classify_tag,
    looks_dynamic,
    read_workflow_file,
)

#: Bytes of a file read to recognise CWL without a ``.cwl`` suffix.
_SNIFF_BYTES = 4096
#: DockerRequirement fields that name something other than a pullable image.
_NOT_PULLABLE: tuple[tuple[str, Kind, str], ...] = (
    ("dockerLoad", "tarball", "an image archive to load with docker load"),
    ("dockerImport", "tarball", "a filesystem tarball to import with docker import"),
    ("dockerFile", "build", "a Dockerfile to build"),
)


def claims(path: Path) -> bool:
    """A ``.cwl`` file, or a YAML/JSON file that says ``cwlVersion`` near its top."""
    if path.suffix == ".cwl":
        return True
    if path.suffix not in ("", ".yml", ".yaml", ".json"):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    return b"cwlVersion" in head


def scan(path: Path, options: ScanOptions) -> list[ContainerRef]:
    """References of the CWL document ``path`` (its ``#main``, or every process it holds)."""
    return _Scanner().scan_roots([path])


def scan_many(paths: list[Path], options: ScanOptions) -> list[ContainerRef]:
    """References of several CWL files, each scanned through the workflows that run it.

    A tool file that another given file runs is not scanned on its own: on its
    own its hints would count, while through the workflow the workflow's
    requirements override them.
    """
    scanner = _Scanner()
    run_targets: set[Path] = set()
    for p in paths:
        doc, _ = scanner.load(p, ())
        for proc in _processes(doc):
            for step, run in _runs(proc):
                if isinstance(run, str) and not run.startswith("#") and not _is_remote(run):
                    run_targets.add(_run_path(step, run).resolve())
    roots = [p for p in paths if p.resolve() not in run_targets] or paths
    return scanner.scan_roots(roots)


# -- YAML with positions -------------------------------------------------------------------------


class _Map(dict):
    """A YAML mapping that remembers the file and line of itself and of each key."""

    file: str
    line: int
    key_lines: dict[Any, int]


class _Seq(list):
    """A YAML sequence that remembers the file and line of itself."""

    file: str
    line: int


def _load_yaml(path: Path) -> Any:
    import yaml

    from ..safeyaml import compose_bounded

    where = str(path)
    ldr, root = compose_bounded(read_workflow_file(path), where)
    try:
        return None if root is None else _Converter(ldr, where).convert(root)
    except yaml.YAMLError as e:
        raise WorkflowScanError(f"{where}: not valid YAML: {e}") from e
    finally:
        ldr.dispose()


class _Converter:
    """Builds ``_Map``/``_Seq`` from nodes that ``compose_bounded`` already measured."""

    def __init__(self, loader: Any, file: str) -> None:
        self.loader = loader
        self.file = file
        # an alias is the same node object: convert it once and share the result
        self.memo: dict[int, Any] = {}

    def convert(self, node: Any) -> Any:
        import yaml

        key = id(node)
        if key in self.memo:
            return self.memo[key]
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)
            out: Any = _Map()
            out.key_lines = {}
            self.memo[key] = out
            for k_node, v_node in node.value:
                k = self.convert(k_node)
                if not isinstance(k, str | int | float | bool) and k is not None:
                    k = str(k)
                out[k] = self.convert(v_node)
                out.key_lines[k] = k_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            out = _Seq()
            self.memo[key] = out
            out.extend(self.convert(n) for n in node.value)
        else:
            return self.loader.construct_object(node)
        out.file = self.file
        out.line = node.start_mark.line + 1
        return out


# -- documents, processes, steps -----------------------------------------------------------------


@dataclass(frozen=True)
class _Level:
    """The requirements and hints one enclosing process or step declares, by class name."""

    requirements: dict[str, _Map]
    hints: dict[str, _Map]


def _level(obj: _Map) -> _Level:
    return _Level(_by_class(obj.get("requirements")), _by_class(obj.get("hints")))


def _by_class(value: Any) -> dict[str, _Map]:
    """Requirements in list form (``- class: X``) or map form (``X: {...}``), keyed by class."""
    out: dict[str, _Map] = {}
    if isinstance(value, _Seq):
        # an $import inside the list may itself bring a list: its entries count as if written here
        items = [i for item in value for i in (item if isinstance(item, _Seq) else [item])]
        for item in items:
            if isinstance(item, _Map) and isinstance(item.get("class"), str):
                out.setdefault(_class_name(item["class"]), item)
    elif isinstance(value, _Map):
        for name, body in value.items():
            if isinstance(body, _Map):
                out.setdefault(_class_name(str(name)), body)
            elif body is None:
                empty: Any = _Map()
                empty.key_lines, empty.file, empty.line = {}, value.file, value.key_lines[name]
                out.setdefault(_class_name(str(name)), empty)
    return out


def _class_name(name: str) -> str:
    # a full IRI (https://w3id.org/cwl/cwl#DockerRequirement) names the same class
    return name.rsplit("#", 1)[-1]


def _effective(levels: list[_Level], cls: str) -> _Map | None:
    for lv in reversed(levels):
        if cls in lv.requirements:
            return lv.requirements[cls]
    for lv in reversed(levels):
        if cls in lv.hints:
            return lv.hints[cls]
    return None


def _norm_id(value: Any) -> str:
    text = str(value)
    return text.rsplit("#", 1)[-1] if "#" in text else text


def _graph(doc: Any) -> dict[str, _Map]:
    if isinstance(doc, _Map) and isinstance(doc.get("$graph"), _Seq):
        return {_norm_id(p["id"]): p for p in doc["$graph"] if isinstance(p, _Map) and "id" in p}
    return {}


def _processes(doc: Any) -> list[_Map]:
    graph = _graph(doc)
    if graph:
        return list(graph.values())
    return [doc] if isinstance(doc, _Map) else []


def _steps(proc: _Map) -> list[_Map]:
    steps = proc.get("steps")
    if isinstance(steps, _Seq):
        return [s for s in steps if isinstance(s, _Map)]
    if isinstance(steps, _Map):
        return [s for s in steps.values() if isinstance(s, _Map)]
    return []


def _runs(proc: _Map, depth: int = 0) -> list[tuple[_Map, Any]]:
    """(step, run) of every step of ``proc``, inline sub-workflows included."""
    if depth > MAX_INCLUDE_DEPTH:
        raise UnsafeInputError(f"{proc.file}: workflows nested more than {MAX_INCLUDE_DEPTH} deep; refused")
    out: list[tuple[_Map, Any]] = []
    for step in _steps(proc):
        run = step.get("run")
        out.append((step, run))
        if isinstance(run, _Map):
            out.extend(_runs(run, depth + 1))
    return out


def _is_remote(ref: str) -> bool:
    return "://" in ref and not ref.startswith("file://")


def _run_path(step: _Map, run: str) -> Path:
    ref = run.partition("#")[0].removeprefix("file://")
    return Path(os.path.normpath(Path(step.file).parent / ref))


# -- the scan ------------------------------------------------------------------------------------


class _Scanner:
    """One scan: the documents read so far (each file once) and the guard over their chain."""

    def __init__(self) -> None:
        self.guard = IncludeGuard()
        self.docs: dict[Path, Any] = {}
        self.refs: list[ContainerRef] = []

    def load(self, path: Path, chain: tuple[Path, ...]) -> tuple[Any, tuple[Path, ...]]:
        """The document at ``path`` with its ``$import``s in place, and the chain that reached it."""
        key = path.resolve()
        chain = self.guard.enter(chain, path, new_file=key not in self.docs)
        if key not in self.docs:
            try:
                self.docs[key] = self._imports(_load_yaml(path), chain)
            except RecursionError as e:
                raise UnsafeInputError(f"{path}: imports nested too deeply to read; refused") from e
        return self.docs[key], chain

    def _imports(self, value: Any, chain: tuple[Path, ...]) -> Any:
        if isinstance(value, _Map):
            target = value.get("$import")
            if isinstance(target, str) and not _is_remote(target):
                return self.load(_run_path(value, target), chain)[0]
            for k in list(value):
                value[k] = self._imports(value[k], chain)
        elif isinstance(value, _Seq):
            value[:] = [self._imports(v, chain) for v in value]
        return value

    def scan_roots(self, paths: list[Path]) -> list[ContainerRef]:
        for path in paths:
            doc, chain = self.load(path, ())
            if not isinstance(doc, _Map):
                raise WorkflowScanError(f"{path}: not a CWL document (expected a mapping at the top)")
            graph = _graph(doc)
            if graph:
                referenced = {_norm_id(r) for p in graph.values() for _, r in _runs(p) if isinstance(r, str)}
                roots = (
                    [graph["main"]]
                    if "main" in graph
                    else [p for i, p in graph.items() if i not in referenced] or list(graph.values())
                )
            else:
                roots = [doc]
            for proc in roots:
                self._visit(proc, [], chain, graph, ())
        return self.refs

    def _visit(
        self,
        proc: _Map,
        levels: list[_Level],
        chain: tuple[Path, ...],
        graph: dict[str, _Map],
        stack: tuple[int, ...],
    ) -> None:
        check_cancelled()
        if id(proc) in stack:
            raise UnsafeInputError(f"{proc.file}:{proc.line}: a workflow runs itself (a run: cycle); refused")
        if len(stack) >= MAX_INCLUDE_DEPTH:
            raise UnsafeInputError(f"{proc.file}: workflows nest more than {MAX_INCLUDE_DEPTH} deep; refused")
        stack = (*stack, id(proc))
        levels = [*levels, _level(proc)]
        cls = proc.get("class")
        if cls == "CommandLineTool":
            self._report(levels)
        elif cls == "Workflow":
            for step in _steps(proc):
                target = self._run_target(step, chain, graph)
                if target is not None:
                    sub, sub_chain, sub_graph = target
                    self._visit(sub, [*levels, _level(step)], sub_chain, sub_graph, stack)
        # ExpressionTool and Operation run no container of their own

    def _run_target(
        self, step: _Map, chain: tuple[Path, ...], graph: dict[str, _Map]
    ) -> tuple[_Map, tuple[Path, ...], dict[str, _Map]] | None:
        run = step.get("run")
        line = step.key_lines.get("run", step.line)
        if isinstance(run, _Map):
            return run, chain, graph
        if not isinstance(run, str):
            raise WorkflowScanError(f"{step.file}:{line}: a workflow step without run:; fix the workflow")
        if _is_remote(run):
            self.refs.append(
                ContainerRef(
                    file=step.file,
                    line=line,
                    raw=run,
                    tag=None,
                    kind="docker",
                    confidence="dynamic",
                    language="cwl",
                    note="run: names a remote document, which a scan never fetches; scan a local copy",
                )
            )
            return None
        ref, _, frag = run.partition("#")
        if not ref or (graph and _run_path(step, run).resolve() == Path(step.file).resolve()):
            if _norm_id(frag) not in graph:
                raise WorkflowScanError(f"{step.file}:{line}: run: {run} names no process in this file")
            return graph[_norm_id(frag)], chain, graph
        target = _run_path(step, run)
        if not target.is_file():
            raise WorkflowScanError(f"{step.file}:{line}: run: {run} names {target}, which does not exist")
        doc, sub_chain = self.load(target, chain)
        sub_graph = _graph(doc)
        if sub_graph:
            key = _norm_id(frag) if frag else "main"
            if key not in sub_graph:
                raise WorkflowScanError(f"{step.file}:{line}: run: {run}: {target} holds no process '{key}'")
            return sub_graph[key], sub_chain, sub_graph
        if not isinstance(doc, _Map):
            raise WorkflowScanError(f"{target}: not a CWL document (expected a mapping at the top)")
        return doc, sub_chain, sub_graph

    def _report(self, levels: list[_Level]) -> None:
        docker = _effective(levels, "DockerRequirement")
        if docker is not None:
            self.refs.extend(_docker_refs(docker))
        software = _effective(levels, "SoftwareRequirement")
        if software is not None:
            self.refs.extend(_software_refs(software))


def _ref(
    where: _Map, key: Any, raw: str, tag: str | None, kind: Kind, confidence: Confidence, note: str | None
) -> ContainerRef:
    line = where.key_lines.get(key, where.line) if key else where.line
    return ContainerRef(
        file=where.file,
        line=line,
        raw=raw,
        tag=tag,
        kind=kind,
        confidence=confidence,
        language="cwl",
        note=note,
    )


def _docker_refs(req: _Map) -> list[ContainerRef]:
    image_id = req.get("dockerImageId")
    image_id = image_id if isinstance(image_id, str) and image_id else None
    pull = req.get("dockerPull")
    if pull is not None:
        text = str(pull)
        if not isinstance(pull, str) or looks_dynamic(text):
            return [_ref(req, "dockerPull", text, None, "docker", "dynamic", "dockerPull is an expression")]
        note = f"dockerImageId: {image_id}" if image_id and image_id != text else None
        return [_ref(req, "dockerPull", text, text, classify_tag(text), "exact", note)]
    refs = []
    for key, kind, what in _NOT_PULLABLE:
        value = req.get(key)
        if value is None:
            continue
        raw = _one_line(value)
        note = f"{key}: {what}; not pullable"
        if image_id:
            note += f"; the tool runs it as {image_id}"
        refs.append(_ref(req, key, raw, None, kind, "exact", note))
    if refs:
        return refs
    if image_id:
        note = "dockerImageId only: the name the engine must already have; pulled by that name"
        return [_ref(req, "dockerImageId", image_id, image_id, classify_tag(image_id), "candidate", note)]
    return [_ref(req, None, "DockerRequirement", None, "docker", "dynamic", "it names no image")]


def _software_refs(req: _Map) -> list[ContainerRef]:
    packages = req.get("packages")
    found: list[tuple[_Map, Any, str, list[str]]] = []  # where, key, name, versions
    if isinstance(packages, _Seq):
        for p in packages:
            if isinstance(p, _Map) and p.get("package") is not None:
                found.append((p, "package", str(p["package"]), _versions(p.get("version"))))
    elif isinstance(packages, _Map):
        # map form: the key is the package; the value is its spec list (mapPredicate) or a full entry
        for name, body in packages.items():
            versions = _versions(body.get("version")) if isinstance(body, _Map) else []
            found.append((packages, name, str(name), versions))
    refs = []
    for where, key, name, versions in found:
        raw = f"{name}={','.join(versions)}" if versions else name
        wanted = " or ".join(versions) if versions else "any version"
        note = f"SoftwareRequirement: conda package {name}, {wanted}"
        refs.append(_ref(where, key, raw, None, "conda", "exact" if versions else "candidate", note))
    return refs


def _versions(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [] if value is None else [str(value)]


def _one_line(value: Any) -> str:
    """A short raw text for a field whose value may be a whole Dockerfile or an ``$include``."""
    if isinstance(value, _Map) and "$include" in value:
        return f"$include: {value['$include']}"
    lines = str(value).strip().splitlines() or [""]
    return lines[0] + (" …" if len(lines) > 1 else "")

"""WDL 1.0–1.2: the image each task's ``runtime``/``requirements`` section names.

Parsed with miniwdl's ``parse_document`` alone: it builds the syntax tree and
nothing else, so no import is fetched and nothing is evaluated. Local imports
are followed by us (relative to the importing file, under the scan's
``IncludeGuard``); a remote import is reported, not fetched.

A ``docker``/``container`` value is resolved statically, never evaluated: a
string literal (placeholders included, when each names something resolvable),
an array of them (WDL 1.1's alternatives: every one is reported), or a name
bound to one of those — a task input's default, a private declaration, a value
from ``--params-file`` (WDL inputs JSON keys: ``task.input``,
``workflow.input``, ``workflow.call.input``). A call that passes the task a
value for that input is reported too, at the call, resolved in the workflow.
Anything else (functions, conditionals, outputs of other tasks) is ``dynamic``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UnsafeInputError
from ..progress import check_cancelled
from .base import (
    ContainerRef,
    IncludeGuard,
    ScanOptions,
    WorkflowScanError,
    classify_tag,
    read_workflow_file,
    require,
)

#: runtime/requirements keys that name the image (``container`` is 1.1's name, ``docker`` the old one).
_IMAGE_KEYS = ("container", "docker")
#: Names a value may go through before it is given up as dynamic (a = b, b = c, ...).
_MAX_HOPS = 16


def claims(path: Path) -> bool:
    return path.suffix == ".wdl"


def scan(path: Path, options: ScanOptions) -> list[ContainerRef]:
    """References of the tasks in ``path`` and in the local files it imports."""
    return scan_many([path], options)


def scan_many(paths: list[Path], options: ScanOptions) -> list[ContainerRef]:
    """References of several WDL files; a file another one imports is scanned through it.

    Through the importing workflow, a task whose image every call passes in is
    reported at those calls only, not with its own (unused) default.
    """
    scanner = _Scanner(options, require("WDL", "WDL"))
    imported = {t.resolve() for p in paths for t in _local_imports(p, scanner)}
    for path in [p for p in paths if p.resolve() not in imported] or paths:
        scanner.scan_file(path, ())
    return scanner.finish()


def _local_imports(path: Path, scanner: _Scanner) -> list[Path]:
    doc = scanner.parse(path)
    out = []
    for imp in doc.imports:
        uri = str(imp.uri)
        if "://" not in uri or uri.startswith("file://"):
            out.append(Path(os.path.normpath(path.parent / uri.removeprefix("file://"))))
    return out


@dataclass(frozen=True)
class _Binding:
    """What a name means where it is used: an expression, in the scope that gives its names meaning."""

    expr: Any
    scope: dict[str, _Binding]
    note: str | None = None
    #: a value taken from --params-file rather than from the source
    value: str | None = None


@dataclass(frozen=True)
class _Value:
    text: str | None  # None: not resolvable statically
    note: str | None = None


class _Scanner:
    def __init__(self, options: ScanOptions, wdl: Any) -> None:
        self.options = options
        self.wdl = wdl
        self.guard = IncludeGuard()
        self.refs: list[ContainerRef] = []
        self.lines: dict[str, list[str]] = {}
        self.docs: dict[Path, Any] = {}
        #: tasks seen, by id, with their file
        self.tasks: dict[int, tuple[str, Any]] = {}
        #: tasks some call runs, and those some call runs with the task's own image values
        self.called: set[int] = set()
        self.own_values: set[int] = set()

    def finish(self) -> list[ContainerRef]:
        """All references; a task's own values count unless every call passes its image in."""
        for key, (file, task) in self.tasks.items():
            if key not in self.called or key in self.own_values:
                scope = self._task_scope(task)
                for expr in self._image_exprs(task):
                    self._report(file, expr, scope)
        return self.refs

    def parse(self, path: Path) -> Any:
        """The syntax tree of ``path``, parsed once per scan."""
        key = path.resolve()
        if key not in self.docs:
            text = read_workflow_file(path)
            file = str(path)
            self.lines[file] = text.splitlines()
            try:
                self.docs[key] = self.wdl.parse_document(text, uri=file)
            except self.wdl.Error.SyntaxError as e:
                raise WorkflowScanError(f"{file}: not valid WDL: {e}") from e
            except RecursionError as e:
                raise UnsafeInputError(f"{file}: nested too deeply to parse; refused") from e
        return self.docs[key]

    # -- files --------------------------------------------------------------------------------

    def scan_file(self, path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
        """Scans ``path`` and its imports; returns its task and workflow namespace for calls."""
        chain = self.guard.enter(chain, path, new_file=path.resolve() not in self.docs)
        check_cancelled()
        file = str(path)
        doc = self.parse(path)
        namespaces: dict[str, Any] = {}
        for imp in doc.imports:
            uri = str(imp.uri)
            if "://" in uri and not uri.startswith("file://"):
                self._add(
                    file,
                    imp.pos,
                    None,
                    "dynamic",
                    f'import "{uri}"',
                    "a remote import, which a scan never "
                    "fetches; its tasks' images are unknown; scan a local copy",
                )
                continue
            target = Path(os.path.normpath(path.parent / uri.removeprefix("file://")))
            if not target.is_file():
                raise WorkflowScanError(f'{file}:{imp.pos.line}: import "{uri}": {target} does not exist')
            namespaces[imp.namespace] = self.scan_file(target, chain)
        tasks = {t.name: t for t in doc.tasks}
        for task in doc.tasks:
            self.tasks.setdefault(id(task), (file, task))
        if doc.workflow is not None:
            self._scan_workflow(file, doc.workflow, tasks, namespaces)
        return {"tasks": tasks, "namespaces": namespaces}

    # -- tasks and calls ----------------------------------------------------------------------

    def _task_scope(self, task: Any, call_prefix: str | None = None) -> dict[str, _Binding]:
        scope: dict[str, _Binding] = {}
        for decl in task.inputs or []:
            given = self._param(
                f"{call_prefix}.{decl.name}" if call_prefix else None, f"{task.name}.{decl.name}"
            )
            if given is not None:
                scope[decl.name] = _Binding(None, scope, "from --params-file", given)
            elif decl.expr is not None:
                scope[decl.name] = _Binding(
                    decl.expr, scope, f"default of input {decl.name}; a caller may override it"
                )
        for decl in task.postinputs or []:
            if decl.expr is not None:
                scope[decl.name] = _Binding(decl.expr, scope)
        return scope

    def _image_exprs(self, task: Any) -> Iterator[Any]:
        sections = [task.runtime or {}]
        requirements = getattr(task, "requirements", None)
        if requirements and requirements is not task.runtime:
            sections.append(requirements)
        for section in sections:
            for key in _IMAGE_KEYS:
                if key in section:
                    yield section[key]

    def _scan_workflow(self, file: str, wf: Any, tasks: dict[str, Any], namespaces: dict[str, Any]) -> None:
        wf_scope: dict[str, _Binding] = {}
        for decl in wf.inputs or []:
            given = self._param(f"{wf.name}.{decl.name}")
            if given is not None:
                wf_scope[decl.name] = _Binding(None, wf_scope, "from --params-file", given)
            elif decl.expr is not None:
                wf_scope[decl.name] = _Binding(
                    decl.expr, wf_scope, f"default of workflow input {decl.name}; a caller may override it"
                )
        for node in _walk_body(wf.body):
            if isinstance(node, self.wdl.Tree.Decl) and node.expr is not None:
                wf_scope.setdefault(node.name, _Binding(node.expr, wf_scope))
        for node in _walk_body(wf.body):
            if isinstance(node, self.wdl.Tree.Call):
                task = _callee(node.callee_id, tasks, namespaces)
                if task is not None:
                    self.called.add(id(task))
                    if not self._scan_call(file, wf, node, task, wf_scope):
                        self.own_values.add(id(task))

    def _scan_call(self, file: str, wf: Any, call: Any, task: Any, wf_scope: dict[str, _Binding]) -> bool:
        """The task's image as this call makes it: inputs the call binds take the workflow's values.

        False when the call changes nothing the image depends on (the task's own values apply).
        """
        prefix = f"{wf.name}.{call.name}"
        task_scope = self._task_scope(task)
        scope = self._task_scope(task, prefix)
        changed = {name for name in scope if self._param(f"{prefix}.{name}") is not None}
        # a call's own bindings win: an inputs file may only set what the call leaves open
        for name, expr in (call.inputs or {}).items():
            scope[name] = _Binding(expr, wf_scope, f"passed by call {call.name}")
            changed.add(name)
        exprs = list(self._image_exprs(task))
        for expr in exprs:
            names = _depends(expr, task_scope) & changed
            if not names:
                return False
            first = min(names, key=lambda n: (n not in call.inputs, n))
            at = call.inputs.get(first, call)
            raw = ", ".join(
                f"{n} = {self._source(call.inputs[n])}" if n in call.inputs else f"{n} (--params-file)"
                for n in sorted(names)
            )
            self._report(file, expr, scope, at=at.pos, raw=f"call {call.name}: {raw}")
        return bool(exprs)

    # -- values -------------------------------------------------------------------------------

    def _report(
        self,
        file: str,
        expr: Any,
        scope: dict[str, _Binding],
        *,
        at: Any = None,
        raw: str | None = None,
    ) -> None:
        raw = raw or self._source(expr)
        items = expr.items if isinstance(expr, self.wdl.Expr.Array) else [expr]
        for item in items:
            value = self._value(item, scope, 0)
            note = value.note
            if len(items) > 1:
                note = "; ".join(filter(None, [f"one of {len(items)} alternatives", note]))
            pos = at or item.pos
            if value.text == "*":
                self._add(file, pos, None, "dynamic", raw, "'*': the runtime may choose any image")
            elif value.text is None:
                self._add(file, pos, None, "dynamic", raw, note or "not a literal; resolved only at run time")
            else:
                self._add(file, pos, value.text, "exact", raw, note)

    def _value(self, expr: Any, scope: dict[str, _Binding], hops: int) -> _Value:
        E = self.wdl.Expr
        if hops > _MAX_HOPS:
            return _Value(None, f"more than {_MAX_HOPS} names deep")
        if isinstance(expr, E.String) and not isinstance(expr, getattr(E, "MultiLineString", ())):
            parts = list(expr.parts)
            if parts and parts[0] in ('"', "'") and parts[-1] == parts[0]:
                parts = parts[1:-1]
            out, notes = [], []
            for part in parts:
                if isinstance(part, str):
                    out.append(part)
                    continue
                if part.options:
                    return _Value(None, "a placeholder with options")
                sub = self._value(part.expr, scope, hops + 1)
                if sub.text is None:
                    return sub
                out.append(sub.text)
                notes.append(sub.note)
            return _Value("".join(out), "; ".join(n for n in notes if n) or None)
        name = _name(expr)
        if name is not None:
            binding = scope.get(name)
            if binding is None:
                return _Value(None, f"{name} has no value a scan can see")
            if binding.value is not None:
                return _Value(binding.value, binding.note)
            inner = self._value(binding.expr, binding.scope, hops + 1)
            if inner.text is None:
                return _Value(None, f"{name}: {inner.note}" if inner.note else None)
            return _Value(inner.text, "; ".join(n for n in (binding.note, inner.note) if n) or None)
        return _Value(None, None)

    def _param(self, *keys: str | None) -> str | None:
        for key in keys:
            if key is not None and isinstance(self.options.params.get(key), str):
                return self.options.params[key]
        return None

    def _source(self, expr: Any) -> str:
        lines = self.lines.get(str(expr.pos.uri)) or []
        pos = expr.pos
        if not (1 <= pos.line <= pos.end_line <= len(lines)):
            return str(expr)
        if pos.line == pos.end_line:
            return lines[pos.line - 1][pos.column - 1 : pos.end_column - 1]
        chunk = [lines[pos.line - 1][pos.column - 1 :], *lines[pos.line : pos.end_line - 1]]
        chunk.append(lines[pos.end_line - 1][: pos.end_column - 1])
        return " ".join(s.strip() for s in chunk)

    def _add(self, file: str, pos: Any, tag: str | None, confidence: Any, raw: str, note: str | None) -> None:
        self.refs.append(
            ContainerRef(
                file=file,
                line=pos.line,
                raw=raw,
                tag=tag,
                kind=classify_tag(tag) if tag else "docker",
                confidence=confidence,
                language="wdl",
                note=note,
            )
        )


def _walk_body(body: list[Any]) -> Iterator[Any]:
    """Every workflow element, inside scatters and conditionals too."""
    for node in body:
        yield node
        inner = getattr(node, "body", None)
        if isinstance(inner, list):
            yield from _walk_body(inner)


def _callee(callee_id: list[str], tasks: dict[str, Any], namespaces: dict[str, Any]) -> Any:
    *path, name = callee_id
    scope: dict[str, Any] = {"tasks": tasks, "namespaces": namespaces}
    for ns in path:
        scope = scope["namespaces"].get(ns)
        if scope is None:
            return None
    return scope["tasks"].get(name)


def _name(expr: Any) -> str | None:
    """The identifier ``expr`` is, before type-checking (``Get`` of a bare name) or after (``Ident``)."""
    if type(expr).__name__ == "Get" and getattr(expr, "member", None) is None:
        expr = expr.expr
    if type(expr).__name__ in ("_LeftName", "Ident"):
        return str(expr.name)
    return None


def _depends(expr: Any, scope: dict[str, _Binding]) -> set[str]:
    """The names ``expr`` uses, directly or through the declarations of ``scope``."""
    found: set[str] = set()
    todo = _names(expr)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        binding = scope.get(name)
        if binding is not None and binding.expr is not None:
            todo |= _names(binding.expr)
    return found


def _names(expr: Any) -> set[str]:
    """Every identifier an expression mentions (in placeholders and array items too)."""
    found: set[str] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        name = _name(node)
        if name is not None:
            found.add(name)
            continue
        stack.extend(getattr(node, "children", ()))
    return found

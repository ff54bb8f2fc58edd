"""Nextflow scripts (``.nf``) read statically: processes, their container directives and labels,
``include`` statements, workflows and the calls they make.

Which config selectors reach a process depends on its declared name, the alias
it is included under and its fully qualified name (``OUTER:INNER:ALIAS``), so
the scripts are read as a module graph: includes are followed relative to the
including file, and each workflow's body is searched for the names of the
processes and workflows it can see. Included modules are read once each and
cycles are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnsafeInputError
from .base import IncludeGuard, WorkflowScanError, read_workflow_file
from .groovy import ID, NL, OP, STR, Node, Parser, Token, tokenize

#: Process body labels after which no directive can appear.
_SECTIONS = frozenset({"input", "output", "script", "shell", "exec", "stub", "when", "topic"})
#: Workflows calling workflows deeper than this are a cycle.
MAX_CALL_DEPTH = 64


@dataclass(frozen=True)
class Directive:
    """``container EXPR`` inside a process body."""

    node: Node


@dataclass(frozen=True)
class Conditional:
    """``if (cond) { ... } else { ... }`` around directives (old nf-core modules chose images so)."""

    cond: Node
    then: tuple[Directive | Conditional, ...]
    otherwise: tuple[Directive | Conditional, ...]


@dataclass(eq=False)
class Process:
    name: str
    module: Module
    line: int
    labels: list[str] = field(default_factory=list)
    #: the container directives in order; empty when the process names none
    body: tuple[Directive | Conditional, ...] = ()


@dataclass(eq=False)
class Module:
    path: Path
    src: str
    processes: dict[str, Process] = field(default_factory=dict)
    #: workflow name (None: the entry workflow) -> body tokens
    workflows: dict[str | None, tuple[Token, ...]] = field(default_factory=dict)
    #: local name -> (module, name declared there)
    imports: dict[str, tuple[Module, str]] = field(default_factory=dict)
    #: ``params.x = ...`` in the script: defaults that config and --params-file override
    param_defaults: list[tuple[str, Node]] = field(default_factory=list)


@dataclass(frozen=True)
class Instance:
    """A process as Nextflow names it when a workflow calls it."""

    process: Process
    #: the alias it was included under (its declared name when not aliased)
    simple: str
    fully_qualified: str
    called: bool = True

    def names(self) -> list[str]:
        """Declared, simple and fully qualified names, least specific first, without repeats."""
        return list(dict.fromkeys((self.process.name, self.simple, self.fully_qualified)))


class ScriptReader:
    """Reads ``.nf`` files and the modules they include, each once."""

    def __init__(self, guard: IncludeGuard) -> None:
        self.guard = guard
        self.modules: dict[Path, Module] = {}

    def read(self, path: Path, chain: tuple[Path, ...] = ()) -> Module:
        key = path.resolve()
        if key in self.modules:
            self.guard.enter(chain, path, new_file=False)  # raises on a cycle through this module
            return self.modules[key]
        chain = self.guard.enter(chain, path)
        src = read_workflow_file(path)
        module = Module(path, src)
        self.modules[key] = module
        self._top_level(Parser(tokenize(src, str(path)), str(path)), module, chain)
        return module

    def _top_level(self, p: Parser, module: Module, chain: tuple[Path, ...]) -> None:
        while True:
            p.skip_newlines()
            if p.at_end():
                return
            nxt = p.t[p.i + 1]
            if p.is_id("include") and nxt.text == "{":
                self._include(p, module, chain)
            elif p.is_id("process") and nxt.kind == ID and p.t[p.i + 2].text == "{":
                p.advance()
                name = p.advance()
                module.processes[name.text] = _process(name, Parser(p.block(), p.where), module)
            elif p.is_id("workflow") and (nxt.text == "{" or (nxt.kind == ID and p.t[p.i + 2].text == "{")):
                p.advance()
                name = p.advance().text if p.tok.kind == ID else None
                module.workflows[name] = p.block()
            elif p.is_id("params") and nxt.text == ".":
                self._param(p, module)
            elif p.is_id("params") and nxt.text == "{":
                p.advance()
                _params_block(Parser(p.block(), p.where), module)
            else:
                p.skip_statement()
                if p.is_op("}"):
                    p.advance()

    def _include(self, p: Parser, module: Module, chain: tuple[Path, ...]) -> None:
        line = p.advance().line
        names: list[tuple[str, str]] = []
        inner = Parser(p.block(), p.where)
        while True:
            inner.skip_newlines()
            if inner.at_end():
                break
            if inner.tok.kind != ID:
                inner.advance()
                continue
            declared = inner.advance().text
            alias = declared
            if inner.is_id("as") and inner.t[inner.i + 1].kind == ID:
                inner.advance()
                alias = inner.advance().text
            names.append((declared, alias))
        p.skip_newlines_only()
        if not (p.is_id("from") and p.t[p.i + 1].kind == STR):
            raise WorkflowScanError(
                f"{p.where}:{line}: `include` without `from '<path>'`; not valid Nextflow"
            )
        p.advance()
        source = p.advance().text
        p.skip_statement()  # `params(...)` / `addParams(...)`
        if source.startswith("plugin/"):
            return  # functions from a Nextflow plugin, never processes
        target = _module_path(module.path.parent, source)
        if target is None:
            raise WorkflowScanError(
                f"{p.where}:{line}: include from {source!r}: no such module (looked for {source}.nf "
                f"and {source}/main.nf next to {module.path.name})"
            )
        included = self.read(target, chain)
        for declared, alias in names:
            module.imports[alias] = (included, declared)

    def _param(self, p: Parser, module: Module) -> None:
        p.advance()
        names = []
        while p.is_op(".") and p.t[p.i + 1].kind == ID:
            p.advance()
            names.append(p.advance().text)
        if p.is_op("=") and len(names) == 1:
            p.advance()
            p.skip_newlines_only()
            module.param_defaults.append((names[0], p.expression()))
        else:
            p.skip_statement()

    def instances(self, main: Module) -> list[Instance]:
        """Every process the entry workflow reaches, under the names Nextflow gives it, then every
        other process read (they would run under ``-entry``, or in a pipeline scanned in part)."""
        found: list[Instance] = []
        if None in main.workflows:
            self._calls(main, main.workflows[None], "", found, ())
        else:
            for name in [n for n in main.workflows if n]:
                self._calls(main, main.workflows[name], f"{name}:", found, ((main.path, name),))
        seen = {id(i.process) for i in found}
        entry = bool(main.workflows)  # a lone module has none: its processes are what was asked for
        for module in self.modules.values():
            for process in module.processes.values():
                if id(process) not in seen:
                    found.append(Instance(process, process.name, process.name, called=not entry))
        return list(dict.fromkeys(found))

    def _calls(
        self, module: Module, body: tuple[Token, ...], prefix: str, out: list[Instance], stack: tuple
    ) -> None:
        if len(stack) > MAX_CALL_DEPTH:
            raise UnsafeInputError(
                f"{module.path}: workflows nested more than {MAX_CALL_DEPTH} deep; refused"
            )
        for name in _called_names(body):
            target = _lookup(module, name)
            if target is None:
                continue
            owner, declared, kind = target
            if kind == "process":
                out.append(Instance(owner.processes[declared], name, f"{prefix}{name}"))
            elif (owner.path, declared) not in stack:  # `FOO.out` inside FOO itself is no call
                frame = (*stack, (owner.path, declared))
                self._calls(owner, owner.workflows[declared], f"{prefix}{name}:", out, frame)


def _lookup(module: Module, name: str) -> tuple[Module, str, str] | None:
    if name in module.processes:
        return module, name, "process"
    if name in module.workflows:
        return module, name, "workflow"
    if name in module.imports:
        owner, declared = module.imports[name]
        if declared in owner.processes:
            return owner, declared, "process"
        if declared in owner.workflows:
            return owner, declared, "workflow"
    return None


def _called_names(body: tuple[Token, ...]) -> Iterator[str]:
    """Names used in a workflow body that may be calls: ``FOO(ch)``, ``ch | FOO``, ``FOO.out``."""
    seen: set[str] = set()
    for i, tok in enumerate(body):
        if tok.kind != ID or tok.text in seen:
            continue
        if i and body[i - 1].kind == OP and body[i - 1].text in (".", "?.", "*."):
            continue  # a property, not a name in scope
        seen.add(tok.text)
        yield tok.text


def _module_path(base: Path, source: str) -> Path | None:
    """Where ``include ... from 'source'`` points: ``source``, ``source.nf`` or ``source/main.nf``."""
    target = Path(os.path.normpath(base / source))
    for candidate in (target, target.with_name(target.name + ".nf"), target / "main.nf"):
        if candidate.is_file():
            return candidate
    return None


def _process(name: Token, p: Parser, module: Module) -> Process:
    process = Process(name.text, module, name.line)
    process.body = _directives(p, process)
    return process


def _directives(p: Parser, process: Process) -> tuple[Directive | Conditional, ...]:
    out: list[Directive | Conditional] = []
    while True:
        p.skip_newlines()
        if p.at_end():
            return tuple(out)
        tok, nxt = p.tok, p.t[p.i + 1]
        if tok.kind == ID and tok.text in _SECTIONS and nxt.kind == OP and nxt.text == ":":
            return tuple(out)  # inputs, outputs and the script follow; directives are over
        if p.is_id("container") and nxt.kind != NL and not (nxt.kind == OP and nxt.text in ("=", ".")):
            p.advance()
            out.append(Directive(p.expression()))
        elif p.is_id("label") and nxt.kind != NL:
            p.advance()
            node = p.expression()
            if node.kind == "lit" and isinstance(node.args[0], str):
                process.labels.append(node.args[0])
        elif p.is_id("if") and nxt.text == "(":
            out.append(_conditional(p, process))
        else:
            start = p.i
            p.skip_statement()
            if p.i == start:
                p.advance()


def _conditional(p: Parser, process: Process) -> Conditional:
    p.advance()
    p.expect_op("(")
    cond = p.expression(newlines=False)
    p.skip_newlines_only()
    p.expect_op(")")
    p.skip_newlines_only()
    then: tuple[Directive | Conditional, ...] = ()
    if p.is_op("{"):
        then = _directives(Parser(p.block(), p.where), process)
    else:
        p.skip_statement()
    otherwise: tuple[Directive | Conditional, ...] = ()
    following = p.peek_past_newlines()
    if following.kind == ID and following.text == "else":
        p.skip_newlines_only()
        p.advance()
        p.skip_newlines_only()
        if p.is_id("if"):
            otherwise = (_conditional(p, process),)
        elif p.is_op("{"):
            otherwise = _directives(Parser(p.block(), p.where), process)
        else:
            p.skip_statement()
    return Conditional(cond, then, otherwise)


def _params_block(p: Parser, module: Module) -> None:
    """The typed ``params { name: Type = default }`` block of newer Nextflow scripts."""
    while True:
        p.skip_newlines()
        if p.at_end():
            return
        if p.tok.kind == ID:
            name = p.advance().text
            if p.is_op(":"):
                p.advance()
                while not (p.at_end() or p.is_op("=") or p.tok.kind == NL):
                    p.advance()  # the type
            if p.is_op("="):
                p.advance()
                module.param_defaults.append((name, p.expression()))
                continue
        p.skip_statement()
        if p.is_op("}"):
            p.advance()


__all__ = ["Conditional", "Directive", "Instance", "Module", "Process", "ScriptReader"]

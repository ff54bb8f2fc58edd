"""Nextflow configuration files, read the way Nextflow's config parser reads them, never run.

A config decides more containers than the scripts do in real pipelines:
``process.container``, ``withName:``/``withLabel:`` selectors, ``ext`` flags
that nf-core's ternary reads, the ``*.registry`` prefix, and ``params`` that
the scripts interpolate. All of those can sit in a profile or in a file
pulled in by ``includeConfig``. This module walks that language statement
by statement with the same precedence rules as Nextflow's (v2) parser:
command-line params win over config params, selected profiles are applied
at the end of their ``profiles`` block in the order they were asked for,
an ``includeConfig`` is merged where it stands. Remote includes are never
fetched: a scan makes no network calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import progress
from .base import IncludeGuard, ScanOptions, WorkflowScanError, read_workflow_file
from .groovy import GSTR, ID, NL, OP, STR, Node, Parser, raw_text, tokenize
from .groovy_eval import Choice, Closure, Env, Unknown, evaluate, truthy

_SELECTORS = ("withName", "withLabel")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Setting:
    """One assignment, kept with where it was written so a report can point at it."""

    value: Any
    file: Path
    line: int
    raw: str


@dataclass
class Selector:
    kind: str  # withName | withLabel
    pattern: str
    settings: dict[str, Setting] = field(default_factory=dict)


@dataclass
class NextflowConfig:
    """What a scan needs from the merged configuration."""

    params: dict[str, Any] = field(default_factory=dict)
    #: the ``process`` scope without selectors: ``container``, ``ext.<name>``...
    process: dict[str, Setting] = field(default_factory=dict)
    #: ``withName:PATTERN`` / ``withLabel:PATTERN`` -> selector, in the order first written (Nextflow's
    #: process scope is a map, so a selector written twice keeps its first place)
    selectors: dict[str, Selector] = field(default_factory=dict)
    #: every other setting, by dotted name: ``docker.registry``, ``manifest.mainScript``...
    scopes: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    profiles_declared: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, options: ScanOptions, guard: IncludeGuard, project_dir: Path) -> None:
        self.options = options
        self.guard = guard
        self.config = NextflowConfig(params=dict(options.params))
        self.names: dict[str, Any] = {
            "projectDir": str(project_dir),
            "baseDir": str(project_dir),
            "launchDir": Unknown(("launchDir",)),
        }

    def read(self, path: Path, chain: tuple[Path, ...], scope: tuple[str, ...]) -> None:
        chain = self.guard.enter(chain, path)
        src = read_workflow_file(path)
        self.config.files.append(path)
        parser = Parser(tokenize(src, str(path)), str(path))
        self.block(parser, _Ctx(path, src, chain), scope)

    def env(self, ctx: _Ctx) -> Env:
        return Env(ctx.src, str(ctx.path), self.config.params, self.options.engine, names=self.names)

    def block(self, p: Parser, ctx: _Ctx, scope: tuple[str, ...]) -> None:
        while True:
            p.skip_newlines()
            if p.at_end() or p.is_op("}"):
                return
            start = p.i
            self.statement(p, ctx, scope)
            if p.i == start:
                p.advance()

    def statement(self, p: Parser, ctx: _Ctx, scope: tuple[str, ...]) -> None:
        tok = p.tok
        nxt = p.t[p.i + 1]
        if p.is_id("includeConfig"):
            p.advance()
            node = p.expression()
            self.include(node, ctx, scope)
        elif p.is_id("try") and nxt.text == "{":
            p.advance()
            self.block(Parser(p.block(), p.where), ctx, scope)
            self.handlers(p, ctx, scope)
        elif p.is_id("if") and nxt.text == "(":
            self.conditional(p, ctx, scope)
        elif p.is_id("def"):
            self.definition(p, ctx)
        elif tok.kind == ID and tok.text in _SELECTORS and nxt.kind == OP and nxt.text == ":":
            self.selector(p, ctx, scope)
        elif tok.kind in (ID, STR):
            self.assignment_or_block(p, ctx, scope)
        else:
            p.skip_statement()

    def handlers(self, p: Parser, ctx: _Ctx, scope: tuple[str, ...]) -> None:
        """The ``catch``/``finally`` after a ``try``: a catch runs only when the try failed, which a
        static read cannot know, so only ``finally`` bodies are read."""
        while p.peek_past_newlines().kind == ID and p.peek_past_newlines().text in ("catch", "finally"):
            p.skip_newlines_only()
            word = p.advance().text
            if p.is_op("("):
                p.skip_balanced()
            p.skip_newlines_only()
            if not p.is_op("{"):
                return
            body = p.block()
            if word == "finally":
                self.block(Parser(body, p.where), ctx, scope)

    def conditional(self, p: Parser, ctx: _Ctx, scope: tuple[str, ...], *, live: bool = True) -> None:
        """``if``/``else if``/``else`` on a condition known statically (params, the engine): the branch
        taken is read; on a run-time condition neither is, with a warning. ``live`` is False for the
        ``else if`` of a branch already taken."""
        line = p.advance().line
        p.expect_op("(")
        cond = evaluate(p.expression(newlines=False), self.env(ctx)) if live else None
        p.skip_newlines_only()
        p.expect_op(")")
        p.skip_newlines_only()
        then = p.block() if p.is_op("{") else None
        if then is None:
            p.skip_statement()
        known = live and not isinstance(cond, (Unknown, Choice, Closure))
        if live and not known:
            _warn(f"{ctx.path}:{line}: an `if` on a condition known only at run time; neither branch is read")
        if known and truthy(cond) and then:
            self.block(Parser(then, p.where), ctx, scope)
        if not (p.peek_past_newlines().kind == ID and p.peek_past_newlines().text == "else"):
            return
        p.skip_newlines_only()
        p.advance()
        p.skip_newlines_only()
        if p.is_id("if"):
            self.conditional(p, ctx, scope, live=known and not truthy(cond))
        elif p.is_op("{"):
            otherwise = p.block()
            if known and not truthy(cond):
                self.block(Parser(otherwise, p.where), ctx, scope)
        else:
            p.skip_statement()

    def definition(self, p: Parser, ctx: _Ctx) -> None:
        p.advance()
        if p.tok.kind == ID and p.t[p.i + 1].kind == ID:
            p.advance()  # a type: `def String x = ...`
        if p.tok.kind == ID and p.t[p.i + 1].text == "=":
            name = p.advance().text
            p.advance()
            self.names[name] = evaluate(p.expression(), self.env(ctx))
            return
        while not (p.at_end() or p.is_op("{") or p.tok.kind == NL):
            if p.is_op("("):
                p.skip_balanced()
            else:
                p.advance()
        if p.is_op("{"):
            p.skip_balanced()  # a function definition (old nf-core's check_max): never called here

    def selector(self, p: Parser, ctx: _Ctx, scope: tuple[str, ...]) -> None:
        kind = p.advance().text
        p.advance()
        tok = p.advance()
        if tok.kind in (ID, STR):
            pattern = tok.text
        elif tok.kind == GSTR:
            value = evaluate(Parser([tok, p.t[-1]], p.where).expression(), self.env(ctx))
            pattern = value if isinstance(value, str) else ctx.src[tok.start : tok.end]
        else:
            p.skip_statement()
            return
        p.skip_newlines_only()
        if not p.is_op("{"):
            p.skip_statement()
            return
        body = p.block()
        self.block(Parser(body, p.where), ctx, (*scope, f"{kind}:{pattern.strip()}"))

    def assignment_or_block(self, p: Parser, ctx: _Ctx, scope: tuple[str, ...]) -> None:
        first = p.advance()
        names = [first.text]
        while p.is_op(".") and p.t[p.i + 1].kind in (ID, STR):
            p.advance()
            names.append(p.advance().text)
        path = (*scope, *names)
        if p.is_op("="):
            p.advance()
            p.skip_newlines_only()
            node = p.expression()
            self.assign(path, node, ctx, first.line)
            return
        p.skip_newlines_only()
        if not p.is_op("{"):
            p.skip_statement()
            return
        body = Parser(p.block(), p.where)
        if path == ("profiles",):
            self.profiles(body, ctx)
        else:
            self.block(body, ctx, path)

    def profiles(self, p: Parser, ctx: _Ctx) -> None:
        """Profile blocks are collected, then the selected ones applied in the order they were asked
        for, where the ``profiles`` block ends (as Nextflow's config parser does)."""
        blocks: dict[str, tuple] = {}
        while True:
            p.skip_newlines()
            if p.at_end():
                break
            tok = p.advance()
            p.skip_newlines_only()
            if tok.kind in (ID, STR) and p.is_op("{"):
                blocks[tok.text] = p.block()
                if tok.text not in self.config.profiles_declared:
                    self.config.profiles_declared.append(tok.text)
            else:
                p.skip_statement()
        for name in requested_profiles(self.options):
            if name in blocks:
                self.block(Parser(blocks[name], p.where), ctx, ())

    def assign(self, path: tuple[str, ...], node: Node, ctx: _Ctx, line: int) -> None:
        env = self.env(ctx)
        raw = raw_text(ctx.src, node)
        if path[0] == "params":
            if len(path) >= 2 and path[1] in self.options.params:
                return  # a --params-file value wins, and later config lines see it
            value = evaluate(node, env)
            target = self.config.params
            for key in path[1:-1]:
                nested = target.get(key)
                if not isinstance(nested, dict):
                    nested = target[key] = {}
                target = nested
            if len(path) >= 2:
                target[path[-1]] = value
            return
        value = evaluate(node, env)
        setting = Setting(value, ctx.path, node.line if node.line else line, raw)
        if path[0] == "process" and len(path) >= 2:
            if len(path) >= 3 and path[1].split(":", 1)[0] in _SELECTORS:
                key = path[1]
                kind, _, pattern = key.partition(":")
                sel = self.config.selectors.setdefault(key, Selector(kind, pattern.strip()))
                sel.settings[".".join(path[2:])] = setting
            else:
                self.config.process[".".join(path[1:])] = setting
            return
        self.config.scopes[".".join(path)] = value

    def include(self, node: Node, ctx: _Ctx, scope: tuple[str, ...]) -> None:
        value = evaluate(node, self.env(ctx))
        where = f"{ctx.path}:{node.line}"
        if not isinstance(value, str):
            _warn(
                f"{where}: includeConfig {ctx.src[node.start : node.end]} is known only at run time; not read"
            )
            return
        if value in ("", "/dev/null"):
            return
        if _URL.match(value) and not value.startswith("file://"):
            _warn(f"{where}: includeConfig {value} is remote; not fetched (a scan makes no network calls)")
            return
        target = Path(value.removeprefix("file://"))
        if not target.is_absolute():
            target = ctx.path.parent / target
        if not target.is_file():
            _warn(f"{where}: includeConfig {value}: no such file {target}; not read")
            return
        self.read(target, ctx.chain, scope)


@dataclass(frozen=True)
class _Ctx:
    path: Path
    src: str
    chain: tuple[Path, ...]


def _warn(text: str) -> None:
    progress.current().warn(text, key="nextflow-config")


def read_config(
    paths: list[Path], options: ScanOptions, guard: IncludeGuard, project_dir: Path
) -> NextflowConfig:
    """The merged configuration of ``paths`` (read in order, later files win), for ``options``."""
    reader = _Reader(options, guard, project_dir)
    for path in paths:
        reader.read(path, (), ())
    missing = [p for p in requested_profiles(options) if p not in reader.config.profiles_declared]
    if missing and paths:
        declared = ", ".join(reader.config.profiles_declared) or "none"
        raise WorkflowScanError(
            f"profile {', '.join(missing)} is not defined in {', '.join(map(str, paths))} "
            f"(defined: {declared}); pass one of those to --profile"
        )
    return reader.config


def requested_profiles(options: ScanOptions) -> list[str]:
    """``--profile a,b`` and ``--profile a --profile b`` alike, as Nextflow's ``-profile a,b``."""
    return [name.strip() for entry in options.profiles for name in entry.split(",") if name.strip()]

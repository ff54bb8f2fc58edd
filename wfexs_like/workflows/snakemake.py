"""The containers a Snakemake workflow names, read with Python's tokenizer and never executed.

A Snakefile is Python plus keywords (``rule x:``, ``container:``), so it is not
valid Python and cannot be ``ast``-parsed whole; Snakemake itself reads it
with :mod:`tokenize`, and so does this module: a keyword counts when it starts
a logical line outside brackets and a ``:`` follows it. Only the *value*
after a ``container:`` / ``singularity:`` / ``containerized:`` keyword is
parsed, with :func:`ast.parse` (parsing, never evaluation), and resolved
statically: string literals and module-level string constants are exact,
``config[...]`` lookups take the value of the ``configfile:`` (overridden by
the caller's params, as ``--configfile`` would) but stay ``dynamic`` since
``--config`` can change them, and lambdas, calls and wildcards are
``dynamic``. ``include:`` and a module's local ``snakefile:`` are followed
relative to the file that names them; cycles are refused.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import progress
from ..safeyaml import load_bounded
from .base import (
    Confidence,
    ContainerRef,
    IncludeGuard,
    Kind,
    ScanOptions,
    WorkflowScanError,
    read_workflow_file,
)

LANGUAGE = "snakemake"
_CONTAINER_WORDS = frozenset({"container", "singularity", "containerized"})
_RULE_WORDS = frozenset({"rule", "checkpoint"})
#: The keywords whose values are read; any other ``word:`` (``input:``, ``else:``, ``run:``) is
#: walked through, so a keyword inside its block is still found.
_READ_WORDS = _CONTAINER_WORDS | {"include", "configfile", "snakefile"}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_WILDCARD = re.compile(r"\{[^{}]*\}")
_IMAGE_SUFFIXES = (".sif", ".simg", ".img", ".sqsh")
_SKIP = frozenset({tokenize.COMMENT, tokenize.NL})


def claims(path: Path) -> bool:
    """A ``Snakefile``, a ``*.smk`` file, or a directory holding ``[workflow/]Snakefile``."""
    if path.is_dir():
        return _entry(path) is not None
    return path.name == "Snakefile" or path.suffix == ".smk"


def scan(path: Path, options: ScanOptions) -> list[ContainerRef]:
    """Every container reference of the workflow at ``path`` (a directory, its Snakefile, or a rules
    file) and the files it includes.

    ``options.params`` plays the part of ``--configfile``: it overrides the workflow's own
    ``configfile:`` values. The engine does not matter: Snakemake always hands these to Apptainer.
    """
    return scan_many([path], options)


def scan_many(paths: list[Path], options: ScanOptions) -> list[ContainerRef]:
    """The references of every workflow among ``paths``, rules files read in their workflow's context.

    A directory walk hands over each ``Snakefile`` and ``*.smk`` separately, but a rules file read
    alone misses the ``configfile:`` and constants of the Snakefile that includes it. So Snakefiles
    are read first (shallowest first, so a workflow comes before the modules it uses), then every
    rules file none of them included, with the config and constants of the innermost workflow
    directory that holds it.
    """
    entries: list[Path] = []
    rules_files: list[Path] = []
    for path in paths:
        if path.is_dir():
            entry = _entry(path)
            if entry is None:
                raise WorkflowScanError(f"{path}: no Snakefile or workflow/Snakefile in this directory")
            entries.append(entry)
        elif path.name == "Snakefile":
            entries.append(path)
        else:
            rules_files.append(path)
    refs: list[ContainerRef] = []
    readers: list[_Reader] = []
    for entry in sorted(entries, key=lambda p: len(p.resolve().parts)):
        if any(entry.resolve() in r.files for r in readers):
            continue
        reader = _Reader(_workdir(entry), IncludeGuard())
        reader.read(entry, ())
        readers.append(reader)
        refs += reader.refs(options)
    for rules in rules_files:
        if any(rules.resolve() in r.files for r in readers):
            continue
        owner = _owner(rules, readers)
        reader = _Reader(owner.workdir if owner else rules.parent, IncludeGuard())
        if owner is not None:
            reader.config, reader.constants = owner.config, dict(owner.constants)
        reader.read(rules, ())
        found = reader.refs(options)
        if readers:
            more = "in a rules file no scanned Snakefile includes"
            found = [replace(r, note=f"{r.note}; {more}" if r.note else more) for r in found]
        refs += found
    return refs


def _workdir(entry: Path) -> Path:
    """Where Snakemake runs a workflow: above ``workflow/`` in the standard layout, else beside it."""
    return entry.parent.parent if entry.parent.name == "workflow" else entry.parent


def _owner(rules: Path, readers: list[_Reader]) -> _Reader | None:
    resolved = rules.resolve()
    holders = [r for r in readers if resolved.is_relative_to(r.workdir.resolve())]
    return max(holders, key=lambda r: len(r.workdir.resolve().parts)) if holders else None


def _entry(directory: Path) -> Path | None:
    for candidate in (directory / "Snakefile", directory / "workflow" / "Snakefile"):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class _Found:
    """One ``container:``-like keyword and its value, still unparsed."""

    file: Path
    line: int
    keyword: str
    #: "rule NAME", "global", "use rule ..."
    context: str
    text: str


class _Reader:
    def __init__(self, workdir: Path, guard: IncludeGuard) -> None:
        self.workdir = workdir
        self.guard = guard
        self.found: list[_Found] = []
        self.config: dict[str, Any] = {}
        self.config_files: list[Path] = []
        #: module-level ``NAME = "..."`` constants; None when a name is assigned more than once
        self.constants: dict[str, ast.expr | None] = {}
        #: every file read, resolved
        self.files: set[Path] = set()

    def refs(self, options: ScanOptions) -> list[ContainerRef]:
        config = _merge(self.config, options.params)
        return [_ref(found, self, config) for found in self.found]

    def read(self, path: Path, chain: tuple[Path, ...]) -> None:
        chain = self.guard.enter(chain, path)
        self.files.add(path.resolve())
        src = read_workflow_file(path)
        lines = src.splitlines(keepends=True)
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line))
        for stmt in _statements(src, path):
            self._statement(stmt, src, starts, path, chain)

    def _statement(self, stmt: _Statement, src: str, starts: list[int], path: Path, chain: tuple) -> None:
        text = _span_text(src, starts, stmt.value)
        line = stmt.value[0].start[0] if stmt.value else stmt.line
        if stmt.word in _CONTAINER_WORDS:
            self.found.append(_Found(path, line, stmt.word, stmt.context, text))
        elif stmt.word == "include" or (stmt.word == "snakefile" and stmt.context.startswith("module ")):
            target = self._path_value(text, path, line, stmt.word)
            if target is not None:
                included = Path(os.path.normpath(path.parent / target))
                if not included.is_file():
                    raise WorkflowScanError(
                        f"{path}:{line}: {stmt.word}: {target} does not exist (looked for {included})"
                    )
                self.read(included, chain)
        elif stmt.word == "configfile":
            target = self._path_value(text, path, line, stmt.word)
            if target is not None:
                self._configfile(target, path, line)
        elif stmt.word == "=":
            name = stmt.name
            node = _parse(text)
            self.constants[name] = None if name in self.constants else node

    def _path_value(self, text: str, path: Path, line: int, word: str) -> str | None:
        value = _static_string(_parse(text), self.constants)
        if value is None or _SCHEME.match(value):
            _warn(f"{path}:{line}: {word}: {text.strip()} is not a local path known statically; not read")
            return None
        return value

    def _configfile(self, target: str, path: Path, line: int) -> None:
        # Snakemake reads configfile: paths relative to the working directory
        for base in (self.workdir, path.parent):
            candidate = Path(os.path.normpath(base / target))
            if candidate.is_file():
                text = read_workflow_file(candidate)
                data = load_bounded(text, str(candidate))
                if isinstance(data, dict):
                    self.config = _merge(self.config, data)
                    self.config_files.append(candidate)
                return
        _warn(
            f"{path}:{line}: configfile {target} not found under {self.workdir}; config lookups stay unknown"
        )


# -- statements ----------------------------------------------------------------------------------


@dataclass
class _Statement:
    #: the keyword (``container``, ``include``...) or ``=`` for a module-level assignment
    word: str
    context: str
    line: int
    value: list[tokenize.TokenInfo]
    name: str = ""


def _tokens(src: str, path: Path) -> Iterator[tokenize.TokenInfo]:
    try:
        yield from tokenize.generate_tokens(io.StringIO(src).readline)
    except (tokenize.TokenError, IndentationError, SyntaxError) as e:
        line = getattr(e, "lineno", None) or (e.args[1][0] if len(e.args) > 1 else "?")
        raise WorkflowScanError(
            f"{path}:{line}: cannot be tokenized ({e.args[0] if e.args else e}); "
            "not a valid Snakefile, so its containers cannot be read"
        ) from e


def _statements(src: str, path: Path) -> Iterator[_Statement]:
    """Keyword statements (``container:``, ``include:``, ``configfile:``, a module's ``snakefile:``)
    and module-level ``NAME = value`` lines, each with the rule (or module) it sits in."""
    toks = [t for t in _tokens(src, path) if t.type not in _SKIP]
    depth = 0  # indentation
    brackets = 0
    contexts: list[tuple[str, int]] = []  # (context, indentation depth of its header)
    line_start = True
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
            while contexts and contexts[-1][1] >= depth:
                contexts.pop()
        if tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            line_start = True
            i += 1
            continue
        if tok.type == tokenize.OP and tok.string in "([{":
            brackets += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            brackets -= 1
        start, line_start = line_start and brackets == 0, False
        if not start or tok.type != tokenize.NAME:
            i += 1
            continue
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        header = _header(toks, i)
        if header is not None:
            contexts.append((header, depth))
            i += 1
            continue
        context = contexts[-1][0] if contexts else "global"
        if tok.string in _READ_WORDS and nxt is not None and nxt.type == tokenize.OP and nxt.string == ":":
            value, i = _value(toks, i + 2)
            yield _Statement(tok.string, context, tok.start[0], value)
            line_start = True
            continue
        if nxt is not None and nxt.type == tokenize.OP and nxt.string == "=" and depth == 0:
            value, i = _value(toks, i + 2)
            yield _Statement("=", context, tok.start[0], value, name=tok.string)
            line_start = True
            continue
        i += 1


def _header(toks: list[tokenize.TokenInfo], i: int) -> str | None:
    """The context a block header opens: ``rule NAME:``, ``checkpoint NAME:``, ``rule:``,
    ``module NAME:``, ``use rule ... with:``; None for any other line."""
    word = toks[i].string
    j = i + 1
    words = []
    while j < len(toks) and toks[j].type not in (tokenize.NEWLINE, tokenize.ENDMARKER):
        if toks[j].string == ":" and j + 1 < len(toks) and toks[j + 1].type == tokenize.NEWLINE:
            break
        words.append(toks[j].string)
        j += 1
    else:
        return None
    if word in _RULE_WORDS and len(words) <= 1:
        return f"{word} {words[0]}" if words else f"{word} (anonymous)"
    if word == "module" and len(words) == 1:
        return f"module {words[0]}"
    if word == "use" and words[:1] == ["rule"] and "with" in words:
        return "use " + " ".join(w for w in words if w != "with")
    return None


def _value(toks: list[tokenize.TokenInfo], i: int) -> tuple[list[tokenize.TokenInfo], int]:
    """The tokens of a keyword's value: the rest of the logical line, or the indented block under
    it; and the index after it."""
    if i < len(toks) and toks[i].type == tokenize.NEWLINE:
        if i + 1 < len(toks) and toks[i + 1].type == tokenize.INDENT:
            j, level, out = i + 2, 1, []
            while j < len(toks) and level:
                if toks[j].type == tokenize.INDENT:
                    level += 1
                elif toks[j].type == tokenize.DEDENT:
                    level -= 1
                elif toks[j].type != tokenize.NEWLINE:
                    out.append(toks[j])
                j += 1
            return out, j  # the block's INDENT and DEDENT balance: the caller's depth is unchanged
        return [], i
    out = []
    while i < len(toks) and toks[i].type not in (tokenize.NEWLINE, tokenize.ENDMARKER):
        out.append(toks[i])
        i += 1
    return out, i


def _span_text(src: str, starts: list[int], value: list[tokenize.TokenInfo]) -> str:
    if not value:
        return ""
    (r0, c0), (r1, c1) = value[0].start, value[-1].end
    return src[starts[r0 - 1] + c0 : starts[r1 - 1] + c1]


def _parse(text: str) -> ast.expr | None:
    """The value's expression tree (``ast.parse`` reads, it never runs), or None if it is not one."""
    for candidate in (text.strip(), f"(\n{text}\n)"):
        try:
            return ast.parse(candidate, mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return None


# -- values --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """What a value resolved to: ``text`` when known, and why it is dynamic when it is."""

    text: str | None
    dynamic: tuple[str, ...] = ()


def _static_string(node: ast.expr | None, constants: Mapping[str, ast.expr | None]) -> str | None:
    value = _resolve(node, constants, {}, ())
    return value.text if not value.dynamic else None


def _resolve(
    node: ast.expr | None, constants: Mapping[str, ast.expr | None], config: Mapping[str, Any], seen: tuple
) -> _Value:
    if node is None:
        return _Value(None, ("a value that is not a Python expression",))
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return _Value(node.value)
        return _Value(None, (f"a {type(node.value).__name__}, not a string",))
    if isinstance(node, ast.Name):
        target = constants.get(node.id)
        if target is None or node.id in seen:
            return _Value(None, (f"the variable {node.id}",))
        return _resolve(target, constants, config, (*seen, node.id))
    if isinstance(node, ast.JoinedStr):
        parts = []
        for piece in node.values:
            if isinstance(piece, ast.FormattedValue):
                if piece.conversion != -1 or piece.format_spec is not None:
                    return _Value(None, (f"the f-string {ast.unparse(node)}",))
                parts.append(_resolve(piece.value, constants, config, seen))
            else:
                parts.append(_resolve(piece, constants, config, seen))
        return _join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _join(
            [_resolve(node.left, constants, config, seen), _resolve(node.right, constants, config, seen)]
        )
    if isinstance(node, ast.Lambda):
        return _Value(None, ("a function of the wildcards (lambda)",))
    lookup = _config_lookup(node, config)
    if lookup is not None:
        return lookup
    return _Value(None, (ast.unparse(node),))


def _join(parts: list[_Value]) -> _Value:
    reasons = tuple(r for p in parts for r in p.dynamic)
    if any(p.text is None for p in parts):
        return _Value(None, reasons)
    return _Value("".join(p.text or "" for p in parts), reasons)


def _config_lookup(node: ast.expr, config: Mapping[str, Any]) -> _Value | None:
    """``config["a"]["b"]`` / ``config.get("a", default)``: the configfile's value, still dynamic."""
    default: ast.expr | None = None
    keys: list[Any] = []
    current = node
    if (
        isinstance(current, ast.Call)
        and isinstance(current.func, ast.Attribute)
        and current.func.attr == "get"
        and current.args
        and isinstance(current.args[0], ast.Constant)
    ):
        keys.append(current.args[0].value)
        default = current.args[1] if len(current.args) > 1 else None
        current = current.func.value
    while isinstance(current, ast.Subscript) and isinstance(current.slice, ast.Constant):
        keys.append(current.slice.value)
        current = current.value
    if not (isinstance(current, ast.Name) and current.id == "config" and keys):
        return None
    keys.reverse()
    text = ast.unparse(node)
    value: Any = config
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            if default is not None and isinstance(default, ast.Constant) and isinstance(default.value, str):
                return _Value(default.value, (f"{text}: not in the config, its default",))
            return _Value(None, (f"{text} (not in the configfile)",))
        value = value[key]
    if not isinstance(value, str):
        return _Value(None, (f"{text} is not a string in the config",))
    return _Value(value, (f"{text} from the config; --config or --configfile may change it",))


# -- references ----------------------------------------------------------------------------------


def _ref(found: _Found, reader: _Reader, config: Mapping[str, Any]) -> ContainerRef:
    node = _parse(found.text)
    value = _resolve(node, reader.constants, config, ())
    written = found.text.strip()
    raw = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else written
    reasons = list(value.dynamic)
    tag = value.text
    kind: Kind = "docker"
    notes: list[str] = []
    if tag is not None and _WILDCARD.search(tag):
        reasons.append(f"wildcards {', '.join(_WILDCARD.findall(tag))} filled in per job")
        kind = _kind_of(tag)
        tag = None
    confidence: Confidence = "dynamic" if reasons else "exact"
    if tag is not None:
        kind, tag, notes, assumed = classify(tag, reader.workdir)
        if assumed and confidence == "exact":
            confidence = "candidate"
    elif not written:
        reasons.append(f"an empty {found.keyword}: value")
    where = "global" if found.context == "global" else found.context
    note_parts = [
        f"{where} {found.keyword}:" if found.keyword != "container" or where == "global" else where,
        *notes,
        *(f"needs {r}" if value.text is None else r for r in reasons),
    ]
    return ContainerRef(
        file=str(found.file),
        line=found.line,
        raw=raw,
        tag=tag,
        kind=kind,
        confidence=confidence,
        language=LANGUAGE,
        note="; ".join(p for p in note_parts if p) or None,
    )


def classify(value: str, workdir: Path) -> tuple[Kind, str, list[str], bool]:
    """(kind, tag, notes, assumed) of an image URL as Snakemake hands it to Apptainer.

    ``docker://x`` is the Docker image ``x``; ``oras://`` an ORAS artifact; ``http(s)://``,
    ``library://`` and ``shub://`` a SIF fetched from there; a path (Snakemake's test: no URL
    scheme) a local image, resolved against the working directory. A bare ``name:tag`` has no
    scheme Apptainer knows; it is reported as the Docker image it surely means, ``assumed``.
    """
    match = _SCHEME.match(value)
    if match:
        scheme, rest = match.group(1).lower(), match.group(2)
        if scheme == "docker":
            return "docker", rest, [], False
        if scheme == "oras":
            return "oras", value, [], False
        if scheme == "file":
            return "local", rest, [], False
        if scheme in ("http", "https", "ftp", "library", "shub"):
            return "sif-url", value, [], False
        return "sif-url", value, [f"unknown scheme {scheme}://"], True
    path = Path(value).expanduser()
    local = workdir / path
    if (
        path.is_absolute()
        or value.startswith(("./", "../"))
        or value.endswith(_IMAGE_SUFFIXES)
        or local.exists()
    ):
        return "local", os.path.normpath(local), [], False
    return "docker", value, [f"{value!r} has no docker:// scheme; assumed to be a Docker image"], True


_KIND_BY_SCHEME: dict[str, Kind] = {"docker": "docker", "oras": "oras", "file": "local"}


def _kind_of(text: str) -> Kind:
    """The kind a template will have once filled in, judged by its scheme."""
    match = _SCHEME.match(text)
    return _KIND_BY_SCHEME.get(match.group(1).lower(), "sif-url") if match else "docker"


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Snakemake's config update: nested mappings merge, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _warn(text: str) -> None:
    progress.current().warn(text, key="snakemake")


__all__ = ["claims", "classify", "scan", "scan_many"]

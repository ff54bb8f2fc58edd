"""Galaxy tool XML: explicit ``<container>`` images, and the mulled-v2 image of its conda packages.

Read with defusedxml only, entities forbidden: a tool file never needs a DTD
entity, and one is how a 1 kB file expands to gigabytes ("billion laughs").
Macros are expanded the way Galaxy does before it reads requirements —
``<macros><import>`` files (relative to the tool's directory, nested imports
too), ``<xml name>`` bodies placed by ``<expand macro>`` with their ``<yield>``
slots and parameters, and ``@TOKEN@`` values — but only for what can hold
requirements: the tool's top-level ``<requirements>`` and ``<expand>``
elements. Expansion is bounded (element count, token size, nesting), because
macros can multiply like aliases.

Galaxy uses a tool's explicit container when it has one (the engine's type
first: ``singularity`` for Apptainer, ``docker`` otherwise); failing that, the
image BioContainers built for its package requirements (``mulled``), whose
name is computed here offline and reported as a ``candidate``.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
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
    read_workflow_file,
    require,
)
from .mulled import biocontainers_image, mulled_v2_name

#: Elements one tool may grow to through macro expansion.
MAX_ELEMENTS = 100_000
#: Characters a token value may grow to through nested tokens.
MAX_TOKEN_CHARS = 1 << 20
_SNIFF_BYTES = 65536
_TOOL_ROOT = re.compile(
    rb"\A(?:\xef\xbb\xbf)?(?:\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>)*<tool[\s>/]", re.S
)
_LEFT_TOKEN = re.compile(r"@[A-Za-z0-9_]+@")


def claims(path: Path) -> bool:
    """An ``.xml`` file whose root element is ``<tool>`` (not a macros file, not any other XML)."""
    if path.suffix != ".xml":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    return _TOOL_ROOT.match(head) is not None


def scan(path: Path, options: ScanOptions) -> list[ContainerRef]:
    """References of the Galaxy tool ``path``."""
    defused = require("defusedxml.ElementTree", "Galaxy tool XML")
    reader = _Reader(defused)
    chain = reader.guard.enter((), path)
    root = reader.parse(path)
    if root.tag != "tool":
        raise WorkflowScanError(f"{path}: not a Galaxy tool (its root element is <{root.tag}>)")
    macros = _Macros()
    for el in root.findall("macros"):
        reader.collect(el, path.parent, chain, macros)
    tokens = _expand_nested(macros.tokens, str(path))
    expander = _Expander(macros, str(path))
    requirements: list[_El] = []
    for child in list(root):
        if child.tag in ("requirements", "expand"):
            for el in expander.expand_top(child):
                if el.tag == "requirements":
                    _apply_tokens(el, tokens)
                    requirements.append(el)
    return _references(requirements, options)


class _El(ET.Element):
    """An element that remembers the file and line it was written at (macros copy it along)."""

    origin: tuple[str, int]


class _Builder(ET.TreeBuilder):
    def __init__(self, file: str) -> None:
        super().__init__(element_factory=_El)
        self.file = file
        self.parser: Any = None

    def start(self, tag: Any, attrs: Any) -> Any:
        el = super().start(tag, attrs)
        # the expat parser under defusedxml's (pure Python) XMLParser knows the line being read
        expat = getattr(self.parser, "parser", None)
        el.origin = (self.file, int(getattr(expat, "CurrentLineNumber", 0)))
        return el


@dataclass
class _Macros:
    tokens: dict[str, str] = field(default_factory=dict)
    xml: dict[str, _El] = field(default_factory=dict)


class _Reader:
    def __init__(self, defused: Any) -> None:
        self.defused = defused
        self.guard = IncludeGuard()

    def parse(self, path: Path) -> _El:
        from defusedxml.common import DefusedXmlException

        file = str(path)
        text = read_workflow_file(path)
        builder = _Builder(file)
        parser = self.defused.DefusedXMLParser(
            target=builder, forbid_dtd=False, forbid_entities=True, forbid_external=True
        )
        builder.parser = parser
        try:
            parser.feed(text)
            return parser.close()
        except DefusedXmlException as e:
            raise UnsafeInputError(
                f"{file}: declares an XML entity ({e}); refused: entities are how a small file expands to "
                "gigabytes, and a Galaxy tool never needs one"
            ) from e
        except ET.ParseError as e:
            raise WorkflowScanError(f"{file}: not well-formed XML: {e}") from e

    def collect(self, macros_el: _El, tool_dir: Path, chain: tuple[Path, ...], into: _Macros) -> None:
        """Imports first, then the definitions written here; a later definition wins, as in Galaxy."""
        for imp in macros_el.findall("import"):
            name = (imp.text or "").strip()
            target = Path(os.path.normpath(tool_dir / name))
            file, line = imp.origin
            if not name or not target.is_file():
                raise WorkflowScanError(f"{file}:{line}: <import>{name}</import>: {target} does not exist")
            sub_chain = self.guard.enter(chain, target)
            # nested imports are relative to the tool's directory too, as Galaxy reads them
            self.collect(self.parse(target), tool_dir, sub_chain, into)
        for el in macros_el:
            kind = el.get("type", "xml") if el.tag == "macro" else el.tag
            name = el.get("name")
            if name is None:
                continue
            if kind == "token":
                into.tokens[name] = el.text or ""
            elif kind == "xml":
                into.xml[name] = el


def _expand_nested(tokens: dict[str, str], where: str) -> dict[str, str]:
    out = dict(tokens)
    for _ in range(len(out)):
        changed = False
        for name, value in out.items():
            for other, other_value in out.items():
                if other in value:
                    if other == name:
                        raise WorkflowScanError(f"{where}: token {name} contains itself")
                    value = value.replace(other, other_value)
                    changed = True
            if len(value) > MAX_TOKEN_CHARS:
                raise UnsafeInputError(
                    f"{where}: token {name} grows past {MAX_TOKEN_CHARS} characters; refused"
                )
            out[name] = value
        if not changed:
            break
    return out


def _substitute(text: str, tokens: dict[str, str]) -> str:
    for name, value in tokens.items():
        if name in text:
            text = text.replace(name, value)
    return text


def _apply_tokens(el: _El, tokens: dict[str, str]) -> None:
    if not tokens:
        return
    for node in el.iter():
        if node.text:
            node.text = _substitute(node.text, tokens)
        for key, value in list(node.attrib.items()):
            node.attrib[key] = _substitute(value, tokens)


class _Expander:
    """Places ``<xml>`` macro bodies where ``<expand macro>`` asks, with a bound on what it creates."""

    def __init__(self, macros: _Macros, where: str) -> None:
        self.macros = macros
        self.where = where
        self.created = 0

    def expand_top(self, el: _El) -> list[_El]:
        """What a top-level child of ``<tool>`` becomes."""
        if el.tag == "expand":
            return self._expand(el, ())
        self._expand_children(el, ())
        return [el]

    def _expand_children(self, el: _El, stack: tuple[str, ...]) -> None:
        out: list[_El] = []
        for child in list(el):
            if child.tag == "expand":
                out.extend(self._expand(child, stack))
            else:
                self._expand_children(child, stack)
                out.append(child)
        _set_children(el, out)

    def _expand(self, expand: _El, stack: tuple[str, ...]) -> list[_El]:
        check_cancelled()
        file, line = expand.origin
        name = expand.get("macro")
        if name is None or name not in self.macros.xml:
            raise WorkflowScanError(f"{file}:{line}: <expand macro={name!r}> names no <xml> macro")
        if name in stack:
            raise UnsafeInputError(
                f"{file}:{line}: macro {name} expands itself ({' -> '.join(stack)}); refused"
            )
        if len(stack) >= MAX_INCLUDE_DEPTH:
            raise UnsafeInputError(
                f"{file}:{line}: macros nested more than {MAX_INCLUDE_DEPTH} deep; refused"
            )
        macro = self.macros.xml[name]
        body = [self._clone(c) for c in macro]
        named = {t.get("name"): list(t) for t in expand.findall("token")}
        rest = [c for c in expand if c.tag != "token"]
        holder = _El("macro-body")
        holder.origin = macro.origin
        _set_children(holder, body)
        self._fill_yields(holder, lambda y: named.get(y.get("name"), rest) if y.get("name") else rest)
        params = _macro_params(macro, expand, self.where)
        if params:
            _apply_tokens(holder, params)
        self._expand_children(holder, (*stack, name))
        return list(holder)

    def _fill_yields(self, el: _El, content: Callable[[_El], list[_El]]) -> None:
        out: list[_El] = []
        for child in list(el):
            if child.tag == "yield":
                out.extend(self._clone(c) for c in content(child))
            else:
                self._fill_yields(child, content)
                out.append(child)
        _set_children(el, out)

    def _clone(self, el: _El) -> _El:
        self.created += 1
        if self.created > MAX_ELEMENTS:
            raise UnsafeInputError(
                f"{self.where}: macros expand to more than {MAX_ELEMENTS} elements; refused (a macro bomb, "
                "or not a tool written for Galaxy)"
            )
        copy = _El(el.tag, dict(el.attrib))
        copy.origin = el.origin
        copy.text, copy.tail = el.text, el.tail
        copy.extend(self._clone(c) for c in el)
        return copy


def _set_children(el: _El, children: list[_El]) -> None:
    for old in list(el):
        el.remove(old)
    el.extend(children)


def _macro_params(macro: _El, expand: _El, where: str) -> dict[str, str]:
    """``@NAME@`` values an ``<expand>`` passes: ``tokens="a,b"`` are required, ``token_x="d"`` optional."""
    quote = macro.get("token_quote", "@")
    out: dict[str, str] = {}
    for key, value in macro.attrib.items():
        if key == "tokens":
            for name in filter(None, (n.strip() for n in value.split(","))):
                if name not in expand.attrib:
                    file, line = expand.origin
                    raise WorkflowScanError(
                        f"{file}:{line}: <expand macro={macro.get('name')!r}> needs {name}="
                    )
                out[f"{quote}{name.upper()}{quote}"] = expand.attrib[name]
        elif key.startswith("token_") and key != "token_quote":
            name = key[len("token_") :]
            out[f"{quote}{name.upper()}{quote}"] = expand.attrib.get(name, value)
    return out


# -- from requirements to references -------------------------------------------------------------


@dataclass(frozen=True)
class _Package:
    name: str
    version: str | None
    origin: tuple[str, int]


def _references(requirements: list[_El], options: ScanOptions) -> list[ContainerRef]:
    containers: list[_El] = []
    packages: list[_Package] = []
    for req in requirements:
        for el in req:
            if el.tag == "container":
                containers.append(el)
            elif el.tag == "requirement" and el.get("type", "package") == "package":
                version = (el.get("version") or "").strip() or None
                packages.append(_Package((el.text or "").strip(), version, el.origin))
    preferred = "singularity" if options.engine == "singularity" else "docker"
    chosen = [c for c in containers if c.get("type", "docker") == preferred] or containers
    refs = [_container_ref(c) for c in chosen]
    if chosen:
        for p in packages:
            wanted = f"={p.version}" if p.version else ""
            note = "conda package; the tool's <container> is what runs"
            refs.append(_ref(p.origin, f"{p.name}{wanted}", None, "conda", "exact", note))
    elif packages:
        refs.append(_mulled_ref(packages))
    return refs


def _ref(
    origin: tuple[str, int], raw: str, tag: str | None, kind: Kind, confidence: Confidence, note: str | None
) -> ContainerRef:
    file, line = origin
    return ContainerRef(
        file=file, line=line, raw=raw, tag=tag, kind=kind, confidence=confidence, language="galaxy", note=note
    )


def _container_ref(el: _El) -> ContainerRef:
    text = (el.text or "").strip()
    kind = el.get("type", "docker")
    if not text or _LEFT_TOKEN.search(text) or "$" in text:
        note = f"<container type={kind!r}> is empty" if not text else "a token or variable no macro defines"
        return _ref(el.origin, text, None, "docker", "dynamic", note)
    return _ref(el.origin, text, text, classify_tag(text), "exact", None)


def _mulled_ref(packages: list[_Package]) -> ContainerRef:
    raw = ",".join(f"{p.name}={p.version}" if p.version else p.name for p in packages)
    origin = packages[0].origin
    unresolved = [p for p in packages if not p.name or _LEFT_TOKEN.search(f"{p.name}{p.version or ''}")]
    if unresolved:
        return _ref(
            origin, raw, None, "docker", "dynamic", "a package name or version is a token no macro defines"
        )
    pairs = [(p.name, p.version) for p in packages]
    if len(packages) == 1 and not packages[0].version:
        note = "mulled image of an unversioned package: BioContainers tags its images by version; pin one"
        return _ref(origin, raw, None, "docker", "dynamic", note)
    name = mulled_v2_name(pairs)
    if ":" not in name:
        note = f"mulled-v2 repository {name}: no package has a version, so the tag needs a registry lookup"
        return _ref(origin, raw, None, "docker", "dynamic", note)
    note = "mulled-v2 image of the tool's conda packages; the build suffix needs a registry lookup"
    return _ref(origin, raw, biocontainers_image(pairs), "docker", "candidate", note)

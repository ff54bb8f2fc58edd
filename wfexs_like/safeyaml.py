"""YAML from untrusted files, with bounds: the safe loader alone stops code execution, not bombs.

A 560-byte file of nested aliases ("billion laughs") composes into a small
graph that every later walk, ``repr`` or JSON dump expands exponentially.
So the node graph is measured *as if expanded* before anything is
constructed, and refused past ``max_nodes``; the file size is capped before
it is parsed, and nesting depth too. Composing itself stops at ``max_nodes``
nodes or ``max_depth`` levels, and brackets nested deeper than that are
refused before PyYAML scans them (its scanner is quadratic in their depth),
so a large or deep file costs a bounded amount of time and memory to refuse.
Every caller that reads a YAML file it did not write itself (containers
records, CWL documents, configs) comes through here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import UnsafeInputError

MAX_BYTES = 16 << 20
MAX_NODES = 1_000_000
MAX_DEPTH = 200


def read_bounded(path: Path, *, max_bytes: int = MAX_BYTES, what: str = "file") -> str:
    """The text of ``path``, refused (without reading it) when larger than ``max_bytes``."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise UnsafeInputError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if size > max_bytes:
        raise UnsafeInputError(
            f"{what} {path} is {size} bytes, more than the {max_bytes} this tool reads; "
            "it is not a file written for it, or it must be split"
        )
    with open(path, encoding="utf-8", errors="strict") as f:
        text = f.read(max_bytes + 1)
    if len(text.encode("utf-8")) > max_bytes:
        raise UnsafeInputError(f"{what} {path} grew past {max_bytes} bytes while it was read")
    return text


def compose_bounded(
    text: str,
    where: str,
    *,
    loader: type[Any] | None = None,
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> tuple[Any, Any]:
    """(loader, root node) of ``text``, after checking its expanded size and depth.

    The loader is returned so that the caller constructs the document with
    the same instance (``loader.construct_document(root)``) and the same
    constructors; call ``loader.dispose()`` when done.
    """
    import yaml

    if len(text) > max_bytes:
        raise UnsafeInputError(f"{where}: {len(text)} characters, more than the {max_bytes} read here")
    _check_flow_depth(text, where, max_depth)
    try:
        # The reader decodes (and may reject) the first bytes on creation.
        ldr = _counting(loader or yaml.SafeLoader, where, max_nodes, max_depth)(text)
    except yaml.YAMLError as e:
        raise UnsafeInputError(f"{where}: not valid YAML: {e}") from e
    try:
        root = ldr.get_single_node()
    except UnsafeInputError:
        ldr.dispose()
        raise
    except yaml.YAMLError as e:
        ldr.dispose()
        raise UnsafeInputError(f"{where}: not valid YAML: {e}") from e
    except RecursionError as e:
        ldr.dispose()
        raise UnsafeInputError(f"{where}: nested too deeply to read; refused") from e
    if root is not None:
        _check_expanded(root, where, max_nodes, max_depth)
    return ldr, root


_SPECIAL = re.compile(r"""[\[\]{}'"#\n\\]""")


def _check_flow_depth(text: str | bytes, where: str, max_depth: int) -> None:
    """Refuse flow collections (``[``, ``{``) nested deeper than ``max_depth`` before PyYAML scans
    them: its scanner looks ahead through every open one, which makes deep nesting quadratic.

    An over-estimate (block scalars are not told apart), so it can only refuse what nests at
    least that deep in brackets, which no file of ours does.
    """
    chars = text if isinstance(text, str) else text.decode("latin-1")
    if chars.count("[") + chars.count("{") <= max_depth:
        return
    depth = 0
    quote = ""
    comment = False
    escaped_at = -1  # where the character a backslash escapes is, in a double-quoted scalar
    for m in _SPECIAL.finditer(chars):
        ch, at = m.group(), m.start()
        if comment:
            comment = ch != "\n"
        elif quote:
            if at == escaped_at:
                continue
            if ch == "\\" and quote == '"':
                escaped_at = at + 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            comment = at == 0 or chars[at - 1] in " \t\n"
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                raise UnsafeInputError(f"{where}: nested more than {max_depth} levels deep; refused")
        elif ch in "]}":
            depth = max(0, depth - 1)


def _counting(base: type[Any], where: str, max_nodes: int, max_depth: int) -> type[Any]:
    """``base``, stopping as soon as the document holds more than ``max_nodes`` nodes or nests
    deeper than ``max_depth``: a large file is refused after a bounded amount of work and memory,
    not once it is composed in full (the pure-Python composer keeps every node and mark, and its
    scanner is quadratic in the nesting of flow collections: 3000 ``[`` took a minute)."""
    if not hasattr(base, "compose_node"):
        return base  # a C composer: the checks after composition still apply

    class Counting(base):  # type: ignore[misc, valid-type]
        _nodes = 0
        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._nodes += 1
            self._depth += 1
            try:
                if self._nodes > max_nodes:
                    raise UnsafeInputError(
                        f"{where}: more than {max_nodes} YAML nodes, far more than a file of this kind "
                        "holds; refused"
                    )
                if self._depth > max_depth:
                    raise UnsafeInputError(f"{where}: nested more than {max_depth} levels deep; refused")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    Counting.__name__ = Counting.__qualname__ = base.__name__
    return Counting


def load_bounded(text: str, where: str, **limits: int) -> Any:
    """``yaml.safe_load`` with the bounds of ``compose_bounded``."""
    ldr, root = compose_bounded(text, where, **limits)
    try:
        return None if root is None else ldr.construct_document(root)
    finally:
        ldr.dispose()


def _check_expanded(root: Any, where: str, max_nodes: int, max_depth: int) -> None:
    """Count nodes as an expanding consumer would meet them (aliases re-counted), iteratively."""
    import yaml

    # size of each node's expansion, memoised per node object: a DAG of n nodes costs O(n) to
    # measure however large its expansion is.
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node, yaml)
            size = 1 + sum(sizes[id(c)] for c in children)
            depth = 1 + max((depths[id(c)] for c in children), default=0)
            if size > max_nodes:
                raise UnsafeInputError(
                    f"{where}: the document expands to more than {max_nodes} YAML nodes (an alias bomb, "
                    "or a file not meant for this tool); refused before building it"
                )
            if depth > max_depth:
                raise UnsafeInputError(f"{where}: nested more than {max_depth} levels deep; refused")
            sizes[key], depths[key] = size, depth
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise UnsafeInputError(f"{where}: a YAML alias refers to a node that contains it; refused")
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node, yaml):
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: Any, yaml: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []

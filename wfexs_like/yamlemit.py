"""Block-style YAML for plain data (str, int, bool, None, lists, string-keyed dicts), without PyYAML.

Why: writing a records file is the last step of every ``materialize``, and
importing PyYAML costs more than the rest of a warm re-stage's metadata
work. Reading stays with PyYAML's safe loader, within bounds (``safeyaml``).

What keeps the output exact for any YAML 1.1 or 1.2 reader: a string is
written plain only when it starts with a letter or ``/``, holds nothing but
``[A-Za-z0-9_./:@+=-]``, does not end with ``:``, and is none of the words
YAML 1.1 reads as a boolean or null (``yes``, ``off``, ``null``...); a plain
scalar of that shape can be read back only as that string. Every other
string is double-quoted, with JSON's escapes (all of which YAML shares)
plus ``\\x``/``\\u``/``\\U`` escapes for what YAML would not keep as written:
C1 controls, NEL and the Unicode line and paragraph separators (read as
line breaks), the BOM and non-characters.
"""

from __future__ import annotations

import json
import re
from typing import Any

_PLAIN = re.compile(r"[A-Za-z/][A-Za-z0-9_./:@+=-]*")
#: Words a YAML 1.1 reader resolves to a boolean or null (any case the resolvers accept).
_RESERVED = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})
#: Characters a double-quoted scalar must escape beyond what ``json.dumps`` already escapes.
_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")


def _escape(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n <= 0xFF else f"\\u{n:04x}"


def scalar(value: Any) -> str:
    """One scalar as YAML text that reads back as exactly ``value``."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write a {type(value).__name__} as a YAML scalar")
    if _PLAIN.fullmatch(value) and not value.endswith(":") and value.lower() not in _RESERVED:
        return value
    return _UNSAFE.sub(lambda m: _escape(m.group()), json.dumps(value, ensure_ascii=False))


def dump(document: Any) -> str:
    """``document`` in block style, keys in their order, no anchors, no tags, no folding."""
    if not _nested(document):
        return _inline(document) + "\n"
    return "\n".join(_block(document, 0)) + "\n"


def _nested(value: Any) -> bool:
    return isinstance(value, dict | list) and bool(value)


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return scalar(value)


def _block(value: dict[str, Any] | list[Any], indent: int) -> list[str]:
    """The lines of a non-empty mapping or sequence whose entries start at column ``indent``."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cannot write a {type(key).__name__} mapping key")
            head = f"{pad}{scalar(key)}:"
            if _nested(item):
                out.append(head)
                # A sequence under a key starts at the key's column, as PyYAML writes it.
                out.extend(_block(item, indent + 2 if isinstance(item, dict) else indent))
            else:
                out.append(f"{head} {_inline(item)}")
        return out
    for item in value:
        if _nested(item):
            sub = _block(item, indent + 2)
            sub[0] = f"{pad}- {sub[0][indent + 2 :]}"
            out.extend(sub)
        else:
            out.append(f"{pad}- {_inline(item)}")
    return out

"""Text for tables and messages: cells cleaned of control characters, digests cut short.

Apart from ``render`` (progress, logging, rich): a command that only prints a
table, like ``cache ls``, loads this and none of that.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` with control characters shown as escapes: a tag from a workflow file may hold any."""
    if text.isprintable():  # none of them (the usual case: a table has thousands of cells)
        return text
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def short_digest(digest: str | None) -> str:
    """``sha256:`` and 12 hex digits: enough to tell images apart, short enough for a table."""
    if not digest:
        return "-"
    algo, sep, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if sep else digest[:12]

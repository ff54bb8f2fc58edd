"""The ``wfexs-like`` command: argument parsing and presentation over the library.

Every verb group is one module of this package exposing
``register(subparsers, parents)``; it adds its parser(s) and sets
``run=<function(args) -> int>`` as the parser default. Those modules import
only ``argparse`` and ``._common`` at top level and the library inside
``run``, so ``wfexs-like --help`` pays for argparse and nothing else.

Exit codes (``_common``): 0 done, 1 failure, 2 usage, 3 partial
(``--keep-going``), 130 interrupted. No traceback without ``--debug``.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C before ``main_with`` installs its own handler: leave quietly, nothing was done yet."""
    sys.stderr.write("\nwfexs-like: interrupted while starting; nothing was done\n")
    raise SystemExit(130)  # EXIT_INTERRUPTED; ``_common`` is not imported yet


def _started_as_the_command() -> bool:
    """The console script, or ``python -m wfexs_like.cli``: not a program importing this package."""
    if sys.argv and os.path.basename(sys.argv[0]) == "wfexs-like":
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(a == "-m" and b == __name__ for a, b in itertools.pairwise(argv))


# First thing, before the imports below: a Ctrl-C while they run would otherwise be Python's
# KeyboardInterrupt traceback. A program that imports this package keeps its own SIGINT handling.
if _started_as_the_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

from collections.abc import Sequence  # noqa: E402

from ._common import main_with  # noqa: E402

#: Module names (in this package) of the verb groups, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "materialize",
    "deploy",
    "scan",
    "cache",
    "bundle",
    "provenance",
    "push",
    "config",
)


def main(argv: Sequence[str] | None = None) -> int:
    return main_with(COMMAND_MODULES, argv)


if __name__ == "__main__":
    sys.exit(main())

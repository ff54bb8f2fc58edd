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

import sys
from collections.abc import Sequence

from ._common import main_with

#: Module names (in this package) of the verb groups, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = ("materialize", "deploy", "scan", "cache", "bundle", "provenance")


def main(argv: Sequence[str] | None = None) -> int:
    return main_with(COMMAND_MODULES, argv)


if __name__ == "__main__":
    sys.exit(main())

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


#: Each command, and the module of this package that registers it.
COMMANDS: dict[str, str] = {
    "materialize": "materialize",
    "deploy": "deploy",
    "scan": "scan",
    "cache": "cache",
    "export": "bundle",
    "import": "bundle",
    "provenance": "provenance",
    "push": "push",
    "config": "config",
}


#: Each command's line in ``wfexs-like --help``, in its order. The modules register their
#: commands with these, and ``--help`` alone is built from them without importing any module:
#: the whole parser costs about a sixth of that command's time.
SUMMARIES: dict[str, str] = {
    "materialize": "fetch, cache and stage tags; write their provenance records",
    "deploy": "load staged snapshots into the engine (only what it lacks); print a table",
    "scan": "list the container images a workflow needs (CWL, WDL, Galaxy, Nextflow, Snakemake)",
    "cache": "list, size, inspect, verify and clean the cache",
    "export": "write cached images, their SIFs and records to one bundle tar",
    "import": "verify a bundle tar and publish its images into the cache",
    "provenance": "show, convert or export container records (ours, WfExS-backend's, RO-Crate)",
    "push": "copy cached images and SIFs to a site registry",
    "config": "show the settings in effect (configuration file, environment, defaults)",
}


def main(argv: Sequence[str] | None = None) -> int:
    return main_with(COMMAND_MODULES, argv, COMMANDS, SUMMARIES)


def run() -> None:
    """The console script: ``main()``, then :func:`exit_now`."""
    exit_now(main())


def exit_now(code: int) -> None:
    """Leave without tearing the interpreter down, once the work is done and published.

    Why: freeing every module's globals at exit costs 10-25 ms here, which
    is a tenth of a warm re-stage and nothing a user gets anything for. What
    a normal exit does that matters still happens first: the standard
    streams are flushed and the ``atexit`` handlers run (the factory's work
    dir is removed, logging is flushed). When a non-daemon thread is still
    alive, the normal exit runs instead, since it waits for such threads.
    """
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    import atexit
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that left (`| head`), a closed stream
            stream.flush()

    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    run()

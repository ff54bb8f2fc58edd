"""Run the wfexs-like CLI and write its own peak RSS (kB, children excluded) to ``argv[1]`` at exit.

``python bench/selfrss.py RSS_FILE ARGS...`` behaves like ``wfexs-like ARGS...``,
and leaves the way the console script does (``wfexs_like.cli.run``: the
``atexit`` handlers, then an exit without tearing the interpreter down), so
it costs what the installed command costs. Why a wrapper: ``wait4`` reports
the largest RSS of a process *and* the children it waited for, and the
issue's memory target excludes the squashfs compressor a SIF build runs;
only the process itself can ask the kernel for its own peak
(``RUSAGE_SELF``), and ``atexit`` runs on every way out. Start it from a
small parent (the bench runs it under GNU time): Linux keeps the peak RSS
of the image a process exec'd from in ``RUSAGE_SELF``, so a (v)fork straight
from a large process reports that process's peak instead.
"""

import atexit
import resource
import sys

# Run as a script, Python put bench/ first on sys.path; its modules must not shadow anything.
del sys.path[0]
_OUT = sys.argv.pop(1)
sys.argv[0] = "wfexs-like"


def _write_peak() -> None:
    with open(_OUT, "w") as fh:
        fh.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


atexit.register(_write_peak)

from wfexs_like.cli import run  # noqa: E402 - after the hook, so even an import error is measured

run()

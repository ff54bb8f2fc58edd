"""wfexs-like as a user gets it: ``pip install .`` into a venv of its own, measured from there.

Why not the development venv that runs the benchmark: it holds the package
as an editable install, and that install's import hook plus the test
extras' start-up hooks (``.pth`` files) run in every process before ours
does, 15-30 ms per process on the machine this was written on, which no
user who followed the README pays. The WfExS-backend peer is measured the
same way, from a venv of its own (``wfexs_ref``).

The venv (``bench/.work/wl-venv``) gets its dependencies once, from pip's
configured index; every run then reinstalls this checkout into it
(``--no-deps --force-reinstall``), so what is measured is the current code.
When that cannot be done (no index reachable on a first run), the
development install is measured instead and the report says so.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .proc import CommandError, run

VENV = "wl-venv"


@dataclass(frozen=True)
class Installed:
    """The CLI to measure, the interpreter beside it, and how it was installed (for the report)."""

    cli: Path
    python: Path
    how: str


def install(work: Path, repo: Path) -> Installed:
    """Install ``repo`` into ``work/wl-venv`` (creating it, with the ``s3`` extra, on first use)."""
    venv = work / VENV
    python = venv / "bin" / "python"
    fresh = not python.exists()
    try:
        if fresh:
            run([sys.executable, "-m", "venv", str(venv)])
            run([str(python), "-m", "pip", "install", "-q", f"{repo}[s3]"])
        run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(repo)])
    except CommandError as e:
        if fresh:
            shutil.rmtree(venv, ignore_errors=True)
        why = str(e).splitlines()[-1][:200]
        dev = Path(sys.executable).parent
        return Installed(
            dev / "wfexs-like",
            Path(sys.executable),
            f"the development install (`pip install .` into bench/.work/{VENV} failed: {why})",
        )
    how = f"installed by `pip install .` into bench/.work/{VENV}"
    return Installed(venv / "bin" / "wfexs-like", python, how)

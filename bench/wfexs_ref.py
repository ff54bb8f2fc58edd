"""The real WfExS-backend factories, side by side, when they can be installed.

They go into their own venv under ``bench/.work/wfexs-venv`` (never into
ours: their dependencies would change what we measure), from the package
index with the ordinary ``pip``. A full run tries that once when the venv
is missing and remembers why it failed in ``bench/.work/wfexs-install.txt``;
``--quick`` never installs. ``BENCH_WFEXS_PYTHON`` may name an interpreter
that already has ``wfexs_backend`` (e.g. one installed from a source
checkout). When none is usable the scenario says why in the table instead
of showing a number.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from .context import Context, Scenario, Tool
from .proc import CommandError, measure, run

VERSION = "1.0.9"
DRIVER = Path(__file__).resolve().parent / "wfexs_driver.py"


def _venv(work: Path) -> Path:
    return work / "wfexs-venv"


def _usable(python: str) -> bool:
    try:
        run([python, "-c", "import wfexs_backend.container_factories.docker_container"])
    except (CommandError, OSError):
        return False
    return True


def _install(work: Path) -> str | None:
    """Try ``pip install wfexs-backend==VERSION`` into a fresh venv; None when it worked, else why."""
    venv = _venv(work)
    shutil.rmtree(venv, ignore_errors=True)
    try:
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", f"wfexs-backend=={VERSION}"])
    except CommandError as e:
        shutil.rmtree(venv, ignore_errors=True)
        lines = [ln.strip() for ln in e.stderr.splitlines() if ln.strip().startswith("ERROR")]
        return lines[-1] if lines else str(e).splitlines()[-1]
    return None


def interpreter(ctx: Context) -> tuple[str | None, str]:
    """(python with wfexs_backend, "") or (None, why not)."""
    named = os.environ.get("BENCH_WFEXS_PYTHON")
    if named:
        return (named, "") if _usable(named) else (None, f"BENCH_WFEXS_PYTHON={named} cannot import it")
    python = str(_venv(ctx.work) / "bin" / "python")
    if Path(python).exists() and _usable(python):
        return python, ""
    stamp = ctx.work / "wfexs-install.txt"
    if ctx.plan.quick:
        why = stamp.read_text().strip() if stamp.is_file() else "not installed (a full run tries)"
        return None, why
    failure = _install(ctx.work)
    if failure is None and _usable(python):
        stamp.unlink(missing_ok=True)
        return python, ""
    why = f"`pip install wfexs-backend=={VERSION}` failed here: {failure or 'installed but not importable'}"
    stamp.write_text(why + "\n")
    return None, why


def restage_runner(ctx: Context, d: Path, tags: list[str]) -> Callable[[int], None] | None:
    """Warm WfExS's cache with ``tags`` (one online materialize, untimed); return what times run N.

    Run N is WfExS's warm, offline re-stage of ``tags`` into a new dir, whole
    process. The caller interleaves it with its own runs, so both tools meet
    the machine in the same state. None (and the reason recorded) when the
    factory cannot be installed or fails.
    """
    python, why = interpreter(ctx)
    if python is None:
        ctx.skip(Scenario.WFEXS, f"not measured: {why}")
        return None
    cache = d / "wfexs-cache"
    try:
        run([python, str(DRIVER), str(cache), str(d / "wfexs-warm-up"), "online", *tags])
    except CommandError as e:  # a peer that fails is a row that says why, not a benchmark that stops
        last = [ln for ln in e.stderr.splitlines() if ln.strip()][-1:] or [str(e)]
        ctx.skip(Scenario.WFEXS, f"not measured: the WfExS-backend factory failed: {last[0].strip()[:200]}")
        return None

    def timed_run(n: int) -> None:
        m = measure([python, str(DRIVER), str(cache), str(d / f"wfexs-stage-{n}"), "offline", *tags])
        inner = json.loads(m.out.decode().strip().splitlines()[-1])
        ctx.add_measured(Scenario.WFEXS, Tool.WFEXS_WARM, n, m, images=len(tags), call_s=inner["seconds"])

    return timed_run

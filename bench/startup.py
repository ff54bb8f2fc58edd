"""Start-up: what a user waits for before any work, against skopeo (a Go binary) and bare Python.

Three figures, because they answer different questions: ``wfexs-like
--help`` is the whole process a user sees; ``python -c 'import wfexs_like'``
is what every library user pays; and the import measured *inside* a fresh
interpreter is the package's own share, since this machine's interpreter
alone (``python -c pass``: site, the editable install's path hook) already
takes tens of milliseconds that no package can win back. Runs interleave
the commands so a slow moment hits all of them.

It also lists which heavy modules ``--help`` and ``import wfexs_like`` load:
the issue wants docker, requests, yaml, spython, rich and boto3 imported
only when used.
"""

from __future__ import annotations

import json

from .context import Context, Scenario, Tool
from .proc import measure

HEAVY = ("docker", "requests", "yaml", "spython", "rich", "boto3", "urllib3", "filelock")

_IMPORT_ONLY = "import time; t = time.perf_counter(); import wfexs_like; print(time.perf_counter() - t)"
_HEAVY_PROBE = f"""
import contextlib, io, json, sys
with contextlib.redirect_stdout(io.StringIO()):
    import wfexs_like
    after_import = sorted(m for m in {HEAVY!r} if m in sys.modules)
    from wfexs_like.cli import main
    try:
        main(["--help"])
    except SystemExit:
        pass
print(json.dumps({{"import": after_import, "help": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def run(ctx: Context) -> None:
    py = str(ctx.python)
    for run in range(ctx.plan.startup_runs):
        ctx.add_measured(Scenario.STARTUP, Tool.WL_HELP, run, measure([str(ctx.wfexs_like), "--help"]))
        ctx.add_measured(Scenario.STARTUP, Tool.PY_IMPORT, run, measure([py, "-c", "import wfexs_like"]))
        ctx.add_measured(Scenario.STARTUP, Tool.PY_BARE, run, measure([py, "-c", "pass"]))
        ctx.add_measured(Scenario.STARTUP, Tool.SKOPEO_HELP, run, measure(["skopeo", "--help"]))
        m = measure([py, "-c", _IMPORT_ONLY])
        ctx.add(Scenario.STARTUP, Tool.IMPORT_ONLY, run, float(m.out.decode().strip()))
    loaded = json.loads(measure([py, "-c", _HEAVY_PROBE]).out.decode().strip().splitlines()[-1])
    for s in ctx.samples:
        if s.scenario == Scenario.STARTUP and s.tool == Tool.WL_HELP:
            s.extra["heavy_loaded"] = loaded["help"]
        if s.scenario == Scenario.STARTUP and s.tool == Tool.IMPORT_ONLY:
            s.extra["heavy_loaded"] = loaded["import"]

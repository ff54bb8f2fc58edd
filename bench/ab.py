"""Compare commands by running them in turns: ``python -m bench.ab N NAME=CMD NAME=CMD ...``.

Each round runs every command once, in order, so a slow second on a shared
machine lands on all of them rather than on whichever ran then. On the
2-core machine this project measures on, the same Python loop took 195 to
393 ms from one second to the next, and two commands timed one after the
other could differ by more than the change being measured. Prints each
command's wall and CPU time (the child's user + system, from ``wait4``):
median and minimum over the rounds.

``CMD`` is one shell-style string; ``{i}`` in it becomes ``NAME-ROUND``, for
commands that must write somewhere new every time. For example, the same
re-stage by two installs of the package::

    python -m bench.ab 20 \\
      "old=/tmp/old/bin/wfexs-like materialize --offline -q --cache-dir C --stage-dir /tmp/s/{i} T" \\
      "new=bench/.work/wl-venv/bin/wfexs-like materialize --offline -q --cache-dir C --stage-dir /tmp/s/{i} T"
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence


def rounds(n: int, commands: dict[str, list[str]]) -> dict[str, tuple[list[float], list[float]]]:
    """``n`` rounds of every command; per command, (wall seconds, CPU seconds) of each run."""
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in commands}
    for i in range(n):
        for name, cmd in commands.items():
            argv = [a.replace("{i}", f"{name}-{i}") for a in cmd]
            t0 = time.perf_counter()
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except OSError as e:
                raise SystemExit(f"ab: {name}: cannot run {argv[0]!r}: {e.strerror or e}") from None
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                raise SystemExit(f"ab: {name} exited {code}: {shlex.join(argv)}")
            out[name][0].append(wall)
            out[name][1].append(usage.ru_utime + usage.ru_stime)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or not args[0].isdigit() or any("=" not in a for a in args[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    commands = {name: shlex.split(cmd) for name, _, cmd in (a.partition("=") for a in args[1:])}
    for name, (wall, cpu) in rounds(int(args[0]), commands).items():
        print(
            f"{name:12s} wall median {statistics.median(wall) * 1000:8.1f} ms  min {min(wall) * 1000:8.1f} ms"
            f"  | cpu median {statistics.median(cpu) * 1000:8.1f} ms  min {min(cpu) * 1000:8.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

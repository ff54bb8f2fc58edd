"""Copy the latest full run (``bench/results.md``) into the README's benchmark block.

``python -m bench.readme`` rewrites what lies between ``<!-- bench-table:start -->``
and ``<!-- bench-table:end -->``: the run's machine and caveats, the targets
table and the plot, so the README always shows one run of the current code,
never figures typed by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
PLOT = "![Each target's figure and the peak RSS of every scenario](docs/bench.png)"
TAIL = (
    "Every measurement, with peers side by side (skopeo to `oci:` and\n"
    "`docker-archive:`, the reference path, `mksquashfs`, `sha256sum`,\n"
    "`docker load`, `podman load`) and its peak RSS, is in `bench/results.md`."
)


def block(results: str) -> str:
    """The README block for one ``results.md``: its header bullets, its targets table, the plot."""
    lines = results.splitlines()
    bullets = [ln for ln in lines if ln.startswith("- **")]
    try:
        first = lines.index("## Targets (issue 12)") + 1
    except ValueError:
        raise SystemExit("bench/results.md has no targets table: run bench/run.py first") from None
    table = []
    for ln in lines[first:]:
        if ln.startswith("|"):
            table.append(ln)
        elif table:
            break
    intro = "**Targets** the project holds itself to, each with its figure from this run:"
    return "\n\n".join(["\n".join(bullets), intro, "\n".join(table), PLOT, TAIL])


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        raise SystemExit(f"README.md lacks the {START} ... {END} markers")
    new = f"{head}{START}\n{block((ROOT / 'bench' / 'results.md').read_text())}\n{END}{tail}"
    readme.write_text(new)
    print("README.md: benchmark block copied from bench/results.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

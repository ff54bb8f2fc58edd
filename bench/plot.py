"""The PNG in ``docs/``: every target as figure / threshold, and every row's peak RSS.

matplotlib is an optional extra (``pip install -e '.[bench]'``), imported
only here and only when a run ends, with the Agg backend (no display). When
it is missing the run still writes its tables and says how to get the plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .report import Summary
from .targets import MEMORY_LIMIT_MB, Outcome, is_ours

INSTALL_HINT = "pip install -e '.[bench]'  (matplotlib)"


def _short(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def write(path: Path, outcomes: Sequence[Outcome], summaries: Sequence[Summary], title: str) -> str | None:
    """Draw the plot into ``path``; None when done, else why not (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no plot: matplotlib is not installed ({INSTALL_HINT})"

    measured = [o for o in outcomes if o.relative is not None]
    rss = [s for s in summaries if s.peak_rss_kb is not None]
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(13, 0.3 * (len(measured) + len(rss)) + 3),
        height_ratios=[len(measured) + 1, len(rss) + 1],
    )
    labels = [f"{o.area}: {o.target}".replace("`", "") for o in measured]
    values = [min(o.relative or 0, 10.0) for o in measured]
    colors = ["#2e7d32" if o.met else "#c62828" for o in measured]
    top.barh(range(len(measured)), values, color=colors)
    top.axvline(1.0, color="black", linewidth=1)
    top.set_yticks(range(len(measured)), labels, fontsize=8)
    top.invert_yaxis()
    top.set_xscale("log")
    low, high = min([*values, 1.0]) / 1.5, max([*values, 1.0]) * 1.5
    ticks = [t for t in (0.1, 0.25, 0.5, 1, 2, 4, 10) if low <= t <= high]
    top.set_xticks(ticks, [f"{t:g}×" for t in ticks])
    top.minorticks_off()
    top.set_xlabel("measured / target (left of the line: met; bars capped at 10)")
    top.set_title(title, fontsize=9, loc="left")

    names = [_short(f"{s.tool} · {s.scenario}") for s in rss]
    mb = [(s.peak_rss_kb or 0) / 1000 for s in rss]
    bottom.barh(range(len(rss)), mb, color=["#1565c0" if is_ours(s.tool) else "#9e9e9e" for s in rss])
    bottom.axvline(MEMORY_LIMIT_MB, color="black", linewidth=1)
    bottom.set_yticks(range(len(rss)), names, fontsize=7)
    bottom.invert_yaxis()
    bottom.set_xlabel(
        f"peak RSS, MB (blue: wfexs-like, own process; grey: peers; line: {MEMORY_LIMIT_MB} MB)"
    )
    top.margins(y=0.02)
    bottom.margins(y=0.01)
    fig.subplots_adjust(left=0.4, right=0.98, top=0.97, bottom=0.04, hspace=0.12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None

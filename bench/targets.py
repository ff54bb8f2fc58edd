"""Issue 12's targets, each read back from the run's medians and marked met or not met.

A target compares one figure with one threshold; ``relative`` is the figure
over the threshold, inverted for "at least" targets, so below 1 always
means met (the plot draws exactly that). A target whose rows did not run
says why instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .context import Scenario, Tool

if TYPE_CHECKING:
    from .report import Summary

MEMORY_LIMIT_MB = 100


@dataclass(frozen=True)
class Outcome:
    area: str
    target: str
    figure: str
    #: True met, False not met, None not measured (``figure`` says why)
    met: bool | None
    #: figure / threshold, oriented so that ≤ 1 is met (None when not measured)
    relative: float | None = None

    @property
    def status_text(self) -> str:
        return {True: "✅ met", False: "❌ not met", None: "— not measured"}[self.met]


class _Figures:
    def __init__(self, summaries: Sequence[Summary]) -> None:
        self.by = {(s.scenario, s.tool): s for s in summaries}

    def median(self, scenario: str, tool: str) -> float | None:
        s = self.by.get((scenario, tool))
        return s.median_s if s else None


def _ms(s: float) -> str:
    return f"{s * 1000:.1f} ms"


def _s(s: float) -> str:
    return f"{s:.2f} s"


def _at_most(
    area: str,
    target: str,
    value: float | None,
    limit: float,
    show: Callable[[float], str],
    why: str = "did not run",
) -> Outcome:
    if value is None:
        return Outcome(area, target, why, None)
    return Outcome(area, target, show(value), value <= limit, value / limit)


def _at_least(
    area: str,
    target: str,
    value: float | None,
    limit: float,
    show: Callable[[float], str],
    why: str = "did not run",
) -> Outcome:
    if value is None:
        return Outcome(area, target, why, None)
    return Outcome(area, target, show(value), value >= limit, limit / value if value else float("inf"))


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def evaluate(summaries: Sequence[Summary], skipped: dict[str, str]) -> list[Outcome]:
    f = _Figures(summaries)
    out: list[Outcome] = []
    m = f.median

    out.append(
        _at_most("start-up", "`wfexs-like --help` ≤ 0.1 s", m(Scenario.STARTUP, Tool.WL_HELP), 0.1, _s)
    )
    imp, whole = m(Scenario.STARTUP, Tool.IMPORT_ONLY), m(Scenario.STARTUP, Tool.PY_IMPORT)
    o = _at_most("start-up", "`import wfexs_like` ≤ 50 ms", imp, 0.05, _ms)
    if whole is not None and o.met is not None:
        bare = m(Scenario.STARTUP, Tool.PY_BARE) or 0.0
        o = Outcome(
            o.area,
            o.target,
            f"{o.figure} (whole process {_ms(whole)}; bare interpreter {_ms(bare)})",
            o.met,
            o.relative,
        )
    out.append(o)
    help_row = f.by.get((Scenario.STARTUP, Tool.WL_HELP))
    import_row = f.by.get((Scenario.STARTUP, Tool.IMPORT_ONLY))
    if help_row and import_row and "heavy_loaded" in help_row.extra:
        loaded = sorted({*help_row.extra["heavy_loaded"], *import_row.extra.get("heavy_loaded", [])})
        out.append(
            Outcome(
                "start-up",
                "docker, requests, yaml, spython, rich, boto3 imported only when used",
                "loaded by --help or import: " + (", ".join(loaded) or "none"),
                not loaded,
            )
        )

    wl, sk, ref = (
        m(Scenario.COLD, Tool.WL),
        m(Scenario.COLD, Tool.SKOPEO_OCI),
        m(Scenario.COLD, Tool.REF_FETCH),
    )
    out.append(
        _at_most(
            "cold materialize",
            "≤ 0.8× `skopeo copy → oci:` (core image)",
            _ratio(wl, sk),
            0.8,
            lambda r: f"{r:.2f}× ({_s(wl or 0)} vs {_s(sk or 0)})",
        )
    )
    out.append(
        _at_least(
            "cold materialize",
            "≥ 20× faster than the reference path",
            _ratio(ref, wl),
            20,
            lambda r: f"{r:.1f}× ({_s(wl or 0)} vs {_s(ref or 0)})",
        )
    )

    small, large = m(Scenario.RESTAGE10, Tool.WL_OFFLINE_SMALL), m(Scenario.RESTAGE10, Tool.WL_OFFLINE_LARGE)
    worst = max(small, large) if small is not None and large is not None else None
    out.append(
        _at_most(
            "warm re-stage",
            "≤ 0.25 s per process for 10 images",
            worst,
            0.25,
            lambda v: f"small {_s(small or 0)}, large {_s(large or 0)}",
        )
    )
    wfexs = m(Scenario.WFEXS, Tool.WFEXS_WARM)
    out.append(
        _at_most(
            "warm re-stage",
            "≤ 0.6× the real WfExS factories, side by side",
            _ratio(small, wfexs),
            0.6,
            lambda r: f"{r:.2f}× ({_s(small or 0)} vs {_s(wfexs or 0)})",
            why=skipped.get(Scenario.WFEXS, "did not run"),
        )
    )
    a_small, a_large = m(Scenario.RESTAGE_API, Tool.API_SMALL), m(Scenario.RESTAGE_API, Tool.API_LARGE)
    a_worst = max(a_small, a_large) if a_small is not None and a_large is not None else None
    out.append(
        _at_most(
            "warm re-stage",
            "≤ 2 ms per image through the API",
            a_worst,
            0.002,
            lambda v: f"small {_ms(a_small or 0)}, large {_ms(a_large or 0)} per image",
        )
    )
    ratios = [r for r in (_ratio(large, small), _ratio(a_large, a_small)) if r is not None]
    out.append(
        _at_most(
            "warm re-stage",
            "the same whatever the image size (large / small ≤ 1.5)",
            max(ratios) if ratios else None,
            1.5,
            lambda v: (
                "process "
                + (f"{_ratio(large, small):.2f}×" if small else "—")
                + ", API "
                + (f"{_ratio(a_large, a_small):.2f}×" if a_small else "—")
            ),
        )
    )

    build, floor = m(Scenario.SIF, Tool.WL_SIF_BUILD), m(Scenario.SIF, Tool.MKSQUASHFS_FLOOR)
    out.append(
        _at_most(
            "SIF build",
            "≤ 1.2× the `mksquashfs` floor",
            _ratio(build, floor),
            1.2,
            lambda r: f"{r:.2f}× ({_s(build or 0)} vs {_s(floor or 0)})",
        )
    )

    j1, j8 = m(Scenario.PARALLEL, Tool.WL_JOBS1), m(Scenario.PARALLEL, Tool.WL_JOBS8)
    out.append(
        _at_least(
            "parallelism",
            "50 small images: `--jobs 8` ≥ 4× faster than `--jobs 1`",
            _ratio(j1, j8),
            4,
            lambda r: f"{r:.2f}× ({_s(j8 or 0)} vs {_s(j1 or 0)})",
        )
    )

    ls_row = f.by.get((Scenario.BIG_CACHE, Tool.WL_CACHE_LS))
    size = f"{ls_row.extra['images']} images, {ls_row.extra['blobs']} blobs" if ls_row else "large cache"
    out.append(
        _at_most(
            "large cache", f"`cache ls` ≤ 0.3 s ({size})", m(Scenario.BIG_CACHE, Tool.WL_CACHE_LS), 0.3, _s
        )
    )
    out.append(
        _at_most(
            "large cache",
            "`cache prune --dry-run` ≤ 1 s",
            m(Scenario.BIG_CACHE, Tool.WL_CACHE_PRUNE),
            1.0,
            _s,
        )
    )
    ours, sha = m(Scenario.VERIFY, Tool.WL_VERIFY_FULL), m(Scenario.VERIFY, Tool.SHA256SUM)
    out.append(
        _at_least(
            "large cache",
            "`cache verify --full` ≥ 80 % of `sha256sum`'s throughput",
            _ratio(sha, ours),
            0.8,
            lambda r: f"{r * 100:.0f} %",
        )
    )

    ours_rows = [s for s in summaries if is_ours(s.tool) and s.peak_rss_kb is not None]
    if ours_rows:
        worst_row = max(ours_rows, key=lambda s: s.peak_rss_kb or 0)
        peak = (worst_row.peak_rss_kb or 0) / 1000
        out.append(
            Outcome(
                "memory",
                f"peak RSS ≤ {MEMORY_LIMIT_MB} MB in every scenario (compressor excluded)",
                f"largest {peak:.0f} MB: {worst_row.scenario}, {worst_row.tool}",
                peak <= MEMORY_LIMIT_MB,
                peak / MEMORY_LIMIT_MB,
            )
        )

    a, b = f.by.get((Scenario.S3, Tool.WL_NODE_A)), f.by.get((Scenario.S3, Tool.WL_NODE_B))
    if a and b:
        gets = b.extra.get("blob_gets")
        out.append(
            Outcome(
                "S3 tier",
                "node B from SeaweedFS beside node A from the registry (met: B makes 0 registry blob GETs)",
                f"B {_s(b.median_s)} ({gets} registry blob GETs) vs A {_s(a.median_s)}",
                gets == 0,
            )
        )
    else:
        out.append(
            Outcome(
                "S3 tier",
                "node B from SeaweedFS beside node A from the registry (met: B makes 0 registry blob GETs)",
                skipped.get(Scenario.S3, "did not run"),
                None,
            )
        )
    return out


def is_ours(tool: str) -> bool:
    """Rows that run our code (the memory target covers exactly these)."""
    return tool.startswith(("wfexs-like", "materializeContainers", "node ")) or "import wfexs_like" in tool

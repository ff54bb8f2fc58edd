"""Turn samples into the Markdown tables, ``results.md`` and ``results.json``.

Medians, not means: with a few runs on a shared 2-core machine one hiccup
(another process, the daemon's garbage collector) would drag a mean; the
min–max range is printed beside it so the noise stays visible. Each
scenario has one peer row (marked "peer"); a row's ratio is its median
over the peer's, so below 1 is faster. Peak RSS is the largest over the
runs: the process's own for wfexs-like (children such as the squashfs
compressor excluded, as the issue asks), the whole process tree otherwise.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .context import Sample, Scenario, Tool
from .targets import Outcome

MB = 1_000_000


@dataclass(frozen=True)
class Row:
    scenario: str
    tool: str
    peer: bool = False
    note: str = ""


ROWS = (
    Row(Scenario.STARTUP, Tool.SKOPEO_HELP, True, "a Go binary"),
    Row(Scenario.STARTUP, Tool.WL_HELP),
    Row(Scenario.STARTUP, Tool.PY_BARE, note="this machine's interpreter start-up, no package"),
    Row(Scenario.STARTUP, Tool.PY_IMPORT),
    Row(Scenario.STARTUP, Tool.IMPORT_ONLY, note="timed inside a fresh interpreter"),
    Row(Scenario.COLD, Tool.REF_FETCH, True, "one .tar.gz per image"),
    Row(Scenario.COLD, Tool.SKOPEO_OCI, note="no fingerprint, no cache"),
    Row(Scenario.COLD, Tool.SKOPEO_ARCHIVE, note="uncompressed; no fingerprint, no cache"),
    Row(Scenario.COLD, Tool.WL, note="empty cache; OCI layout hard-linked into the cache"),
    Row(Scenario.SECOND, Tool.REF_FETCH, True, "base already in Docker; archive holds the base again"),
    Row(Scenario.SECOND, Tool.SKOPEO_OCI, note="into the base's layout"),
    Row(Scenario.SECOND, Tool.WL, note="base already in the cache"),
    Row(Scenario.RESTAGE, Tool.REF_RESTAGE, True, "re-hashes the whole archive"),
    Row(Scenario.RESTAGE, Tool.WL, note="registry reachable"),
    Row(Scenario.RESTAGE, Tool.WL_OFFLINE),
    Row(Scenario.BIG, Tool.SKOPEO_OCI, True),
    Row(Scenario.BIG, Tool.WL, note="empty cache"),
    Row(Scenario.RESTAGE10, Tool.WL_OFFLINE_SMALL, True, "one process, 10 tags, new stage dir"),
    Row(Scenario.RESTAGE10, Tool.WL_OFFLINE_LARGE, note="ratio = large / small"),
    Row(Scenario.RESTAGE_API, Tool.API_SMALL, True, "median call / 10 images, after a first call"),
    Row(Scenario.RESTAGE_API, Tool.API_LARGE, note="ratio = large / small"),
    Row(Scenario.WFEXS, Tool.WFEXS_WARM, True, "10 small images, offline, whole process"),
    Row(Scenario.SIF, Tool.MKSQUASHFS_FLOOR, True, "rootfs already merged on disk"),
    Row(Scenario.SIF, Tool.WL_SIF_BUILD, note="from the cached layers, no download"),
    Row(Scenario.SIF, Tool.WL_SIF_COLD, note="empty cache: download included"),
    Row(Scenario.PARALLEL, Tool.WL_JOBS1, True, "empty cache; registry behind a proxy adding latency"),
    Row(Scenario.PARALLEL, Tool.WL_JOBS8),
    Row(Scenario.BIG_CACHE, Tool.WL_CACHE_LS, note="table output"),
    Row(Scenario.BIG_CACHE, Tool.WL_CACHE_PRUNE),
    Row(Scenario.BIG_CACHE, Tool.WL_CACHE_VERIFY),
    Row(Scenario.VERIFY, Tool.SHA256SUM, True, "one process, one core"),
    Row(Scenario.VERIFY, Tool.WL_VERIFY_FULL),
    Row(Scenario.DEPLOY, Tool.REF_LOAD, True, "image absent (docker rmi, not timed)"),
    Row(Scenario.DEPLOY, Tool.WL_DEPLOY, note="verifies the snapshot, then loads"),
    Row(Scenario.DEPLOY, Tool.WL_DEPLOY_PRESENT, note="no-op: Docker already has the image id"),
    Row(Scenario.DEPLOY_PODMAN, Tool.REF_PODMAN_LOAD, True, "image absent; Podman 4.3 reads no .tar.gz"),
    Row(Scenario.DEPLOY_PODMAN, Tool.WL_DEPLOY, note="Podman reads the OCI layout as it is"),
    Row(Scenario.DEPLOY_PODMAN, Tool.WL_DEPLOY_PRESENT),
    Row(Scenario.S3, Tool.WL_NODE_A, True),
    Row(Scenario.S3, Tool.WL_NODE_B),
)


@dataclass
class Summary:
    scenario: str
    tool: str
    runs: int
    median_s: float
    min_s: float
    max_s: float
    ratio: float | None
    #: the largest peak RSS over the runs, kB: the process's own where known, else the tree's
    peak_rss_kb: int | None
    tree_rss_kb: int | None
    notes: str
    extra: dict[str, Any]


def seconds(s: float) -> str:
    """Adaptive units: a 1.2 ms API call and a 21 s SIF build in one column."""
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 0.1:
        return f"{s:.2f} s"
    return f"{s * 1000:.1f} ms"


def _mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


def _median(extras: list[dict[str, Any]], key: str) -> float:
    return statistics.median(e[key] for e in extras)


def _steps(extras: list[dict[str, Any]]) -> str:
    names = extras[0]["steps"]
    return " + ".join(f"{n} {statistics.median(e['steps'][n] for e in extras):.2f}" for n in names)


def _describe(extras: list[dict[str, Any]], ref_extras: list[dict[str, Any]] | None) -> list[str]:
    """Human notes from a row's extras (medians across runs); bytes vs the peer where both have them."""
    keys = extras[0].keys()
    parts = [_steps(extras)] if "steps" in keys else []
    if "artifact" in keys:
        parts.append(f"artifact {_mb(_median(extras, 'artifact'))}")
    if "downloaded" in keys:
        parts.append(f"downloaded {_mb(_median(extras, 'downloaded'))}")
    if "meta_downloaded" in keys:
        parts.append(f"(its _meta.json says {_mb(_median(extras, 'meta_downloaded'))})")
    if "stored" in keys:
        stored = _median(extras, "stored")
        text = f"**stored, both images: {_mb(stored)}**"
        if ref_extras and "stored" in ref_extras[0]:
            text += f" = {stored / _median(ref_extras, 'stored'):.2f}× reference"
        parts.append(text)
    if "staged_extra" in keys:
        parts.append(f"staged copies add {_mb(_median(extras, 'staged_extra'))} (hard links)")
    if "blob_gets" in keys:
        parts.append(f"registry blob GETs {max(e['blob_gets'] for e in extras)}")
    if "requests" in keys:
        parts.append(f"requests {max(e['requests'] for e in extras)}")
    if "latency_ms" in keys:
        parts.append(f"{extras[0]['latency_ms']} ms added per request")
    if "first_call_s" in keys:
        parts.append(f"first call {seconds(_median(extras, 'first_call_s'))} (imports, first cache look)")
    if "call_s" in keys:
        parts.append(f"its call alone {seconds(_median(extras, 'call_s'))}")
    if "throughput" in keys:
        parts.append(f"{_median(extras, 'throughput') / MB:.0f} MB/s over {_mb(extras[0]['bytes'])}")
    if "blobs" in keys and "entries" in keys:
        parts.append(
            f"{extras[0]['images']} images, {extras[0]['blobs']} blobs, {extras[0]['entries']} entries"
        )
    if extras[0].get("selected") is not None:
        parts.append(f"selects {extras[0]['selected']} entries")
    if "heavy_loaded" in keys:
        loaded = extras[0]["heavy_loaded"]
        parts.append("heavy modules loaded: " + (", ".join(loaded) if loaded else "none"))
    if extras[0].get("served_by"):
        parts.append(f"served by {extras[0]['served_by']}")
    if "fingerprint" in keys and len(extras) > 1:
        distinct = len({e["fingerprint"] for e in extras})
        parts.append(
            "same fingerprint every run"
            if distinct == 1
            else f"{distinct} fingerprints in {len(extras)} runs"
        )
    return parts


def _rss(extras: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    own = [e["own_rss_kb"] for e in extras if "own_rss_kb" in e]
    tree = [e["rss_kb"] for e in extras if "rss_kb" in e]
    peak_tree = max(tree) if tree else None
    return (max(own) if own else peak_tree), peak_tree


def summarize(samples: list[Sample]) -> list[Summary]:
    """One summary per row that has samples, in table order."""
    by_key: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        by_key.setdefault((s.scenario, s.tool), []).append(s)
    peers = {r.scenario: by_key.get((r.scenario, r.tool)) for r in ROWS if r.peer}
    out = []
    for row in ROWS:
        got = by_key.get((row.scenario, row.tool))
        if not got:
            continue
        secs = [s.seconds for s in got]
        peer = peers.get(row.scenario)
        median = statistics.median(secs)
        ratio = median / statistics.median(s.seconds for s in peer) if peer else None
        extras = [s.extra for s in got]
        notes = _describe(extras, [s.extra for s in peer] if peer and not row.peer else None)
        if len(secs) > 1:
            notes.insert(0, f"range {seconds(min(secs))}–{seconds(max(secs))}")
        if row.note:
            notes.insert(0, row.note)
        own, tree = _rss(extras)
        if own is not None and tree is not None and tree > own * 1.1:
            notes.append(f"with children {tree / 1000:.0f} MB")
        out.append(
            Summary(
                row.scenario,
                row.tool,
                len(got),
                median,
                min(secs),
                max(secs),
                ratio,
                own,
                tree,
                "; ".join(notes),
                extras[0],
            )
        )
    return out


def _ratio(summary: Summary, peer: bool) -> str:
    if summary.ratio is None:
        return "—"
    return "peer" if peer else f"{summary.ratio:.2f}×"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(summaries: list[Summary]) -> str:
    """scenario | tool | median | vs peer | peak RSS | notes."""
    peers = {(r.scenario, r.tool) for r in ROWS if r.peer}
    lines = [
        "| scenario | tool | median | vs peer | peak RSS | notes |",
        "|---|---|---:|---:|---:|---|",
    ]
    previous = None
    for s in summaries:
        scenario = s.scenario if s.scenario != previous else ""
        previous = s.scenario
        rss = f"{s.peak_rss_kb / 1000:.0f} MB" if s.peak_rss_kb is not None else "—"
        cells = [
            scenario,
            s.tool,
            seconds(s.median_s),
            _ratio(s, (s.scenario, s.tool) in peers),
            rss,
            s.notes,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def targets_table(outcomes: list[Outcome]) -> str:
    """area | target | measured | status."""
    lines = ["| area | target | measured | status |", "|---|---|---|---|"]
    for o in outcomes:
        lines.append("| " + " | ".join(_cell(c) for c in (o.area, o.target, o.figure, o.status_text)) + " |")
    return "\n".join(lines) + "\n"


def header(meta: dict[str, Any]) -> str:
    """What a reader needs to judge the numbers: machine, versions, images, date, caveats."""
    img = meta["image"]
    m = meta["machine"]
    lines = [
        "# wfexs-like benchmark results",
        "",
        f"- **Date**: {meta['date']}; command `{meta['command']}`; wall time {meta['total_s']:.0f} s "
        f"(setup {meta['setup_s']:.0f} s of it; the images are cached in `bench/.work/` after the first run)",
        f"- **Machine**: {m['cpu']}, {m['cores']} cores, {m['ram_gb']:.0f} GB RAM, {m['kernel']}; "
        f"1-minute load average {m['load_start']:.1f} at the start, {m['load_end']:.1f} at the end "
        "(other work on the machine slows every tool; compare ratios within the run)",
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- **Core image** ({img['kind']}): {img['description']}; "
        f"{_mb(img['base_uncompressed'])} uncompressed, {_mb(img['base_compressed'])} compressed, "
        f"{img['base_layers']} layer(s); the second image is the base plus one small layer",
        f"- **Other images**: a big image of random layers ({meta['plan']['big_mb']} MB) and 10 images "
        "of its layers plus one unique small layer each (the large re-stage); "
        f"{meta['plan']['small_images']} small images (busybox + a unique 64 kB layer); a generated cache "
        f"of {meta['plan']['cache_images']} images × {meta['plan']['blobs_per_image']} blobs, and one of "
        f"{meta['plan']['verify_mb']} MB in bigger blobs for `verify --full`",
        f"- **Runs**: {meta['plan']['runs']} per core scenario (start-up {meta['plan']['startup_runs']}, "
        f"big image {meta['plan']['big_runs']}, re-stage {meta['plan']['restage_runs']}, "
        f"API re-stage {meta['plan'].get('api_runs', meta['plan']['restage_runs'])} processes × "
        f"{meta['plan']['api_reps']} calls, `cache` commands {meta['plan']['cache_runs']}, "
        f"SIF build {meta['plan'].get('sif_runs', meta['plan']['runs'])}); median shown, "
        "range in the notes. Times are wall time of whole commands (start-up included) unless the row says.",
        "- **Caveats**: warm page cache (nothing is dropped between runs: that needs root-level "
        "`drop_caches` and would disturb other users of the machine); the registry is on loopback, so "
        "network time is ~0 and what differs is client work, except in the parallel scenario, where a "
        f"proxy adds {meta['plan']['latency_ms']} ms to every request to model a real registry; "
        "the Docker daemon is shared; wfexs-like is measured "
        f"{meta.get('installed', 'from the development install')}, "
        "and `PYTHONDONTWRITEBYTECODE` is cleared for every measured process.",
    ]
    if meta.get("fallback"):
        lines.append(f"- **Fallback**: {meta['fallback']}")
    return "\n".join(lines) + "\n"


def markdown(meta: dict[str, Any], summaries: list[Summary], outcomes: list[Outcome], plot: str) -> str:
    parts = [
        header(meta),
        "## Targets (issue 12)\n",
        targets_table(outcomes),
        "## Every measurement\n",
        table(summaries),
    ]
    if meta.get("skipped"):
        parts.append(
            "Not measured in this run:\n\n" + "".join(f"- **{k}**: {v}\n" for k, v in meta["skipped"].items())
        )
    parts.append(plot + "\n")
    return "\n".join(parts)


def write(
    out_dir: Path,
    stem: str,
    meta: dict[str, Any],
    samples: list[Sample],
    summaries: list[Summary],
    outcomes: list[Outcome],
    plot: str,
) -> str:
    """Write ``<stem>.md`` and ``<stem>.json``; return the Markdown."""
    text = markdown(meta, summaries, outcomes, plot)
    (out_dir / f"{stem}.md").write_text(text)
    raw = {
        "meta": meta,
        "targets": [asdict(o) for o in outcomes],
        "summary": [asdict(s) for s in summaries],
        "samples": [asdict(s) for s in samples],
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(raw, indent=2) + "\n")
    return text

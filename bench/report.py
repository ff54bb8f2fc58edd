"""Turn samples into the Markdown table, ``results.md`` and ``results.json``.

Medians, not means: with three runs on a shared 2-core machine one hiccup
(another process, the daemon's garbage collector) would drag a mean; the
min–max range is printed beside it so the noise stays visible. Ratios are
tool / reference within the same scenario, so below 1 is faster.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .scenarios import Sample, Scenario, Tool

MB = 1_000_000


@dataclass(frozen=True)
class Row:
    scenario: str
    tool: str
    reference: bool = False
    note: str = ""


ROWS = (
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
    Row(Scenario.DEPLOY, Tool.REF_LOAD, True, "image absent (docker rmi, not timed)"),
    Row(Scenario.DEPLOY, Tool.WL_DEPLOY, note="verifies the snapshot, then loads"),
    Row(Scenario.DEPLOY, Tool.WL_DEPLOY_PRESENT, note="no-op: Docker already has the image id"),
    Row(Scenario.DEPLOY_PODMAN, Tool.REF_PODMAN_LOAD, True, "image absent; Podman 4.3 reads no .tar.gz"),
    Row(Scenario.DEPLOY_PODMAN, Tool.WL_DEPLOY, note="Podman reads the OCI layout as it is"),
    Row(Scenario.DEPLOY_PODMAN, Tool.WL_DEPLOY_PRESENT),
    Row(Scenario.SIF, Tool.WL_SIF, note="no peer: Debian 12 has no apptainer"),
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
    notes: str


def _mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


def _median(extras: list[dict[str, Any]], key: str) -> float:
    return statistics.median(e[key] for e in extras)


def _steps(extras: list[dict[str, Any]]) -> str:
    names = extras[0]["steps"]
    return " + ".join(f"{n} {statistics.median(e['steps'][n] for e in extras):.2f}" for n in names)


def _describe(extras: list[dict[str, Any]], ref_extras: list[dict[str, Any]] | None) -> list[str]:
    """Human notes from a row's extras (medians across runs); bytes vs the reference where both have them."""
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
        parts.append(
            f"blob GETs {max(e['blob_gets'] for e in extras)}, requests {max(e['requests'] for e in extras)}"
        )
    if "fingerprint" in keys and len(extras) > 1:
        distinct = len({e["fingerprint"] for e in extras})
        parts.append(
            "same fingerprint every run"
            if distinct == 1
            else f"{distinct} fingerprints in {len(extras)} runs"
        )
    return parts


def summarize(samples: list[Sample]) -> list[Summary]:
    """One summary per row that has samples, in table order."""
    by_key: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        by_key.setdefault((s.scenario, s.tool), []).append(s)
    refs = {r.scenario: by_key.get((r.scenario, r.tool)) for r in ROWS if r.reference}
    out = []
    for row in ROWS:
        got = by_key.get((row.scenario, row.tool))
        if not got:
            continue
        seconds = [s.seconds for s in got]
        ref = refs.get(row.scenario)
        median = statistics.median(seconds)
        ratio = median / statistics.median(s.seconds for s in ref) if ref else None
        notes = _describe(
            [s.extra for s in got], [s.extra for s in ref] if ref and not row.reference else None
        )
        if len(seconds) > 1:
            notes.insert(0, f"range {min(seconds):.2f}–{max(seconds):.2f}")
        if row.note:
            notes.insert(0, row.note)
        out.append(
            Summary(
                row.scenario, row.tool, len(got), median, min(seconds), max(seconds), ratio, "; ".join(notes)
            )
        )
    return out


def _ratio(summary: Summary, reference: bool) -> str:
    if summary.ratio is None:
        return "—"
    return "1.00 (ref)" if reference else f"{summary.ratio:.2f}×"


def table(summaries: list[Summary]) -> str:
    """The Markdown table: scenario | tool | median s | ratio vs reference | notes / bytes."""
    reference = {(r.scenario, r.tool) for r in ROWS if r.reference}
    lines = [
        "| scenario | tool | median s | ratio vs reference | notes / bytes |",
        "|---|---|---:|---:|---|",
    ]
    previous = None
    for s in summaries:
        scenario = s.scenario if s.scenario != previous else ""
        previous = s.scenario
        is_ref = (s.scenario, s.tool) in reference
        cells = [scenario, s.tool, f"{s.median_s:.2f}", _ratio(s, is_ref), s.notes]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def header(meta: dict[str, Any]) -> str:
    """What a reader needs to judge the numbers: machine, versions, image, date, caveats."""
    img = meta["image"]
    lines = [
        "# wfexs-like benchmark results",
        "",
        f"- **Date**: {meta['date']}; command `{meta['command']}`; total wall time {meta['total_s']:.0f} s "
        f"(of which setup {meta['setup_s']:.0f} s; it is cached in `bench/.work/` after the first run)",
        f"- **Machine**: {meta['nproc']} CPUs (nproc), {meta['kernel']}, Python {meta['python']}, "
        f"Docker {meta['docker']}, Podman {meta['podman'] or 'not used'}, {meta['skopeo']}, {meta['gzip']}",
        f"- **Image** ({img['kind']}): {img['description']}; "
        f"base {_mb(img['base_uncompressed'])} uncompressed, {_mb(img['base_compressed'])} compressed, "
        f"{img['base_layers']} layer(s); the second image is the base plus one small layer",
        f"- **Runs**: {meta['runs']} per scenario; median shown, range in the notes (seconds). "
        "Times are wall time of whole commands (client start-up included).",
        "- **Caveats**: warm page cache (caches are not dropped between runs: that needs root-level "
        "`drop_caches` and would disturb other users of this machine); the registry is on loopback, so "
        "network time is ~0 and what differs is client work; the Docker daemon is shared with other users.",
    ]
    if meta.get("fallback"):
        lines.append(f"- **Fallback**: {meta['fallback']}")
    return "\n".join(lines) + "\n"


def write(
    out_dir: Path, stem: str, meta: dict[str, Any], samples: list[Sample], summaries: list[Summary]
) -> str:
    """Write ``<stem>.md`` and ``<stem>.json``; return the Markdown."""
    markdown = header(meta) + "\n" + table(summaries)
    (out_dir / f"{stem}.md").write_text(markdown)
    raw = {
        "meta": meta,
        "summary": [asdict(s) for s in summaries],
        "samples": [asdict(s) for s in samples],
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(raw, indent=2) + "\n")
    return markdown

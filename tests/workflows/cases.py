"""The fixture tables: each ``tests/data/workflows/<language>/expected.yaml`` pairs scans with their records.

A case names the paths to scan (relative to the language's fixture dir), and
optionally the engine and params; it lists every record the scan must return
(file, line, tag, kind, confidence, raw: nothing more, nothing less, in order)
and the tags ``scan --format tags`` must print.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from wfexs_like.workflows import scan_paths, tags
from wfexs_like.workflows.base import ContainerRef, ScanOptions

DATA = Path(__file__).resolve().parent.parent / "data" / "workflows"


def load_cases(language: str) -> list[Any]:
    """pytest params, one per case, with a readable id."""
    import pytest

    table = yaml.safe_load((DATA / language / "expected.yaml").read_text())
    out = []
    for i, case in enumerate(table["cases"]):
        label = "+".join(case["scan"]) + (f"-{case['engine']}" if "engine" in case else "")
        label += "-params" if "params" in case else ""
        out.append(pytest.param(language, case, id=f"{i}-{label}"))
    return out


def options_of(case: dict[str, Any]) -> ScanOptions:
    return ScanOptions(engine=case.get("engine", "docker"), params=dict(case.get("params", {})))


def as_rows(refs: list[ContainerRef], base: Path) -> list[dict[str, Any]]:
    return [
        {
            "file": os.path.relpath(r.file, base),
            "line": r.line,
            "tag": r.tag,
            "kind": r.kind,
            "confidence": r.confidence,
            "raw": r.raw,
        }
        for r in refs
    ]


def check_case(language: str, case: dict[str, Any]) -> list[ContainerRef]:
    base = DATA / language
    refs = scan_paths([base / p for p in case["scan"]], options_of(case))
    assert as_rows(refs, base) == case["refs"]
    assert tags(refs) == case["tags"]
    assert all(r.language == language for r in refs)
    return refs

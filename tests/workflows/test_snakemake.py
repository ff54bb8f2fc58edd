"""The Snakemake scanner: fixtures paired with their records, the reading rules, and inputs written
to hurt it.

The fixture table (``tests/data/workflows/snakemake/expected.yaml``) is the
main evidence: a workflow in the standard layout (``workflow/Snakefile``,
``rules/*.smk`` included, nested include, ``config/config.yaml``), and one
rule per form a container value takes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from wfexs_like.errors import UnsafeInputError
from wfexs_like.workflows import scan_paths, snakemake, tags
from wfexs_like.workflows.base import ScanOptions, WorkflowScanError

from .cases import DATA, as_rows

HERE = DATA / "snakemake"
WORKFLOW = HERE / "workflow-with-includes"
QUICK_S = 10.0


def _cases() -> list[Any]:
    table = yaml.safe_load((HERE / "expected.yaml").read_text())
    return [
        pytest.param(case, id=f"{i}-{'+'.join(case['scan'])}{'-params' if 'params' in case else ''}")
        for i, case in enumerate(table["cases"])
    ]


@pytest.mark.parametrize("case", _cases())
def test_fixture_table(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every record and every tag, nothing more, nothing less, through the dispatcher (which hands
    the scanner every Snakefile and .smk a directory walk finds)."""
    monkeypatch.chdir(HERE)
    refs = scan_paths([Path(p) for p in case["scan"]], ScanOptions(params=dict(case.get("params", {}))))
    assert as_rows(refs, HERE) == case["refs"]
    assert tags(refs) == case["tags"]
    assert all(r.language == "snakemake" for r in refs)


def test_records_name_their_rule_and_why_they_are_dynamic() -> None:
    notes = {(Path(r.file).name, r.line): r.note for r in snakemake.scan(WORKFLOW, ScanOptions())}
    assert notes[("Snakefile", 10)] == "global container:"
    assert notes[("Snakefile", 11)] == "global containerized:"
    assert notes[("Snakefile", 28)] == "rule sort"
    assert notes[("align.smk", 9)] == (
        "rule bwa_mem; config['images']['bwa'] from the config; --config or --configfile may change it"
    )
    assert notes[("align.smk", 19)] == "rule index singularity:"
    assert notes[("common.smk", 9)] == "rule per_sample; needs a function of the wildcards (lambda)"


def test_a_rules_file_met_in_the_same_walk_gets_its_workflow_config(tmp_path: Path) -> None:
    """A rules file no Snakefile includes is read with the config of the workflow around it."""
    (tmp_path / "workflow" / "rules").mkdir(parents=True)
    (tmp_path / "config.yaml").write_text("img: docker://example/from-config:1\n")
    (tmp_path / "workflow" / "Snakefile").write_text('configfile: "config.yaml"\nVERSION = "3"\n')
    (tmp_path / "workflow" / "rules" / "spare.smk").write_text(
        'rule a:\n    container: config["img"]\nrule b:\n    container: f"docker://example/b:{VERSION}"\n'
    )
    refs = scan_paths([tmp_path])
    assert [(r.tag, r.confidence) for r in refs] == [
        ("example/from-config:1", "dynamic"),
        ("example/b:3", "exact"),
    ]
    assert all("in a rules file no scanned Snakefile includes" in (r.note or "") for r in refs)


@pytest.mark.parametrize(
    ("value", "kind", "tag", "assumed"),
    [
        ("docker://quay.io/x/y:1", "docker", "quay.io/x/y:1", False),
        ("oras://r.example.org/x:1", "oras", "oras://r.example.org/x:1", False),
        ("https://h.example.org/x.sif", "sif-url", "https://h.example.org/x.sif", False),
        ("library://a/b/c:1", "sif-url", "library://a/b/c:1", False),
        ("shub://a/b", "sif-url", "shub://a/b", False),
        ("file:///images/x.sif", "local", "/images/x.sif", False),
        ("/images/x.sif", "local", "/images/x.sif", False),
        ("images/x.sif", "local", "wd/images/x.sif", False),
        ("./x", "local", "wd/x", False),
        ("ubuntu:24.04", "docker", "ubuntu:24.04", True),
    ],
)
def test_classify(value: str, kind: str, tag: str, assumed: bool) -> None:
    got_kind, got_tag, _notes, got_assumed = snakemake.classify(value, Path("wd"))
    assert (got_kind, got_tag, got_assumed) == (kind, tag, assumed)


def test_claims() -> None:
    assert snakemake.claims(Path("x/Snakefile"))
    assert snakemake.claims(Path("rules/a.smk"))
    assert snakemake.claims(WORKFLOW)
    assert not snakemake.claims(Path("main.nf"))


def test_keywords_inside_python_blocks_are_found(tmp_path: Path) -> None:
    (tmp_path / "a.smk").write_text('rule a:\n    container: "docker://example/a:1"\n')
    (tmp_path / "b.smk").write_text('rule b:\n    container: "docker://example/b:1"\n')
    (tmp_path / "Snakefile").write_text(
        'if config.get("fast"):\n    include: "a.smk"\nelse:\n    include: "b.smk"\n'
        'try:\n    container: "docker://example/global:1"\nfinally:\n    pass\n'
        "rule c:\n    input:\n        reads='x',\n    run:\n        print(1)\n"
    )
    refs = snakemake.scan(tmp_path, ScanOptions())
    assert sorted(r.tag for r in refs if r.tag) == ["example/a:1", "example/b:1", "example/global:1"]


def test_no_python_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "Snakefile").write_text(
        f"open({str(marker)!r}, 'w').write('top')\n"
        f"IMG = open({str(marker)!r}, 'w').write('constant') or 'docker://x:1'\n"
        "rule a:\n"
        f"    container: (lambda: open({str(marker)!r}, 'w').write('value'))()\n"
        "    run:\n"
        f"        open({str(marker)!r}, 'w').write('run')\n"
        "rule b:\n    container: IMG\n"
    )
    refs = snakemake.scan(tmp_path, ScanOptions())
    assert not marker.exists()
    assert [(r.tag, r.confidence) for r in refs] == [(None, "dynamic"), (None, "dynamic")]


# -- hostile and broken inputs ------------------------------------------------------------------


@pytest.fixture
def quickly() -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < QUICK_S


def test_an_include_cycle_is_refused_naming_the_chain(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "Snakefile").write_text('include: "rules/a.smk"\n')
    (tmp_path / "rules" / "a.smk").write_text('include: "b.smk"\n')
    (tmp_path / "rules" / "b.smk").write_text('rule x:\n    container: "docker://x:1"\ninclude: "a.smk"\n')
    with pytest.raises(
        UnsafeInputError, match=r"include cycle: .*rules/a\.smk -> .*rules/b\.smk -> .*a\.smk"
    ):
        scan_paths([tmp_path])


def test_a_self_include_is_refused(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "Snakefile").write_text('include: "Snakefile"\n')
    with pytest.raises(UnsafeInputError, match="include cycle"):
        snakemake.scan(tmp_path / "Snakefile", ScanOptions())


def test_a_50_mb_snakefile_is_refused_unread(tmp_path: Path, quickly: None) -> None:
    with open(tmp_path / "Snakefile", "wb") as f:
        f.truncate(50 << 20)
    with pytest.raises(UnsafeInputError, match=r"Snakefile is 52428800 bytes"):
        scan_paths([tmp_path])


def test_deeply_nested_values_are_dynamic_not_a_crash(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "Snakefile").write_text("rule a:\n    container: " + "(" * 5000 + "'x'" + ")" * 5000 + "\n")
    (ref,) = snakemake.scan(tmp_path, ScanOptions())
    assert (ref.tag, ref.confidence) == (None, "dynamic")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("rule a:\n    container: (\n", r"Snakefile:\d+: cannot be tokenized"),
        ('include: "rules/missing.smk"\n', r"Snakefile:1: include: rules/missing\.smk does not exist"),
    ],
)
def test_broken_workflows_are_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "Snakefile").write_text(text)
    with pytest.raises(WorkflowScanError, match=match):
        scan_paths([tmp_path])

"""CWL: every syntax form in tests/data/workflows/cwl against its expected records; the rules behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from wfexs_like.workflows import scan_paths, tags
from wfexs_like.workflows.base import ScanOptions, WorkflowScanError
from wfexs_like.workflows.cwl import claims

from .cases import DATA, check_case, load_cases

CWL = DATA / "cwl"


@pytest.mark.parametrize(("language", "case"), load_cases("cwl"))
def test_fixture_table(language: str, case: dict) -> None:
    check_case(language, case)


def test_inheritance_overridden_declarations_are_not_reported() -> None:
    """A tool hint loses to a step requirement; a tool hint loses to a sub-workflow requirement."""
    found = tags(scan_paths([CWL / "multi" / "main.cwl"]))
    assert "samtools:0.1.19" not in found  # sort.cwl's hint, beaten by the step's requirement
    assert "ignored/by-requirement:1" not in found  # inline tool's hint, beaten by subworkflow requirements
    assert "busybox:1.36" in found  # echo.cwl's own requirement beats the sub-workflow's requirement
    assert "alpine:3.19" in found


def test_a_tool_scanned_alone_uses_its_own_hint() -> None:
    refs = scan_paths([CWL / "multi" / "tools" / "sort.cwl"])
    assert [(r.tag, r.line) for r in refs] == [("samtools:0.1.19", 7)]


def test_packed_and_multi_file_variants_agree() -> None:
    multi = set(tags(scan_paths([CWL / "multi" / "main.cwl"])))
    packed = set(tags(scan_paths([CWL / "packed" / "packed.cwl"])))
    assert packed == multi - {"alpine:3.19", "busybox:1.36"}  # the packed one has no sub-workflow


def test_notes_say_what_is_not_pullable_and_the_image_id() -> None:
    refs = {r.line: r for r in scan_paths([CWL / "forms" / "not_pullable.cwl"])}
    assert "dockerLoad" in refs[12].note and "tool:1" in refs[12].note
    assert "dockerImport" in refs[24].note
    assert refs[35].raw.startswith("FROM debian:12") and "built:latest" in refs[35].note
    assert "remote" in refs[44].note
    (pulled,) = scan_paths([CWL / "forms" / "pull_and_id.cwl"])
    assert pulled.note == "dockerImageId: my-python"
    software = scan_paths([CWL / "forms" / "software_map.cwl"])
    assert [r.note for r in software] == [
        "SoftwareRequirement: conda package samtools, 1.15 or 1.16",
        "SoftwareRequirement: conda package htslib, any version",
    ]


def test_run_fragment_into_a_packed_file(tmp_path: Path) -> None:
    packed = (CWL / "packed" / "packed.cwl").read_text()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "packed.cwl").write_text(packed)
    (tmp_path / "wf.cwl").write_text(
        "cwlVersion: v1.2\nclass: Workflow\ninputs: []\noutputs: []\nsteps:\n"
        "  only_align:\n    run: lib/packed.cwl#align.cwl\n    in: []\n    out: []\n"
    )
    refs = scan_paths([tmp_path / "wf.cwl"])
    assert [(Path(r.file).name, r.line, r.tag) for r in refs] == [
        ("packed.cwl", 8, "quay.io/biocontainers/bwa:0.7.17--h5bf99c6_8")
    ]


def test_requirements_through_import_and_dynamic_pull(tmp_path: Path) -> None:
    (tmp_path / "reqs.yml").write_text("- class: DockerRequirement\n  dockerPull: $(inputs.image)\n")
    (tmp_path / "tool.cwl").write_text(
        "cwlVersion: v1.2\nclass: CommandLineTool\n"
        "requirements:\n  $import: reqs.yml\ninputs: []\noutputs: []\n"
    )
    (ref,) = scan_paths([tmp_path / "tool.cwl"])
    assert (Path(ref.file).name, ref.line, ref.tag, ref.confidence) == ("reqs.yml", 2, None, "dynamic")


def test_an_import_of_a_list_inside_a_requirements_list(tmp_path: Path) -> None:
    (tmp_path / "reqs.yml").write_text("- class: DockerRequirement\n  dockerPull: alpine:3.20\n")
    (tmp_path / "tool.cwl").write_text(
        "cwlVersion: v1.2\nclass: CommandLineTool\n"
        "hints:\n  - $import: reqs.yml\n  - class: ResourceRequirement\ninputs: []\noutputs: []\n"
    )
    assert tags(scan_paths([tmp_path / "tool.cwl"])) == ["alpine:3.20"]


def test_a_missing_run_file_names_the_step(tmp_path: Path) -> None:
    (tmp_path / "wf.cwl").write_text(
        "cwlVersion: v1.2\nclass: Workflow\ninputs: []\noutputs: []\nsteps:\n"
        "  s:\n    run: nowhere.cwl\n    in: []\n    out: []\n"
    )
    with pytest.raises(WorkflowScanError, match=r"wf\.cwl:7: run: nowhere\.cwl names .*nowhere\.cwl"):
        scan_paths([tmp_path / "wf.cwl"])


def test_claims(tmp_path: Path) -> None:
    (tmp_path / "job.yml").write_text("reads: {class: File, path: r.fq}\n")
    (tmp_path / "tool.yml").write_text("cwlVersion: v1.2\nclass: CommandLineTool\n")
    (tmp_path / "x.cwl").write_text("")
    assert claims(tmp_path / "x.cwl")
    assert claims(tmp_path / "tool.yml")
    assert not claims(tmp_path / "job.yml")


def test_engine_does_not_change_cwl_tags() -> None:
    docker = tags(scan_paths([CWL / "multi"]))
    assert tags(scan_paths([CWL / "multi"], ScanOptions(engine="singularity"))) == docker

"""WDL 1.0/1.1/1.2: every syntax form in tests/data/workflows/wdl against its expected records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from wfexs_like.workflows import scan_paths, tags
from wfexs_like.workflows.base import MissingExtraError, ScanOptions, WorkflowScanError

from .cases import DATA, check_case, load_cases

WDL_DIR = DATA / "wdl"


@pytest.mark.parametrize(("language", "case"), load_cases("wdl"))
def test_fixture_table(language: str, case: dict) -> None:
    check_case(language, case)


def test_a_call_that_passes_the_image_replaces_the_task_default() -> None:
    refs = scan_paths([WDL_DIR / "multi" / "main.wdl"])
    # samtools_sort's own default (1.15) is never used: its only call passes `sorter`
    assert "quay.io/biocontainers/samtools:1.15--h1170115_1" not in tags(refs)
    by_line = {r.line: r for r in refs if r.file.endswith("main.wdl")}
    assert by_line[19].note.startswith(
        "passed by call samtools_index; default of workflow input samtools_image"
    )


def test_notes_name_the_input_whose_default_was_used() -> None:
    refs = {r.line: r for r in scan_paths([WDL_DIR / "forms" / "v10_runtime_docker.wdl"])}
    assert refs[18].note == "default of input docker_image; a caller may override it"
    assert refs[39].note == "image has no value a scan can see"


def test_params_file_sets_a_task_input() -> None:
    options = ScanOptions(params={"from_input_default.docker_image": "debian:12"})
    refs = {r.line: r for r in scan_paths([WDL_DIR / "forms" / "v10_runtime_docker.wdl"], options)}
    assert (refs[18].tag, refs[18].note) == ("debian:12", "from --params-file")


def test_remote_import_is_reported_not_fetched(tmp_path: Path) -> None:
    (tmp_path / "w.wdl").write_text(
        'version 1.0\nimport "https://example.org/tasks.wdl" as t\nworkflow w {\n  call t.x\n}\n'
    )
    (ref,) = scan_paths([tmp_path / "w.wdl"])
    assert (ref.line, ref.tag, ref.confidence) == (2, None, "dynamic")
    assert "never fetches" in ref.note


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.wdl").write_text("version 1.0\ntask {\n")
    with pytest.raises(WorkflowScanError, match=r"bad\.wdl: not valid WDL"):
        scan_paths([tmp_path / "bad.wdl"])


def test_missing_import(tmp_path: Path) -> None:
    (tmp_path / "w.wdl").write_text('version 1.0\nimport "gone.wdl"\nworkflow w {}\n')
    with pytest.raises(
        WorkflowScanError, match=r"w\.wdl:2: import \"gone\.wdl\": .*gone\.wdl does not exist"
    ):
        scan_paths([tmp_path / "w.wdl"])


def test_without_miniwdl_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "WDL", None)  # what an environment without the extra looks like
    with pytest.raises(MissingExtraError, match=r"pip install 'wfexs-like\[workflows\]'"):
        scan_paths([WDL_DIR / "forms" / "v11_container.wdl"])

"""Galaxy tool XML: containers, macros, tokens and mulled-v2 names, against tests/data/workflows/galaxy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from wfexs_like.errors import UnsafeInputError
from wfexs_like.workflows import scan_paths
from wfexs_like.workflows.base import MissingExtraError, WorkflowScanError
from wfexs_like.workflows.galaxy import claims
from wfexs_like.workflows.mulled import biocontainers_image, mulled_v2_name

from .cases import DATA, check_case, load_cases

GALAXY = DATA / "galaxy"


@pytest.mark.parametrize(("language", "case"), load_cases("galaxy"))
def test_fixture_table(language: str, case: dict) -> None:
    check_case(language, case)


@pytest.mark.parametrize(
    ("packages", "name"),
    [
        # the examples galaxy-tool-util documents for its v2 names
        ([("samtools", "1.3.1")], "samtools:1.3.1"),
        (
            [("samtools", "1.3.1"), ("bwa", "0.7.13")],
            "mulled-v2-fe8faa35dbf6dc65a0f7f5d4ea12e31a79f73e40:4d0535c94ef45be8459f429561f0894c3fe0ebcf",
        ),
        (
            [("samtools", "1.3.1"), ("bwa", None)],
            "mulled-v2-fe8faa35dbf6dc65a0f7f5d4ea12e31a79f73e40:b0c847e4fb89c343b04036e33b2daa19c4152cf5",
        ),
        ([("samtools", None), ("bwa", None)], "mulled-v2-fe8faa35dbf6dc65a0f7f5d4ea12e31a79f73e40"),
        (
            [("samtools", "1.3.1"), ("bedtools", "2.26.0")],
            "mulled-v2-8186960447c5cb2faa697666dc1e6d919ad23f3e:a6419f25efff953fc505dbd5ee734856180bb619",
        ),
        ([("SAMtools", "1.3.1")], "samtools:1.3.1"),  # conda and registry names are lower case
    ],
)
def test_mulled_v2_names(packages: list, name: str) -> None:
    assert mulled_v2_name(packages) == name
    assert mulled_v2_name(list(reversed(packages))) == name  # the order a tool lists them in is irrelevant
    assert biocontainers_image(packages) == f"quay.io/biocontainers/{name}"


def test_records_point_into_the_macro_file_that_declares_them() -> None:
    refs = scan_paths([GALAXY / "macros" / "samtools_sort.xml"])
    assert [(Path(r.file).name, r.line, r.raw) for r in refs] == [
        ("macros.xml", 5, "samtools=1.17,htslib=1.17")
    ]
    assert "build suffix" in refs[0].note


def test_claims() -> None:
    assert claims(GALAXY / "forms" / "single_package.xml")
    assert claims(GALAXY / "forms" / "container_docker.xml")  # XML declaration and comment before <tool>
    assert not claims(GALAXY / "forms" / "not_a_tool.xml")
    assert not claims(GALAXY / "macros" / "macros.xml")


def test_an_explicit_non_tool_is_refused() -> None:
    with pytest.raises(WorkflowScanError, match="not a workflow file"):
        scan_paths([GALAXY / "forms" / "not_a_tool.xml"])


def _tool(tmp_path: Path, body: str, macros: str = "") -> Path:
    path = tmp_path / "tool.xml"
    path.write_text(
        f'<tool id="t" name="t" version="1"><macros>{macros}</macros>{body}<command>x</command></tool>'
    )
    return path


def test_an_undefined_token_is_dynamic(tmp_path: Path) -> None:
    tool = _tool(tmp_path, '<requirements><container type="docker">img:@NOPE@</container></requirements>')
    (ref,) = scan_paths([tool])
    assert (ref.tag, ref.confidence, ref.raw) == (None, "dynamic", "img:@NOPE@")


def test_unversioned_packages_have_no_pullable_tag(tmp_path: Path) -> None:
    tool = _tool(
        tmp_path,
        '<requirements><requirement type="package">a</requirement>'
        '<requirement type="package">b</requirement></requirements>',
    )
    (ref,) = scan_paths([tool])
    assert (ref.tag, ref.confidence) == (None, "dynamic")
    assert "mulled-v2-" in ref.note


def test_a_required_macro_parameter_must_be_given(tmp_path: Path) -> None:
    tool = _tool(
        tmp_path,
        '<requirements><expand macro="c"/></requirements>',
        '<xml name="c" tokens="image"><container type="docker">@IMAGE@</container></xml>',
    )
    with pytest.raises(WorkflowScanError, match=r"<expand macro='c'> needs image="):
        scan_paths([tool])


def test_an_unknown_macro_is_an_error(tmp_path: Path) -> None:
    tool = _tool(tmp_path, '<expand macro="nope"/>')
    with pytest.raises(WorkflowScanError, match=r"tool\.xml:1: <expand macro='nope'> names no <xml> macro"):
        scan_paths([tool])


def test_without_defusedxml_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "defusedxml.ElementTree", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'wfexs-like\[workflows\]'"):
        scan_paths([GALAXY / "forms" / "single_package.xml"])


def test_a_macro_that_expands_itself_is_refused(tmp_path: Path) -> None:
    tool = _tool(tmp_path, '<expand macro="a"/>', '<xml name="a"><requirements/><expand macro="a"/></xml>')
    with pytest.raises(UnsafeInputError, match="macro a expands itself"):
        scan_paths([tool])

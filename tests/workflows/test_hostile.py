"""Inputs written to hurt a scanner: each is refused quickly, with an error that names the file and the limit.

"Quickly" is the issue's word; the bound below is generous (a refusal takes
milliseconds; a YAML or XML bomb that got through would take minutes or all
the memory), so a slow CI machine does not fail it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wfexs_like.errors import UnsafeInputError
from wfexs_like.workflows import scan_paths
from wfexs_like.workflows.base import MAX_FILE_BYTES

QUICK_S = 10.0


@pytest.fixture
def quickly() -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < QUICK_S


def _refused(path: Path, match: str) -> None:
    with pytest.raises(UnsafeInputError, match=match):
        scan_paths([path])


def yaml_bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "cwlVersion: v1.2\nclass: CommandLineTool\n" + "\n".join(lines) + f"\nhints: *l{levels - 1}\n"


def test_yaml_bomb_cwl(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "bomb.cwl").write_text(yaml_bomb())
    _refused(tmp_path / "bomb.cwl", r"bomb\.cwl: the document expands to more than .* alias bomb")


def test_yaml_nested_too_deeply(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "deep.cwl").write_text("cwlVersion: v1.2\nhints: " + "[" * 5000 + "]" * 5000 + "\n")
    _refused(tmp_path / "deep.cwl", r"deep\.cwl: nested .*deep")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE tool [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<tool id="lol" name="lol" version="1">
  <requirements><container type="docker">&lol9;</container></requirements>
</tool>
"""


def test_xml_entity_expansion_galaxy(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "lol.xml").write_text(BILLION_LAUGHS)
    _refused(tmp_path / "lol.xml", r"lol\.xml: declares an XML entity")


def test_xml_entity_in_an_imported_macros_file(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "macros.xml").write_text(
        BILLION_LAUGHS.replace('<tool id="lol" name="lol" version="1">', "<macros>").replace(
            "</tool>", "</macros>"
        )
    )
    (tmp_path / "t.xml").write_text('<tool id="t"><macros><import>macros.xml</import></macros></tool>')
    _refused(tmp_path / "t.xml", r"macros\.xml: declares an XML entity")


@pytest.mark.parametrize(
    ("name", "head"),
    [("big.cwl", b"cwlVersion: v1.2\n"), ("big.wdl", b"version 1.0\n"), ("big.xml", b'<tool id="big">\n')],
)
def test_a_50_mb_file(tmp_path: Path, name: str, head: bytes, quickly: None) -> None:
    path = tmp_path / name
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(50 * 1024 * 1024)  # sparse: costs no disk and no time to make
    assert path.stat().st_size > MAX_FILE_BYTES
    _refused(path, rf"{name} is 52428800 bytes, more than the {MAX_FILE_BYTES}")


def test_a_50_mb_file_met_in_a_directory_walk(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "sub").mkdir()
    with open(tmp_path / "sub" / "tool.cwl", "wb") as f:
        f.truncate(50 * 1024 * 1024)
    _refused(tmp_path, r"tool\.cwl is 52428800 bytes")


def test_cwl_import_cycle(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "tool.cwl").write_text(
        "cwlVersion: v1.2\nclass: CommandLineTool\n"
        "requirements:\n  $import: reqs.yml\ninputs: []\noutputs: []\n"
    )
    (tmp_path / "reqs.yml").write_text("- $import: more.yml\n")
    (tmp_path / "more.yml").write_text("- $import: reqs.yml\n")
    _refused(tmp_path / "tool.cwl", r"include cycle: .*reqs\.yml -> .*more\.yml -> .*reqs\.yml")


def test_cwl_run_cycle_between_files(tmp_path: Path, quickly: None) -> None:
    for me, other in (("a", "b"), ("b", "a")):
        (tmp_path / f"{me}.cwl").write_text(
            "cwlVersion: v1.2\nclass: Workflow\ninputs: []\noutputs: []\nsteps:\n"
            f"  s:\n    run: {other}.cwl\n    in: []\n    out: []\n"
        )
    _refused(tmp_path / "a.cwl", r"include cycle: .*a\.cwl -> .*b\.cwl -> .*a\.cwl")
    _refused(tmp_path, r"include cycle")  # both files, found by walking the directory


def test_cwl_run_cycle_inside_a_packed_file(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "p.cwl").write_text(
        "cwlVersion: v1.2\n$graph:\n- id: main\n  class: Workflow\n  inputs: []\n  outputs: []\n"
        "  steps:\n  - id: again\n    run: '#main'\n    in: []\n    out: []\n"
    )
    _refused(tmp_path / "p.cwl", r"p\.cwl:3: a workflow runs itself")


def test_galaxy_macro_import_cycle(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "a.xml").write_text("<macros><import>b.xml</import></macros>")
    (tmp_path / "b.xml").write_text("<macros><import>a.xml</import></macros>")
    (tmp_path / "t.xml").write_text('<tool id="t"><macros><import>a.xml</import></macros></tool>')
    _refused(tmp_path / "t.xml", r"include cycle: .*a\.xml -> .*b\.xml -> .*a\.xml")


def test_galaxy_macro_bomb(tmp_path: Path, quickly: None) -> None:
    macros = ['<xml name="m0"><requirement type="package" version="1">x</requirement></xml>']
    macros += [f'<xml name="m{i}">' + f'<expand macro="m{i - 1}"/>' * 10 + "</xml>" for i in range(1, 9)]
    (tmp_path / "t.xml").write_text(
        f'<tool id="t"><macros>{"".join(macros)}</macros>'
        '<requirements><expand macro="m8"/></requirements></tool>'
    )
    _refused(tmp_path / "t.xml", r"t\.xml: macros expand to more than 100000 elements")


def test_galaxy_token_bomb(tmp_path: Path, quickly: None) -> None:
    tokens = ['<token name="@T0@">xxxxxxxxxx</token>']
    tokens += [f'<token name="@T{i}@">' + f"@T{i - 1}@" * 10 + "</token>" for i in range(1, 9)]
    (tmp_path / "t.xml").write_text(
        f'<tool id="t"><macros>{"".join(tokens)}</macros>'
        '<requirements><container type="docker">@T8@</container></requirements></tool>'
    )
    _refused(tmp_path / "t.xml", r"t\.xml: token @T\d@ grows past")


def test_wdl_import_cycle(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "a.wdl").write_text('version 1.0\nimport "b.wdl"\nworkflow a {}\n')
    (tmp_path / "b.wdl").write_text('version 1.0\nimport "a.wdl"\nworkflow b {}\n')
    _refused(tmp_path / "a.wdl", r"include cycle: .*a\.wdl -> .*b\.wdl -> .*a\.wdl")


def test_wdl_nested_too_deeply(tmp_path: Path, quickly: None) -> None:
    depth = 20000
    (tmp_path / "deep.wdl").write_text(
        "version 1.0\ntask t {\n  command <<< x >>>\n  runtime { docker: "
        + "[" * depth
        + '"a"'
        + "]" * depth
        + " }\n}\n"
    )
    _refused(tmp_path / "deep.wdl", r"deep\.wdl: nested too deeply")


def test_the_command_refuses_with_one_clear_line(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "bomb.cwl").write_text(yaml_bomb())
    done = subprocess.run(
        [sys.executable, "-m", "wfexs_like.cli", "scan", str(tmp_path / "bomb.cwl")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("wfexs-like: ") and "alias bomb" in done.stderr
    assert "Traceback" not in done.stderr

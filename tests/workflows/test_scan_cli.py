"""``wfexs-like scan``, run as a user runs it: the installed command in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from wfexs_like.workflows import scan_paths, tags
from wfexs_like.workflows.base import ScanOptions

from .cases import DATA


def scan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wfexs_like.cli", "scan", *args], capture_output=True, text=True, cwd=cwd
    )


def test_tags_format_prints_pullable_tags_and_warns_about_the_rest() -> None:
    done = scan("--format", "tags", str(DATA / "cwl" / "multi"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "debian:12",
        "quay.io/biocontainers/samtools:1.15--h1170115_1",
        "alpine:3.19",
        "quay.io/biocontainers/bwa:0.7.17--h5bf99c6_8",
        "busybox:1.36",
    ]
    lines = done.stderr.splitlines()
    assert lines[0] == "wfexs-like: warning: 2 reference(s) not listed (not pullable, or not resolved):"
    assert lines[1].endswith(
        "count.cwl:7: coreutils=9.1 (conda, exact: SoftwareRequirement: conda package coreutils, 9.1)"
    )
    assert lines[2].endswith(
        "count.cwl:9: gawk (conda, candidate: SoftwareRequirement: conda package gawk, any version)"
    )


def test_tags_format_warns_even_when_quiet() -> None:
    done = scan("-q", "--format", "tags", str(DATA / "wdl" / "forms"))
    assert done.returncode == 0, done.stderr
    assert "3 reference(s) not listed" in done.stderr
    assert (
        "v11_container.wdl:20: \"*\" (docker, dynamic: '*': the runtime may choose any image)" in done.stderr
    )


def test_nothing_to_warn_about_means_a_silent_stderr() -> None:
    done = scan("--format", "tags", str(DATA / "cwl" / "packed" / "packed.cwl"))
    assert (done.returncode, done.stderr) == (0, "")
    assert len(done.stdout.splitlines()) == 3


def test_yaml_and_json_formats_hold_every_record() -> None:
    paths = [DATA / "cwl" / "forms", DATA / "galaxy" / "forms", DATA / "wdl" / "multi"]
    expected = [r.to_dict() for r in scan_paths(paths)]
    assert any(r["confidence"] == "dynamic" for r in expected)  # the unresolved ones are in the records too
    as_yaml = scan(*map(str, paths))
    assert as_yaml.returncode == 0, as_yaml.stderr
    assert yaml.safe_load(as_yaml.stdout) == expected
    as_json = scan("--format", "json", *map(str, paths))
    assert json.loads(as_json.stdout) == expected
    assert {"file", "line", "raw", "kind", "confidence", "language"} <= set(expected[0])


def test_params_file_and_engine(tmp_path: Path) -> None:
    params = tmp_path / "inputs.json"
    params.write_text(
        json.dumps({"pipeline.samtools_image": "quay.io/biocontainers/samtools:1.19--h50ea8bc_0"})
    )
    done = scan("--format", "tags", "--params-file", str(params), str(DATA / "wdl" / "multi" / "main.wdl"))
    assert done.returncode == 0, done.stderr
    assert "quay.io/biocontainers/samtools:1.19--h50ea8bc_0" in done.stdout.splitlines()
    assert "samtools:1.17--h00cdaf9_0" not in done.stdout
    both = str(DATA / "galaxy" / "forms" / "container_both.xml")
    for engine, tag in (
        ("singularity", "https://example.org/singularity/ubuntu-24.04.sif"),
        ("podman", "ubuntu:24.04"),
    ):
        done = scan("--format", "tags", "--engine", engine, both)
        assert done.stdout.splitlines() == [tag]


def test_profiles_are_parsed_repeatable_and_comma_separated() -> None:
    """Profiles matter to Nextflow only; here: accepted, and a CWL scan is unchanged by them."""
    path = str(DATA / "cwl" / "packed" / "packed.cwl")
    done = scan("--format", "tags", "--profile", "test", "--profile", "docker,arm", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == tags(
        scan_paths([Path(path)], ScanOptions(profiles=["test", "docker", "arm"]))
    )


def test_relative_paths_are_reported_as_given() -> None:
    done = scan("--format", "json", "multi/main.cwl", cwd=DATA / "cwl")
    files = {r["file"] for r in json.loads(done.stdout)}
    assert "multi/tools/docker-bwa.yml" in files and "multi/main.cwl" in files


def test_errors(tmp_path: Path) -> None:
    done = scan(str(tmp_path / "missing.cwl"))
    assert done.returncode == 1
    missing = tmp_path / "missing.cwl"
    assert (
        done.stderr
        == f"wfexs-like: {missing}: no such file or directory; give a workflow file or directory\n"
    )
    (tmp_path / "notes.txt").write_text("hello\n")
    done = scan(str(tmp_path / "notes.txt"))
    assert done.returncode == 1 and "not a workflow file this scanner reads" in done.stderr
    bad = tmp_path / "params.yaml"
    bad.write_text("- a list\n")
    done = scan("--params-file", str(bad), str(DATA / "cwl" / "forms"))
    assert done.returncode == 1 and "expected a mapping" in done.stderr
    done = scan("--format", "xml", str(DATA / "cwl" / "forms"))
    assert done.returncode == 2


def test_help_lists_every_option() -> None:
    done = scan("--help")
    assert done.returncode == 0
    for option in ("--engine", "--params-file", "--profile", "--format", "--nextflow-inspect", "PATH"):
        assert option in done.stdout

"""``wfexs-like provenance show | convert | rocrate``, run as the installed command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wfexs_like.digests import sha256_file
from wfexs_like.model import Container, ContainerType
from wfexs_like.provenance import (
    container_to_dict,
    load_containers,
    read_containers_file,
    write_containers_file,
)
from wfexs_like.rocrate import MAX_CRATE_BYTES, METADATA_FILE

CLI = Path(sys.executable).with_name("wfexs-like")
DATA = Path(__file__).parent / "data"
STAGE_STATE = DATA / "wfexs" / "nextflow-docker-stage-state.yaml"
STAGE_STATE_2023 = DATA / "wfexs" / "cwl-singularity-stage-state-2023.yaml"
MANIFEST = "sha256:" + "5e" * 32


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    return subprocess.run(
        [str(CLI), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def _staged_sif_records(stage: Path) -> list[Container]:
    """Two records as the Singularity factory writes them, over small stand-in SIF files."""
    stage.mkdir(parents=True, exist_ok=True)
    records = []
    for name in ("samtools", "bwa"):
        sif = stage / f"{name}.sif"
        sif.write_bytes(f"stand-in SIF of {name}\n".encode() * 1000)
        digest = sha256_file(sif)
        records.append(
            Container(
                origTaggedName=f"quay.io/biocontainers/{name}:1.0",
                type=ContainerType.Singularity,
                taggedName=f"docker://quay.io/biocontainers/{name}:1.0",
                architecture="amd64",
                operatingSystem="linux",
                localPath=sif,
                signature=digest,
                fingerprint=f"quay.io/biocontainers/{name}@{MANIFEST}",
                metadataLocalPath=stage / f"{name}.sif_meta.json",
                source_type=ContainerType.Docker,
                image_signature=digest,
            )
        )
    return records


@pytest.fixture
def staged(tmp_path: Path) -> tuple[Path, list[Container]]:
    """A stage dir holding two SIFs and the records YAML beside them (paths relative, as ours are)."""
    stage = tmp_path / "wd" / "containers"
    records = _staged_sif_records(stage)
    yaml_path = stage / "containers.yaml"
    write_containers_file(records, yaml_path, containers_dir=stage)
    os.utime(yaml_path, (1_700_000_000, 1_700_000_000))
    return yaml_path, records


# --------------------------------------------------------------------------
# show


def test_show_lists_our_records_as_a_table_and_as_json(staged: tuple[Path, list[Container]]) -> None:
    yaml_path, records = staged
    table = run("provenance", "show", yaml_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TAG", "TYPE", "DIGEST", "PLATFORM", "LOCAL", "PATH", "SIGNATURE"]
    for c, line in zip(records, lines[1:], strict=True):
        assert line.startswith(c.origTaggedName)
        assert "singularity (from docker)" in line
        assert "sha256:5e5e5e5e5e5e" in line and "linux/amd64" in line
        assert f"{Path(c.localPath or '').name} " in line
    assert "2 record(s)" in table.stderr and "wfexs-like records" in table.stderr

    shown = run("provenance", "show", "--json", yaml_path)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["source"] == "wfexs-like" and data["file"] == str(yaml_path)
    stage = yaml_path.parent
    assert data["containers"] == [container_to_dict(c, containers_dir=stage) for c in records]


def test_show_reads_wfexs_backend_stage_states(tmp_path: Path) -> None:
    shown = run("provenance", "show", "--json", STAGE_STATE)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["source"] == "wfexs"
    assert [c["fingerprint"] for c in data["containers"]] == [
        c.fingerprint for c in read_containers_file(STAGE_STATE)
    ]
    table = run("provenance", "show", STAGE_STATE_2023)
    assert table.returncode == 0, table.stderr
    # WfExS-backend's sha256=<base64> signatures are shown as sha256:<hex>, like every other digest
    assert "sha256=" not in table.stdout
    assert "WfExS-backend records" in table.stderr


# --------------------------------------------------------------------------
# convert


def test_convert_wfexs_records_to_ours_then_show(tmp_path: Path) -> None:
    out = tmp_path / "containers.yaml"
    converted = run("provenance", "convert", STAGE_STATE, "-o", out)
    assert converted.returncode == 0, converted.stderr
    assert converted.stdout == ""
    assert out.read_text().startswith("wfexs_like_containers: 1\n")
    assert read_containers_file(out) == read_containers_file(STAGE_STATE)
    assert not [p for p in tmp_path.iterdir() if p.name != out.name], "no temporary file left behind"

    shown = run("provenance", "show", "--json", out)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["source"] == "wfexs-like"
    assert data["containers"] == [container_to_dict(c) for c in read_containers_file(STAGE_STATE)]


def test_convert_to_stdout_and_back_to_the_wfexs_style(tmp_path: Path) -> None:
    ours = run("provenance", "convert", STAGE_STATE, "-o", "-")
    assert ours.returncode == 0, ours.stderr
    theirs = run("provenance", "convert", STAGE_STATE, "--to", "wfexs")
    assert theirs.returncode == 0, theirs.stderr
    assert "_type: Container" in theirs.stdout
    expected = read_containers_file(STAGE_STATE)
    assert load_containers(ours.stdout) == expected
    assert load_containers(theirs.stdout) == expected


def test_convert_makes_old_absolute_paths_portable(tmp_path: Path) -> None:
    cdir = "/home/user/wfexs-backend-test_WorkDir/6f1c0e2a-9d7b-4c55-8e13-2b4a7d9c0f11/containers"
    converted = run("provenance", "convert", STAGE_STATE_2023, "--containers-dir", cdir)
    assert converted.returncode == 0, converted.stderr
    records = load_containers(converted.stdout)
    assert [str(c.localPath) for c in records] == [
        "quay.io_biocontainers_samtools:1.15--h1170115_1.img",
        "quay.io_biocontainers_bwa:0.7.17--h7132678_9.img",
    ]


def test_convert_checks_its_output_before_reading_anything(tmp_path: Path) -> None:
    missing_input = tmp_path / "nowhere.yaml"
    bad = run("provenance", "convert", missing_input, "-o", tmp_path / "missing" / "dir" / "c.yaml")
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr and "nowhere.yaml" not in bad.stderr
    into_dir = run("provenance", "convert", STAGE_STATE, "-o", tmp_path)
    assert into_dir.returncode == 2 and "is a directory" in into_dir.stderr


# --------------------------------------------------------------------------
# rocrate


def test_rocrate_describes_staged_sifs_and_reads_back(
    tmp_path: Path, staged: tuple[Path, list[Container]]
) -> None:
    yaml_path, records = staged
    crate = tmp_path / "crate"
    made = run("provenance", "rocrate", yaml_path, "-o", crate)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(crate / METADATA_FILE)
    first = (crate / METADATA_FILE).read_bytes()
    graph = {e["@id"]: e for e in json.loads(first)["@graph"]}
    assert graph["./"]["datePublished"] == "2023-11-14T22:13:20+00:00", "when the records were written"
    assert graph["./"]["name"] == "Container images of containers.yaml"
    files = [e for e in graph.values() if e["@type"] == "File"]
    assert sorted((e["sha256"], int(e["contentSize"])) for e in files) == sorted(
        (sha256_file(c.localPath or Path()).split(":", 1)[1], (c.localPath or Path()).stat().st_size)
        for c in records
    )

    again = run("provenance", "rocrate", yaml_path, "-o", crate)
    assert again.returncode == 0, again.stderr
    assert (crate / METADATA_FILE).read_bytes() == first

    shown = run("provenance", "show", "--json", crate)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["source"] == "ro-crate"
    assert [c["fingerprint"] for c in data["containers"]] == [c.fingerprint for c in records]
    assert [c["taggedName"] for c in data["containers"]] == [c.taggedName for c in records]

    back = run("provenance", "convert", crate / METADATA_FILE, "-o", tmp_path / "from-crate.yaml")
    assert back.returncode == 0, back.stderr
    assert [c.fingerprint for c in read_containers_file(tmp_path / "from-crate.yaml")] == [
        c.fingerprint for c in records
    ]


def test_rocrate_finds_sifs_through_stage_dir(tmp_path: Path, staged: tuple[Path, list[Container]]) -> None:
    yaml_path, _ = staged
    elsewhere = tmp_path / "records.yaml"
    elsewhere.write_bytes(yaml_path.read_bytes())
    lost = run("provenance", "rocrate", elsewhere, "-o", tmp_path / "crate")
    assert lost.returncode == 1
    assert "missing" in lost.stderr and "--stage-dir" in lost.stderr and "Traceback" not in lost.stderr
    found = run(
        "provenance",
        "rocrate",
        elsewhere,
        "--stage-dir",
        yaml_path.parent,
        "-o",
        tmp_path / "crate",
        "--date-published",
        "2024-05-01",
        "--name",
        "my run",
    )
    assert found.returncode == 0, found.stderr
    root = next(
        e for e in json.loads((tmp_path / "crate" / METADATA_FILE).read_text())["@graph"] if e["@id"] == "./"
    )
    assert (root["name"], root["datePublished"]) == ("my run", "2024-05-01T00:00:00+00:00")


def test_rocrate_usage_errors(tmp_path: Path, staged: tuple[Path, list[Container]]) -> None:
    yaml_path, _ = staged
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for args, message in (
        (("provenance",), "required"),
        (("provenance", "rocrate", yaml_path), "-o"),
        (("provenance", "rocrate", yaml_path, "-o", a_file), "not a directory"),
        (
            ("provenance", "rocrate", yaml_path, "-o", tmp_path / "c", "--stage-dir", tmp_path / "no"),
            "no such",
        ),
        (("provenance", "show", "--js", yaml_path), "unrecognized arguments: --js"),
    ):
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


# --------------------------------------------------------------------------
# hostile inputs


def test_hostile_inputs_are_refused_with_one_clear_line(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    with open(big / METADATA_FILE, "wb") as fh:
        fh.truncate(MAX_CRATE_BYTES + 1)
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / METADATA_FILE).write_text("<html>not a crate</html>")
    big_yaml = tmp_path / "big.yaml"
    with open(big_yaml, "wb") as fh:
        fh.truncate(MAX_CRATE_BYTES + 1)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 10)
    for verb, target, message in (
        ("show", big, "more than the 16777216"),
        ("convert", big, "more than the 16777216"),
        ("show", garbled, "not JSON"),
        ("show", big_yaml, "more than the 16777216"),
        ("show", binary, "not UTF-8"),
    ):
        result = run("provenance", verb, target)
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stdout == ""

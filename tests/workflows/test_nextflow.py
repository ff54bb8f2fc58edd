"""The Nextflow scanner: fixtures paired with their records, resolution rules, ``nextflow inspect``,
and inputs written to hurt it.

The fixture table (``tests/data/workflows/nextflow/expected.yaml``) is the
main evidence: a pipeline with modules, a subworkflow, aliases, a config with
params, profiles, ``withName``/``withLabel`` selectors (regex, negation,
fully qualified names), ``includeConfig`` and nf-core-style modules, scanned
for each engine; and one process per syntax form of the directive.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from wfexs_like import progress
from wfexs_like.errors import ContainerEngineException, UnsafeInputError
from wfexs_like.workflows import nextflow, nextflow_inspect, nextflow_names, scan_paths, tags
from wfexs_like.workflows.base import ContainerRef, ScanOptions, WorkflowScanError
from wfexs_like.workflows.nextflow_config import NextflowConfig

from .cases import DATA, as_rows

HERE = DATA / "nextflow"
PIPELINE = HERE / "pipeline"
INSPECT = HERE / "inspect"
#: "refused quickly" is the issue's demand; a refusal takes milliseconds, the bound is generous.
QUICK_S = 10.0


def _cases() -> list[Any]:
    table = yaml.safe_load((HERE / "expected.yaml").read_text())
    out = []
    for i, case in enumerate(table["cases"]):
        label = "+".join(case["scan"]) + f"-{case.get('engine', 'docker')}"
        label += "".join(f"-{p}" for p in case.get("profiles", [])) + ("-params" if "params" in case else "")
        out.append(pytest.param(case, id=f"{i}-{label}"))
    return out


def _options(case: dict[str, Any]) -> ScanOptions:
    return ScanOptions(
        engine=case.get("engine", "docker"),
        params=dict(case.get("params", {})),
        profiles=list(case.get("profiles", [])),
    )


@pytest.mark.parametrize("case", _cases())
def test_fixture_table(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every record and every tag, nothing more, nothing less, through the dispatcher (which hands
    the scanner every .nf and nextflow.config a directory walk finds)."""
    monkeypatch.chdir(HERE)
    refs = scan_paths([Path(p) for p in case["scan"]], _options(case))
    assert as_rows(refs, HERE) == case["refs"]
    assert tags(refs) == case["tags"]
    assert all(r.language == "nextflow" for r in refs)


def _by_tag(refs: list[ContainerRef]) -> dict[str | None, ContainerRef]:
    return {r.tag: r for r in refs}


def test_records_name_the_processes_and_rules_they_come_from() -> None:
    refs = _by_tag(nextflow.scan(PIPELINE, ScanOptions()))
    assert refs["quay.io/example/fastqc-trimmed:0.12.1"].note == (
        "process FASTQC_TRIMMED; from withName: 'FASTQC_TRIMMED'; docker.registry quay.io prefixed"
    )
    assert refs["quay.io/biocontainers/multiqc:1.19--pyhdfd78af_0"].note == "process QC_REPORT:MULTIQC"
    assert refs["quay.io/example/bigmem-tools:2.1"].note == (
        "process BIG_JOB; from withLabel: 'big_mem'; docker.registry quay.io prefixed"
    )
    assert refs["quay.io/example/base:1.0"].note == (
        "process PLAIN; from process.container; docker.registry quay.io prefixed"
    )
    assert "matches no process in the scanned files" in (refs["quay.io/example/orphan:1"].note or "")
    assert "not called from the entry workflow" in (refs["quay.io/example/unused:1.0"].note or "")
    assert refs[None].note == "process DYNAMIC_TOOL; needs params.tool_version"


def test_a_negated_selector_reaches_every_other_process_under_every_name() -> None:
    refs = nextflow.scan(PIPELINE, ScanOptions(profiles=["pinned"]))
    pinned = _by_tag(refs)["quay.io/example/pinned:3"]
    assert pinned.note is not None
    named = pinned.note.split(";")[0]
    for name in ("FASTQC", "FASTQC_TRIMMED", "ALIGN", "QC_REPORT:MULTIQC", "BIG_JOB", "PLAIN"):
        assert name in named
    assert "SAY_HELLO" not in named
    assert _by_tag(refs)["quay.io/ubuntu:24.04"].note == "process SAY_HELLO; docker.registry quay.io prefixed"


def test_dynamic_alternatives_say_what_chooses_them() -> None:
    refs = [r for r in nextflow.scan(HERE / "forms" / "forms.nf", ScanOptions()) if r.line == 71]
    assert {r.tag for r in refs} == {"example/slim:1.0", "example/full:1.0"}
    assert all(r.confidence == "dynamic" for r in refs)
    assert all("chosen at run time by: params.flavour == 'slim'" in (r.note or "") for r in refs)


# -- the registry rule, as Nextflow's ContainerHandler applies it ---------------------------------


def _config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "nextflow.config").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ubuntu", "reg.example.org/ubuntu"),
        ("ubuntu:24.04", "reg.example.org/ubuntu:24.04"),  # no '/': never a registry, always prefixed
        ("biocontainers/fastqc:0.12.1", "reg.example.org/biocontainers/fastqc:0.12.1"),
        ("quay.io/biocontainers/fastqc:0.12.1", "quay.io/biocontainers/fastqc:0.12.1"),
        ("localhost:5000/tool:1", "localhost:5000/tool:1"),
        ("docker://example/tool:1", "example/tool:1"),  # an explicit docker:// is taken as written
    ],
)
def test_registry_prefix(tmp_path: Path, name: str, expected: str) -> None:
    project = _config(tmp_path, "docker.registry = 'reg.example.org'\n")
    (project / "main.nf").write_text(f"process P {{\n    container '{name}'\n    script: 'true'\n}}\n")
    (ref,) = nextflow.scan(project, ScanOptions())
    assert (ref.tag, ref.kind, ref.confidence) == (expected, "docker", "exact")


def test_each_engine_reads_its_own_registry_and_docker_alone_overrides(tmp_path: Path) -> None:
    project = _config(
        tmp_path,
        "docker { registry = 'd.example.org'; registryOverride = true }\n"
        "podman.registry = 'p.example.org'\nsingularity.registry = 's.example.org/'\n",
    )
    (project / "main.nf").write_text(
        "process A {\n container 'tool:1'\n script: 'true'\n}\n"
        "process B {\n container 'ghcr.io/org/tool:2'\n script: 'true'\n}\n"
    )

    def tags_for(engine: str) -> list[str | None]:
        return sorted(r.tag for r in nextflow.scan(project, ScanOptions(engine=engine)))

    assert tags_for("docker") == ["d.example.org/org/tool:2", "d.example.org/tool:1"]
    assert tags_for("podman") == ["ghcr.io/org/tool:2", "p.example.org/tool:1"]
    assert tags_for("singularity") == ["ghcr.io/org/tool:2", "s.example.org/tool:1"]
    assert tags_for("apptainer") == ["ghcr.io/org/tool:2", "tool:1"]


def test_is_absolute_docker_name() -> None:
    assert nextflow_names.is_absolute_docker_name("quay.io/x")
    assert nextflow_names.is_absolute_docker_name("host:5000/x")
    assert not nextflow_names.is_absolute_docker_name("library/x")
    assert not nextflow_names.is_absolute_docker_name("quay.io")  # no '/': a name, not a registry


# -- config semantics ----------------------------------------------------------------------------


def test_params_file_beats_config_beats_script_and_config_sees_the_winner(tmp_path: Path) -> None:
    project = _config(
        tmp_path,
        "params.version = '2.0'\nparams.tool = 'from-config'\nparams.image = \"example/${params.tool}\"\n",
    )
    (project / "main.nf").write_text(
        "params.version = '1.0'\nparams.only_script = 'x'\n"
        'process P {\n container "${params.image}:${params.version}-${params.only_script}"\n'
        " script: 'true'\n}\n"
    )
    (ref,) = nextflow.scan(project, ScanOptions())
    assert ref.tag == "example/from-config:2.0-x"
    (ref,) = nextflow.scan(project, ScanOptions(params={"tool": "from-params", "version": "3.0"}))
    assert ref.tag == "example/from-params:3.0-x"


def test_profiles_apply_in_the_order_asked_for(tmp_path: Path) -> None:
    project = _config(
        tmp_path,
        "profiles {\n  a { process.container = 'example/a:1' }\n"
        "  b { process.container = 'example/b:1' }\n}\n",
    )
    (project / "main.nf").write_text("process P {\n script: 'true'\n}\n")
    assert [r.tag for r in nextflow.scan(project, ScanOptions(profiles=["a", "b"]))] == ["example/b:1"]
    assert [r.tag for r in nextflow.scan(project, ScanOptions(profiles=["b,a"]))] == ["example/a:1"]


def test_an_unknown_profile_is_an_error_naming_the_defined_ones() -> None:
    with pytest.raises(WorkflowScanError, match=r"profile nosuch is not defined .*docker, singularity, test"):
        nextflow.scan(PIPELINE, ScanOptions(profiles=["nosuch"]))


def test_a_static_if_picks_a_branch_and_try_blocks_are_read(tmp_path: Path) -> None:
    project = _config(
        tmp_path,
        "params.site = 'cluster'\n"
        "if (params.site == 'cluster') {\n  process.container = 'example/cluster:1'\n}"
        " else {\n  process.container = 'example/laptop:1'\n}\n"
        "try {\n  includeConfig 'extra.config'\n} catch (Exception e) {\n"
        "  process.container = 'example/never:1'\n}\n",
    )
    (project / "extra.config").write_text("process { withName: P { container = 'example/extra:1' } }\n")
    (project / "main.nf").write_text("process P {\n script: 'true'\n}\nprocess Q {\n script: 'true'\n}\n")
    refs = nextflow.scan(project, ScanOptions())
    assert sorted((r.tag, r.note) for r in refs) == [
        ("example/cluster:1", "process Q; from process.container"),
        ("example/extra:1", "process P; from withName: 'P'"),
    ]


def test_paths_through_a_process_body_without_a_directive_get_the_default(tmp_path: Path) -> None:
    project = _config(tmp_path, "process.container = 'example/default:1'\n")
    (project / "main.nf").write_text(
        "process P {\n if (params.big) { label 'big' }\n script: 'true'\n}\n"
        "process Q {\n if (params.big) { container 'example/big:1' }\n script: 'true'\n}\n"
        "workflow { P(); Q() }\n"
    )
    refs = nextflow.scan(project, ScanOptions())
    assert [(Path(r.file).name, r.tag, r.confidence, r.note) for r in refs] == [
        ("main.nf", "example/big:1", "dynamic", "process Q; chosen at run time by: params.big"),
        ("nextflow.config", "example/default:1", "exact", "process P; from process.container"),
        (
            "nextflow.config",
            "example/default:1",
            "dynamic",
            "process Q; from process.container; chosen at run time by: !(params.big)",
        ),
    ]
    refs = nextflow.scan(project, ScanOptions(params={"big": True}))
    assert [(Path(r.file).name, r.tag, r.confidence, r.note) for r in refs] == [
        ("main.nf", "example/big:1", "exact", "process Q"),
        ("nextflow.config", "example/default:1", "exact", "process P; from process.container"),
    ]


class _Warnings(progress.NullReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warn(self, text: str, *, key: str | None = None) -> None:
        self.lines.append(text)


def test_a_remote_or_missing_include_is_not_read_and_says_so(tmp_path: Path) -> None:
    project = _config(
        tmp_path,
        "includeConfig 'https://config.example.org/x.config'\nincludeConfig 'conf/missing.config'\n"
        "includeConfig System.getenv('SITE_CONFIG')\nprocess.container = 'example/tool:1'\n",
    )
    with progress.reporting(_Warnings()) as seen:
        refs = nextflow.scan(project, ScanOptions())
    assert [r.tag for r in refs] == ["example/tool:1"]
    assert len(seen.lines) == 3
    assert "is remote; not fetched" in seen.lines[0]
    assert "no such file" in seen.lines[1]
    assert "known only at run time" in seen.lines[2]


def test_a_config_without_a_pipeline_still_reports_its_containers(tmp_path: Path) -> None:
    project = _config(
        tmp_path, "process { container = 'example/default:1'; withLabel: big { container = 'x' } }\n"
    )
    refs = nextflow.scan(project / "nextflow.config", ScanOptions())
    assert [(r.tag, r.line) for r in refs] == [("example/default:1", 1), ("x", 1)]
    assert all("matches no process" in (r.note or "") for r in refs)


def test_a_module_scanned_with_its_pipeline_gets_the_pipeline_config(tmp_path: Path) -> None:
    """A module no script includes, met in the same walk as its pipeline: read with that config."""
    project = _config(tmp_path, "docker.registry = 'quay.io'\nparams.v = '2'\n")
    (project / "main.nf").write_text("workflow {\n}\n")
    (project / "modules").mkdir()
    (project / "modules" / "spare.nf").write_text('process S {\n container "example/spare:${params.v}"\n}\n')
    (ref,) = scan_paths([project])
    assert ref.tag == "quay.io/example/spare:2"
    assert ref.note and "in a module no scanned pipeline includes" in ref.note


# -- nextflow inspect ----------------------------------------------------------------------------


def test_inspect_without_nextflow_on_path_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ContainerEngineException, match=r"`nextflow` is not on PATH.*--nextflow-inspect"):
        nextflow.scan(PIPELINE, ScanOptions(nextflow_inspect=True))


def test_parse_inspect_docker() -> None:
    refs = nextflow_inspect.parse_inspect(
        (INSPECT / "docker.json").read_text(), PIPELINE / "main.nf", "docker"
    )
    assert [(r.tag, r.kind, r.confidence, r.note) for r in refs] == [
        ("quay.io/ubuntu:24.04", "docker", "exact", "process SAY_HELLO; from nextflow inspect"),
        (
            "quay.io/biocontainers/fastqc:0.12.1--hdfd78af_0",
            "docker",
            "exact",
            "process FASTQC; from nextflow inspect",
        ),
        (
            "quay.io/example/fastqc-trimmed:0.12.1",
            "docker",
            "exact",
            "process FASTQC_TRIMMED; from nextflow inspect",
        ),
        (
            "quay.io/biocontainers/multiqc:1.19--pyhdfd78af_0",
            "docker",
            "exact",
            "process QC_REPORT:MULTIQC; from nextflow inspect",
        ),
        (
            "quay.io/example/dump:1.0",
            "docker",
            "exact",
            "process QC_REPORT:CUSTOM_DUMP; from nextflow inspect",
        ),
        ("quay.io/example/base:1.0", "docker", "exact", "process PLAIN; from nextflow inspect"),
    ]


def test_parse_inspect_singularity_applies_the_registry_its_dry_run_leaves_out() -> None:
    config = NextflowConfig(scopes={"singularity.registry": "quay.io"})
    text = (INSPECT / "singularity.json").read_text()
    refs = nextflow_inspect.parse_inspect(text, PIPELINE / "main.nf", "singularity", config)
    assert [(r.tag, r.kind) for r in refs] == [
        ("quay.io/ubuntu:24.04", "docker"),
        ("https://sif.example.org/singularity/fastqc:0.12.1--hdfd78af_0", "sif-url"),
        ("quay.io/biocontainers/multiqc:1.19--pyhdfd78af_0", "docker"),
        ("/shared/images/offline-tiny.sif", "local"),
    ]
    assert refs[1].note == "process FASTQC, FASTQC_TRIMMED; from nextflow inspect"


def test_parse_inspect_refuses_anything_else() -> None:
    with pytest.raises(ContainerEngineException, match="other than its JSON report"):
        nextflow_inspect.parse_inspect(
            "N E X T F L O W  ~  version 25.04.0\n", PIPELINE / "main.nf", "docker"
        )


@pytest.fixture
def fake_nextflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in ``nextflow`` (none is installed here) that records how it was called, the
    engine config and params file it was given, and prints a recorded inspect report."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.json"
    script = bin_dir / "nextflow"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "args = sys.argv[1:]\n"
        "def after(flag):\n"
        "    return open(args[args.index(flag) + 1]).read() if flag in args else None\n"
        f"json.dump({{'args': args, 'cwd': os.getcwd(), 'config': after('-c'),"
        f" 'params': after('-params-file')}}, open({str(log)!r}, 'w'))\n"
        "if os.environ.get('FAKE_NEXTFLOW_FAIL'):\n"
        "    sys.stderr.write('ERROR ~ Unknown process directive: contaner\\n')\n"
        "    sys.exit(1)\n"
        f"sys.stdout.write(open({str(INSPECT / 'docker.json')!r}).read())\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    yield log


def test_inspect_runs_nextflow_for_the_engine_profiles_and_params(fake_nextflow: Path) -> None:
    options = ScanOptions(
        engine="podman", profiles=["test", "pinned"], params={"x": 1}, nextflow_inspect=True
    )
    refs = nextflow.scan(PIPELINE, options)
    call = json.loads(fake_nextflow.read_text())
    args = call["args"]
    assert args[args.index("inspect") :] == [
        "inspect",
        "-format",
        "json",
        "-profile",
        "test,pinned",
        "-params-file",
        args[args.index("-params-file") + 1],
        str(PIPELINE / "main.nf"),
    ]
    assert call["config"] == "podman.enabled = true\n"
    assert json.loads(call["params"]) == {"x": 1}
    assert Path(call["cwd"]) == PIPELINE
    assert len(refs) == 6 and all(r.confidence == "exact" and r.line == 0 for r in refs)


def test_a_failing_inspect_carries_command_exit_code_and_stderr(
    fake_nextflow: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NEXTFLOW_FAIL", "1")
    with pytest.raises(ContainerEngineException) as info:
        nextflow.scan(PIPELINE, ScanOptions(nextflow_inspect=True))
    assert info.value.returncode == 1
    assert "Unknown process directive" in info.value.stderr_tail
    assert "inspect -format json" in str(info.value)


# -- hostile and broken inputs ------------------------------------------------------------------


@pytest.fixture
def quickly() -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < QUICK_S


def test_an_include_config_cycle_is_refused_naming_the_chain(tmp_path: Path, quickly: None) -> None:
    project = _config(tmp_path, "includeConfig 'conf/a.config'\n")
    (project / "conf").mkdir()
    (project / "conf" / "a.config").write_text("includeConfig 'b.config'\n")
    (project / "conf" / "b.config").write_text("process.container = 'x'\nincludeConfig 'a.config'\n")
    with pytest.raises(
        UnsafeInputError, match=r"include cycle: .*conf/a\.config -> .*conf/b\.config -> .*a\.config"
    ):
        scan_paths([project])


def test_an_include_config_cycle_in_a_profile_is_refused(tmp_path: Path, quickly: None) -> None:
    project = _config(tmp_path, "profiles { loop { includeConfig 'nextflow.config' } }\n")
    with pytest.raises(UnsafeInputError, match="include cycle"):
        nextflow.scan(project, ScanOptions(profiles=["loop"]))


def test_a_module_include_cycle_is_refused(tmp_path: Path, quickly: None) -> None:
    (tmp_path / "main.nf").write_text("include { B } from './b'\nworkflow { B() }\n")
    (tmp_path / "b.nf").write_text("include { A } from './main'\nworkflow B { A() }\n")
    with pytest.raises(UnsafeInputError, match=r"include cycle: .*main\.nf -> .*b\.nf -> .*main\.nf"):
        scan_paths([tmp_path / "main.nf"])


def test_a_50_mb_script_is_refused_unread(tmp_path: Path, quickly: None) -> None:
    big = tmp_path / "big.nf"
    with open(big, "wb") as f:
        f.truncate(50 << 20)
    with pytest.raises(UnsafeInputError, match=r"big\.nf is 52428800 bytes"):
        scan_paths([big])


def test_a_50_mb_config_is_refused_unread(tmp_path: Path, quickly: None) -> None:
    with open(tmp_path / "nextflow.config", "wb") as f:
        f.truncate(50 << 20)
    with pytest.raises(UnsafeInputError, match=r"nextflow\.config is 52428800 bytes"):
        scan_paths([tmp_path])


@pytest.mark.parametrize(
    "container",
    ['"' + '${"' * 3000 + "x" + '"}' * 3000 + '"', "(" * 20000 + "'x'" + ")" * 20000],
    ids=["interpolations", "parentheses"],
)
def test_nesting_past_the_bound_is_refused(tmp_path: Path, container: str, quickly: None) -> None:
    (tmp_path / "deep.nf").write_text(f"process P {{\n    container {container}\n}}\n")
    with pytest.raises(UnsafeInputError, match=r"deep\.nf:2: .*nested too deeply"):
        scan_paths([tmp_path / "deep.nf"])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("process P {\n    container 'unterminated\n}\n", r"bad\.nf:2: unterminated string"),
        ("/* never closed\nprocess P {}\n", r"bad\.nf:1: unterminated /\* comment"),
        ("include { X } from './nowhere'\n", r"bad\.nf:1: include from './nowhere': no such module"),
    ],
)
def test_broken_scripts_are_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "bad.nf").write_text(text)
    with pytest.raises(WorkflowScanError, match=match):
        scan_paths([tmp_path / "bad.nf"])


def test_no_groovy_runs(tmp_path: Path) -> None:
    """Code with side effects in every place a config or script can hold it stays text."""
    marker = tmp_path / "ran"
    project = _config(
        tmp_path,
        f"new File('{marker}').text = 'config'\n"
        f"process.container = {{ new File('{marker}').text = 'x'; 'img:1' }}\n",
    )
    (project / "main.nf").write_text(
        f"new File('{marker}').text = 'script'\n"
        f"process P {{\n container \"${{ new File('{marker}').text = 'y' }}\"\n script: 'true'\n}}\n"
    )
    refs = nextflow.scan(project, ScanOptions())
    assert not marker.exists()
    assert [(r.tag, r.confidence) for r in refs] == [(None, "dynamic")]

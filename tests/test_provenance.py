"""Provenance records: exact round trips, the reference's shapes, and refusal of code."""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wfexs_like.errors import ContainerFactoryException, ProvenanceError
from wfexs_like.model import Container, ContainerType
from wfexs_like.provenance import (
    FORMAT_KEY,
    KNOWN_TAGS,
    container_from_dict,
    container_to_dict,
    dump_containers,
    load_containers,
    read_containers_file,
    write_containers_file,
)

# --------------------------------------------------------------------------
# Strategies

# Strings a YAML 1.1 reader would re-type, or that mean syntax, if written bare.
YAML_AMBIGUOUS = [
    "yes", "no", "Yes", "NO", "on", "Off", "y", "n", "true", "False", "TRUE",
    "null", "Null", "NULL", "~", "", " ", "  ",
    "1", "-1", "1.0", "1e3", "0x1F", "0o17", "017", "0b101", "1_000", "1:20", "190:20:30",
    ".inf", "-.Inf", ".NaN", "+12", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
    ":", "a: b", "a:b", "- a", "-", "? x", "?", "#", "# c", "a #c", "&a", "*a", "!tag", "!!str",
    "%YAML 1.1", "@", "`", "'", '"', "''", "[a]", "{a: 1}", "|", ">", "<<", "=", ",",
    "\t", "\n", "a\nb", "a\n", "\r\n", " lead", "trail ", "a  b", "\ufeff", "\x85", "\u2028",
    "\u2029", "\x00", "\x07", "\x7f", "---", "...", "--- a", "\U0001f433", "caf\u00e9",
    "\udcff", "docker://quay.io/biocontainers/samtools:1.15--h1170115_1",
    "sha256:" + "0" * 64, "sha256=mLtnUq5hHR8jAb1WuwJmHoRZ5TMSPJaHbPU/CSGhoFs=",
]  # fmt: skip

# Surrogates included: a path decoded with surrogateescape carries them.
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
texts = st.one_of(st.sampled_from(YAML_AMBIGUOUS), any_text)
optional_texts = st.none() | texts
paths = st.none() | st.builds(Path, texts) | st.lists(texts, max_size=4).map(lambda parts: Path(*parts))
types = st.sampled_from([*ContainerType, ContainerType.Apptainer])
registries = st.none() | st.dictionaries(types, texts, max_size=4)

containers = st.builds(
    Container,
    origTaggedName=texts,
    type=types,
    registries=registries,
    taggedName=texts,
    architecture=optional_texts,
    operatingSystem=optional_texts,
    localPath=paths,
    signature=optional_texts,
    fingerprint=optional_texts,
    metadataLocalPath=paths,
    source_type=st.none() | types,
    image_signature=optional_texts,
)
container_lists = st.lists(containers, max_size=4)


# --------------------------------------------------------------------------
# Our format round trips exactly


@settings(max_examples=300, deadline=None)
@given(container_lists)
def test_round_trip_is_exact(cs: list[Container]) -> None:
    text = dump_containers(cs)
    assert isinstance(text, str)
    assert load_containers(text) == cs


@settings(deadline=None)
@given(container_lists)
def test_round_trip_through_bytes_and_streams(cs: list[Container]) -> None:
    out = io.StringIO()
    assert dump_containers(cs, out) is None
    text = out.getvalue()
    assert text == dump_containers(cs)
    assert load_containers(io.StringIO(text)) == cs
    assert load_containers(text.encode("utf-8")) == cs
    assert load_containers(io.BytesIO(text.encode("utf-8"))) == cs


@settings(deadline=None)
@given(containers)
def test_dict_round_trip(c: Container) -> None:
    assert container_from_dict(container_to_dict(c)) == c


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(container_lists)
def test_file_round_trip(cs: list[Container]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "containers.yaml"
        write_containers_file(cs, path)
        assert read_containers_file(path) == cs
        assert os.listdir(tmp) == ["containers.yaml"]


@settings(deadline=None)
@given(container_lists)
def test_our_format_is_plain_yaml(cs: list[Container]) -> None:
    """No tag at all: any safe YAML reader, in any language, gets plain data."""
    text = dump_containers(cs)
    plain = {"tag:yaml.org,2002:" + t for t in ("str", "null", "int", "map", "seq")}
    stack = [yaml.compose(text)]
    while stack:
        node = stack.pop()
        assert node.tag in plain
        if isinstance(node.value, list):
            stack.extend(n for item in node.value for n in (item if isinstance(item, tuple) else (item,)))
    data = yaml.safe_load(text)
    assert data[FORMAT_KEY] == 1
    assert [d["origTaggedName"] for d in data["containers"]] == [c.origTaggedName for c in cs]


@pytest.mark.parametrize("odd", YAML_AMBIGUOUS)
def test_yaml_ambiguous_strings_keep_their_type(odd: str) -> None:
    c = Container(
        origTaggedName=odd,
        type=ContainerType.Docker,
        registries={ContainerType.Podman: odd},
        taggedName=odd,
        architecture=odd,
        signature=odd,
        localPath=Path(odd) if odd else None,
    )
    (back,) = load_containers(dump_containers([c]))
    assert back == c
    assert type(back.taggedName) is str


def test_document_shape() -> None:
    c = Container(
        origTaggedName="samtools:1.15",
        type=ContainerType.Singularity,
        registries={ContainerType.Docker: "quay.io"},
        taggedName="docker://quay.io/biocontainers/samtools:1.15",
        localPath=Path("/wd/containers/samtools.sif"),
        source_type=ContainerType.Docker,
    )
    data = yaml.safe_load(dump_containers([c]))
    assert data == {
        "wfexs_like_containers": 1,
        "containers": [
            {
                "origTaggedName": "samtools:1.15",
                "type": "singularity",
                "registries": {"docker": "quay.io"},
                "taggedName": "docker://quay.io/biocontainers/samtools:1.15",
                "architecture": None,
                "operatingSystem": None,
                "localPath": "/wd/containers/samtools.sif",
                "signature": None,
                "fingerprint": None,
                "metadataLocalPath": None,
                "source_type": "docker",
                "image_signature": None,
            }
        ],
    }


def test_our_format_gets_no_defaults_fixes() -> None:
    c = Container("ubuntu:24.04", ContainerType.Podman, localPath=Path("/wd/ubuntu.tar"))
    (back,) = load_containers(dump_containers([c]))
    assert back.metadataLocalPath is None
    assert back.source_type is None


def test_bare_list_of_records() -> None:
    text = """
- origTaggedName: busybox:1.36
  type: docker
  registries: {podman: quay.io}
- {origTaggedName: alpine, type: Podman, localPath: /wd/alpine.tar}
"""
    assert load_containers(text) == [
        Container("busybox:1.36", ContainerType.Docker, {ContainerType.Podman: "quay.io"}),
        Container("alpine", ContainerType.Podman, localPath=Path("/wd/alpine.tar")),
    ]


def test_empty_list_round_trips() -> None:
    assert load_containers(dump_containers([])) == []


# --------------------------------------------------------------------------
# Records written by WfExS-backend

# Marshalled form. Shape from inab/WfExS-backend: `wfexs_backend/common.py`
# (early versions: `Container` is a NamedTuple with origTaggedName, taggedName,
# type, localPath, signature, fingerprint), `wfexs_backend/utils/
# marshalling_handling.py` (`marshall_namedtuple`: `_type: <class>`, enums as
# `{_enum: <class>, value: ...}`) and `wfexs_backend/workflow.py`
# (`marshallStage`: the stage dict, `yaml.dump(..., Dumper=YAMLDumper)`, keys
# sorted). Only the `containers` list is read; the rest is plain data.
WFEXS_MARSHALLED_STAGE = """\
containers:
- _type: Container
  fingerprint: quay.io/biocontainers/samtools@sha256:9c9b3f1f0a5e8b5e5c0e6c7d8e9f0a1b
  localPath: /home/user/wfexs/wd/0ab1/containers/quay.io_biocontainers_samtools_1.15--h1170115_1.img
  origTaggedName: quay.io/biocontainers/samtools:1.15--h1170115_1
  signature: sha256=mLtnUq5hHR8jAb1WuwJmHoRZ5TMSPJaHbPU/CSGhoFs=
  taggedName: docker://quay.io/biocontainers/samtools:1.15--h1170115_1
  type:
    _enum: ContainerType
    value: singularity
- _type: Container
  fingerprint: ubuntu@sha256:0a1b2c3d
  localPath: null
  origTaggedName: ubuntu:20.04
  signature: null
  taggedName: ubuntu:20.04
  type:
    _enum: ContainerType
    value: docker
engineDesc:
  _type: WorkflowType
  engineName: nextflow
  name: Nextflow
engineVer: 21.04.1
materializedEngine:
  _type: MaterializedWorkflowEngine
  engine_path: /home/user/.cache/wfexs/engines/nextflow/21.04.1
  fingerprint: 21.04.1
  instance:
    _instance_of: NextflowWorkflowEngine
  version: 21.04.1
  workflow:
    _type: LocalWorkflow
    dir: /home/user/.cache/wfexs/wf-cache/7a9b
    effectiveCheckout: 3b6e8f3d6b2a7c1f
    langVersion: DSL2
    relPath: main.nf
materializedParams:
- _type: MaterializedInput
  name: input
  values:
  - _type: MaterializedContent
    kind:
      _enum: ContentKind
      value: file
    local: /home/user/wfexs/wd/0ab1/inputs/reads.fastq.gz
    prettyFilename: reads.fastq.gz
    uri: https://example.org/reads.fastq.gz
repoEffectiveCheckout: 3b6e8f3d6b2a7c1f
repoRelPath: main.nf
repoTag: main
repoURL: https://github.com/inab/ipc_workflows.git
"""

# Legacy form, dataclass era, class still in `wfexs_backend/common.py` (first
# record: with `registries` and `metadataLocalPath`; second: an older one
# without them, still with `architecture`). `marshall_namedtuple` passes these
# dataclasses through untouched, so `yaml.dump` with the full dumper wrote
# Python-object tags; the reference reads them back through
# `Container.RegisterYAMLConstructor` (`container_factories/__init__.py`).
# Text produced with PyYAML's full Dumper from classes of that shape.
WFEXS_LEGACY_COMMON = """\
containers:
- !!python/object:wfexs_backend.common.Container
  architecture: amd64
  fingerprint: quay.io/biocontainers/samtools@sha256:9c9b3f1f0a
  localPath: /home/user/wfexs/wd/0ab1/containers/quay.io_biocontainers_samtools_1.15--h1170115_1.sif
  metadataLocalPath: null
  operatingSystem: linux
  origTaggedName: quay.io/biocontainers/samtools:1.15--h1170115_1
  registries:
    ? !!python/object/apply:wfexs_backend.common.ContainerType
    - docker
    : quay.io
  signature: sha256=mLtnUq5hHR8jAb1WuwJmHoRZ5TMSPJaHbPU/CSGhoFs=
  taggedName: docker://quay.io/biocontainers/samtools:1.15--h1170115_1
  type: !!python/object/apply:wfexs_backend.common.ContainerType
  - singularity
- !!python/object:wfexs_backend.common.Container
  architecture: x86_64
  fingerprint: docker.io/library/ubuntu@sha256:0a1b2c3d
  localPath: /home/user/wfexs/wd/0ab1/containers/ubuntu_22.04.tar
  operatingSystem: linux
  origTaggedName: ubuntu:22.04
  signature: sha256=3q2+7w==
  taggedName: docker.io/library/ubuntu:22.04
  type: !!python/object/apply:wfexs_backend.common.ContainerType
  - podman
"""

# Legacy form after the class moved to `wfexs_backend/container_factories/
# __init__.py` and its paths became `pathlib.Path` (`PathlibLike`), with
# `source_type` and `image_signature`. The full dumper anchors the repeated
# enum. Produced with PyYAML's full Dumper on Python 3.11 from that shape.
WFEXS_LEGACY_FACTORIES = """\
- !!python/object:wfexs_backend.container_factories.Container
  architecture: amd64
  fingerprint: docker.io/library/ubuntu@sha256:0123abcd
  image_signature: sha256=xyz0
  localPath: !!python/object/apply:pathlib.PosixPath
  - /
  - home
  - user
  - wfexs
  - wd
  - containers
  - ubuntu_22.04
  metadataLocalPath: !!python/object/apply:pathlib.PosixPath
  - /
  - home
  - user
  - wfexs
  - wd
  - containers
  - ubuntu_22.04_meta.json
  operatingSystem: linux
  origTaggedName: ubuntu:22.04
  registries: null
  signature: sha256=abc0
  source_type: &id001 !!python/object/apply:wfexs_backend.common.ContainerType
  - docker
  taggedName: docker.io/library/ubuntu:22.04
  type: *id001
"""


def test_wfexs_marshalled_stage_state() -> None:
    samtools, ubuntu = load_containers(WFEXS_MARSHALLED_STAGE)
    sif = Path("/home/user/wfexs/wd/0ab1/containers/quay.io_biocontainers_samtools_1.15--h1170115_1.img")
    assert samtools == Container(
        origTaggedName="quay.io/biocontainers/samtools:1.15--h1170115_1",
        type=ContainerType.Singularity,
        taggedName="docker://quay.io/biocontainers/samtools:1.15--h1170115_1",
        localPath=sif,
        signature="sha256=mLtnUq5hHR8jAb1WuwJmHoRZ5TMSPJaHbPU/CSGhoFs=",
        fingerprint="quay.io/biocontainers/samtools@sha256:9c9b3f1f0a5e8b5e5c0e6c7d8e9f0a1b",
        # Filled by the reference's defaults fixes: old records lack both.
        metadataLocalPath=sif.with_name(sif.name + "_meta.json"),
        source_type=ContainerType.Docker,
    )
    assert ubuntu == Container(
        origTaggedName="ubuntu:20.04",
        type=ContainerType.Docker,
        taggedName="ubuntu:20.04",
        fingerprint="ubuntu@sha256:0a1b2c3d",
        source_type=ContainerType.Docker,
    )


def test_wfexs_legacy_common_container() -> None:
    samtools, ubuntu = load_containers(WFEXS_LEGACY_COMMON)
    sif = Path("/home/user/wfexs/wd/0ab1/containers/quay.io_biocontainers_samtools_1.15--h1170115_1.sif")
    assert samtools == Container(
        origTaggedName="quay.io/biocontainers/samtools:1.15--h1170115_1",
        type=ContainerType.Singularity,
        registries={ContainerType.Docker: "quay.io"},
        taggedName="docker://quay.io/biocontainers/samtools:1.15--h1170115_1",
        architecture="amd64",
        operatingSystem="linux",
        localPath=sif,
        signature="sha256=mLtnUq5hHR8jAb1WuwJmHoRZ5TMSPJaHbPU/CSGhoFs=",
        fingerprint="quay.io/biocontainers/samtools@sha256:9c9b3f1f0a",
        metadataLocalPath=Path(str(sif) + "_meta.json"),
        source_type=ContainerType.Docker,
    )
    tar = Path("/home/user/wfexs/wd/0ab1/containers/ubuntu_22.04.tar")
    assert ubuntu == Container(
        origTaggedName="ubuntu:22.04",
        type=ContainerType.Podman,
        taggedName="docker.io/library/ubuntu:22.04",
        architecture="x86_64",
        operatingSystem="linux",
        localPath=tar,
        signature="sha256=3q2+7w==",
        fingerprint="docker.io/library/ubuntu@sha256:0a1b2c3d",
        metadataLocalPath=Path(str(tar) + "_meta.json"),
        # Podman images come from docker registries, as the reference assumes.
        source_type=ContainerType.Docker,
    )


def test_wfexs_legacy_container_factories_with_pathlib() -> None:
    (ubuntu,) = load_containers(WFEXS_LEGACY_FACTORIES)
    wd = Path("/home/user/wfexs/wd/containers")
    assert ubuntu == Container(
        origTaggedName="ubuntu:22.04",
        type=ContainerType.Docker,
        taggedName="docker.io/library/ubuntu:22.04",
        architecture="amd64",
        operatingSystem="linux",
        localPath=wd / "ubuntu_22.04",
        signature="sha256=abc0",
        fingerprint="docker.io/library/ubuntu@sha256:0123abcd",
        metadataLocalPath=wd / "ubuntu_22.04_meta.json",
        source_type=ContainerType.Docker,
        image_signature="sha256=xyz0",
    )


def test_wfexs_python313_pathlib_and_single_record() -> None:
    # Python 3.13 pickles paths as ``pathlib._local.PosixPath`` with one argument.
    text = """\
!!python/object:wfexs_backend.container_factories.Container
localPath: !!python/object/apply:pathlib._local.PosixPath
- /wd/containers/busybox.sif
origTaggedName: busybox
taggedName: docker://busybox
type: !!python/object/apply:wfexs_backend.common.ContainerType [singularity]
"""
    (c,) = load_containers(text)
    assert c.localPath == Path("/wd/containers/busybox.sif")
    assert c.metadataLocalPath == Path("/wd/containers/busybox.sif_meta.json")
    assert c.source_type is ContainerType.Docker


def test_wfexs_marshalled_registries_with_enum_keys() -> None:
    text = """\
- _type: Container
  origTaggedName: samtools
  type: {_enum: ContainerType, value: singularity}
  registries:
    ? {_enum: ContainerType, value: docker}
    : quay.io
  taggedName: docker://quay.io/biocontainers/samtools
  source_type: {_enum: ContainerType, value: singularity}
"""
    (c,) = load_containers(text)
    assert c.registries == {ContainerType.Docker: "quay.io"}
    assert c.source_type is ContainerType.Singularity  # present, so left alone


def test_wfexs_tagged_name_record() -> None:
    (c,) = load_containers("- {_type: ContainerTaggedName, origTaggedName: busybox, type: docker}")
    assert c == Container("busybox", ContainerType.Docker, source_type=ContainerType.Docker)


def test_wfexs_stage_state_without_containers() -> None:
    assert load_containers("containers: null\nrepoURL: https://example.org/wf.git\n") == []


def test_unknown_fields_from_newer_reference_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = WFEXS_LEGACY_FACTORIES.replace(
        "  operatingSystem: linux\n",
        "  operatingSystem: linux\n  engine_version: '27.1'\n  layers: [a, b]\n",
    )
    with caplog.at_level(logging.WARNING, logger="wfexs_like.provenance"):
        (c,) = load_containers(text)
    assert c == load_containers(WFEXS_LEGACY_FACTORIES)[0]
    assert "'engine_version'" in caplog.text
    assert "'layers'" in caplog.text
    assert "line 1" in caplog.text


def test_loader_leaves_pyyaml_safe_loader_alone() -> None:
    for tag in KNOWN_TAGS:
        assert tag not in yaml.SafeLoader.yaml_constructors
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load(WFEXS_LEGACY_COMMON)


# --------------------------------------------------------------------------
# Malicious documents are refused before anything is built


def _payloads(target: Path) -> dict[str, str]:
    return {
        "os.system": f"- !!python/object/apply:os.system ['touch {target}']\n",
        "os.system in a field": (
            "wfexs_like_containers: 1\ncontainers:\n- origTaggedName: x\n  type: docker\n"
            f"  signature: !!python/object/apply:os.system ['touch {target}']\n"
        ),
        "os.system as a key": f"- {{? !!python/object/apply:os.system ['touch {target}'] : 1}}\n",
        "os.system behind an alias": (
            f"a: &p !!python/object/apply:os.system ['touch {target}']\ncontainers: [*p]\n"
        ),
        "os.system after valid records": WFEXS_LEGACY_COMMON
        + f"evil: !!python/object/apply:os.system ['touch {target}']\n",
        "subprocess": f"- !!python/object/apply:subprocess.check_call [[touch, '{target}']]\n",
        "object/new": f"- !!python/object/new:os.system ['touch {target}']\n",
        "os.mkdir": f"- !!python/object/apply:os.mkdir ['{target}']\n",
    }


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "os.system in a field",
        "os.system as a key",
        "os.system behind an alias",
        "os.system after valid records",
        "subprocess",
        "object/new",
        "os.mkdir",
    ],
)
def test_code_execution_payloads_are_refused_and_never_run(tmp_path: Path, name: str) -> None:
    target = tmp_path / "pwned"
    text = _payloads(target)[name]
    with pytest.raises(ProvenanceError) as info:
        load_containers(text)
    message = str(info.value)
    assert "!!python/object" in message
    assert "construct Python objects" in message
    assert "refused" in message
    assert "line " in message
    assert not target.exists()

    path = tmp_path / "stage-state.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProvenanceError, match="construct Python objects") as info:
        read_containers_file(path)
    assert str(path) in str(info.value)
    assert not target.exists()


def test_payload_control_the_same_text_is_live_under_an_unsafe_loader(tmp_path: Path) -> None:
    """Guards the test above against a payload that would never have run anyway."""
    target = tmp_path / "pwned"
    yaml.unsafe_load(_payloads(target)["os.mkdir"])
    assert target.is_dir()


@pytest.mark.parametrize(
    ("text", "tag", "line"),
    [
        ("- !!python/object/apply:os.system ['id']\n", "!!python/object/apply:os.system", 1),
        ("containers:\n- !!python/object/new:os.system ['id']\n", "!!python/object/new:os.system", 2),
        ("a: 1\nb: !!python/name:os.system\n", "!!python/name:os.system", 2),
        ("a: 1\n\nb: !!python/module:os\n", "!!python/module:os", 3),
        ("- !!python/object:builtins.dict {}\n", "!!python/object:builtins.dict", 1),
        ("- !!python/bytes 'AAAA'\n", "!!python/bytes", 1),
        # Look-alikes of the whitelisted tags.
        (
            "- !!python/object:wfexs_backend.common.Container.__init__ {}\n",
            "!!python/object:wfexs_backend.common.Container.__init__",
            1,
        ),
        (
            "x: !!python/object/apply:pathlib.Path.write_text [x]\n",
            "!!python/object/apply:pathlib.Path.write_text",
            1,
        ),
        (
            "x: !!python/object/new:wfexs_backend.common.Container [a, b]\n",
            "!!python/object/new:wfexs_backend.common.Container",
            1,
        ),
    ],
)
def test_python_tags_are_named_with_their_line(text: str, tag: str, line: int) -> None:
    with pytest.raises(ProvenanceError) as info:
        load_containers(text)
    message = str(info.value)
    assert tag in message
    assert f"line {line}," in message
    assert "construct Python objects" in message
    assert isinstance(info.value, ContainerFactoryException)


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("- !pwn {origTaggedName: a, type: docker}\n", "!pwn"),
        ("- !<tag:example.com,2024:container> {origTaggedName: a}\n", "tag:example.com,2024:container"),
        ("- {origTaggedName: !!value '=', type: docker}\n", "!!value"),
    ],
)
def test_unknown_tags_are_refused(text: str, tag: str) -> None:
    with pytest.raises(ProvenanceError, match="unknown tag") as info:
        load_containers(text)
    assert tag in str(info.value)
    assert "line 1," in str(info.value)


def test_whitelisted_enum_tag_with_object_state_is_refused() -> None:
    text = (
        "- origTaggedName: a\n"
        "  type: !!python/object/apply:wfexs_backend.common.ContainerType\n"
        "    args: [docker]\n"
        "    state: {__class__: x}\n"
    )
    with pytest.raises(ProvenanceError, match="plain list of arguments"):
        load_containers(text)


def test_whitelisted_container_tag_on_a_scalar_is_refused() -> None:
    with pytest.raises(ProvenanceError, match="must be a mapping"):
        load_containers("- !!python/object:wfexs_backend.common.Container 'os.system'\n")


# --------------------------------------------------------------------------
# Malformed records say what and where


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("containers: [\n", r"line 2, column 1: malformed YAML"),
        ("a: b\n c: d\n", r"line 2, column 3: malformed YAML"),
        ("", r"empty document"),
        ("--- []\n--- []\n", r"malformed YAML"),
        (
            "wfexs_like_containers: 1\ncontainers:\n- {origTaggedName: a, type: docker}\n- {type: docker}\n",
            r"containers\[1\] \(line 4\): missing required field 'origTaggedName'",
        ),
        ("- {origTaggedName: a}\n", r"record 0 \(line 1\): missing required field 'type'"),
        ("- {origTaggedName: a, type: rkt}\n", r"record 0 \(line 1\): unknown container type 'rkt'"),
        (
            "- !!python/object:wfexs_backend.common.Container\n"
            "  origTaggedName: a\n"
            "  type: !!python/object/apply:wfexs_backend.common.ContainerType [lxc]\n",
            r"line 3: unknown container type 'lxc'",
        ),
        (
            "- {origTaggedName: a, type: {_enum: ContentKind, value: file}}\n",
            r"marshalled 'ContentKind'",
        ),
        ("- {_type: MaterializedInput, name: a}\n", r"'MaterializedInput' record is not a container"),
        ("- {origTaggedName: a, type: docker, taggedName: 1.0}\n", r"taggedName is float 1\.0"),
        ("- {origTaggedName: [a], type: docker}\n", r"origTaggedName is list"),
        ("- {origTaggedName: a, type: docker, localPath: 12}\n", r"localPath is int"),
        ("- {origTaggedName: a, type: docker, registries: [quay.io]}\n", r"registries is list"),
        (
            "- {origTaggedName: a, type: docker, registries: {rkt: quay.io}}\n",
            r"unknown container type 'rkt'",
        ),
        ("- 42\n", r"record 0 \(line 1\): expected a container record"),
        ("wfexs_like_containers: 2\ncontainers: []\n", r"format 2 by a newer wfexs-like"),
        ("wfexs_like_containers: yes\ncontainers: []\n", r"expected a format version"),
        ("wfexs_like_containers: 1\n", r"missing the 'containers' list"),
        ("wfexs_like_containers: 1\ncontainers: {a: 1}\n", r"'containers' is dict"),
        ("just text\n", r"not a containers record"),
        ("- {[a]: 1}\n", r"line 1: a list cannot be a mapping key"),
        ("- {origTaggedName: !!int abc, type: docker}\n", r"malformed YAML"),
        ("[" * 3000, r"nested too deeply|malformed YAML"),
    ],
)
def test_malformed_records(text: str, expected: str) -> None:
    with pytest.raises(ProvenanceError, match=expected):
        load_containers(text)


def test_invalid_encoding_is_a_provenance_error() -> None:
    with pytest.raises(ProvenanceError, match="malformed YAML"):
        load_containers(b"containers: \xff\xfe\n")


def test_load_containers_refuses_a_path_object(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="read_containers_file"):
        load_containers(tmp_path / "x.yaml")  # type: ignore[arg-type]


def test_stream_name_appears_in_messages(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- {origTaggedName: a}\n", encoding="utf-8")
    with path.open(encoding="utf-8") as handle, pytest.raises(ProvenanceError, match=r"bad\.yaml"):
        load_containers(handle)


def test_read_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ProvenanceError, match=r"missing\.yaml"):
        read_containers_file(missing)
    with pytest.raises(ProvenanceError, match=re.escape(str(tmp_path))):
        read_containers_file(tmp_path)  # a directory
    bad = tmp_path / "bad.yaml"
    bad.write_text("containers: [\n", encoding="utf-8")
    with pytest.raises(ProvenanceError, match=r"bad\.yaml: line 2, column 1: malformed YAML"):
        read_containers_file(bad)
    legacy = tmp_path / "legacy.yaml"
    legacy.write_text(WFEXS_LEGACY_COMMON, encoding="utf-8")
    assert read_containers_file(legacy) == load_containers(WFEXS_LEGACY_COMMON)


# --------------------------------------------------------------------------
# Dumping refuses what would not load back equal


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("origTaggedName", None, "origTaggedName is NoneType"),
        ("taggedName", 3, "taggedName is int"),
        ("signature", b"sha256:00", "signature is bytes"),
        ("type", "docker", "expected a ContainerType"),
        ("source_type", 1, "expected a ContainerType"),
        ("registries", {"docker": "quay.io"}, "expected a ContainerType"),
        ("registries", {ContainerType.Docker: None}, "expected text"),
        ("registries", ["quay.io"], "expected a mapping"),
        ("localPath", 7, "expected a path"),
        ("localPath", b"/x", "expected a path"),
    ],
)
def test_dump_refuses_values_that_would_not_round_trip(field: str, value: object, expected: str) -> None:
    c = Container("a", ContainerType.Docker)
    setattr(c, field, value)
    with pytest.raises(ProvenanceError, match=expected):
        dump_containers([c])


def test_dump_refuses_non_containers() -> None:
    with pytest.raises(ProvenanceError, match="expected a Container"):
        dump_containers([{"origTaggedName": "a", "type": "docker"}])  # type: ignore[list-item]


def test_failed_dump_writes_nothing_to_the_stream() -> None:
    bad = Container("b", ContainerType.Docker)
    bad.taggedName = 3  # type: ignore[assignment]
    out = io.StringIO()
    with pytest.raises(ProvenanceError):
        dump_containers([Container("a", ContainerType.Docker), bad], out)
    assert out.getvalue() == ""


# --------------------------------------------------------------------------
# Atomic writes

GOOD = [Container("busybox:1.36", ContainerType.Docker, taggedName="docker.io/library/busybox:1.36")]


def test_write_replaces_previous_content(tmp_path: Path) -> None:
    path = tmp_path / "containers.yaml"
    write_containers_file([Container("old", ContainerType.Podman)], path)
    write_containers_file(GOOD, path)
    assert read_containers_file(path) == GOOD
    assert sorted(os.listdir(tmp_path)) == ["containers.yaml"]


def test_written_file_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_containers_file(GOOD, tmp_path / "c.yaml")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.yaml").stat().st_mode) == 0o640


def test_unrecordable_container_leaves_the_final_path_absent(tmp_path: Path) -> None:
    bad = Container("b", ContainerType.Docker)
    bad.origTaggedName = object()  # type: ignore[assignment]
    path = tmp_path / "containers.yaml"
    with pytest.raises(ProvenanceError):
        write_containers_file([*GOOD, bad], path)
    assert os.listdir(tmp_path) == []


def test_unrecordable_container_leaves_previous_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "containers.yaml"
    write_containers_file(GOOD, path)
    before = path.read_bytes()
    bad = Container("b", ContainerType.Docker)
    bad.type = "docker"  # type: ignore[assignment]
    with pytest.raises(ProvenanceError):
        write_containers_file([bad], path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["containers.yaml"]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failure_mid_write_leaves_no_temp_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "containers.yaml"
    write_containers_file([Container("old", ContainerType.Podman)], path)
    before = path.read_bytes()
    seen: list[str] = []

    def boom(*args: object) -> None:
        seen.extend(os.listdir(tmp_path))  # the temp file exists at this point
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(ProvenanceError, match=r"could not write containers record .*containers\.yaml"):
        write_containers_file(GOOD, path)
    monkeypatch.undo()

    assert any(name.startswith(".containers.yaml.") and name.endswith(".tmp") for name in seen)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["containers.yaml"]


def test_failure_mid_write_with_no_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(ProvenanceError):
        write_containers_file(GOOD, tmp_path / "containers.yaml")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_write_into_missing_directory_is_a_provenance_error(tmp_path: Path) -> None:
    with pytest.raises(ProvenanceError, match="nope"):
        write_containers_file(GOOD, tmp_path / "nope" / "containers.yaml")

"""Provenance records: exact round trips, the reference's shapes, and refusal of code."""

from __future__ import annotations

import copy
import io
import logging
import os
import re
import stat
import tempfile
import typing
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from wfexs_like import provenance
from wfexs_like.errors import ContainerFactoryException, DiskFullError, ProvenanceError
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
        "os.system after valid records, in our format": "wfexs_like_containers: 1\n"
        + WFEXS_LEGACY_COMMON
        + f"evil: !!python/object/apply:os.system ['touch {target}']\n",
        "os.system in a stage state's record": WFEXS_LEGACY_COMMON.replace(
            "  architecture: x86_64\n",
            f"  architecture: !!python/object/apply:os.system ['touch {target}']\n",
        ),
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
        "os.system after valid records, in our format",
        "os.system in a stage state's record",
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
        ("[" * 3000, r"nested (too deeply|more than 200 levels)|malformed YAML"),
        # found by tests/reliability/test_fuzz.py: standard tags whose constructors raise other errors
        ("!!int\n", r"malformed YAML: IndexError"),
        ("- !!bool x\n", r"malformed YAML: KeyError"),
        ("a: !!timestamp x\n", r"malformed YAML: AttributeError"),
        ("_type: []\n", r"a \[\] record is not a container record"),
        # a value read from the file is quoted escaped: it cannot split the message or drive a terminal
        ('containers: "a\\n\\x1b[2K"\n', r"'containers' is str 'a\\n\\x1b\[2K'"),
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
    # A full disk is said as such (the directory and the space it needed), not as a generic failure.
    with pytest.raises(DiskFullError, match=r"no space left in .*writing containers\.yaml"):
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


# --------------------------------------------------------------------------
# WfExS-backend stage states: only the containers section is built

WFEXS_DATA = Path(__file__).parent / "data" / "wfexs"
# Written after `Workflow.marshallStage` (wfexs_backend/workflow.py) as the
# reference writes it since mid 2024: marshalled dataclasses, paths relative to
# the working dir, `engineDesc.uriMatch` compiled regexes.
CWL_STAGE = WFEXS_DATA / "cwl-singularity-stage-state.yaml"
# Same era, Nextflow + Docker: `registries` keys are the enum's own tag, anchored once.
NEXTFLOW_STAGE = WFEXS_DATA / "nextflow-docker-stage-state.yaml"
# Late 2023: the dataclass passed through the marshaller untouched
# (`!!python/object:wfexs_backend.container.Container`), anchored records, absolute paths.
CWL_STAGE_2023 = WFEXS_DATA / "cwl-singularity-stage-state-2023.yaml"
WD_2023 = Path("/home/user/wfexs-backend-test_WorkDir/6f1c0e2a-9d7b-4c55-8e13-2b4a7d9c0f11")

SAMTOOLS_IMG = "quay.io_biocontainers_samtools:1.15--h1170115_1.img"
BWA_IMG = "quay.io_biocontainers_bwa:0.7.17--h7132678_9.img"


def _cwl_stage_records(base: Path) -> list[Container]:
    return [
        Container(
            origTaggedName="quay.io/biocontainers/samtools:1.15--h1170115_1",
            type=ContainerType.Singularity,
            taggedName="docker://quay.io/biocontainers/samtools:1.15--h1170115_1",
            architecture="amd64",
            localPath=base / SAMTOOLS_IMG,
            signature="sha256=dKRQfu8YRKdWs0twk56Fe+tY5OIvOf+CdAGahwVyQ6s=",
            fingerprint="quay.io/biocontainers/samtools@sha256:"
            "b1b3b9a6bc4b9bbb3f284e421f7446da028db4b4ffc7119f1a3c494855616fc5",
            metadataLocalPath=base / (SAMTOOLS_IMG + "_meta.json"),
            source_type=ContainerType.Docker,
            image_signature="sha256=dKRQfu8YRKdWs0twk56Fe+tY5OIvOf+CdAGahwVyQ6s=",
        ),
        Container(
            origTaggedName="quay.io/biocontainers/bwa:0.7.17--h7132678_9",
            type=ContainerType.Singularity,
            taggedName="docker://quay.io/biocontainers/bwa:0.7.17--h7132678_9",
            architecture="amd64",
            localPath=base / BWA_IMG,
            signature="sha256=+h+Hf7/GY/0hinWN0wkFh8eqAAfTtDG4ggm2yZeNugM=",
            fingerprint="quay.io/biocontainers/bwa@sha256:"
            "7f564161503d20fa623057fe7926af7d01bf1c0a9d92ddbc28fceeefa2cc5f6d",
            metadataLocalPath=base / (BWA_IMG + "_meta.json"),
            source_type=ContainerType.Docker,
            image_signature="sha256=+h+Hf7/GY/0hinWN0wkFh8eqAAfTtDG4ggm2yZeNugM=",
        ),
    ]


def test_stage_state_fixtures_carry_foreign_tags_outside_containers() -> None:
    """Guards the tests below: the fixtures hold what a full loader alone could build."""
    for path in (CWL_STAGE, CWL_STAGE_2023):
        text = path.read_text(encoding="utf-8")
        assert "engineDesc:" in text
        assert "!!python/object/apply:re._compile" in text
        assert "!!python/tuple" in text
        with pytest.raises(yaml.constructor.ConstructorError):
            yaml.safe_load(text)


def test_cwl_stage_state_with_compiled_regexes_loads() -> None:
    # Workdir-relative `containers/x.img` is `x.img` relative to the containers dir.
    assert read_containers_file(CWL_STAGE) == _cwl_stage_records(Path())
    b = Path("/elsewhere/B")
    assert read_containers_file(CWL_STAGE, containers_dir=b) == _cwl_stage_records(b)
    text = CWL_STAGE.read_text(encoding="utf-8")
    assert load_containers(text, containers_dir=b) == _cwl_stage_records(b)


def test_nextflow_stage_state_with_aliased_enum_keys_loads() -> None:
    fastqc, multiqc = read_containers_file(NEXTFLOW_STAGE, containers_dir=Path("/B"))
    assert fastqc.registries == multiqc.registries == {ContainerType.Docker: "quay.io"}
    assert fastqc.type is fastqc.source_type is ContainerType.Docker
    assert fastqc.localPath == Path("/B/quay.io-biocontainers-fastqc-0.12.1--hdfd78af_0.img")
    assert multiqc.metadataLocalPath == Path(
        "/B/quay.io-biocontainers-multiqc-1.21--pyhdfd78af_0.img_meta.json"
    )
    assert multiqc.signature == "sha256:6987740fb624e3e9943ec5d9ac5519b72cea1b35fb4bde5719df3923a36c08f7"


def test_dataclass_era_stage_state_keeps_absolute_paths() -> None:
    records = _cwl_stage_records(WD_2023 / "containers")
    for record, (sig, digest) in zip(
        records,
        [
            (
                "sha256=IuQgwXELIgwvIhGGr6adCTs6FitFCUYlDmnMAgNlzz0=",
                "42e5f3536cb247bb5ff076213d53f958822b5fbaf320a310cd337c46954101b5",
            ),
            (
                "sha256=ho6+hgqDw7fcy+YcP1VZOyngL0sVy8u86LJN4114pJA=",
                "0198f366903aaf22d331f7991f1a1b24895ece847cf42ff4ddc4babfc376e3ef",
            ),
        ],
        strict=True,
    ):
        record.signature = record.image_signature = sig
        record.fingerprint = record.fingerprint.rsplit(":", 1)[0] + ":" + digest
    assert read_containers_file(CWL_STAGE_2023) == records
    assert read_containers_file(CWL_STAGE_2023, containers_dir=Path("/B")) == records


def _outside(text: str, key: str, node: str) -> str:
    """``text`` with ``node`` as the value of a new top-level ``key`` after the containers."""
    return text.replace("engineDesc:\n", f"{key}: {node}\nengineDesc:\n", 1)


def test_payloads_outside_a_stage_states_containers_are_never_built(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    live = _outside(
        CWL_STAGE.read_text(encoding="utf-8"), "evil", f"!!python/object/apply:os.mkdir ['{target}']"
    )
    text = live
    for junk in (
        "!!python/object/new:os.system [id]",
        "!!python/name:os.system",
        "!local {a: 1}",
        "!!int abc",  # a standard tag that would fail if it were constructed
        "{? [a] : 1}",  # a key no dict can hold
    ):
        text = _outside(text, "junk" + str(len(text)), junk)
    assert load_containers(text) == _cwl_stage_records(Path())
    assert not target.exists()
    yaml.unsafe_load(live)
    assert target.is_dir()  # the control: the payload is live for a loader that builds it


def test_legacy_stage_state_with_a_payload_after_its_records_is_read(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    text = WFEXS_LEGACY_COMMON + f"evil: !!python/object/apply:os.system ['touch {target}']\n"
    assert load_containers(text) == load_containers(WFEXS_LEGACY_COMMON)
    assert not target.exists()


@pytest.mark.parametrize(
    ("old", "new", "tag", "line"),
    [
        # Line 6 of the fixture is the first record's `architecture`.
        (
            "  architecture: amd64\n",
            "  architecture: !!python/object/apply:os.mkdir ['{target}']\n",
            "!!python/object/apply:os.mkdir",
            6,
        ),
        (
            "- _type: Container\n",
            "- !!python/object/new:os.mkdir\n  _type: Container\n",
            "!!python/object/new:os.mkdir",
            5,
        ),
        (
            "    value: singularity\n",
            "    value: !!python/object/apply:os.mkdir ['{target}']\n",
            "!!python/object/apply:os.mkdir",
            21,
        ),
        ("  registries: null\n", "  registries: {{!pwn x: '{target}'}}\n", "!pwn", 13),
    ],
)
def test_foreign_tag_inside_a_stage_state_record_is_refused(
    tmp_path: Path, old: str, new: str, tag: str, line: int
) -> None:
    target = tmp_path / "pwned"
    text = CWL_STAGE.read_text(encoding="utf-8").replace(old, new.format(target=target), 1)
    path = tmp_path / "stage-state.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProvenanceError) as info:
        read_containers_file(path)
    message = str(info.value)
    assert str(path) in message
    assert tag in message
    assert f"line {line}," in message
    assert "refused" in message
    assert not target.exists()


def test_stage_state_record_aliasing_a_payload_outside_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    text = (
        f"arch: &p !!python/object/apply:os.mkdir ['{target}']\n"
        "containers:\n- {_type: Container, origTaggedName: a, type: {_enum: ContainerType, value: docker}, "
        "architecture: *p}\n"
    )
    with pytest.raises(ProvenanceError, match=r"os\.mkdir") as info:
        load_containers(text)
    assert "line 1," in str(info.value)
    assert not target.exists()


@pytest.mark.parametrize(
    "text",
    [
        # Ours is checked whole, whatever sits beside the records.
        "wfexs_like_containers: 1\ncontainers: []\nx: !!python/object/apply:os.mkdir ['{target}']\n",
        # A top-level merge could bring `containers` from anywhere: checked whole.
        "base: &b {{containers: []}}\n<<: *b\nx: !!python/object/apply:os.mkdir ['{target}']\n",
        # Not a stage state at all.
        "repoURL: x\nx: !!python/object/apply:os.mkdir ['{target}']\n",
    ],
)
def test_documents_that_are_not_stage_states_are_checked_whole(tmp_path: Path, text: str) -> None:
    target = tmp_path / "pwned"
    with pytest.raises(ProvenanceError, match=r"os\.mkdir.*construct Python objects"):
        load_containers(text.format(target=target))
    assert not target.exists()


@pytest.mark.parametrize("empty", ["null", "[]", ""])
def test_stage_state_with_no_containers(empty: str) -> None:
    text = CWL_STAGE.read_text(encoding="utf-8")
    start, end = text.index("containers:\n"), text.index("engineDesc:\n")
    stage = text[:start] + f"containers: {empty}\n" + text[end:]
    assert "!!python/object/apply:re._compile" in stage
    assert load_containers(stage) == []
    assert load_containers(stage, containers_dir=Path("/B")) == []


def test_stage_state_containers_must_be_a_list() -> None:
    with pytest.raises(ProvenanceError, match=r"'containers' is dict"):
        load_containers("containers: {a: 1}\nengineDesc: !!python/object/apply:re._compile [x, 32]\n")


def test_stage_state_relative_paths_outside_the_containers_dir() -> None:
    text = (
        "containers:\n- _type: Container\n  origTaggedName: a\n"
        "  type: {_enum: ContainerType, value: docker}\n"
        "  localPath: cache/a.tar\n  metadataLocalPath: containers/sub/a.tar_meta.json\n"
    )
    (c,) = load_containers(text)
    assert c.localPath == Path("../cache/a.tar")
    assert c.metadataLocalPath == Path("sub/a.tar_meta.json")
    (c,) = load_containers(text, containers_dir=Path("/wd/containers"))
    assert c.localPath == Path("/wd/containers/../cache/a.tar")
    assert c.metadataLocalPath == Path("/wd/containers/sub/a.tar_meta.json")


def test_wfexs_container_module_era_tag_is_known() -> None:
    text = WFEXS_LEGACY_COMMON.replace(
        "wfexs_backend.common.Container\n", "wfexs_backend.container.Container\n"
    )
    assert "wfexs_backend.container.Container" in text
    assert load_containers(text) == load_containers(WFEXS_LEGACY_COMMON)


@pytest.mark.parametrize(
    "text",
    [WFEXS_MARSHALLED_STAGE, WFEXS_LEGACY_COMMON, WFEXS_LEGACY_FACTORIES],
    ids=["namedtuple-era marshalled", "python/object common", "python/object container_factories"],
)
def test_wfexs_records_with_absolute_paths_ignore_containers_dir(text: str) -> None:
    assert load_containers(text, containers_dir=Path("/B")) == load_containers(text)


def test_defaults_fix_on_a_nameless_path_is_a_provenance_error() -> None:
    text = (
        "- {_type: Container, origTaggedName: a, type: {_enum: ContainerType, value: docker}, localPath: /}\n"
    )
    with pytest.raises(ProvenanceError, match=r"record 0 \(line 1\): cannot derive metadataLocalPath"):
        load_containers(text)


# --------------------------------------------------------------------------
# Writing the reference's marshalled form

# The fields of the reference's `Container` dataclass
# (wfexs_backend/container_factories/__init__.py with its base
# `ContainerTaggedName` in wfexs_backend/common.py): its unmarshaller calls
# `Container(**fields)`, so a record may carry no other key.
WFEXS_CONTAINER_FIELDS = frozenset(
    {
        "origTaggedName",
        "type",
        "registries",
        "taggedName",
        "architecture",
        "operatingSystem",
        "localPath",
        "signature",
        "fingerprint",
        "metadataLocalPath",
        "source_type",
        "image_signature",
    }
)
# Values of the reference's `ContainerType` (wfexs_backend/common.py).
WFEXS_CONTAINER_TYPE_VALUES = frozenset({"singularity", "docker", "udocker", "podman", "conda", "none"})
WFEXS_TYPE_TAG = "tag:yaml.org,2002:python/object/apply:wfexs_backend.common.ContainerType"


def _wfexs_fixed(c: Container) -> Container:
    """What any reader of the reference's records returns: its defaults fixes applied."""
    fixed = copy.deepcopy(c)
    try:
        fixed._value_defaults_fixes()
    except ValueError:
        assume(False)  # a nameless path: the reference cannot read it either
    return fixed


@settings(max_examples=200, deadline=None)
@given(container_lists)
def test_wfexs_style_round_trip(cs: list[Container]) -> None:
    expected = [_wfexs_fixed(c) for c in cs]
    text = dump_containers(cs, style="wfexs")
    assert isinstance(text, str)
    assert load_containers(text) == expected
    assert load_containers(text.encode("utf-8")) == expected


def _scalar(node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return node.value


@settings(deadline=None)
@given(container_lists)
def test_wfexs_style_has_the_shape_the_references_unmarshaller_needs(cs: list[Container]) -> None:
    """Checked on the nodes, against what `unmarshall_namedtuple` and `Container(**fields)` read."""
    root = yaml.compose(dump_containers(cs, style="wfexs") or "")
    assert isinstance(root, yaml.MappingNode)
    assert [_scalar(k) for k, _ in root.value] == ["containers"]
    items = root.value[0][1]
    assert isinstance(items, yaml.SequenceNode)
    assert len(items.value) == len(cs)
    for record, c in zip(items.value, cs, strict=True):
        assert isinstance(record, yaml.MappingNode)
        assert record.tag == "tag:yaml.org,2002:map"
        keys = [_scalar(k) for k, _ in record.value]
        assert keys == sorted(keys)  # as the reference's dumper sorts them
        assert set(keys) == WFEXS_CONTAINER_FIELDS | {"_type"}
        fields = dict(zip(keys, (v for _, v in record.value), strict=True))
        assert _scalar(fields["_type"]) == "Container"
        for name in ("type", "source_type"):
            value = getattr(c, name)
            node = fields[name]
            if value is None:
                assert node.tag == "tag:yaml.org,2002:null"
                continue
            assert isinstance(node, yaml.MappingNode)
            enum = {_scalar(k): _scalar(v) for k, v in node.value}
            assert enum == {"_enum": "ContainerType", "value": value.value}
            assert enum["value"] in WFEXS_CONTAINER_TYPE_VALUES
        regs = fields["registries"]
        if c.registries is None:
            assert regs.tag == "tag:yaml.org,2002:null"
        else:
            assert isinstance(regs, yaml.MappingNode)
            seen = {}
            for key, value in regs.value:
                # The enum itself, as the full loader builds it: `ContainerType("docker")`.
                assert key.tag == WFEXS_TYPE_TAG
                assert isinstance(key, yaml.SequenceNode)
                (arg,) = key.value
                seen[_scalar(arg)] = _scalar(value)
            assert seen == {k.value: v for k, v in c.registries.items()}


def test_wfexs_style_writes_what_the_reference_wrote() -> None:
    """Our records of its stage state, written back, are its `containers` section verbatim."""
    text = CWL_STAGE.read_text(encoding="utf-8")
    section = text[text.index("containers:\n") : text.index("engineDesc:\n")]
    workdir = Path("/home/user/wfexs-backend-test_WorkDir/0f9e8d7c")
    records = load_containers(text, containers_dir=workdir / "containers")
    assert dump_containers(records, style="wfexs", containers_dir=workdir / "containers") == section
    # Without a containers dir the records are already relative to it.
    assert dump_containers(load_containers(text), style="wfexs") == section


def test_wfexs_style_registries_keys() -> None:
    c = Container(
        "a",
        ContainerType.Podman,
        registries={ContainerType.Singularity: "r2", ContainerType.Docker: "r1"},
        source_type=ContainerType.Docker,
    )
    text = dump_containers([c], style="wfexs")
    assert isinstance(text, str)
    assert (
        "  registries:\n"
        "    ? !!python/object/apply:wfexs_backend.common.ContainerType\n    - docker\n    : r1\n"
        "    ? !!python/object/apply:wfexs_backend.common.ContainerType\n    - singularity\n    : r2\n"
    ) in text
    assert load_containers(text) == [c]


def test_wfexs_style_relative_paths_keep_their_meaning() -> None:
    """Ours are relative to the containers dir, the reference's to the working dir around it."""
    c = Container(
        "a",
        ContainerType.Docker,
        localPath=Path("containers/a.tar"),
        metadataLocalPath=Path("../cache/a.tar_meta.json"),
        source_type=ContainerType.Docker,
    )
    text = dump_containers([c], style="wfexs")
    assert isinstance(text, str)
    assert "  localPath: containers/containers/a.tar\n" in text
    assert "  metadataLocalPath: containers/../cache/a.tar_meta.json\n" in text
    assert load_containers(text) == [c]


def test_wfexs_style_file_round_trip(tmp_path: Path) -> None:
    a = tmp_path / "A" / "containers"
    records = _cwl_stage_records(a)
    path = tmp_path / "stage-state.yaml"
    write_containers_file(records, path, style="wfexs", containers_dir=a)
    text = path.read_text(encoding="utf-8")
    assert f"localPath: containers/{SAMTOOLS_IMG}\n" in text
    assert str(tmp_path) not in text
    assert read_containers_file(path, containers_dir=tmp_path / "B") == _cwl_stage_records(tmp_path / "B")
    assert os.listdir(tmp_path) == ["stage-state.yaml"]


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown record style 'cwl'"):
        dump_containers([], style="cwl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown record style"):
        write_containers_file([], Path("/nonexistent/x.yaml"), style="WfExS")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Portable records: paths relative to the staged containers dir

A = Path("/srv/run-a/containers")
B = Path("/mnt/run-b/staged")


def _moved(path: Path | None, old: Path, new: Path) -> Path | None:
    """Where a path of a record written for ``old`` lands when read for ``new``."""
    if path is None:
        return None
    if not path.is_absolute():
        return new / path
    if path.is_relative_to(old):
        return new / path.relative_to(old)
    return path


under_a = st.lists(st.sampled_from(["x.sif", "sub", "a b", "yes", "1.0", ".hidden", "..x"]), max_size=3).map(
    lambda parts: A.joinpath(*parts)
)
portable_paths = st.none() | under_a | paths


@settings(max_examples=200, deadline=None)
@given(st.lists(containers, max_size=3), st.data(), st.sampled_from(["wfexs-like", "wfexs"]))
def test_written_for_one_dir_read_for_another(cs: list[Container], data: st.DataObject, style: str) -> None:
    for c in cs:
        c.localPath = data.draw(portable_paths)
        c.metadataLocalPath = data.draw(portable_paths)
    text = dump_containers(cs, style=style, containers_dir=A)  # type: ignore[arg-type]
    assert isinstance(text, str)
    assert str(A) + "/" not in text  # nothing under A stays absolute
    expected = []
    for c in cs:
        moved = copy.deepcopy(c)
        moved.localPath = _moved(c.localPath, A, B)
        moved.metadataLocalPath = _moved(c.metadataLocalPath, A, B)
        expected.append(_wfexs_fixed(moved) if style == "wfexs" else moved)
    assert load_containers(text, containers_dir=B) == expected


def test_portable_document_shape(tmp_path: Path) -> None:
    c = Container(
        "samtools:1.15",
        ContainerType.Singularity,
        localPath=A / "samtools.sif",
        metadataLocalPath=Path("/var/cache/wfexs-like/samtools.sif_meta.json"),
    )
    data = yaml.safe_load(dump_containers([c], containers_dir=A) or "")
    (record,) = data["containers"]
    assert record["localPath"] == "samtools.sif"
    assert record["metadataLocalPath"] == "/var/cache/wfexs-like/samtools.sif_meta.json"

    path = tmp_path / "containers.yaml"
    write_containers_file([c], path, containers_dir=A)
    (kept,) = read_containers_file(path)
    assert kept.localPath == Path("samtools.sif")  # a factory resolves it at deploy
    (moved,) = read_containers_file(path, containers_dir=B)
    assert moved.localPath == B / "samtools.sif"
    assert moved.metadataLocalPath == c.metadataLocalPath


def test_paths_under_containers_dir_are_posix_and_nested() -> None:
    c = Container("a", ContainerType.Docker, localPath=A / "sub" / "dir" / "a.tar", metadataLocalPath=A)
    record = container_to_dict(c, containers_dir=A)
    assert record["localPath"] == "sub/dir/a.tar"
    assert record["metadataLocalPath"] == "."
    assert container_to_dict(c)["localPath"] == str(A / "sub" / "dir" / "a.tar")


def test_a_relative_containers_dir_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    c = Container("a", ContainerType.Docker, localPath=tmp_path / "containers" / "a.tar")
    assert container_to_dict(c, containers_dir=Path("containers"))["localPath"] == "a.tar"


def test_siblings_of_the_containers_dir_stay_absolute() -> None:
    # Lexically under neither: `/srv/run-a/containers-old` is not under `/srv/run-a/containers`.
    c = Container("a", ContainerType.Docker, localPath=Path("/srv/run-a/containers-old/a.tar"))
    assert container_to_dict(c, containers_dir=A)["localPath"] == "/srv/run-a/containers-old/a.tar"


# --------------------------------------------------------------------------
# The public surface


def test_all_lists_the_public_names() -> None:
    names = {
        name
        for name, value in vars(provenance).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and getattr(value, "__module__", provenance.__name__) == provenance.__name__
    }
    # container_to_dict lives in wfexs_like.records (writing needs no PyYAML) and is re-exported.
    assert set(provenance.__all__) == names | {"RecordStyle", "container_to_dict"}
    assert len(provenance.__all__) == len(set(provenance.__all__))
    assert typing.get_args(provenance.RecordStyle) == ("wfexs-like", "wfexs")

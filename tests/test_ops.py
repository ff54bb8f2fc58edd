"""The verbs as library functions (``wfexs_like.ops``): tag lists, platforms, records, materialize, deploy.

Pure parsing is tested on its own; materialize and deploy run against a real
loopback registry and the real engines, with a reporter that records what
it was told.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like import progress
from wfexs_like.errors import (
    ContainerFactoryException,
    ContainerNotFoundException,
    InvalidReferenceError,
    ProvenanceError,
)
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.model import Container, ContainerType
from wfexs_like.ops.deploy import deploy
from wfexs_like.ops.materialize import (
    STAGE_DIR_COMMENT,
    check_output_path,
    materialize,
    parse_platform,
    recorded_stage_dir,
    records_text,
    write_records,
)
from wfexs_like.ops.taglist import collect_tags, looks_like_records, read_tag_source
from wfexs_like.progress import ImageSummary
from wfexs_like.provenance import load_containers, read_containers_file

# -- tag lists ---------------------------------------------------------------------------------------


def test_a_tag_list_takes_one_tag_per_line_with_comments(tmp_path: Path) -> None:
    listing = tmp_path / "tags.txt"
    listing.write_text(
        "# the workflow's tools\n"
        "\n"
        "quay.io/biocontainers/samtools:1.15--h1170115_1   # aligner output\n"
        "  localhost:5000/ns/img@sha256:" + "a" * 64 + "\n"
        "docker://busybox:1.36\n"
        "https://example.org/x.sif#frag\n"
    )
    assert read_tag_source(listing) == [
        "quay.io/biocontainers/samtools:1.15--h1170115_1",
        "localhost:5000/ns/img@sha256:" + "a" * 64,
        "docker://busybox:1.36",
        "https://example.org/x.sif#frag",
    ]
    assert read_tag_source("-", stdin=io.StringIO("alpine:3.20\n# x\n")) == ["alpine:3.20"]


@pytest.mark.parametrize(
    ("text", "records"),
    [
        ("busybox:1.36\n", False),
        ("# c\nlocalhost:5000/a:1\n", False),
        ("docker://busybox\n", False),
        ("./local.sif\n", False),
        ("wfexs_like_containers: 1\ncontainers: []\n", True),
        ('# wfexs-like stage-dir: "c"\nwfexs_like_containers: 1\n', True),
        ("containers:\n- _type: Container\n", True),
        ("- origTaggedName: busybox\n", True),
        ('{"wfexs_like_containers": 1, "containers": []}', True),
        ("---\ncontainers: []\n", True),
        ("", False),
    ],
)
def test_a_containers_yaml_is_told_from_a_tag_list(text: str, records: bool) -> None:
    assert looks_like_records(text) is records


def test_bad_tags_are_all_named_before_any_work() -> None:
    with pytest.raises(InvalidReferenceError) as e:
        collect_tags(["busybox:1.36", "UPPER/Case:1", "two words"])
    assert "UPPER/Case:1" in str(e.value) and "two words" in str(e.value)
    assert "2 bad tags" in str(e.value)


def test_a_list_line_with_two_tags_is_refused(tmp_path: Path) -> None:
    listing = tmp_path / "tags.txt"
    listing.write_text("busybox:1.36 alpine:3.20\n")
    with pytest.raises(InvalidReferenceError, match=r"line 1.*one tag per line"):
        collect_tags([], [listing])


def test_no_tags_at_all_and_stdin_twice_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(InvalidReferenceError, match="no tags to materialize"):
        collect_tags([], [empty])
    with pytest.raises(InvalidReferenceError, match="standard input"):
        collect_tags([], ["-", "-"], stdin=io.StringIO("busybox\n"))


def test_arguments_and_lists_combine_in_order_each_tag_once(tmp_path: Path) -> None:
    listing = tmp_path / "tags.txt"
    listing.write_text("alpine:3.20\nbusybox:1.36\n")
    got = collect_tags(["busybox:1.36", "debian:12"], [listing, "-"], stdin=io.StringIO("ubuntu:24.04\n"))
    assert got == ["busybox:1.36", "debian:12", "alpine:3.20", "ubuntu:24.04"]


def test_records_from_a_file_are_pins_without_their_old_paths(tmp_path: Path) -> None:
    record = Container(
        origTaggedName="localhost:5000/ns/img:1",
        type=ContainerType.Docker,
        taggedName="localhost:5000/ns/img:1",
        localPath=tmp_path / "stage" / "img",
        metadataLocalPath=tmp_path / "stage" / "img_meta.json",
        fingerprint="localhost:5000/ns/img@sha256:" + "b" * 64,
        signature="sha256:" + "c" * 64,
        image_signature="sha256:" + "d" * 64,
        source_type=ContainerType.Docker,
    )
    path = tmp_path / "c.yaml"
    write_records([record], path, format="yaml", stage_dir=tmp_path / "stage")
    [pin] = collect_tags([], [path])
    assert isinstance(pin, Container)
    assert pin.fingerprint == record.fingerprint and pin.image_signature == record.image_signature
    assert pin.localPath is None and pin.metadataLocalPath is None
    [from_stdin] = collect_tags([], ["-"], stdin=io.StringIO(path.read_text()))
    assert from_stdin == pin


# -- platforms --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("arm64", "linux/arm64"),
        ("linux/arm64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("x86_64", "linux/amd64"),
        ("Linux/AMD64", "linux/amd64"),
        ("windows/amd64", "windows/amd64"),
        ("s390x", "linux/s390x"),
    ],
)
def test_platform_forms(text: str, expected: str) -> None:
    assert str(parse_platform(text)) == expected


@pytest.mark.parametrize("text", ["linux", "", "linux/", "linux/amd46", "plan10/amd64", "a/b/c/d", "arm65"])
def test_bad_platforms_are_refused_by_name(text: str) -> None:
    with pytest.raises(ContainerFactoryException, match="invalid platform"):
        parse_platform(text)


# -- records out ------------------------------------------------------------------------------------


def _record(stage: Path, name: str = "img") -> Container:
    return Container(
        origTaggedName=f"localhost:5000/ns/{name}:1",
        type=ContainerType.Docker,
        taggedName=f"localhost:5000/ns/{name}:1",
        localPath=stage / name,
        metadataLocalPath=stage / f"{name}_meta.json",
        signature="sha256:" + "c" * 64,
        fingerprint=f"localhost:5000/ns/{name}@sha256:" + "b" * 64,
        source_type=ContainerType.Docker,
        image_signature="sha256:" + "d" * 64,
    )


@pytest.mark.parametrize("fmt", ["yaml", "json", "wfexs"])
def test_records_note_their_stage_dir_relative_to_the_file(tmp_path: Path, fmt: str) -> None:
    stage = tmp_path / "wf" / "containers"
    out = tmp_path / "wf" / "c.yaml"
    out.parent.mkdir()
    write_records([_record(stage)], out, format=fmt, stage_dir=stage)  # type: ignore[arg-type]
    text = out.read_text()
    assert str(tmp_path) not in text, "the note and the paths are relative"
    assert recorded_stage_dir(out) == stage
    [back] = read_containers_file(out, containers_dir=stage)
    assert back.localPath == stage / "img" and back.fingerprint == _record(stage).fingerprint
    moved = tmp_path / "elsewhere"
    shutil.copytree(out.parent, moved)
    assert recorded_stage_dir(moved / "c.yaml") == moved / "containers"
    if fmt == "json":
        assert json.loads(text)["stage_dir"] == "containers"
    else:
        assert text.startswith(STAGE_DIR_COMMENT + '"containers"\n')


def test_a_stage_dir_outside_the_file_dir_is_noted_absolute(tmp_path: Path) -> None:
    stage = tmp_path / "stage with space"
    text = records_text([_record(stage)], format="yaml", stage_dir=stage, output=tmp_path / "sub" / "c.yaml")
    assert text.splitlines()[0] == STAGE_DIR_COMMENT + json.dumps(str(stage))
    assert load_containers(text)[0].localPath == Path("img")
    (tmp_path / "plain.yaml").write_text("wfexs_like_containers: 1\ncontainers: []\n")
    assert recorded_stage_dir(tmp_path / "plain.yaml") is None


def test_an_output_that_cannot_be_written_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ProvenanceError, match=r"missing/dir does not exist"):
        check_output_path(tmp_path / "missing" / "dir" / "c.yaml")
    with pytest.raises(ProvenanceError, match="is a directory"):
        check_output_path(tmp_path)
    check_output_path(tmp_path / "c.yaml")
    fresh = tmp_path / "fresh" / "wf"
    check_output_path(fresh / "c.yaml", stage_dir=fresh / "containers")
    with pytest.raises(ProvenanceError, match="does not exist"):
        check_output_path(fresh / "c.yaml", stage_dir=tmp_path / "elsewhere")


# -- materialize and deploy against a real registry --------------------------------------------------


class Recorder:
    """A reporter that keeps every call, from any thread."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []  # type: ignore[type-arg]
        self._lock = threading.Lock()

    def _add(self, *call: object) -> None:
        with self._lock:
            self.calls.append(call)

    def begin(self, tag: str) -> None:
        self._add("begin", tag)

    def advance(self, tag: str, key: str, done: int, total: int | None) -> None:
        self._add("advance", tag, key, done, total)

    def step(self, tag: str, text: str) -> None:
        self._add("step", tag, text)

    def finish(self, summary: ImageSummary) -> None:
        self._add("finish", summary)

    def warn(self, text: str, *, key: str | None = None) -> None:
        self._add("warn", text)

    def of(self, kind: str) -> list[tuple]:  # type: ignore[type-arg]
        return [c for c in self.calls if c[0] == kind]

    def summaries(self) -> dict[str, ImageSummary]:
        return {c[1].tag: c[1] for c in self.of("finish")}


class Pushed:
    """Two images sharing a base layer, pushed under a fresh prefix."""

    def __init__(self, reg: RunningRegistry, store: BlobStore) -> None:
        self.reg, self.store = reg, store
        self.prefix = f"wl-ops-{uuid.uuid4().hex[:8]}"
        base = busybox_base_layer()
        self.images: dict[str, BuiltImage] = {
            name: build_image(store, [base, {f"etc/{name}": f"{name}-{self.prefix}\n".encode()}])
            for name in ("left", "right")
        }
        for name, img in self.images.items():
            self.push(name, img)

    def push(self, name: str, img: BuiltImage) -> None:
        push_image(self.reg.url, f"{self.prefix}/{name}", "1.0", self.store, img.manifest)

    def tag(self, name: str) -> str:
        return f"{self.reg.host}/{self.prefix}/{name}:1.0"


@pytest.fixture
def pushed(registry: RunningRegistry, src_store: BlobStore) -> Pushed:
    return Pushed(registry, src_store)


def _run(tags: list, tmp_path: Path, stage: str, **kw: object):  # type: ignore[no-untyped-def,type-arg]
    rec = Recorder()
    with progress.reporting(rec):
        result = materialize(
            tags,
            engine=kw.pop("engine", "docker"),  # type: ignore[arg-type]
            stage_dir=tmp_path / stage,
            cache_dir=tmp_path / "cache",
            **kw,  # type: ignore[arg-type]
        )
    return result, rec


def test_each_tag_is_reported_and_summarized_by_how_it_was_obtained(tmp_path: Path, pushed: Pushed) -> None:
    tags = [pushed.tag("left"), pushed.tag("right")]
    first, rec = _run(tags, tmp_path, "wf1", jobs=2)
    assert [c.origTaggedName for c in first.containers] == tags
    assert [c[1] for c in rec.of("begin")] == tags
    rows = rec.summaries()
    for name in ("left", "right"):
        row = rows[pushed.tag(name)]
        assert row.outcome == "fetched"
        assert row.digest == pushed.images[name].digest
        assert row.size and row.size > 0
    advanced = {c[1] for c in rec.of("advance")}
    assert advanced == set(tags), "byte progress is reported under the tags the user wrote"
    for _, _tag, _digest, done, total in rec.of("advance"):
        assert total is None or 0 <= done <= total

    again, rec2 = _run(tags, tmp_path, "wf2")
    assert {r.outcome for r in rec2.summaries().values()} == {"cached"}
    assert not rec2.of("advance")
    assert [c.fingerprint for c in again.containers] == [c.fingerprint for c in first.containers]

    sif, rec3 = _run([pushed.tag("left")], tmp_path, "sif", engine="singularity", offline=True)
    assert rec3.summaries()[pushed.tag("left")].outcome == "built", "a SIF from the layers already cached"
    steps = rec3.of("step")
    assert any("building SIF" in text for _, _tag, text in steps)
    assert {tag for _, tag, _text in steps} == {pushed.tag("left")}, (
        "the build's stages land on the user's tag"
    )
    assert sif.containers[0].type == ContainerType.Singularity


def test_without_keep_going_every_failure_is_named_at_once(tmp_path: Path, pushed: Pushed) -> None:
    missing = f"{pushed.reg.host}/{pushed.prefix}/missing:9"
    with pytest.raises(ContainerNotFoundException) as e:
        _run([pushed.tag("left"), missing], tmp_path, "wf", retries=0)
    assert [t for t, _ in e.value.failures] == [missing]

    result, rec = _run([pushed.tag("left"), missing], tmp_path, "wf", retries=0, keep_going=True)
    assert [c.origTaggedName for c in result.containers] == [pushed.tag("left")]
    assert [t for t, _ in result.failures] == [missing] and "not found" in result.failures[0][1]
    assert rec.summaries()[missing].outcome == "failed"


def test_records_rematerialize_their_pins_after_the_tag_moved(
    tmp_path: Path, pushed: Pushed, src_store: BlobStore
) -> None:
    first, _ = _run([pushed.tag("left")], tmp_path, "wf1")
    records = tmp_path / "c.yaml"
    write_records(first.containers, records, format="yaml", stage_dir=first.stage_dir)
    moved = build_image(src_store, [busybox_base_layer(), {"etc/moved": b"the tag moved\n"}])
    pushed.push("left", moved)

    pins = collect_tags([], [records])
    again, _ = _run(pins, tmp_path, "wf2")
    assert again.containers[0].fingerprint == first.containers[0].fingerprint
    assert again.containers[0].signature == pushed.images["left"].image_id
    latest, _ = _run([pushed.tag("left")], tmp_path, "wf3")
    assert latest.containers[0].signature == moved.image_id


def test_deploy_finds_the_noted_stage_dir_and_counts_what_it_skips(tmp_path: Path, pushed: Pushed) -> None:
    result, _ = _run([pushed.tag("left")], tmp_path, "wf/containers", engine="podman")
    write_records(result.containers, tmp_path / "wf" / "c.yaml", format="yaml", stage_dir=result.stage_dir)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "wf", copy)
    shutil.rmtree(tmp_path / "wf")

    skipped = deploy(copy / "c.yaml", engine="none", cache_dir=tmp_path / "cache")
    assert skipped.stage_dir == copy / "containers"
    assert [r.state for r in skipped.rows] == ["skipped"] and "--engine none" in (
        skipped.rows[0].reason or ""
    )
    assert skipped.counts()["skipped"] == 1

    image_id = result.containers[0].signature or ""
    subprocess.run(["podman", "rmi", "-f", image_id], capture_output=True, check=False)
    try:
        loaded = deploy(copy / "c.yaml", engine="podman", cache_dir=tmp_path / "cache")
        assert [(r.state, r.signature) for r in loaded.rows] == [("loaded", image_id)]
        present = deploy(copy / "c.yaml", engine="podman", cache_dir=tmp_path / "cache")
        assert [r.state for r in present.rows] == ["present"] and not present.failures
    finally:
        subprocess.run(["podman", "rmi", "-f", image_id], capture_output=True, check=False)


def test_deploy_without_a_noted_stage_dir_asks_for_one(tmp_path: Path) -> None:
    bare = tmp_path / "c.yaml"
    bare.write_text("wfexs_like_containers: 1\ncontainers: []\n")
    with pytest.raises(ProvenanceError, match="--stage-dir"):
        deploy(bare, engine="docker")

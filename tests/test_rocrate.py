"""Records -> Workflow Run Crate -> records -> materialize: the same digests, against a real registry.

Crates are checked with ro-crate-py (an independent reader), WfExS-backend's
crate shapes are read from hand-written fixtures (tests/data/rocrate), and
the round trip materializes through the real factories against the loopback
registry; a tag moved after the crate was written proves the crate's digest,
not the tag, decides what is fetched.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from rocrate.rocrate import ROCrate

from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.container_factories import make_factory
from wfexs_like.digests import sha256_file
from wfexs_like.errors import IntegrityError, ProvenanceError, UnsafeInputError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.model import Container, ContainerTaggedName, ContainerType
from wfexs_like.rocrate import MAX_CRATE_BYTES, METADATA_FILE, read_crate, write_crate

DATA = Path(__file__).parent / "data" / "rocrate"
WR = "https://w3id.org/ro/terms/workflow-run#"
SAMTOOLS_PAYLOAD = "containers/quay.io_biocontainers_samtools:1.15--h1170115_1.img"


class Pushed:
    """Two images in the loopback registry, under unique repositories, tag 1.0."""

    def __init__(self, reg: RunningRegistry, store: BlobStore) -> None:
        self.reg = reg
        self.store = store
        self.prefix = f"wl-crate-{uuid.uuid4().hex[:8]}"
        base = busybox_base_layer()
        self.images: dict[str, BuiltImage] = {
            name: build_image(store, [base, {f"etc/{name}": f"{name} {self.prefix}\n".encode()}])
            for name in ("left", "right")
        }
        for name, img in self.images.items():
            push_image(reg.url, f"{self.prefix}/{name}", "1.0", store, img.manifest)

    def tag(self, name: str) -> str:
        return f"{self.reg.host}/{self.prefix}/{name}:1.0"

    def move_tag(self, name: str) -> BuiltImage:
        """Push a different image under ``name:1.0``, as a registry user may at any time."""
        img = build_image(self.store, [busybox_base_layer(), {"etc/moved": uuid.uuid4().hex.encode()}])
        push_image(self.reg.url, f"{self.prefix}/{name}", "1.0", self.store, img.manifest)
        return img


@pytest.fixture
def pushed(registry: RunningRegistry, src_store: BlobStore) -> Pushed:
    return Pushed(registry, src_store)


def _materialize(
    tmp: Path, engine: str, tags: list[ContainerTaggedName | Container], **kw: Any
) -> list[Container]:
    stage = tmp / f"stage-{engine}"
    factory = make_factory(engine, containersCacheDir=tmp / "cache", stagedContainersDir=stage)
    return factory.materializeContainers(tags, containers_dir=stage, **kw)


_CTYPE = {"docker": ContainerType.Docker, "singularity": ContainerType.Singularity}


def _pushed_records(root: Path, pushed: Pushed, engine: str) -> list[Container]:
    return _materialize(
        root, engine, [ContainerTaggedName(pushed.tag(n), _CTYPE[engine]) for n in pushed.images]
    )


def _records_for(root: Path, pushed: Pushed) -> dict[str, list[Container]]:
    """The same two images materialized for docker (OCI layouts) and for singularity (SIFs)."""
    return {engine: _pushed_records(root, pushed, engine) for engine in _CTYPE}


@pytest.fixture(scope="module")
def shared(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Pushed, dict]:
    """Records made once for the tests that only read them (their tags never move)."""
    root = tmp_path_factory.mktemp("crate-records")
    pushed = Pushed(registry, BlobStore(root / "src-store"))
    return root, pushed, _records_for(root, pushed)


@pytest.fixture
def records(shared: tuple[Path, Pushed, dict]) -> dict[str, list[Container]]:
    return copy.deepcopy(shared[2])


def _graph(crate_dir: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads((crate_dir / METADATA_FILE).read_text())
    return {e["@id"]: e for e in doc["@graph"]}


def _types(entity: Any) -> list[str]:
    t = entity.type
    return t if isinstance(t, list) else [t]


# --------------------------------------------------------------------------
# Writing, checked with ro-crate-py


def test_crate_of_materialized_records_reads_back_in_ro_crate_py(
    tmp_path: Path, shared: tuple[Path, Pushed, dict], records: dict[str, list[Container]]
) -> None:
    pushed = shared[1]
    all_records = records["docker"] + records["singularity"]
    path = write_crate(all_records, tmp_path / "crate", name="two images, two engines")
    assert path == tmp_path / "crate" / METADATA_FILE

    raw = json.loads(path.read_text())
    assert raw["@context"] == [
        "https://w3id.org/ro/crate/1.1/context",
        "https://w3id.org/ro/terms/workflow-run/context",
    ]

    crate = ROCrate(tmp_path / "crate")
    # ro-crate-py gives a reference to an entity not in the crate as its id
    assert crate.metadata["conformsTo"] == "https://w3id.org/ro/crate/1.1"
    descriptor = next(e for e in raw["@graph"] if e["@id"] == METADATA_FILE)
    assert descriptor["conformsTo"] == {"@id": "https://w3id.org/ro/crate/1.1"}
    profiles = {p.id for p in crate.root_dataset["conformsTo"]}
    assert profiles == {"https://w3id.org/ro/wfrun/process/0.5", "https://w3id.org/ro/wfrun/workflow/0.5"}
    for profile in profiles:
        assert crate.get(profile).type == "CreativeWork"

    images = [e for e in crate.get_entities() if "ContainerImage" in _types(e)]
    assert len(images) == len(all_records) == 4
    engines_seen = set()
    for c in all_records:
        match = [e for e in images if e["softwareRequirements"].id == _engine_iri(c.type)]
        (image,) = [e for e in match if e["name"] == c.origTaggedName.split("/", 1)[1].rsplit(":", 1)[0]]
        name = c.origTaggedName.split("/")[-1].split(":")[0]
        img = pushed.images[name]
        assert _types(image) == ["ContainerImage", "SoftwareApplication"]
        assert image["additionalType"] == WR + "DockerImage"
        assert image["registry"] == pushed.reg.host
        assert image["name"] == f"{pushed.prefix}/{name}"
        assert image["tag"] == "1.0"
        assert image["sha256"] == img.digest.split(":", 1)[1]
        assert image["softwareVersion"] == c.fingerprint
        assert (image["operatingSystem"], image["processorRequirements"]) == ("linux", "amd64")
        engine = image["softwareRequirements"]
        assert engine.type == "SoftwareApplication"
        engines_seen.add(engine.id)

        actions = [e for e in crate.get_entities() if e.type == "CreateAction" and e["object"].id == image.id]
        (action,) = actions
        assert action["containerImage"].id == image.id
        assert action in crate.root_dataset["mentions"]
        if c.type == ContainerType.Singularity:
            assert c.localPath is not None
            sif = action["result"]
            assert "File" in _types(sif)
            assert sif["additionalType"] == WR + "SIFImage"
            assert int(sif["contentSize"]) == c.localPath.stat().st_size
            assert "sha256:" + sif["sha256"] == sha256_file(c.localPath) == c.image_signature
            assert sif["about"].id == image.id
        else:
            assert action.get("result") is None
    assert engines_seen == {"https://www.docker.com/", "https://apptainer.org/"}


def _engine_iri(ctype: ContainerType) -> str:
    return {
        ContainerType.Docker: "https://www.docker.com/",
        ContainerType.Singularity: "https://apptainer.org/",
    }[ctype]


def test_two_writes_are_byte_identical_and_sorted(
    tmp_path: Path, records: dict[str, list[Container]]
) -> None:
    every = records["docker"] + records["singularity"]
    first = write_crate(every, tmp_path / "a").read_bytes()
    again = write_crate(every, tmp_path / "a").read_bytes()
    elsewhere = write_crate(list(every), tmp_path / "b").read_bytes()
    assert first == again == elsewhere
    text = first.decode()
    assert json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n" == text
    # ids come from digests, never from a random source
    ids = [e["@id"] for e in json.loads(text)["@graph"]]
    digest_hex = {c.fingerprint.rsplit(":", 1)[1][:16] for c in every if c.fingerprint}
    assert all(any(h in i for h in digest_hex) for i in ids if i.startswith("#image-"))
    assert not [f for f in os.listdir(tmp_path / "a") if f != METADATA_FILE], "no temporary file left behind"


def test_date_published_comes_from_source_date_epoch_or_the_caller(
    tmp_path: Path, records: dict[str, list[Container]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    root = _graph(write_crate(records["docker"], tmp_path / "c").parent)["./"]
    assert "datePublished" not in root
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert _graph(write_crate(records["docker"], tmp_path / "c").parent)["./"]["datePublished"] == (
        "2023-11-14T22:13:20+00:00"
    )
    given = write_crate(records["docker"], tmp_path / "c", date_published="2024-05-01T14:00:00+02:00")
    assert _graph(given.parent)["./"]["datePublished"] == "2024-05-01T12:00:00+00:00"
    with pytest.raises(ProvenanceError, match="ISO 8601"):
        write_crate(records["docker"], tmp_path / "c", date_published="last tuesday")


def test_sif_inside_the_crate_is_a_data_entity_and_comes_back_as_the_snapshot(
    shared: tuple[Path, Pushed, dict], records: dict[str, list[Container]]
) -> None:
    """A crate written around the working dir lists its SIFs as parts; reading it hands them over."""
    sifs = records["singularity"]
    workdir = shared[0]  # holds stage-singularity/
    write_crate(sifs, workdir, containers_dir=workdir / "stage-singularity")
    crate = ROCrate(workdir)
    parts = {p.id for p in crate.root_dataset["hasPart"]}
    for c in sifs:
        assert c.localPath is not None
        rel = c.localPath.relative_to(workdir).as_posix()
        assert rel in parts
        entity = crate.get(rel)
        assert "File" in _types(entity) and int(entity["contentSize"]) == c.localPath.stat().st_size
    back = read_crate(workdir)
    assert {(c.fingerprint, c.localPath, c.image_signature) for c in back} == {
        (c.fingerprint, c.localPath, c.image_signature) for c in sifs
    }


def test_writer_refuses_a_sif_that_is_not_what_the_record_says(
    tmp_path: Path, records: dict[str, list[Container]]
) -> None:
    c = copy.deepcopy(records["singularity"][0])
    assert c.localPath is not None
    tampered = tmp_path / "tampered.sif"
    shutil.copyfile(c.localPath, tampered)
    with open(tampered, "r+b") as fh:
        fh.seek(4096)
        byte = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([byte[0] ^ 1]))
    c.localPath = tampered
    with pytest.raises(IntegrityError, match="re-stage it"):
        write_crate([c], tmp_path / "crate")
    assert not (tmp_path / "crate" / METADATA_FILE).exists()

    c.localPath = tmp_path / "gone.sif"
    with pytest.raises(ProvenanceError, match="missing"):
        write_crate([c], tmp_path / "crate")
    c.localPath = Path("relative.sif")
    with pytest.raises(ProvenanceError, match="--stage-dir"):
        write_crate([c], tmp_path / "crate")


# --------------------------------------------------------------------------
# Reading back, and materializing what was read


def test_read_crate_gives_back_the_pinned_records(
    tmp_path: Path, records: dict[str, list[Container]]
) -> None:
    every = records["docker"] + records["singularity"]
    write_crate(every, tmp_path / "crate")
    back = read_crate(tmp_path / "crate")
    assert len(back) == len(every)
    for original, read in zip(every, back, strict=True):
        assert read.fingerprint == original.fingerprint
        assert (read.type, read.source_type) == (original.type, original.source_type)
        assert read.taggedName == original.taggedName
        assert read.origTaggedName == original.origTaggedName
        assert (read.architecture, read.operatingSystem) == (original.architecture, original.operatingSystem)
        assert read.localPath is None, "SIFs outside the crate are not part of it"
    # the metadata file itself is accepted as well as its dir
    assert [c.fingerprint for c in read_crate(tmp_path / "crate" / METADATA_FILE)] == [
        c.fingerprint for c in every
    ]


@pytest.mark.parametrize("engine", ["docker", "singularity"])
def test_crate_round_trip_materializes_identical_digests_even_after_the_tag_moved(
    tmp_path: Path, pushed: Pushed, engine: str
) -> None:
    originals = _pushed_records(tmp_path, pushed, engine)
    write_crate(originals, tmp_path / "crate")
    moved = pushed.move_tag("left")

    from_crate = read_crate(tmp_path / "crate")
    again = _materialize(tmp_path / "elsewhere", engine, list(from_crate))
    assert len(again) == len(originals)
    for before, after in zip(originals, again, strict=True):
        assert after.fingerprint == before.fingerprint
        assert after.signature == before.signature
        assert after.image_signature == before.image_signature
    # the tag alone now names another image: the crate, not the tag, decided
    (fresh,) = _materialize(
        tmp_path / "fresh", engine, [ContainerTaggedName(pushed.tag("left"), _CTYPE[engine])]
    )
    assert fresh.fingerprint is not None and fresh.fingerprint.endswith(moved.digest)
    assert fresh.fingerprint != originals[0].fingerprint


def test_wfexs_backend_crate_materializes_the_digest_it_records(tmp_path: Path, pushed: Pushed) -> None:
    """A crate in WfExS-backend's shape, naming a loopback image, gives back exactly that image."""
    img = pushed.images["right"]
    (original,) = _materialize(
        tmp_path / "first-run",
        "singularity",
        [ContainerTaggedName(pushed.tag("right"), ContainerType.Singularity)],
    )
    doc = json.loads((DATA / "wfexs" / METADATA_FILE).read_text())
    entity = next(
        e for e in doc["@graph"] if e["@id"] == "docker://quay.io/biocontainers/bwa:0.7.17--h7132678_9"
    )
    entity.update(
        registry=pushed.reg.host,
        name=f"{pushed.prefix}/right",
        tag="1.0",
        sha256=img.digest.split(":", 1)[1],
        softwareVersion=f"{pushed.reg.host}/{pushed.prefix}/right@{img.digest}",
    )
    crate = tmp_path / "wfexs-crate"
    shutil.copytree(DATA / "wfexs", crate)
    (crate / METADATA_FILE).write_text(json.dumps(doc))
    pushed.move_tag("right")

    samtools, record = read_crate(crate)
    assert samtools.localPath is not None, "the SIF shipped in the crate is handed over"
    assert record.type == ContainerType.Singularity
    (sif,) = _materialize(tmp_path / "from-wfexs", "singularity", [record])
    assert sif.fingerprint == original.fingerprint == f"{pushed.reg.host}/{pushed.prefix}/right@{img.digest}"
    assert sif.image_signature == original.image_signature


def test_wfexs_backend_crates_are_read(tmp_path: Path) -> None:
    for fixture in ("wfexs", "wfexs-2023"):
        ROCrate(DATA / fixture)  # an independent reader accepts the fixtures too

    samtools, bwa = read_crate(DATA / "wfexs")
    assert samtools.type == ContainerType.Singularity and samtools.source_type == ContainerType.Docker
    assert samtools.taggedName == "docker://quay.io/biocontainers/samtools:1.15--h1170115_1"
    assert samtools.fingerprint == (
        "quay.io/biocontainers/samtools@sha256:c00f986cad2d9fcffffa9cfb2d845ed5d0842fa82ff14b3839526f891987adda"
    )
    assert (samtools.architecture, samtools.operatingSystem) == ("amd64", "linux")
    payload = DATA / "wfexs" / SAMTOOLS_PAYLOAD
    assert samtools.localPath == Path(os.path.realpath(payload))
    assert samtools.image_signature == sha256_file(payload)
    assert samtools.metadataLocalPath is None, "WfExS-backend's sidecar pins nothing; it is not handed over"
    assert bwa.localPath is None and bwa.image_signature is None
    assert bwa.fingerprint == (
        "quay.io/biocontainers/bwa@sha256:2743b4249c67463c457fdfbcadaa2d96857f6273d134c529613decfad470e9c4"
    )

    node, infer = read_crate(DATA / "wfexs-2023")
    assert node.taggedName == "docker://docker.io/library/node:slim"
    assert node.fingerprint == (
        "docker.io/library/node@sha256:c2b2098a95ffed5d76c26c73889aec37b1536e0d38732aa86ee4af2655884356"
    )
    assert infer.fingerprint == (
        "docker.io/example/infer@sha256:d4b56bae60e9ee73695192c8799307d1edbed9dc74349475f141e19c879cc528"
    )
    assert {node.type, infer.type} == {ContainerType.Singularity}


def _crate_with(tmp_path: Path, graph: list[dict[str, Any]]) -> Path:
    crate = tmp_path / f"crate-{uuid.uuid4().hex[:6]}"
    crate.mkdir()
    (crate / METADATA_FILE).write_text(
        json.dumps({"@context": "https://w3id.org/ro/crate/1.1/context", "@graph": graph})
    )
    return crate


def _image(**props: Any) -> dict[str, Any]:
    return {
        "@id": "#img",
        "@type": "ContainerImage",
        "additionalType": {"@id": WR + "DockerImage"},
        "registry": "quay.io",
        "name": "biocontainers/samtools",
        "tag": "1.15",
        "sha256": "c00f986cad2d9fcffffa9cfb2d845ed5d0842fa82ff14b3839526f891987adda",
        **props,
    }


def test_reader_takes_uncompacted_terms_and_plain_url_images(tmp_path: Path) -> None:
    full = {
        "@id": "#img",
        "@type": WR + "ContainerImage",
        "http://schema.org/additionalType": {"@id": WR + "DockerImage"},
        WR + "registry": "quay.io",
        "http://schema.org/name": "biocontainers/samtools",
        WR + "tag": "1.15",
        WR + "sha256": "c00f986cad2d9fcffffa9cfb2d845ed5d0842fa82ff14b3839526f891987adda",
    }
    run = {
        "@id": "#run",
        "@type": "CreateAction",
        "containerImage": ["https://example.org/tools/tool.sif", {"@id": "#img"}],
    }
    image, url = read_crate(_crate_with(tmp_path, [full, run]))
    assert image.type == ContainerType.Docker
    assert image.fingerprint == (
        "quay.io/biocontainers/samtools@sha256:c00f986cad2d9fcffffa9cfb2d845ed5d0842fa82ff14b3839526f891987adda"
    )
    assert (
        url.type == ContainerType.Singularity and url.origTaggedName == "https://example.org/tools/tool.sif"
    )
    assert url.fingerprint is None


# --------------------------------------------------------------------------
# Hostile and broken crates


def test_oversized_crate_is_refused_before_it_is_read(tmp_path: Path) -> None:
    crate = tmp_path / "big"
    crate.mkdir()
    with open(crate / METADATA_FILE, "wb") as fh:
        fh.truncate(MAX_CRATE_BYTES + 1)  # sparse: refusing it must not need reading it
    with pytest.raises(UnsafeInputError, match=r"bytes, more than the 16777216"):
        read_crate(crate)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("this is not JSON {", ProvenanceError, r"not JSON \(.* at line 1, column 1\)"),
        ('{"@graph": [', ProvenanceError, "not JSON"),
        (b"\xff\xfe\x00garbage", ProvenanceError, "not UTF-8"),
        ("[" * 100_000 + "]" * 100_000, UnsafeInputError, "nested too deeply"),
        ('{"@graph": ' + "[" * 300 + "]" * 300 + "}", UnsafeInputError, "more than 200 levels"),
        ('{"@context": "https://w3id.org/ro/crate/1.1/context"}', ProvenanceError, "'@graph' list"),
        ('{"@graph": ["not an entity"]}', ProvenanceError, r"@graph\[0\] is not an entity"),
        ('{"@graph": [{"@id": "./", "@type": "Dataset"}]}', ProvenanceError, "no ContainerImage"),
    ],
)
def test_broken_crates_are_refused_clearly(
    tmp_path: Path, text: str | bytes, error: type, message: str
) -> None:
    crate = tmp_path / "crate"
    crate.mkdir()
    target = crate / METADATA_FILE
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_text(text)
    with pytest.raises(error, match=message) as info:
        read_crate(crate)
    assert str(target) in str(info.value)


def test_a_directory_without_metadata_is_not_a_crate(tmp_path: Path) -> None:
    with pytest.raises(ProvenanceError, match="not an RO-Crate"):
        read_crate(tmp_path)


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"softwareVersion": "quay.io/biocontainers/samtools@sha256:" + "0" * 64}, "different digests"),
        ({"sha256": "abc"}, "not 64 hex digits"),
        ({"sha256": ["a" * 64, "b" * 64]}, "several values"),
        ({"additionalType": "CondaEnvironment"}, "neither DockerImage nor SIFImage"),
        ({"name": None}, "has no name"),
    ],
)
def test_contradicting_or_incomplete_images_are_refused(
    tmp_path: Path, props: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProvenanceError, match=message):
        read_crate(_crate_with(tmp_path, [_image(**props)]))


def test_snapshots_never_come_from_outside_the_crate(tmp_path: Path) -> None:
    outside = tmp_path / "secret.sif"
    outside.write_bytes(b"not yours")
    digest = sha256_file(outside).split(":", 1)[1]
    crate = _crate_with(
        tmp_path,
        [
            _image(),
            {
                "@id": "../secret.sif",
                "@type": "File",
                "additionalType": {"@id": WR + "SIFImage"},
                "about": {"@id": "#img"},
                "sha256": digest,
            },
        ],
    )
    (record,) = read_crate(crate)
    assert record.localPath is None and record.image_signature is None
    # a link inside the crate pointing out of it is no better
    (crate / "link.sif").symlink_to(outside)
    doc = json.loads((crate / METADATA_FILE).read_text())
    doc["@graph"][1]["@id"] = "link.sif"
    (crate / METADATA_FILE).write_text(json.dumps(doc))
    (record,) = read_crate(crate)
    assert record.localPath is None


def test_sif_shipped_in_the_crate_is_adopted_offline(
    tmp_path: Path, shared: tuple[Path, Pushed, dict], records: dict[str, list[Container]]
) -> None:
    """A crate that carries its SIFs needs no registry: an empty cache, offline, same digests."""
    workdir = tmp_path / "wd"
    shutil.copytree(shared[0] / "stage-singularity", workdir / "containers")
    sifs = [
        dataclasses.replace(c, localPath=workdir / "containers" / Path(c.localPath or "").name)
        for c in records["singularity"]
    ]
    write_crate(sifs, workdir, containers_dir=workdir / "containers")
    again = _materialize(tmp_path / "offline", "singularity", read_crate(workdir), offline=True)
    assert [(c.fingerprint, c.image_signature) for c in again] == [
        (c.fingerprint, c.image_signature) for c in sifs
    ]

"""The native SIF builder, checked with the real tools: siftool, tar2sqfs, mksquashfs and unsquashfs.

Nothing is mocked: layers are real tarballs, stored as an OCI image in a
blob store and read through the same verifying ``Image``/``Layer`` readers
production uses (``tests.support.storeimage``); the SIF is read back by
Debian's siftool (the SIF reference implementation) and its partition
unpacked by unsquashfs, and the generated runscript and env script are run
by the host's /bin/sh (the image's busybox is the host's, so the
entrypoint runs too). The SIF is built both ways: streamed into
``tar2sqfs`` (the default) and, as without ``tar2sqfs``, extracted and
packed by ``mksquashfs``; every check of its contents holds for both.
``tests/test_sif_stream.py`` compares the two trees file by file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.layers import (
    MTIME,
    busybox_bytes,
    chardev,
    directory,
    file,
    hardlink,
    image_config,
    opaque,
    symlink,
    tar_bytes,
    whiteout,
    write_layer,
)
from tests.support.storeimage import store_image
from wfexs_like.errors import (
    ContainerEngineException,
    ContainerFactoryException,
    IntegrityError,
    UnsafeArchiveError,
)
from wfexs_like.images.base import Layer
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.rootfs import apply_layers
from wfexs_like.images.sif import (
    DATA_OFFSET,
    SifDataType,
    SifFsType,
    SifObject,
    SifPartType,
    read_object,
    read_sif,
    write_sif,
)
from wfexs_like.images.sif_build import build_sif, sif_uuid
from wfexs_like.images.squashfs import make_squashfs
from wfexs_like.images.store import StoreImage


@pytest.fixture(autouse=True)
def _tools_installed() -> None:
    """Missing tools fail the test: a skip must never stand in for a pass (setup-host installs them)."""
    missing = [t for t in ("siftool", "tar2sqfs", "mksquashfs", "unsquashfs") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}; run scripts/setup-host.sh")


ENV = ["PATH=/usr/local/bin:/bin", "GREETING=hello world", 'TRICKY=it\'s "quoted" $HOME `x` \\n']
LABELS = {"org.example.tool": "samtools", "maintainer": "someone <a@b.c>"}
IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[1]


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_layer(path: Path, *, foreign_owner: bool = True) -> Path:
    owned = [file("usr/bin/owned", b"owned\n", 0o640, uid=1000, gid=1001)] if foreign_owner else []
    return write_layer(
        path,
        [
            directory("bin/"),
            file("bin/busybox", busybox_bytes(), 0o755),
            symlink("bin/sh", "busybox"),
            directory("etc/"),
            file("etc/a", b"deleted by the upper layer\n"),
            file("etc/keep", b"kept\n", mtime=MTIME - 3600),
            directory("data/"),
            directory("data/old/"),
            file("data/old/x", b"old\n"),
            directory("data/old/sub/"),
            file("data/old/sub/y", b"old too\n"),
            directory("usr/bin/"),  # no usr/ entry: an implicit parent
            file("usr/bin/suid-tool", b"#!/bin/sh\n", 0o4755),
            *owned,
            directory("secret/", 0o500),  # read-only dir that still receives a file
            file("secret/f", b"s\n", 0o400),
            directory("dev/"),
            chardev("dev/null", 1, 3),
        ],
    )


def upper_layer(path: Path) -> Path:
    return write_layer(
        path,
        [
            file("data/old/new", b"new\n"),  # before the marker: must survive it
            opaque("data/old"),
            directory("data/old/"),
            whiteout("etc/a"),
            hardlink("bin/hard", "bin/busybox"),
            symlink("bin/ls", "busybox"),
            symlink("etc/mtab", "/proc/mounts"),  # absolute, but never written through: fine
            file("secret/g", b"added to a read-only dir\n", 0o444),
        ],
        compression="none",  # a plain tar layer, detected by its magic bytes
    )


def config(arch: str = "amd64") -> dict:
    return image_config(
        arch=arch,
        env=ENV,
        entrypoint=["/bin/busybox", "echo"],
        cmd=["from", "cmd"],
        labels=LABELS,
        created="2024-01-02T03:04:05.123456789Z",
    )


def layers_of(tmp_path: Path, *files: Path) -> tuple[Layer, ...]:
    """``files`` as the layers of one image in a store of their own, lowest first."""
    return store_image(BlobStore(tmp_path / "store"), files, image_config()).layers()


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("layers")
    return [base_layer(d / "base.tar.gz"), upper_layer(d / "upper.tar")]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> BlobStore:
    return BlobStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def image(store: BlobStore, layers: list[Path]) -> StoreImage:
    return store_image(store, layers, config())


@pytest.fixture(scope="module", params=["tar2sqfs", "mksquashfs"])
def packer(request: pytest.FixtureRequest) -> str:
    return request.param


def tar2sqfs_for(packer: str) -> str | None:
    """``build_sif``'s ``tar2sqfs`` argument: None forces the extract-and-``mksquashfs`` fallback."""
    return "tar2sqfs" if packer == "tar2sqfs" else None


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, image: StoreImage, packer: str) -> Path:
    d = tmp_path_factory.mktemp("built")
    dest = d / "image.sif"
    build_sif(image, dest, tmp_dir=d / "tmp", source="docker://example/img:1", tar2sqfs=tar2sqfs_for(packer))
    assert list((d / "tmp").iterdir()) == [], "temporary files left behind"
    return dest


@pytest.fixture(scope="module")
def unpacked(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The system partition, dumped by siftool and unpacked by unsquashfs."""
    d = tmp_path_factory.mktemp("unpacked")
    part = d / "part.squashfs"
    with open(part, "wb") as out:
        subprocess.run(["siftool", "dump", "3", str(built)], stdout=out, check=True)
    run("unsquashfs", "-q", "-no-progress", "-d", d / "root", part)
    return d / "root"


def squashfs_listing(built: Path, tmp_path: Path) -> dict[str, str]:
    part = tmp_path / "p.squashfs"
    with open(part, "wb") as out:
        subprocess.run(["siftool", "dump", "3", str(built)], stdout=out, check=True)
    listing = {}
    for line in run("unsquashfs", "-lln", part, env={**os.environ, "TZ": "UTC"}).splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("squashfs-root"):
            name = fields[5].split(" -> ")[0].removeprefix("squashfs-root")
            listing[name or "/"] = line
    return listing


# ------------------------------------------------------------------------------------------
# The SIF as siftool sees it


def test_siftool_lists_a_squashfs_primary_system_partition(built: Path, image: StoreImage) -> None:
    out = run("siftool", "list", built)
    rows = [r for r in out.splitlines() if re.match(r"^\d+\s+\|", r)]
    assert len(rows) == 3
    assert rows[0].endswith("|Def.FILE")
    assert rows[1].endswith("|JSON.Generic")
    assert rows[2].endswith("|FS (Squashfs/*System/amd64)")

    info = run("siftool", "info", "3", built)
    assert re.search(r"Filesystem Type:\s+Squashfs", info)
    assert re.search(r"Partition Type:\s+\*System", info)
    assert re.search(r"Architecture:\s+amd64", info)

    header = run("siftool", "header", built)
    assert re.search(r"Primary Architecture:\s+amd64", header)
    assert re.search(r"Created At:\s+2024-01-02 03:04:05 \+0000 UTC", header)
    assert f"ID:                   {sif_uuid(image.digest())}" in header

    assert run("siftool", "dump", "1", built) == "bootstrap: docker\nfrom: example/img:1\n"
    assert re.search(r"Name:\s+oci-config.json", run("siftool", "info", "2", built))
    assert json.loads(run("siftool", "dump", "2", built)) == config()["config"]


def test_arm64_image_gives_an_arm64_sif(store: BlobStore, layers: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "arm.sif"
    build_sif(store_image(store, layers, config("arm64")), dest, tmp_dir=tmp_path / "tmp")
    assert run("siftool", "list", dest).rstrip().endswith("FS (Squashfs/*System/arm64)")
    assert re.search(r"Primary Architecture:\s+arm64", run("siftool", "header", dest))
    assert read_sif(dest).arch == "arm64"


# ------------------------------------------------------------------------------------------
# The root file system inside it


def test_layers_are_merged_with_whiteouts_and_opaque_dirs(unpacked: Path) -> None:
    assert not (unpacked / "etc/a").exists()
    assert (unpacked / "etc/keep").read_text() == "kept\n"
    assert sorted(p.name for p in (unpacked / "data/old").iterdir()) == ["new"]
    assert (unpacked / "data/old/new").read_text() == "new\n"
    assert (unpacked / "bin/busybox").read_bytes() == busybox_bytes()
    assert os.readlink(unpacked / "bin/ls") == "busybox"
    assert os.readlink(unpacked / "etc/mtab") == "/proc/mounts"
    assert not (unpacked / "dev/null").exists(), "device nodes are skipped"
    assert (unpacked / "secret/g").read_text() == "added to a read-only dir\n"


def test_hardlinks_stay_hardlinks(unpacked: Path) -> None:
    a, b = os.stat(unpacked / "bin/busybox"), os.stat(unpacked / "bin/hard")
    assert a.st_ino == b.st_ino
    assert a.st_nlink == 2


def test_modes_times_and_ownership_survive(built: Path, tmp_path: Path, packer: str) -> None:
    listing = squashfs_listing(built, tmp_path)
    assert listing["/usr/bin/suid-tool"].startswith("-rwsr-xr-x")
    assert listing["/secret"].startswith("dr-x------")
    assert listing["/secret/f"].startswith("-r--------")
    assert " 2023-11-14 21:13 " in listing["/etc/keep"]  # the layer's mtime, not extraction time
    # Streamed, owners come from the layers' headers; extracted, only root could keep them.
    if IS_ROOT or packer == "tar2sqfs":
        assert listing["/usr/bin/owned"].split()[1] == "1000/1001"
    else:
        assert listing["/usr/bin/owned"].split()[1] == "0/0"


def test_runtime_files_are_there(unpacked: Path) -> None:
    sd = unpacked / ".singularity.d"
    for action in ("exec", "run", "shell", "start", "test"):
        assert os.access(sd / "actions" / action, os.X_OK), action
    for script in (
        "01-base.sh",
        "10-docker2singularity.sh",
        "90-environment.sh",
        "94-appsbase.sh",
        "95-apps.sh",
        "99-base.sh",
        "99-runtimevars.sh",
    ):
        assert (sd / "env" / script).read_text().startswith("#!/bin/sh\n"), script
    assert (sd / "libs").is_dir()
    assert os.access(sd / "startscript", os.X_OK)
    assert (sd / "Singularity").read_text() == "bootstrap: docker\nfrom: example/img:1\n"
    assert os.readlink(unpacked / "singularity") == ".singularity.d/runscript"
    assert os.readlink(unpacked / "environment") == ".singularity.d/env/90-environment.sh"
    for mount_point in ("dev", "proc", "sys", "tmp", "home", "root", "var/tmp"):
        assert (unpacked / mount_point).is_dir(), mount_point
    assert (unpacked / "etc/hosts").is_file() and (unpacked / "etc/resolv.conf").is_file()


def test_runscript_runs_entrypoint_and_cmd(unpacked: Path) -> None:
    runscript = unpacked / ".singularity.d/runscript"
    text = runscript.read_text()
    assert 'OCI_ENTRYPOINT=\'"/bin/busybox" "echo"\'' in text
    assert 'OCI_CMD=\'"from" "cmd"\'' in text
    # the image's /bin/busybox is the host's, so the entrypoint really runs
    assert run("sh", runscript) == "from cmd\n"
    assert run("sh", runscript, "a  b", "c") == "a  b c\n"
    no_eval = {**os.environ, "APPTAINER_NO_EVAL": "1"}
    assert run("sh", runscript, env=no_eval) == "from cmd\n"
    assert run("sh", runscript, "$HOME", "it's", env=no_eval) == "$HOME it's\n"


def test_env_script_exports_the_image_env(unpacked: Path) -> None:
    script = unpacked / ".singularity.d/env/10-docker2singularity.sh"
    show = f'. "{script}"; printf "%s|%s|%s" "$PATH" "$GREETING" "$TRICKY"'
    clean = {"HOME": "/nowhere"}
    assert (
        run("/bin/sh", "-c", show, env=clean)
        == '/usr/local/bin:/bin|hello world|it\'s "quoted" $HOME `x` \\n'
    )
    # a value the caller set wins, except PATH, which is always the image's
    preset = {**clean, "GREETING": "from the host", "PATH": "/host/bin"}
    assert run("/bin/sh", "-c", show, env=preset).split("|")[:2] == ["/usr/local/bin:/bin", "from the host"]
    exported = run("/bin/sh", "-c", f'. "{script}"; /bin/busybox env', env=clean)
    assert "GREETING=hello world" in exported.splitlines()


def test_labels_json_holds_the_image_labels(unpacked: Path) -> None:
    labels = json.loads((unpacked / ".singularity.d/labels.json").read_text())
    assert labels["org.example.tool"] == "samtools"
    assert labels["maintainer"] == "someone <a@b.c>"
    assert labels["org.label-schema.usage.singularity.deffile.bootstrap"] == "docker"
    assert labels["org.label-schema.usage.singularity.deffile.from"] == "example/img:1"
    assert labels["org.opencontainers.image.architecture"] == "amd64"


# ------------------------------------------------------------------------------------------
# Determinism


def test_same_image_gives_byte_identical_sif(
    layers: list[Path], image: StoreImage, built: Path, tmp_path: Path, packer: str
) -> None:
    time.sleep(1.1)  # a different second: any "now" leaking in would show
    elsewhere = store_image(BlobStore(tmp_path / "other-store"), layers, config())
    assert elsewhere.digest() == image.digest()
    again = tmp_path / "elsewhere" / "again.sif"
    build_sif(
        elsewhere,
        again,
        tmp_dir=tmp_path / "other-tmp",
        source="docker://example/img:1",
        tar2sqfs=tar2sqfs_for(packer),
    )
    assert sha256(again) == sha256(built)

    # Another image (its config differs in a field the SIF does not show): only the UUID changes.
    other_image = store_image(BlobStore(tmp_path / "other-store"), layers, {**config(), "author": "x"})
    assert other_image.digest() != image.digest()
    other = tmp_path / "other.sif"
    build_sif(
        other_image, other, tmp_dir=tmp_path / "t3", source="example/img:1", tar2sqfs=tar2sqfs_for(packer)
    )
    assert read_sif(other).uuid == sif_uuid(other_image.digest()) != read_sif(built).uuid
    a, b = other.read_bytes(), built.read_bytes()
    assert a[:48] + a[64:] == b[:48] + b[64:]  # the header's UUID field: bytes 48-63


# ------------------------------------------------------------------------------------------
# read_sif / write_sif against siftool


def _siftool_header(path: Path) -> dict[str, str]:
    return {
        k.strip(): v.strip()
        for k, _, v in (ln.partition(":") for ln in run("siftool", "header", path).splitlines())
    }


def test_read_sif_agrees_with_siftool(built: Path) -> None:
    info = read_sif(built)
    header = _siftool_header(built)
    assert str(info.uuid) == header["ID"]
    assert info.arch == header["Primary Architecture"]
    assert info.version == header["Version"] == "01"
    assert str(info.descriptors_free) == header["Descriptors Free"]
    assert str(info.descriptors_total) == header["Descriptors Total"]
    assert str(info.descriptors_offset) == header["Descriptors Offset"]
    assert str(info.data_offset) == header["Data Offset"] == str(DATA_OFFSET)
    assert info.launch_script == "#!/usr/bin/env run-singularity\n"

    rows = {}
    for line in run("siftool", "list", built).splitlines():
        cols = [c.strip() for c in line.split("|")]
        if cols[0].isdigit():
            rows[int(cols[0])] = cols
    assert sorted(rows) == [d.id for d in info.descriptors]
    for d in info.descriptors:
        cols = rows[d.id]
        assert cols[1] == str(d.group_id)
        assert cols[3] == f"{d.offset}-{d.offset + d.size}"
        obj = run("siftool", "info", str(d.id), built)
        assert re.search(rf"Size:\s+{d.size}\n", obj)
    part = info.primary_partition()
    assert part is not None and part.id == 3
    assert (part.fs_type, part.part_type, part.arch) == (SifFsType.Squash, SifPartType.PrimSys, "amd64")
    assert part.offset % 4096 == 0
    assert read_object(built, info.by_id(1)) == b"bootstrap: docker\nfrom: example/img:1\n"


def _zero_volatile(raw: bytes) -> bytes:
    """Blank what siftool sets from a clock or RNG (UUID, times) and the launch line it omits."""
    b = bytearray(raw)
    b[0:32] = bytes(32)
    b[48:80] = bytes(32)
    for i in range(48):
        base = 4096 + i * 585 + 41
        b[base : base + 16] = bytes(16)
    return bytes(b)


def test_write_sif_matches_siftool_byte_for_byte(tmp_path: Path) -> None:
    deffile = tmp_path / "d.def"
    deffile.write_bytes(b"bootstrap: docker\nfrom: x\n")
    cfg = tmp_path / "c.json"
    cfg.write_bytes(b'{"Env":["A=b"]}')
    part = tmp_path / "p.squashfs"
    part.write_bytes(os.urandom(10000))
    ref = tmp_path / "ref.sif"
    run("siftool", "new", ref)
    run("siftool", "add", ref, deffile, "--datatype", "1", "--filename", "d.def")
    run("siftool", "add", ref, cfg, "--datatype", "6", "--filename", "oci-config.json")
    run(
        "siftool",
        "add",
        ref,
        part,
        "--datatype",
        "4",
        "--parttype",
        "2",
        "--partfs",
        "1",
        "--partarch",
        "4",
        "--filename",
        "p.squashfs",
    )

    ours = tmp_path / "ours.sif"
    write_sif(
        ours,
        [
            SifObject(SifDataType.Deffile, deffile.read_bytes(), name="d.def", group_id=0),
            SifObject(SifDataType.GenericJSON, cfg, name="oci-config.json", group_id=0),
            SifObject(
                SifDataType.Partition,
                part,
                name="p.squashfs",
                group_id=0,
                fs_type=SifFsType.Squash,
                part_type=SifPartType.PrimSys,
                arch="arm64",
            ),
        ],
        uuid=read_sif(ref).uuid,
        created=0,
    )
    assert _zero_volatile(ours.read_bytes()) == _zero_volatile(ref.read_bytes())
    assert ours.read_bytes()[:32] == b"#!/usr/bin/env run-singularity\n".ljust(32, b"\0")
    # and our reader reads siftool's file
    info = read_sif(ref)
    assert [d.datatype for d in info.descriptors] == [
        SifDataType.Deffile,
        SifDataType.GenericJSON,
        SifDataType.Partition,
    ]
    assert info.arch == "arm64"
    assert read_object(ref, info.by_id(2)) == cfg.read_bytes()


def test_write_sif_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    dest = tmp_path / "x.sif"
    dest.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        write_sif(dest, [SifObject(SifDataType.Generic, tmp_path / "missing")], uuid=sif_uuid("x"), created=0)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.sif"]


# ------------------------------------------------------------------------------------------
# Hostile layers


def _outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text("precious\n")
    return d


UNSAFE = {
    "dotdot": lambda out: [file("../evil", b"x")],
    "dotdot-inside": lambda out: [directory("a/"), file("a/../../evil", b"x")],
    "absolute": lambda out: [file("/abs/evil", b"x")],
    "write-through-absolute-symlink": lambda out: [symlink("etc", str(out)), file("etc/evil", b"x")],
    "write-through-escaping-relative-symlink": lambda out: [
        symlink("up", "../../../../../../../../../../.." + str(out)),
        file("up/evil", b"x"),
    ],
    "nested-symlink-escape": lambda out: [
        directory("a/"),
        symlink("a/b", "../c"),
        symlink("c", "/"),
        file("a/b/evil", b"x"),
    ],
    "hardlink-dotdot": lambda out: [hardlink("h", "../../x")],
    "hardlink-absolute": lambda out: [hardlink("h", str(out / "victim"))],
    "hardlink-through-symlink": lambda out: [symlink("o", str(out)), hardlink("h", "o/victim")],
    "whiteout-through-symlink": lambda out: [symlink("etc", str(out)), whiteout("etc/victim")],
    "opaque-through-symlink": lambda out: [symlink("etc", str(out)), opaque("etc")],
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_layers_are_refused(case: str, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    members = UNSAFE[case](outside)
    (layer,) = layers_of(tmp_path, write_layer(tmp_path / f"{case}.tar.gz", members))
    rootfs = tmp_path / "a" / "b" / "rootfs"
    with pytest.raises(UnsafeArchiveError) as err:
        apply_layers([layer], rootfs)
    assert f"layer {layer.digest()}:" in str(err.value)
    assert repr(members[-1].name) in str(err.value)
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "precious\n"
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "a" / "b" / "evil").exists()
    assert not Path("/abs/evil").exists()


def test_unsafe_layer_stops_the_build_and_cleans_up(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    good = base_layer(tmp_path / "good.tar.gz")
    bad = write_layer(tmp_path / "bad.tar.gz", [symlink("etc2", str(outside)), file("etc2/evil", b"x")])
    dest = tmp_path / "x.sif"
    image = store_image(BlobStore(tmp_path / "store"), [good, bad], config())
    with pytest.raises(UnsafeArchiveError, match="etc2/evil"):
        build_sif(image, dest, tmp_dir=tmp_path / "tmp")
    assert not dest.exists()
    assert list((tmp_path / "tmp").iterdir()) == []  # read-only secret/ included
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    layer = write_layer(
        tmp_path / "l.tar.gz",
        [
            directory("usr/lib/"),
            symlink("lib", "usr/lib"),
            file("lib/libx.so", b"x"),
            symlink("a", "usr/../lib"),
        ],
    )
    layer2 = write_layer(tmp_path / "l2.tar.gz", [file("a/liby.so", b"y")])
    rootfs = tmp_path / "rootfs"
    apply_layers(layers_of(tmp_path, layer, layer2), rootfs)
    assert (rootfs / "usr/lib/libx.so").read_bytes() == b"x"
    assert (rootfs / "usr/lib/liby.so").read_bytes() == b"y"
    assert os.readlink(rootfs / "lib") == "usr/lib"


def test_upper_layer_replaces_a_symlink_with_a_directory(tmp_path: Path) -> None:
    lower = write_layer(tmp_path / "l.tar.gz", [directory("usr/bin/"), symlink("bin", "/usr/bin")])
    upper = write_layer(tmp_path / "u.tar.gz", [directory("bin/"), file("bin/tool", b"t", 0o755)])
    rootfs = tmp_path / "rootfs"
    apply_layers(layers_of(tmp_path, lower, upper), rootfs)
    assert not (rootfs / "bin").is_symlink()
    assert (rootfs / "bin/tool").read_bytes() == b"t"
    assert list((rootfs / "usr/bin").iterdir()) == []


def test_whiteout_of_a_directory_removes_it_and_its_read_only_content(tmp_path: Path) -> None:
    lower = write_layer(
        tmp_path / "l.tar.gz", [directory("d/", 0o555), directory("d/e/", 0o500), file("d/e/f", b"")]
    )
    upper = write_layer(tmp_path / "u.tar.gz", [whiteout("d")])
    rootfs = tmp_path / "rootfs"
    apply_layers(layers_of(tmp_path, lower, upper), rootfs)
    assert not (rootfs / "d").exists()


def test_dir_modes_are_applied_after_all_layers(tmp_path: Path) -> None:
    lower = write_layer(tmp_path / "l.tar.gz", [directory("ro/", 0o555, mtime=1000)])
    upper = write_layer(tmp_path / "u.tar.gz", [file("ro/late", b"late")])
    rootfs = tmp_path / "rootfs"
    apply_layers(layers_of(tmp_path, lower, upper), rootfs, implicit_mtime=42)
    st = os.stat(rootfs / "ro")
    assert stat.S_IMODE(st.st_mode) == 0o555
    assert st.st_mtime == 1000
    assert os.stat(rootfs).st_mtime == 42
    assert (rootfs / "ro/late").read_bytes() == b"late"


def test_zstd_layers_are_refused_clearly(tmp_path: Path) -> None:
    if shutil.which("zstd") is None:
        pytest.fail("zstd CLI not installed; run scripts/setup-host.sh")
    (layer,) = layers_of(tmp_path, write_layer(tmp_path / "l.tar.zst", [file("a", b"a")], compression="zstd"))
    with pytest.raises(
        ContainerFactoryException, match="zstd-compressed, which this tool cannot decode"
    ) as err:
        apply_layers([layer], tmp_path / "rootfs")
    assert layer.digest() in str(err.value)


def test_layer_published_broken_is_reported(tmp_path: Path) -> None:
    """A truncated gzip that *is* the blob its digest names: the image is broken, not our copy."""
    good = write_layer(tmp_path / "l.tar.gz", [file("a", os.urandom(100000))])
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(good.read_bytes()[:50000])
    (layer,) = layers_of(tmp_path, bad)
    with pytest.raises(ContainerFactoryException, match="not a readable") as err:
        apply_layers([layer], tmp_path / "rootfs")
    assert not isinstance(err.value, IntegrityError)
    assert layer.digest() in str(err.value)


def _flip_byte(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :]


# How a layer blob in the store is damaged after it was verified: (layer index, new bytes).
CORRUPTIONS = {
    # the deflate stream breaks at once: the blob is re-hashed to tell corruption from a broken image
    "gzip-deflate-header-flipped": lambda base, upper: (0, _flip_byte(base, 20)),
    # the stream decodes to other bytes: the hash at its end tells
    "gzip-byte-flipped": lambda base, upper: (0, _flip_byte(base, len(base) // 2)),
    # a valid layer, just not this one
    "gzip-other-layer": lambda base, upper: (0, gzip.compress(tar_bytes([file("x", b"x")]), mtime=0)),
    # a plain tar that stays a readable tar: only the hash can tell
    "tar-content-changed": lambda base, upper: (
        1,
        upper.replace(b"added to a read-only", b"ADDED to a read-only"),
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_layer_raises_integrity_error_and_writes_nothing(case: str, tmp_path: Path) -> None:
    files = [base_layer(tmp_path / "base.tar.gz"), upper_layer(tmp_path / "upper.tar")]
    store = BlobStore(tmp_path / "store")
    image = store_image(store, files, config())
    index, damaged = CORRUPTIONS[case](files[0].read_bytes(), files[1].read_bytes())
    layer = image.layers()[index]
    blob = store.path(layer.digest())
    assert damaged != blob.read_bytes()
    os.chmod(blob, 0o644)
    blob.write_bytes(damaged)
    os.utime(blob, (MTIME, MTIME))  # whatever the clock's resolution, the trust record no longer fits
    dest = tmp_path / "out" / "x.sif"
    with pytest.raises(IntegrityError) as err:
        build_sif(image, dest, tmp_dir=tmp_path / "tmp")
    assert err.value.expected == layer.digest()
    assert layer.digest() in str(err.value)
    assert not dest.exists()
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_mksquashfs_failure_carries_command_exit_code_and_stderr(tmp_path: Path) -> None:
    with pytest.raises(ContainerEngineException) as err:
        make_squashfs(tmp_path / "no-such-rootfs", tmp_path / "x.squashfs", mkfs_time=0)
    exc = err.value
    assert exc.returncode not in (None, 0)
    assert exc.command is not None and exc.command[0] == "mksquashfs"
    assert "no-such-rootfs" in exc.stderr_tail


def _as_nobody() -> list[str] | None:
    """A python command run as nobody, able to import this checkout, or None."""
    if not IS_ROOT or shutil.which("setpriv") is None:
        return None
    for python in (sys.executable, "/usr/bin/python3"):
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", python]
        probe = subprocess.run(
            [*cmd, "-c", "import wfexs_like.images.sif_build"],
            env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return cmd
    return None


_NOBODY_BUILD = """
import sys
from pathlib import Path
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.sif_build import build_sif
from wfexs_like.images.store import StoreImage
store, digest, dest, tmp, packer = sys.argv[1:]
image = StoreImage(BlobStore(Path(store), readonly=True), digest)
build_sif(image, Path(dest), tmp_dir=Path(tmp), tar2sqfs=packer if packer == "tar2sqfs" else None)
"""


def test_unprivileged_build_is_identical_to_a_root_build(tmp_path: Path, packer: str) -> None:
    """Read-only dirs, setuid bits and cleanup without privileges; extracted, ownership normalised to
    root; streamed, the layers' owners whoever builds."""
    nobody = _as_nobody()
    if nobody is None:
        pytest.fail("needs root, setpriv and /usr/bin/python3 (as on CI); run scripts/setup-host.sh as root")
    work = Path(tempfile.mkdtemp(prefix="sif-nobody-"))
    try:
        os.chown(work, 65534, 65534)
        streamed = packer == "tar2sqfs"
        layers = [base_layer(work / "base.tar.gz", foreign_owner=streamed), upper_layer(work / "upper.tar")]
        image = store_image(BlobStore(work / "store"), layers, config())
        as_root = tmp_path / "root.sif"
        build_sif(image, as_root, tmp_dir=tmp_path / "tmp", tar2sqfs=tar2sqfs_for(packer))
        as_nobody = work / "nobody.sif"
        args = [str(work / "store"), image.digest(), str(as_nobody), str(work / "tmp"), packer]
        proc = subprocess.run(
            [*nobody, "-c", _NOBODY_BUILD, *args],
            env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert os.stat(as_nobody).st_uid == 65534
        assert list((work / "tmp").iterdir()) == []
        listing = squashfs_listing(as_nobody, tmp_path)
        assert listing["/usr/bin/suid-tool"].startswith("-rwsr-xr-x")
        assert listing["/secret"].startswith("dr-x------")
        if streamed:
            assert listing["/usr/bin/owned"].split()[1] == "1000/1001"
        assert sha256(as_nobody) == sha256(as_root)
    finally:
        shutil.rmtree(work)

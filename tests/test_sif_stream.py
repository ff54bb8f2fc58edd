"""The streamed SIF build: layers merged in memory, one tar into ``tar2sqfs``, no tree on disk.

The reference is the extraction path it replaces (``rootfs.apply_layers`` +
``mksquashfs``), which stays as the fallback: for random layer stacks the
merged tar must describe exactly the tree ``apply_layers`` leaves on disk,
and for real images both SIFs must hold the same files, modes, owners,
times, links and bytes, as ``unsquashfs`` sees them. Nothing is mocked:
real layers in a real blob store, the real ``tar2sqfs``, ``mksquashfs``,
``unsquashfs`` and ``siftool``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.layers import (
    MTIME,
    Member,
    busybox_bytes,
    chardev,
    directory,
    fifo,
    file,
    hardlink,
    image_config,
    opaque,
    symlink,
    whiteout,
    write_layer,
)
from tests.support.storeimage import store_image
from wfexs_like import progress
from wfexs_like.errors import ContainerEngineException, ContainerFactoryException, UnsafeArchiveError
from wfexs_like.images import squashfs
from wfexs_like.images.base import Layer
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.rootfs import DEVICE_NODE_WARNING, apply_layers
from wfexs_like.images.sif import read_sif
from wfexs_like.images.sif_build import build_sif
from wfexs_like.images.tarstream import MergeConflict, write_merged_tar

IS_ROOT = os.geteuid() == 0
IMPLICIT = 1_650_000_000


@pytest.fixture(autouse=True)
def _tools_installed() -> None:
    """Missing tools fail the test: a skip must never stand in for a pass (setup-host installs them)."""
    missing = [t for t in ("tar2sqfs", "siftool", "mksquashfs", "unsquashfs") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}; run scripts/setup-host.sh")


# ------------------------------------------------------------------------------------------
# Trees as a dict: path -> (kind, mode, uid, gid, mtime, payload), plus hard-link groups

Tree = tuple[dict[str, tuple], set[frozenset[str]]]


def disk_tree(root: Path) -> Tree:
    entries: dict[str, tuple] = {}
    by_inode: dict[int, list[str]] = {}

    def visit(path: Path, rel: str) -> None:
        st_ = os.lstat(path)
        mode = stat.S_IMODE(st_.st_mode)
        owner = (st_.st_uid, st_.st_gid) if IS_ROOT else (0, 0)
        if stat.S_ISDIR(st_.st_mode):
            entries[rel] = ("dir", mode, *owner, int(st_.st_mtime), None)
            for child in sorted(os.listdir(path)):
                visit(path / child, f"{rel}/{child}" if rel else child)
            return
        if stat.S_ISLNK(st_.st_mode):
            entries[rel] = ("symlink", 0o777, *owner, int(st_.st_mtime), os.readlink(path))
        elif stat.S_ISREG(st_.st_mode):
            entries[rel] = ("file", mode, *owner, int(st_.st_mtime), path.read_bytes())
        elif stat.S_ISFIFO(st_.st_mode):
            entries[rel] = ("fifo", mode, *owner, int(st_.st_mtime), None)
        else:
            entries[rel] = ("other", mode, *owner, int(st_.st_mtime), None)
        by_inode.setdefault(st_.st_ino, []).append(rel)

    visit(root, "")
    return entries, {frozenset(p) for p in by_inode.values() if len(p) > 1}


def tar_tree(data: bytes, implicit_mtime: int) -> Tree:
    """What ``tar2sqfs`` makes of the stream: implicit parents are 0755, root's, at the implicit time."""
    entries: dict[str, tuple] = {"": ("dir", 0o755, 0, 0, implicit_mtime, None)}
    groups: dict[str, set[str]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for m in tf:
            rel = m.name.rstrip("/")
            rel = "" if rel in (".", "") else rel
            parts = rel.split("/") if rel else []
            assert rel not in entries or (m.isdir() and entries[rel][0] == "dir"), f"{rel!r} written twice"
            for i in range(1, len(parts)):
                entries.setdefault("/".join(parts[:i]), ("dir", 0o755, 0, 0, implicit_mtime, None))
            owner = (m.uid, m.gid) if IS_ROOT else (0, 0)
            if m.isdir():
                entries[rel] = ("dir", m.mode, *owner, m.mtime, None)
            elif m.issym():
                entries[rel] = ("symlink", m.mode, *owner, m.mtime, m.linkname)
            elif m.isreg():
                body = tf.extractfile(m)
                assert body is not None
                entries[rel] = ("file", m.mode, *owner, m.mtime, body.read())
            elif m.isfifo():
                entries[rel] = ("fifo", m.mode, *owner, m.mtime, None)
            elif m.islnk():
                assert m.linkname in entries, f"hard link {rel!r} before its target {m.linkname!r}"
                entries[rel] = entries[m.linkname]
                groups.setdefault(m.linkname, {m.linkname}).add(rel)
            else:
                raise AssertionError(f"unexpected member {m.name!r} of type {m.type!r}")
    return entries, {frozenset(g) for g in groups.values()}


def merged(layers: Sequence[Layer], *, speculate: bool = True) -> bytes:
    out = io.BytesIO()
    try:
        write_merged_tar(layers, out, implicit_mtime=IMPLICIT, speculate=speculate)
    except MergeConflict:
        out = io.BytesIO()
        write_merged_tar(layers, out, implicit_mtime=IMPLICIT, speculate=False)
    return out.getvalue()


def extracted(layers: Sequence[Layer], where: Path) -> Tree:
    apply_layers(layers, where, implicit_mtime=IMPLICIT)
    return disk_tree(where)


def stored(where: Path, *member_lists: list[Member], compression: str = "none") -> tuple[Layer, ...]:
    where.mkdir(parents=True, exist_ok=True)
    suffix = ".tar.gz" if compression == "gzip" else ".tar"
    files = [
        write_layer(where / f"layer{i}{suffix}", members, compression=compression)
        for i, members in enumerate(member_lists)
    ]
    return store_image(BlobStore(where / "store"), files, image_config()).layers()


def assert_same_merge(layers: Sequence[Layer], where: Path) -> None:
    want = extracted(layers, where / "rootfs")
    assert tar_tree(merged(layers), IMPLICIT) == want
    assert tar_tree(merged(layers, speculate=False), IMPLICIT) == want


# ------------------------------------------------------------------------------------------
# The merge against the extraction it replaces


def test_the_merge_of_a_layered_image_is_the_extracted_tree(tmp_path: Path) -> None:
    layers = stored(
        tmp_path,
        [
            directory("bin/"),
            file("bin/busybox", b"bb", 0o755, uid=0),
            hardlink("bin/hard", "bin/busybox"),
            symlink("bin/sh", "busybox"),
            directory("etc/", mtime=MTIME - 10),
            file("etc/a", b"a"),
            file("etc/keep", b"keep", 0o600, uid=1000, gid=1001, mtime=MTIME - 3600),
            directory("usr/lib/"),
            symlink("lib", "usr/lib"),
            file("lib/libx.so", b"x"),  # written through a symlink inside the root
            directory("data/old/sub/"),
            file("data/old/x", b"old"),
            file("data/old/sub/y", b"old too"),
            directory("ro/", 0o555),
            file("usr/bin/suid", b"#!", 0o4755),
            fifo("run/fifo"),
            chardev("dev/null", 1, 3),
        ],
        [
            file("data/old/new", b"new"),  # before the marker: survives it
            opaque("data/old"),
            whiteout("etc/a"),
            whiteout("bin/busybox"),  # the hard link keeps the bytes
            file("ro/late", b"late"),
            directory("etc/", 0o700, mtime=MTIME + 10),  # an upper layer's attributes win
            hardlink("lib/liby.so", "bin/hard"),  # a link made in a later layer, through the symlink
            file("usr/lib/libx.so", b"replaced"),
        ],
        [
            directory("bin/"),
            symlink("usr/sbin", "../bin"),
            file("usr/sbin/tool", b"tool", 0o755),  # lands in /bin
            whiteout("run"),
        ],
    )
    assert_same_merge(layers, tmp_path)
    tree, groups = tar_tree(merged(layers), IMPLICIT)
    assert tree["bin/hard"][5] == b"bb" and "bin/busybox" not in tree
    assert groups == {frozenset({"bin/hard", "usr/lib/liby.so"})}
    assert tree["usr/lib/libx.so"][5] == b"replaced" and tree["bin/tool"][5] == b"tool"
    assert sorted(p for p in tree if p.startswith("data/old/")) == ["data/old/new"]
    assert tree["etc"][1] == 0o700 and tree["etc/keep"][1:5] == (
        0o600,
        *((1000, 1001) if IS_ROOT else (0, 0)),
        MTIME - 3600,
    )


class Counted:
    """A layer that counts how often it is read (and otherwise is the layer)."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self.reads = 0

    def uncompressed(self) -> BinaryIO:
        self.reads += 1
        return self.layer.uncompressed()

    def __getattr__(self, name: str) -> object:
        return getattr(self.layer, name)


def test_the_largest_layer_is_read_once(tmp_path: Path) -> None:
    """The base (most of the bytes) is written as it is read; a layer above is read again only when
    some of its entries survive (here the middle one's are all hidden by the top's opaque /etc)."""
    base = [directory("usr/lib/"), file("usr/lib/big", os.urandom(1 << 20)), file("usr/lib/old", b"old")]
    base += [file(f"etc/f{i}", b"%d" % i) for i in range(50)] + [symlink("lib", "usr/lib")]
    upper = [
        whiteout("etc/f1"),
        file("etc/f2", b"new"),
        hardlink("usr/big-link", "lib/big"),  # a late name of bytes already written
        directory("usr/"),
    ]
    top = [opaque("etc"), file("etc/only", b"only"), directory("opt/"), file("opt/tool", b"tool", 0o755)]
    layers = [Counted(layer) for layer in stored(tmp_path, base, upper, top)]
    out = io.BytesIO()
    write_merged_tar(layers, out, implicit_mtime=IMPLICIT)  # type: ignore[arg-type]
    assert [layer.reads for layer in layers] == [1, 1, 2]
    tree, groups = tar_tree(out.getvalue(), IMPLICIT)
    assert tar_tree(out.getvalue(), IMPLICIT) == extracted(layers, tmp_path / "rootfs")  # type: ignore[arg-type]
    assert sorted(p for p in tree if p.startswith("etc/")) == ["etc/only"]
    assert groups == {frozenset({"usr/big-link", "usr/lib/big"})}


def test_a_layer_that_writes_a_path_twice_is_merged_again_from_scratch(tmp_path: Path) -> None:
    """The largest layer is written as it is read; when it contradicts itself the stream is rebuilt."""
    layers = stored(
        tmp_path,
        [file("a", b"lower"), directory("d/"), file("d/f", b"f")],
        [file("a", b"first"), file("d/g", b"g" * 10000), file("a", b"second"), symlink("d", "elsewhere")],
    )
    with pytest.raises(MergeConflict):
        write_merged_tar(layers, io.BytesIO(), implicit_mtime=IMPLICIT)
    assert_same_merge(layers, tmp_path)
    tree, _ = tar_tree(merged(layers), IMPLICIT)
    assert tree["a"][5] == b"second" and tree["d"][0] == "symlink"


def test_a_write_through_a_symlink_onto_a_written_entry_merges_again(tmp_path: Path) -> None:
    """Layers above the largest are checked by raw path; through a symlink they land elsewhere."""
    layers = stored(
        tmp_path,
        [
            directory("usr/lib/"),
            file("usr/lib/x", b"base"),
            symlink("lib", "usr/lib"),
            file("big", b"b" * 100000),
        ],
        [file("lib/x", b"upper")],
    )
    with pytest.raises(MergeConflict):
        write_merged_tar(layers, io.BytesIO(), implicit_mtime=IMPLICIT)
    assert_same_merge(layers, tmp_path)
    assert tar_tree(merged(layers), IMPLICIT)[0]["usr/lib/x"][5] == b"upper"


# Names a random layer may use: mostly directories where directories go, so that layers overlap
# and merge; sometimes not, so that replacements and refusals are tried too.
_DIRS = ["a", "b", "a/b"]
_LEAVES = ["a/x", "a/b/y", "b/z", "c", "a/b/x"]
_TARGETS = ["a", "b", "c", "a/b", "../a", "..", ".", "b/../a", "/abs", "a/b/y", "../../x"]
_KINDS = ["file", "file", "file", "dir", "dir", "symlink", "hardlink", "whiteout", "opaque", "opaque", "fifo"]


@st.composite
def _stacks(draw: st.DrawFn) -> list[list[Member]]:
    """Layers over a few shared names; hard links mostly to files made before."""
    files: list[str] = []
    stack = []
    for _ in range(draw(st.integers(1, 4))):
        layer = []
        for _ in range(draw(st.integers(0, 8))):
            kind = draw(st.sampled_from(_KINDS + ["chardev"] * draw(st.sampled_from([0, 1]))))
            usual = _DIRS if kind in ("dir", "opaque") else _LEAVES
            name = draw(st.sampled_from(usual if draw(st.integers(0, 5)) else _DIRS + _LEAVES))
            mtime = draw(st.sampled_from([MTIME, MTIME + 1, MTIME - 100]))
            uid = draw(st.sampled_from([0, 1000]))
            mode = draw(st.sampled_from([0o644, 0o755, 0o600, 0o4755, 0o555]))
            if kind == "file":
                data = draw(st.sampled_from([b"", b"x", b"yy" * 300]))
                layer.append(file(name, data, mode, mtime=mtime, uid=uid, gid=uid))
                files.append(name)
            elif kind == "dir":
                layer.append(directory(name + "/", mode, mtime=mtime, uid=uid))
            elif kind == "symlink":
                layer.append(symlink(name, draw(st.sampled_from(_TARGETS)), mtime=mtime))
            elif kind == "hardlink":
                target = draw(st.sampled_from(files or _LEAVES))
                layer.append(hardlink(name, target))
            elif kind == "whiteout":
                layer.append(whiteout(name))
            elif kind == "opaque":
                layer.append(opaque(name))
            elif kind == "fifo":
                layer.append(fifo(name, mode & 0o777))
            else:
                layer.append(chardev(name, 1, 3))
        stack.append(layer)
    return stack


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_stacks())
def test_random_layer_stacks_merge_as_they_extract(stack: list[list[Member]]) -> None:
    """Whatever the layers hold, the merged stream and the extraction agree, refusals included."""
    with tempfile.TemporaryDirectory(prefix="merge-") as tmp:
        where = Path(tmp)
        layers = stored(where, *stack)
        try:
            want: Tree | Exception = extracted(layers, where / "rootfs")
        except (UnsafeArchiveError, ContainerFactoryException) as e:
            want = e
        event(f"refused: {type(want).__name__}" if isinstance(want, Exception) else "merged")
        for speculate in (True, False):
            try:
                got: Tree | Exception = tar_tree(merged(layers, speculate=speculate), IMPLICIT)
            except (UnsafeArchiveError, ContainerFactoryException) as e:
                got = e
            if isinstance(want, Exception):
                assert isinstance(got, Exception), f"extraction refused ({want}), the merge did not"
                assert type(got) is type(want), (got, want)
                if isinstance(want, UnsafeArchiveError):
                    assert str(got) == str(want)
            else:
                assert got == want


# ------------------------------------------------------------------------------------------
# Refusals


def _outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text("precious\n")
    return d


UNSAFE = {
    "dotdot": lambda out: [file("../evil", b"x")],
    "absolute": lambda out: [file("/abs/evil", b"x")],
    "write-through-absolute-symlink": lambda out: [symlink("etc", str(out)), file("etc/evil", b"x")],
    "write-through-escaping-relative-symlink": lambda out: [
        symlink("up", "../../../../../../../../../../.." + str(out)),
        file("up/evil", b"x"),
    ],
    "symlink-loop": lambda out: [symlink("a", "b"), symlink("b", "a"), file("a/evil", b"x")],
    "hardlink-dotdot": lambda out: [hardlink("h", "../../x")],
    "hardlink-absolute": lambda out: [hardlink("h", str(out / "victim"))],
    "hardlink-through-symlink": lambda out: [symlink("o", str(out)), hardlink("h", "o/victim")],
    "whiteout-through-symlink": lambda out: [symlink("etc", str(out)), whiteout("etc/victim")],
    "opaque-through-symlink": lambda out: [symlink("etc", str(out)), opaque("etc")],
    "root-replaced": lambda out: [file("./", b"")],
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_layers_are_refused_by_the_streamed_build(case: str, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    members = UNSAFE[case](outside)
    base = write_layer(tmp_path / "base.tar.gz", [directory("bin/"), file("bin/x", b"x")])
    bad = write_layer(tmp_path / "bad.tar.gz", members)
    image = store_image(BlobStore(tmp_path / "store"), [base, bad], image_config())
    dest = tmp_path / "x.sif"
    with pytest.raises(UnsafeArchiveError) as err:
        build_sif(image, dest, tmp_dir=tmp_path / "tmp")
    assert f"layer {image.layers()[1].digest()}:" in str(err.value)
    assert not dest.exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert not (tmp_path / "evil").exists()


def test_a_layer_with_too_many_members_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tree is kept in memory: a layer of millions of empty files must not exhaust it."""
    from wfexs_like.images import tarstream

    monkeypatch.setattr(tarstream, "MAX_MEMBERS", 50)
    layers = stored(
        tmp_path, [file(f"f{i}", b"") for i in range(30)], [file(f"g{i}", b"") for i in range(30)]
    )
    with pytest.raises(UnsafeArchiveError, match="more than 50 members"):
        merged(layers)


def test_device_nodes_are_skipped_with_the_extraction_s_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    layers = stored(tmp_path, [directory("dev/"), chardev("dev/null", 1, 3), chardev("dev/zero", 1, 5)])
    with caplog.at_level(logging.WARNING):
        tree, _ = tar_tree(merged(layers), IMPLICIT)
    skipped = [r for r in caplog.records if r.msg == DEVICE_NODE_WARNING]
    assert [r.args[1] for r in skipped] == ["dev/null", "dev/zero"]
    assert sorted(tree) == ["", "dev"]


# ------------------------------------------------------------------------------------------
# Whole SIFs: streamed against extracted


def rich_image(tmp_path: Path) -> tuple[BlobStore, object]:
    """Three layers with everything the merge must get right, plus runtime files to add and replace."""
    files = [
        write_layer(
            tmp_path / "base.tar.gz",
            [
                directory("bin/"),
                file("bin/busybox", busybox_bytes(), 0o755),
                symlink("bin/sh", "busybox"),
                hardlink("bin/cat", "bin/busybox"),
                directory("etc/"),
                symlink("etc/resolv.conf", "../run/resolv.conf"),  # replaced by an empty bind target
                file("etc/hosts", b"127.0.0.1 localhost\n"),  # kept: already a regular file
                directory("usr/share/doc/", uid=1000, gid=1000),
                *[file(f"usr/share/doc/f{i:03d}", os.urandom(3000) * (i % 3), 0o644) for i in range(60)],
                file("big.bin", os.urandom(600_000)),
                directory("tmp/", 0o1777),
                chardev("dev/console", 5, 1),
                fifo("run/pipe"),
            ],
        ),
        write_layer(
            tmp_path / "mid.tar.gz",
            [
                whiteout("bin/busybox"),
                opaque("usr/share/doc"),
                file("usr/share/doc/f001", b"only this one\n"),
                symlink("var", "usr/var"),
                directory("usr/var/lib/"),
                file("var/lib/state", b"through a symlink\n", 0o600, uid=7, gid=8),
            ],
        ),
        write_layer(
            tmp_path / "top.tar",
            [
                file(".singularity.d/runscript", b"#!/bin/sh\necho stale\n", 0o755),  # replaced: a restart
                hardlink("bin/ls", "bin/cat"),
                file("big.bin", os.urandom(300_000)),
            ],
            compression="none",
        ),
    ]
    store = BlobStore(tmp_path / "store")
    return store, store_image(store, files, image_config(entrypoint=["/bin/sh"], cmd=["-c", "true"]))


def _partition_listing(sif: Path) -> list[str]:
    part = read_sif(sif).primary_partition()
    assert part is not None
    out = subprocess.run(
        ["unsquashfs", "-o", str(part.offset), "-lln", str(sif)],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("squashfs-root"):
            if fields[0].startswith("d"):
                fields[2] = (
                    "-"  # a directory's "size" is its on-disk listing: each writer lays it out its own way
                )
            rows.append(" ".join(fields))
    return rows


def _unpacked(sif: Path, where: Path) -> Tree:
    part = read_sif(sif).primary_partition()
    assert part is not None
    subprocess.run(
        ["unsquashfs", "-q", "-no-progress", "-o", str(part.offset), "-d", str(where), str(sif)],
        check=True,
        capture_output=True,
    )
    return disk_tree(where)


def test_streamed_and_extracted_sifs_hold_the_same_tree(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, image = rich_image(tmp_path)
    streamed, fallback = tmp_path / "streamed.sif", tmp_path / "extracted.sif"
    with caplog.at_level(logging.DEBUG, logger="wfexs_like.images.sif_build"):
        build_sif(image, streamed, tmp_dir=tmp_path / "tmp", source="docker://x/rich:1")
    assert any("merging again" in r.getMessage() for r in caplog.records), "the restart was not exercised"
    build_sif(image, fallback, tmp_dir=tmp_path / "tmp", source="docker://x/rich:1", tar2sqfs=None)
    assert _partition_listing(streamed) == _partition_listing(fallback)
    a, b = _unpacked(streamed, tmp_path / "a"), _unpacked(fallback, tmp_path / "b")
    assert a == b
    tree, groups = a
    assert frozenset({"bin/cat", "bin/ls"}) in groups and "bin/busybox" not in tree
    assert tree["etc/resolv.conf"][0] == "file" and tree["etc/resolv.conf"][5] == b""
    assert tree["etc/hosts"][5] == b"127.0.0.1 localhost\n"
    assert tree["usr/var/lib/state"][1:4] == (0o600, *((7, 8) if IS_ROOT else (0, 0)))
    assert b"stale" not in tree[".singularity.d/runscript"][5]
    assert sorted(p for p in tree if p.startswith("usr/share/doc/")) == ["usr/share/doc/f001"]
    # the SIF objects around the partition are the same
    sa, sb = read_sif(streamed), read_sif(fallback)
    assert (sa.uuid, sa.created, sa.arch) == (sb.uuid, sb.created, sb.arch)
    assert [d.size for d in sa.descriptors[:2]] == [d.size for d in sb.descriptors[:2]]


def test_streamed_sif_is_byte_identical_across_runs_and_thread_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, image = rich_image(tmp_path)
    first = tmp_path / "1.sif"
    build_sif(image, first, tmp_dir=tmp_path / "tmp", source="docker://x/rich:1")
    time.sleep(1.1)  # a different second: any "now" leaking in would show
    monkeypatch.setattr(squashfs, "jobs", lambda: 1)
    again = tmp_path / "2.sif"
    build_sif(image, again, tmp_dir=tmp_path / "tmp2", source="docker://x/rich:1")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()


# ------------------------------------------------------------------------------------------
# The fallback, and the packer as a child


def test_without_tar2sqfs_the_build_extracts_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wfexs_like.images import sif_build

    monkeypatch.setattr(sif_build, "_warned_no_tar2sqfs", False)
    _, image = rich_image(tmp_path)
    with caplog.at_level(logging.WARNING):
        build_sif(image, tmp_path / "a.sif", tmp_dir=tmp_path / "tmp", tar2sqfs="no-such-tar2sqfs")
        build_sif(image, tmp_path / "b.sif", tmp_dir=tmp_path / "tmp", tar2sqfs="no-such-tar2sqfs")
    warned = [r.getMessage() for r in caplog.records if "no-such-tar2sqfs not found" in r.getMessage()]
    assert len(warned) == 1 and "apt-get install squashfs-tools-ng" in warned[0]
    assert (tmp_path / "a.sif").read_bytes() == (tmp_path / "b.sif").read_bytes()
    assert _partition_listing(tmp_path / "a.sif") == _partition_listing(
        _built(image, tmp_path / "streamed.sif", tmp_path / "tmp")
    )


def _built(image: object, dest: Path, tmp: Path) -> Path:
    build_sif(image, dest, tmp_dir=tmp)  # type: ignore[arg-type]
    return dest


def _watch(root: Path, seen: set[str], stop: threading.Event) -> None:
    while not stop.is_set():
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                inside = os.path.relpath(os.path.join(dirpath, name), root).split(os.sep, 1)[1:]
                seen.update(inside)  # what is in the build dir (tmp/sif-build-*/...)
        time.sleep(0.002)


@pytest.mark.parametrize("packer", ["tar2sqfs", None])
def test_only_the_squashfs_is_written_to_disk(packer: str | None, tmp_path: Path) -> None:
    """A watcher of the build dir sees the extracted tree on the fallback path, and never on the stream."""
    layer = write_layer(
        tmp_path / "l.tar.gz",
        [directory(f"d{i}/") for i in range(200)]
        + [file(f"d{i}/f", b"x") for i in range(200)]
        # incompressible bytes keep the packer (and its squashfs) around long enough to be seen
        + [file("d0/big", os.urandom(8 << 20))],
    )
    image = store_image(BlobStore(tmp_path / "store"), [layer], image_config())
    seen: set[str] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(tmp_path / "tmp", seen, stop))
    (tmp_path / "tmp").mkdir()
    watcher.start()
    try:
        build_sif(image, tmp_path / "x.sif", tmp_dir=tmp_path / "tmp", tar2sqfs=packer)
    finally:
        stop.set()
        watcher.join()
    if packer:
        assert seen <= {"rootfs.squashfs"} and seen, seen
    else:
        assert "rootfs" in seen and any(p.startswith("rootfs/d") for p in seen), sorted(seen)[:5]


class _StopWhenSquashing(progress.NullReporter):
    """Asks for a stop (as Ctrl-C does) once ``tar2sqfs`` runs, and notes that it did run."""

    def __init__(self) -> None:
        self.packers: list[int] = []

    def step(self, tag: str, text: str) -> None:
        if text.endswith("squashing"):
            self.packers = _children_named("tar2sqfs")
            progress.request_cancel()


def test_a_stop_request_kills_tar2sqfs_and_leaves_nothing(tmp_path: Path) -> None:
    layer = write_layer(
        tmp_path / "l.tar", [file(f"f{i}", os.urandom(1 << 20)) for i in range(8)], compression="none"
    )
    image = store_image(BlobStore(tmp_path / "store"), [layer], image_config())
    stopper = _StopWhenSquashing()
    try:
        with progress.reporting(stopper), pytest.raises(progress.Cancelled):
            build_sif(image, tmp_path / "x.sif", tmp_dir=tmp_path / "tmp")
    finally:
        progress.reset_cancel()
    assert len(stopper.packers) == 1, "tar2sqfs was not running when the stop came"
    assert not _alive(stopper.packers[0])
    assert _children_named("tar2sqfs") == []
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not (tmp_path / "x.sif").exists()


def _children_named(name: str) -> list[int]:
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # a thread that ended since the listing
            continue
        for pid in children:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                    found.append(int(pid))
            except OSError:
                continue
    return found


def test_a_failing_tar2sqfs_is_reported_with_command_exit_code_and_stderr(tmp_path: Path) -> None:
    def feed(out: io.BufferedWriter) -> None:
        for _ in range(200):
            out.write(b"\0" * (1 << 16))

    with pytest.raises(ContainerEngineException) as err:
        squashfs.squash_tar_stream(feed, tmp_path / "no-such-dir" / "x.sqfs", mkfs_time=0)
    exc = err.value
    assert exc.returncode not in (None, 0)
    assert exc.command is not None and exc.command[0] == "tar2sqfs"
    assert "no-such-dir" in exc.stderr_tail
    assert _children_named("tar2sqfs") == []


def test_the_packer_dies_with_its_parent(tmp_path: Path) -> None:
    """A SIGKILLed parent takes its packer along (the whole scenario: tests/reliability/test_sif_kill.py).

    A grandchild keeps the packer's stdin open, so that the end of its input cannot be what stops
    it: only the parent-death signal can.
    """
    script = (
        "import subprocess, sys, time\n"
        "from pathlib import Path\n"
        "from wfexs_like.images.squashfs import squash_tar_stream\n"
        "def feed(out):\n"
        "    keeper = subprocess.Popen(['sleep', '60'], pass_fds=[out.fileno()])\n"
        "    print(keeper.pid, flush=True)\n"
        "    time.sleep(60)\n"
        "squash_tar_stream(feed, Path(sys.argv[1]), mkfs_time=0)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "x.sqfs")],
        stdout=subprocess.PIPE,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert proc.stdout is not None
    keeper = int(proc.stdout.readline())
    try:
        packer = [
            int(pid)
            for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if Path(f"/proc/{pid}/comm").read_text().strip() == "tar2sqfs"
        ]
        assert len(packer) == 1
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 2
        while _alive(packer[0]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(packer[0]), "tar2sqfs outlived its parent"
    finally:
        proc.kill()
        proc.wait()
        os.kill(keeper, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class _Steps(progress.NullReporter):
    def __init__(self) -> None:
        self.steps: list[tuple[str, str]] = []

    def step(self, tag: str, text: str) -> None:
        self.steps.append((tag, text))


@pytest.mark.parametrize(
    ("packer", "stages"),
    [
        ("tar2sqfs", ["reading layers", "squashing", "writing SIF"]),
        (None, ["extracting layers", "adding runtime files", "squashing", "writing SIF"]),
    ],
)
def test_the_stages_are_reported_under_the_label(
    packer: str | None, stages: list[str], tmp_path: Path
) -> None:
    layers = [write_layer(tmp_path / "l.tar.gz", [directory("bin/"), file("bin/sh", b"#!x", 0o755)])]
    image = store_image(BlobStore(tmp_path / "store"), layers, image_config())
    steps = _Steps()
    with progress.reporting(steps):
        build_sif(image, tmp_path / "a.sif", tmp_dir=tmp_path / "tmp", label="y:1", tar2sqfs=packer)
    assert steps.steps == [("y:1", f"building SIF: {s}") for s in stages]

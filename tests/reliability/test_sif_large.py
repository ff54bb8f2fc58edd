"""A SIF larger than 4 GiB, read back with ``siftool`` and ``unsquashfs``, bytes past 4 GiB included.

Why: a peer's converter wrote images whose contents past the 32-bit offset
boundary came back wrong. Everything between a layer and a runtime carries
offsets here: our tar stream (file sizes), the squashfs writer (block and
inode-table positions), our SIF writer and reader (descriptor offsets and
sizes, the kernel-side copy of the partition). So the image holds
incompressible data (AES-CTR output: every 128 KiB block distinct, so no
block is deduplicated or shrunk) large enough that the partition crosses
4 GiB, then a small file whose bytes land in a fragment block written after
all of it, then many small files: their inodes and directory entries are
in tables past 4 GiB too.

Time: squashing 4 GiB with gzip costs about 100 CPU-seconds on this kind of
machine, more than CI's budget for this test. So the reduced run (CI)
builds the SIF from the same pieces ``build_sif`` uses (the merged tar
stream, ``tar2sqfs``, the SIF writer) with zstd at level 1, which makes
the same offsets in a few seconds (not lz4: ``unsquashfs`` 4.5 cannot read
the tiny lz4 metadata blocks ``tar2sqfs`` 1.2 writes); ``--reliability-full`` runs ``build_sif`` itself,
gzip and all, on 3 files of 1.5 GiB.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.manifest import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from wfexs_like.images.sif import SifDataType, SifFsType, SifObject, SifPartType, read_sif, write_sif
from wfexs_like.images.sif_build import build_sif, definition_file, image_created, sif_uuid
from wfexs_like.images.squashfs import squash_tar_stream
from wfexs_like.images.store import StoreImage
from wfexs_like.images.tarstream import Writable, write_merged_tar

GiB = 1 << 30
MiB = 1 << 20
FOUR_GIB = 4 * GiB
MTIME = 1_700_000_000
TAIL = b"the last file: its bytes lie past the 4 GiB mark\n"


@pytest.fixture(autouse=True)
def _tools_installed() -> None:
    missing = [t for t in ("tar2sqfs", "siftool", "unsquashfs", "openssl") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}; run scripts/setup-host.sh")


def noise(index: int, size: int) -> Iterator[bytes]:
    """``size`` bytes of AES-CTR keystream keyed by ``index``: incompressible, reproducible, fast."""
    cmd = ["openssl", "enc", "-aes-128-ctr", "-nosalt", "-K", f"{index + 1:032x}", "-iv", "0" * 32]
    proc = subprocess.Popen([*cmd, "-in", "/dev/zero"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    left = size
    try:
        while left:
            chunk = proc.stdout.read(min(left, 4 * MiB))
            assert chunk, "openssl stopped early"
            yield chunk
            left -= len(chunk)
    finally:
        proc.kill()
        proc.wait()


def _header(name: str, size: int) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = size, 0o644, MTIME
    return ti.tobuf(tarfile.PAX_FORMAT)


def big_image(store: BlobStore, sizes: list[int]) -> StoreImage:
    """One uncompressed layer: ``big<i>.bin`` of each size, ``tail.txt``, then 200 small files."""
    with store.writer() as w:
        for i, size in enumerate(sizes):
            w.write(_header(f"data/big{i}.bin", size))
            for chunk in noise(i, size):
                w.write(chunk)
            w.write(b"\0" * (-size % 512))
        for name, body in [("data/tail.txt", TAIL)] + [
            (f"etc/small/{i:03d}", b"%d\n" % i) for i in range(200)
        ]:
            w.write(_header(name, len(body)) + body + b"\0" * (-len(body) % 512))
        w.write(b"\0" * 1024)
        layer = w.commit()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    }
    raw = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": store.put_bytes(raw), "size": len(raw)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": store.size(layer)}],
    }
    return StoreImage(store, store.put_bytes(json.dumps(manifest, sort_keys=True).encode()))


def sif_from_pieces(image: StoreImage, dest: Path, work: Path) -> None:
    """``build_sif``'s path less the runtime files, with zstd -1: the same offsets, a fraction of the time."""
    created = image_created(image.config())
    squashfs = work / "part.squashfs"

    def feed(out: Writable) -> None:
        write_merged_tar(image.layers(), out, implicit_mtime=created)

    squash_tar_stream(feed, squashfs, mkfs_time=created, compressor="zstd", comp_extra="level=1")
    part = SifObject(
        SifDataType.Partition, squashfs, fs_type=SifFsType.Squash, part_type=SifPartType.PrimSys, arch="amd64"
    )
    deffile = SifObject(SifDataType.Deffile, definition_file("docker://x/large:1"))
    write_sif(dest, [deffile, part], uuid=sif_uuid(image.digest()), created=created)
    squashfs.unlink()


def unsquashfs(sif: Path, offset: int, option: str, *files: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        ["unsquashfs", "-o", str(offset), option, str(sif), *files], capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def cat_matches(sif: Path, offset: int, name: str, expected: Iterator[bytes]) -> None:
    """Stream one file out of the image and compare it with what was put in, chunk by chunk."""
    proc = subprocess.Popen(
        ["unsquashfs", "-o", str(offset), "-cat", str(sif), name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen = 0
    try:
        for want in expected:
            got = proc.stdout.read(len(want))
            assert got == want, f"{name}: bytes differ in the {MiB}-byte window at {seen}"
            seen += len(want)
        assert proc.stdout.read(1) == b"", f"{name} is longer than written"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def space(tmp_path: Path) -> Callable[[int], None]:
    def need(total: int) -> None:
        free = shutil.disk_usage(tmp_path).free
        if free < 3 * total + GiB:
            pytest.fail(
                f"needs {3 * total + GiB} bytes free under {tmp_path} (layer, squashfs, SIF); {free} free"
            )

    return need


def test_a_sif_past_4_gib_reads_back_with_siftool_and_unsquashfs(
    tmp_path: Path, full_run: bool, space: Callable[[int], None]
) -> None:
    sizes = [3 * GiB // 2] * 3 if full_run else [2 * GiB, 2 * GiB + 64 * MiB]
    space(sum(sizes))
    store = BlobStore(tmp_path / "store")
    started = time.monotonic()
    image = big_image(store, sizes)
    made = time.monotonic()
    sif = tmp_path / "large.sif"
    if full_run:
        build_sif(image, sif, tmp_dir=store.tmp_dir, source="docker://x/large:1")
    else:
        sif_from_pieces(image, sif, store.tmp_dir)
    built = time.monotonic()
    store.remove(image.layers()[0].digest())  # the disk it takes is no longer needed

    size = sif.stat().st_size
    assert size > FOUR_GIB
    info = read_sif(sif)
    part = info.primary_partition()
    assert part is not None and part.offset % 4096 == 0
    assert part.offset + part.size == size and part.size > FOUR_GIB - part.offset
    with open(sif, "rb") as f:  # the squashfs superblock's bytes_used: the partition copied whole
        f.seek(part.offset)
        superblock = f.read(96)
    assert superblock[:4] == b"hsqs"
    assert (
        int.from_bytes(superblock[40:48], "little")
        <= part.size
        < int.from_bytes(superblock[40:48], "little") + 4096
    )

    listing = subprocess.run(["siftool", "list", str(sif)], capture_output=True, text=True, check=True).stdout
    rows = [[c.strip() for c in line.split("|")] for line in listing.splitlines()]
    assert [
        str(part.id),
        "1",
        "NONE",
        f"{part.offset}-{part.offset + part.size}",
        "FS (Squashfs/*System/amd64)",
    ] in [r[:5] for r in rows], listing
    obj = subprocess.run(
        ["siftool", "info", str(part.id), str(sif)], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(rf"Size:\s+{part.size}\n", obj), obj

    names = unsquashfs(sif, part.offset, "-l").stdout.decode().split()
    expected = {f"squashfs-root/data/big{i}.bin" for i in range(len(sizes))}
    expected |= {"squashfs-root/data/tail.txt"} | {f"squashfs-root/etc/small/{i:03d}" for i in range(200)}
    assert expected <= set(names)
    assert unsquashfs(sif, part.offset, "-cat", "data/tail.txt").stdout == TAIL
    assert unsquashfs(sif, part.offset, "-cat", "etc/small/199").stdout == b"199\n"
    last = len(sizes) - 1  # the file that crosses the 4 GiB mark, read whole
    cat_matches(sif, part.offset, f"data/big{last}.bin", noise(last, sizes[last]))
    checked = time.monotonic()
    print(
        f"\nSIF {size / GiB:.2f} GiB ({'build_sif, gzip' if full_run else 'pieces, zstd -1'}): "
        f"image {made - started:.0f} s, SIF {built - made:.0f} s, checks {checked - built:.0f} s"
    )

"""SIF build against its floor: ``mksquashfs`` of the already-merged root file system.

The floor is what no SIF builder can beat by much: the layers already
merged on disk (whiteouts applied), packed with the options the builder
packs with (gzip, reproducible, no xattrs). Our build is timed from a cache
that already holds the image's layers (``--offline``, so no download is
counted: the floor has none either); the cold build from the registry is
the core scenario's row. Each run builds into a fresh copy of that cache
(hard-linked, untimed), since a cache that holds the SIF would simply re-stage it.
The two alternate which goes first.

The squashfs compressor is a child of wfexs-like, so the row's peak RSS is
the process's own (``selfrss.py``), with the whole tree's in the notes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from wfexs_like.provenance import read_containers_file

from .context import Context, Scenario, Tool
from .proc import measure, run, settle

#: The packing options of the SIF builder (gzip, as every squashfs reader Apptainer uses has it).
FLOOR_OPTIONS = (
    "-noappend",
    "-comp",
    "gzip",
    "-reproducible",
    "-no-xattrs",
    "-mkfs-time",
    "0",
    "-no-progress",
    "-quiet",
)


def _layers(record: Path, stage: Path) -> list[str]:
    (container,) = read_containers_file(record, containers_dir=stage)
    assert container.metadataLocalPath is not None
    return list(json.loads(Path(container.metadataLocalPath).read_text())["layers"])


def merged_rootfs(cache: Path, layers: list[str], dest: Path) -> None:
    """The layers extracted in order (GNU tar, as root: owners kept), refusing images with whiteouts:
    the benchmark images have none, and tar would not apply them."""
    dest.mkdir(parents=True)
    for digest in layers:
        blob = cache / "blobs" / "sha256" / digest.split(":", 1)[1]
        names = run(["tar", "-tf", str(blob)]).decode(errors="replace").splitlines()
        if any(Path(n).name.startswith(".wh.") for n in names):
            raise RuntimeError(f"layer {digest} has whiteouts; the SIF floor needs an image without them")
        run(["tar", "-xf", str(blob), "-C", str(dest), "--numeric-owner"])


def run_all(ctx: Context) -> None:
    d = ctx.scratch / "sif"
    shutil.rmtree(d, ignore_errors=True)
    template, stage, record = d / "template-cache", d / "template-stage", d / "template.yaml"
    run(
        [
            str(ctx.wfexs_like),
            "-q",
            "materialize",
            ctx.base,
            "--engine",
            "docker",
            "--cache-dir",
            str(template),
            "--stage-dir",
            str(stage),
            "-o",
            str(record),
        ]
    )
    rootfs = d / "rootfs"
    merged_rootfs(template, _layers(record, stage), rootfs)
    try:
        for n in range(ctx.plan.sif_runs):
            steps = (_ours, _floor) if n % 2 == 0 else (_floor, _ours)
            for step in steps:
                settle()  # the other tool's 90 MB (written, then removed) must not weigh on this one
                step(ctx, n, d, template, rootfs)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _ours(ctx: Context, n: int, d: Path, template: Path, rootfs: Path) -> None:
    cache, stage, record = d / f"cache-{n}", d / f"stage-{n}", d / f"sif-{n}.yaml"
    # Hard links, as a cache's own files are: a byte copy is a new inode, which the cache rightly
    # re-hashes once before trusting it (not what a warm cache does, and not what this row measures).
    # The trust records are the one thing copied: shared, one run's re-record (after its links) and
    # the next copy's links would net out to the same link count with a moved ctime, which is what
    # a write looks like, and the layer would be re-hashed before every build but the first.
    run(["cp", "-al", str(template), str(cache)])
    shutil.rmtree(cache / "trust")
    run(["cp", "-a", str(template / "trust"), str(cache / "trust")])
    m = ctx.wl(
        "materialize",
        f"docker://{ctx.base}",
        "--engine",
        "singularity",
        "--offline",
        "--cache-dir",
        str(cache),
        "--stage-dir",
        str(stage),
        "-o",
        str(record),
    )
    (container,) = read_containers_file(record, containers_dir=stage)
    assert container.localPath is not None
    size = Path(container.localPath).stat().st_size
    ctx.add_measured(Scenario.SIF, Tool.WL_SIF_BUILD, n, m, artifact=size)
    shutil.rmtree(cache)
    shutil.rmtree(stage)


def _floor(ctx: Context, n: int, d: Path, template: Path, rootfs: Path) -> None:
    out = d / f"floor-{n}.sqfs"
    m = measure(["mksquashfs", str(rootfs), str(out), *FLOOR_OPTIONS])
    ctx.add_measured(Scenario.SIF, Tool.MKSQUASHFS_FLOOR, n, m, artifact=out.stat().st_size)
    out.unlink()

"""The core scenarios: one run of each tool, on the same two images, from a stated state.

One run goes tool by tool rather than scenario by scenario because each
tool's later scenarios start from the state its earlier ones left (the
reference's archive is what it re-stages and loads; wfexs-like's warm cache
is what it re-stages from). Every scenario that claims to be cold makes it
so first: Docker is swept of the benchmark's images and every cache or
output directory is new.

What each scenario measures and why is in README.md.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wfexs_like.provenance import read_containers_file

from . import engines, traffic
from .context import Context, Scenario, Tool
from .proc import Measured, du_bytes, measure, sha256sum, timed_pipe


def run_once(ctx: Context, run: int) -> None:
    """Every core scenario once, each tool in turn, in a scratch dir removed afterwards."""
    root = ctx.scratch / f"run-{run}"
    shutil.rmtree(root, ignore_errors=True)
    try:
        for step, name in ((reference, "reference"), (skopeo, "skopeo"), (wfexs_like, "wfexs-like")):
            (root / name).mkdir(parents=True)
            engines.sweep("docker")
            step(ctx, run, root / name)
        deploys(ctx, run, root)
        if not ctx.plan.quick:  # the SIF section times the build against its floor; this adds the download
            (root / "sif").mkdir()
            singularity(ctx, run, root / "sif")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        engines.sweep("docker")
        if ctx.podman:
            engines.sweep("podman")


def _sum(parts: dict[str, Measured]) -> tuple[float, dict[str, float], int]:
    """(total seconds, seconds per step, the largest step's peak RSS) of a multi-command path."""
    steps = {name: m.seconds for name, m in parts.items()}
    return sum(steps.values()), steps, max(m.rss_kb for m in parts.values())


# -- the reference: what WfExS-backend does ------------------------------------------
def _reference_fetch(
    ctx: Context, ref: str, archive: Path
) -> tuple[dict[str, Measured], traffic.Traffic, str]:
    """``docker pull``, ``docker save | gzip -1 > archive``, ``sha256sum archive``: each step measured."""
    pos = traffic.mark(ctx.registry)
    pull = measure(["docker", "pull", "-q", ref])
    save = timed_pipe(["docker", "save", ref], ["gzip", "-1"], archive)
    digest, fingerprint = sha256sum(archive)
    steps = {"pull": pull, "save|gzip": save, "sha256sum": digest}
    return steps, traffic.since(ctx.registry, pos), fingerprint


def reference(ctx: Context, run: int, d: Path) -> None:
    """The reference on both images, then its re-stage (its deploys are timed in ``deploys``)."""
    base_archive, tool_archive = d / "base.tar.gz", d / "tool.tar.gz"
    parts, got, fingerprint = _reference_fetch(ctx, ctx.base, base_archive)
    total, steps, rss = _sum(parts)
    size = base_archive.stat().st_size
    ctx.add(
        Scenario.COLD,
        Tool.REF_FETCH,
        run,
        total,
        steps=steps,
        rss_kb=rss,
        artifact=size,
        downloaded=got.blob_bytes,
        fingerprint=fingerprint,
    )

    # The base is in Docker now, so docker pull fetches only the new layer; docker save does not know.
    parts, got, _ = _reference_fetch(ctx, ctx.tool, tool_archive)
    total, steps, rss = _sum(parts)
    ctx.add(
        Scenario.SECOND,
        Tool.REF_FETCH,
        run,
        total,
        steps=steps,
        rss_kb=rss,
        downloaded=got.blob_bytes,
        stored=size + tool_archive.stat().st_size,
    )

    copy = d / "restage" / base_archive.name
    copy.parent.mkdir()
    cp = measure(["cp", str(base_archive), str(copy)])
    digest, _ = sha256sum(copy)
    total, steps, rss = _sum({"cp": cp, "sha256sum": digest})
    ctx.add(Scenario.RESTAGE, Tool.REF_RESTAGE, run, total, steps=steps, rss_kb=rss)


# -- skopeo: the obvious peer for "registry → files" ---------------------------------
def skopeo_copy(ctx: Context, src: str, dest: str) -> tuple[Measured, traffic.Traffic]:
    """One ``skopeo copy`` from the registry (plain HTTP on loopback), and its registry traffic."""
    pos = traffic.mark(ctx.registry)
    m = measure(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{src}", dest])
    return m, traffic.since(ctx.registry, pos)


def skopeo(ctx: Context, run: int, d: Path) -> None:
    """skopeo into one OCI layout (both images, so blobs are shared) and into a docker-archive."""
    layout = d / "oci"
    m, got = skopeo_copy(ctx, ctx.base, f"oci:{layout}:base")
    ctx.add_measured(
        Scenario.COLD, Tool.SKOPEO_OCI, run, m, artifact=du_bytes(layout), downloaded=got.blob_bytes
    )

    m, got = skopeo_copy(ctx, ctx.tool, f"oci:{layout}:tool")  # same layout: blobs shared
    ctx.add_measured(
        Scenario.SECOND, Tool.SKOPEO_OCI, run, m, downloaded=got.blob_bytes, stored=du_bytes(layout)
    )

    archive = d / "base.tar"
    m, got = skopeo_copy(ctx, ctx.base, f"docker-archive:{archive}:{ctx.base}")
    ctx.add_measured(
        Scenario.COLD, Tool.SKOPEO_ARCHIVE, run, m, artifact=archive.stat().st_size, downloaded=got.blob_bytes
    )


# -- wfexs-like -------------------------------------------------------------------------
def materialize(
    ctx: Context,
    tag: str,
    stage: Path,
    cache: Path,
    record: Path,
    *options: str,
    env: dict[str, str] | None = None,
) -> tuple[Measured, traffic.Traffic, dict[str, Any]]:
    """One measured ``wfexs-like materialize``; its registry traffic and the snapshot's metadata."""
    pos = traffic.mark(ctx.registry)
    args = ["materialize", tag, "--stage-dir", str(stage), "--cache-dir", str(cache), *options]
    m = ctx.wl(*args, "-o", str(record), env=env)
    got = traffic.since(ctx.registry, pos)
    (container,) = read_containers_file(record, containers_dir=stage)
    assert container.metadataLocalPath is not None and container.localPath is not None
    meta = json.loads(Path(container.metadataLocalPath).read_text())
    meta["local_path"] = str(container.localPath)
    return m, got, meta


def _deploy(ctx: Context, record: Path, stage: Path, cache: Path, engine: str, expect: str) -> Measured:
    """One measured ``wfexs-like deploy``, checked to report ``expect`` (loaded / present)."""
    m = ctx.wl(
        "deploy",
        str(record),
        "--engine",
        engine,
        "--stage-dir",
        str(stage),
        "--cache-dir",
        str(cache),
        "--json",
    )
    states = [row["state"] for row in json.loads(m.out)]
    if states != [expect]:
        raise RuntimeError(f"wfexs-like deploy into {engine} reported {states}, expected [{expect!r}]")
    return m


def wfexs_like(ctx: Context, run: int, d: Path) -> None:
    """wfexs-like from an empty cache: both images, then warm re-stages (deploys: see ``deploys``)."""
    cache, stage, record = d / "cache", d / "stage", d / "base.yaml"
    docker = ("--engine", "docker")
    m, got, meta = materialize(ctx, ctx.base, stage, cache, record, *docker)
    ctx.add_measured(
        Scenario.COLD,
        Tool.WL,
        run,
        m,
        artifact=du_bytes(Path(meta["local_path"])),
        downloaded=got.blob_bytes,
        fingerprint=meta["image_signature"],
    )

    m, got, meta = materialize(ctx, ctx.tool, stage, cache, d / "tool.yaml", *docker)
    ctx.add_measured(
        Scenario.SECOND,
        Tool.WL,
        run,
        m,
        downloaded=got.blob_bytes,
        meta_downloaded=meta["extra"]["downloaded_bytes"],
        stored=du_bytes(cache),
        staged_extra=du_bytes(cache, stage) - du_bytes(cache),
    )

    for tool, name, options in (
        (Tool.WL, "restage-online", docker),
        (Tool.WL_OFFLINE, "restage-offline", (*docker, "--offline")),
    ):
        m, got, _ = materialize(ctx, ctx.base, d / name, cache, d / f"{name}.yaml", *options)
        ctx.add_measured(Scenario.RESTAGE, tool, run, m, blob_gets=got.blob_gets, requests=got.requests)


def deploys(ctx: Context, run: int, root: Path) -> None:
    """Both tools' deploys, taking turns, each after ``os.sync()`` with the engine emptied.

    A load's time depends on the disk's state (writeback still pending from
    the fetches before it), so timing each tool's deploys right after its
    own fetches favoured whichever went first. Here they run back to back,
    and which tool goes first alternates from run to run.
    """
    archive = root / "reference" / "base.tar.gz"
    wl = root / "wfexs-like"
    record, stage, cache = wl / "base.yaml", wl / "stage", wl / "cache"

    def ref_docker() -> None:
        m = measure(["docker", "load", "-q", "-i", str(archive)])
        ctx.add_measured(Scenario.DEPLOY, Tool.REF_LOAD, run, m)

    def ref_podman() -> None:
        # Podman 4.3 cannot read a gzipped docker-archive: decompress on the way in.
        m = timed_pipe(["gzip", "-dc", str(archive)], ["podman", "load", "-q"], root / "podman-load.out")
        ctx.add_measured(Scenario.DEPLOY_PODMAN, Tool.REF_PODMAN_LOAD, run, m)

    def wl_deploy(engine: str, scenario: str) -> None:
        m = _deploy(ctx, record, stage, cache, engine, "loaded")
        ctx.add_measured(scenario, Tool.WL_DEPLOY, run, m)
        # again, now that the engine has the image: should be a no-op
        m = _deploy(ctx, record, stage, cache, engine, "present")
        ctx.add_measured(scenario, Tool.WL_DEPLOY_PRESENT, run, m)

    pairs: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
        ("docker", ref_docker, lambda: wl_deploy("docker", Scenario.DEPLOY))
    ]
    if ctx.podman:
        pairs.append(("podman", ref_podman, lambda: wl_deploy("podman", Scenario.DEPLOY_PODMAN)))
    for engine, ref_fn, wl_fn in pairs:
        for fn in (ref_fn, wl_fn) if run % 2 == 0 else (wl_fn, ref_fn):
            engines.sweep(engine)  # the tool image too: it would keep the base's layers
            os.sync()
            fn()


def singularity(ctx: Context, run: int, d: Path) -> None:
    """A SIF built from the registry with an empty cache (its own cache: the docker one would be warm)."""
    tag, record = f"docker://{ctx.base}", d / "sif.yaml"
    m, got, meta = materialize(ctx, tag, d / "stage", d / "cache", record, "--engine", "singularity")
    sif = Path(meta["local_path"])
    ctx.add_measured(
        Scenario.SIF, Tool.WL_SIF_COLD, run, m, artifact=sif.stat().st_size, downloaded=got.blob_bytes
    )

"""The measured scenarios: one run of each tool, on the same images, from a stated state.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.registry import RunningRegistry
from wfexs_like.provenance import read_containers_file

from . import engines, traffic
from .images import ImageSet
from .proc import du_bytes, sha256sum, timed, timed_output, timed_pipe


class Scenario:
    COLD = "Cold fetch → staged, fingerprinted copy"
    SECOND = "Second image sharing the base"
    RESTAGE = "Re-stage into a new dir, warm"
    DEPLOY = "Deploy into Docker"
    DEPLOY_PODMAN = "Deploy into Podman"
    SIF = "Singularity SIF build, cold"


class Tool:
    REF_FETCH = "reference: docker pull + save | gzip -1 + sha256sum"
    REF_RESTAGE = "reference: cp .tar.gz + sha256sum"
    REF_LOAD = "reference: docker load -i .tar.gz"
    REF_PODMAN_LOAD = "reference: gzip -dc .tar.gz | podman load"
    SKOPEO_OCI = "skopeo copy → oci:DIR"
    SKOPEO_ARCHIVE = "skopeo copy → docker-archive:FILE"
    WL = "wfexs-like materialize"
    WL_OFFLINE = "wfexs-like materialize --offline"
    WL_DEPLOY = "wfexs-like deploy (image absent)"
    WL_DEPLOY_PRESENT = "wfexs-like deploy (already present)"
    WL_SIF = "wfexs-like materialize --engine singularity"


@dataclass
class Sample:
    """One timed execution; ``extra`` holds bytes, request counts, fingerprints, step timings."""

    scenario: str
    tool: str
    run: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    registry: RunningRegistry
    images: ImageSet
    wfexs_like: Path
    scratch: Path
    podman: bool
    samples: list[Sample] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.images.base_ref(self.registry.host)

    @property
    def tool(self) -> str:
        return self.images.tool_ref(self.registry.host)

    def add(self, scenario: str, tool: str, run: int, seconds: float, **extra: Any) -> None:
        self.samples.append(Sample(scenario, tool, run, seconds, extra))


def run_once(ctx: Context, run: int) -> None:
    """Every scenario once, each tool in turn, in a scratch dir removed afterwards."""
    root = ctx.scratch / f"run-{run}"
    shutil.rmtree(root, ignore_errors=True)
    try:
        for step, name in ((reference, "reference"), (skopeo, "skopeo"), (wfexs_like, "wfexs-like")):
            (root / name).mkdir(parents=True)
            engines.sweep("docker")
            step(ctx, run, root / name)
        deploys(ctx, run, root)
        (root / "sif").mkdir()
        singularity(ctx, run, root / "sif")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        engines.sweep("docker")
        if ctx.podman:
            engines.sweep("podman")


# -- the reference: what WfExS-backend does ------------------------------------------
def _reference_fetch(ctx: Context, ref: str, archive: Path) -> tuple[dict[str, float], traffic.Traffic, str]:
    """``docker pull``, ``docker save | gzip -1 > archive``, ``sha256sum archive``: step times."""
    pos = traffic.mark(ctx.registry)
    pull = timed(["docker", "pull", "-q", ref])
    save = timed_pipe(["docker", "save", ref], ["gzip", "-1"], archive)
    digest_s, fingerprint = sha256sum(archive)
    steps = {"pull": pull, "save|gzip": save, "sha256sum": digest_s}
    return steps, traffic.since(ctx.registry, pos), fingerprint


def reference(ctx: Context, run: int, d: Path) -> None:
    """The reference on both images, then its re-stage (its deploys are timed in ``deploys``)."""
    base_archive, tool_archive = d / "base.tar.gz", d / "tool.tar.gz"
    steps, got, fingerprint = _reference_fetch(ctx, ctx.base, base_archive)
    size = base_archive.stat().st_size
    ctx.add(
        Scenario.COLD, Tool.REF_FETCH, run, sum(steps.values()),
        steps=steps, artifact=size, downloaded=got.blob_bytes, fingerprint=fingerprint,
    )  # fmt: skip

    # The base is in Docker now, so docker pull fetches only the new layer; docker save does not know.
    steps, got, _ = _reference_fetch(ctx, ctx.tool, tool_archive)
    ctx.add(
        Scenario.SECOND, Tool.REF_FETCH, run, sum(steps.values()),
        steps=steps, downloaded=got.blob_bytes, stored=size + tool_archive.stat().st_size,
    )  # fmt: skip

    copy = d / "restage" / base_archive.name
    copy.parent.mkdir()
    cp = timed(["cp", str(base_archive), str(copy)])
    digest_s, _ = sha256sum(copy)
    ctx.add(Scenario.RESTAGE, Tool.REF_RESTAGE, run, cp + digest_s, steps={"cp": cp, "sha256sum": digest_s})


# -- skopeo: the obvious peer for "registry → files" ---------------------------------
def _skopeo_copy(ctx: Context, src: str, dest: str) -> tuple[float, traffic.Traffic]:
    """Time one ``skopeo copy`` from the registry (plain HTTP on loopback) and its registry traffic."""
    pos = traffic.mark(ctx.registry)
    seconds = timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{src}", dest])
    return seconds, traffic.since(ctx.registry, pos)


def skopeo(ctx: Context, run: int, d: Path) -> None:
    """skopeo into one OCI layout (both images, so blobs are shared) and into a docker-archive."""
    layout = d / "oci"
    seconds, got = _skopeo_copy(ctx, ctx.base, f"oci:{layout}:base")
    ctx.add(
        Scenario.COLD, Tool.SKOPEO_OCI, run, seconds, artifact=du_bytes(layout), downloaded=got.blob_bytes
    )

    seconds, got = _skopeo_copy(ctx, ctx.tool, f"oci:{layout}:tool")  # same layout: blobs shared
    ctx.add(
        Scenario.SECOND, Tool.SKOPEO_OCI, run, seconds, downloaded=got.blob_bytes, stored=du_bytes(layout)
    )

    archive = d / "base.tar"
    seconds, got = _skopeo_copy(ctx, ctx.base, f"docker-archive:{archive}:{ctx.base}")
    ctx.add(
        Scenario.COLD, Tool.SKOPEO_ARCHIVE, run, seconds,
        artifact=archive.stat().st_size, downloaded=got.blob_bytes,
    )  # fmt: skip


# -- wfexs-like -------------------------------------------------------------------------
def _materialize(
    ctx: Context, tag: str, stage: Path, cache: Path, record: Path, *options: str
) -> tuple[float, traffic.Traffic, dict[str, Any]]:
    """Time one ``wfexs-like materialize``; return its registry traffic and the snapshot's metadata."""
    cmd = [str(ctx.wfexs_like), "materialize", tag, "--stage-dir", str(stage), "--cache-dir", str(cache)]
    pos = traffic.mark(ctx.registry)
    seconds = timed([*cmd, *options, "-o", str(record)])
    got = traffic.since(ctx.registry, pos)
    (container,) = read_containers_file(record, containers_dir=stage)
    assert container.metadataLocalPath is not None and container.localPath is not None
    meta = json.loads(Path(container.metadataLocalPath).read_text())
    meta["local_path"] = str(container.localPath)
    return seconds, got, meta


def _deploy(ctx: Context, record: Path, stage: Path, cache: Path, engine: str, expect: str) -> float:
    """Time one ``wfexs-like deploy`` and check it reports ``expect`` (loaded / present)."""
    cmd = [str(ctx.wfexs_like), "deploy", str(record), "--engine", engine, "--stage-dir", str(stage)]
    seconds, out = timed_output([*cmd, "--cache-dir", str(cache), "--json"])
    states = [row["state"] for row in json.loads(out)]
    if states != [expect]:
        raise RuntimeError(f"wfexs-like deploy into {engine} reported {states}, expected [{expect!r}]")
    return seconds


def wfexs_like(ctx: Context, run: int, d: Path) -> None:
    """wfexs-like from an empty cache: both images, then warm re-stages (deploys: see ``deploys``)."""
    cache, stage, record = d / "cache", d / "stage", d / "base.yaml"
    docker = ("--engine", "docker")
    seconds, got, meta = _materialize(ctx, ctx.base, stage, cache, record, *docker)
    ctx.add(
        Scenario.COLD, Tool.WL, run, seconds,
        artifact=du_bytes(Path(meta["local_path"])), downloaded=got.blob_bytes,
        fingerprint=meta["image_signature"],
    )  # fmt: skip

    seconds, got, meta = _materialize(ctx, ctx.tool, stage, cache, d / "tool.yaml", *docker)
    ctx.add(
        Scenario.SECOND, Tool.WL, run, seconds,
        downloaded=got.blob_bytes, meta_downloaded=meta["extra"]["downloaded_bytes"], stored=du_bytes(cache),
        staged_extra=du_bytes(cache, stage) - du_bytes(cache),
    )  # fmt: skip

    for tool, name, options in (
        (Tool.WL, "restage-online", docker),
        (Tool.WL_OFFLINE, "restage-offline", (*docker, "--offline")),
    ):
        seconds, got, _ = _materialize(ctx, ctx.base, d / name, cache, d / f"{name}.yaml", *options)
        ctx.add(Scenario.RESTAGE, tool, run, seconds, blob_gets=got.blob_gets, requests=got.requests)


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
        ctx.add(Scenario.DEPLOY, Tool.REF_LOAD, run, timed(["docker", "load", "-q", "-i", str(archive)]))

    def ref_podman() -> None:
        # Podman 4.3 cannot read a gzipped docker-archive: decompress on the way in.
        load = timed_pipe(["gzip", "-dc", str(archive)], ["podman", "load", "-q"], root / "podman-load.out")
        ctx.add(Scenario.DEPLOY_PODMAN, Tool.REF_PODMAN_LOAD, run, load)

    def wl_deploy(engine: str, scenario: str) -> None:
        ctx.add(scenario, Tool.WL_DEPLOY, run, _deploy(ctx, record, stage, cache, engine, "loaded"))
        # again, now that the engine has the image: should be a no-op
        ctx.add(scenario, Tool.WL_DEPLOY_PRESENT, run, _deploy(ctx, record, stage, cache, engine, "present"))

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
    seconds, got, meta = _materialize(ctx, tag, d / "stage", d / "cache", record, "--engine", "singularity")
    sif = Path(meta["local_path"])
    ctx.add(Scenario.SIF, Tool.WL_SIF, run, seconds, artifact=sif.stat().st_size, downloaded=got.blob_bytes)

"""What every scenario shares: the plan (sizes and repetitions), the run's context, and the names
of the rows a scenario records.

The names are constants because three places must agree on them: the
scenario that records a sample, the report that orders the rows and picks
each scenario's peer, and the targets that read figures back out.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.registry import RunningRegistry

from .images import ImageSet
from .imagesets import Pushed
from .proc import Measured, measure_wl


class Scenario:
    STARTUP = "Start-up"
    COLD = "Cold fetch → staged, fingerprinted copy"
    SECOND = "Second image sharing the base"
    RESTAGE = "Re-stage into a new dir, warm"
    BIG = "Cold materialize, big image of random layers"
    RESTAGE10 = "Warm re-stage of 10 cached images, per process"
    RESTAGE_API = "Warm re-stage through the API, per image"
    WFEXS = "Real WfExS-backend factories, same images"
    SIF = "SIF build"
    PARALLEL = "50 small images, parallel downloads"
    BIG_CACHE = "A large cache"
    VERIFY = "cache verify --full throughput"
    DEPLOY = "Deploy into Docker"
    DEPLOY_PODMAN = "Deploy into Podman"
    S3 = "Shared S3 tier (SeaweedFS)"


class Tool:
    # start-up
    PY_BARE = "python -c pass (interpreter alone)"
    PY_IMPORT = "python -c 'import wfexs_like' (whole process)"
    IMPORT_ONLY = "import wfexs_like (in the process, after start-up)"
    WL_HELP = "wfexs-like --help"
    SKOPEO_HELP = "skopeo --help"
    # fetch
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
    # re-stage of 10
    WL_OFFLINE_SMALL = "wfexs-like materialize --offline, 10 small images"
    WL_OFFLINE_LARGE = "wfexs-like materialize --offline, 10 large images"
    API_SMALL = "materializeContainers(offline), small images"
    API_LARGE = "materializeContainers(offline), large images"
    WFEXS_WARM = "WfExS-backend DockerContainerFactory, warm"
    # SIF
    WL_SIF_COLD = "wfexs-like materialize --engine singularity, from the registry"
    WL_SIF_BUILD = "wfexs-like materialize --engine singularity --offline, layers cached"
    MKSQUASHFS_FLOOR = "floor: mksquashfs of the merged rootfs, same options"
    # parallel
    WL_JOBS1 = "wfexs-like materialize --jobs 1"
    WL_JOBS8 = "wfexs-like materialize --jobs 8"
    # large cache
    WL_CACHE_LS = "wfexs-like cache ls"
    WL_CACHE_PRUNE = "wfexs-like cache prune --older-than 30d --dry-run"
    WL_CACHE_VERIFY = "wfexs-like cache verify (changed blobs only)"
    WL_VERIFY_FULL = "wfexs-like cache verify --full"
    SHA256SUM = "sha256sum of the same blob files"
    # S3
    WL_NODE_A = "node A: materialize from the registry, publishing to S3"
    WL_NODE_B = "node B: materialize, empty local cache, from S3"


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does: ``full`` by default, ``quick`` for the smoke run."""

    quick: bool
    runs: int
    startup_runs: int
    big_mb: int
    big_runs: int
    small_images: int
    restage_images: int
    #: Rounds of the per-process re-stage (wfexs-like's two rows and WfExS's, interleaved): ~0.13 s
    #: against ~0.23 s, both start-up bound, so a slow second moves a round's ratio by a tenth.
    restage_runs: int
    #: The API rows: processes per image set, and calls timed in each. A call takes ~12 ms, and a
    #: shared 2-core machine's speed swings 2x from one second to the next (a fixed Python loop:
    #: 195-393 ms), so the samples are spread over many processes and many calls each.
    api_runs: int
    api_reps: int
    latency_ms: int
    parallel_runs: int
    cache_images: int
    blobs_per_image: int
    verify_mb: int
    #: ``cache ls`` takes ~0.2 s: too short for five samples to ride out a slow second.
    cache_runs: int
    s3_runs: int
    #: The SIF build and its floor: each takes ~12 s at full use of both cores, where a shared
    #: machine's speed drifts by a tenth between runs; five alternating pairs steady the median.
    sif_runs: int

    @classmethod
    def make(cls, quick: bool, runs: int | None) -> Plan:
        """The full plan (what the issue's targets are stated for), or the smoke run's (≤ 3 min)."""
        if quick:
            return cls(
                quick=True, runs=runs or 1, startup_runs=5, big_mb=200, big_runs=1, small_images=50,
                restage_images=10, restage_runs=2, api_runs=2, api_reps=5, latency_ms=20, parallel_runs=1,
                cache_images=200, blobs_per_image=10, verify_mb=256, cache_runs=2, s3_runs=1,
                sif_runs=runs or 1,
            )  # fmt: skip
        return cls(
            quick=False, runs=runs or 3, startup_runs=10, big_mb=1000, big_runs=3, small_images=50,
            restage_images=10, restage_runs=9, api_runs=8, api_reps=30, latency_ms=20, parallel_runs=3,
            cache_images=1000, blobs_per_image=10, verify_mb=2000, cache_runs=9, s3_runs=3,
            sif_runs=runs or 5,
        )  # fmt: skip


@dataclass
class Sample:
    """One timed execution; ``extra`` holds bytes, request counts, RSS, fingerprints, step timings."""

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
    work: Path
    podman: bool
    plan: Plan
    small: list[Pushed] = field(default_factory=list)
    big: list[Pushed] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    #: scenario -> why it did not run (or ran only in part): printed under the table
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        """The interpreter of the venv wfexs-like is measured from (``install``)."""
        return self.wfexs_like.parent / "python"

    @property
    def base(self) -> str:
        return self.images.base_ref(self.registry.host)

    @property
    def tool(self) -> str:
        return self.images.tool_ref(self.registry.host)

    def add(self, scenario: str, tool: str, run: int, seconds: float, **extra: Any) -> None:
        self.samples.append(Sample(scenario, tool, run, seconds, extra))

    def add_measured(self, scenario: str, tool: str, run: int, m: Measured, **extra: Any) -> None:
        self.add(scenario, tool, run, m.seconds, **m.rss(), **extra)

    def wl(self, *args: str, env: dict[str, str] | None = None, stdout: Path | None = None) -> Measured:
        """Run ``wfexs-like ARGS`` (this checkout's) measuring time, RSS and its own RSS."""
        return measure_wl([str(self.wfexs_like), *args], env=env, stdout=stdout)

    def skip(self, scenario: str, why: str) -> None:
        print(f"bench: {scenario}: {why}", file=sys.stderr)
        self.skipped[scenario] = why

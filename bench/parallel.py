"""50 small images, ``--jobs 8`` against ``--jobs 1``, through a proxy that adds registry latency.

On loopback a request costs well under a millisecond, so parallel
downloads have nothing to hide and the 2 cores decide; a real registry
answers in tens of milliseconds (TLS, a CDN, a token service), which is
what parallel requests are for. So the registry is reached through
``tests/support/proxy.py``'s ``FaultProxy`` with a fixed delay before every
request (``latency_ms``, 20 ms by default). The table says so.
"""

from __future__ import annotations

import shutil
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.support.proxy import FaultProxy

from .context import Context, Scenario, Tool


class LatencyProxy(FaultProxy):
    """A ``FaultProxy`` with no faults and a fixed delay before each request is forwarded."""

    def __init__(self, upstream: str, latency_s: float) -> None:
        super().__init__(upstream)
        self.latency_s = latency_s

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        time.sleep(self.latency_s)
        super()._handle(h)


def run_all(ctx: Context) -> None:
    d = ctx.scratch / "parallel"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    proxy = LatencyProxy(ctx.registry.url, ctx.plan.latency_ms / 1000)
    try:
        tags = d / "tags.txt"
        tags.write_text("".join(p.ref(proxy.host) + "\n" for p in ctx.small[: ctx.plan.small_images]))
        for n in range(ctx.plan.parallel_runs):
            order = ((1, Tool.WL_JOBS1), (8, Tool.WL_JOBS8))
            for jobs, tool in order if n % 2 == 0 else order[::-1]:
                _one(ctx, n, d / f"{jobs}-{n}", tags, jobs, tool, proxy)
    finally:
        proxy.stop()
        shutil.rmtree(d, ignore_errors=True)


def _one(ctx: Context, n: int, d: Path, tags: Path, jobs: int, tool: str, proxy: LatencyProxy) -> None:
    before = len(proxy.seen)
    m = ctx.wl(
        "materialize",
        "-f",
        str(tags),
        "--jobs",
        str(jobs),
        "--cache-dir",
        str(d / "cache"),
        "--stage-dir",
        str(d / "stage"),
        "-o",
        str(d / "records.yaml"),
    )
    ctx.add_measured(
        Scenario.PARALLEL,
        tool,
        n,
        m,
        images=ctx.plan.small_images,
        requests=len(proxy.seen) - before,
        latency_ms=ctx.plan.latency_ms,
    )
    shutil.rmtree(d, ignore_errors=True)

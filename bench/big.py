"""Cold materialize of a big image of random layers, against ``skopeo copy → oci:``.

Random bytes do not compress, so the image is as big on the wire as on
disk (1 GB; 200 MB with ``--quick``) and the run is dominated by moving,
hashing and writing bytes: the case where a client that buffers a layer
in memory, or hashes it twice, shows. Peak RSS is the point as much as the
time: the issue's limit is 100 MB whatever the image size.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .context import Context, Scenario, Tool
from .proc import du_bytes
from .scenarios import materialize, skopeo_copy


def run_all(ctx: Context) -> None:
    big = ctx.big[0]
    ref = big.ref(ctx.registry.host)
    for n in range(ctx.plan.big_runs):
        d = ctx.scratch / f"big-{n}"
        d.mkdir(parents=True)
        try:
            order = (_ours, _skopeo) if n % 2 == 0 else (_skopeo, _ours)
            for step in order:
                step(ctx, n, ref, d)
        finally:
            shutil.rmtree(d, ignore_errors=True)


def _ours(ctx: Context, n: int, ref: str, d: Path) -> None:
    m, got, _ = materialize(ctx, ref, d / "stage", d / "cache", d / "big.yaml", "--engine", "docker")
    ctx.add_measured(Scenario.BIG, Tool.WL, n, m, downloaded=got.blob_bytes, artifact=du_bytes(d / "cache"))


def _skopeo(ctx: Context, n: int, ref: str, d: Path) -> None:
    m, got = skopeo_copy(ctx, ref, f"oci:{d / 'oci'}:big")
    ctx.add_measured(
        Scenario.BIG, Tool.SKOPEO_OCI, n, m, downloaded=got.blob_bytes, artifact=du_bytes(d / "oci")
    )

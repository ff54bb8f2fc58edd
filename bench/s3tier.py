"""The shared S3 tier: node B materializing from SeaweedFS, beside node A from the registry.

Two "nodes" are two empty cache dirs on this machine sharing one remote
cache (``--remote-cache s3://BUCKET/PREFIX?endpoint=URL`` on a loopback
SeaweedFS, ``tests/support/seaweed.py``). Node A materializes the core image
from the registry and publishes it to S3; node B, with an empty local
cache, materializes the same tag and should take every blob from S3: the
registry's access log counts the blob GETs B made. Each run uses a new key
prefix, so nothing is shared between runs.

The tier is being wired as this is written: when ``materialize --help``
offers no ``--remote-cache``, the scenario is skipped and the table says so.
"""

from __future__ import annotations

import shutil

from tests.support.seaweed import seaweed_s3

from .context import Context, Scenario, Tool
from .proc import run
from .scenarios import materialize


def available(ctx: Context) -> bool:
    return b"--remote-cache" in run([str(ctx.wfexs_like), "materialize", "--help"])


def run_all(ctx: Context) -> None:
    if not available(ctx):
        ctx.skip(Scenario.S3, "skipped: this build's `materialize` has no --remote-cache yet")
        return
    d = ctx.scratch / "s3"
    shutil.rmtree(d, ignore_errors=True)
    try:
        with seaweed_s3(d / "seaweed") as s3:
            for n in range(ctx.plan.s3_runs):
                url = s3.url(s3.new_prefix())
                for node, tool in (("a", Tool.WL_NODE_A), ("b", Tool.WL_NODE_B)):
                    nd = d / f"{node}-{n}"
                    m, got, meta = materialize(
                        ctx,
                        ctx.base,
                        nd / "stage",
                        nd / "cache",
                        nd / "rec.yaml",
                        "--engine",
                        "docker",
                        "--remote-cache",
                        url,
                        env=s3.env(),
                    )
                    ctx.add_measured(
                        Scenario.S3,
                        tool,
                        n,
                        m,
                        downloaded=got.blob_bytes,
                        blob_gets=got.blob_gets,
                        served_by=meta.get("extra", {}).get("served_by"),
                    )
    except RuntimeError as e:
        ctx.skip(Scenario.S3, f"skipped: SeaweedFS did not start ({e})")
    finally:
        shutil.rmtree(d, ignore_errors=True)

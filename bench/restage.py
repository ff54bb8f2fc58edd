"""Warm re-stage of 10 cached images: per process (the CLI, ``--offline``) and through the API.

A workflow's second and later runs find every image in the cache, so what
is left is start-up plus a lookup, a trust check (``stat``, not a re-hash)
and hard links per image. That should not depend on how big the images
are: the same is measured on 10 small images (≈ 1 MB each) and on 10 large
ones (the big image's layers plus one unique layer each; the cache holds
the shared bytes once, the entries are distinct). Every repetition stages
into a new dir, as a new workflow run would.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from . import wfexs_ref
from .context import Context, Scenario, Tool
from .proc import measure, run, settle

API_SCRIPT = Path(__file__).resolve().parent / "api_restage.py"


def run_all(ctx: Context) -> None:
    d = ctx.scratch / "restage"
    shutil.rmtree(d, ignore_errors=True)
    cache = d / "cache"
    host = ctx.registry.host
    sets = {
        "small": [p.ref(host) for p in ctx.small[: ctx.plan.restage_images]],
        "large": [p.ref(host) for p in ctx.big[1 : 1 + ctx.plan.restage_images]],
    }
    try:
        for tags in sets.values():  # warm the cache (untimed): every later run is offline
            run(
                [
                    str(ctx.wfexs_like),
                    "materialize",
                    "-q",
                    *tags,
                    "--cache-dir",
                    str(cache),
                    "--stage-dir",
                    str(d / "warm-up"),
                    "-o",
                    str(d / "warm-up.yaml"),
                ]
            )
        wfexs = wfexs_ref.restage_runner(ctx, d, sets["small"])
        # A re-stage is a later run: the first run's writes (a GB here) are long on disk by then.
        # Left to write back during the timed runs, they made every mkdir wait on the journal.
        settle()
        for n in range(ctx.plan.restage_runs):
            for size, tags in sets.items():
                tool = Tool.WL_OFFLINE_SMALL if size == "small" else Tool.WL_OFFLINE_LARGE
                stage = d / f"stage-{size}-{n}"
                m = ctx.wl(
                    "materialize",
                    *tags,
                    "--offline",
                    "--cache-dir",
                    str(cache),
                    "--stage-dir",
                    str(stage),
                    "-o",
                    str(d / f"{size}-{n}.yaml"),
                )
                ctx.add_measured(Scenario.RESTAGE10, tool, n, m, images=len(tags))
                # Kept until the end: freeing its blocks (this disk discards them) competes with the
                # next timed run. Stage dirs are hard links: they take inodes, not space.
            if wfexs is not None:  # the peer in the same round: both meet the machine in one state
                wfexs(n)
        settle()
        for n in range(ctx.plan.api_runs):
            for size, tags in sets.items():
                _api(ctx, n, size, tags, cache, d / f"api-{size}-{n}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _api(ctx: Context, n: int, size: str, tags: list[str], cache: Path, root: Path) -> None:
    """One process, ``api_reps`` calls after a first one; one sample per call, seconds per image."""
    m = measure([str(ctx.python), str(API_SCRIPT), str(cache), str(root), str(ctx.plan.api_reps), *tags])
    got = json.loads(m.out.decode().strip().splitlines()[-1])
    tool = Tool.API_SMALL if size == "small" else Tool.API_LARGE
    per_image = statistics.median(got["calls_s"]) / len(tags)
    ctx.add(
        Scenario.RESTAGE_API,
        tool,
        n,
        per_image,
        rss_kb=m.rss_kb,
        images=len(tags),
        first_call_s=got["first_s"],
        import_s=got["import_s"],
        calls=len(got["calls_s"]),
    )
    # ``root`` is kept until the section ends, as the CLI runs' stage dirs are: removed here, its
    # thousands of links were still being freed while the next process was timed, and each
    # process measured slower than the one before (0.9 ms per image for the first, 3.3 for the fifth).

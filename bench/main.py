"""``bench/run.py``: set up once, run every scenario ``--runs`` times, print and write the table.

The registry and every image the benchmark puts into Docker or Podman are
removed in a ``finally``, so an interrupted or failed run leaves the shared
daemons as it found them; the expensive setup (rootfs, registry storage)
stays cached in ``bench/.work/`` for the next run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.support.registry import RunningRegistry, start_registry

from . import engines, images, report, scenarios
from .proc import CommandError, first_line

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``--runs`` must be at least 1 (a median needs a sample)."""
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark wfexs-like against the reference path (docker pull/save/gzip) and skopeo.",
    )
    p.add_argument("--quick", action="store_true", help="a ≈ 60 MB synthetic image instead of Debian")
    p.add_argument("--runs", type=int, default=3, help="repetitions of every scenario (default 3)")
    p.add_argument("--no-podman", action="store_true", help="skip the Podman deploy rows")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def wfexs_like_cli() -> Path:
    """The CLI of the venv running us (so the benchmark measures this checkout, not another install)."""
    beside = Path(sys.executable).parent / "wfexs-like"
    found = beside if beside.exists() else shutil.which("wfexs-like")
    if not found:
        raise SystemExit("wfexs-like is not installed in this Python's environment (pip install -e .)")
    return Path(found)


def results_stem(args: argparse.Namespace) -> str:
    """``results`` for a full run; a ``--quick`` smoke run must not overwrite the real numbers."""
    return "results-quick" if args.quick else "results"


def machine(args: argparse.Namespace, podman: bool) -> dict[str, Any]:
    """What the results header says about the machine and tools (versions as reported)."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "bench/run.py" + (" --quick" if args.quick else "") + f" --runs {args.runs}",
        "nproc": os.cpu_count(),
        "kernel": f"Linux {platform.release()}",
        "python": platform.python_version(),
        "docker": engines.version("docker"),
        "podman": engines.version("podman") if podman else None,
        "skopeo": first_line(["skopeo", "--version"]),
        "gzip": first_line(["gzip", "--version"]),
        "runs": args.runs,
    }


def benchmark(
    args: argparse.Namespace, registry: RunningRegistry, podman: bool, started: float
) -> dict[str, Any]:
    """Set up the images, run every scenario, write the results; return the run's metadata."""
    kind = "synthetic" if args.quick else "debian"
    image_set, fallback = images.prepare_with_fallback(kind, WORK, registry)
    if fallback:
        print(f"bench: {fallback}", file=sys.stderr)
    setup_s = time.perf_counter() - started
    # Per-run scratch is throwaway, so it lives in the temp dir; bench/.work keeps only the cached setup.
    scratch = Path(tempfile.mkdtemp(prefix="wfexs-bench-"))
    ctx = scenarios.Context(registry, image_set, wfexs_like_cli(), scratch, podman)
    try:
        for run in range(args.runs):
            print(f"bench: run {run + 1}/{args.runs} ...", file=sys.stderr)
            scenarios.run_once(ctx, run)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meta = machine(args, podman)
    meta.update(image=asdict(image_set), fallback=fallback, setup_s=setup_s)
    meta["total_s"] = time.perf_counter() - started
    markdown = report.write(BENCH, results_stem(args), meta, ctx.samples, report.summarize(ctx.samples))
    print(markdown)
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    """Sweep, start the registry, benchmark, and always clean up; 1 when a step failed."""
    started = time.perf_counter()
    args = parse_args(argv)
    if engines.version("docker") is None:
        raise SystemExit("bench: Docker is not answering; start dockerd first (see ENVIRONMENT.md)")
    podman = not args.no_podman and engines.version("podman") is not None
    WORK.mkdir(exist_ok=True)
    engines.sweep("docker")  # leftovers of an interrupted run would make "cold" warm
    engines.sweep("podman")
    registry = start_registry(WORK / "registry")
    try:
        meta = benchmark(args, registry, podman, started)
    except (CommandError, RuntimeError) as e:
        print(f"bench: failed, nothing written: {e}", file=sys.stderr)
        return 1
    finally:
        registry.stop()
        engines.sweep("docker")
        engines.sweep("podman")
    print(
        f"bench: done in {meta['total_s']:.0f} s (setup {meta['setup_s']:.0f} s); "
        f"wrote {BENCH / results_stem(args)}.md and .json",
        file=sys.stderr,
    )
    return 0

"""``bench/run.py``: set up once, run every scenario, print and write the tables and the plot.

The registry and every image the benchmark puts into Docker or Podman are
removed in a ``finally``, so an interrupted or failed run leaves the shared
daemons as it found them; the expensive setup (rootfs, registry storage)
stays cached in ``bench/.work/`` for the next run.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.support.registry import RunningRegistry, start_registry

from . import (
    big,
    bigcache,
    engines,
    images,
    imagesets,
    install,
    parallel,
    plot,
    report,
    restage,
    s3tier,
    scenarios,
    sif_floor,
    startup,
    targets,
)
from .context import Context, Plan
from .proc import CommandError, first_line, settle

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"
DOCS_PLOT = BENCH.parent / "docs" / "bench.png"


def _core(ctx: Context) -> None:
    for n in range(ctx.plan.runs):
        print(f"bench: core scenarios, run {n + 1}/{ctx.plan.runs} ...", file=sys.stderr)
        scenarios.run_once(ctx, n)


#: name -> what it runs; in the order they run (cheap and independent first)
SECTIONS: dict[str, Callable[[Context], None]] = {
    "startup": startup.run,
    "core": _core,
    "sif": sif_floor.run_all,
    "big": big.run_all,
    "restage": restage.run_all,
    "parallel": parallel.run_all,
    "cache": bigcache.run_all,
    "s3": s3tier.run_all,
}


def _sections(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}"
        )
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``--runs`` must be at least 1 (a median needs a sample)."""
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark wfexs-like against its peers and floors; report issue 12's targets.",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: synthetic images, fewer runs, smaller sizes"
    )
    p.add_argument(
        "--runs", type=int, default=None, help="repetitions of the core scenarios (default 3; quick 1)"
    )
    p.add_argument("--no-podman", action="store_true", help="skip the Podman deploy rows")
    p.add_argument(
        "--only", type=_sections, default=None, help=f"comma-separated sections: {', '.join(SECTIONS)}"
    )
    p.add_argument("--skip", type=_sections, default=[], help="comma-separated sections to leave out")
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def byte_compile_package() -> str:
    """Byte-compile the package the bench itself imports (image set-up, the fallback install).

    An editable or source checkout may have no ``.pyc`` (or stale ones); then every
    process importing it would spend ~0.3 s compiling, a cost no installed user pays.
    """
    spec = importlib.util.find_spec("wfexs_like")
    where = list(spec.submodule_search_locations or []) if spec else []
    if not where:
        raise SystemExit("bench: the wfexs_like package is not importable from this Python")
    for d in where:
        if not compileall.compile_dir(d, quiet=1):
            raise SystemExit(f"bench: byte-compiling {d} failed")
    return where[0]


def _chosen(args: argparse.Namespace) -> list[str]:
    return [n for n in SECTIONS if (args.only is None or n in args.only) and n not in args.skip]


def results_stem(args: argparse.Namespace) -> str:
    """``results`` for a full run; a smoke or partial run must not overwrite the real numbers."""
    stem = "results-quick" if args.quick else "results"
    return stem if _chosen(args) == list(SECTIONS) else stem + "-partial"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1_000_000
    except OSError:
        pass
    return 0.0


def machine(args: argparse.Namespace, podman: bool, plan: Plan, load_start: float) -> dict[str, Any]:
    """What the results header says about the machine and tools (versions as reported)."""
    cmd = "bench/run.py" + (" --quick" if args.quick else "") + (f" --runs {args.runs}" if args.runs else "")
    if args.only:
        cmd += " --only " + ",".join(args.only)
    if args.skip:
        cmd += " --skip " + ",".join(args.skip)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": cmd,
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "ram_gb": _ram_gb(),
            "kernel": f"Linux {platform.release()}",
            "load_start": load_start,
            "load_end": os.getloadavg()[0],
        },
        "versions": {
            "Python": platform.python_version(),
            "Docker": engines.version("docker"),
            "Podman": engines.version("podman") if podman else "not used",
            "skopeo": first_line(["skopeo", "--version"]).removeprefix("skopeo version "),
            "squashfs-tools": first_line(["mksquashfs", "-version"]).removeprefix("mksquashfs version "),
            "tar2sqfs": first_line(["tar2sqfs", "--version"]).removeprefix("tar2sqfs (squashfs-tools-ng) "),
            "coreutils": first_line(["sha256sum", "--version"]).removeprefix("sha256sum (GNU coreutils) "),
            "gzip": first_line(["gzip", "--version"]).removeprefix("gzip "),
        },
        "plan": asdict(plan),
    }


def benchmark(
    args: argparse.Namespace, registry: RunningRegistry, podman: bool, started: float
) -> dict[str, Any]:
    """Set up the images, run every chosen section, write the results; return the run's metadata."""
    load_start = os.getloadavg()[0]
    plan = Plan.make(args.quick, args.runs)
    chosen = _chosen(args)
    kind = "synthetic" if args.quick else "debian"
    image_set, fallback = images.prepare_with_fallback(kind, WORK, registry)
    if fallback:
        print(f"bench: {fallback}", file=sys.stderr)
    # Per-run scratch is throwaway, so it lives in the temp dir; bench/.work keeps only the cached setup.
    scratch = Path(tempfile.mkdtemp(prefix="wfexs-bench-"))
    installed = install.install(WORK, BENCH.parent)
    print(f"bench: measuring wfexs-like {installed.how}", file=sys.stderr)
    ctx = Context(registry, image_set, installed.cli, scratch, WORK, podman, plan)
    if {"restage", "parallel"} & set(chosen):
        ctx.small = imagesets.small_set(WORK, registry, plan.small_images)
    if {"restage", "big"} & set(chosen):
        print(f"bench: preparing the {plan.big_mb} MB image (once; cached after)", file=sys.stderr)
        ctx.big = imagesets.big_set(WORK, registry, plan.big_mb, plan.restage_images)
    setup_s = time.perf_counter() - started
    try:
        for name in chosen:
            waited = settle()  # each section starts on a quiet disk, whatever the last one left
            t0 = time.perf_counter()
            print(f"bench: {name} ... (after {waited:.0f} s for the disk to settle)", file=sys.stderr)
            SECTIONS[name](ctx)
            print(f"bench: {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meta = machine(args, podman, plan, load_start)
    meta.update(image=asdict(image_set), fallback=fallback, setup_s=setup_s, skipped=ctx.skipped)
    meta["installed"] = installed.how
    meta["total_s"] = time.perf_counter() - started
    summaries = report.summarize(ctx.samples)
    outcomes = targets.evaluate(summaries, ctx.skipped)
    stem = results_stem(args)
    png = DOCS_PLOT if stem == "results" else WORK / f"{stem}.png"
    why_not = plot.write(png, outcomes, summaries, f"wfexs-like benchmark, {meta['date']}: {meta['command']}")
    if why_not:
        print(f"bench: {why_not}", file=sys.stderr)
        picture = f"_{why_not}_"
    else:
        rel = os.path.relpath(png, BENCH)
        picture = f"![targets and peak RSS]({rel})"
    markdown = report.write(BENCH, stem, meta, ctx.samples, summaries, outcomes, picture)
    print(markdown)
    meta["stem"], meta["plot"] = stem, None if why_not else str(png)
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    """Sweep, start the registry, benchmark, and always clean up; 1 when a step failed."""
    started = time.perf_counter()
    args = parse_args(argv)
    if engines.version("docker") is None:
        raise SystemExit("bench: Docker is not answering; start dockerd first (bash scripts/setup-host.sh)")
    podman = not args.no_podman and engines.version("podman") is not None
    WORK.mkdir(exist_ok=True)
    byte_compile_package()
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
        f"wrote {BENCH / meta['stem']}.md and .json" + (f", and {meta['plot']}" if meta["plot"] else ""),
        file=sys.stderr,
    )
    return 0

"""The ``wfexs-like`` command: the factories, one verb each.

Every failure the library anticipates (a bad tag, a missing image, a broken
engine, a tampered snapshot) is a ``ContainerFactoryException`` whose message
already says what to do; the command prints those without a traceback and
exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .container_factories import FACTORIES, make_factory
from .errors import ContainerFactoryException, ContainerNotFoundException
from .images.manifest import Platform
from .model import ContainerTaggedName, ContainerType
from .provenance import dump_containers, read_containers_file, write_containers_file


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=sorted(FACTORIES),
        default="docker",
        help="container engine the workflow runs with (default: docker)",
    )
    p.add_argument(
        "--stage-dir",
        type=Path,
        required=True,
        help="the workflow's containers directory (snapshots are staged here)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="shared cache (default: $WFEXS_LIKE_CACHE_DIR or the XDG cache home)",
    )
    p.add_argument("--force", action="store_true", help="re-fetch / re-load even when cached")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wfexs-like",
        description="Pull workflow containers once, pin them by digest, cache, stage and deploy them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    m = sub.add_parser(
        "materialize",
        help="fetch, cache and stage tags; print their provenance YAML",
        description="Fetch each TAG (once: later runs reuse the cache), stage it into "
        "--stage-dir and print the Container records as YAML.",
    )
    m.add_argument(
        "tags",
        nargs="+",
        metavar="TAG",
        help="e.g. busybox:1.36, quay.io/biocontainers/samtools:1.15--h1170115_1",
    )
    _common(m)
    m.add_argument(
        "--platform",
        default=None,
        help="os/arch[/variant] to pick from multi-platform images (default: this host's)",
    )
    m.add_argument("--offline", action="store_true", help="never touch the network; use only the cache")
    m.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="talk plain HTTP to this registry (loopback registries always are)",
    )
    m.add_argument("--output", "-o", type=Path, default=None, help="write the YAML here instead of stdout")
    m.add_argument(
        "--format",
        choices=("wfexs-like", "wfexs"),
        default="wfexs-like",
        help="record style: ours (plain safe YAML) or WfExS-backend's marshalled form",
    )
    m.add_argument(
        "--snapshot-format",
        choices=("oci-layout", "docker-archive"),
        default=None,
        help="docker/podman only: stage OCI layouts (default) or gzipped docker-archive .img files "
        "named the way WfExS-backend stages them, so its own deploy can load them",
    )

    d = sub.add_parser(
        "deploy",
        help="load staged snapshots into the engine (only what it lacks)",
        description="Read a containers YAML written by 'materialize' and make every "
        "container available to the engine, verifying each snapshot first.",
    )
    d.add_argument("containers_file", type=Path, metavar="CONTAINERS_YAML")
    _common(d)
    return parser


def _materialize(args: argparse.Namespace) -> int:
    platform = Platform.parse(args.platform) if args.platform else None
    extra = {"snapshot_format": args.snapshot_format} if args.snapshot_format else {}
    if extra and args.engine not in ("docker", "podman"):
        raise ContainerFactoryException("--snapshot-format applies to --engine docker or podman only")
    factory = make_factory(
        args.engine,
        containersCacheDir=args.cache_dir,
        stagedContainersDir=args.stage_dir,
        platform=platform,
        insecure_registries=args.insecure_registry,
        **extra,
    )
    ctype = factory.ContainerType()
    if ctype == ContainerType.Podman:
        ctype = ContainerType.Docker
    tags = [ContainerTaggedName(t, ctype) for t in args.tags]
    containers = factory.materializeContainers(
        tags, containers_dir=args.stage_dir, offline=args.offline, force=args.force
    )
    if args.output:
        write_containers_file(containers, args.output, style=args.format, containers_dir=args.stage_dir)
        print(f"wrote {len(containers)} container record(s) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(dump_containers(containers, style=args.format, containers_dir=args.stage_dir) or "")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    containers = read_containers_file(args.containers_file, containers_dir=args.stage_dir)
    factory = make_factory(args.engine, containersCacheDir=args.cache_dir, stagedContainersDir=args.stage_dir)
    loaded = skipped = 0
    for c in containers:
        if not factory.AcceptsContainer(c):
            kind = c.type.value
            print(
                f"skipping {c.origTaggedName}: a {kind} record, not for --engine {args.engine}",
                file=sys.stderr,
            )
            skipped += 1
            continue
        deployed, was_loaded = factory.deploySingleContainer(
            c, containers_dir=args.stage_dir, force=args.force
        )
        loaded += was_loaded
        state = "loaded" if was_loaded else ("converted" if deployed is not c else "present")
        print(f"{state}\t{deployed.taggedName}\t{deployed.signature}")
    present = len(containers) - loaded - skipped
    print(f"{loaded} loaded, {present} already present, {skipped} skipped", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "materialize":
            return _materialize(args)
        if args.command == "deploy":
            return _deploy(args)
    except ContainerNotFoundException as e:
        if e.failures:
            print(f"wfexs-like: {len(e.failures)} container(s) failed:", file=sys.stderr)
            for tag, reason in e.failures:
                print(f"  {tag}: {reason}", file=sys.stderr)
        else:
            print(f"wfexs-like: {e}", file=sys.stderr)
        return 1
    except ContainerFactoryException as e:
        print(f"wfexs-like: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wfexs-like: interrupted; nothing half-written was published", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

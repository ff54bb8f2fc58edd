"""Old single-module bodies of materialize/deploy, until their modules take them over.

Every failure the library anticipates (a bad tag, a missing image, a broken
engine, a tampered snapshot) is a ``ContainerFactoryException`` whose message
already says what to do; the command prints those without a traceback and
exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..container_factories import make_factory
from ..errors import ContainerFactoryException
from ..images.manifest import Platform
from ..model import ContainerTaggedName, ContainerType
from ..provenance import dump_containers, read_containers_file, write_containers_file


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

"""``wfexs-like push``: copy cached images and SIFs to a site registry (``ops.push`` does the work)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import SUMMARIES
from ._common import (
    EXIT_OK,
    PartialFailure,
    UsageError,
    add_cache_dir,
    add_registry_access,
    check_registry_access,
    new_parser,
    positive_int,
)

#: What ``--engine`` selects: ``ops.push.ENGINE_KINDS`` keys, named here so parsing imports nothing.
PUSH_ENGINES = ("docker", "podman", "singularity")


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = new_parser(
        sub,
        "push",
        parents,
        help=SUMMARIES["push"],
        description=(
            "Push what the cache holds for each SOURCE to the registry --to, nothing fetched: every\n"
            "SOURCE must have been materialized (any missing one is named, and nothing is pushed).\n"
            "A SOURCE is a tag, or a file: a containers YAML (its records are pushed at the digests they\n"
            "pin) or a tag list. Names keep their repository path under --to:\n"
            "  docker.io/library/busybox:1.36  --to HOST/PREFIX  ->  HOST/PREFIX/library/busybox:1.36\n"
            "Manifests go byte for byte, so HOST/PREFIX/REPO@sha256:... pulls the digest the records pin;\n"
            "blobs the registry has are skipped, blobs pushed to another repository are mounted.\n"
            "SIFs go as ORAS artifacts: oras://, library:// and shub:// SIFs keep their tag, a SIF built\n"
            "from an image gets TAG-sif (oras://HOST/PREFIX/library/busybox:1.36-sif).\n"
            "Logins, certificates and insecure registries work as for materialize.\n\n"
            "exit status: 0 done, 1 a source is not cached or a push failed, 2 usage, 3 some failed under\n"
            "--keep-going, 130 interrupted"
        ),
        example_lines=[
            "wfexs-like push --to registry.example.org:5000/lab busybox:1.36",
            "wfexs-like push --to registry.example.org/lab wf/containers.yaml",
            "wfexs-like push --to localhost:5000 --engine singularity docker://alpine:3.20",
            "wfexs-like push --to registry.example.org/lab --authfile auth.json --json -f tags.txt",
            "wfexs-like materialize --engine singularity --stage-dir sifs "
            "oras://registry.example.org/lab/library/busybox:1.36-sif",
        ],
    )
    p.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="a tag (busybox:1.36, oras://host/repo:tag) or a file: containers YAML or tag list",
    )
    p.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="read sources from FILE (a containers YAML or a tag list, one per line); repeatable",
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="REGISTRY[/PREFIX]",
        help="the registry (HOST[:PORT]) and an optional repository prefix to push under; "
        "http:// or https:// in front forces the scheme (default: HTTPS, plain HTTP for loopback and "
        "--insecure-registry hosts)",
    )
    add_cache_dir(p)
    p.add_argument(
        "--engine",
        choices=PUSH_ENGINES,
        default=None,
        help="push only what this engine runs: images (docker, podman) or SIFs (singularity); "
        "default: every kind the cache holds for each source",
    )
    p.add_argument(
        "--platform",
        default=None,
        metavar="PLATFORM",
        help="push the entries materialized with this --platform (default: those without one)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=4,
        metavar="N",
        help="upload N blobs at once (default: 4)",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="when a push fails, push the others, list the failures, exit 3",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    add_registry_access(p)
    p.set_defaults(run=run)


def _sources(args: argparse.Namespace) -> list[Any]:
    """Positional files and ``-f`` files become paths (read by the library), the rest tags."""
    out: list[Any] = []
    for source in args.sources:
        path = Path(source)
        out.append(path if path.is_file() else source)
    for path in args.file:
        if not path.is_file():
            raise UsageError(f"-f {path}: no such file")
        out.append(path)
    if not out:
        raise UsageError("nothing to push: give TAG arguments or files (a containers YAML, a tag list)")
    return out


def _check(args: argparse.Namespace) -> None:
    from ..errors import ContainerFactoryException
    from ..ops.materialize import parse_platform
    from ..ops.push import parse_destination

    try:
        parse_destination(args.to)
        if args.platform is not None:
            args.platform = parse_platform(args.platform)
    except ContainerFactoryException as e:
        raise UsageError(str(e)) from None
    check_registry_access(args)


def run(args: argparse.Namespace) -> int:
    _check(args)
    sources = _sources(args)

    from ..fsutil import human_bytes
    from ..ops.push import push
    from .cache import count, table
    from .text import short_digest

    summary = push(
        args.cache_dir,
        sources,
        args.to,
        engine=args.engine,
        platform=args.platform,
        insecure_registries=args.insecure_registry,
        auth_file=args.authfile,
        cert_dir=args.cert_dir,
        retries=args.retry_times,
        jobs=args.jobs,
        keep_going=args.keep_going,
    )
    if args.json:
        sys.stdout.write(json.dumps(summary.to_json(), indent=2) + "\n")
    else:
        rows = [
            [
                i.source,
                i.kind,
                i.target,
                short_digest(i.digest),
                human_bytes(i.stats.uploaded_bytes) if i.outcome != "failed" else "-",
                i.outcome,
            ]
            for i in summary.items
        ]
        print(table(["SOURCE", "KIND", "PUSHED AS", "DIGEST", "UPLOADED", "RESULT"], rows))
        if not args.quiet:
            done = [i for i in summary.items if i.outcome != "failed"]
            pushed = sum(i.outcome == "pushed" for i in done)
            blobs = count(sum(i.stats.uploaded_blobs for i in done), "blob")
            present = sum(i.stats.present_blobs for i in done)
            mounted = sum(i.stats.mounted_blobs for i in done)
            print(
                f"{pushed} pushed, {len(done) - pushed} already there; uploaded "
                f"{human_bytes(summary.uploaded_bytes)} in {blobs}, {present} present, {mounted} mounted",
                file=sys.stderr,
            )
            for i in summary.items:
                if i.note:
                    print(f"note: {i.source}: {i.note}", file=sys.stderr)
    if summary.failures:
        lines = "\n".join(f"  {source}: {reason}" for source, reason in summary.failures)
        raise PartialFailure(
            f"{len(summary.failures)} of {len(summary.items)} push(es) failed (--keep-going pushed the "
            f"others):\n{lines}"
        )
    return EXIT_OK

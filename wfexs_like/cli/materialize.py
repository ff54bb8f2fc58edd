"""``wfexs-like materialize``: fetch, cache and stage tags; write their records.

Everything that can be wrong with the call (the tags, the platform, where
the records go, the registry files) is checked before the first request,
so a mistake costs nothing; the work itself is ``ops.materialize``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import SUMMARIES
from ._common import (
    ENGINES,
    PartialFailure,
    UsageError,
    add_cache_dir,
    add_registry_access,
    check_registry_access,
    new_parser,
    positive_int,
)

FORMATS = ("yaml", "json", "wfexs")
#: Old name of ``yaml`` (our records), still accepted.
FORMAT_ALIASES = {"wfexs-like": "yaml"}


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    m = new_parser(
        sub,
        "materialize",
        parents,
        help=SUMMARIES["materialize"],
        description="Fetch each TAG once (later runs reuse the cache), stage it into --stage-dir "
        "and write the Container records (YAML by default) to -o FILE or standard output.\n"
        "Tags come as arguments and/or from -f FILE (one per line, # comments allowed; or a\n"
        "containers YAML, whose records are re-materialized at exactly the digests they pin).\n"
        "--stage-dir is required.\n\n"
        "exit status: 0 done, 1 a tag failed (each is named with its reason; nothing written),\n"
        "2 usage (bad option, tag or platform), 3 some failed under --keep-going, 130 interrupted",
        example_lines=[
            "wfexs-like materialize --stage-dir wf/containers -o wf/containers.yaml busybox:1.36",
            "wfexs-like materialize --stage-dir wf/containers -f tags.txt --jobs 8 --keep-going -o wf/c.yaml",
            "grep -v '^#' tags.txt | wfexs-like materialize --stage-dir wf/containers -f - --format json",
            "wfexs-like materialize --stage-dir wf2/containers -f wf/c.yaml --offline   # re-stage pins",
            "wfexs-like materialize --engine singularity --platform arm64 --stage-dir sifs alpine:3.20",
            "wfexs-like materialize --stage-dir wf/containers --from-workflow pipeline/ -o wf/c.yaml",
            "wfexs-like materialize --stage-dir wf/containers --from-crate run-crate/ --offline",
        ],
    )
    m.add_argument(
        "tags",
        nargs="*",
        metavar="TAG",
        help="e.g. busybox:1.36, quay.io/biocontainers/samtools:1.15--h1170115_1, docker-archive:img.tar",
    )
    m.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        metavar="FILE",
        help="read tags from FILE ('-': standard input): one per line, or a containers YAML; repeatable",
    )
    m.add_argument(
        "--from-workflow",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="materialize every pullable container the workflow at PATH names (a file or a directory "
        "of CWL, Nextflow, Snakemake, WDL or Galaxy tools; see 'wfexs-like scan'); repeatable",
    )
    m.add_argument(
        "--from-crate",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="re-materialize exactly the digests an RO-Crate records (ours or WfExS-backend's); repeatable",
    )
    m.add_argument(
        "--stage-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="the workflow's containers directory, where snapshots are staged (required)",
    )
    m.add_argument(
        "--engine",
        choices=ENGINES,
        default="docker",
        help="container engine the workflow runs with (default: docker)",
    )
    add_cache_dir(m)
    m.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE",
        help="write the records to FILE ('-' or none: standard output); checked before any work",
    )
    m.add_argument(
        "--format",
        choices=(*FORMATS, *FORMAT_ALIASES),
        default="yaml",
        metavar="{yaml,json,wfexs}",
        help="records as our YAML (default; 'wfexs-like' is its old name), the same as JSON, "
        "or WfExS-backend's marshalled YAML",
    )
    m.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=None,
        metavar="N",
        help="download N blobs at once, across all images (default: 4, or the config's 'jobs')",
    )
    m.add_argument(
        "--keep-going",
        action="store_true",
        help="when some tags fail, still write the records of the others, list the failures, exit 3",
    )
    m.add_argument(
        "--platform",
        default=None,
        metavar="PLATFORM",
        help="pick this platform from multi-platform images: arm64, linux/arm64 or linux/arm64/v8 "
        "(default: this machine's)",
    )
    m.add_argument("--offline", action="store_true", help="never touch the network; use only the cache")
    m.add_argument(
        "--force", action="store_true", help="fetch and stage again even when the cache has the image"
    )
    m.add_argument(
        "--require-digest",
        action="store_true",
        help="refuse an image whose digest nothing vouches for: fetched by tag from a registry that "
        "sent no Docker-Content-Digest header (trust on first use; recorded as such otherwise)",
    )
    m.add_argument(
        "--snapshot-format",
        choices=("oci-layout", "docker-archive"),
        default=None,
        help="docker/podman only: stage OCI layouts (default) or gzipped docker-archive .img "
        "files named the way WfExS-backend stages them, so its own deploy can load them",
    )
    tiers = m.add_argument_group("shared tiers (read before any registry)")
    tiers.add_argument(
        "--library-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a read-only image library: a wfexs-like cache dir, or a directory of SIFs named the way "
        "Nextflow's singularity cache names them; used before the cache, never written to (repeatable; "
        "also $WFEXS_LIKE_LIBRARY_DIRS and the config's library-dirs)",
    )
    tiers.add_argument(
        "--remote-cache",
        default=None,
        metavar="s3://BUCKET/PREFIX?endpoint=URL",
        help="an S3-compatible object store shared by many machines: read before the registry (also "
        "--offline), written after every materialize (also $WFEXS_LIKE_REMOTE_CACHE; credentials from "
        "the usual AWS variables and files)",
    )
    tiers.add_argument(
        "--no-remote",
        action="store_true",
        help="leave the remote cache out entirely, even if the configuration names one",
    )
    registry = add_registry_access(m)
    registry.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="REGISTRY=HOST[:PORT]",
        help="try this mirror or pull-through cache first for images of REGISTRY (or a namespace, "
        "quay.io/org); the next mirror, then REGISTRY itself, on any error; digests always checked "
        "(repeatable; before the config's [mirrors] and registries.conf)",
    )
    registry.add_argument(
        "--registries-conf",
        type=Path,
        default=None,
        metavar="FILE",
        help="read mirrors from this containers-registries.conf(5) file instead of the ones podman "
        "reads ($CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf, /etc/containers/...)",
    )
    m.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    """Every usage mistake, before any work (exit 2)."""
    from ..errors import ContainerFactoryException
    from ..ops.materialize import check_output_path, parse_platform

    if args.output not in (None, "-"):
        try:
            check_output_path(Path(args.output), stage_dir=args.stage_dir)
        except ContainerFactoryException as e:
            raise UsageError(f"-o {args.output}: {e}") from None
    if args.platform is not None:
        try:
            args.platform = parse_platform(args.platform)
        except ContainerFactoryException as e:
            raise UsageError(f"--platform: {e}") from None
    if args.snapshot_format is not None and args.engine not in ("docker", "podman"):
        raise UsageError(f"--snapshot-format applies to --engine docker or podman, not {args.engine}")
    check_registry_access(args)
    for lib in args.library_dir:
        if not lib.is_dir():
            raise UsageError(f"--library-dir {lib}: no such directory")
    if args.registries_conf is not None and not args.registries_conf.is_file():
        raise UsageError(f"--registries-conf {args.registries_conf}: no such file")


def _tags(args: argparse.Namespace) -> list[Any]:
    from ..errors import ContainerFactoryException
    from ..ops.taglist import collect_tags, from_crates, from_workflows

    for path in (*args.from_workflow, *args.from_crate):
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
    # A workflow or crate that cannot be read is a failure of that input (exit 1), not of usage.
    # Asked only when given: the scanners and the RO-Crate reader are not loaded otherwise.
    extra = [
        *(from_workflows(args.from_workflow, engine=args.engine) if args.from_workflow else ()),
        *(from_crates(args.from_crate) if args.from_crate else ()),
    ]
    try:
        return collect_tags(args.tags, args.file, extra=extra)
    except ContainerFactoryException as e:
        raise UsageError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    _check(args)
    tags = _tags(args)

    from ..ops.materialize import materialize, records_text, write_records

    fmt = FORMAT_ALIASES.get(args.format, args.format)
    result = materialize(
        tags,
        engine=args.engine,
        stage_dir=args.stage_dir,
        cache_dir=args.cache_dir,
        platform=args.platform,
        offline=args.offline,
        force=args.force,
        jobs=args.jobs,
        keep_going=args.keep_going,
        insecure_registries=args.insecure_registry,
        auth_file=args.authfile,
        cert_dir=args.cert_dir,
        retries=args.retry_times,
        require_digest=args.require_digest,
        snapshot_format=args.snapshot_format,
        mirrors=args.mirrors,
        registries_conf=args.registries_conf,
        remote_cache=args.remote_cache,
        library_dirs=args.library_dir,
        no_remote=args.no_remote,
    )
    if not result.containers:
        # --keep-going with nothing to keep: a failure, and no empty records file.
        from ..errors import ContainerNotFoundException

        raise ContainerNotFoundException.for_failures("materialize", result.failures)
    if args.output in (None, "-"):
        sys.stdout.write(records_text(result.containers, format=fmt, stage_dir=result.stage_dir))
        sys.stdout.flush()
    else:
        write_records(result.containers, Path(args.output), format=fmt, stage_dir=result.stage_dir)
        if not args.quiet:
            print(f"wrote {len(result.containers)} container record(s) to {args.output}", file=sys.stderr)
    if result.failures:
        lines = "\n".join(f"  {tag}: {reason}" for tag, reason in result.failures)
        raise PartialFailure(
            f"{len(result.failures)} of {len(result.summaries)} container(s) failed "
            f"(--keep-going wrote the records of the others):\n{lines}"
        )
    return 0

"""``wfexs-like materialize``: fetch, cache and stage tags; write their records."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import ENGINES, add_cache_dir, new_parser


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    m = new_parser(
        sub,
        "materialize",
        parents,
        help="fetch, cache and stage tags; print their provenance YAML",
        description="Fetch each TAG (once: later runs reuse the cache), stage it into "
        "--stage-dir and print the Container records as YAML.",
        example_lines=["wfexs-like materialize --stage-dir containers -o containers.yaml busybox:1.36"],
    )
    m.add_argument(
        "tags",
        nargs="+",
        metavar="TAG",
        help="e.g. busybox:1.36, quay.io/biocontainers/samtools:1.15--h1170115_1",
    )
    m.add_argument(
        "--engine",
        choices=ENGINES,
        default="docker",
        help="container engine the workflow runs with (default: docker)",
    )
    m.add_argument(
        "--stage-dir",
        type=Path,
        required=True,
        help="the workflow's containers directory (snapshots are staged here)",
    )
    add_cache_dir(m)
    m.add_argument("--force", action="store_true", help="re-fetch / re-load even when cached")
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
        help="docker/podman only: stage OCI layouts (default) or gzipped docker-archive .img "
        "files named the way WfExS-backend stages them, so its own deploy can load them",
    )
    m.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .legacy import _materialize

    return _materialize(args)

"""``wfexs-like export`` and ``wfexs-like import``: carry cached images to an air-gapped machine."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from . import SUMMARIES
from ._common import UsageError, add_cache_dir, new_parser

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_RECORD_SUFFIXES = (".yaml", ".yml")


def size_arg(text: str) -> int:
    """``20G``, ``512M``, ``1T`` or plain bytes (binary units: what ``du`` and ``df -h`` print)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if m is None:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use a number with K, M, G or T, e.g. 20G")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    e = new_parser(
        sub,
        "export",
        parents,
        help=SUMMARIES["export"],
        description="Write the cached images of a containers YAML, or of TAGs, to one tar for a\n"
        "machine with no network: one OCI image layout holding every image (shared layers once),\n"
        "the SIFs and records, and a SHA256SUMS list. Never uses the network: every TAG must\n"
        "be in the cache already.",
        example_lines=[
            "wfexs-like export containers.yaml -o bundle.tar",
            "wfexs-like export busybox:1.36 ubuntu:24.04 -o bundle.tar",
            "wfexs-like export --engine singularity docker://busybox:1.36 -o sifs.tar",
        ],
    )
    e.add_argument(
        "items",
        nargs="+",
        metavar="CONTAINERS_YAML|TAG",
        help="one containers YAML written by 'materialize' (a .yaml/.yml file), or tags",
    )
    e.add_argument(
        "-o", "--output", type=Path, required=True, metavar="BUNDLE.tar", help="the bundle to write"
    )
    add_cache_dir(e)
    e.add_argument(
        "--engine",
        choices=("docker", "podman", "singularity"),
        default=None,
        help="export only what this engine needs (default: everything cached for each tag)",
    )
    e.add_argument(
        "--platform",
        default=None,
        help="export only cache entries of this os/arch[/variant] (default: every platform cached)",
    )
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.set_defaults(run=run_export)

    i = new_parser(
        sub,
        "import",
        parents,
        help=SUMMARIES["import"],
        description="Check every member of a bundle written by 'export' (names, types, sizes, every\n"
        "digest), and only then publish its images into the cache, so that 'materialize --offline'\n"
        "of the same tags works here with identical digests. A refused bundle leaves the cache\n"
        "untouched.",
        example_lines=[
            "wfexs-like import bundle.tar",
            "wfexs-like import --cache-dir /shared/cache --records-out containers.yaml bundle.tar",
        ],
    )
    i.add_argument("bundle", type=Path, metavar="BUNDLE.tar", help="a bundle written by 'wfexs-like export'")
    add_cache_dir(i)
    i.add_argument(
        "--records-out",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the containers YAML the bundle carries here",
    )
    i.add_argument(
        "--max-member-size",
        type=size_arg,
        default=None,
        metavar="SIZE",
        help="refuse a member larger than this (default: 64G)",
    )
    i.add_argument(
        "--max-total-size",
        type=size_arg,
        default=None,
        metavar="SIZE",
        help="refuse a bundle holding more than this in total (default: 1T)",
    )
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(run=run_import)


def _split_items(items: list[str]) -> Path | list[str]:
    """One containers YAML, or tags; never both (a bundle carries one records file)."""
    records = [s for s in items if s.lower().endswith(_RECORD_SUFFIXES)]
    if not records:
        return items
    if len(items) > 1:
        raise UsageError(
            "give either one containers YAML or tags, not both (" + ", ".join(items) + "); "
            "export them into separate bundles"
        )
    path = Path(records[0])
    if not path.is_file():
        raise UsageError(f"containers YAML {path} does not exist")
    return path


def _emit(args: argparse.Namespace, data: dict[str, Any], line: str) -> None:
    if args.json:
        import json

        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        print(line)


def run_export(args: argparse.Namespace) -> int:
    from ..cache.bundle_export import export_bundle
    from ..errors import ContainerFactoryException
    from ..fsutil import human_bytes
    from ..images.manifest import Platform

    containers = _split_items(args.items)
    try:
        platform = Platform.parse(args.platform) if args.platform else None
    except ContainerFactoryException as e:
        raise UsageError(str(e)) from e
    s = export_bundle(args.cache_dir, containers, args.output, engine=args.engine, platform=platform)
    extra = f", {s.records} record(s)" if s.records else ""
    _emit(
        args,
        s.to_json(),
        f"exported {len(s.references)} reference(s): {s.images} image(s), {s.snapshots} snapshot(s), "
        f"{s.blobs} blob(s){extra}, {human_bytes(s.bytes)} to {s.path}\nsha256 of the bundle: {s.digest}",
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..cache.bundle import ImportLimits
    from ..cache.bundle_import import import_bundle
    from ..fsutil import human_bytes

    defaults = ImportLimits()
    limits = ImportLimits(
        max_member_bytes=args.max_member_size or defaults.max_member_bytes,
        max_total_bytes=args.max_total_size or defaults.max_total_bytes,
    )
    s = import_bundle(args.bundle, args.cache_dir, limits=limits, records_out=args.records_out)
    records = f"; {s.records} record(s) written to {args.records_out}" if args.records_out else ""
    _emit(
        args,
        s.to_json(),
        f"imported {len(s.references)} reference(s): {s.images} image(s), {s.snapshots} snapshot(s), "
        f"{s.blobs} blob(s) ({s.new_blobs} new), {human_bytes(s.bytes)} into {s.cache_dir}{records}\n"
        f"sha256 of the bundle: {s.digest}",
    )
    return 0

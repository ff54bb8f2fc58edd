"""``wfexs-like scan``: list the containers a workflow needs, without running any of it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import SUMMARIES
from ._common import EXIT_OK, new_parser

if TYPE_CHECKING:
    from ..workflows.base import ContainerRef

#: The engines a workflow can be scanned for (``none`` makes no sense here: nothing would run).
SCAN_ENGINES = ("docker", "podman", "singularity")


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    s = new_parser(
        sub,
        "scan",
        parents,
        help=SUMMARIES["scan"],
        description="Read workflow files (never running them) and report every container reference: "
        "file, line, the text as written, the tag it resolves to, its kind and how sure the scan "
        "is (exact, candidate, dynamic). A directory is walked for Snakefile, *.smk, *.nf, "
        "nextflow.config, *.cwl, *.wdl and Galaxy tool *.xml files. References that cannot be "
        "resolved to a pullable tag are always reported (on stderr with --format tags).",
        example_lines=[
            "wfexs-like scan workflow.cwl",
            "wfexs-like scan --format tags pipeline/ | wfexs-like materialize --stage-dir containers -f -",
            "wfexs-like scan --engine singularity --profile test --params-file params.yaml main.nf",
            "wfexs-like scan --format json tools/*.xml",
        ],
    )
    s.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="workflow files or directories")
    s.add_argument(
        "--engine",
        choices=SCAN_ENGINES,
        default="docker",
        help="engine the workflow will run with: picks nf-core's engine branch, the registry prefix "
        "and a Galaxy tool's container type (default: docker)",
    )
    s.add_argument(
        "--params-file",
        type=Path,
        default=None,
        metavar="FILE",
        help='YAML/JSON parameters (Nextflow params, WDL inputs such as {"wf.image": "..."}) '
        "used to resolve references that name them",
    )
    s.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="NAME",
        help="Nextflow config profile to apply (repeat, or comma-separate, for several)",
    )
    s.add_argument(
        "--format",
        choices=("yaml", "json", "tags"),
        default="yaml",
        help="yaml/json: every record; tags: one pullable tag per line, for materialize -f - (default: yaml)",
    )
    s.add_argument(
        "--nextflow-inspect",
        action="store_true",
        help="when a nextflow binary is on PATH, take Nextflow's images from 'nextflow inspect' instead "
        "of reading the sources",
    )
    s.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..workflows import is_pullable, scan_paths, tags
    from ..workflows.base import ScanOptions, read_params_file

    profiles = [p.strip() for value in args.profile for p in value.split(",") if p.strip()]
    options = ScanOptions(
        engine=args.engine,
        params=read_params_file(args.params_file) if args.params_file else {},
        profiles=profiles,
        nextflow_inspect=args.nextflow_inspect,
    )
    refs = scan_paths(args.paths, options)
    if args.format == "tags":
        for tag in tags(refs):
            print(tag)
        left = [r for r in refs if not is_pullable(r)]
        if left:  # even with --quiet: a silently shorter list would be a wrong answer
            _warn_unresolved(left)
    elif args.format == "json":
        import json

        print(json.dumps([r.to_dict() for r in refs], indent=2))
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump([r.to_dict() for r in refs], sort_keys=False, allow_unicode=True))
    return EXIT_OK


def _warn_unresolved(refs: list[ContainerRef]) -> None:
    from .text import clean

    print(
        f"wfexs-like: warning: {len(refs)} reference(s) not listed (not pullable, or not resolved):",
        file=sys.stderr,
    )
    for r in refs:
        what = f"{r.kind}, {r.confidence}" + (f": {r.note}" if r.note else "")
        print(clean(f"  {r.file}:{r.line}: {r.raw} ({what})"), file=sys.stderr)

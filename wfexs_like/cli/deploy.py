"""``wfexs-like deploy``: make every record of a containers file runnable by the engine, as a table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import SUMMARIES
from ._common import ENGINES, UsageError, add_cache_dir, new_parser


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    d = new_parser(
        sub,
        "deploy",
        parents,
        help=SUMMARIES["deploy"],
        description="Read a containers file written by 'materialize' and make every container "
        "available to the engine: loaded when the engine lacks that image id, present when it has "
        "it, converted (a Docker record becomes a SIF for singularity), skipped (a record of another "
        "kind). Each snapshot is verified against its record first.\n"
        "Without --stage-dir the snapshots are looked for where 'materialize -o' noted they were "
        "staged.\n\n"
        "exit status: 0 done, 1 a record failed (each is named with its reason), 2 usage",
        example_lines=[
            "wfexs-like deploy wf/containers.yaml",
            "wfexs-like deploy --engine podman --stage-dir /copy/of/wf/containers wf/containers.yaml",
            "wfexs-like deploy --engine singularity wf/containers.yaml   # Docker records become SIFs",
            "wfexs-like deploy --json wf/containers.yaml | jq -r '.[].state'",
        ],
    )
    d.add_argument("containers_file", type=Path, metavar="CONTAINERS_YAML")
    d.add_argument(
        "--engine",
        choices=ENGINES,
        default="docker",
        help="container engine the workflow runs with (default: docker)",
    )
    d.add_argument(
        "--stage-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the workflow's containers directory (default: the one noted in CONTAINERS_YAML)",
    )
    add_cache_dir(d)
    d.add_argument("--force", action="store_true", help="load again even when the engine has the image")
    d.add_argument(
        "--offline",
        action="store_true",
        help="never touch the network: a snapshot found rotten is an error naming the blob, "
        "not fetched again",
    )
    d.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")
    d.set_defaults(run=run)


_COLUMNS = (("STATE", "state"), ("TAG", "tag"), ("IMAGE", "tagged_name"), ("SIGNATURE", "signature"))


def _table(rows: list[dict[str, Any]]) -> str:
    from ._common import _shown

    cells = [[h for h, _ in _COLUMNS]] + [[_shown(str(r[k] or "-")) for _, k in _COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]) for row in cells]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from ..errors import ContainerNotFoundException, ProvenanceError
    from ..ops.deploy import deploy, stage_dir_for

    try:
        stage_dir = stage_dir_for(args.containers_file, args.stage_dir)
    except ProvenanceError as e:
        raise UsageError(str(e)) from None
    result = deploy(
        args.containers_file,
        engine=args.engine,
        stage_dir=stage_dir,
        cache_dir=args.cache_dir,
        force=args.force,
        offline=args.offline,
    )
    rows = [dataclasses.asdict(r) for r in result.rows]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif rows:
        sys.stdout.write(_table(rows))
    sys.stdout.flush()
    if not args.quiet:
        for row in result.rows:
            if row.state == "skipped":
                print(f"skipped {row.tag}: {row.reason}", file=sys.stderr)
        counts = ", ".join(f"{n} {state}" for state, n in result.counts().items() if n or state != "failed")
        print(f"{counts} (stage dir {result.stage_dir})", file=sys.stderr)
    if result.failures:
        raise ContainerNotFoundException.for_failures("deploy", result.failures)
    return 0

"""``wfexs-like deploy``: load staged snapshots into the engine (only what it lacks)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import ENGINES, add_cache_dir, new_parser


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    d = new_parser(
        sub,
        "deploy",
        parents,
        help="load staged snapshots into the engine (only what it lacks)",
        description="Read a containers YAML written by 'materialize' and make every "
        "container available to the engine, verifying each snapshot first.",
        example_lines=["wfexs-like deploy --stage-dir containers containers.yaml"],
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
        required=True,
        help="the workflow's containers directory (snapshots are staged here)",
    )
    add_cache_dir(d)
    d.add_argument("--force", action="store_true", help="re-load even when the engine has the image")
    d.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .legacy import _deploy

    return _deploy(args)

"""``wfexs-like provenance show | convert | rocrate``: read any container records, write them another way.

Records come as our YAML, as WfExS-backend's (a ``meta/stage-state.yaml`` or
its bare records) or as an RO-Crate; ``show`` lists them, ``convert``
rewrites them in either YAML style, ``rocrate`` describes them as a Workflow
Run Crate. The work is in ``wfexs_like.ops.provenance``; this module parses
and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import SUMMARIES
from ._common import UsageError, new_parser

_STYLES = ("wfexs-like", "wfexs")


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = new_parser(
        sub,
        "provenance",
        parents,
        help=SUMMARIES["provenance"],
        description="Read container records in any form this tool knows (its own YAML, "
        "WfExS-backend's stage state or records, an RO-Crate) and show, convert or export them.",
        example_lines=[
            "wfexs-like provenance show containers.yaml",
            "wfexs-like provenance convert wd/meta/stage-state.yaml -o containers.yaml",
            "wfexs-like provenance rocrate containers/containers.yaml -o crate",
        ],
    )
    verbs = p.add_subparsers(dest="provenance_command", required=True, metavar="SUBCOMMAND")

    show = new_parser(
        verbs,
        "show",
        parents,
        help="list the records of a file: tag, type, digest, platform, path, signature",
        description="List the container records in FILE: our YAML, a WfExS-backend stage state "
        "or records, or an RO-Crate (its directory or its ro-crate-metadata.json).",
        example_lines=[
            "wfexs-like provenance show containers.yaml",
            "wfexs-like provenance show --json wd/meta/stage-state.yaml | jq '.containers[].fingerprint'",
            "wfexs-like provenance show crate/",
        ],
    )
    show.add_argument("file", type=Path, metavar="FILE", help="records file, or RO-Crate directory")
    show.add_argument(
        "--json", action="store_true", help="print JSON (every field of every record) instead of a table"
    )
    show.set_defaults(run=_run_show)

    convert = new_parser(
        verbs,
        "convert",
        parents,
        help="rewrite records as ours (default) or WfExS-backend's",
        description="Read the container records in FILE (any form 'show' reads) and write them "
        "in our YAML format, or in WfExS-backend's marshalled form with --to wfexs.",
        example_lines=[
            "wfexs-like provenance convert wd/meta/stage-state.yaml -o containers.yaml",
            "wfexs-like provenance convert containers.yaml --to wfexs -o -",
            "wfexs-like provenance convert crate/ -o containers.yaml",
        ],
    )
    convert.add_argument("file", type=Path, metavar="FILE", help="records file, or RO-Crate directory")
    convert.add_argument(
        "-o",
        "--output",
        default="-",
        metavar="OUT",
        help="write here, replacing it atomically; '-' (the default) is stdout",
    )
    convert.add_argument(
        "--to",
        choices=_STYLES,
        default="wfexs-like",
        help="record style to write: ours (plain safe YAML, the default) or WfExS-backend's",
    )
    convert.add_argument(
        "--containers-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="make absolute paths under DIR relative to it, so the records travel with that dir",
    )
    convert.set_defaults(run=_run_convert)

    crate = new_parser(
        verbs,
        "rocrate",
        parents,
        help="describe records as a Workflow Run Crate (RO-Crate) directory",
        description="Write DIR/ro-crate-metadata.json: every record as a Workflow Run Crate 0.5 "
        "ContainerImage (registry, name, tag, sha256 of the pinned manifest), every staged SIF as "
        "a File with its size and sha256. 'materialize --from-crate DIR' fetches the same digests.",
        example_lines=[
            "wfexs-like provenance rocrate containers/containers.yaml -o crate",
            "wfexs-like provenance rocrate records.yaml --stage-dir wd/containers -o crate",
        ],
    )
    crate.add_argument("records", type=Path, metavar="CONTAINERS_YAML", help="records file (any form)")
    crate.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIR", help="crate directory (created if needed)"
    )
    crate.add_argument(
        "--stage-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="containers dir the records' paths are relative to (default: CONTAINERS_YAML's dir)",
    )
    crate.add_argument(
        "--date-published",
        default=None,
        metavar="ISO8601",
        help="the crate's datePublished (default: $SOURCE_DATE_EPOCH, else when the records were written)",
    )
    crate.add_argument(
        "--name", default=None, help="the crate's name (default: 'Container images of CONTAINERS_YAML')"
    )
    crate.set_defaults(run=_run_rocrate)


def _source_label(source: str) -> str:
    return {"wfexs-like": "wfexs-like records", "wfexs": "WfExS-backend records", "ro-crate": "an RO-Crate"}[
        source
    ]


def _run_show(args: argparse.Namespace) -> int:
    import json
    import sys

    from ..ops.provenance import load_records, record_rows, records_json
    from .text import clean, short_digest

    loaded = load_records(args.file)
    if args.json:
        json.dump(records_json(loaded), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    headers = ("TAG", "TYPE", "DIGEST", "PLATFORM", "LOCAL PATH", "SIGNATURE")
    table = [headers]
    for row in record_rows(loaded.containers):
        kind = row.type if row.source_type in (None, row.type) else f"{row.type} (from {row.source_type})"
        digest = short_digest(row.digest) if row.digest else (row.fingerprint or "-")
        table.append(
            tuple(
                clean(cell)
                for cell in (
                    row.tag,
                    kind,
                    digest,
                    row.platform or "-",
                    row.local_path or "-",
                    short_digest(_hex_form(row.signature)),
                )
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    for r in table:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    if not args.quiet:
        print(
            f"{len(loaded.containers)} record(s) in {args.file} ({_source_label(loaded.source)})",
            file=sys.stderr,
        )
    return 0


def _hex_form(digest: str | None) -> str | None:
    """WfExS-backend's ``sha256=<base64>`` as ``sha256:<hex>``, so every row reads the same way."""
    from ..digests import normalize_fingerprint
    from ..errors import IntegrityError

    if not digest:
        return digest
    try:
        return normalize_fingerprint(digest)
    except IntegrityError:
        return digest


def _run_convert(args: argparse.Namespace) -> int:
    import sys

    from ..ops.provenance import convert_records

    dest = None if args.output == "-" else Path(args.output)
    if dest is not None:
        _check_output_file(dest)
    text = convert_records(args.file, dest, style=args.to, containers_dir=args.containers_dir)
    if dest is None:
        sys.stdout.write(text)
    elif not args.quiet:
        print(f"wrote {dest} ({args.to} records)", file=sys.stderr)
    return 0


def _run_rocrate(args: argparse.Namespace) -> int:
    import sys

    from ..ops.provenance import crate_from_records

    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"-o {args.output}: exists and is not a directory; the crate is a directory")
    if args.stage_dir is not None and not args.stage_dir.is_dir():
        raise UsageError(f"--stage-dir {args.stage_dir}: no such directory")
    path, containers = crate_from_records(
        args.records,
        args.output,
        stage_dir=args.stage_dir,
        date_published=args.date_published,
        name=args.name,
    )
    print(path)
    if not args.quiet:
        print(f"described {len(containers)} container record(s) in {path}", file=sys.stderr)
    return 0


def _check_output_file(dest: Path) -> None:
    """Refuse an output that cannot be written before reading anything (a typo costs nothing)."""
    if dest.is_dir():
        raise UsageError(f"-o {dest}: is a directory; give a file name, or '-' for stdout")
    if not dest.parent.is_dir():
        raise UsageError(f"-o {dest}: directory {dest.parent} does not exist")

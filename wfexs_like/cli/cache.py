"""``wfexs-like cache``: list, size, inspect, verify and clean the cache (the library does the work)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import SUMMARIES
from ._common import EXIT_FAILURE, EXIT_OK, UsageError, add_cache_dir, new_parser

#: The kinds ``--kind`` accepts: ``wfexs_like.cache.ENTRY_KINDS``, named here so parsing imports nothing.
KINDS = ("image", "oci-layout", "sif", "docker-archive")

_SIZE_NOTE = (
    "SIZE counts every blob an entry references, so a blob shared by several images counts once per image; "
    "`wfexs-like cache du` gives what the disk holds."
)


# -- parsing and formatting (pure: no library import) --------------------------------------------------
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_POWERS = " kmgtp"


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``1w2d``, ``45s`` -> seconds."""
    t = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", t)
    if not t or not parts or "".join(n + u for n, u in parts) != t:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: a number and a unit (s, m, h, d, w), e.g. 30d, 12h, 1w2d"
        )
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_size(text: str) -> int:
    """``20G`` / ``20GB`` (powers of 1000, as sizes are shown), ``20GiB`` (powers of 1024), or bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?\s*", text.lower())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: a number and an optional unit, e.g. 20G, 500M, 1.5T "
            "(powers of 1000, as sizes are shown) or 20GiB (powers of 1024)"
        )
    number, unit, binary = m.groups()
    power = _SIZE_POWERS.index(unit) if unit else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    delta = max(0.0, (time.time() if now is None else now) - ts)
    for limit, div, unit in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "h"), (float("inf"), 86400, "d")):
        if delta < limit:
            return f"{int(delta // div)} {unit} ago"
    return "long ago"


def count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; cells are cleaned of control characters."""
    from .text import clean

    rows = [[clean(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


# -- parsers -----------------------------------------------------------------------------------------------
def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    c = new_parser(
        sub,
        "cache",
        parents,
        help=SUMMARIES["cache"],
        description=(
            "Manage the shared cache: what it holds (ls, du, inspect), whether it is intact (verify), and\n"
            "removing what is no longer needed (rm, prune, gc). Nothing a running materialize holds is\n"
            "ever removed."
        ),
        example_lines=[
            "wfexs-like cache ls",
            "wfexs-like cache verify --repair",
            "wfexs-like cache prune --older-than 30d --dry-run",
            "wfexs-like cache SUBCOMMAND --help",
        ],
    )
    csub = c.add_subparsers(dest="cache_command", required=True, metavar="SUBCOMMAND")

    ls = new_parser(
        csub,
        "ls",
        parents,
        help="list the cache's entries",
        description=(
            "One row per entry: an image (its manifest, config and layers in the blob store) or a\n"
            "snapshot of one kind (oci-layout, sif, docker-archive) of a reference. SIZE counts every\n"
            "blob an entry references, so a blob shared by several images counts once per image;\n"
            "`wfexs-like cache du` gives what the disk holds.\n"
            "\n"
            "exit status: 0 done, 2 usage"
        ),
        example_lines=[
            "wfexs-like cache ls",
            "wfexs-like cache ls --kind sif",
            "wfexs-like cache ls --json | jq .",
        ],
    )
    add_cache_dir(ls)
    ls.add_argument("--kind", choices=KINDS, action="append", help="only entries of this kind (repeatable)")
    _json_flag(ls)
    ls.set_defaults(run=run_ls, reports=False)

    du = new_parser(
        csub,
        "du",
        parents,
        help="how much space the cache takes, and what for",
        description=(
            "Totals of the cache dir, every file counted once: blobs, what snapshots add to them, partial\n"
            "downloads, temporary files, quarantined blobs and records; the blobs each kind of entry\n"
            "references; blobs shared by several images, used by one, or by none (gc removes those).\n"
            "\n"
            "exit status: 0 done, 2 usage"
        ),
        example_lines=["wfexs-like cache du", "wfexs-like cache du --json"],
    )
    add_cache_dir(du)
    _json_flag(du)
    du.set_defaults(run=run_du)

    ins = new_parser(
        csub,
        "inspect",
        parents,
        help="everything the cache knows about one reference",
        description=(
            "Resolution, entries of every kind and platform, their metadata, blobs (size, shared with\n"
            "which other images, unchanged since verified), stage dirs and whether a running process\n"
            "holds it. REF is a tag as written or canonical, or a manifest digest or fingerprint (or a\n"
            "prefix of 12+ hex digits).\n"
            "\n"
            "exit status: 0 done, 1 nothing matches REF, 2 usage"
        ),
        example_lines=[
            "wfexs-like cache inspect busybox:1.36",
            "wfexs-like cache inspect sha256:955f8215af56",
            "wfexs-like cache inspect --json docker.io/library/busybox:1.36",
        ],
    )
    add_cache_dir(ins)
    ins.add_argument("ref", metavar="REF")
    _json_flag(ins)
    ins.set_defaults(run=run_inspect)

    ver = new_parser(
        csub,
        "verify",
        parents,
        help="check every blob and entry; name the bad blobs and the images they break",
        description=(
            "Without --full, a blob is re-hashed only if it changed since it was last hashed (inode,\n"
            "size, mtime or ctime: bytes edited with their mtime restored are caught); --full re-hashes\n"
            "everything. A bad blob is moved aside at once. --repair re-fetches the images that need a\n"
            "bad or missing blob from their registry (by pinned digest) and fixes the cached snapshots;\n"
            "with --offline, or when no registry can restore it, the entries that need it are removed\n"
            "instead.\n"
            "\n"
            "exit status: 0 intact (or all repaired), 1 problems remain, 2 usage, 130 interrupted"
        ),
        example_lines=[
            "wfexs-like cache verify",
            "wfexs-like cache verify --full --jobs 2",
            "wfexs-like cache verify --repair",
            "wfexs-like cache verify --repair --offline",
        ],
    )
    add_cache_dir(ver)
    ver.add_argument("--full", action="store_true", help="re-hash every blob, not only the changed ones")
    ver.add_argument(
        "--repair", action="store_true", help="re-fetch (online) or remove (offline) what is bad"
    )
    ver.add_argument("--offline", action="store_true", help="with --repair: never touch the network")
    ver.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="hash N blobs at a time (default: one per core, <= 8)",
    )
    ver.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="with --repair: talk plain HTTP to this registry (loopback registries always are)",
    )
    _json_flag(ver)
    ver.set_defaults(run=run_verify)

    rm = new_parser(
        csub,
        "rm",
        parents,
        help="remove the entries of references",
        description=(
            "Removes every entry of each REF (all kinds and platforms unless --kind/--platform narrow\n"
            "it), the snapshots no other entry names, and the blobs no remaining entry references\n"
            "(--keep-blobs leaves those for gc). An entry a running process holds is not removed (exit\n"
            "1). REF is a tag as written or canonical, or a digest (prefix of 12+ hex digits).\n"
            "\n"
            "exit status: 0 done, 1 a REF matched nothing or is in use, 2 usage"
        ),
        example_lines=[
            "wfexs-like cache rm busybox:1.36",
            "wfexs-like cache rm --kind sif quay.io/biocontainers/samtools:1.15--h1170115_1",
            "wfexs-like cache rm --platform linux/arm64 ubuntu:24.04 --dry-run",
        ],
    )
    add_cache_dir(rm)
    rm.add_argument("refs", nargs="+", metavar="REF")
    rm.add_argument("--kind", choices=KINDS, action="append", help="only entries of this kind (repeatable)")
    rm.add_argument(
        "--platform", default=None, help="only this platform (amd64, linux/arm64, linux/arm64/v8)"
    )
    rm.add_argument("--keep-blobs", action="store_true", help="leave freed blobs for `cache gc`")
    rm.add_argument("--dry-run", action="store_true", help="print what would be removed; change nothing")
    _json_flag(rm)
    rm.set_defaults(run=run_rm)

    pr = new_parser(
        csub,
        "prune",
        parents,
        help="remove least recently used entries by age, size or use",
        description=(
            "--older-than and --unused select entries (an entry must pass every one given); without\n"
            "--max-size all of them are removed, with it they are removed least recently used first until\n"
            "the blobs the remaining entries reference total at most SIZE (alone, --max-size considers\n"
            "every entry). An entry is used when it is staged (every re-stage records it, once a minute\n"
            "at most) or resolved. --unused selects entries not staged in any stage dir that still holds\n"
            "them: every stage dir it was staged into was since deleted or re-staged with another image\n"
            "(an image entry is unused when every snapshot made from it is). Never removes an entry a\n"
            "running process holds, nor a blob a kept entry references. --dry-run prints exactly what\n"
            "would be removed and freed, and changes nothing.\n"
            "\n"
            "exit status: 0 done (entries in use are reported and kept), 2 usage"
        ),
        example_lines=[
            "wfexs-like cache prune --older-than 30d --dry-run",
            "wfexs-like cache prune --max-size 20G",
            "wfexs-like cache prune --unused --older-than 7d",
        ],
    )
    add_cache_dir(pr)
    pr.add_argument(
        "--older-than",
        type=parse_duration,
        metavar="DURATION",
        help="not used for this long (30d, 12h, 1w2d)",
    )
    pr.add_argument(
        "--max-size",
        type=parse_size,
        metavar="SIZE",
        help="shrink to at most this much (20G = 20 GB as sizes are shown, 500M; 20GiB = 20 x 2^30)",
    )
    pr.add_argument("--unused", action="store_true", help="not staged in any stage dir that still holds it")
    pr.add_argument(
        "--dry-run", action="store_true", help="print what would be removed and freed; change nothing"
    )
    _json_flag(pr)
    pr.set_defaults(run=run_prune)

    g = new_parser(
        csub,
        "gc",
        parents,
        help="remove unreferenced blobs, stale temporary/partial files, abandoned build dirs, stale locks",
        description=(
            "Safe alongside running materializes: removes blobs no entry references and snapshots no\n"
            "entry names, partial downloads and temporary files nobody is writing, work dirs (tmp/sif-*,\n"
            "tmp/factory-*...) no live process owns, all older than --min-age; plus quarantined blobs,\n"
            "records of what is gone, and lock files nobody holds.\n"
            "\n"
            "exit status: 0 done, 2 usage"
        ),
        example_lines=[
            "wfexs-like cache gc --dry-run",
            "wfexs-like cache gc",
            "wfexs-like cache gc --min-age 10m",
        ],
    )
    add_cache_dir(g)
    g.add_argument(
        "--min-age",
        type=parse_duration,
        default=3600.0,
        metavar="DURATION",
        help="spare what changed more recently than this (default: 1h)",
    )
    g.add_argument("--dry-run", action="store_true", help="print what would be removed; change nothing")
    _json_flag(g)
    g.set_defaults(run=run_gc)


# -- runners -----------------------------------------------------------------------------------------------
def _open(args: argparse.Namespace) -> Any:
    """The cache ``--cache-dir`` names, or None when there is none yet (nothing is created then)."""
    from ..cache.snapshots import ImageCache

    dirs = _dirs(args)
    return ImageCache(dirs.root) if dirs is not None else None


def _dirs(args: argparse.Namespace) -> Any:
    """``_open`` for a verb that only reads the cache's files (``ls``): its directories, named
    without loading the code that writes under them."""
    from ..cache.names import CacheDirs
    from ..cache.paths import default_cache_dir

    root = Path(args.cache_dir or default_cache_dir())
    return CacheDirs(root) if root.is_dir() else None


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _note(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def run_ls(args: argparse.Namespace) -> int:
    from ..cache.inventory import scan_entries  # not ``..cache``: ls needs none of the other verbs
    from ..fsutil import human_bytes
    from .text import short_digest

    cache = _dirs(args)
    found = scan_entries(cache, keep_summary=True) if cache else []
    entries = [e for e in found if not args.kind or e.kind in args.kind]
    if args.json:
        _print_json([e.to_json() for e in entries])
        return EXIT_OK
    now = time.time()
    rows = [
        [
            e.reference or f"(unreadable {e.record.name})",
            e.image_platform or e.platform or "-",
            e.kind,
            short_digest(e.digest),
            human_bytes(e.size),
            ago(e.last_used, now),
        ]
        for e in entries
    ]
    print(table(["REFERENCE", "PLATFORM", "KIND", "DIGEST", "SIZE", "LAST USED"], rows))
    _note(args, f"{count(len(entries), 'entry', 'entries')}. {_SIZE_NOTE}")
    return EXIT_OK


def run_du(args: argparse.Namespace) -> int:
    from ..cache import disk_usage
    from ..fsutil import human_bytes

    cache = _open(args)
    if cache is None:
        if args.json:
            _print_json(None)
        else:
            print(f"no cache at {args.cache_dir or 'the default location'} yet")
        return EXIT_OK
    du = disk_usage(cache)
    if args.json:
        _print_json(du.to_json())
        return EXIT_OK
    print(f"cache {du.root}")
    areas = [
        ("blobs", du.blobs, "layers, configs, manifests, SIFs, archives"),
        ("snapshots", du.snapshots, "beyond their blobs: layout indexes, sidecars"),
        ("partials", du.partials, "partial downloads, kept for resume"),
        ("temporary", du.temporary, "work dirs and temporary files"),
        ("quarantined", du.quarantined, "corrupt blobs moved aside"),
        ("records", du.records, "tags, refs, trust, usage, locks"),
    ]
    rows = [[name, str(t.files), human_bytes(t.bytes), what] for name, t, what in areas]
    rows.append(["total", "", human_bytes(du.total), ""])
    print(table(["AREA", "FILES", "SIZE", "WHAT"], rows))
    print()
    kind_rows = [
        [k, str(du.entries.get(k, 0)), str(t.files), human_bytes(t.bytes)] for k, t in du.per_kind.items()
    ]
    print(table(["KIND", "ENTRIES", "BLOBS", "SIZE"], kind_rows))
    print()
    share_rows = [
        ["shared (several images)", str(du.shared.files), human_bytes(du.shared.bytes)],
        ["unique (one image)", str(du.unique.files), human_bytes(du.unique.bytes)],
        ["unreferenced (gc removes)", str(du.unreferenced.files), human_bytes(du.unreferenced.bytes)],
    ]
    print(table(["BLOBS", "COUNT", "SIZE"], share_rows))
    _note(args, "Sizes are apparent sizes; a kind's SIZE counts each blob its entries reference once.")
    return EXIT_OK


def run_inspect(args: argparse.Namespace) -> int:
    from ..cache import inspect_entries
    from ..errors import CacheError
    from ..fsutil import human_bytes

    cache = _open(args)
    if cache is None:
        raise CacheError(f"nothing in the cache matches {args.ref!r}: there is no cache yet")
    info = inspect_entries(cache, args.ref)
    if args.json:
        _print_json(info.to_json())
        return EXIT_OK
    now = time.time()
    print(f"{args.ref}: {', '.join(info.references)}")
    print(f"  in use by a running process: {'yes' if info.in_use else 'no'}")
    for d in info.entries:
        e = d.entry
        print()
        print(f"{e.kind}  {e.reference}  {e.image_platform or '-'}")
        fields = [
            ("requested platform", e.platform or "(host default)"),
            ("manifest digest", e.digest or "-"),
            ("fingerprint", e.fingerprint or "-"),
            ("record", str(e.record)),
            ("snapshot", str(e.snapshot) if e.snapshot else "-"),
            ("size", f"{human_bytes(e.size)} ({e.size} bytes)"),
            ("recorded", ago(e.created, now)),
            ("last used", ago(e.last_used, now)),
        ]
        for name, value in fields:
            print(f"  {name + ':':20} {value}")
        for p in e.problems:
            print(f"  problem: {p}")
        if d.metadata:
            meta = {k: v for k, v in d.metadata.items() if k not in ("layers", "manifests")}
            print("  metadata:")
            for k in sorted(meta):
                print(f"    {k}: {json.dumps(meta[k], sort_keys=True)}")
        print("  blobs:")
        for b in d.blobs:
            flags = ("" if b.in_store else " not-in-store") + (
                "" if b.unchanged else " changed-since-verified"
            )
            shared = f" shared with {', '.join(b.shared_with)}" if b.shared_with else ""
            print(f"    {b.digest}  {human_bytes(b.size)}{flags}{shared}")
        if d.staged:
            print("  staged:")
            for copy, present in d.staged:
                print(f"    {copy.path}{'' if present else '  (gone or re-staged)'}")
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    from ..cache.integrity import VerifyReport, verify_cache
    from ..fsutil import human_bytes

    if args.offline and not args.repair:
        raise UsageError("--offline only changes what --repair does; add --repair")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    cache = _open(args)
    if cache is None:
        if args.json:
            _print_json(VerifyReport(args.full, 0, 0, 0, (), ()).to_json())
        else:
            _note(args, "no cache yet: nothing to verify")
        return EXIT_OK
    report = verify_cache(
        cache,
        full=args.full,
        repair=args.repair,
        offline=args.offline,
        jobs=args.jobs,
        insecure_registries=args.insecure_registry,
    )
    if args.json:
        _print_json(report.to_json())
        return EXIT_OK if report.ok else EXIT_FAILURE
    actions = {
        "re-fetched": "re-fetched from its registry",
        "removed": "removed, with the entries that need it",
    }
    for b in report.bad_blobs:
        print(f"BAD {b.digest} ({human_bytes(b.size)}): {b.problem}")
        breaks = sorted({r for r, _k in b.breaks})
        for ref in breaks:
            kinds = ", ".join(k for r, k in b.breaks if r == ref)
            print(f"    breaks {ref} ({kinds})")
        if not breaks:
            print("    no entry needs it")
        for p in b.staged:
            print(f"    a staged copy still holds it: {p} (materialize again to refresh it)")
        if b.action:
            print(f"    -> {actions.get(b.action, b.action)}")
    for be in report.broken:
        e = be.entry
        head = {"repaired": "REPAIRED", "removed": "REMOVED"}.get(be.action or "", "BROKEN")
        reason = f": {be.reason}" if be.reason else ""
        print(f"{head} {e.reference} ({e.kind}, {e.image_platform or '-'}){reason}")
        if not be.action or args.verbose:
            for p in be.problems:
                print(f"    {p}")
    summary = (
        f"{report.blobs_checked} blobs checked, {report.blobs_hashed} hashed "
        f"({human_bytes(report.bytes_hashed)}); {len(report.bad_blobs)} bad, "
        f"{count(len(report.broken), 'broken entry', 'broken entries')}"
    )
    if report.ok:
        print(summary + ("; all repaired" if report.bad_blobs or report.broken else "; the cache is intact"))
        return EXIT_OK
    hint = "" if args.repair else "; `wfexs-like cache verify --repair` fixes them"
    print(summary + "; problems remain" + hint)
    return EXIT_FAILURE


def _print_removal(args: argparse.Namespace, report: Any, verb: str) -> None:
    from ..fsutil import human_bytes
    from .text import short_digest

    now = time.time()
    head = "would remove" if report.dry_run else verb
    if report.removed:
        print(f"{head}:")
        rows = [
            [
                e.reference,
                e.image_platform or e.platform or "-",
                e.kind,
                short_digest(e.digest),
                ago(e.last_used, now),
            ]
            for e in report.removed
        ]
        print(table(["REFERENCE", "PLATFORM", "KIND", "DIGEST", "LAST USED"], rows))
    if report.in_use:
        print("kept (in use by a running process):")
        for e in report.in_use:
            print(f"  {e.reference} ({e.kind})")
    if report.blobs and args.verbose:
        print("blobs:")
        for b in report.blobs:
            print(f"  {b.digest}  {human_bytes(b.size)}")
    freed = "would free" if report.dry_run else "freed"
    print(
        f"{count(len(report.removed), 'entry', 'entries')}; {freed} {human_bytes(report.freed_bytes)} "
        f"({count(len(report.blobs), 'blob')}, {human_bytes(report.blob_bytes)}; snapshots "
        f"{human_bytes(report.snapshot_bytes)})"
    )


def run_rm(args: argparse.Namespace) -> int:
    from ..cache import remove_references

    cache = _open(args)
    if cache is None:
        print(
            f"wfexs-like: nothing in the cache matches {', '.join(args.refs)}: there is no cache yet",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    report = remove_references(
        cache,
        args.refs,
        kinds=args.kind,
        platform=args.platform,
        dry_run=args.dry_run,
        keep_blobs=args.keep_blobs,
    )
    if args.json:
        _print_json(report.to_json())
    else:
        _print_removal(args, report, "removed")
    for q in report.unmatched:
        print(
            f"wfexs-like: nothing in the cache matches {q!r}; `wfexs-like cache ls` lists it", file=sys.stderr
        )
    for e in report.in_use:
        print(
            f"wfexs-like: {e.reference} ({e.kind}) is in use by a running process; not removed",
            file=sys.stderr,
        )
    return EXIT_FAILURE if report.unmatched or report.in_use else EXIT_OK


def run_prune(args: argparse.Namespace) -> int:
    from ..cache.lifecycle import RemovalReport, prune

    if args.older_than is None and args.max_size is None and not args.unused:
        raise UsageError("say what to prune: --older-than DURATION, --max-size SIZE and/or --unused")
    cache = _open(args)
    if cache is None:
        if args.json:
            _print_json(RemovalReport(args.dry_run, (), (), (), 0).to_json())
        else:
            _note(args, "no cache yet: nothing to prune")
        return EXIT_OK
    report = prune(
        cache, older_than=args.older_than, max_size=args.max_size, unused=args.unused, dry_run=args.dry_run
    )
    if args.json:
        _print_json(report.to_json())
    else:
        _print_removal(args, report, "removed")
    return EXIT_OK


def run_gc(args: argparse.Namespace) -> int:
    from ..cache.garbage import GcReport, collect_garbage
    from ..fsutil import human_bytes

    cache = _open(args)
    if cache is None:
        if args.json:
            _print_json(GcReport(args.dry_run, ()).to_json())
        else:
            _note(args, "no cache yet: nothing to collect")
        return EXIT_OK
    report = collect_garbage(cache, grace=args.min_age, dry_run=args.dry_run)
    if args.json:
        _print_json(report.to_json())
        return EXIT_OK
    head = "would remove" if report.dry_run else "removed"
    by_what: dict[str, list[Any]] = {}
    for item in report.removed:
        by_what.setdefault(item.what, []).append(item)
    for what, items in sorted(by_what.items()):
        print(f"{head} {what}: {len(items)}, {human_bytes(sum(i.size for i in items))}")
        if args.verbose:
            for i in items:
                print(f"  {i.path}")
    if report.spared and args.verbose:
        print("spared:")
        for i in report.spared:
            print(f"  {i.path} ({i.what})")
    freed = "would free" if report.dry_run else "freed"
    spared = count(len(report.spared), "recent or busy item")
    print(f"{freed} {human_bytes(report.freed_bytes)}; spared {spared}")
    return EXIT_OK

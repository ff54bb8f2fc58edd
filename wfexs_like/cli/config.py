"""``wfexs-like config show``: the settings in effect, and where each one came from."""

from __future__ import annotations

import argparse

from . import SUMMARIES
from ._common import new_parser


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    c = new_parser(
        sub,
        "config",
        parents,
        help=SUMMARIES["config"],
        description="Settings come from built-in defaults, then the TOML file (--config, "
        "$WFEXS_LIKE_CONFIG, or <XDG config home>/wfexs-like/config.toml), then the environment "
        "(WFEXS_LIKE_CACHE_DIR, WFEXS_LIKE_JOBS, WFEXS_LIKE_LIBRARY_DIRS, WFEXS_LIKE_REMOTE_CACHE), "
        "then each command's flags.\n\nThe file's keys: cache-dir, jobs, insecure-registries, "
        "library-dirs, remote-cache, registries-conf, and a [mirrors] table of\n"
        '"registry" = ["host:port", ...].',
        example_lines=[
            "wfexs-like config show",
            "wfexs-like --config site.toml config show --json",
        ],
    )
    verbs = c.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    show = new_parser(
        verbs,
        "show",
        parents,
        help="print every setting, its value and where it came from",
        description="Print every setting, its value and its source: default, config file <path>, "
        "environment <VAR>.",
        example_lines=["wfexs-like config show", "WFEXS_LIKE_JOBS=8 wfexs-like config show --json"],
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(run=run_show)


def _plain(value: object) -> object:
    from pathlib import Path

    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def run_show(args: argparse.Namespace) -> int:
    import json

    cfg = args.settings
    rows = [(key, _plain(value), source) for key, value, source in cfg.rows()]
    if args.json:
        data = {"file": str(cfg.path) if cfg.path else None}
        data["settings"] = {k: {"value": v, "source": src} for k, v, src in rows}
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    shown = [("SETTING", "VALUE", "FROM")]
    for key, value, source in rows:
        text = "(none)" if value in (None, [], {}) else value if isinstance(value, str) else json.dumps(value)
        shown.append((key, str(text), source))
    widths = [max(len(row[i]) for row in shown) for i in range(2)]
    for key, value, source in shown:
        print(f"{key:<{widths[0]}}  {value:<{widths[1]}}  {source}")
    return 0

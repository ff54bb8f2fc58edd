"""The settings a run uses: the configuration file, the environment, then the flags, in that order.

Applied once, after parsing and before the command runs, so every verb sees
the same cache dir, jobs, registries, mirrors and tiers, and ``config show``
can say where each came from. Flags keep their own names on ``args``; this
only fills in what a flag left unset (``None``) and merges the lists a site
and a user both contribute to (insecure registries, mirrors: flags first).
"""

from __future__ import annotations

import argparse

#: args attribute -> (config key, the flag that sets it)
_SCALARS = {
    "cache_dir": ("cache-dir", "--cache-dir"),
    "jobs": ("jobs", "--jobs"),
    "registries_conf": ("registries-conf", "--registries-conf"),
    "remote_cache": ("remote-cache", "--remote-cache"),
}


def apply(args: argparse.Namespace) -> None:
    """Load the configuration and fill ``args`` from it; ``args.settings`` keeps the ``Config``."""
    from ..config import load_config, merge_mirror_tables, parse_mirror_flags

    cfg = load_config(getattr(args, "config", None))
    for attr, (key, flag) in _SCALARS.items():
        # `jobs` is materialize's download pool; other verbs' --jobs (verify's hashing) keep theirs.
        if hasattr(args, attr) and (attr != "jobs" or args.command == "materialize"):
            cfg.override(key, getattr(args, attr), flag)
            setattr(args, attr, cfg[key])
    if hasattr(args, "insecure_registry"):
        given = list(args.insecure_registry)
        cfg.override("insecure-registries", given, "--insecure-registry")
        args.insecure_registry = list(dict.fromkeys([*given, *cfg["insecure-registries"]]))
    if hasattr(args, "library_dir"):
        cfg.override("library-dirs", list(args.library_dir), "--library-dir")
        args.library_dir = list(cfg["library-dirs"])
    if hasattr(args, "mirror"):
        flags = parse_mirror_flags(args.mirror)
        cfg.override("mirrors", flags, "--mirror")
        args.mirrors = merge_mirror_tables(flags, cfg["mirrors"])
    args.settings = cfg

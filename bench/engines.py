"""The benchmark's footprint in Docker and Podman: what it tags, and how it removes it.

Every image the benchmark pulls, builds or loads lives under a repository
containing ``/wfexs-bench/`` (``127.0.0.1:PORT/wfexs-bench/...``). That one
marker is what makes cleaning up safe on a daemon other people use: a sweep
removes exactly our tags and nothing else. Sweeping *before* a run matters
too — a tag left over by an interrupted run would keep the base layers in
the daemon and make a "cold" ``docker pull`` warm.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable

from .proc import CommandError, run

MARKER = "/wfexs-bench/"


_VERSION_FORMAT = {"docker": "{{.Server.Version}}", "podman": "{{.Version}}"}


def version(engine: str) -> str | None:
    """The engine's (server) version, or None when it is not installed or not answering."""
    if shutil.which(engine) is None:
        return None
    try:
        return run([engine, "version", "--format", _VERSION_FORMAT[engine]]).decode().strip()
    except CommandError:
        return None


def our_tags(engine: str) -> list[str]:
    """Every ``repo:tag`` in ``engine`` that belongs to the benchmark."""
    out = run([engine, "images", "--format", "{{.Repository}}:{{.Tag}}"]).decode()
    return [line for line in out.split() if MARKER in line]


def remove(engine: str, names: Iterable[str]) -> None:
    """``rmi -f`` the given tags; an image that is already gone is fine (that is the goal)."""
    names = list(names)
    if names:
        run([engine, "rmi", "-f", *names], check=False)


def sweep(engine: str) -> None:
    """Remove every benchmark tag from ``engine`` (no-op when the engine is absent)."""
    if shutil.which(engine) is None:
        return
    with contextlib.suppress(CommandError):  # engine down: nothing of ours can be in it either
        remove(engine, our_tags(engine))

"""What reached the registry during a step, read from its access log.

Counting on the server side measures every tool the same way — docker's
daemon, skopeo and wfexs-like report downloads differently or not at all —
and it is the only honest way to show "0 blob GETs" for a warm re-stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.support.registry import RunningRegistry

# Apache combined log: ... "GET /v2/... HTTP/1.1" 200 12345 "-" "ua"
_SIZE = re.compile(r'" \d{3} (\d+|-)')


@dataclass(frozen=True)
class Traffic:
    requests: int
    blob_gets: int
    blob_bytes: int


def mark(registry: RunningRegistry) -> int:
    """A position in the access log; take it *before* starting the clock (it waits on the registry)."""
    return registry.mark()


def since(registry: RunningRegistry, position: int) -> Traffic:
    """Requests logged after ``position``: all of them, blob GETs, and the bytes those GETs sent."""
    lines = registry.requests_since(position)
    blobs = [a for a in lines if a.method == "GET" and "/blobs/sha256:" in a.path]
    total = 0
    for a in blobs:
        m = _SIZE.search(a.raw)
        if m and m.group(1) != "-":
            total += int(m.group(1))
    return Traffic(requests=len(lines), blob_gets=len(blobs), blob_bytes=total)

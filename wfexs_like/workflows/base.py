"""What every scanner returns, and the bounds every scanner reads within.

A scanner reads a workflow's files and reports each container reference it
finds, never executing anything (no Groovy, no Python, no JavaScript). A
reference that cannot be resolved statically is still reported, as
``dynamic``, so a user sees what they must pin by hand instead of silently
getting fewer images than the workflow needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import UnsafeInputError
from ..safeyaml import read_bounded

#: What kind of thing a reference names: a pullable image, a SIF at a URL, an ORAS artifact, a local
#: file, something to build (Dockerfile), an image tarball to load, or a conda package (no image yet).
Kind = Literal["docker", "sif-url", "oras", "local", "build", "tarball", "conda"]
#: ``exact``: a literal the workflow will use as written; ``candidate``: derived by a rule that may
#: need a registry lookup to complete; ``dynamic``: depends on run-time values (params, wildcards).
Confidence = Literal["exact", "candidate", "dynamic"]

#: Larger than any real workflow file; a 50 MB "workflow" is refused before it is read.
MAX_FILE_BYTES = 8 << 20
#: Files one scan may open through includes/imports/run: references.
MAX_FILES = 2000
#: Include/import chains deeper than this are a cycle in disguise or a generated monster.
MAX_INCLUDE_DEPTH = 32


@dataclass(frozen=True)
class ContainerRef:
    """One container reference found in a workflow file."""

    file: str
    line: int
    raw: str
    tag: str | None
    kind: Kind
    confidence: Confidence
    #: the language whose scanner found it: cwl, nextflow, snakemake, wdl, galaxy
    language: str = ""
    #: why it is not pullable, which package a conda reference names, which param it waits for...
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ScanOptions:
    """What a scan resolves for: the engine decides nf-core's ternary and the registry prefix."""

    engine: str = "docker"
    params: dict[str, Any] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)
    nextflow_inspect: bool = False


def read_workflow_file(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A workflow file's text, refused quickly when it is too large to be one."""
    return read_bounded(path, max_bytes=max_bytes, what="workflow file")


class IncludeGuard:
    """Tracks the include/import chain of one scan: refuses cycles, depth and file-count blow-ups."""

    def __init__(self) -> None:
        self.opened = 0

    def enter(self, chain: tuple[Path, ...], path: Path) -> tuple[Path, ...]:
        """The chain extended by ``path``; raises ``UnsafeInputError`` on a cycle or a limit."""
        resolved = path.resolve()
        if resolved in chain:
            cycle = " -> ".join(str(p) for p in (*chain[chain.index(resolved) :], resolved))
            raise UnsafeInputError(f"include cycle: {cycle}; break the cycle and scan again")
        if len(chain) >= MAX_INCLUDE_DEPTH:
            raise UnsafeInputError(f"{path}: includes nested more than {MAX_INCLUDE_DEPTH} deep; refused")
        self.opened += 1
        if self.opened > MAX_FILES:
            raise UnsafeInputError(f"{path}: a scan opened more than {MAX_FILES} files; refused")
        return (*chain, resolved)

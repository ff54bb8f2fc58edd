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

from ..errors import ContainerFactoryException, UnsafeInputError
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

    def enter(self, chain: tuple[Path, ...], path: Path, *, new_file: bool = True) -> tuple[Path, ...]:
        """The chain extended by ``path``; raises ``UnsafeInputError`` on a cycle or a limit.

        ``new_file=False`` for a file this scan already read (a scanner's cache hit): its chain is
        still checked for cycles, but it does not count again against ``MAX_FILES``.
        """
        resolved = path.resolve()
        if resolved in chain:
            cycle = " -> ".join(str(p) for p in (*chain[chain.index(resolved) :], resolved))
            raise UnsafeInputError(f"include cycle: {cycle}; break the cycle and scan again")
        if len(chain) >= MAX_INCLUDE_DEPTH:
            raise UnsafeInputError(f"{path}: includes nested more than {MAX_INCLUDE_DEPTH} deep; refused")
        self.opened += int(new_file)
        if self.opened > MAX_FILES:
            raise UnsafeInputError(f"{path}: a scan opened more than {MAX_FILES} files; refused")
        return (*chain, resolved)


class WorkflowScanError(ContainerFactoryException, ValueError):
    """A workflow file the scanner cannot read: not a workflow it knows, broken syntax, a file it names
    that does not exist. The message names the file (and line) and what to fix."""


class MissingExtraError(ContainerFactoryException, ImportError):
    """A scanner needs a third-party parser that is an optional extra of this package."""


#: The kinds ``materialize`` can pull by tag.
PULLABLE_KINDS: frozenset[str] = frozenset({"docker", "sif-url", "oras"})


def require(module: str, language: str) -> Any:
    """The optional parser ``module``, or an error that says which extra provides it.

    The parsers are optional so that users of the container cache alone do not
    install three workflow toolchains; a scan is the first place that needs them.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"scanning {language} needs the Python package that provides '{module}', which is not "
            "installed; install the extra: pip install 'wfexs-like[workflows]'"
        ) from e


def classify_tag(tag: str) -> Kind:
    """What ``materialize`` would do with ``tag``: pull it, download a SIF, fetch ORAS, or read a file.

    ``library://`` and ``shub://`` count as ``sif-url``: both name a SIF that Apptainer fetches.
    """
    lower = tag.lower()
    if lower.startswith("docker://"):
        return "docker"
    if lower.startswith("oras://"):
        return "oras"
    if lower.startswith(("http://", "https://", "library://", "shub://")):
        return "sif-url"
    if lower.startswith(("docker-archive:", "oci-archive:")):
        return "tarball"
    if lower.startswith(("file:", "oci:", "/", "./", "../", "~")) or lower.endswith((".sif", ".simg")):
        return "local"
    return "docker"


def looks_dynamic(text: str) -> bool:
    """Whether a string still holds an expression a workflow engine would evaluate at run time."""
    return any(mark in text for mark in ("$(", "${", "~{"))


def read_params_file(path: Path) -> dict[str, Any]:
    """Parameters from a YAML or JSON file (``--params-file``): Nextflow params, WDL inputs.

    Read with the bounded safe loader: a params file comes from whoever wrote
    the workflow, so it is as untrusted as the workflow itself.
    """
    from ..safeyaml import load_bounded

    data = load_bounded(read_bounded(path, max_bytes=MAX_FILE_BYTES, what="params file"), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WorkflowScanError(
            f"params file {path}: expected a mapping of parameter names to values, "
            f"found a {type(data).__name__}"
        )
    return {str(k): v for k, v in data.items()}

"""Find every container a workflow needs, without running any of its code.

One module per language (``cwl``, ``wdl``, ``galaxy``, ``nextflow``,
``snakemake``), each exposing ``claims(path) -> bool`` and
``scan(path, options) -> list[ContainerRef]`` (and, when a language's files
refer to each other in a way that changes their meaning, ``scan_many(paths,
options)``). They are imported only when a file of theirs turns up, because
three of them need optional third-party parsers (``pip install
'wfexs-like[workflows]'``) and a scan of a Nextflow pipeline should not pay
for, or fail for want of, a CWL parser.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from ..progress import check_cancelled
from .base import PULLABLE_KINDS, ContainerRef, ScanOptions, WorkflowScanError

__all__ = ["ContainerRef", "ScanOptions", "is_pullable", "scan_paths", "tags"]

#: File names a directory walk hands to each language's ``claims`` (a Galaxy ``.xml`` is only
#: scanned when it is a tool, not a macros file or any other XML).
NAME_PATTERNS: dict[str, tuple[str, ...]] = {
    "cwl": ("*.cwl",),
    "wdl": ("*.wdl",),
    "galaxy": ("*.xml",),
    "nextflow": ("*.nf", "nextflow.config"),
    "snakemake": ("Snakefile", "*.smk"),
}
#: Directories a walk never enters: version control, caches, Nextflow/Snakemake run state.
_SKIP_DIRS = frozenset({"__pycache__", "node_modules"})


def scan_paths(paths: Sequence[Path], options: ScanOptions | None = None) -> list[ContainerRef]:
    """Every container reference in ``paths``: files are scanned as given, directories walked.

    A directory yields the files whose names a language scans (see
    ``NAME_PATTERNS``) and that the language claims; hidden directories are
    skipped. A file given explicitly that no language claims is an error, so
    a typo does not look like a workflow without containers. Results are
    de-duplicated by (file, line, tag) — for a record without a tag, by its
    raw text instead — and sorted by file and line.
    """
    options = options or ScanOptions()
    by_language: dict[str, list[Path]] = {}
    for path in paths:
        if path.is_dir():
            for lang, found in _walk(path):
                by_language.setdefault(lang, []).append(found)
        elif path.is_file():
            by_language.setdefault(_language_of(path), []).append(path)
        else:
            raise WorkflowScanError(f"{path}: no such file or directory; give a workflow file or directory")
    refs: list[ContainerRef] = []
    for lang, files in by_language.items():
        refs.extend(_scan_language(lang, _unique(files), options))
    return _dedupe_sorted(refs)


def tags(refs: Iterable[ContainerRef]) -> list[str]:
    """The unique tags ``materialize`` can pull, in the order of ``refs``.

    A reference counts when its kind is pullable (``docker``, ``sif-url``,
    ``oras``), it has a tag, and it is ``exact`` or ``candidate``: a candidate
    (a mulled-v2 name, an image id a tool expects) is still the best guess and
    a failed pull names it. ``dynamic`` references, local files, tarballs,
    Dockerfiles and conda packages are left out: they are for the user to
    resolve, and the ``scan`` command lists them on stderr.
    """
    out: dict[str, None] = {}
    for ref in refs:
        if is_pullable(ref):
            out.setdefault(ref.tag or "", None)
    return list(out)


def is_pullable(ref: ContainerRef) -> bool:
    """Whether ``tags`` includes ``ref``."""
    return bool(ref.tag) and ref.kind in PULLABLE_KINDS and ref.confidence != "dynamic"


def _language_of(path: Path) -> str:
    by_name = [lang for lang, pats in NAME_PATTERNS.items() if _matches(path.name, pats)]
    for lang in by_name:
        if _module(lang).claims(path):
            return lang
    if not by_name:
        # no telling name (a CWL file without .cwl, say): let each language sniff its content
        for lang in NAME_PATTERNS:
            if _module(lang).claims(path):
                return lang
    raise WorkflowScanError(
        f"{path}: not a workflow file this scanner reads (CWL *.cwl, WDL *.wdl, a Galaxy tool *.xml, "
        "Nextflow *.nf or nextflow.config, Snakemake Snakefile or *.smk)"
    )


def _walk(top: Path) -> Iterable[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(top):
        check_cancelled()
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(filenames):
            for lang, pats in NAME_PATTERNS.items():
                if _matches(name, pats):
                    path = Path(dirpath) / name
                    if _module(lang).claims(path):
                        yield lang, path
                    break


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _module(lang: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{lang}")


def _scan_language(lang: str, files: list[Path], options: ScanOptions) -> list[ContainerRef]:
    module = _module(lang)
    scan_many = getattr(module, "scan_many", None)
    if scan_many is not None:
        return list(scan_many(files, options))
    refs: list[ContainerRef] = []
    for f in files:
        check_cancelled()
        refs.extend(module.scan(f, options))
    return refs


def _unique(files: list[Path]) -> list[Path]:
    seen: dict[Path, Path] = {}
    for f in files:
        seen.setdefault(f.resolve(), f)
    return list(seen.values())


def _dedupe_sorted(refs: Iterable[ContainerRef]) -> list[ContainerRef]:
    unique: dict[tuple[str, int, str], ContainerRef] = {}
    for r in refs:
        unique.setdefault((r.file, r.line, r.tag if r.tag else f"raw:{r.raw}"), r)
    return sorted(unique.values(), key=lambda r: (r.file, r.line, r.tag or "", r.raw))

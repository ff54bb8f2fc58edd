"""Library dirs: read-only image collections a site keeps on a shared filesystem.

A library dir is either a tree in our own cache layout (``blobs/``,
``tags/``, ``refs/``, ``snapshots/``: another machine's cache, or one a site
filled with ``materialize`` and then made read-only) or a flat directory of
SIF files named the way Nextflow names them in its singularity cache and
``NXF_SINGULARITY_LIBRARYDIR`` (what ``nf-core download`` produces). Both
are read through ``storage.DirBackend``: a key is a relative path, so our
layout's records and blobs and a Nextflow file name are looked up alike.

Nothing in a library is ever created, locked, chmod-ed or touched: what is
used is hard-linked into the local cache (copied across filesystems or from
a read-only mount) and verified there, so the local cache keeps its own
trust records and holds, and the library's owner is never disturbed. A
snapshot staged from it is therefore the library's own inode when the
filesystem allows.

Verification: a blob whose size and mtime match the library's *own* trust
record (``trust/sha256/<hex>``, which our cache layout keeps) is taken as
the library's owner verified it, the rule the local cache applies to
itself; anything else (a Nextflow SIF, a blob without a record or changed
since) is hashed in full once, as it enters the local cache, whose trust
record then spares later runs the hash.
"""

from __future__ import annotations

from ..references import Reference, nextflow_file_name, parse_reference

_SUFFIXES = (".img", ".sif")


def _nextflow_simple_name(url: str) -> list[str]:
    """Nextflow's ``SingularityCache.simpleName``: scheme dropped, ``/`` and ``:`` become ``-``,
    ``.img`` unless the URL names a ``.sif``; the other suffix too, as ``nf-core download`` may use it."""
    name = url.split("://", 1)[1] if "://" in url else url
    suffix = ".img"
    if ".sif:" in name:
        suffix, name = ".sif", name.replace(".sif:", "-")
    elif name.endswith(".sif"):
        suffix, name = ".sif", name[:-4]
    name = name.replace(":", "-").replace("/", "-")
    return [name + suffix, *(name + s for s in _SUFFIXES if s != suffix)]


def nextflow_names(reference: str | Reference, tag: str | None = None) -> list[str]:
    """The file names a Nextflow-style SIF library may keep this image under, best first.

    Nextflow names a file after the tag as the workflow wrote it
    (``ubuntu:22.04`` -> ``ubuntu-22.04.img``), so ``tag`` comes first; then
    the canonical reference, its short Docker Hub form, and our own staged
    file name (``references.nextflow_file_name``) with either suffix.
    """
    ref = reference if isinstance(reference, Reference) else parse_reference(reference)
    canonical = ref.canonical()
    urls: list[str] = [tag] if tag else []
    urls.append(canonical)
    if ref.scheme == "docker" and canonical.startswith("docker.io/"):
        short = canonical[len("docker.io/") :]
        urls.append(short[len("library/") :] if short.startswith("library/") else short)
    names = [n for url in urls for n in _nextflow_simple_name(url)]
    own = nextflow_file_name(ref)
    names += [own + s for s in _SUFFIXES]
    return [n for n in dict.fromkeys(names) if n and "/" not in n and not n.startswith(".")]

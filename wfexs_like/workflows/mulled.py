"""The image name BioContainers builds for a set of conda packages ("mulled-v2"), computed offline.

Galaxy runs a tool that declares only conda packages in the image BioContainers
built for exactly that package set. The repository and the version part of the
tag follow from the package names and versions alone; the build suffix (``--0``,
``--h1b792b2_1`` for one package, ``-0`` for several) is only known to the
registry, so every name made here is a ``candidate``.

Rules, as Galaxy's tool utilities apply them: names are lower-cased (conda and
the registry are); one package is simply ``name:version``; several are sorted by
name, the newline-joined names are hashed (SHA-1) into the repository
``mulled-v2-<hex>``, and the newline-joined versions, in the same order and
with ``null`` for a missing one, into the tag, which is left out when no package
has a version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

#: Where BioContainers publishes the images it builds from conda packages.
BIOCONTAINERS = "quay.io/biocontainers"


def mulled_v2_name(packages: Sequence[tuple[str, str | None]]) -> str:
    """``name[:version]`` of the image for ``(package, version)`` pairs, without registry or build."""
    if not packages:
        raise ValueError("a mulled image needs at least one package")
    targets = sorted(((name.lower(), version or None) for name, version in packages), key=lambda t: t[0])
    if len(targets) == 1:
        name, version = targets[0]
        return f"{name}:{version}" if version else name
    names = "\n".join(name for name, _ in targets)
    repo = "mulled-v2-" + hashlib.sha1(names.encode()).hexdigest()
    if not any(version for _, version in targets):
        return repo
    versions = "\n".join(version or "null" for _, version in targets)
    return f"{repo}:{hashlib.sha1(versions.encode()).hexdigest()}"


def biocontainers_image(packages: Sequence[tuple[str, str | None]]) -> str:
    """The full candidate image name (registry and repository included) for ``packages``."""
    return f"{BIOCONTAINERS}/{mulled_v2_name(packages)}"

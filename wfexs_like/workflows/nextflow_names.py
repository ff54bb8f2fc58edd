"""Container names as Nextflow hands them to each engine: its ``ContainerHandler`` rules, read from
its source and written again here.

Which string reaches the engine decides which image is pulled: Docker and
Podman read every name as a Docker name and prefix their ``registry`` when
the name's first path segment has neither ``.`` nor ``:`` (``ubuntu:24.04``
has no ``/`` at all, so it is prefixed too); Singularity and Apptainer keep
paths and URLs and pull anything else as ``docker://`` plus the same rule.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .base import Kind
from .groovy_eval import truthy
from .nextflow_config import NextflowConfig

#: ContainerHandler.IMAGE_URL_PREFIX: a scheme, then ``://``
_IMAGE_URL = re.compile(r"^([^/:. ]+)://(.*)$", re.DOTALL)
_SIF_SCHEMES = frozenset({"http", "https", "ftp", "library", "shub"})
SINGULARITY_ENGINES = frozenset({"singularity", "apptainer"})


def normalize(name: str, engine: str, config: NextflowConfig, project: Path) -> tuple[Kind, str, list[str]]:
    """(kind, tag, notes) of a container name as Nextflow hands it to ``engine``.

    Singularity/Apptainer keep absolute paths, ``file://`` paths and URLs of any scheme, take an
    existing relative path as a file, and read anything else as a Docker name (``docker://``).
    Docker and Podman read every name as a Docker name. A Docker name whose first path segment has
    neither ``.`` nor ``:`` (or that has no ``/`` at all) gets the engine's ``registry`` prefixed.
    """
    if engine in SINGULARITY_ENGINES:
        if name.startswith("/"):
            return "local", name, []
        if name.startswith("file://"):
            return "local", _local(project / name[7:]), []
        if _IMAGE_URL.match(name):
            return _by_scheme(name, engine, config)
        if (project / name).exists():
            return "local", _local(project / name), []
    elif _IMAGE_URL.match(name) or name.startswith("/"):
        kind, tag, notes = _by_scheme(name, engine, config) if name[0] != "/" else ("local", name, [])
        if kind != "docker":
            notes.append(
                f"{engine} cannot run this ({kind}) as written"
            )  # Nextflow passes it on; the run fails
        return kind, tag, notes
    return "docker", *_with_registry(name, engine, config)


def _local(path: Path) -> str:
    """A relative image path, resolved against the launch directory (taken to be the project's) and
    reported as the project path was given, like every file a scan reports."""
    return os.path.normpath(path)


def _by_scheme(name: str, engine: str, config: NextflowConfig) -> tuple[Kind, str, list[str]]:
    match = _IMAGE_URL.match(name)
    assert match is not None
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme == "docker":
        return "docker", rest, []  # Nextflow applies no registry to an explicit docker:// name
    if scheme == "oras":
        return "oras", name, []
    if scheme == "file":
        return "local", rest, []
    if scheme in _SIF_SCHEMES:
        return "sif-url", name, []
    return "sif-url", name, [f"unknown scheme {scheme}://"]


def _with_registry(name: str, engine: str, config: NextflowConfig) -> tuple[str, list[str]]:
    registry = config.scopes.get(f"{engine}.registry")
    if registry is None or registry == "":
        return name, []
    if not isinstance(registry, str):
        return name, [f"needs {engine}.registry, known only at run time"]
    if is_absolute_docker_name(name):
        if engine == "docker" and truthy(config.scopes.get("docker.registryOverride", False)):
            return override_registry(name, registry), [f"docker.registryOverride to {registry}"]
        return name, []
    return registry.rstrip("/") + "/" + name, [f"{engine}.registry {registry} prefixed"]


def is_absolute_docker_name(name: str) -> bool:
    """Whether a Docker name already names its registry: its first segment, before a ``/``, has a
    ``.`` or a ``:``. A name without ``/`` never does (``ubuntu:24.04`` gets the prefix)."""
    first, slash, _ = name.partition("/")
    return bool(slash) and ("." in first or ":" in first)


def override_registry(name: str, registry: str) -> str:
    """``docker.registryOverride``: the name's own registry host replaced by ``registry``."""
    first, _, rest = name.partition("/")
    return registry.rstrip("/") + "/" + rest if ("." in first or ":" in first) else name


__all__ = ["SINGULARITY_ENGINES", "is_absolute_docker_name", "normalize", "override_registry"]

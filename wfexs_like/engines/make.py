"""Engines by name, for the command line and configuration files."""

from __future__ import annotations

from typing import Any

from ..errors import ContainerFactoryException
from .apptainer import ApptainerEngine
from .base import Engine
from .docker import DockerEngine
from .podman import PodmanEngine

_ENGINES: dict[str, type] = {
    "docker": DockerEngine,
    "podman": PodmanEngine,
    "apptainer": ApptainerEngine,
    "singularity": ApptainerEngine,
}


def make_engine(name: str, **kwargs: Any) -> Engine:
    """The engine called ``name``, built with ``kwargs`` (its constructor's keywords)."""
    try:
        cls = _ENGINES[name.lower()]
    except KeyError:
        raise ContainerFactoryException(
            f"unknown container engine {name!r}; use one of {', '.join(sorted(_ENGINES))}"
        ) from None
    engine: Engine = cls(**kwargs)
    return engine

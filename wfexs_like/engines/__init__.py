"""Container engines as injected objects behind one protocol (``Engine``).

A factory is handed an engine (``make_engine`` builds one by name) and keeps
only policy; the engines keep only mechanics. Importing this package imports
neither the docker SDK nor spython: each is imported by the engine that
uses it, when it is first used.
"""

from __future__ import annotations

from typing import Any

from ..errors import ContainerFactoryException
from .apptainer import ApptainerEngine
from .base import Engine, EngineImageInfo, engine_env, normalize_image_id, run_engine
from .docker import DockerEngine
from .podman import PodmanEngine

__all__ = [
    "ApptainerEngine",
    "DockerEngine",
    "Engine",
    "EngineImageInfo",
    "PodmanEngine",
    "engine_env",
    "make_engine",
    "normalize_image_id",
    "run_engine",
]

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

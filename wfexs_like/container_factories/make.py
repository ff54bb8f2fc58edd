"""Factories by engine name, for the command line."""

from __future__ import annotations

from typing import Any

from .base import ContainerFactory
from .docker import DockerContainerFactory
from .none import NoContainerFactory
from .podman import PodmanContainerFactory
from .singularity import SingularityContainerFactory

FACTORIES: dict[str, type[ContainerFactory]] = {
    "docker": DockerContainerFactory,
    "podman": PodmanContainerFactory,
    "singularity": SingularityContainerFactory,
    "apptainer": SingularityContainerFactory,
    "none": NoContainerFactory,
}


def make_factory(engine: str, **kwargs: Any) -> ContainerFactory:
    """Build the factory for ``engine`` ('docker', 'podman', 'singularity', 'apptainer', 'none')."""
    try:
        cls = FACTORIES[engine]
    except KeyError:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(sorted(FACTORIES))}") from None
    return cls(**kwargs)

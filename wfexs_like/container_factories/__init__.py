"""The container factories, by engine name.

Mirrors WfExS-backend's ``container_factories`` module, which also exposes
``Container``, the cache handler and the exceptions, so imports written
against the reference resolve here too.
"""

from __future__ import annotations

from typing import Any

from ..cache.handler import ContainerCacheHandler
from ..errors import ContainerEngineException, ContainerFactoryException, ContainerNotFoundException
from ..model import META_JSON_POSTFIX, Container, ContainerTaggedName, ContainerType
from .base import ContainerFactory, ContainerFileNamingMethod
from .docker import DockerContainerFactory
from .docker_like import DockerLikeContainerFactory
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


__all__ = [
    "FACTORIES",
    "META_JSON_POSTFIX",
    "Container",
    "ContainerCacheHandler",
    "ContainerEngineException",
    "ContainerFactory",
    "ContainerFactoryException",
    "ContainerFileNamingMethod",
    "ContainerNotFoundException",
    "ContainerTaggedName",
    "ContainerType",
    "DockerContainerFactory",
    "DockerLikeContainerFactory",
    "NoContainerFactory",
    "PodmanContainerFactory",
    "SingularityContainerFactory",
    "make_factory",
]

"""The container factories, by engine name.

Mirrors WfExS-backend's ``container_factories`` module, which also exposes
``Container``, the cache handler and the exceptions, so imports written
against the reference resolve here too.
"""

from __future__ import annotations

from ..cache.handler import ContainerCacheHandler
from ..errors import ContainerEngineException, ContainerFactoryException, ContainerNotFoundException
from ..model import META_JSON_POSTFIX, Container, ContainerTaggedName, ContainerType
from .base import ContainerFactory, ContainerFileNamingMethod
from .docker import DockerContainerFactory
from .docker_like import DockerLikeContainerFactory
from .make import FACTORIES, make_factory
from .none import NoContainerFactory
from .podman import PodmanContainerFactory
from .singularity import SingularityContainerFactory

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

"""The container factories, by engine name.

Mirrors WfExS-backend's ``container_factories`` module, which also exposes
``Container``, the cache handler and the exceptions, so imports written
against the reference resolve here too. The names load on first use
(PEP 562): a Docker re-stage loads the Docker factory, not the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "FACTORIES": ".make",
    "META_JSON_POSTFIX": "..model",
    "Container": "..model",
    "ContainerCacheHandler": "..cache.handler",
    "ContainerEngineException": "..errors",
    "ContainerFactory": ".base",
    "ContainerFactoryException": "..errors",
    "ContainerFileNamingMethod": ".base",
    "ContainerNotFoundException": "..errors",
    "ContainerTaggedName": "..model",
    "ContainerType": "..model",
    "DockerContainerFactory": ".docker",
    "DockerLikeContainerFactory": ".docker_like",
    "NoContainerFactory": ".none",
    "PodmanContainerFactory": ".podman",
    "SingularityContainerFactory": ".singularity",
    "factory_class": ".make",
    "make_factory": ".make",
}

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
    "factory_class",
    "make_factory",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ..cache.handler import ContainerCacheHandler
    from ..errors import ContainerEngineException, ContainerFactoryException, ContainerNotFoundException
    from ..model import META_JSON_POSTFIX, Container, ContainerTaggedName, ContainerType
    from .base import ContainerFactory, ContainerFileNamingMethod
    from .docker import DockerContainerFactory
    from .docker_like import DockerLikeContainerFactory
    from .make import FACTORIES, factory_class, make_factory
    from .none import NoContainerFactory
    from .podman import PodmanContainerFactory
    from .singularity import SingularityContainerFactory

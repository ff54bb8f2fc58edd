"""The reference's identity surface of a factory: what it accepts and how it describes itself.

WfExS-backend's workflow engines ask a factory these questions
(``ContainerType()``, ``AcceptsContainer``, ``environment``, ``command``,
``architecture``...); they are kept verbatim, apart from the policy, so the
policy modules stay small.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from ..errors import ContainerEngineException
from ..model import Container, ContainerTaggedName, ContainerType


class ReferenceIdentity(abc.ABC):
    ENABLED: ClassVar[bool] = True
    #: Record types this factory can materialize and deploy, besides its own.
    ACCEPTED_TYPES: ClassVar[frozenset[ContainerType]] = frozenset()

    _environment: dict[str, str]
    _features: set[str]
    runtime_cmd: str
    engineContainersSymlinkDir: Path

    @classmethod
    @abc.abstractmethod
    def ContainerType(cls) -> ContainerType: ...

    @classmethod
    def AcceptsContainerType(cls, container_type: ContainerType | set[ContainerType]) -> bool:
        types = container_type if isinstance(container_type, set) else {container_type}
        return bool(types & ({cls.ContainerType()} | cls.ACCEPTED_TYPES))

    @classmethod
    def AcceptsContainer(cls, container: ContainerTaggedName) -> bool:
        if isinstance(container, Container) and container.source_type is not None:
            return cls.AcceptsContainerType(container.source_type) or cls.AcceptsContainerType(container.type)
        return cls.AcceptsContainerType(container.type)

    @property
    def environment(self) -> Mapping[str, str]:
        return self._environment

    @property
    def containerType(self) -> ContainerType:
        return self.ContainerType()

    @property
    def command(self) -> str:
        return self.runtime_cmd

    @property
    def cacheDir(self) -> Path:
        return self.engineContainersSymlinkDir

    @property
    def architecture(self) -> tuple[str, str]:
        """(operating system, machine) of this host, as the reference reports them."""
        uname = os.uname()
        return uname.sysname.lower(), uname.machine

    def supportsFeature(self, feat: str) -> bool:
        return feat in self._features

    def engine_version(self) -> str:
        raise ContainerEngineException(f"{type(self).__name__} has no engine")

"""Docker: the shared OCI factory with the Docker engine (the docker SDK) as its default."""

from __future__ import annotations

from typing import Any

from ..engines.base import Engine
from ..engines.docker import DockerEngine
from ..model import ContainerType
from .docker_like import DockerLikeContainerFactory


class DockerContainerFactory(DockerLikeContainerFactory):
    def __init__(self, *args: Any, docker_client: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("engine_name", "docker")
        self._docker_client = docker_client
        super().__init__(*args, **kwargs)
        self.runtime_cmd = self.progs_mapping.get("docker", "docker")

    @classmethod
    def ContainerType(cls) -> ContainerType:
        return ContainerType.Docker

    def default_engine(self) -> Engine:
        return DockerEngine(self._docker_client)

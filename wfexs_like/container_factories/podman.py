"""Podman: the shared OCI factory with the Podman CLI as its default engine.

Podman runs Docker images, so it accepts Docker records too. A per-workdir
image store (``podman_root``) keeps a workflow's images apart from the
user's when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..engines.base import Engine
from ..engines.podman import PodmanEngine
from ..model import ContainerType
from .docker_like import DockerLikeContainerFactory


class PodmanContainerFactory(DockerLikeContainerFactory):
    ACCEPTED_TYPES: ClassVar[frozenset[ContainerType]] = frozenset({ContainerType.Docker})

    def __init__(self, *args: Any, podman_root: Path | str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("engine_name", "podman")
        self.podman_root = Path(podman_root).absolute() if podman_root else None
        super().__init__(*args, **kwargs)
        self.runtime_cmd = self.progs_mapping.get("podman", "podman")

    @classmethod
    def ContainerType(cls) -> ContainerType:
        return ContainerType.Podman

    def default_engine(self) -> Engine:
        return PodmanEngine(self.runtime_cmd or "podman", root=self.podman_root, tmp_dir=self.tempDir)

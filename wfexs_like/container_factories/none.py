"""The no-container factory: workflows that run on the host still get the same calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model import Container, ContainerTaggedName, ContainerType
from .base import ContainerFactory


class NoContainerFactory(ContainerFactory):
    """Accepts only ``ContainerType.NoContainer`` and materializes nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("engine_name", "none")
        super().__init__(*args, **kwargs)

    @classmethod
    def ContainerType(cls) -> ContainerType:
        return ContainerType.NoContainer

    def engine_version(self) -> str:
        return "0.0.0"

    def materializeSingleContainer(
        self,
        tag: ContainerTaggedName,
        containers_dir: Path | None = None,
        offline: bool = False,
        force: bool = False,
    ) -> Container | None:
        return Container(
            origTaggedName=tag.origTaggedName,
            type=ContainerType.NoContainer,
            registries=tag.registries,
            taggedName=tag.origTaggedName,
            source_type=ContainerType.NoContainer,
        )

    def deploySingleContainer(
        self,
        container: Container,
        containers_dir: Path | None = None,
        force: bool = False,
        *,
        offline: bool = False,
    ) -> tuple[Container, bool]:
        return container, False

    def generateCanonicalTag(self, container: ContainerTaggedName) -> str:
        return container.origTaggedName

"""Factories by engine name, for the command line.

Each factory's module is imported when its engine is first asked for: a
Docker re-stage must not load the Singularity factory and its SIF tooling.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import ContainerFactory

#: engine name -> (module, class), relative to this package
_BY_ENGINE: dict[str, tuple[str, str]] = {
    "docker": (".docker", "DockerContainerFactory"),
    "podman": (".podman", "PodmanContainerFactory"),
    "singularity": (".singularity", "SingularityContainerFactory"),
    "apptainer": (".singularity", "SingularityContainerFactory"),
    "none": (".none", "NoContainerFactory"),
}


def factory_class(engine: str) -> type[ContainerFactory]:
    """The factory class for ``engine``; ValueError naming the choices for an unknown one."""
    try:
        module, name = _BY_ENGINE[engine]
    except KeyError:
        choices = ", ".join(sorted(_BY_ENGINE))
        raise ValueError(f"unknown engine {engine!r}; choose one of {choices}") from None
    cls: type[ContainerFactory] = getattr(importlib.import_module(module, __package__), name)
    return cls


def make_factory(engine: str, **kwargs: Any) -> ContainerFactory:
    """Build the factory for ``engine`` ('docker', 'podman', 'singularity', 'apptainer', 'none')."""
    return factory_class(engine)(**kwargs)


def __getattr__(name: str) -> Any:
    """``FACTORIES`` (engine name -> class), built on first use: it imports every factory."""
    if name == "FACTORIES":
        factories = {engine: factory_class(engine) for engine in _BY_ENGINE}
        globals()["FACTORIES"] = factories
        return factories
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

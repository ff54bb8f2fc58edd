"""Container engines as injected objects behind one protocol (``Engine``).

A factory is handed an engine (``make_engine`` builds one by name) and keeps
only policy; the engines keep only mechanics. Importing this package imports
neither the docker SDK nor spython: each is imported by the engine that
uses it, when it is first used. The names load on first use (PEP 562): an
offline re-stage constructs a Docker factory but never runs an engine, so
it must not pay for the other engines' modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "ApptainerEngine": ".apptainer",
    "DockerEngine": ".docker",
    "Engine": ".base",
    "EngineImageInfo": ".base",
    "PodmanEngine": ".podman",
    "engine_env": ".base",
    "make_engine": ".make",
    "normalize_image_id": ".base",
    "run_engine": ".base",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .apptainer import ApptainerEngine
    from .base import Engine, EngineImageInfo, engine_env, normalize_image_id, run_engine
    from .docker import DockerEngine
    from .make import make_engine
    from .podman import PodmanEngine

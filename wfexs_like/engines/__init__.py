"""Container engines as injected objects behind one protocol (``Engine``).

A factory is handed an engine (``make_engine`` builds one by name) and keeps
only policy; the engines keep only mechanics. Importing this package imports
neither the docker SDK nor spython: each is imported by the engine that
uses it, when it is first used.
"""

from __future__ import annotations

from .apptainer import ApptainerEngine
from .base import Engine, EngineImageInfo, engine_env, normalize_image_id, run_engine
from .docker import DockerEngine
from .make import make_engine
from .podman import PodmanEngine

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

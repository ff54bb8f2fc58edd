"""The local engine as an image source: ``docker-daemon:`` tags, and images that exist nowhere else.

An image built locally and never pushed exists only in the engine. It is
taken from there only when the registry could not give it (``sources``
asks the registry first): an image this tool loaded has no repo digests
either, and taking it from the engine would record a synthesized manifest
instead of the registry's pin. The engine's copy is read through
``Engine.save`` as an ``Image`` and copied into the blob store like any
other source. Until then no engine is touched, so a materialize that the
registry serves never loads the Docker SDK.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engines.base import Engine, EngineImageInfo
from ..errors import ContainerEngineException
from ..images.blobstore import BlobStore
from ..images.store import write_to_store
from ..references import Reference


class EngineSource:
    def __init__(
        self,
        store: BlobStore,
        engine: Callable[[], Engine | None],
        docker_daemon: Callable[[], Engine],
        work_dir: Path,
        *,
        fallback: bool,
    ) -> None:
        self.store = store
        self._engine = engine
        self._docker_daemon = docker_daemon
        self.work_dir = work_dir
        self.fallback = fallback

    def fetch(self, ref: Reference, name: str) -> tuple[str, dict[str, Any]]:
        """Copy the engine's image ``name`` into the store; (manifest digest, source).

        ``docker-daemon:`` means the Docker daemon, as in skopeo, whichever
        engine the factory deploys to; any other reference is read from the
        factory's own engine.
        """
        engine = self._docker_daemon() if ref.scheme == "docker-daemon" else self._engine()
        if engine is None:
            raise ContainerEngineException(f"{ref.canonical()}: no container engine to read it from")
        work = self.work_dir / "engine-save"
        work.mkdir(parents=True, exist_ok=True)
        image = engine.save(name, work)
        with contextlib.closing(image) if hasattr(image, "close") else contextlib.nullcontext():
            digest = write_to_store(image, self.store)
        return digest, {"source": "engine", "engine": engine.name}

    def image(self, name: str) -> EngineImageInfo | None:
        """What the engine holds under ``name`` (None: nothing, no engine, or fallback disabled)."""
        engine = self._engine() if self.fallback else None
        if engine is None:
            return None
        try:
            return engine.inspect(name)
        except ContainerEngineException:
            return None

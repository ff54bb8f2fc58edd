"""The local engine as an image source: ``docker-daemon:`` tags, and images that exist nowhere else.

An image built locally and never pushed exists only in the engine. It is
taken from there only after a no-retry probe shows the registry lacks the
tag: an image this tool loaded has no repo digests either, and taking it
from the engine would record a synthesized manifest instead of the
registry's pin. The engine's copy is read through ``Engine.save`` as an
``Image`` and copied into the blob store like any other source.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engines.base import Engine, EngineImageInfo
from ..errors import ContainerEngineException, RegistryError
from ..images.blobstore import BlobStore
from ..images.store import write_to_store
from ..references import Reference
from ..registry.client import RegistryClient


class EngineSource:
    def __init__(
        self,
        store: BlobStore,
        engine: Callable[[], Engine | None],
        docker_daemon: Callable[[], Engine],
        probe: Callable[[], RegistryClient],
        work_dir: Path,
        *,
        fallback: bool,
    ) -> None:
        self.store = store
        self._engine = engine
        self._docker_daemon = docker_daemon
        self._probe = probe
        self.work_dir = work_dir
        self.fallback = fallback
        self._local_only: dict[str, EngineImageInfo | None] = {}

    def forget(self) -> None:
        """Drop what was learnt about the engine (a new call may find it changed)."""
        self._local_only.clear()

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

    def local_only(self, ref: Reference) -> EngineImageInfo | None:
        """The engine's image for ``ref`` when it exists nowhere else (see the module docstring)."""
        key = ref.canonical()
        if key in self._local_only:
            return self._local_only[key]
        found: EngineImageInfo | None = None
        if ref.tag and not ref.digest and ref.scheme == "docker":
            img = self.image(key)
            if img is not None and not img.repo_digests:
                try:
                    self._probe().resolve(ref.registry or "docker.io", ref.repository, ref.tag)
                except RegistryError:
                    found = img
        self._local_only[key] = found
        return found

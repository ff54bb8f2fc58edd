"""An in-memory ``Engine`` for factory-policy unit tests that run without a daemon.

It behaves like a real engine where policy can tell the difference: ``load``
reads every layer's compressed stream to the end (so a corrupt image fails
with the same ``IntegrityError`` a real load does), tags are unique per
engine (tagging moves them), ``save`` hands back what was loaded, and an
engine told to fail raises ``ContainerEngineException`` the way a broken or
unreachable one does. Every call is recorded, so a test can assert what the
policy asked for (and that it asked nothing at all).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from wfexs_like.digests import CHUNK
from wfexs_like.engines.base import EngineImageInfo, normalize_image_id
from wfexs_like.errors import ContainerEngineException
from wfexs_like.images.base import Image


@dataclass
class _Held:
    image: Image
    tags: list[str] = field(default_factory=list)


class FakeEngine:
    def __init__(
        self,
        name: str = "fake",
        *,
        fail_on: set[str] | None = None,
        down: bool = False,
        version: str = "0.0-fake",
    ) -> None:
        self.name = name
        self._version = version
        self.calls: list[tuple[str, ...]] = []
        self.fail_on: set[str] = set(fail_on or ())
        self.down = down
        self._images: dict[str, _Held] = {}

    # -- test controls ----------------------------------------------------------
    @property
    def image_ids(self) -> set[str]:
        return set(self._images)

    def remove(self, name_or_id: str) -> None:
        """What ``docker rmi -f`` does; not recorded as a call (the policy under test did not ask for it)."""
        image_id = self._resolve(name_or_id)
        if image_id is not None:
            del self._images[image_id]

    # -- the Engine protocol ----------------------------------------------------
    def version(self) -> str:
        self._enter("version")
        return self._version

    def inspect(self, name_or_id: str) -> EngineImageInfo | None:
        self._enter("inspect", name_or_id)
        image_id = self._resolve(name_or_id)
        return None if image_id is None else self._info(image_id)

    def load(self, image: Image, tag: str) -> EngineImageInfo:
        self._enter("load", image.config_name(), tag)
        image.config()  # the config is checked against its digest, as an engine checks the image id
        for layer in image.layers():
            with contextlib.closing(layer.compressed()) as fh:
                while fh.read(CHUNK):
                    pass
        image_id = normalize_image_id(image.config_name())
        self._images.setdefault(image_id, _Held(image))
        self._tag(image_id, tag)
        return self._info(image_id)

    def tag(self, image_id: str, tag: str) -> None:
        self._enter("tag", image_id, tag)
        resolved = self._resolve(image_id)
        if resolved is None:
            raise ContainerEngineException(
                f"{self.name}: no such image {image_id}", command=f"tag {image_id} {tag}", returncode=125
            )
        self._tag(resolved, tag)

    def save(self, name_or_id: str, work_dir: Path) -> Image:
        self._enter("save", name_or_id)
        image_id = self._resolve(name_or_id)
        if image_id is None:
            raise ContainerEngineException(
                f"{self.name}: no such image {name_or_id}", command=f"save {name_or_id}", returncode=125
            )
        return self._images[image_id].image

    # -- internals ----------------------------------------------------------------
    def _enter(self, method: str, *args: str) -> None:
        self.calls.append((method, *args))
        if self.down:
            raise ContainerEngineException(
                f"cannot reach the {self.name} engine; is it running?",
                command=f"{method}({', '.join(args)})",
                stderr="connection refused (FakeEngine.down)",
            )
        if method in self.fail_on:
            raise ContainerEngineException(
                f"{self.name} {method} failed",
                command=f"{method}({', '.join(args)})",
                returncode=125,
                stderr=f"injected failure (FakeEngine.fail_on={sorted(self.fail_on)})",
            )

    def _resolve(self, name_or_id: str) -> str | None:
        if name_or_id in self._images:
            return name_or_id
        if normalize_image_id(name_or_id) in self._images:
            return normalize_image_id(name_or_id)
        for image_id, held in self._images.items():
            if name_or_id in held.tags:
                return image_id
        return None

    def _tag(self, image_id: str, tag: str) -> None:
        for held in self._images.values():
            if tag in held.tags:
                held.tags.remove(tag)
        self._images[image_id].tags.append(tag)

    def _info(self, image_id: str) -> EngineImageInfo:
        return EngineImageInfo(image_id, (), tuple(self._images[image_id].tags))

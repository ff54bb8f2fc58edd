"""Podman through its CLI (``--format json``): only what differs from Docker lives here.

Podman reads OCI layout directories natively, so deploying is a single
``podman load -i <staged layout>`` with no archive at all. A per-workdir
image store (``--root``/``--runroot``) keeps a workflow's images apart from
the user's when asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ..errors import ContainerEngineException
from ..images.image import StoredImage
from ..model import ContainerType
from .base import run_engine
from .docker_like import DockerLikeContainerFactory, EngineImage, normalize_image_id


class PodmanContainerFactory(DockerLikeContainerFactory):
    def __init__(self, *args: Any, podman_root: Path | str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("engine_name", "podman")
        super().__init__(*args, **kwargs)
        self.runtime_cmd = self.progs_mapping.get("podman", "podman")
        self.podman_root = Path(podman_root).absolute() if podman_root else None

    @classmethod
    def ContainerType(cls) -> ContainerType:
        return ContainerType.Podman

    @classmethod
    def AcceptsContainerType(cls, container_type: ContainerType | set[ContainerType]) -> bool:
        types = container_type if isinstance(container_type, set) else {container_type}
        return bool(types & {ContainerType.Podman, ContainerType.Docker})

    @property
    def podman_runroot(self) -> Path | None:
        """Podman refuses a runroot longer than 50 characters, so it lives under /tmp, keyed by the root."""
        if self.podman_root is None:
            return None
        key = hashlib.sha256(str(self.podman_root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"wfexs-like-podman-{key}"

    def _cmd(self, *args: str) -> list[str]:
        cmd = [self.runtime_cmd]
        if self.podman_root is not None:
            cmd += ["--root", str(self.podman_root / "storage"), "--runroot", str(self.podman_runroot)]
        return [*cmd, *args]

    def _run(self, *args: str, what: str, timeout: float = 900, cwd: Path | None = None) -> bytes:
        env = {**os.environ, **self._environment}
        return run_engine(self._cmd(*args), env=env, timeout=timeout, what=what, cwd=cwd).stdout

    def _engine_inspect(self, name_or_id: str) -> EngineImage | None:
        # `podman image exists` distinguishes "absent" (exit 1) from a broken engine (125).
        env = {**os.environ, **self._environment}
        try:
            run_engine(
                self._cmd("image", "exists", name_or_id), env=env, timeout=120, what="podman image exists"
            )
        except ContainerEngineException as e:
            if e.returncode == 1:
                return None
            raise
        out = self._run("image", "inspect", "--format", "json", name_or_id, what="podman image inspect")
        try:
            data = json.loads(out)[0]
        except (ValueError, IndexError, KeyError) as e:
            raise ContainerEngineException(
                f"podman image inspect {name_or_id} returned unexpected output",
                command=self._cmd("image", "inspect", name_or_id),
                stderr=out[-2000:],
            ) from e
        return EngineImage(
            normalize_image_id(data["Id"]),
            tuple(data.get("RepoDigests") or ()),
            tuple(data.get("RepoTags") or ()),
        )

    def _engine_load(self, layout: Path, image: StoredImage, canonical_tag: str) -> None:
        """``podman load -i <layout>``, under a name podman can always parse.

        Podman 4.3 ignores the layout's ref-name annotation and names the
        image after the path it was given, failing outright when that path is
        not a valid image reference (a ``.work`` dir, capitals...). So it is
        given a relative symlink with a well-formed name, and the invented
        name is replaced by the canonical tag.
        """
        link_name = f"wfexs-like-load-{uuid.uuid4().hex}"
        self.tempDir.mkdir(parents=True, exist_ok=True)
        link = self.tempDir / link_name
        os.symlink(layout.absolute(), link)
        try:
            out = self._run(
                "load", "-q", "-i", link_name, what=f"podman load of {canonical_tag}", cwd=self.tempDir
            )
        finally:
            link.unlink()
        image_id = image.config_name()
        self._engine_tag(image_id, canonical_tag)
        for line in out.decode("utf-8", errors="replace").splitlines():
            _, sep, names = line.partition("Loaded image")
            if not sep:
                continue
            for name in names.split(":", 1)[-1].split(","):
                name = name.strip()
                if name and name != canonical_tag and not name.startswith("sha256:"):
                    self._run("untag", image_id, name, what=f"podman untag {name}")

    def _engine_tag(self, image_id: str, tag: str) -> None:
        self._run("tag", image_id, tag, what=f"podman tag {tag}")

    def _engine_save(self, name: str, dest: Path) -> None:
        self._run(
            "save", "-q", "--format", "docker-archive", "-o", str(dest), name, what=f"podman save {name}"
        )

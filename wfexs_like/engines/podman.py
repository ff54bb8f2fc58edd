"""Podman through its CLI (``--format json``), behind the ``Engine`` protocol.

Podman reads OCI layout directories natively, so an image that already is a
layout on disk is loaded as it is, and any other image is first written as
a temporary layout whose blobs are hard links to the image's verified files
(a few directory entries, whatever the image's size). A per-workdir image
store (``--root``/``--runroot``) keeps a workflow's images apart from the
user's when asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from ..errors import ContainerEngineException
from ..fsutil import random_hex
from ..images.base import Image
from ..images.layout import LayoutImage, write_oci_layout
from .base import EngineImageInfo, check_saved, engine_env, normalize_image_id, require_loaded, run_engine

_TIMEOUT = 900


class PodmanEngine:
    name = "podman"

    def __init__(
        self,
        binary: str = "podman",
        *,
        root: Path | None = None,
        env: Mapping[str, str] | None = None,
        tmp_dir: Path | None = None,
    ) -> None:
        self.binary = binary
        self.root = Path(root).absolute() if root is not None else None
        self.env: dict[str, str] = dict(env or {})
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else None

    @property
    def runroot(self) -> Path | None:
        """Podman refuses a runroot longer than 50 characters, so it lives under /tmp, keyed by the root."""
        if self.root is None:
            return None
        import tempfile  # here: an offline re-stage builds this engine but never runs it

        key = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"wfexs-like-podman-{key}"

    def command(self, *args: str) -> list[str]:
        """The full command line for ``podman <args>``, with this engine's storage options."""
        cmd = [self.binary]
        if self.root is not None:
            cmd += ["--root", str(self.root / "storage"), "--runroot", str(self.runroot)]
        return [*cmd, *args]

    def _run(self, *args: str, what: str, timeout: float = _TIMEOUT, cwd: Path | None = None) -> bytes:
        return run_engine(
            self.command(*args), env=engine_env(self.env), timeout=timeout, what=what, cwd=cwd
        ).stdout

    def version(self) -> str:
        out = self._run("--version", what="podman --version", timeout=60)
        return out.decode("utf-8", errors="replace").strip().rsplit(" ", 1)[-1]

    def inspect(self, name_or_id: str) -> EngineImageInfo | None:
        # `podman image exists` tells "absent" (exit 1) from a broken engine (125).
        try:
            self._run("image", "exists", name_or_id, what="podman image exists", timeout=120)
        except ContainerEngineException as e:
            if e.returncode == 1:
                return None
            raise
        out = self._run("image", "inspect", "--format", "json", name_or_id, what="podman image inspect")
        try:
            data = json.loads(out)[0]
            image_id = normalize_image_id(data["Id"])
        except (ValueError, IndexError, KeyError, TypeError, AttributeError) as e:
            raise ContainerEngineException(
                f"podman image inspect {name_or_id} returned unexpected output; is {self.binary} a podman?",
                command=self.command("image", "inspect", "--format", "json", name_or_id),
                stderr=out[-2000:],
            ) from e
        return EngineImageInfo(
            image_id, tuple(data.get("RepoDigests") or ()), tuple(data.get("RepoTags") or ())
        )

    def load(self, image: Image, tag: str) -> EngineImageInfo:
        """``podman load`` of an OCI layout: the image's own, or a linked temporary one."""
        if self.tmp_dir is not None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="wfexs-like-podman-load-", dir=self.tmp_dir))
        try:
            layout = _single_image_layout(image)
            if layout is None:
                layout = work / "layout"
                write_oci_layout(image, layout, ref_name=tag)
            out = self._load_layout(layout, work, tag)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        image_id = normalize_image_id(image.config_name())
        self.tag(image_id, tag)
        for name in _loaded_names(out):
            if name != tag and not name.startswith("sha256:"):
                self._run("untag", image_id, name, what=f"podman untag {name}")
        return require_loaded(self, image, tag)

    def _load_layout(self, layout: Path, work: Path, tag: str) -> bytes:
        """``podman load -i <layout>``, under a name podman can always parse.

        Podman 4.3 ignores the layout's ref-name annotation and names the
        image after the path it was given, failing outright when that path is
        not a valid image reference (a ``.work`` dir, capitals...). So it is
        given a relative symlink with a well-formed name, and the invented
        name is replaced by ``tag`` afterwards.
        """
        link_name = f"wfexs-like-load-{random_hex(16)}"
        os.symlink(layout.absolute(), work / link_name)
        return self._run("load", "-q", "-i", link_name, what=f"podman load of {tag}", cwd=work)

    def tag(self, image_id: str, tag: str) -> None:
        self._run("tag", image_id, tag, what=f"podman tag {tag}")

    def save(self, name_or_id: str, work_dir: Path) -> Image:
        """``podman save`` of exactly the image ``name_or_id`` resolves to now, checked by its id."""
        info = self.inspect(name_or_id)
        if info is None:
            raise ContainerEngineException(
                f"podman has no image {name_or_id} to save; pull or load it first",
                command=self.command("image", "exists", name_or_id),
                returncode=1,
            )
        dest = Path(work_dir) / f"podman-save-{random_hex(16)}.tar"
        partial = dest.with_name(f".{dest.name}.tmp")
        try:
            self._run(
                "save", "-q", "--format", "docker-archive", "-o", str(partial), info.image_id,
                what=f"podman save {name_or_id}",
            )  # fmt: skip
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        from ..images.docker_archive import DockerArchiveImage  # only to save

        return check_saved(self, DockerArchiveImage(dest), info.image_id, name_or_id)


def _single_image_layout(image: Image) -> Path | None:
    """The layout dir podman can load as it is: a LayoutImage whose index names this one image only."""
    if not isinstance(image, LayoutImage):
        return None
    try:
        index = json.loads((Path(image.path) / "index.json").read_bytes())
        manifests = index["manifests"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(manifests) != 1 or manifests[0].get("digest") != image.digest():
        return None
    return Path(image.path)


def _loaded_names(out: bytes) -> list[str]:
    """The names in ``podman load`` output (``Loaded image(s): a, b``)."""
    names: list[str] = []
    for line in out.decode("utf-8", errors="replace").splitlines():
        _, sep, rest = line.partition("Loaded image")
        if sep:
            names += [n.strip() for n in rest.split(":", 1)[-1].split(",") if n.strip()]
    return names

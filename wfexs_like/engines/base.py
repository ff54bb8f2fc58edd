"""The one shape every container engine takes: ``Engine``, plus the helpers every engine shares.

Like go-containerregistry's ``daemon.WithClient``, an engine is an object a
factory is *given*, never one it builds from globals: the factory then holds
policy only (when to load, what to tag, when to fall back to the engine's
copy) and is unit-tested against an in-memory engine, while the real engines
are tested on their own against real daemons.

An engine is a sink (``load``) and a source (``save``) of the one ``Image``
shape (``images/base.py``), so whatever place an image lives in can be
deployed without a format written for that pair.

The environment an engine command runs with is built per call
(``engine_env``) and handed to that one subprocess: mutating ``os.environ``
would leak a workflow's settings into every other thread and engine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import ContainerEngineException, IntegrityError
from ..images.base import Image

if TYPE_CHECKING:
    import subprocess


@dataclass(frozen=True)
class EngineImageInfo:
    """What an engine says about an image it holds."""

    image_id: str  # "sha256:<hex>", normalised
    repo_digests: tuple[str, ...] = ()
    repo_tags: tuple[str, ...] = ()


@runtime_checkable
class Engine(Protocol):
    """A container engine as a factory sees it: a place images are loaded into and saved from."""

    name: str  # "docker" | "podman" | "apptainer"

    def version(self) -> str:
        """The engine's version number, for provenance records."""
        ...

    def inspect(self, name_or_id: str) -> EngineImageInfo | None:
        """None when the engine lacks the image; ContainerEngineException when it can't be reached."""
        ...

    def load(self, image: Image, tag: str) -> EngineImageInfo:
        """Load ``image``, tag it ``tag``; raise unless the engine then reports ``image.config_name()``."""
        ...

    def tag(self, image_id: str, tag: str) -> None: ...

    def save(self, name_or_id: str, work_dir: Path) -> Image:
        """The engine's copy as a docker-archive Image in ``work_dir``; the caller closes it and the dir."""
        ...


def normalize_image_id(value: str) -> str:
    """Engines disagree on whether an image id carries its algorithm; ours always does."""
    value = value.strip()
    return value if value.startswith("sha256:") else f"sha256:{value}"


def engine_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """The environment for ONE engine call: ours, plus what this engine was configured with."""
    return {**os.environ, **(extra or {})}


def run_engine(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    input: bytes | None = None,
    what: str = "",
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run an engine command; failures become ContainerEngineException with command, code and stderr."""
    import subprocess  # here: an offline re-stage runs no engine and must not pay for the module

    try:
        proc = subprocess.run(
            list(cmd),
            env=dict(env) if env is not None else None,
            capture_output=True,
            timeout=timeout,
            input=input,
            check=False,
            cwd=cwd,
        )
    except FileNotFoundError as e:
        raise ContainerEngineException(
            f"{cmd[0]} is not installed or not on PATH; install it or pick another --engine",
            command=cmd,
        ) from e
    except subprocess.TimeoutExpired as e:
        raise ContainerEngineException(
            f"{what or cmd[0]} timed out after {timeout} s", command=cmd, stderr=e.stderr
        ) from e
    if proc.returncode != 0:
        raise ContainerEngineException(
            f"{what or cmd[0]} failed", command=cmd, returncode=proc.returncode, stderr=proc.stderr
        )
    return proc


def require_loaded(engine: Engine, image: Image, tag: str) -> EngineImageInfo:
    """What the engine reports after a load; an engine that accepted the bytes but lacks the id is an error.

    An engine can answer a load with success and yet hold another image (a
    tag that already pointed elsewhere, a silently re-built config), so the
    only proof of a load is the engine reporting the image id we sent.
    """
    image_id = normalize_image_id(image.config_name())
    info = engine.inspect(image_id)
    if info is None:
        raise ContainerEngineException(
            f"{engine.name} accepted {tag} but does not report image {image_id}; "
            f"check the {engine.name} storage (disk full, another process removing images?) and deploy again"
        )
    return info


def check_saved(engine: Engine, saved: Image, image_id: str, name: str) -> Image:
    """The saved archive must hold the image the engine named: anything else means it changed meanwhile."""
    want = normalize_image_id(image_id)
    got = normalize_image_id(saved.config_name())
    if got != want:
        close = getattr(saved, "close", None)
        if close is not None:
            close()
        raise IntegrityError(
            f"{engine.name} saved image {got} for {name}, which it reported as {want}: the image "
            "changed while it was saved; save it again",
            expected=want,
            actual=got,
        )
    return saved

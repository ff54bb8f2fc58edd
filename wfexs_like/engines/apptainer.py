"""Apptainer/Singularity behind the ``Engine`` protocol: a puller of SIF files, never an image store.

Apptainer runs a SIF file in place, so there is nothing to load, tag or
save: a SIF is deployed by staging it. What the binary is needed for is
``pull``, for the protocols only it speaks (``library://``, ``oras://``,
``shub://``) and for ``docker://`` when the caller prefers the engine's own
SIF conversion.

The pull goes through spython's ``run_command`` with the environment given
per call (cache and temp dirs, ``NOHTTPS`` for a plain-HTTP registry);
spython's ``Client.pull`` takes no environment, and setting ``os.environ``
around it would leak into every other thread.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from ..errors import ContainerEngineException
from ..fsutil import random_hex
from ..images.base import Image
from .base import EngineImageInfo, engine_env, run_engine

_NO_BINARY = (
    "neither apptainer nor singularity is installed (or on PATH); install Apptainer, "
    "or use docker:// tags, which are converted to SIF without it"
)
_IN_PLACE = (
    "Apptainer runs SIF files in place; there is no image store to {what}: a SIF is deployed by staging it"
)


def default_binary() -> str | None:
    return shutil.which("apptainer") or shutil.which("singularity")


class ApptainerEngine:
    name = "apptainer"

    def __init__(self, binary: str | None = None, *, env: Mapping[str, str] | None = None) -> None:
        self.binary = binary if binary is not None else default_binary()
        self.env: dict[str, str] = dict(env or {})

    @property
    def available(self) -> bool:
        return bool(self.binary) and shutil.which(str(self.binary)) is not None

    def _require_binary(self) -> str:
        if not self.binary:
            raise ContainerEngineException(_NO_BINARY)
        return self.binary

    def version(self) -> str:
        out = run_engine(
            [self._require_binary(), "--version"], env=engine_env(self.env), timeout=60, what="engine version"
        )
        return out.stdout.decode("utf-8", errors="replace").strip().rsplit(" ", 1)[-1]

    def pull(self, uri: str, dest: Path, *, plain_http: bool = False) -> None:
        """Pull ``uri`` as a SIF file at ``dest``, published by rename (never half-written there)."""
        from spython.utils import run_command

        binary = self._require_binary()
        dest = Path(dest)
        partial = dest.with_name(f".{dest.name}.{random_hex(8)}.tmp")
        cmd = [binary, "pull", "--force", "--name", str(partial), uri]
        extra = dict(self.env)
        if plain_http:
            # Apptainer reads the CLI's --nohttps from the environment too, under both prefixes.
            extra |= {"APPTAINER_NOHTTPS": "1", "SINGULARITY_NOHTTPS": "1"}
        try:
            try:
                result = run_command(cmd, quiet=True, environ=engine_env(extra))
            except OSError as e:
                raise ContainerEngineException(
                    f"{binary} could not be run ({e.strerror}); install Apptainer or fix the path to it",
                    command=cmd,
                ) from e
            code = result["return_code"]
            output = "".join(result.get("message") or ())
            if code != 0:
                raise ContainerEngineException(
                    f"{binary} could not pull {uri}", command=cmd, returncode=code, stderr=output
                )
            if not partial.is_file():
                raise ContainerEngineException(
                    f"{binary} pull {uri} succeeded but wrote no SIF file", command=cmd, stderr=output
                )
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)

    def inspect(self, name_or_id: str) -> EngineImageInfo | None:
        """Apptainer keeps no images, so it never has one."""
        return None

    def load(self, image: Image, tag: str) -> EngineImageInfo:
        raise ContainerEngineException(_IN_PLACE.format(what=f"load {tag} into"))

    def tag(self, image_id: str, tag: str) -> None:
        raise ContainerEngineException(_IN_PLACE.format(what=f"tag {image_id} in"))

    def save(self, name_or_id: str, work_dir: Path) -> Image:
        raise ContainerEngineException(_IN_PLACE.format(what=f"save {name_or_id} from"))

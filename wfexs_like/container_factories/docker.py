"""Docker through its SDK: only what differs from Podman lives here.

The SDK talks to the daemon's API directly, so loading streams a
docker-archive composed on the fly from the staged layout's blobs (Docker
20.10 cannot read OCI layouts) with no temporary archive on disk.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from ..errors import ContainerEngineException
from ..images.docker_archive import iter_docker_archive
from ..images.image import StoredImage
from ..model import ContainerType
from .docker_like import DockerLikeContainerFactory, EngineImage, normalize_image_id


def _split_tag(tag: str) -> tuple[str, str]:
    repo, sep, t = tag.rpartition(":")
    if not sep or "/" in t:
        return tag, "latest"
    return repo, t


class DockerContainerFactory(DockerLikeContainerFactory):
    def __init__(self, *args: Any, docker_client: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("engine_name", "docker")
        super().__init__(*args, **kwargs)
        self.runtime_cmd = self.progs_mapping.get("docker", "docker")
        self._docker = docker_client

    @classmethod
    def ContainerType(cls) -> ContainerType:
        return ContainerType.Docker

    @property
    def docker(self) -> Any:
        if self._docker is None:
            import docker

            try:
                self._docker = docker.from_env(timeout=600)
                self._docker.ping()
            except Exception as e:  # the SDK raises several unrelated types here
                self._docker = None
                raise ContainerEngineException(
                    "cannot reach the Docker engine; is dockerd running and is "
                    f"{os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')} accessible?",
                    command="docker.from_env().ping()",
                    stderr=str(e),
                ) from e
        return self._docker

    def engine_version(self) -> str:
        try:
            return str(self.docker.version()["Version"])
        except ContainerEngineException:
            raise
        except Exception as e:
            raise ContainerEngineException(
                "docker version failed", command="docker.version()", stderr=str(e)
            ) from e

    def _api_error(self, what: str, call: str, e: Exception) -> ContainerEngineException:
        status = getattr(getattr(e, "response", None), "status_code", None)
        return ContainerEngineException(what, command=call, returncode=status, stderr=str(e))

    def _engine_inspect(self, name_or_id: str) -> EngineImage | None:
        import docker.errors

        try:
            attrs = self.docker.api.inspect_image(name_or_id)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as e:
            if getattr(getattr(e, "response", None), "status_code", None) == 404:
                return None
            raise self._api_error(
                f"docker could not inspect {name_or_id}", f"inspect_image({name_or_id!r})", e
            ) from e
        return EngineImage(
            normalize_image_id(attrs["Id"]),
            tuple(attrs.get("RepoDigests") or ()),
            tuple(attrs.get("RepoTags") or ()),
        )

    def _engine_load(self, layout: Path, image: StoredImage, canonical_tag: str) -> None:
        import docker.errors

        try:
            for _ in self.docker.images.load(iter_docker_archive(image, [canonical_tag])):
                pass
        except docker.errors.APIError as e:
            raise self._api_error(
                f"docker could not load {canonical_tag} from {layout}",
                "images.load(<docker-archive stream>)",
                e,
            ) from e

    def _engine_tag(self, image_id: str, tag: str) -> None:
        import docker.errors

        repo, t = _split_tag(tag)
        try:
            self.docker.api.tag(image_id, repo, t)
        except docker.errors.APIError as e:
            raise self._api_error(
                f"docker could not tag {image_id} as {tag}", f"tag({image_id!r}, {repo!r}, {t!r})", e
            ) from e

    def _engine_save(self, name: str, dest: Path) -> None:
        import docker.errors

        try:
            image = self.docker.images.get(name)
            with open(dest, "wb") as fh:
                for chunk in image.save(chunk_size=1 << 20, named=False):
                    fh.write(chunk)
        except docker.errors.APIError as e:
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
            raise self._api_error(f"docker could not save {name}", f"images.get({name!r}).save()", e) from e

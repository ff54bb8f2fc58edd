"""Docker through its SDK, behind the ``Engine`` protocol.

The SDK talks to the daemon's API directly, so ``load`` streams a
docker-archive composed on the fly from any ``Image`` (Docker 20.10 cannot
read OCI layouts) with no temporary archive on disk. A client can be
injected (``daemon.WithClient``); otherwise one is made from the environment
on first use, so constructing a ``DockerEngine`` never needs a daemon, and
importing this module never imports the SDK.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import AbstractWfExSException, ContainerEngineException
from ..fsutil import atomic_write, random_hex
from ..images.base import Image
from .base import EngineImageInfo, check_saved, normalize_image_id, require_loaded

_SAVE_CHUNK = 1 << 20


def _split_tag(tag: str) -> tuple[str, str]:
    """The SDK tags with (repository, tag); a ':' after the last '/' separates them."""
    repo, sep, t = tag.rpartition(":")
    if not sep or "/" in t:
        return tag, "latest"
    return repo, t


def _endpoint(client: Any) -> str | None:
    """Where a client talks to, for messages: the SDK names every unix socket ``http+docker://localhost``."""
    api = getattr(client, "api", None)
    socket_path = getattr(getattr(api, "_custom_adapter", None), "socket_path", None)
    if socket_path:
        return f"unix://{socket_path}"
    base_url = getattr(api, "base_url", None)
    return str(base_url) if base_url else None


def _status(e: BaseException) -> int | None:
    return getattr(getattr(e, "response", None), "status_code", None)


class DockerEngine:
    name = "docker"

    def __init__(self, client: Any = None, *, timeout: float = 600) -> None:
        self._client = client
        self._owned = False  # an injected client is closed by whoever made it
        self.timeout = timeout

    def close(self) -> None:
        """Close the client this engine made (its pooled daemon connections); an injected one is kept."""
        if self._owned and self._client is not None:
            self._client.close()
            self._client = None
            self._owned = False

    @property
    def client(self) -> Any:
        """The SDK client; made (and pinged) on first use so a dead daemon is named clearly."""
        if self._client is None:
            import docker

            client = None
            try:
                client = docker.from_env(timeout=self.timeout)
                client.ping()
            except Exception as e:  # the SDK raises several unrelated types here
                if client is not None:
                    client.close()
                raise self._unreachable("docker.from_env().ping()", e) from e
            self._client, self._owned = client, True
        return self._client

    def _unreachable(self, call: str, e: BaseException) -> ContainerEngineException:
        where = _endpoint(self._client) or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return ContainerEngineException(
            f"cannot reach the Docker engine; is dockerd running and is {where} accessible?",
            command=call,
            stderr=str(e),
        )

    @contextlib.contextmanager
    def _call(self, what: str, call: str) -> Iterator[None]:
        """Turn whatever the SDK raises into ContainerEngineException naming the call; ours pass through."""
        import docker.errors
        import requests

        try:
            yield
        except AbstractWfExSException:
            raise
        except docker.errors.APIError as e:
            raise ContainerEngineException(what, command=call, returncode=_status(e), stderr=str(e)) from e
        except requests.exceptions.ConnectionError as e:
            raise self._unreachable(call, e) from e
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            raise ContainerEngineException(what, command=call, stderr=str(e)) from e

    def version(self) -> str:
        with self._call("docker version failed", "version()"):
            return str(self.client.version()["Version"])

    def inspect(self, name_or_id: str) -> EngineImageInfo | None:
        import docker.errors

        call = f"api.inspect_image({name_or_id!r})"
        with self._call(f"docker could not inspect {name_or_id}", call):
            try:
                attrs = self.client.api.inspect_image(name_or_id)
            except docker.errors.ImageNotFound:
                return None
            except docker.errors.APIError as e:
                if _status(e) == 404:
                    return None
                raise
        return EngineImageInfo(
            normalize_image_id(attrs["Id"]),
            tuple(attrs.get("RepoDigests") or ()),
            tuple(attrs.get("RepoTags") or ()),
        )

    def load(self, image: Image, tag: str) -> EngineImageInfo:
        """Stream ``image`` as a docker-archive naming ``tag``; a corrupt layer aborts the stream.

        The archive's layers are verified while they stream, so bad bytes
        raise ``IntegrityError`` before the end-of-archive marker and Docker
        sees a truncated tar it refuses, never a wrong image.
        """
        with self._call(f"docker could not load {tag}", "images.load(<docker-archive stream>)"):
            from ..images.docker_archive import iter_docker_archive  # only to load

            self.client.images.load(iter_docker_archive(image, [tag]))
        info = require_loaded(self, image, tag)
        if tag not in info.repo_tags:
            self.tag(info.image_id, tag)
            info = require_loaded(self, image, tag)
        return info

    def tag(self, image_id: str, tag: str) -> None:
        repo, t = _split_tag(tag)
        with self._call(
            f"docker could not tag {image_id} as {tag}", f"api.tag({image_id!r}, {repo!r}, {t!r})"
        ):
            self.client.api.tag(image_id, repo, t)

    def save(self, name_or_id: str, work_dir: Path) -> Image:
        """``docker save`` of exactly the image ``name_or_id`` resolves to now, checked by its id."""
        dest = Path(work_dir) / f"docker-save-{random_hex(16)}.tar"
        call = f"images.get({name_or_id!r}).save(named=False)"
        with self._call(f"docker could not save {name_or_id}", call):
            engine_image = self.client.images.get(name_or_id)
            with atomic_write(dest) as fh:
                for chunk in engine_image.save(chunk_size=_SAVE_CHUNK, named=False):
                    fh.write(chunk)
        from ..images.docker_archive import DockerArchiveImage  # only to save

        return check_saved(self, DockerArchiveImage(dest), engine_image.id, name_or_id)

"""Which ``Image`` source a reference is read from, and the fallbacks between sources.

This is policy, not mechanics: every source is an ``images``/``registry``/
``engines`` object behind the one ``Image`` interface, and the bytes reach
the blob store through ``write_to_store``. What is decided here:

- a registry tag is pulled through the native client, all tags of one call
  through one download pool (``prefetch``); a digest pin is exact, and a pin
  the registry no longer has falls back to its tag only when allowed;
- the registry is asked first; an image that exists only in the local
  engine (built, never pushed) is taken from the engine only when the
  registry cannot give it. So a registry image is always recorded with the
  registry's manifest (an image this tool loaded has no repo digests in the
  engine, and taking it from there would record a synthesized manifest
  instead of the pin), and the engine's SDK is not even imported unless a
  pull fails. The price: a local-only image whose registry is unreachable
  waits out the client's retries before the engine is asked;
- skopeo-style transports (``docker-archive:``, ``oci:``, ``oci-archive:``,
  ``docker-daemon:``) are read from where they live.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engines.base import Engine
from ..errors import (
    ContainerNotFoundException,
    IntegrityError,
    ManifestUnknownError,
    RegistryError,
    UnvouchedDigestError,
)
from ..images.base import Image
from ..images.blobstore import BlobStore
from ..images.layout import LayoutImage
from ..images.manifest import Platform
from ..images.store import write_to_store
from ..references import Reference
from .engine_source import EngineSource

if TYPE_CHECKING:
    from ..registry.client import PullResult, RegistryClient

logger = logging.getLogger(__name__)

Fetched = tuple[str, dict[str, Any]]
"""(manifest digest now in the store, where it came from: recorded in the sidecar)."""


def pin_from_fingerprint(fingerprint: str | None) -> str | None:
    """The manifest digest a ``name@sha256:...`` fingerprint pins, if any."""
    if fingerprint and "@sha256:" in fingerprint:
        return "sha256:" + fingerprint.rsplit("@sha256:", 1)[1]
    return None


def pull_source(result: PullResult) -> dict[str, Any]:
    return {
        "source": "registry",
        "index_digest": result.index_digest,
        "downloaded_bytes": result.downloaded_bytes,
        "downloaded_blobs": result.downloaded_blobs,
        "reused_blobs": result.reused_blobs,
        # "registry" (its Docker-Content-Digest matched), "pinned" (asked by digest) or "tofu"
        # (fetched by tag without that header: trusted on first use)
        "digest_source": result.digest_source,
        # which host (a mirror, a pull-through cache, the registry itself) sent the index, the
        # manifest and each downloaded blob; the record keeps the upstream name
        "fetched_from": dict(result.served_by),
    }


def docker_name(ref: Reference) -> str:
    """The plain docker name of a ``docker-daemon:`` (or docker) reference."""
    return dataclasses.replace(ref, scheme="docker").canonical()


class ImageSources:
    """Open and fetch the image a reference names, into one blob store."""

    def __init__(
        self,
        store: BlobStore,
        *,
        client: Callable[[], RegistryClient],
        engine: Callable[[], Engine | None],
        docker_daemon: Callable[[], Engine],
        platform: Platform | None,
        work_dir: Path,
        allow_tag_fallback: bool = False,
        engine_fallback: bool = True,
    ) -> None:
        self.store = store
        self._client = client
        self.platform = platform
        self.allow_tag_fallback = allow_tag_fallback
        self._prefetched: dict[str, PullResult | BaseException] = {}
        self.engine = EngineSource(store, engine, docker_daemon, work_dir, fallback=engine_fallback)

    # -- planning -----------------------------------------------------------------------------
    def prefetch(self, wanted: Sequence[tuple[Reference, str | None]]) -> None:
        """Pull every registry image of one call through one pool (a shared layer is fetched once)."""
        self._prefetched.clear()
        todo: list[tuple[str, tuple[str, str, str]]] = []
        for ref, pin in wanted:
            if not ref.is_registry or ref.scheme not in ("docker", "oras"):
                continue
            todo.append(
                (ref.canonical(), (ref.registry or "docker.io", ref.repository, pin or ref.tag or "latest"))
            )
        if len(todo) < 2:
            return
        results = self._client().pull_many([t[1] for t in todo], self.store, platform=self.platform)
        for (key, _), res in zip(todo, results, strict=True):
            self._prefetched[key] = res

    # -- fetching -----------------------------------------------------------------------------
    def fetch(self, ref: Reference, pin: str | None) -> Fetched:
        """Put the image ``ref`` names (exactly ``pin`` when given) in the store."""
        if ref.scheme == "docker-daemon":
            digest, source = self.engine.fetch(ref, docker_name(ref))
            check_pin(ref, pin, digest)
            return digest, source
        if ref.scheme in ("docker-archive", "oci", "oci-archive"):
            digest = write_to_store(self.open_local(ref), self.store)
            check_pin(ref, pin, digest)
            return digest, {"source": ref.scheme, "path": str(ref.repository)}
        if not ref.is_registry or ref.scheme not in ("docker", "oras"):
            raise ContainerNotFoundException(
                f"no image source of this engine reads {ref.scheme} references; give a registry tag, "
                "or use --engine singularity for SIF files and URLs"
            )
        try:
            result = self._pull(ref, pin)
        except UnvouchedDigestError:
            raise  # the engine's copy of that name is vouched for by nothing either
        except RegistryError as e:
            pinned_and_gone = isinstance(e, ManifestUnknownError) and pin is not None
            engine_img = None if pinned_and_gone else self.engine.image(ref.canonical())
            if engine_img is None:
                raise
            logger.warning("%s: %s; using the engine's copy", ref.canonical(), e)
            return self.engine.fetch(ref, engine_img.image_id)
        return result.manifest_digest, pull_source(result)

    def open_local(self, ref: Reference) -> Image:
        path = Path(ref.repository)
        if not path.exists():
            raise ContainerNotFoundException(f"{ref.canonical()}: {path} does not exist")
        if ref.scheme == "docker-archive":
            from ..images.docker_archive import DockerArchiveImage  # archives only when one is read

            return DockerArchiveImage(path, repo_tag=ref.transport_ref)
        if ref.scheme == "oci":
            return LayoutImage(path, ref_name=ref.transport_ref, platform=self.platform)
        from ..images.oci_archive import OciArchiveImage  # archives only when one is read

        return OciArchiveImage(path, ref_name=ref.transport_ref, platform=self.platform)

    def _pull(self, ref: Reference, pin: str | None) -> PullResult:
        registry = ref.registry or "docker.io"
        result = self._prefetched.pop(ref.canonical(), None)
        try:
            if isinstance(result, BaseException):
                raise result
            if result is None:
                image = self._client().image(
                    registry, ref.repository, pin or ref.tag or "latest", platform=self.platform
                )
                write_to_store(image, self.store)
                result = image.last_pull
            assert result is not None
            return result
        except ManifestUnknownError as e:
            if not pin:
                raise
            if ref.tag and self.allow_tag_fallback:
                logger.warning("%s no longer has %s; falling back to tag %s", registry, pin, ref.tag)
                return self._client().pull(
                    registry, ref.repository, ref.tag, self.store, platform=self.platform
                )
            hint = f"; allow falling back to tag '{ref.tag}' to use what it points to now" if ref.tag else ""
            raise ContainerNotFoundException(
                f"{registry}/{ref.repository} no longer has the pinned digest {pin}{hint}"
            ) from e


def check_pin(ref: Reference, pin: str | None, digest: str) -> None:
    """A pin is exact: a source that now holds another image is an error, never a silent swap."""
    if pin is not None and digest != pin:
        raise IntegrityError(
            f"{ref.canonical()} now holds image {digest}, not the pinned {pin}; "
            "re-materialize without the pin to take what it holds now",
            expected=pin,
            actual=digest,
        )

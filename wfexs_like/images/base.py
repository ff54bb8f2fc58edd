"""The one image shape every place an image lives speaks: ``Image`` and ``Layer``.

Shaped after go-containerregistry's ``v1.Image`` / ``v1.Layer`` (snake_case):
a registry, an OCI layout, a docker-archive, an oci-archive, an engine and
the blob store are each a *source* of this shape, and a layout, an archive,
an engine, the store and a SIF are *sinks* that take one
(``copy(src, sink)`` in ``copy.py``). A new place an image lives is one new
module here, never a new branch in a factory.

Like go-containerregistry's ``partial`` package, a source implements only
what it is good at (``BaseImage``: the raw manifest, the raw config and a
way to open one blob) and everything else is derived once, here: parsing,
the config-digest check, diff ids, layer objects, compression.

**Integrity is the reader's default.** A layer's ``compressed()`` stream is
hashed as it is read and raises ``IntegrityError`` at the end when the bytes
are not the ones its digest names, unless the source vouches for the file
(the blob store's size+mtime trust record). ``uncompressed()`` checks the
diff id the same way. A sink therefore never publishes wrong bytes, whatever
the source.
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from ..digests import CHUNK, sha256_bytes
from ..errors import CacheError, IntegrityError
from .compression import Compression, decompressing_reader, from_media_type, sniff
from .manifest import (
    INDEX_TYPES,
    Descriptor,
    Manifest,
    ManifestError,
    Platform,
    image_platform,
    parse_manifest,
)


@runtime_checkable
class Layer(Protocol):
    """One layer: a (usually compressed) tar blob plus the diff id its image's config pins."""

    def digest(self) -> str:
        """sha256 of the blob as stored and served (compressed, if the layer is)."""
        ...

    def diff_id(self) -> str:
        """sha256 of the uncompressed tar: what engines key layers by."""
        ...

    def media_type(self) -> str: ...

    def size(self) -> int:
        """Bytes of the blob as stored."""
        ...

    def compressed(self) -> BinaryIO:
        """The blob's bytes, verified against ``digest()`` as they are read; the caller closes it."""
        ...

    def uncompressed(self) -> BinaryIO:
        """The layer as a plain tar stream, verified against ``diff_id()``; the caller closes it."""
        ...

    def local_path(self) -> Path | None:
        """A file holding exactly the blob's bytes *already verified*, for sinks that link; else None."""
        ...


@runtime_checkable
class Image(Protocol):
    """One single-platform image."""

    def digest(self) -> str:
        """sha256 of the manifest bytes: the image's identity across registries."""
        ...

    def config_name(self) -> str:
        """The config digest, which Docker and Podman call the image id."""
        ...

    def media_type(self) -> str: ...

    def raw_manifest(self) -> bytes: ...

    def raw_config_file(self) -> bytes: ...

    def manifest(self) -> Manifest: ...

    def config(self) -> Mapping[str, Any]: ...

    def platform(self) -> Platform: ...

    def layers(self) -> Sequence[Layer]: ...

    def layer_by_digest(self, digest: str) -> Layer: ...

    def size(self) -> int:
        """Bytes of every blob the image needs (manifest + config + layers, as stored)."""
        ...

    def blob_digests(self) -> tuple[str, ...]:
        """Every blob the image references, manifest first, without repeats."""
        ...


# -- the derived half ------------------------------------------------------------------------


class VerifyingReader(io.RawIOBase):
    """Reads through ``raw`` hashing every byte; at the end, the wrong bytes raise IntegrityError.

    ``on_mismatch`` runs before the error is raised (the blob store moves a
    rotten blob aside there), ``on_verified`` once the whole stream matched.
    Closing early checks nothing: only a reader that saw the whole stream can
    vouch for it.
    """

    def __init__(
        self,
        raw: BinaryIO,
        digest: str,
        size: int | None,
        what: str,
        on_mismatch: Callable[[str], None] | None = None,
        on_verified: Callable[[], None] | None = None,
    ) -> None:
        self._raw = raw
        self._on_verified = on_verified
        self._digest = digest
        self._size = size
        self._what = what
        self._on_mismatch = on_mismatch
        self._hash = hashlib.sha256()
        self._seen = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._raw.readinto(b) if hasattr(self._raw, "readinto") else _readinto(self._raw, b)
        if n:
            self._hash.update(memoryview(b)[:n])
            self._seen += n
            if self._size is not None and self._seen > self._size:
                self._fail(f"is longer than the {self._size} bytes its descriptor promises")
        elif not self._checked:
            self._check()
        return n or 0

    def _check(self) -> None:
        self._checked = True
        if self._size is not None and self._seen != self._size:
            self._fail(f"has {self._seen} bytes, its descriptor says {self._size}")
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._digest:
            if self._on_mismatch is not None:
                self._on_mismatch(actual)
            raise IntegrityError(
                f"{self._what} does not hash to {self._digest} (got {actual}): the bytes are corrupt "
                "or were altered; fetch the image again",
                expected=self._digest,
                actual=actual,
            )
        if self._on_verified is not None:
            self._on_verified()

    def _fail(self, why: str) -> None:
        self._checked = True
        raise IntegrityError(f"{self._what} {why}; fetch the image again", expected=self._digest)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _readinto(raw: BinaryIO, b: Any) -> int:
    data = raw.read(len(b))
    b[: len(data)] = data
    return len(data)


def buffered(raw: io.RawIOBase) -> BinaryIO:
    return io.BufferedReader(raw, buffer_size=CHUNK)  # type: ignore[return-value]


class BlobLayer:
    """A ``Layer`` of a ``BaseImage``: a descriptor, its diff id, and the image's way to open blobs."""

    def __init__(self, image: BaseImage, descriptor: Descriptor, diff_id: str) -> None:
        self._image = image
        self.descriptor = descriptor
        self._diff_id = diff_id
        self._compression: Compression | None = None

    def digest(self) -> str:
        return self.descriptor.digest

    def diff_id(self) -> str:
        return self._diff_id

    def media_type(self) -> str:
        return self.descriptor.media_type

    def size(self) -> int:
        return self.descriptor.size

    def compression(self) -> Compression:
        """What the bytes are (sniffed once), whatever the media type claims."""
        if self._compression is None:
            if not self._image.SNIFF_BLOBS:
                self._compression = from_media_type(self.media_type())
            else:
                with self._image.open_blob(self.descriptor) as fh:
                    head = fh.read(8)
                self._compression = sniff(head) if head else from_media_type(self.media_type())
        return self._compression

    def is_gzip(self) -> bool:
        return self.compression() == "gzip"

    def local_path(self) -> Path | None:
        return self._image.blob_path(self.digest()) if self._image.blob_trusted(self.digest()) else None

    def compressed(self) -> BinaryIO:
        return self._compressed(self._image.blob_trusted(self.digest()))

    def _compressed(self, trusted: bool) -> BinaryIO:
        """The blob as stored, hashed on the way unless ``trusted`` (the image vouched for it).

        ``uncompressed`` passes the trust it already asked for (a ``stat`` or more per ask); a
        layer kind that reads its blobs another way overrides this, not ``compressed``."""
        fh = self._image.open_blob(self.descriptor)
        if trusted:
            return fh
        return buffered(
            VerifyingReader(
                fh,
                self.digest(),
                self.size(),
                f"layer blob {self.digest()} of {self._image.describe()}",
                on_mismatch=lambda _actual: self._image.blob_mismatch(self.digest()),
            )
        )

    def uncompressed(self) -> BinaryIO:
        what = f"layer {self.digest()} of {self._image.describe()}"
        digest, diff_id = self.digest(), self.diff_id()
        trusted = self._image.blob_trusted(digest)
        plain = decompressing_reader(self._compressed(trusted), what)
        if self.compression() == "none" and diff_id == digest:
            return plain  # already verified as the compressed stream
        if trusted and self._image.diff_id_checked(digest, diff_id):
            return plain  # these very bytes matched the diff id before (see BlobStore.diff_id_checked)
        # Remembered only for vouched-for bytes: an unverified stream's own check may not have run yet.
        remember = (lambda: self._image.record_diff_id(digest, diff_id)) if trusted else None
        return buffered(
            VerifyingReader(plain, diff_id, None, f"uncompressed {what} (diff id)", on_verified=remember)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.digest()}, {self.media_type()}, {self.size()} bytes)"


class BaseImage(abc.ABC):
    """Everything an ``Image`` answers, derived from three things a source provides.

    Subclasses implement ``raw_manifest``, ``raw_config_file`` (both already
    read from wherever the image lives) and ``open_blob``; optionally
    ``blob_path``/``blob_trusted`` when blobs are verified files a sink may
    link, ``blob_mismatch`` to react to rotten bytes, and ``describe`` for
    messages. The config is checked against the manifest's digest here, and
    the manifest must be a single-platform one.
    """

    #: Whether opening a blob is cheap enough to sniff its compression (not so for a registry).
    SNIFF_BLOBS: bool = True
    _manifest_cache: Manifest | None = None
    _config_cache: Mapping[str, Any] | None = None
    _layers_cache: tuple[BlobLayer, ...] | None = None

    # -- what a source provides ---------------------------------------------------------
    @abc.abstractmethod
    def raw_manifest(self) -> bytes: ...

    @abc.abstractmethod
    def raw_config_file(self) -> bytes: ...

    @abc.abstractmethod
    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """The blob's bytes as the source holds them (unverified: ``BlobLayer`` verifies)."""

    def blob_path(self, digest: str) -> Path | None:
        return None

    def blob_trusted(self, digest: str) -> bool:
        """True when the bytes ``open_blob`` gives were verified already (no need to re-hash)."""
        return False

    def blob_mismatch(self, digest: str) -> None:  # noqa: B027 - optional hook
        """Called when a blob's bytes turned out wrong, before IntegrityError is raised."""

    def diff_id_checked(self, digest: str, diff_id: str) -> bool:
        """True when the trusted blob ``digest`` is known to uncompress to ``diff_id`` (no re-hash)."""
        return False

    def record_diff_id(self, digest: str, diff_id: str) -> None:  # noqa: B027 - optional hook
        """Called when a trusted blob's uncompressed bytes were hashed to ``diff_id`` in full."""

    def describe(self) -> str:
        return f"image {self.digest()}"

    # -- derived --------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        if self._manifest_cache is None:
            raw = self.raw_manifest()
            try:
                parsed = parse_manifest(raw)
            except ManifestError as e:
                raise CacheError(f"{self.describe_source()}: the manifest is unreadable: {e}") from e
            if parsed.media_type in INDEX_TYPES:
                raise CacheError(f"{self.describe_source()}: an image index, not a single image")
            self._manifest_cache = parsed
        return self._manifest_cache

    def describe_source(self) -> str:
        """A name for messages that does not need the manifest (``describe`` may)."""
        return type(self).__name__

    def digest(self) -> str:
        return sha256_bytes(self.manifest().raw)

    def media_type(self) -> str:
        return self.manifest().media_type

    def config_name(self) -> str:
        return self.manifest().config.digest

    def config(self) -> Mapping[str, Any]:
        if self._config_cache is None:
            raw = self.raw_config_file()
            want = self.manifest().config.digest
            got = sha256_bytes(raw)
            if got != want:
                raise IntegrityError(
                    f"the config of {self.describe()} hashes to {got}, the manifest says {want}: "
                    "the image is corrupt; fetch it again",
                    expected=want,
                    actual=got,
                )
            try:
                cfg = json.loads(raw)
            except ValueError as e:
                raise CacheError(f"the config {want} of {self.describe()} is not valid JSON: {e}") from e
            if not isinstance(cfg, Mapping):
                raise CacheError(f"the config {want} of {self.describe()} is not a JSON object")
            self._config_cache = cfg
        return self._config_cache

    def diff_ids(self) -> list[str]:
        rootfs = self.config().get("rootfs") or {}
        return [str(d) for d in (rootfs.get("diff_ids") or [])]

    def layers(self) -> tuple[BlobLayer, ...]:
        if self._layers_cache is None:
            descs = self.manifest().layers
            diff_ids = self.diff_ids()
            if len(diff_ids) != len(descs):
                raise CacheError(
                    f"{self.describe()}: the config lists {len(diff_ids)} diff_ids for {len(descs)} "
                    "layers; the image is malformed, fetch it again"
                )
            self._layers_cache = tuple(
                BlobLayer(self, d, diff) for d, diff in zip(descs, diff_ids, strict=True)
            )
        return self._layers_cache

    def layer_by_digest(self, digest: str) -> BlobLayer:
        for layer in self.layers():
            if layer.digest() == digest:
                return layer
        raise CacheError(f"{self.describe()} has no layer {digest}")

    def layer_by_diff_id(self, diff_id: str) -> BlobLayer:
        for layer in self.layers():
            if layer.diff_id() == diff_id:
                return layer
        raise CacheError(f"{self.describe()} has no layer with diff id {diff_id}")

    def platform(self) -> Platform:
        return image_platform(self.config())

    def size(self) -> int:
        m = self.manifest()
        return len(m.raw) + m.config.size + sum(x.size() for x in self.layers())

    def blob_digests(self) -> tuple[str, ...]:
        seen: dict[str, None] = {self.digest(): None, self.config_name(): None}
        for layer in self.layers():
            seen.setdefault(layer.digest(), None)
        return tuple(seen)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe_source()})"


class LoadedImage(BaseImage):
    """A source that reads its manifest and config when opened (files on disk): the getters, once."""

    _raw_manifest: bytes
    _raw_config: bytes
    _digest: str

    def raw_manifest(self) -> bytes:
        return self._raw_manifest

    def raw_config_file(self) -> bytes:
        return self._raw_config

    def digest(self) -> str:
        return self._digest

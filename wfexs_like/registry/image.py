"""A registry as an image source: ``RemoteImage``, resolved only when first asked.

Why lazy: a caller builds one for every tag a workflow names, and most of
them are answered from the cache; building one must cost nothing, so only
an image that is really read or copied ever reaches the network. The first
question that needs the manifest resolves it (HEAD, then GET; an index is
narrowed to one platform) and pins it: every later answer, ``fetch_into``
included, is about that manifest even if the tag moves meanwhile.

Reading a layer streams the blob GET itself (``BlobLayer`` verifies the
digest as it is read); copying the whole image into a store goes through
the client's parallel, resumable pull instead (``fetch_into``), which
``images.store.write_to_store`` prefers when a source offers it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from ..errors import RegistryError
from ..images.base import BaseImage, VerifyingReader, buffered
from ..images.blobstore import BlobStore
from ..images.manifest import Descriptor, Index, Platform, parse_manifest_or_index
from ..progress import check_cancelled
from .client import (
    STREAM_CHUNK,
    DigestSource,
    ManifestChoice,
    PullResult,
    RegistryClient,
    check_platform,
    foreign_urls,
    image_label,
)
from .httpio import Response
from .transport import STREAM_ERRORS, RetryPolicy, ShortRead, content_range_start, describe, pause, safe_url

log = logging.getLogger(__name__)

#: A config is a few KiB; one claiming more than this is refused before a byte is fetched.
MAX_CONFIG_BYTES = 32 << 20


class RemoteImage(BaseImage):
    """The image ``registry/repository:reference`` names (for ``platform``), read through ``client``.

    ``platform`` falls back to the client's, then to this machine's; it picks
    the entry of an index, and a single-platform image that can't meet an
    explicit one fails with ``PlatformMismatchError`` once its config is read.
    """

    #: Opening a blob is a network request: trust the media type instead of sniffing bytes.
    SNIFF_BLOBS = False

    def __init__(
        self,
        client: RegistryClient,
        registry: str,
        repository: str,
        reference: str,
        *,
        platform: Platform | None = None,
    ) -> None:
        self.client = client
        self.registry = registry
        self.repository = repository
        self.reference = reference
        self.requested_platform = platform
        #: What the last ``fetch_into`` did (downloaded_bytes, reused_blobs, ...); None before one.
        self.last_pull: PullResult | None = None
        self._choice: ManifestChoice | None = None
        self._raw_config: bytes | None = None
        self._lock = threading.Lock()

    # -- resolution -------------------------------------------------------------------
    @property
    def label(self) -> str:
        return image_label(self.registry, self.repository, self.reference)

    def _explicit(self) -> Platform | None:
        return self.requested_platform or self.client.platform

    def _chosen(self) -> ManifestChoice:
        with self._lock:
            if self._choice is None:
                want = self._explicit() or Platform.host()
                self._choice = self.client._select(self.registry, self.repository, self.reference, want)
            return self._choice

    @property
    def index_digest(self) -> str | None:
        """The index the manifest was chosen from; None when the reference names a single manifest."""
        index = self._chosen().index
        return index.digest if index is not None else None

    @property
    def digest_source(self) -> DigestSource:
        """Who vouches for the digest the reference resolved to (``tofu``: nobody but the connection)."""
        return self._chosen().digest_source

    @property
    def manifest_digest(self) -> str:
        """The chosen (single-platform) manifest: what ``digest()`` answers."""
        return self._chosen().manifest.digest

    # -- what a source provides -------------------------------------------------------
    def digest(self) -> str:
        return self.manifest_digest

    def raw_manifest(self) -> bytes:
        return self._chosen().manifest.raw

    def raw_config_file(self) -> bytes:
        """The config blob, verified; for a single manifest, checked against an explicit platform."""
        if self._raw_config is not None:
            return self._raw_config
        choice = self._chosen()
        desc = choice.manifest.config
        if desc.size > MAX_CONFIG_BYTES:
            raise RegistryError(
                f"the manifest of {self.label} says its config {desc.digest} is {desc.size} bytes, more "
                f"than the {MAX_CONFIG_BYTES >> 20} MiB any image config needs; refusing it (a broken or "
                "hostile image)"
            )
        what = f"config {desc.digest} of {self.label}"
        with contextlib.closing(
            buffered(VerifyingReader(self.open_blob(desc), desc.digest, desc.size, what))
        ) as fh:
            raw = fh.read()
        try:
            config: Any = json.loads(raw)
        except ValueError:
            config = None  # config() reports it, with the digest
        if isinstance(config, dict):
            explicit = self._explicit()
            check_platform(
                self.label, config, choice.index is not None, explicit or Platform.host(), explicit
            )
        self._raw_config = raw
        return raw

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """The blob GET's body, resumed with Range if it breaks; a foreign layer tries its URLs first."""
        ep = self.client._endpoint(self.registry)
        failed: list[str] = []
        for url in [*foreign_urls(descriptor), None]:

            def open_at(offset: int, url: str | None = url) -> Response:
                return self.client._open_blob_at(ep, self.repository, descriptor, url, offset, self.label)

            what = f"reading blob {descriptor.digest} of {self.label}"
            try:
                body = _ResumingBody(open_at, descriptor.size, what, self.client.policy)
            except RegistryError as e:
                if url is None:
                    if failed:
                        raise RegistryError(
                            f"layer {descriptor.digest} of {self.label} could be read neither from its URLs "
                            f"({'; '.join(failed)}) nor from the registry ({e})",
                            status=e.status,
                        ) from e
                    raise
                failed.append(f"{safe_url(url)}: {e}")
                log.warning(
                    "%s: foreign layer %s not read from %s: %s",
                    self.label,
                    descriptor.digest,
                    safe_url(url),
                    e,
                )
                continue
            return buffered(body)
        raise AssertionError("unreachable: the registry itself is always the last source")

    def describe(self) -> str:
        choice = self._choice
        return f"image {self.label}" + (f" ({choice.manifest.digest})" if choice is not None else "")

    def describe_source(self) -> str:
        return f"registry image {self.label}"

    # -- sink shortcut ----------------------------------------------------------------
    def fetch_into(self, store: BlobStore) -> str:
        """Pull this image into ``store`` (parallel, resumable, shared blobs once); its manifest digest.

        Once resolved, the pull is of the pinned manifest, never of whatever
        the tag names now. A config already read is put in the store instead
        of fetched again, and still counted as downloaded in ``last_pull``.
        """
        with self._lock:
            choice = self._choice
        seeded = choice is not None and self._seed_config(store, choice)
        [result] = self.client._pull_all(
            [(self.registry, self.repository, self.reference, choice)], store, self.requested_platform
        )
        if isinstance(result, BaseException):
            raise result
        if seeded and choice is not None and result.reused_blobs:
            result = dataclasses.replace(
                result,
                downloaded_bytes=result.downloaded_bytes + choice.manifest.config.size,
                downloaded_blobs=result.downloaded_blobs + 1,
                reused_blobs=result.reused_blobs - 1,
            )
        self.last_pull = result
        if choice is None:
            with self._lock:
                if self._choice is None:
                    self._choice = ManifestChoice(
                        result.manifest,
                        _stored_index(store, result.index_digest),
                        digest_source=result.digest_source,
                    )
        return result.manifest_digest

    def _seed_config(self, store: BlobStore, choice: ManifestChoice) -> bool:
        digest = choice.manifest.config.digest
        if self._raw_config is None:
            return False
        store.pin(digest)
        if store.has(digest):
            return False
        with store.lock(digest):
            if store.has(digest):
                return False
            store.put_bytes(self._raw_config, expected_digest=digest)
        return True


def _stored_index(store: BlobStore, digest: str | None) -> Index | None:
    if digest is None:
        return None
    doc = parse_manifest_or_index(store.path(digest).read_bytes())
    return doc if isinstance(doc, Index) else None


class _ResumingBody(io.RawIOBase):
    """A blob's body that, when the connection breaks, continues with a Range request where it stopped.

    ``open_at(offset)`` returns a 200 or 206 response (and raises for anything
    else). A server that ignores the Range answers 200 with the whole blob; the
    bytes already delivered are then skipped. Whether the bytes are right is
    not this reader's business: the ``VerifyingReader`` above it hashes them.
    """

    def __init__(
        self,
        open_at: Callable[[int], Response],
        size: int,
        what: str,
        policy: RetryPolicy,
    ) -> None:
        self._open_at = open_at
        self._size = size
        self._what = what
        self._policy = policy
        self._offset = 0
        self._attempt = 0
        self._skip = 0
        self._pending = memoryview(b"")
        self._resp: Response | None = None
        self._chunks: Any = None
        self._eof = False
        self._connect()

    def readable(self) -> bool:
        return True

    def _connect(self) -> None:
        resp = self._open_at(self._offset)
        self._skip = 0
        if self._offset and resp.status_code == 206:
            start = content_range_start(resp)
            if start is None or start > self._offset:
                resp.close()
                raise RegistryError(
                    f"{self._what}: asked to resume at byte {self._offset}, the server sent "
                    f"Content-Range {resp.headers.get('Content-Range')!r}; try again",
                    status=206,
                )
            self._skip = self._offset - start
        elif self._offset:
            log.info("%s: server ignored Range; skipping the %d bytes already read", self._what, self._offset)
            self._skip = self._offset
        self._resp = resp
        self._chunks = resp.iter_content(STREAM_CHUNK)

    def _resume(self, why: BaseException) -> None:
        url = self._resp.url if self._resp is not None else ""
        self._release()
        check_cancelled()  # a body cut by Ctrl-C is not a network failure to retry
        reason = why if isinstance(why, ShortRead) else describe(why, url)
        if self._attempt >= self._policy.retries:
            raise RegistryError(
                f"{self._what}: the transfer kept breaking off ({reason}) after {self._attempt + 1} "
                "attempts; try again later"
            ) from why
        delay = self._policy.delay(self._attempt)
        log.info("%s: %s; resuming at byte %d in %.2f s", self._what, reason, self._offset, delay)
        self._attempt += 1
        pause(delay)
        self._connect()

    def readinto(self, b: Any) -> int:
        while not self._pending:
            if self._eof or self._chunks is None:
                return 0
            check_cancelled()
            try:
                chunk = next(self._chunks)
            except StopIteration:
                if self._offset >= self._size:
                    self._eof = True
                    self._release()
                    return 0
                self._resume(ShortRead(f"body ended at {self._offset} of {self._size} bytes"))
                continue
            except STREAM_ERRORS as e:
                self._resume(e)
                continue
            if self._skip:
                dropped = min(self._skip, len(chunk))
                chunk = chunk[dropped:]
                self._skip -= dropped
            self._pending = memoryview(chunk)
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self._offset += n
        return n

    def _release(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
            self._chunks = None

    def close(self) -> None:
        try:
            self._release()
        finally:
            super().close()

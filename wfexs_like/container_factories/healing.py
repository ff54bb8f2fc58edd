"""Bit rot found late: which failures may be rot, and the error when it cannot be healed here.

The cheap checks (``BlobStore.unchanged`` on every reuse) catch an edited
blob before it is used; what slips past them (bytes that rot after the
check, or in the instant between our link and its re-recording) shows up
later as a build or a load that breaks. Such a failure is settled by
hashing the image's blobs (``images.store.rehash_image``): only a blob that
is really wrong is evicted and fetched again, and every caller retries
once, so a failure that is not rot, or rot that comes back, still ends in
an error instead of a loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import (
    ContainerEngineException,
    ContainerFactoryException,
    DiskFullError,
    IntegrityError,
    RegistryError,
    UnsafeArchiveError,
    UnsafeInputError,
)
from ..images.blobstore import BlobStore


def may_be_rot(error: BaseException) -> bool:
    """Could ``error`` come from a stored blob with wrong bytes? (worth hashing the image to know)

    Integrity and cache errors, and the layer-reading errors a corrupt
    compressed stream produces, may; a full disk, hostile input, the
    network and the engine's own refusals of a valid image may not (an
    engine that choked on a corrupt stream is asked about separately, see
    ``docker_like``).
    """
    if not isinstance(error, ContainerFactoryException):
        return False
    return not isinstance(
        error, (DiskFullError, UnsafeArchiveError, UnsafeInputError, RegistryError, ContainerEngineException)
    )


def downloaded_by(source: Mapping[str, Any]) -> frozenset[str]:
    """The blobs a pull downloaded (verified as they arrived), from its source record's ``fetched_from``."""
    fetched = source.get("fetched_from") or {}
    return frozenset(k for k in fetched if isinstance(k, str) and k.startswith("sha256:"))


def rot_error(reference: str, manifest_digest: str, bad: Sequence[str], store: BlobStore) -> IntegrityError:
    """Offline, or on the second failure: name the image and the blobs, and what to run."""
    blobs = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return IntegrityError(
        f"{reference}: blob {blobs} of image {manifest_digest} was corrupt in the cache at "
        f"{store.root} (moved to {store.root / 'corrupt'}) and offline mode forbids fetching it again; "
        "materialize it with network access, or run 'wfexs-like cache verify --repair'",
        expected=bad[0],
    )

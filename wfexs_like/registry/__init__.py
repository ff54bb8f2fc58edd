"""Native OCI distribution client: resolve tags, pick platforms, stream verified blobs into the store.

``RegistryClient`` pulls into a blob store; ``RegistryClient.image`` gives a
registry image as a lazy ``Image`` (``RemoteImage``); ``RegistryClient.download``
fetches plain files (SIFs) over the same transport. ``MirrorConfig`` says which
hosts a pull asks, in order (``--mirror``, ``registries.conf``).
"""

from .client import ProgressCallback, ProgressEvent, PullResult, RegistryClient
from .credentials import CredentialResolver, Credentials
from .download import download
from .image import RemoteImage
from .mirrors import MirrorConfig, PullSource, merge_mirror_tables
from .transport import RetryPolicy

__all__ = [
    "CredentialResolver",
    "Credentials",
    "MirrorConfig",
    "ProgressCallback",
    "ProgressEvent",
    "PullResult",
    "PullSource",
    "RegistryClient",
    "RemoteImage",
    "RetryPolicy",
    "download",
    "merge_mirror_tables",
]

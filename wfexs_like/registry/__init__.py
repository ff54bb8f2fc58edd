"""Native OCI distribution client: resolve tags, pick platforms, stream verified blobs into the store."""

from .client import ProgressCallback, ProgressEvent, PullResult, RegistryClient
from .credentials import CredentialResolver, Credentials

__all__ = [
    "CredentialResolver",
    "Credentials",
    "ProgressCallback",
    "ProgressEvent",
    "PullResult",
    "RegistryClient",
]

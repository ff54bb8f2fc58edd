"""Native OCI distribution client: resolve tags, pick platforms, stream verified blobs into the store.

``RegistryClient`` pulls into a blob store; ``RegistryClient.image`` gives a
registry image as a lazy ``Image`` (``RemoteImage``); ``RegistryClient.download``
fetches plain files (SIFs) over the same transport. ``MirrorConfig`` says which
hosts a pull asks, in order (``--mirror``, ``registries.conf``).

The names load on first use (PEP 562): importing one submodule (``registry.mirrors``
for a flag's syntax) must not import the HTTP stack an offline run never uses.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from ..lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "CredentialResolver": ".credentials",
    "Credentials": ".credentials",
    "MirrorConfig": ".mirrors",
    "ProgressCallback": ".client",
    "ProgressEvent": ".client",
    "PullResult": ".client",
    "PullSource": ".mirrors",
    "RegistryClient": ".client",
    "RemoteImage": ".image",
    "RetryPolicy": ".transport",
    "download": ".download",
    "merge_mirror_tables": ".mirrors",
}

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


class _Package(types.ModuleType):
    """Keeps ``registry.download`` the function: importing the submodule of the same name binds the
    module on its package, which an eager ``from .download import download`` used to undo."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (name in _EXPORTS and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
    from .client import ProgressCallback, ProgressEvent, PullResult, RegistryClient
    from .credentials import CredentialResolver, Credentials
    from .download import download
    from .image import RemoteImage
    from .mirrors import MirrorConfig, PullSource, merge_mirror_tables
    from .transport import RetryPolicy

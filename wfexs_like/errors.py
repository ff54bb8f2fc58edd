"""One exception tree for the whole library.

The root names are the reference's (WfExS-backend's ``container_factories``),
so a workflow engine that catches ``ContainerFactoryException`` or
``ContainerNotFoundException`` keeps working unchanged. Everything we add
hangs under them, so one ``except ContainerFactoryException`` still catches
all of it, and each message says what failed and what to do next.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath


class AbstractWfExSException(Exception):
    """Root of every error this library raises on purpose."""


class ContainerFactoryException(AbstractWfExSException):
    """Something went wrong while materializing or deploying a container."""


class ContainerEngineException(ContainerFactoryException):
    """A container engine (docker, podman, apptainer, mksquashfs...) failed.

    Carries the command (or API call), its exit code and the tail of its
    stderr, because those three are what a user needs to act on it.
    """

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] | str | None = None,
        returncode: int | None = None,
        stderr: str | bytes | None = None,
    ) -> None:
        self.command = command
        self.returncode = returncode
        if isinstance(stderr, bytes):
            stderr = stderr.decode("utf-8", errors="replace")
        self.stderr_tail = _tail(stderr or "")
        parts = [message]
        if command is not None:
            cmd = command if isinstance(command, str) else " ".join(map(str, command))
            parts.append(f"command: {cmd}")
        if returncode is not None:
            parts.append(f"exit code: {returncode}")
        if self.stderr_tail:
            parts.append(f"stderr (tail):\n{self.stderr_tail}")
        super().__init__("\n".join(parts))


class ContainerNotFoundException(ContainerFactoryException):
    """A container image or its metadata could not be found.

    ``failures`` lists ``(tag, reason)`` for every tag that failed, so a
    caller materializing many tags learns about all of them at once.
    """

    def __init__(self, message: str, *, failures: Sequence[tuple[str, str]] = ()) -> None:
        self.failures = list(failures)
        super().__init__(message)

    @classmethod
    def for_failures(cls, verb: str, failures: Sequence[tuple[str, str]]) -> ContainerNotFoundException:
        """One exception naming every failed tag with its reason, so a user fixes them all at once."""
        lines = "\n".join(f"  - {name}: {reason}" for name, reason in failures)
        return cls(f"could not {verb} {len(failures)} container(s):\n{lines}", failures=failures)


class InvalidReferenceError(ContainerFactoryException, ValueError):
    """A container tag that cannot be parsed; the message names the tag."""


class ProvenanceError(ContainerFactoryException, ValueError):
    """A provenance (YAML) file that cannot be read safely or is malformed."""


class UnsafeInputError(ContainerFactoryException, ValueError):
    """An input file refused before it is read in full: too large, too deeply nested, an alias or
    entity bomb, an include cycle. The message names the file and the limit it broke."""


class UnsafeRecordsError(ProvenanceError, UnsafeInputError):
    """A containers record refused as unsafe to read (too large, an alias bomb, nested too deeply).

    Both a ``ProvenanceError`` (what every records reader promises) and an
    ``UnsafeInputError`` (what every bounded reader raises), so either
    ``except`` catches it.
    """


class CacheError(ContainerFactoryException):
    """The local cache is unusable (corrupted entry, unwritable dir...)."""


class IntegrityError(CacheError):
    """Bytes do not match the digest they were promised to have.

    Raised for a blob that arrives corrupted from a registry, a cached blob
    that rotted on disk, or a staged snapshot that was tampered with. Nothing
    is ever published under a final name when this is raised.
    """

    def __init__(self, message: str, *, expected: str | None = None, actual: str | None = None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message)


class RegistryError(ContainerFactoryException):
    """A registry answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        self.status = status
        self.url = url
        super().__init__(message)


class UnvouchedDigestError(RegistryError):
    """``--require-digest``: nothing but the connection vouches for a manifest fetched by tag.

    Its own class so that no fallback (the engine's copy of the same name)
    quietly replaces what the user asked to be refused.
    """


class AuthenticationError(RegistryError):
    """The registry refused our credentials, or demanded some we lack."""


class ManifestUnknownError(RegistryError, ContainerNotFoundException):
    """The registry does not have that tag or digest."""


class PlatformMismatchError(ContainerNotFoundException):
    """An image index offers no manifest for the requested platform."""

    def __init__(self, message: str, *, available: Sequence[str] = ()) -> None:
        self.available = list(available)
        super().__init__(message)


class UnsafeArchiveError(ContainerFactoryException):
    """An archive or layer member would land outside its destination."""


class DiskFullError(CacheError):
    """No room left where we were writing: the filesystem is full (ENOSPC) or a quota is reached (EDQUOT).

    Carries the directory, the bytes the step needed and the bytes free, so
    the one-line message tells a user how much to free and where. Whatever
    was half-written has been removed by the time this is raised.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        what: str | None = None,
        needed: int | None = None,
        at_least: bool = False,
        free: int | None = None,
        errno: int | None = None,
    ) -> None:
        self.path = path
        self.what = what
        self.needed = needed
        self.at_least = at_least
        self.free = free
        self.errno = errno
        super().__init__(message)


#: How much of a user's text (a tag, a path, a value read from a file) a message quotes.
QUOTE_LIMIT = 200


def quote(text: object, limit: int = QUOTE_LIMIT) -> str:
    """``text`` as a message quotes it: ``repr``-escaped, so a newline or an escape sequence in it
    can neither split the message's line nor drive the terminal, and cut to ``limit`` characters
    with its full length said, so a 50 MB tag is not echoed whole. Anything not text is named by
    its type alone: its ``repr`` may be unbounded.
    """
    if isinstance(text, PurePath):
        text = str(text)
    if isinstance(text, bytes | bytearray):
        kept, unit = bytes(_cut(bytes(text), limit)), "bytes"
    elif isinstance(text, str):
        kept, unit = _cut(text, limit), "characters"
    else:
        return f"<{type(text).__name__}>"
    shown = repr(kept)
    if len(kept) < len(text):
        shown += f"\u2026 ({len(text)} {unit})"
    return shown


def _cut(text: str | bytes, limit: int) -> str | bytes:
    """The longest start of ``text`` whose escaped form fits in ``limit`` characters."""
    width = 0
    for i in range(min(len(text), limit)):
        width += len(repr(text[i : i + 1])) - (3 if isinstance(text, bytes) else 2)
        if width > limit:
            return text[:i]
    return text[:limit]


def quote_list(values: Sequence[object], limit: int = 10) -> str:
    """The first ``limit`` of ``values``, each quoted (``quote``), and how many more there are."""
    shown = ", ".join("None" if v is None else quote(v, 80) for v in values[:limit])
    more = len(values) - limit
    return f"[{shown}]" + (f" and {more} more" if more > 0 else "")


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])

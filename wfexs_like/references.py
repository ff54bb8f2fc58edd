"""Container tags, parsed once and written back one canonical way.

A workflow names the same image in many spellings (``busybox``,
``docker://busybox``, ``index.docker.io/library/busybox:latest``). Cache keys,
registry calls, staged file names and provenance records must not depend on
which spelling a workflow happened to use, so every later step works on a
:class:`Reference` and on the strings this module derives from it.

Accepted string forms (what :func:`parse_reference` reads):

``[docker:/…/][host[:port]/]path[:tag][@digest]``
    Docker's reference grammar (the distribution ``reference`` package),
    including Docker Hub's short names and its ``library/`` namespace. A
    ``docker:`` prefix is a scheme only when a ``/`` follows it, because
    ``docker:24-dind`` is the official Docker-in-Docker *image*; likewise
    ``docker:5000/img`` is the registry host ``docker`` on port 5000.
``oras://[host[:port]/]path[:tag][@digest]``
    The same grammar and defaults as Docker (what Apptainer's ORAS support
    does through go-containerregistry).
``library://[host/]entity/collection/container[:tag][@digest]``
    Apptainer's grammar: a host is only recognised as the first of *four*
    components; shorter paths (``library://alpine``,
    ``library://sylabs/examples/lolcow``) mean the default endpoint, recorded
    as ``cloud.sylabs.io``. ``library:///path`` (empty host) means the default
    endpoint too.
``shub://[host/]user/image[:tag][@digest]``
    Singularity Hub; the host rule is Docker's, the default host is
    ``singularity-hub.org``.
``http(s)://host[:port]/path[?query]``
    A SIF (or other image file) behind a URL.
``/abs/path``, ``./rel``, ``../rel``, ``file:///abs``, ``file://localhost/abs``, ``file:path``
    A local image file (or sandbox directory); relative paths are resolved
    against the current directory at parse time.
``docker-archive:PATH[:REF]``, ``oci:DIR[:REF]``, ``oci-archive:PATH[:REF]``
    skopeo's (containers/image's) transports for images kept as files: a
    ``docker save`` tar (maybe compressed), an OCI image layout directory,
    a tar of one. As there, the path ends at the first ``:`` (so it cannot
    contain one) and the rest names one image inside: for ``oci`` its
    ``org.opencontainers.image.ref.name``, for ``docker-archive`` a Docker
    reference (a tag, never a digest: ``docker save`` records tags). Relative
    paths are resolved as for files.
``docker-daemon:REF``
    An image that exists only in the local engine, by its Docker reference.
    Docker's defaults apply, never the per-type default registries: the
    engine names its images that way whatever a workflow's registry is.

Scheme names are read case-insensitively and, as for ``docker:``, digits
then ``/`` (or the end) after any of them mean a registry port:
``oci:5000/img`` is the host ``oci`` on port 5000 and ``oci:5000`` Docker
Hub's image ``oci``, tag ``5000``; write ``oci:./5000`` for a directory.

Digests are ``sha256:<64 lowercase hex>`` or ``sha512:<128 lowercase hex>``;
nothing else identifies content unambiguously enough to be trusted as a pin.

A local path is never read as a registry name, so it is never sent to one:
besides ``/``, ``./``, ``../`` and ``file:``, a scheme-less name that ends
like an image file (``image.sif``, ``dir/saved.tar.gz``, ``x.img``) with no
tag or digest is refused as ambiguous, naming both spellings that say what
was meant (``./dir/image.sif``, ``docker://dir/image.sif``). No reference is
longer than ``REFERENCE_LENGTH_MAX`` characters. Messages quote a tag
escaped and cut short (``errors.quote``), with a URL's password masked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from .container_types import ContainerType
from .errors import InvalidReferenceError, quote

__all__ = [
    "DEFAULT_TAG",
    "DOCKER_HUB",
    "DOCKER_HUB_API",
    "REFERENCE_LENGTH_MAX",
    "SINGULARITY_HUB",
    "SYLABS_LIBRARY",
    "SYLABS_LIBRARY_API",
    "Reference",
    "format_reference",
    "nextflow_file_name",
    "parse_reference",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# Every name Docker Hub has gone by; all of them denote one registry, so one
# cache entry.
DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API, "registry.hub.docker.com"})
DOCKER_OFFICIAL_NAMESPACE = "library"
SYLABS_LIBRARY = "cloud.sylabs.io"
SYLABS_LIBRARY_API = "library.sylabs.io"
SINGULARITY_HUB = "singularity-hub.org"
DEFAULT_TAG = "latest"

REGISTRY_SCHEMES = ("docker", "oras", "library", "shub")
OCI_SCHEMES = ("docker", "oras")
URL_SCHEMES = ("http", "https")
FILE_SCHEME = "file"
DOCKER_DAEMON = "docker-daemon"
DOCKER_ARCHIVE = "docker-archive"
PATH_TRANSPORTS = (DOCKER_ARCHIVE, "oci", "oci-archive")
TRANSPORTS = (*PATH_TRANSPORTS, DOCKER_DAEMON)
SCHEMES = (*REGISTRY_SCHEMES, *URL_SCHEMES, FILE_SCHEME, *TRANSPORTS)
# Schemes whose names follow Docker's grammar and defaults (Docker Hub, its
# aliases and its library/ namespace).
_DOCKER_NAMED = (*OCI_SCHEMES, DOCKER_DAEMON)

NAME_TOTAL_LENGTH_MAX = 255
#: No reference is longer: Linux's PATH_MAX, and more than any image URL needs. Checked first, so a
#: 50 MB "tag" costs nothing to refuse.
REFERENCE_LENGTH_MAX = 4096
TAG_LENGTH_MAX = 128
LIBRARY_PATH_COMPONENTS_MAX = 3

_ALNUM = "[a-z0-9]+"
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*")
# Go's \w is ASCII-only; spell it out so Python's Unicode \w cannot widen it.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = re.compile(
    rf"(?:(?P<domain>{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*)|\[(?P<ipv6>[A-Fa-f0-9:]+)\])"
    r"(?::(?P<port>[0-9]+))?"
)
_HEX = re.compile(r"[0-9A-Fa-f]*")
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")
_SCHEME_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# The user-info part of a URL's authority (``scheme://user:password@``): never repeated in a message.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]+@")
_PORT_THEN_PATH = re.compile(r"[0-9]+(?:/|$)")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
# How image files are named (Apptainer's SIFs, saved images, WfExS-backend's staged .img); as a
# registry name, such a tag is almost surely a file.
_IMAGE_FILE_SUFFIXES = (".sif", ".simg", ".img", ".tar", ".tar.gz", ".tgz")
_FILE_NAME_MAX = 200
_SHORT_HASH_LENGTH = 12


class _Invalid(Exception):
    """Why a piece of a reference is wrong, raised before we know which whole
    string (the user's tag, or a hand-built Reference) the message must quote."""


@dataclass(frozen=True)
class Reference:
    """One container image location, always in canonical form.

    Construction validates and normalises (host lowercased, Docker Hub
    aliases folded to ``docker.io``, the implicit ``library/`` namespace made
    explicit, ``latest`` filled in when neither tag nor digest is given), so
    two References are equal exactly when they denote the same image, and
    ``parse_reference(format_reference(r)) == r`` holds for every value that
    can exist. Invalid fields raise :class:`InvalidReferenceError`.

    For ``http``/``https``, ``repository`` is the URL without its
    ``scheme://`` (host, path and query), so the host is not lost while
    ``registry`` stays None; for ``file`` it is the absolute, normalised path.
    Neither carries a tag or a digest: an image file's checksum belongs in
    the container record (``Container.signature``), not in its address.

    The path transports (``docker-archive``, ``oci``, ``oci-archive``) are
    files too: ``repository`` is the absolute path, ``tag`` the image named
    inside (``transport_ref``; a Docker reference in canonical form for
    ``docker-archive``), never a digest. ``docker-daemon`` has the fields of
    the Docker reference it names.
    """

    scheme: str
    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        try:
            registry, repository, tag = _normalise(
                self.scheme, self.registry, self.repository, self.tag, self.digest
            )
        except _Invalid as exc:
            fields = ", ".join(f"{f.name}={_shown(getattr(self, f.name))}" for f in dataclasses.fields(self))
            raise InvalidReferenceError(f"invalid container reference ({fields}): {exc}") from None
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "repository", repository)
        object.__setattr__(self, "tag", tag)

    @property
    def is_registry(self) -> bool:
        """True when the image is fetched by name from a registry service."""
        return self.scheme in REGISTRY_SCHEMES

    @property
    def is_transport(self) -> bool:
        """True for skopeo's transports: ``docker-archive``, ``oci``, ``oci-archive``, ``docker-daemon``.

        Their images come from no service, so nothing resolves or pins them
        over the network.
        """
        return self.scheme in TRANSPORTS

    @property
    def is_local(self) -> bool:
        """True when the image is on this machine's filesystem: a file, or a path transport."""
        return self.scheme == FILE_SCHEME or self.scheme in PATH_TRANSPORTS

    @property
    def path(self) -> Path:
        """Where a local image (``is_local``) is on disk."""
        if not self.is_local:
            raise InvalidReferenceError(
                f"{quote(self.canonical())} is not a local file or directory: it has no path; "
                "check is_local first"
            )
        return Path(self.repository)

    @property
    def transport_ref(self) -> str | None:
        """What a transport names inside its place: the image in an archive or layout, or the
        engine's name for it (``docker.io/library/busybox:latest``); None when nothing is named."""
        if self.scheme in PATH_TRANSPORTS:
            return self.tag
        if self.scheme == DOCKER_DAEMON:
            return self.canonical().removeprefix(f"{DOCKER_DAEMON}:")
        return None

    @property
    def name(self) -> str:
        """``registry/repository``: the name a registry API is asked about.

        For URLs it is the URL and for files the path, so that ``name`` is
        always something that locates the bytes; an engine's image has its
        Docker name.
        """
        if self.is_registry or self.scheme == DOCKER_DAEMON:
            return f"{self.registry}/{self.repository}"
        if self.scheme in URL_SCHEMES:
            return f"{self.scheme}://{self.repository}"
        return self.repository

    def canonical(self) -> str:
        """The one string used as this image's identity (cache keys, records).

        Fully qualified, except that a ``library://`` reference on the default
        endpoint omits ``cloud.sylabs.io``: Apptainer would send the request
        to that host literally, and only ``library://entity/collection/...``
        means "the configured library".
        """
        if self.scheme in URL_SCHEMES:
            return self.name
        if self.scheme == FILE_SCHEME:
            return self.repository
        if self.scheme in PATH_TRANSPORTS:
            return f"{self.scheme}:{self.repository}" + (f":{self.tag}" if self.tag is not None else "")
        if self.scheme == "docker":
            text = self.name
        elif self.scheme == DOCKER_DAEMON:
            text = f"{DOCKER_DAEMON}:{self.name}"
        elif self.scheme == "library" and self.registry == SYLABS_LIBRARY:
            text = f"library://{self.repository}"
        else:
            text = f"{self.scheme}://{self.name}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def __str__(self) -> str:
        return self.canonical()

    def pinned(self) -> str:
        """``registry/repository@digest``: the form that can never drift.

        The tag is dropped because a tag is a mutable pointer and the digest
        already says everything. Schemes other than ``docker`` keep their
        ``scheme://`` prefix so the string parses back to the same kind of
        reference.
        """
        if self.digest is None:
            raise InvalidReferenceError(
                f"container reference {quote(self.canonical())} is not pinned: it has no digest; "
                "resolve its tag against the registry first"
            )
        return dataclasses.replace(self, tag=None).canonical()

    def with_digest(self, digest: str) -> Reference:
        """The same reference pinned to ``digest``, keeping the tag for readers."""
        if self.is_transport:
            raise InvalidReferenceError(
                f"cannot pin {quote(self.canonical())} to {quote(digest)}: a {self.scheme}: image comes "
                "from no registry; record its image id in the container record instead"
            )
        if not self.is_registry:
            raise InvalidReferenceError(
                f"cannot pin {quote(self.canonical())} to {quote(digest)}: only registry images have "
                "digests; record a file's checksum in the container record instead"
            )
        return dataclasses.replace(self, digest=digest)

    @property
    def api_host(self) -> str:
        """The host to open HTTP connections to.

        Docker Hub and the Sylabs library answer their APIs on hosts other
        than the names images are known by.
        """
        if self.is_registry:
            assert self.registry is not None
            if self.scheme in OCI_SCHEMES and self.registry == DOCKER_HUB:
                return DOCKER_HUB_API
            if self.scheme == "library" and self.registry == SYLABS_LIBRARY:
                return SYLABS_LIBRARY_API
            return self.registry
        if self.scheme in URL_SCHEMES:
            return _url_split(self.repository)[0]
        if self.scheme == DOCKER_DAEMON:
            raise InvalidReferenceError(
                f"{quote(self.canonical())} is an image in the local engine: there is no host to talk to"
            )
        raise InvalidReferenceError(f"{quote(self.canonical())} is a local file: there is no host to talk to")


def parse_reference(
    tag: str,
    *,
    container_type: ContainerType | None = None,
    registries: Mapping[ContainerType, str] | None = None,
) -> Reference:
    """Turn any tag a workflow may write into its canonical :class:`Reference`.

    ``registries`` replaces Docker Hub as the registry of tags that name none
    (``{ContainerType.Docker: "quay.io"}`` makes ``samtools:1.15`` mean
    ``quay.io/samtools:1.15``). The entry for ``container_type`` wins; the
    ``ContainerType.Docker`` entry is the fallback, because Podman and
    Singularity images named without a scheme come from Docker registries.
    It applies to ``docker`` and ``oras`` references only: ``library://`` and
    ``shub://`` speak other protocols, whose endpoints a Docker registry
    cannot stand in for. Nor to transports: an archive, a layout and an
    engine name their images by Docker's defaults.
    """
    if not isinstance(tag, str):
        raise InvalidReferenceError(
            f"invalid container tag {quote(tag)}: expected a string, got {type(tag).__name__}"
        )
    if len(tag) > REFERENCE_LENGTH_MAX:
        raise InvalidReferenceError(
            f"invalid container tag {_shown(tag)}: it is {len(tag)} characters long; no image reference "
            f"is longer than {REFERENCE_LENGTH_MAX} (is this a file's content instead of a tag?)"
        )
    try:
        key: tuple[object, ...] | None = (
            tag,
            container_type,
            None if registries is None else frozenset(registries.items()),
        )
        ref = _PARSED.get(key)  # type: ignore[arg-type]
    except TypeError:  # a registries mapping of unhashable values: parsed every time
        key, ref = None, None
    if ref is None:
        try:
            fields = _parse(tag, container_type, registries)
            registry, repository, tag_ = _normalise(*fields)
        except _Invalid as exc:
            raise InvalidReferenceError(f"invalid container tag {_shown(tag)}: {exc}") from None
        ref = Reference(fields[0], registry, repository, tag_, fields[4])
        if key is not None and registry is not None:  # a path (oci:...) is absolute against the cwd
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[key] = ref
    return ref


#: Registry tags already parsed in this process: a factory parses each tag of a run several times
#: (its identity, its cache key, its staged name), and a Reference is immutable.
_PARSED: dict[tuple[object, ...], Reference] = {}
_PARSED_MAX = 4096


def format_reference(ref: Reference) -> str:
    """The string :func:`parse_reference` reads back into exactly ``ref``.

    It is the canonical form: normalisation happens when a Reference is
    built, so the canonical string already carries every field explicitly.
    """
    return ref.canonical()


def nextflow_file_name(tag: str | Reference) -> str:
    """A deterministic, filesystem-safe file name for an image, Nextflow style.

    Registry images flatten their canonical form (``/``, ``:`` and ``@``
    become ``-``), so a person can tell from ``containers/`` which image a
    file holds: ``quay.io/biocontainers/samtools:1.15--h1170115_1`` becomes
    ``quay.io-biocontainers-samtools-1.15--h1170115_1``. Schemes other than
    ``docker`` are prefixed (``library-``, ``oras-``, ``shub-``,
    ``docker-daemon-``); files, URLs and the path transports become
    ``<scheme>-<basename>-<hash>``, the hash (of the canonical form, so of
    the image named inside too) telling apart equal basenames in different
    places.

    The result only uses ``[A-Za-z0-9._-]``, never starts with ``.`` or
    ``-``, and is at most 200 characters, leaving room for suffixes such as
    ``_meta.json`` within the usual 255-byte limit; longer names are cut and
    end in a hash of the full canonical form.

    Flattening is lossy because ``-`` is also legal inside names and tags:
    ``quay.io/a-b/c:1`` and ``quay.io/a/b-c:1`` map to the same name, as do a
    tag ``sha256-<hex>`` and a digest ``sha256:<hex>`` on the same
    repository. Such pairs do not occur in practice; anything that needs
    identity must compare the canonical form (kept in the metadata sidecar),
    never the file name.
    """
    ref = tag if isinstance(tag, Reference) else parse_reference(tag)
    canonical = ref.canonical()
    if ref.scheme == "docker":
        name = _flatten(canonical)
    elif ref.is_registry or ref.scheme == DOCKER_DAEMON:
        # Always spell the host out, even the default library endpoint, so
        # that two library endpoints never share a file name.
        qualified = ref.name + (f":{ref.tag}" if ref.tag else "") + (f"@{ref.digest}" if ref.digest else "")
        name = f"{ref.scheme}-{_flatten(qualified)}"
    else:
        if ref.scheme in URL_SCHEMES:
            host, path = _url_split(ref.repository)
            path = path.split("?", 1)[0]
            base = posixpath.basename(path.rstrip("/")) or host
        else:
            base = posixpath.basename(ref.repository)
        name = f"{ref.scheme}-{_UNSAFE_FILE_CHARS.sub('_', base)}-{_short_hash(canonical)}"
    if len(name) > _FILE_NAME_MAX:
        name = f"{name[: _FILE_NAME_MAX - _SHORT_HASH_LENGTH - 1]}-{_short_hash(canonical)}"
    if name.startswith((".", "-")):
        name = "_" + name
    return name


# --------------------------------------------------------------------------
# Parsing: split a string into raw fields; _normalise() validates them.
# --------------------------------------------------------------------------

_RawFields = tuple[str, str | None, str, str | None, str | None]


def _parse(
    tag: str,
    container_type: ContainerType | None,
    registries: Mapping[ContainerType, str] | None,
) -> _RawFields:
    if not tag:
        raise _Invalid("it is empty")
    match = _SCHEME_PREFIX.match(tag)
    if match is not None:
        scheme, rest = match[1].lower(), tag[match.end() :]
        # "docker:5000/img" is the host "docker" on port 5000, not a scheme.
        if scheme in SCHEMES and not _PORT_THEN_PATH.match(rest):
            return _parse_scheme(tag, scheme, rest, container_type, registries)
        if rest.startswith("//"):
            expected = ", ".join(f"{s}:" if s in TRANSPORTS else f"{s}://" for s in SCHEMES)
            raise _Invalid(f"scheme {quote(match[1])} is not supported; expected one of {expected} or a path")
    if tag.startswith(("/", "./", "../")):
        return FILE_SCHEME, None, _absolute(tag), None, None
    _refuse_file_lookalike(tag)
    return _parse_oci("docker", tag, _default_registry("docker", container_type, registries))


def _refuse_file_lookalike(tag: str) -> None:
    """A scheme-less ``dir/image.sif`` is a relative path to an image file far more often than a
    registry repository named ``image.sif``; read as the latter, the user's path would be sent to
    a registry. Make the user say which one is meant."""
    if "@" in tag or ":" in tag.rpartition("/")[2]:
        return  # a tag or digest: an image name, whatever its spelling
    if tag.lower().endswith(_IMAGE_FILE_SUFFIXES):
        _check_characters(tag)
        raise _Invalid(
            f"it looks like an image file, not a registry image: give the file as {quote('./' + tag)} "
            f"(or docker-archive:, oci-archive: for a saved image), or write {quote('docker://' + tag)} "
            "for a registry image of that name"
        )


def _parse_scheme(
    tag: str,
    scheme: str,
    rest: str,
    container_type: ContainerType | None,
    registries: Mapping[ContainerType, str] | None,
) -> _RawFields:
    if scheme == "docker":
        if not rest.startswith("/"):
            # "docker:24-dind" is Docker Hub's docker image, tag 24-dind.
            return _parse_oci("docker", tag, _default_registry("docker", container_type, registries))
        rest = rest.lstrip("/")
        if not rest:
            raise _Invalid("it names no image after 'docker://'")
        return _parse_oci("docker", rest, _default_registry("docker", container_type, registries))
    if scheme == FILE_SCHEME:
        return _parse_file_uri(rest)
    if scheme in TRANSPORTS:
        return _parse_transport(scheme, rest)
    if not rest.startswith("//"):
        raise _Invalid(f"a {scheme} reference must start with '{scheme}://'")
    rest = rest[2:]
    if scheme in URL_SCHEMES:
        _check_characters(rest)
        return scheme, None, rest, None, None
    if scheme == "oras":
        return _parse_oci("oras", rest, _default_registry("oras", container_type, registries))
    if scheme == "shub":
        return _parse_oci("shub", rest, SINGULARITY_HUB)
    return _parse_library(rest)


def _parse_oci(scheme: str, text: str, default_registry: str) -> _RawFields:
    """Docker's rule: the first component is a host iff it has '.' or ':' or is localhost."""
    _check_characters(text)
    if _IMAGE_ID.fullmatch(text):
        raise _Invalid(
            "a bare 64-digit hex string is an image ID, not a name; "
            "write repository@sha256:<hex> to pin an image by digest"
        )
    name, tag, digest = _split_name(text)
    first, slash, remainder = name.partition("/")
    if slash and _looks_like_host(first):
        return scheme, first, remainder, tag, digest
    return scheme, default_registry, name, tag, digest


def _parse_library(text: str) -> _RawFields:
    """Apptainer's rule: only a fourth component makes the first one a host."""
    empty_host = text.startswith("/")
    if empty_host:
        text = text[1:]
    _check_characters(text)
    name, tag, digest = _split_name(text)
    parts = name.split("/")
    if len(parts) == LIBRARY_PATH_COMPONENTS_MAX + 1 and not empty_host:
        return "library", parts[0], "/".join(parts[1:]), tag, digest
    if len(parts) > LIBRARY_PATH_COMPONENTS_MAX:
        raise _Invalid("library paths are [host/]entity/collection/container")
    return "library", SYLABS_LIBRARY, name, tag, digest


def _parse_transport(scheme: str, rest: str) -> _RawFields:
    """containers/image's rule: the path ends at the first ':'; what follows names the image."""
    if rest.startswith("//"):
        example = f"{scheme}:busybox:1.36" if scheme == DOCKER_DAEMON else f"{scheme}:/abs/path"
        raise _Invalid(
            f"'{scheme}:' is not a URL scheme; write it with one colon and no '//', e.g. {example}"
        )
    if scheme == DOCKER_DAEMON:
        if not rest:
            raise _Invalid(f"it names no image after '{DOCKER_DAEMON}:'")
        if rest.startswith("sha256:") and _IMAGE_ID.fullmatch(rest[len("sha256:") :]):
            raise _Invalid(
                "that is an image ID, not a name; name the image as the engine lists it (repo:tag)"
            )
        return _parse_oci(DOCKER_DAEMON, rest, DOCKER_HUB)
    path, colon, ref = rest.partition(":")
    if not path:
        raise _Invalid(f"it names no path after '{scheme}:'")
    if colon and not ref:
        raise _Invalid("it has an empty image reference after the path's ':'")
    return scheme, None, _absolute(path), ref if colon else None, None


def _absolute(path: str) -> str:
    _check_characters(path, allow_spaces=True)
    return posixpath.join(os.getcwd(), path)


def _parse_file_uri(rest: str) -> _RawFields:
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host.lower() not in ("", "localhost"):
            raise _Invalid(
                f"file URLs name local files: host {quote(host)} must be empty (file:///path) or 'localhost'"
            )
        rest = slash + path
    if "?" in rest or "#" in rest:
        raise _Invalid("a file URL cannot have a query or a fragment (write '%3F' / '%23' in the name)")
    path = unquote(rest)
    if not path:
        raise _Invalid("it names no path after 'file:'")
    return FILE_SCHEME, None, _absolute(path), None, None


def _split_name(text: str) -> tuple[str, str | None, str | None]:
    name, at, digest = text.partition("@")
    if at:
        if not digest:
            raise _Invalid("it has an empty digest after '@'")
        if "@" in digest:
            raise _Invalid("it has more than one '@'")
    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
        if not tag:
            raise _Invalid("it has an empty tag after ':'")
    if not name:
        raise _Invalid("it names no repository")
    return name, tag, digest if at else None


def _default_registry(
    scheme: str,
    container_type: ContainerType | None,
    registries: Mapping[ContainerType, str] | None,
) -> str:
    if registries:
        for key in (container_type, ContainerType.Docker):
            value = registries.get(key) if key is not None else None
            if value:
                try:
                    return _registry_option(value, scheme)
                except _Invalid as exc:
                    raise _Invalid(f"the default registry for {key.name} is not usable: {exc}") from None
    return DOCKER_HUB


def _registry_option(value: str, scheme: str) -> str:
    """Accept what people paste as "the registry": a bare host or its URL."""
    text = value.strip()
    for prefix in ("https://", "http://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    text = text.rstrip("/")
    if "/" in text:
        raise _Invalid(f"{quote(value)} must be a host[:port], without a path")
    return _registry_host(text, scheme)


# --------------------------------------------------------------------------
# Validation and normalisation of fields, shared by parsing and Reference().
# --------------------------------------------------------------------------


def _normalise(
    scheme: str, registry: str | None, repository: str, tag: str | None, digest: str | None
) -> tuple[str | None, str, str | None]:
    if scheme not in SCHEMES:
        raise _Invalid(f"scheme {quote(scheme)} is not one of {', '.join(SCHEMES)}")
    if not isinstance(repository, str):
        raise _Invalid("the repository must be a string")
    if len(repository) > REFERENCE_LENGTH_MAX:
        raise _Invalid(
            f"the repository is {len(repository)} characters long; the limit is {REFERENCE_LENGTH_MAX}"
        )
    if scheme in PATH_TRANSPORTS:
        if registry is not None or digest is not None:
            raise _Invalid(f"{scheme} references have no registry or digest, only a path and a reference")
        path = _normalise_path(repository)
        if ":" in path:
            raise _Invalid(
                f"path {quote(path)} contains ':', which ends the path in {scheme}: references; "
                "rename the file or link it from a path without one"
            )
        return None, path, None if tag is None else _transport_ref(scheme, tag)
    if scheme not in (*REGISTRY_SCHEMES, DOCKER_DAEMON):
        if registry is not None or tag is not None or digest is not None:
            raise _Invalid(f"{scheme} references have no registry, tag or digest")
        if scheme in URL_SCHEMES:
            return None, _normalise_url(scheme, repository), None
        return None, _normalise_path(repository), None

    if not registry:
        raise _Invalid(f"{scheme} references need a registry host")
    registry = _registry_host(registry, scheme)
    _check_path(repository)
    if scheme in _DOCKER_NAMED and registry == DOCKER_HUB and "/" not in repository:
        repository = f"{DOCKER_OFFICIAL_NAMESPACE}/{repository}"
    if scheme == "library":
        components = repository.count("/") + 1
        if components > LIBRARY_PATH_COMPONENTS_MAX:
            raise _Invalid("library paths are [host/]entity/collection/container")
        if registry != SYLABS_LIBRARY and components != LIBRARY_PATH_COMPONENTS_MAX:
            raise _Invalid(
                f"a library host other than {SYLABS_LIBRARY} can only be given with an "
                "entity/collection/container path (Apptainer reads shorter paths as the host)"
            )
    full_name = f"{registry}/{repository}"
    if len(full_name) > NAME_TOTAL_LENGTH_MAX:
        raise _Invalid(
            f"repository name {quote(full_name)} is {len(full_name)} characters long; "
            f"the limit is {NAME_TOTAL_LENGTH_MAX}"
        )
    if tag is not None:
        _check_tag(tag)
    if digest is not None:
        _check_digest(digest)
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return registry, repository, tag


def _transport_ref(scheme: str, ref: str) -> str:
    """The image a path transport names inside it, validated; Docker references made canonical."""
    if not isinstance(ref, str) or not ref:
        raise _Invalid("the image reference after the path must be a non-empty string")
    try:
        _check_characters(ref)
        if scheme != DOCKER_ARCHIVE:
            return ref
        _, registry, repository, tag, digest = _parse_oci("docker", ref, DOCKER_HUB)
        registry, repository, tag = _normalise("docker", registry, repository, tag, digest)
    except _Invalid as exc:
        raise _Invalid(f"the image reference {quote(ref)} after the path is not valid: {exc}") from None
    if digest is not None:
        raise _Invalid(
            f"the image reference {quote(ref)} has a digest, but a docker archive names its images by tag "
            "only; write repository:tag"
        )
    return f"{registry}/{repository}:{tag}"


def _check_characters(text: str, *, allow_spaces: bool = False) -> None:
    for char in text:
        if ord(char) < 32 or ord(char) == 127 or (char.isspace() and not (allow_spaces and char == " ")):
            raise _Invalid(f"it contains whitespace or a control character ({char!r})")


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component.lower() == "localhost"


def _host(text: str, what: str) -> str:
    match = _HOST.fullmatch(text)
    if match is None:
        raise _Invalid(f"{what} {quote(text)} is not a valid host[:port]")
    if match["ipv6"] is not None:
        try:
            address = ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            raise _Invalid(f"{what} {quote(text)} is not a valid IPv6 address") from None
        # Newer Pythons print IPv4-mapped addresses with dots, which the
        # host grammar (and so our own parser) does not accept back.
        text_form = address.compressed if "." not in address.compressed else address.exploded
        host = f"[{text_form}]"
    else:
        host = match["domain"].lower()
    if match["port"] is not None:
        port = int(match["port"])
        if not 0 < port < 65536:
            raise _Invalid(f"{what} {quote(text)} has port {port}, outside 1-65535")
        host += f":{port}"
    return host


def _registry_host(text: str, scheme: str) -> str:
    host = _host(text, "registry host")
    if scheme in _DOCKER_NAMED and host in DOCKER_HUB_ALIASES:
        return DOCKER_HUB
    # library hosts are recognised by position; all others by their shape,
    # and a host of another shape would be read back as a namespace.
    if scheme != "library" and not _looks_like_host(host):
        raise _Invalid(
            f"registry host {quote(host)} has no '.' or ':' and is not 'localhost', "
            "so it would be read as a Docker Hub namespace"
        )
    return host


def _check_path(path: str) -> None:
    if not path:
        raise _Invalid("it names no repository")
    if path.endswith("/"):
        raise _Invalid("its repository path ends with '/'")
    components = path.split("/")
    if "" in components:  # a leading '/' is only reachable through '//'
        raise _Invalid("its repository path has an empty component ('//')")
    for component in components:
        if not _PATH_COMPONENT.fullmatch(component):
            if _PATH_COMPONENT.fullmatch(component.lower()):
                raise _Invalid("repository names must be lowercase")
            raise _Invalid(
                f"repository path component {quote(component)} is not valid: use lowercase letters and "
                "digits, joined by '.', '_', '__' or dashes"
            )


def _check_tag(tag: str) -> None:
    if len(tag) > TAG_LENGTH_MAX:
        raise _Invalid(f"its tag is {len(tag)} characters long; the limit is {TAG_LENGTH_MAX}")
    if not _TAG.fullmatch(tag):
        raise _Invalid(
            f"tag {quote(tag)} is not valid: use letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'"
        )


def _check_digest(digest: str) -> None:
    algorithm, colon, hex_digits = digest.partition(":")
    if not colon or not algorithm:
        raise _Invalid(f"digest {quote(digest)} is not of the form <algorithm>:<hex>")
    expected = _DIGEST_HEX_LENGTH.get(algorithm)
    if expected is None:
        raise _Invalid(f"digest algorithm {quote(algorithm)} is not supported; use sha256 (or sha512)")
    if not _HEX.fullmatch(hex_digits):
        raise _Invalid(f"digest {quote(digest)} is not hexadecimal")
    if len(hex_digits) != expected:
        raise _Invalid(f"a {algorithm} digest has {expected} hex digits, not {len(hex_digits)}")
    if hex_digits != hex_digits.lower():
        raise _Invalid("digest hex digits must be lowercase")


def _url_split(rest: str) -> tuple[str, str]:
    """(authority, path-and-query) of a URL written without its scheme."""
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    return rest[:cut], rest[cut:]


def _normalise_url(scheme: str, rest: str) -> str:
    _check_characters(rest)
    if "#" in rest:
        raise _Invalid("URL fragments ('#...') are never sent to a server; remove it")
    authority, tail = _url_split(rest)
    if "@" in authority:
        raise _Invalid("credentials in a URL end up in logs and provenance records; use a .netrc instead")
    if not authority:
        raise _Invalid("the URL names no host")
    host = _host(authority, "URL host")
    default_port = f":{_DEFAULT_PORTS[scheme]}"
    if host.endswith(default_port):
        host = host[: -len(default_port)]
    if not tail.startswith("/") or tail.split("?", 1)[0] == "/":
        raise _Invalid("the URL names no file")
    return host + tail


def _normalise_path(path: str) -> str:
    _check_characters(path, allow_spaces=True)
    if not path.startswith("/"):
        raise _Invalid(f"local image paths must be absolute, not {quote(path)}")
    path = posixpath.normpath(path)
    if path.startswith("//"):  # POSIX lets normpath keep two leading slashes
        path = "/" + path.lstrip("/")
    if path == "/":
        raise _Invalid("the path names the root directory, not an image")
    return path


def _shown(value: object) -> str:
    """A tag, or a field of a hand-built Reference, as a message shows it: bounded (``quote``), and
    with the password of a ``scheme://user:password@host`` masked, since messages reach logs."""
    if isinstance(value, str):
        value = _USERINFO.sub(r"\1***@", value)
    return "None" if value is None else quote(value)


def _flatten(text: str) -> str:
    for separator in "/:@":
        text = text.replace(separator, "-")
    return _UNSAFE_FILE_CHARS.sub("_", text)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_SHORT_HASH_LENGTH]

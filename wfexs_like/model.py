"""The records a workflow engine exchanges with the container factories.

Names and string values are the reference's (WfExS-backend ``common``), so
records written by either tool can be read by the other (see
``provenance``). Paths are ``pathlib.Path``; strings given for them are
converted on construction so that a record built by hand equals the same
record loaded back from YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NewType

from .container_types import ContainerType, coerce_container_type
from .references import DOCKER_ARCHIVE, parse_reference

__all__ = [
    "DOCKER_SCHEME",
    "DOCKER_URI_PREFIX",
    "META_JSON_POSTFIX",
    "Container",
    "ContainerOperatingSystem",
    "ContainerTaggedName",
    "ContainerType",
    "Fingerprint",
    "ImageMetadata",
    "ProcessorArchitecture",
    "URIType",
]

META_JSON_POSTFIX = "_meta.json"

DOCKER_SCHEME = "docker"
DOCKER_URI_PREFIX = DOCKER_SCHEME + ":"

Fingerprint = NewType("Fingerprint", str)
URIType = NewType("URIType", str)
ProcessorArchitecture = NewType("ProcessorArchitecture", str)
ContainerOperatingSystem = NewType("ContainerOperatingSystem", str)


def _coerce_registries(
    value: Mapping[ContainerType | str, str] | None,
) -> dict[ContainerType, str] | None:
    if value is None:
        return None
    return {coerce_container_type(k): str(v) for k, v in value.items()}


def _coerce_path(value: Path | str | None) -> Path | None:
    if value is None or isinstance(value, Path):
        return value
    return Path(value)


@dataclass
class ContainerTaggedName:
    """A container as a workflow names it, before anything is fetched.

    ``registries`` maps a container type to the default registry used when
    the tag names none (e.g. ``{ContainerType.Docker: "quay.io"}``).
    """

    origTaggedName: str
    type: ContainerType
    registries: Mapping[ContainerType, str] | None = None

    def __post_init__(self) -> None:
        self.type = coerce_container_type(self.type)
        self.registries = _coerce_registries(self.registries)


@dataclass
class Container(ContainerTaggedName):
    """A materialized container: what ran, where its bytes are, and their digests.

    - ``taggedName``: canonical tag (``docker.io/library/busybox:1.36``).
    - ``signature``: the image id (``sha256:`` of the image config), what the
      engine reports after loading; for SIF, the SIF file's digest.
    - ``fingerprint``: the registry pin, ``registry/repo@sha256:<manifest>``.
    - ``image_signature``: digest of the staged snapshot as written to disk.
    - ``localPath``/``metadataLocalPath``: the staged snapshot and its sidecar.
    - ``source_type``: where the bytes came from (Docker for a SIF built from
      ``docker://``), which may differ from ``type``.
    """

    taggedName: str = ""
    architecture: str | None = None
    operatingSystem: str | None = None
    localPath: Path | None = None
    signature: str | None = None
    fingerprint: str | None = None
    metadataLocalPath: Path | None = None
    source_type: ContainerType | None = None
    image_signature: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.localPath = _coerce_path(self.localPath)
        self.metadataLocalPath = _coerce_path(self.metadataLocalPath)
        if self.source_type is not None:
            self.source_type = coerce_container_type(self.source_type)

    def _value_defaults_fixes(self) -> None:
        """Fill what old records left out, exactly as the reference does.

        Records from old working directories lack the metadata path and the
        source type; both follow from the other fields.
        """
        if self.metadataLocalPath is None and self.localPath is not None:
            self.metadataLocalPath = self.localPath.with_name(self.localPath.name + META_JSON_POSTFIX)
        if self.source_type is None:
            docker_sif = self.type == ContainerType.Singularity and self.taggedName.startswith(
                DOCKER_URI_PREFIX
            )
            if docker_sif or self.type == ContainerType.Podman:
                self.source_type = ContainerType.Docker
            else:
                self.source_type = self.type

    @property
    def decompose_docker_tagged_name(self) -> tuple[str | None, str, str | None]:
        """(registry, repository, tag) for docker-sourced images, as the reference offers.

        A docker-archive that names its image decomposes into that name; the
        other path transports (an OCI ``ref.name`` is no Docker name) have
        none to offer and decompose like non-Docker images.
        """
        name = self.taggedName or self.origTaggedName
        if self.source_type in (ContainerType.Docker, ContainerType.Podman) or (
            self.source_type is None and self.type in (ContainerType.Docker, ContainerType.Podman)
        ):
            ref = parse_reference(name)
            if ref.scheme == DOCKER_ARCHIVE and ref.tag is not None:
                ref = parse_reference(ref.tag)
            elif ref.is_transport and ref.is_local:
                return None, ref.canonical(), None
            return ref.registry, ref.repository, ref.tag or "latest"
        return None, name, None


@dataclass(frozen=True)
class ImageMetadata:
    """What the ``<name>_meta.json`` sidecar beside a snapshot records.

    It is enough to re-stage, verify and deploy the snapshot without any
    network: the manifest pin, the image id, the platform, the layer digests
    and the snapshot's own fingerprint.
    """

    tagged_name: str
    manifest_digest: str
    image_id: str
    image_signature: str
    architecture: str | None = None
    os: str | None = None
    variant: str | None = None
    registry: str | None = None
    repository: str | None = None
    size: int = 0
    layers: tuple[str, ...] = ()
    media_type: str | None = None
    snapshot_kind: str = "oci-layout"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def digest_source(self) -> str | None:
        """Who vouched for ``manifest_digest`` when the image was fetched, as ``extra`` records it.

        ``registry`` (its ``Docker-Content-Digest``), ``pinned`` (the tag's own
        ``@sha256:``) or ``tofu``: trust on first use, the registry named no
        digest. None when the snapshot was made from another source (a file,
        the engine, the cache) or by an older version.
        """
        value = self.extra.get("digest_source")
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "tagged_name": self.tagged_name,
            "manifest_digest": self.manifest_digest,
            "image_id": self.image_id,
            "image_signature": self.image_signature,
            "architecture": self.architecture,
            "os": self.os,
            "variant": self.variant,
            "registry": self.registry,
            "repository": self.repository,
            "size": self.size,
            "layers": list(self.layers),
            "media_type": self.media_type,
            "snapshot_kind": self.snapshot_kind,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageMetadata:
        return cls(
            tagged_name=str(data["tagged_name"]),
            manifest_digest=str(data["manifest_digest"]),
            image_id=str(data["image_id"]),
            image_signature=str(data["image_signature"]),
            architecture=data.get("architecture"),
            os=data.get("os"),
            variant=data.get("variant"),
            registry=data.get("registry"),
            repository=data.get("repository"),
            size=int(data.get("size") or 0),
            layers=tuple(data.get("layers") or ()),
            media_type=data.get("media_type"),
            snapshot_kind=str(data.get("snapshot_kind") or "oci-layout"),
            extra=dict(data.get("extra") or {}),
        )

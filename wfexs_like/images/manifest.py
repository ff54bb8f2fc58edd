"""The OCI / Docker v2 manifest vocabulary every image source and sink shares.

A registry, an OCI layout, a docker-archive and a daemon all describe an
image the same way: a manifest naming one config blob and ordered layer
blobs by digest, optionally behind an index that picks one manifest per
platform. Parsing that once here keeps the registry client and the snapshot
writers from each growing their own half-compatible copy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..digests import is_digest, sha256_bytes
from ..errors import ContainerFactoryException, PlatformMismatchError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
#: What we send as ``Accept`` so a registry can answer with any of them.
ACCEPT_MANIFESTS = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


class ManifestError(ContainerFactoryException):
    """A manifest or index that is not valid JSON or lacks required fields."""


@dataclass(frozen=True)
class Platform:
    """``os/arch[/variant]`` as OCI indexes spell it (``linux/arm64/v8``)."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ContainerFactoryException(
                f"invalid platform {text!r}: expected os/arch or os/arch/variant, e.g. linux/amd64"
            )
        arch = _ARCH_ALIASES.get(parts[1], parts[1])
        return cls(parts[0], arch, parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine, in OCI names (``x86_64`` becomes ``amd64``)."""
        uname = os.uname()  # what platform.machine()/system() read, without importing platform
        machine = uname.machine.lower()
        arch = _ARCH_ALIASES.get(machine, machine)
        variant = "v8" if arch == "arm64" else ("v7" if machine == "armv7l" else None)
        return cls(uname.sysname.lower(), arch, variant)

    def matches(self, other: Platform) -> bool:
        """Does an index entry ``other`` satisfy this request? A missing variant matches any."""
        if self.os != other.os or self.architecture != other.architecture:
            return False
        if self.variant is None or other.variant is None:
            return True
        return self.variant == other.variant

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class Descriptor:
    """A pointer to a blob: media type, digest, size (and platform inside an index)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "manifest") -> Descriptor:
        try:
            digest = str(data["digest"])
            size = int(data["size"])
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{where}: descriptor without a valid digest/size: {data!r}") from e
        if not is_digest(digest):
            raise ManifestError(f"{where}: descriptor has malformed digest {digest!r}")
        if size < 0:
            raise ManifestError(f"{where}: descriptor {digest} has negative size")
        plat = None
        p = data.get("platform")
        if isinstance(p, Mapping) and p.get("os") and p.get("architecture"):
            plat = Platform(str(p["os"]), str(p["architecture"]), p.get("variant") or None)
        return cls(
            media_type=str(data.get("mediaType") or ""),
            digest=digest,
            size=size,
            platform=plat,
            annotations=dict(data.get("annotations") or {}),
            urls=tuple(data.get("urls") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            p: dict[str, Any] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                p["variant"] = self.platform.variant
            out["platform"] = p
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.urls:
            out["urls"] = list(self.urls)
        return out


@dataclass(frozen=True)
class Manifest:
    """A single-platform image manifest, kept with its exact bytes (the digest is of those)."""

    raw: bytes
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def digest(self) -> str:
        return sha256_bytes(self.raw)


@dataclass(frozen=True)
class Index:
    """An OCI index or Docker manifest list."""

    raw: bytes
    media_type: str
    manifests: tuple[Descriptor, ...]

    @property
    def digest(self) -> str:
        return sha256_bytes(self.raw)

    def platforms(self) -> list[str]:
        return [str(d.platform) for d in self.manifests if d.platform is not None]

    def select(self, want: Platform) -> Descriptor:
        """Pick the manifest for ``want``; on no match say which platforms exist."""
        candidates = [
            d
            for d in self.manifests
            if d.platform is not None and want.matches(d.platform) and d.media_type not in INDEX_TYPES
        ]
        if not candidates:
            offered = self.platforms()
            raise PlatformMismatchError(
                f"no image for platform {want} in this index; it offers: "
                f"{', '.join(offered) or 'no platform-tagged manifests'}. "
                "Choose one with --platform os/arch[/variant].",
                available=offered,
            )
        # Prefer an exact variant match over a variant-less one.
        for d in candidates:
            if d.platform is not None and d.platform.variant == want.variant:
                return d
        return candidates[0]


def _load_json(raw: bytes, where: str) -> Mapping[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"{where} is not valid JSON: {e}") from e
    if not isinstance(data, Mapping):
        raise ManifestError(f"{where} is not a JSON object")
    return data


def detect_media_type(raw: bytes, header_type: str | None = None) -> str:
    """The media type of a manifest document: the body's own ``mediaType`` wins over the header."""
    data = _load_json(raw, "manifest")
    mt = data.get("mediaType") or header_type or ""
    if not mt:
        mt = OCI_INDEX if "manifests" in data else OCI_MANIFEST
    return str(mt).split(";")[0].strip()


def parse_manifest_or_index(raw: bytes, header_type: str | None = None) -> Manifest | Index:
    mt = detect_media_type(raw, header_type)
    data = _load_json(raw, "manifest")
    if mt in INDEX_TYPES:
        entries = data.get("manifests")
        if not isinstance(entries, Sequence):
            raise ManifestError("image index has no 'manifests' list")
        return Index(raw, mt, tuple(Descriptor.from_json(m, "index") for m in entries))
    if mt in MANIFEST_TYPES:
        if int(data.get("schemaVersion", 0)) != 2:
            raise ManifestError(f"unsupported manifest schemaVersion {data.get('schemaVersion')!r}")
        cfg = data.get("config")
        layers = data.get("layers")
        if not isinstance(cfg, Mapping) or not isinstance(layers, Sequence):
            raise ManifestError("image manifest lacks 'config' or 'layers'")
        return Manifest(
            raw,
            mt,
            Descriptor.from_json(cfg, "manifest config"),
            tuple(Descriptor.from_json(layer, "manifest layer") for layer in layers),
        )
    raise ManifestError(
        f"unsupported manifest media type {mt!r} (schema 1 and other formats are not supported)"
    )


def parse_manifest(raw: bytes, header_type: str | None = None) -> Manifest:
    m = parse_manifest_or_index(raw, header_type)
    if not isinstance(m, Manifest):
        raise ManifestError("expected an image manifest, got an index")
    return m


def image_platform(config: Mapping[str, Any]) -> Platform:
    """The platform an image config declares (every config has os and architecture)."""
    return Platform(
        str(config.get("os") or "linux"),
        str(config.get("architecture") or "amd64"),
        config.get("variant") or None,
    )

"""docker-archive (the ``docker save`` tar format) as an image source and sink.

**Source.** ``DockerArchiveImage`` reads a ``docker save`` / ``podman save``
file in place, plain or compressed as a whole (WfExS-backend stages
``docker save | gzip`` as ``<name>.img``), with random access through
``tarfile``: nothing is unpacked. A docker-archive has no OCI manifest, so
one is synthesised around the engine's own config bytes (the config digest
is the engine's image id) with the layer members as they are stored; that
manifest is byte for byte what earlier versions stored, so manifest digests
stay stable. Every member name is checked before anything is read (no
``..``, no absolute names, links resolved inside the archive: ``podman
save`` writes ``<id>/layer.tar -> ../<diffid>.tar``), and every layer is
checked against the config's diff id when it is read, whatever the sink.

**Sink.** Docker cannot load an OCI layout (20.10 has no ``docker load``
for it), so it is fed a docker-archive composed on the fly: a stream of
tar headers and blob chunks straight from the source, no temporary file,
no decompression. Layers stay as they are stored (gzip): ``docker load``
and ``podman load`` decompress layer files themselves. Every header field
is fixed (mtime 0, uid/gid 0, mode 0644, member order manifest.json,
config, layers), so the same image with the same tags is the same archive,
byte for byte, on every machine; its sha256 is known from the stream
without writing it (``docker_archive_digest``), its size from the manifest
alone (``docker_archive_size``).

The tar reading and writing it shares with ``oci_archive`` is in ``archive``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import posixpath
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..digests import CHUNK, sha256_bytes, sha256_chunks
from ..errors import CacheError, IntegrityError, quote, quote_list
from .archive import (
    BLOCK,
    ArchiveImage,
    TarMembers,
    layer_chunks,
    layer_compression,
    tar_end,
    tar_header,
    tar_padding,
    write_tar_stream,
)
from .base import BaseImage, BlobLayer, Image, Layer, VerifyingReader, buffered
from .blobstore import BlobStore
from .compression import GzipMembers, decompressing_reader, sniff
from .manifest import OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor

# Docker's reference grammar, loosely: name components, optional registry
# host[:port], then a mandatory ":tag" (docker load ignores a RepoTag without one).
_REPO_TAG_RE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
)


class _InflateCheck(io.RawIOBase):
    """A gzip member's bytes, passed through unchanged while inflated alongside to check its diff id.

    A sink that copies only the compressed bytes (a store, a layout) must
    still not publish a layer whose content is not the one the config pins.
    """

    def __init__(self, raw: BinaryIO, diff_id: str, what: str) -> None:
        self._raw = raw
        self._diff_id = diff_id
        self._what = what
        self._members = GzipMembers()
        self._hash = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._raw.readinto(b)  # type: ignore[attr-defined]
        if n:
            self._feed(bytes(memoryview(b)[:n]))
        elif not self._checked:
            self._finish()
        return n or 0

    def _feed(self, data: bytes) -> None:
        try:
            for out in self._members.feed(data):
                self._hash.update(out)
        except zlib.error as e:
            self._checked = True
            raise IntegrityError(
                f"{self._what} is not a valid gzip stream ({e}); the archive is corrupt: "
                "save the image again",
                expected=self._diff_id,
            ) from e

    def _finish(self) -> None:
        self._checked = True
        if not self._members.complete:
            raise IntegrityError(
                f"{self._what} is a truncated gzip stream; the archive is corrupt: save the image again",
                expected=self._diff_id,
            )
        got = "sha256:" + self._hash.hexdigest()
        if got != self._diff_id:
            raise IntegrityError(
                f"{self._what} decompresses to {got}, not the diff id {self._diff_id} its config names; "
                "the archive is corrupt: save the image again",
                expected=self._diff_id,
                actual=got,
            )

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class _ArchiveLayer(BlobLayer):
    def _compressed(self, trusted: bool) -> BinaryIO:
        if self.is_gzip():
            return super()._compressed(trusted)
        # a plain member's digest is the diff id its config names: say so when it does not match
        what = f"layer {self.digest()} of {self._image.describe()} (the diff id its config names)"
        return buffered(
            VerifyingReader(self._image.open_blob(self.descriptor), self.digest(), self.size(), what)
        )

    def uncompressed(self) -> BinaryIO:
        if not self.is_gzip():
            return super().uncompressed()
        # compressed() already checks the diff id while it inflates alongside; inflate once more
        # for the caller, without hashing a third time.
        return decompressing_reader(self.compressed(), f"layer {self.digest()} of {self._image.describe()}")


@dataclass(frozen=True)
class _LayerMember:
    name: str
    gzip: bool
    diff_id: str


class DockerArchiveImage(ArchiveImage, BaseImage):
    """The image a docker-archive file holds (``repo_tag`` picks one when it holds several)."""

    SNIFF_BLOBS = False  # the synthesised manifest already says what each member is

    def __init__(self, path: Path, *, repo_tag: str | None = None) -> None:
        self.path = Path(path)
        self._tar = TarMembers(self.path, "docker-archive")
        self._raw_manifest: bytes | None = None
        self._by_digest: dict[str, _LayerMember] = {}
        try:
            self._open(repo_tag)
        except BaseException:
            self._tar.close()
            raise

    def _open(self, repo_tag: str | None) -> None:
        where = f"docker-archive {self.path}"
        if "manifest.json" not in self._tar:
            raise CacheError(
                f"{where} has no manifest.json; it is not a docker-archive (a legacy pre-1.10 "
                "'docker save', or an OCI archive). Save it again with docker/podman save"
            )
        try:
            entries = json.loads(self._tar.read("manifest.json"))
        except ValueError as e:
            raise CacheError(f"the manifest.json of {where} is not valid JSON: {e}") from e
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise CacheError(f"the manifest.json of {where} lists no image")
        if repo_tag is not None:
            tagged = [e for e in entries if repo_tag in (e.get("RepoTags") or [])]
            if not tagged:
                tags = [t for e in entries for t in e.get("RepoTags") or []]
                raise CacheError(
                    f"{where} holds no image tagged {quote(repo_tag)}; it holds: {quote_list(tags)}"
                )
            entries = tagged
        if len(entries) > 1:
            tags = [t for e in entries for t in e.get("RepoTags") or []]
            raise CacheError(
                f"{where} holds {len(entries)} images (tagged {quote_list(tags)}); pass repo_tag to pick one"
            )
        entry = entries[0]
        self.repo_tags: list[str] = [str(t) for t in entry.get("RepoTags") or []]
        if not entry.get("Config"):
            raise CacheError(f"the manifest.json of {where} names no config; save the image again")
        config_name = self._tar.resolve(str(entry["Config"]))
        if config_name not in self._tar:
            raise CacheError(
                f"the manifest.json of {where} names config {quote(config_name)}, which is not in it"
            )
        self._raw_config = self._tar.read(config_name)
        self._config_digest = config_digest = sha256_bytes(self._raw_config)
        stem = posixpath.basename(config_name).removesuffix(".json")
        if re.fullmatch(r"[0-9a-f]{64}", stem) and stem != config_digest.split(":", 1)[1]:
            raise IntegrityError(
                f"config {quote(config_name)} of {where} does not hash to its name (got {config_digest}); "
                "the archive is corrupt: save the image again",
                expected="sha256:" + stem,
                actual=config_digest,
            )
        try:
            config = json.loads(self._raw_config)
            diff_ids = [str(d) for d in config["rootfs"]["diff_ids"]]
        except (ValueError, KeyError, TypeError) as e:
            raise CacheError(f"config {quote(config_name)} of {where} is not an image config: {e}") from e
        names = [self._tar.resolve(str(n)) for n in entry.get("Layers") or []]
        if len(names) != len(diff_ids):
            raise CacheError(
                f"{where} lists {len(names)} layers but its config has {len(diff_ids)} diff_ids; "
                "save the image again"
            )
        for name in names:
            if name not in self._tar:
                raise CacheError(
                    f"the manifest.json of {where} names layer {quote(name)}, which is not in it"
                )
        kinds = {name: sniff(self._tar.head(name)) for name in sorted(set(names), key=self._tar.offset)}
        for name, kind in kinds.items():
            if kind not in ("none", "gzip"):
                raise CacheError(
                    f"layer {quote(name)} of {where} is {kind}-compressed, which an OCI image cannot "
                    "describe; save the image again without compressing its layers"
                )
        self._layer_members = [
            _LayerMember(name, kinds[name] == "gzip", diff_id)
            for name, diff_id in zip(names, diff_ids, strict=True)
        ]

    # -- what BaseImage needs ----------------------------------------------------------------------
    def raw_manifest(self) -> bytes:
        if self._raw_manifest is None:
            # hash gzip members in archive order: a compressed archive then decompresses once at most
            for m in sorted(self._layer_members, key=lambda m: self._tar.offset(m.name)):
                if m.gzip:
                    self._tar.digest(m.name)
            descriptors = []
            for m in self._layer_members:
                digest = self._tar.digest(m.name) if m.gzip else m.diff_id
                self._by_digest.setdefault(digest, m)
                media_type = OCI_LAYER_GZIP if m.gzip else OCI_LAYER
                size = self._tar.size(m.name)
                descriptors.append({"mediaType": media_type, "digest": digest, "size": size})
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": self._config_digest,
                    "size": len(self._raw_config),
                },
                "layers": descriptors,
            }
            self._raw_manifest = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        return self._raw_manifest

    def raw_config_file(self) -> bytes:
        return self._raw_config

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        self.raw_manifest()
        if descriptor.digest == self._config_digest:
            return io.BytesIO(self._raw_config)
        m = self._by_digest.get(descriptor.digest)
        if m is None:
            raise CacheError(f"docker-archive {self.path} has no blob {descriptor.digest}")
        fh = self._tar.open(m.name)
        if not m.gzip:
            return fh  # its digest is its diff id: BlobLayer's check covers both
        what = f"layer {quote(m.name)} of docker-archive {self.path}"
        return buffered(_InflateCheck(fh, m.diff_id, what))

    def layers(self) -> tuple[BlobLayer, ...]:
        if self._layers_cache is None:
            plain = super().layers()
            self._layers_cache = tuple(_ArchiveLayer(self, x.descriptor, x.diff_id()) for x in plain)
        return self._layers_cache

    def describe(self) -> str:
        return f"image {self._config_digest} in docker-archive {self.path}"

    def describe_source(self) -> str:
        return f"docker-archive {self.path}"

    # -- better than blob by blob --------------------------------------------------------------
    def fetch_into(self, store: BlobStore) -> str:
        """What ``write_to_store`` does, reading layers in archive order and publishing them first.

        In archive order a compressed archive is decompressed once more, not
        once per layer; config and manifest go last, so an archive with a
        bad layer leaves nothing of the image in the store.
        """
        layers = self.layers()
        for layer in sorted(layers, key=lambda x: self._tar.offset(self._by_digest[x.digest()].name)):
            digest = layer.digest()
            if store.has(digest) and store.is_trusted(digest):
                continue
            with store.lock(digest):
                if store.has(digest):
                    continue
                with contextlib.closing(layer.compressed()) as src, store.writer(digest, layer.size()) as w:
                    while chunk := src.read(CHUNK):
                        w.write(chunk)
        for raw, digest in ((self._raw_config, self.config_name()), (self.raw_manifest(), self.digest())):
            if store.has(digest):
                continue
            with store.lock(digest):
                if not store.has(digest):
                    store.put_bytes(raw, expected_digest=digest)
        return self.digest()


# -- the sink -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    name: str
    size: int
    data: bytes | None = None  # small documents
    layer: Layer | None = None  # blobs streamed from the source


def _check_repo_tags(repo_tags: Sequence[str]) -> list[str]:
    if isinstance(repo_tags, str):
        raise TypeError("repo_tags must be a sequence of strings, not one string")
    tags = list(repo_tags)
    for t in tags:
        if not _REPO_TAG_RE.match(t):
            raise CacheError(
                f"invalid repo tag {quote(t)} for a docker-archive: write it as "
                "[registry[:port]/]name:tag with a lowercase name, e.g. 'localhost/samtools:1.15'"
            )
    return tags


def _members(image: Image, repo_tags: Sequence[str]) -> list[_Member]:
    tags = _check_repo_tags(repo_tags)
    layers: dict[str, Layer] = {}
    names: list[str] = []
    for layer in image.layers():
        kind = layer_compression(layer)
        if kind == "zstd":
            raise CacheError(
                f"layer {layer.digest()} is zstd-compressed; Docker 20.10 cannot load it from a "
                "docker-archive. Fetch a gzip variant of the image, or deploy with Podman"
            )
        hexd = layer.digest().split(":", 1)[1]
        name = f"{hexd}.tar.gz" if kind == "gzip" else f"{hexd}.tar"
        names.append(name)
        layers.setdefault(name, layer)
    config_name = image.config_name().split(":", 1)[1] + ".json"
    manifest = [{"Config": config_name, "RepoTags": tags or None, "Layers": names}]
    manifest_raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    raw_config = image.raw_config_file()
    out = [
        _Member("manifest.json", len(manifest_raw), data=manifest_raw),
        _Member(config_name, len(raw_config), data=raw_config),
    ]
    out.extend(_Member(name, layer.size(), layer=layer) for name, layer in layers.items())
    return out


def docker_archive_size(image: Image, repo_tags: Sequence[str]) -> int:
    """Exact byte length of the archive ``iter_docker_archive`` yields, without reading any layer."""
    total = 2 * BLOCK  # end-of-archive marker
    for m in _members(image, repo_tags):
        total += BLOCK + m.size + (-m.size % BLOCK)
    return total


def iter_docker_archive(image: Image, repo_tags: Sequence[str]) -> Iterator[bytes]:
    """Yield the docker-archive of ``image`` chunk by chunk, straight from where its blobs live.

    A layer that is not a verified local file is hashed as it streams; if
    it does not match, IntegrityError is raised before the end-of-archive
    marker, so the consumer sees a truncated tar and refuses it rather than
    loading wrong bytes.
    """
    for m in _members(image, repo_tags):
        yield tar_header(m.name, m.size)
        if m.data is not None:
            yield m.data
        else:
            assert m.layer is not None
            yield from layer_chunks(m.layer)
        if pad := tar_padding(m.size):
            yield pad
    yield tar_end()


def docker_archive_digest(image: Image, repo_tags: Sequence[str]) -> str:
    """sha256 of the (uncompressed) archive, computed from the stream (nothing is written)."""
    return sha256_chunks(iter_docker_archive(image, repo_tags))[0]


def write_docker_archive(
    image: Image, dest: Path, repo_tags: Sequence[str], *, compress: bool = False
) -> str:
    """Write the archive to ``dest`` atomically (temp file + rename); return the file's sha256.

    ``compress`` gzips the whole archive reproducibly (mtime 0, no file name
    in the header): the WfExS-style ``.img`` snapshot, the same bytes for
    the same image on the same zlib.
    """
    return write_tar_stream(iter_docker_archive(image, repo_tags), dest, compress=compress)

"""docker-archive (the ``docker save`` tar format), composed from and ingested into the blob store.

Docker cannot load an OCI layout (20.10 has no ``docker load`` for it), so
it is fed a docker-archive composed on the fly from the same blobs: the
tar is produced as a stream of headers and blob chunks straight from the
store, with no temporary file and no decompression. Layers stay as they are
stored (gzip): ``docker load`` and Podman's ``load`` both decompress layer
files inside the archive themselves.

Every header field is fixed (mtime 0, uid/gid 0, mode 0644, member order
manifest.json, config, layers), so the same image with the same tags is the
same archive, byte for byte, on every machine; its sha256 can be computed
from the stream without writing it (``docker_archive_digest``), and its size
from the manifest alone (``docker_archive_size``).

``ingest_docker_archive`` goes the other way, for the engine-fallback path
(an image that exists only in a local daemon): the ``docker save`` /
``podman save`` stream is read once, each member streamed into the store
as it passes, and an OCI manifest synthesised around the engine's own
config bytes, so the config digest is the engine's image id.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..cache.blobstore import BlobStore, BlobWriter
from ..digests import CHUNK, sha256_bytes, sha256_chunks
from ..errors import CacheError, IntegrityError, UnsafeArchiveError
from ..fsutil import atomic_write
from .image import GZIP_MAGIC, ZSTD_MAGIC, StoredImage, StoredLayer
from .manifest import OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST

BLOCK = 512
_MEMBER_MODE = 0o644
_MEMBER_MTIME = 0
# Docker's reference grammar, loosely: name components, optional registry
# host[:port], then a mandatory ":tag" (docker load ignores a RepoTag without one).
_REPO_TAG_RE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
)
#: Members kept in memory while reading an archive: anything this small, and JSON
#: documents up to ``_SMALL_LIMIT``; everything else streams into the store.
_IN_MEMORY = 1 << 20
_SMALL_LIMIT = 16 << 20


# -- composing ---------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    name: str
    size: int
    data: bytes | None = None  # small documents
    layer: StoredLayer | None = None  # blobs streamed from the store


def _check_repo_tags(repo_tags: Sequence[str]) -> list[str]:
    if isinstance(repo_tags, str):
        raise TypeError("repo_tags must be a sequence of strings, not one string")
    tags = list(repo_tags)
    for t in tags:
        if not _REPO_TAG_RE.match(t):
            raise CacheError(
                f"invalid repo tag {t!r} for a docker-archive: write it as "
                "[registry[:port]/]name:tag with a lowercase name, e.g. 'localhost/samtools:1.15'"
            )
    return tags


def _layer_name(layer: StoredLayer) -> str:
    hexd = layer.digest().split(":", 1)[1]
    return f"{hexd}.tar.gz" if layer.is_gzip() else f"{hexd}.tar"


def _members(image: StoredImage, repo_tags: Sequence[str]) -> list[_Member]:
    tags = _check_repo_tags(repo_tags)
    layers: dict[str, StoredLayer] = {}
    for layer in image.layers():
        if layer.is_zstd():
            raise CacheError(
                f"layer {layer.digest()} is zstd-compressed; Docker 20.10 cannot load it from a "
                "docker-archive. Fetch a gzip variant of the image, or deploy with Podman"
            )
        layers.setdefault(_layer_name(layer), layer)
    config_name = image.config_name().split(":", 1)[1] + ".json"
    manifest = [
        {
            "Config": config_name,
            "RepoTags": tags or None,
            "Layers": [_layer_name(layer) for layer in image.layers()],
        }
    ]
    manifest_raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    raw_config = image.raw_config_file()
    out = [
        _Member("manifest.json", len(manifest_raw), data=manifest_raw),
        _Member(config_name, len(raw_config), data=raw_config),
    ]
    out.extend(_Member(name, layer.size(), layer=layer) for name, layer in layers.items())
    return out


def _header(name: str, size: int) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = _MEMBER_MTIME
    ti.mode = _MEMBER_MODE
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def docker_archive_size(image: StoredImage, repo_tags: Sequence[str]) -> int:
    """Exact byte length of the archive ``iter_docker_archive`` yields, without reading any layer."""
    total = 2 * BLOCK  # end-of-archive marker
    for m in _members(image, repo_tags):
        total += BLOCK + m.size + (-m.size % BLOCK)
    return total


def iter_docker_archive(image: StoredImage, repo_tags: Sequence[str]) -> Iterator[bytes]:
    """Yield the docker-archive of ``image`` chunk by chunk, straight from the store.

    A layer the store does not trust (size+mtime changed since it was
    verified) is hashed as it streams; if it does not match, IntegrityError
    is raised before the end-of-archive marker, so the consumer sees a
    truncated tar and refuses it rather than loading wrong bytes.
    """
    members = _members(image, repo_tags)
    for m in members:
        if m.layer is not None:
            actual = m.layer.path().stat().st_size if m.layer.path().exists() else None
            if actual != m.size:
                raise IntegrityError(
                    f"layer blob {m.layer.digest()} is {actual} bytes, the manifest says {m.size}; "
                    "the cache entry is damaged: fetch the image again",
                    expected=m.layer.digest(),
                )
    for m in members:
        yield _header(m.name, m.size)
        if m.data is not None:
            yield m.data
        else:
            assert m.layer is not None
            yield from _stream_layer(image.store, m.layer)
        if pad := _padding(m.size):
            yield pad
    yield b"\0" * (2 * BLOCK)


def _stream_layer(store: BlobStore, layer: StoredLayer) -> Iterator[bytes]:
    digest = layer.digest()
    check = not store.is_trusted(digest)
    h = hashlib.sha256() if check else None
    sent = 0
    with layer.compressed() as fh:
        while sent < layer.size():
            chunk = fh.read(min(CHUNK, layer.size() - sent))
            if not chunk:
                break
            if h is not None:
                h.update(chunk)
            sent += len(chunk)
            yield chunk
    if sent != layer.size():
        raise IntegrityError(
            f"layer blob {digest} shrank while being streamed ({sent} of {layer.size()} bytes)",
            expected=digest,
        )
    if h is not None:
        actual = "sha256:" + h.hexdigest()
        if actual != digest:
            moved = ""
            if not getattr(store, "readonly", False):
                store.quarantine(digest)
                moved = "; it was moved to the store's corrupt/ dir"
            raise IntegrityError(
                f"layer blob {digest} does not hash to its name (got {actual}){moved}: fetch the image again",
                expected=digest,
                actual=actual,
            )


def docker_archive_digest(image: StoredImage, repo_tags: Sequence[str]) -> str:
    """sha256 of the archive, computed from the stream (nothing is written)."""
    return sha256_chunks(iter_docker_archive(image, repo_tags))[0]


def write_docker_archive(image: StoredImage, dest: Path, repo_tags: Sequence[str]) -> str:
    """Write the archive to ``dest`` atomically (temp file + rename); return its sha256."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with atomic_write(dest, mode=0o644) as fh:
        for chunk in iter_docker_archive(image, repo_tags):
            h.update(chunk)
            fh.write(chunk)
    return "sha256:" + h.hexdigest()


# -- ingesting ----------------------------------------------------------------


class _IterReader(io.RawIOBase):
    """A read-only file over an iterable of byte chunks (the docker SDK's ``save()``)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = bytes(next(self._it))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _safe_name(name: str) -> str:
    """Normalise a member name; refuse anything that points outside the archive."""
    if not name or "\0" in name or name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name):
        raise UnsafeArchiveError(
            f"archive member {name!r} has an absolute path; refusing the archive (it was not made "
            "by docker/podman save)"
        )
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeArchiveError(
            f"archive member {name!r} climbs out of the archive with '..'; refusing the archive "
            "(it was not made by docker/podman save)"
        )
    norm = posixpath.normpath(name)
    return "" if norm == "." else norm


def _link_target(name: str, target: str, *, symlink: bool) -> str:
    """Where a link member points, as a member name; refuse targets outside the archive.

    ``podman save`` writes ``<v1 id>/layer.tar -> ../<diff id>.tar``, so a
    symlink's ``..`` is fine as long as it resolves inside the archive.
    """
    if not symlink:
        return _safe_name(target)  # hard link targets are archive member names
    if not target or target.startswith("/"):
        raise UnsafeArchiveError(
            f"archive member {name!r} is a symlink to {target!r}, outside the archive; refusing it"
        )
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"archive member {name!r} is a symlink to {target!r}, outside the archive; refusing it"
        )
    return resolved


class _Spool:
    """One large member on its way into the store; committed only if the manifest names it."""

    def __init__(self, store: BlobStore) -> None:
        self.writer: BlobWriter = store.writer()
        self.gzip = False
        self.zstd = False
        self._started = False
        self._inflate: Any = None
        self._plain = hashlib.sha256()
        self.size = 0
        self.committed: str | None = None

    def write(self, chunk: bytes) -> None:
        if not self._started:
            self._started = True
            self.gzip = chunk[:2] == GZIP_MAGIC
            self.zstd = chunk[:4] == ZSTD_MAGIC
            if self.gzip:
                self._inflate = zlib.decompressobj(wbits=31)
        self.writer.write(chunk)
        self.size += len(chunk)
        if self._inflate is not None:
            self._plain.update(self._inflate.decompress(chunk))

    def finish_diff_id(self) -> str | None:
        """sha256 of the uncompressed tar (None for zstd, which we cannot decode)."""
        if self.zstd:
            return None
        if self._inflate is None:
            return self.writer.digest
        self._plain.update(self._inflate.flush())
        self._inflate = None
        return "sha256:" + self._plain.hexdigest()

    def commit(self) -> str:
        if self.committed is None:
            self.committed = self.writer.commit()
        return self.committed


def ingest_docker_archive(
    store: BlobStore,
    source: Path | BinaryIO | Iterable[bytes],
    *,
    repo_tag: str | None = None,
) -> str:
    """Store the image in a docker-archive stream; return the digest of a synthesised OCI manifest.

    ``source`` is a file path, a binary file object (``docker save``'s
    stdout) or an iterable of chunks (the docker SDK's ``Image.save()``). It
    is read once, sequentially (tarfile's ``r|*``): no temp copy of the
    archive is made, and a gzip-compressed archive works too. The config is
    stored byte for byte, so its digest is the engine's image id; layers are
    stored as they are in the archive (plain tar, or gzip when the member
    starts with the gzip magic), each checked against the config's diff ids
    before it is published. An archive of several images needs ``repo_tag``.
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as fh:
            return _ingest(store, fh, repo_tag)
    if hasattr(source, "read"):
        return _ingest(store, source, repo_tag)  # type: ignore[arg-type]
    with io.BufferedReader(_IterReader(source), buffer_size=CHUNK) as fh:  # type: ignore[arg-type]
        return _ingest(store, fh, repo_tag)


def _ingest(store: BlobStore, fh: BinaryIO, repo_tag: str | None) -> str:
    small: dict[str, bytes] = {}
    spools: dict[str, _Spool] = {}
    links: dict[str, str] = {}
    try:
        try:
            tf = tarfile.open(fileobj=fh, mode="r|*")  # noqa: SIM115 - closed by the with below
        except tarfile.TarError as e:
            raise CacheError(f"not a docker-archive (tar) stream: {e}") from e
        with tf:
            for ti in tf:
                name = _safe_name(ti.name)
                if ti.issym() or ti.islnk():
                    links[name] = _link_target(name, ti.linkname, symlink=ti.issym())
                    continue
                if not ti.isfile():
                    continue
                src = tf.extractfile(ti)
                assert src is not None
                if ti.size <= _IN_MEMORY or (ti.size <= _SMALL_LIMIT and _is_document(name)):
                    small[name] = src.read()
                    continue
                spool = _Spool(store)
                spools[name] = spool
                while chunk := src.read(CHUNK):
                    spool.write(chunk)
        return _assemble(store, small, spools, links, repo_tag)
    except tarfile.TarError as e:
        raise CacheError(
            f"the docker-archive stream is corrupt or truncated: {e}; save the image again"
        ) from e
    finally:
        for spool in spools.values():
            if spool.committed is None:
                spool.writer.discard()


def _is_document(name: str) -> bool:
    base = posixpath.basename(name)
    return base in ("manifest.json", "repositories", "json", "VERSION", "index.json", "oci-layout") or (
        base.endswith(".json") and "/" not in name
    )


def _resolve(name: str, links: Mapping[str, str]) -> str:
    seen = 0
    name = _safe_name(name)
    while name in links:
        seen += 1
        if seen > 16:
            raise UnsafeArchiveError(f"archive member {name!r}: symlink loop")
        name = links[name]
    return name


def _read_config(
    store: BlobStore, name: str, small: Mapping[str, bytes], spools: Mapping[str, _Spool]
) -> bytes:
    if name in small:
        return small[name]
    spool = spools.get(name)
    if spool is None:
        raise CacheError(f"the archive's manifest.json names config {name!r}, which is not in it")
    if spool.size > _SMALL_LIMIT:
        raise CacheError(
            f"config {name!r} in the archive ({spool.size} bytes) is too large for an image config"
        )
    return store.path(spool.commit()).read_bytes()


def _store_layer(
    store: BlobStore, name: str, diff_id: str, small: Mapping[str, bytes], spools: Mapping[str, _Spool]
) -> dict[str, Any]:
    """Publish one layer member after checking it against its diff id; return its descriptor."""
    spool = spools.get(name)
    if spool is None:
        if name not in small:
            raise CacheError(f"the archive's manifest.json names layer {name!r}, which is not in it")
        spool = _Spool(store)
        spool.write(small[name])
    if spool.zstd:
        raise CacheError(f"layer {name!r} is zstd-compressed; this tool cannot verify it")
    if spool.committed is None:
        got = spool.finish_diff_id()
        if got != diff_id:
            spool.writer.discard()
            raise IntegrityError(
                f"layer {name!r} in the archive does not match the config's diff id "
                f"(expected {diff_id}, got {got}); save the image again",
                expected=diff_id,
                actual=got,
            )
    digest = spool.commit()
    return {"mediaType": OCI_LAYER_GZIP if spool.gzip else OCI_LAYER, "digest": digest, "size": spool.size}


def _assemble(
    store: BlobStore,
    small: Mapping[str, bytes],
    spools: Mapping[str, _Spool],
    links: Mapping[str, str],
    repo_tag: str | None,
) -> str:
    if "manifest.json" not in small:
        raise CacheError(
            "the archive has no manifest.json; it is not a docker-archive (a legacy pre-1.10 "
            "'docker save', or an OCI archive). Save it again with docker/podman save"
        )
    try:
        entries = json.loads(small["manifest.json"])
    except ValueError as e:
        raise CacheError(f"the archive's manifest.json is not valid JSON: {e}") from e
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise CacheError("the archive's manifest.json lists no image")
    if repo_tag is not None:
        entries = [e for e in entries if repo_tag in (e.get("RepoTags") or [])]
        if not entries:
            raise CacheError(f"the archive holds no image tagged {repo_tag!r}")
    if len(entries) > 1:
        tags = [e.get("RepoTags") for e in entries]
        raise CacheError(f"the archive holds {len(entries)} images ({tags}); pass repo_tag to pick one")
    entry = entries[0]
    config_name = _resolve(str(entry.get("Config") or ""), links)
    raw_config = _read_config(store, config_name, small, spools)
    config_digest = sha256_bytes(raw_config)
    stem = posixpath.basename(config_name).removesuffix(".json")
    if re.fullmatch(r"[0-9a-f]{64}", stem) and stem != config_digest.split(":", 1)[1]:
        raise IntegrityError(
            f"config {config_name!r} does not hash to its name (got {config_digest}); the archive "
            "is corrupt: save the image again",
            expected="sha256:" + stem,
            actual=config_digest,
        )
    try:
        config = json.loads(raw_config)
        diff_ids = [str(d) for d in config["rootfs"]["diff_ids"]]
    except (ValueError, KeyError, TypeError) as e:
        raise CacheError(f"config {config_name!r} in the archive is not an image config: {e}") from e
    layer_names = [_resolve(str(n), links) for n in entry.get("Layers") or []]
    if len(layer_names) != len(diff_ids):
        raise CacheError(
            f"the archive lists {len(layer_names)} layers but its config has {len(diff_ids)} diff_ids; "
            "save the image again"
        )
    descriptors = [
        _store_layer(store, name, diff_id, small, spools)
        for name, diff_id in zip(layer_names, diff_ids, strict=True)
    ]
    store.put_bytes(raw_config, expected_digest=config_digest)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(raw_config)},
        "layers": descriptors,
    }
    raw_manifest = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return store.put_bytes(raw_manifest)

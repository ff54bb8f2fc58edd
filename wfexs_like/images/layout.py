"""OCI image layout directories, as a source (``LayoutImage``) and a sink (``write_oci_layout``).

An OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``) is
the snapshot a workflow's ``containers/`` dir receives: Podman and skopeo
load it as it is, and every other sink can be composed from it. Its blobs
are the store's blobs, so a snapshot of a stored image is built by linking
(``staging.link_or_copy``): on the same filesystem it costs a few directory
entries whatever the image's size.

**The fingerprint is the snapshot's Merkle root.** ``index.json`` names the
manifest by digest, the manifest names the config and every layer by
digest, and the config names every uncompressed layer by diff id. So the
sha256 of ``index.json`` pins every byte of the snapshot, and since
``oci-layout`` and ``index.json`` are written deterministically (sorted
keys, compact separators) the same image with the same ref name always
gets the same fingerprint on any machine.

Snapshots are built in a temporary directory beside the destination and
renamed into place: a layout directory is complete or absent, never
half-written. Read back as a ``LayoutImage``, a layout's blobs are hashed
as they are read unless a ``BlobStore`` vouches for them (the same inode as
its verified blob, or a copy whose size and mtime it recorded), which is
what keeps deploying a staged, hard-linked snapshot O(1).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from ..digests import CHUNK, is_digest, sha256_bytes, sha256_file, split_digest
from ..errors import CacheError, IntegrityError, UnsafeArchiveError, quote, quote_list
from ..fsutil import fsync_dir
from .base import Image, LoadedImage
from .blobstore import BLOB_MODE, BlobStore
from .manifest import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    Descriptor,
    Index,
    ManifestError,
    Platform,
    parse_manifest_or_index,
)
from .regular import SMALL_LIMIT, open_regular, read_regular
from .staging import link_or_copy, make_temp_dir, publish_dir
from .store import StoreImage

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
#: The OCI annotation skopeo's ``oci:DIR:REF`` and Podman's ``load`` read the name from.
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
#: containerd's (``ctr import``, nerdctl, BuildKit) full image name annotation.
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
_MAX_NESTING = 4


def _canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def oci_layout_bytes() -> bytes:
    return _canonical_json({"imageLayoutVersion": LAYOUT_VERSION})


def layout_index_bytes(image: Image, ref_name: str | None = None) -> bytes:
    """The deterministic ``index.json`` naming ``image`` (and ``ref_name``, if any)."""
    m = image.manifest()
    annotations: dict[str, str] = {}
    if ref_name:
        _check_ref_name(ref_name)
        annotations[REF_NAME_ANNOTATION] = ref_name
        annotations[CONTAINERD_NAME_ANNOTATION] = ref_name
    desc = Descriptor(m.media_type, image.digest(), len(m.raw), image.platform(), annotations)
    return _canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc.to_json()]})


def _check_ref_name(ref_name: str) -> None:
    if not ref_name or any(c.isspace() for c in ref_name) or ref_name != ref_name.strip():
        raise CacheError(
            f"invalid ref name {quote(ref_name)}: use an image name such as 'localhost/name:tag' "
            "(no whitespace)"
        )


def blob_file(layout: Path, digest: str) -> Path:
    algo, hexd = split_digest(digest)  # refuses anything that could escape the layout
    return Path(layout) / "blobs" / algo / hexd


# -- reading ------------------------------------------------------------------------------------


def parse_index(raw: bytes, where: str) -> Index:
    try:
        idx = parse_manifest_or_index(raw, OCI_INDEX)
    except ManifestError as e:
        raise CacheError(f"{where} is not a valid OCI index: {e}") from e
    if not isinstance(idx, Index):
        raise CacheError(f"{where} is an image manifest, not an index")
    return idx


def inside_layout(layout: Path, p: Path) -> Path:
    """``p``, a file of the layout at ``layout``, refused when it leads (through symlinks) outside it.

    Layouts this tool writes hold no symlinks at all; one that points out of
    the layout would make a reader hash, or copy into the cache, a file that
    is no part of the image (``/etc/shadow``, ``/dev/zero``).
    """
    root = os.path.realpath(layout)
    real = os.path.realpath(p)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise UnsafeArchiveError(
            f"{p} leads outside the OCI layout {layout} (to {quote(real)}); refusing the layout"
        )
    return p


class _Within:
    """``inside_layout`` for a whole verification, at one ``lstat`` per directory instead of two
    ``realpath`` walks per file.

    Every path checked is the layout joined with fixed names (``index.json``,
    ``blobs/<algo>/<hex>`` from a validated digest), so it can only leave the
    layout through a symlink: when neither the file nor a directory on the
    way is one, it is inside. A symlink anywhere falls back to the full
    ``inside_layout`` check, which still accepts links that stay inside.
    """

    def __init__(self, layout: Path) -> None:
        self.layout = layout
        self.root = os.fspath(layout)
        self._plain_dirs: dict[str, bool] = {}

    def stat(self, rel: str) -> tuple[str, os.stat_result]:
        """The file ``rel`` and its ``stat`` (symlinks followed); ``UnsafeArchiveError`` if it leads
        outside the layout, ``OSError`` if it is missing."""
        path = os.path.join(self.root, rel)
        plain = True
        head, _, _ = rel.rpartition("/")
        while head and plain:
            known = self._plain_dirs.get(head)
            if known is None:
                try:
                    known = not stat.S_ISLNK(os.lstat(os.path.join(self.root, head)).st_mode)
                except OSError:
                    known = True  # missing: the file's own stat says so
                self._plain_dirs[head] = known
            plain = known
            head = head.rpartition("/")[0]
        st = os.lstat(path)
        if plain and not stat.S_ISLNK(st.st_mode):
            return path, st
        inside_layout(self.layout, Path(path))
        return path, os.stat(path)


def read_layout_file(layout: Path, p: Path, what: str, limit: int = SMALL_LIMIT) -> bytes:
    """A small file of a layout (index, manifest, config): inside it, regular, at most ``limit`` bytes."""
    if not os.path.lexists(p):
        raise FileNotFoundError(p)
    return read_regular(inside_layout(layout, p), what, limit)


def _load_index(path: Path) -> Index:
    try:
        raw = read_layout_file(path, path / INDEX_FILE, "OCI layout index")
    except FileNotFoundError:
        raise CacheError(f"{path} is not an OCI image layout: it has no {INDEX_FILE}") from None
    return parse_index(raw, str(path / INDEX_FILE))


def select_image(
    idx: Index,
    read_blob: Callable[[Descriptor], bytes],
    where: str,
    *,
    ref_name: str | None = None,
    platform: Platform | None = None,
) -> tuple[str, str | None]:
    """Return ``(manifest_digest, ref_name)`` of the one image an OCI index (layout or archive) holds.

    With several entries, pick by ``ref_name`` (matched against the
    ``org.opencontainers.image.ref.name`` annotation). An entry that is
    itself an index (a multi-platform layout written by skopeo) is resolved
    to ``platform`` (default: this machine's). ``read_blob`` returns a blob's
    bytes, verified.
    """
    entries = list(idx.manifests)
    if ref_name is not None:
        entries = [d for d in entries if d.annotations.get(REF_NAME_ANNOTATION) == ref_name]
        if not entries:
            names = [d.annotations.get(REF_NAME_ANNOTATION) for d in idx.manifests]
            raise CacheError(f"{where} has no image named {quote(ref_name)}; it holds: {quote_list(names)}")
    if not entries:
        raise CacheError(f"the index of {where} lists no manifests; it is empty")
    if len(entries) > 1:
        names = [d.annotations.get(REF_NAME_ANNOTATION) for d in entries]
        raise CacheError(
            f"{where} holds {len(entries)} images ({quote_list(names)}); pass ref_name to pick one"
        )
    desc = entries[0]
    name = desc.annotations.get(REF_NAME_ANNOTATION)
    for _ in range(_MAX_NESTING + 1):
        if desc.media_type and desc.media_type not in INDEX_TYPES:
            return desc.digest, name
        try:
            nested = parse_manifest_or_index(read_blob(desc), desc.media_type or None)
        except ManifestError as e:
            raise CacheError(f"{where}: manifest {desc.digest} is unreadable: {e}") from e
        if not isinstance(nested, Index):
            return desc.digest, name
        desc = nested.select(platform or Platform.host())
    raise CacheError(f"{where}: indexes nested too deeply")


def read_small_layout_blob(layout: Path, desc: Descriptor) -> bytes:
    """A manifest, index or config blob of a layout, re-hashed (they are small and pin everything)."""
    p = blob_file(layout, desc.digest)
    try:
        raw = read_layout_file(layout, p, "OCI layout blob")
    except FileNotFoundError:
        raise CacheError(f"{layout}: blob {desc.digest} is missing; the layout is incomplete") from None
    actual = sha256_bytes(raw)
    if actual != desc.digest:
        raise IntegrityError(
            f"{p} does not hash to its name; the layout was altered: write it again",
            expected=desc.digest,
            actual=actual,
        )
    return raw


def read_oci_layout(
    path: Path, *, ref_name: str | None = None, platform: Platform | None = None
) -> tuple[Index, str, str | None]:
    """Return ``(index, manifest_digest, ref_name)`` for the one image a layout holds (see select_image)."""
    path = Path(path)
    idx = _load_index(path)
    digest, name = select_image(
        idx,
        lambda d: read_small_layout_blob(path, d),
        str(path),
        ref_name=ref_name,
        platform=platform,
    )
    return idx, digest, name


def trusted_by(
    store: BlobStore, digest: str, p: Path | str, st: os.stat_result | None = None, *, strict: bool = False
) -> bool:
    """Does ``store`` vouch for the file ``p`` holding ``digest``? (same inode, or recorded size+mtime)

    ``st``: ``p``'s ``stat`` when the caller has it already. ``strict``: the
    store's own inode must pass ``BlobStore.vouch`` (the ctime check, else a
    re-hash); a copy elsewhere has a ctime of its own, so size and mtime decide.
    """
    try:
        st = st or os.stat(p)
        if not strict and store.known_as(digest, st):
            return True  # the very inode this process last found intact, untouched since
        sst = os.stat(store.path_str(digest))
    except OSError:
        return store.is_trusted(digest, p)
    if (st.st_dev, st.st_ino) == (sst.st_dev, sst.st_ino):
        return store.vouch(digest) if strict else store.is_trusted(digest)
    return store.is_trusted(digest, p)


class LayoutImage(LoadedImage):
    """The one image an OCI layout directory holds (chosen by ref name and platform)."""

    def __init__(
        self,
        path: Path,
        *,
        ref_name: str | None = None,
        platform: Platform | None = None,
        trust: BlobStore | None = None,
    ) -> None:
        self.path = Path(path)
        self.trust = trust
        _, self._digest, self.ref_name = read_oci_layout(self.path, ref_name=ref_name, platform=platform)
        self._raw_manifest = read_small_layout_blob(self.path, Descriptor("", self._digest, 0))
        self._raw_config = read_small_layout_blob(self.path, self.manifest().config)
        for layer in self.manifest().layers:
            if not blob_file(self.path, layer.digest).is_file():
                raise CacheError(
                    f"{self.path}: layer blob {layer.digest} is missing; the layout is incomplete: "
                    "write it again"
                )

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        p = blob_file(self.path, descriptor.digest)
        if not os.path.lexists(p):
            raise CacheError(
                f"{self.path}: blob {descriptor.digest} is missing; the layout is incomplete: write it again"
            )
        return open_regular(inside_layout(self.path, p), "OCI layout blob")

    def blob_path(self, digest: str) -> Path | None:
        return blob_file(self.path, digest)

    def blob_trusted(self, digest: str) -> bool:
        return self.trust is not None and trusted_by(self.trust, digest, blob_file(self.path, digest))

    def diff_id_checked(self, digest: str, diff_id: str) -> bool:
        return self.trust is not None and self.trust.diff_id_checked(digest, diff_id)

    def record_diff_id(self, digest: str, diff_id: str) -> None:
        if self.trust is not None:
            self.trust.record_diff_id(digest, diff_id)

    def describe(self) -> str:
        return f"image {self._digest} in OCI layout {self.path}"

    def describe_source(self) -> str:
        return f"OCI layout {self.path}"


# -- writing ------------------------------------------------------------------------------------


def _trust_of(image: Image) -> BlobStore | None:
    """The store whose records may vouch for an existing layout's blobs (see verify_oci_layout)."""
    if isinstance(image, StoreImage):
        return image.store
    if isinstance(image, LayoutImage):
        return image.trust
    return None


def write_oci_layout(image: Image, dest: Path, *, ref_name: str | None = None) -> str:
    """Publish ``image`` as an OCI layout at ``dest``; return its fingerprint (``sha256:`` of index.json).

    Layers the source holds as verified files (``local_path()``) are hard
    links (reflinks or copies elsewhere; see ``staging``); the others are
    streamed through ``compressed()``, which verifies them, so wrong bytes
    fail the write and nothing is published. An existing ``dest`` that
    already holds the same index and intact blobs is kept as it is (a
    re-stage is O(1)); anything else there is swapped out atomically.
    """
    dest = Path(dest)
    index_raw = layout_index_bytes(image, ref_name)
    fingerprint = sha256_bytes(index_raw)
    if dest.is_dir():
        try:
            current = read_layout_file(dest, dest / INDEX_FILE, "OCI layout index")
        except (OSError, CacheError, UnsafeArchiveError):
            current = b""  # whatever is there (even a planted FIFO or link) is replaced below
        if current == index_raw and not verify_oci_layout(dest, _trust_of(image)):
            return fingerprint
    layers = image.layers()  # checks the config against the manifest before anything is written
    tmp = make_temp_dir(dest)
    try:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        _place_small(image, image.digest(), image.raw_manifest(), blobs)
        _place_small(image, image.config_name(), image.raw_config_file(), blobs)
        done = {image.digest(), image.config_name()}
        for layer in layers:
            if layer.digest() in done:
                continue
            done.add(layer.digest())
            target = blobs / split_digest(layer.digest())[1]
            local = layer.local_path()
            if local is not None:
                link_or_copy(local, target)
            else:
                with contextlib.closing(layer.compressed()) as src:
                    _write_stream(target, src)
        _write_small(tmp / OCI_LAYOUT_FILE, oci_layout_bytes())
        # index.json last: a layout with an index has all its blobs.
        _write_small(tmp / INDEX_FILE, index_raw)
        fsync_dir(blobs)
        fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, dest, replace=True)
    fsync_dir(dest.parent)
    return fingerprint


def _place_small(image: Image, digest: str, raw: bytes, blobs: Path) -> None:
    """Link the source's file for a manifest/config when it holds exactly ``raw``; else write ``raw``."""
    target = blobs / split_digest(digest)[1]
    blob_path = getattr(image, "blob_path", None)
    src = blob_path(digest) if blob_path is not None else None
    if src is not None and Path(src).is_file():
        link_or_copy(Path(src), target)
        if sha256_bytes(target.read_bytes()) == digest:
            return
        target.unlink()
    _write_stream(target, io.BytesIO(raw))


def _write_stream(target: Path, src: BinaryIO, mode: int = BLOB_MODE) -> None:
    """Write into the private build dir (published later by one rename), durably, with its final mode."""
    with open(target, "wb") as fh:
        while chunk := src.read(CHUNK):
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(target, mode)


def _write_small(path: Path, data: bytes) -> None:
    _write_stream(path, io.BytesIO(data), 0o644)


# -- verifying ----------------------------------------------------------------------------------


#: Small layout files (``oci-layout``, ``index.json``, manifests, configs) this process read, by
#: path: their bytes and the stat they had. A file whose stat still matches has not been written
#: since (any write moves its ctime), so a re-stage does not open, read and hash it again.
_READ: dict[str, tuple[tuple[int, ...], bytes]] = {}
_READ_MAX = 4096


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _recall(path: str, st: os.stat_result) -> bytes | None:
    got = _READ.get(path)
    return got[1] if got is not None and got[0] == _stat_key(st) and stat.S_ISREG(st.st_mode) else None


def _remember(path: str, st: os.stat_result, raw: bytes) -> None:
    if len(_READ) >= _READ_MAX:
        _READ.clear()
    _READ[path] = (_stat_key(st), raw)


def verify_oci_layout(
    path: Path,
    store: BlobStore | None = None,
    full: bool = False,
    *,
    fingerprint: str | None = None,
    strict: bool = False,
) -> list[str]:
    """List what is wrong with a layout (empty list: it is intact).

    Manifests, indexes and configs are always re-hashed (they are small and
    pin everything). A layer blob is re-hashed unless ``store`` trusts it:
    the same inode as the store's verified blob, or a copy whose size and
    mtime match the store's record (``BlobStore.is_trusted``); ``full``
    re-hashes everything regardless. ``fingerprint``: what ``index.json``
    must hash to (the snapshot's fingerprint), checked on the bytes read here.
    ``strict``: as for ``trusted_by``.
    """
    path = Path(path)
    within = _Within(path)
    problems: list[str] = []

    def read_file(name: str, what: str, limit: int) -> bytes:
        try:
            p, st = within.stat(name)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise CacheError(f"cannot read {what} {path / name}: {e.strerror or e}") from e
        raw = None if full else _recall(p, st)
        if raw is None:
            raw = read_regular(p, what, limit)
            _remember(p, st, raw)
        return raw

    try:
        layout = json.loads(read_file(OCI_LAYOUT_FILE, "OCI layout marker", 4096))
        if not isinstance(layout, Mapping) or "imageLayoutVersion" not in layout:
            problems.append(f"{path / OCI_LAYOUT_FILE}: no imageLayoutVersion")
    except FileNotFoundError:
        problems.append(f"{path / OCI_LAYOUT_FILE} is missing")
    except ValueError as e:
        problems.append(f"{path / OCI_LAYOUT_FILE} is not valid JSON: {e}")
    except (CacheError, UnsafeArchiveError) as e:
        problems.append(str(e))
    index_path = path / INDEX_FILE
    try:
        raw_index = read_file(INDEX_FILE, "OCI layout index", SMALL_LIMIT)
    except FileNotFoundError:
        return [*problems, f"{path} is not an OCI image layout: it has no {INDEX_FILE}"]
    except (CacheError, UnsafeArchiveError) as e:
        return [*problems, str(e)]
    if fingerprint is not None and sha256_bytes(raw_index) != fingerprint:
        problems.append(f"{index_path}: does not match the recorded fingerprint {fingerprint}")
    try:
        idx = parse_index(raw_index, str(index_path))
    except CacheError as e:
        return [*problems, str(e)]

    checked: set[str] = set()

    def check_blob(desc: Descriptor, small: bool) -> bytes | None:
        """Check one blob; return its bytes when ``small`` and it is intact."""
        try:
            algo, hexd = split_digest(desc.digest)
            p, st = within.stat(f"blobs/{algo}/{hexd}")
        except (IntegrityError, UnsafeArchiveError) as e:
            problems.append(str(e))
            return None
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            problems.append(
                f"blob {desc.digest} is missing or not a regular file ({blob_file(path, desc.digest)})"
            )
            return None
        size = st.st_size
        if size != desc.size:
            problems.append(f"blob {desc.digest}: {size} bytes, expected {desc.size} ({p})")
            return None
        if small:
            if size > SMALL_LIMIT:
                problems.append(f"blob {desc.digest}: {size} bytes, far too large for a manifest or config")
                return None
            raw = None if full else _recall(p, st)
            if raw is not None:
                return raw  # remembered only once it hashed to its name
            with open(p, "rb") as fh:
                raw = fh.read()
            if sha256_bytes(raw) != desc.digest:
                problems.append(f"blob {desc.digest} does not hash to its name ({p}): altered")
                return None
            _remember(p, st, raw)
            return raw
        if desc.digest in checked:
            return None
        checked.add(desc.digest)
        if not full and store is not None and trusted_by(store, desc.digest, p, st, strict=strict):
            return None
        actual = sha256_file(p)
        if actual != desc.digest:
            problems.append(f"blob {desc.digest} does not hash to its name (got {actual}; {p}): altered")
        return None

    def walk(desc: Descriptor, depth: int) -> None:
        raw = check_blob(desc, small=True)
        if raw is None:
            return
        try:
            doc = parse_manifest_or_index(raw, desc.media_type or None)
        except ManifestError as e:
            problems.append(f"manifest {desc.digest}: {e}")
            return
        if isinstance(doc, Index):
            if depth > _MAX_NESTING:
                problems.append(f"index {desc.digest}: nested too deeply")
                return
            for child in doc.manifests:
                walk(child, depth + 1)
            return
        if doc.media_type not in MANIFEST_TYPES:
            problems.append(f"manifest {desc.digest}: unexpected media type {doc.media_type}")
        check_blob(doc.config, small=True)
        for layer in doc.layers:
            check_blob(layer, small=False)

    if not idx.manifests:
        problems.append(f"{index_path} lists no manifests")
    for desc in idx.manifests:
        walk(desc, 0)
    return problems


def is_blob_path(rel: str) -> bool:
    """Whether ``rel`` (``/``-separated, relative to a layout) names a content-addressed blob:
    the only files of a layout that may be shared with the store (hard links), since nothing
    may ever write to them; ``index.json`` and ``oci-layout`` are a layout's own."""
    parts = rel.split("/")
    return len(parts) == 3 and parts[0] == "blobs" and is_digest(f"{parts[1]}:{parts[2]}")

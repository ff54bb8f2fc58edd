"""OCI image layout directories: the snapshot a workflow's ``containers/`` dir receives.

An OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``) is
what Podman and skopeo load as it is, and what every other sink here can be
composed from. Its blobs are exactly the store's blobs, so a snapshot is
built by linking (``staging.link_or_copy``): on the same filesystem it costs
a few directory entries whatever the image's size.

**The fingerprint is the snapshot's Merkle root.** ``index.json`` names the
manifest by digest, the manifest names the config and every layer by
digest, and the config names every uncompressed layer by diff id. So the
sha256 of ``index.json`` pins every byte of the snapshot, and since we
write ``oci-layout`` and ``index.json`` deterministically (sorted keys,
compact separators) the same image with the same ref name always gets the
same fingerprint on any machine.

Snapshots are published by building a temporary directory beside the
destination and renaming it into place: a snapshot directory is complete
or absent, never half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cache.blobstore import BlobStore
from ..digests import sha256_bytes, sha256_file, split_digest
from ..errors import CacheError, IntegrityError
from ..fsutil import fsync_dir
from .image import StoredImage
from .manifest import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    Descriptor,
    Index,
    ManifestError,
    Platform,
    parse_manifest,
    parse_manifest_or_index,
)
from .staging import link_or_copy, make_temp_dir, publish_dir

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
#: The OCI annotation skopeo's ``oci:DIR:REF`` and Podman's ``load`` read the name from.
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
#: containerd's (``ctr import``, nerdctl, BuildKit) full image name annotation.
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"


def _canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def oci_layout_bytes() -> bytes:
    return _canonical_json({"imageLayoutVersion": LAYOUT_VERSION})


def index_bytes(image: StoredImage, ref_name: str | None = None) -> bytes:
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
            f"invalid ref name {ref_name!r}: use an image name such as 'localhost/name:tag' (no whitespace)"
        )


def write_oci_layout(image: StoredImage, dest: Path, *, ref_name: str | None = None) -> str:
    """Publish ``image`` as an OCI layout at ``dest``; return its fingerprint (``sha256:`` of index.json).

    Blobs are hard links into the store where possible (reflinks or copies
    elsewhere; see ``staging``). An existing ``dest`` that already holds the
    same index and intact blobs is kept as is (a re-stage is O(1));
    anything else there is swapped out atomically.
    """
    dest = Path(dest)
    index_raw = index_bytes(image, ref_name)
    fingerprint = sha256_bytes(index_raw)
    if dest.is_dir():
        try:
            current = (dest / INDEX_FILE).read_bytes()
        except OSError:
            current = b""
        if current == index_raw and not verify_oci_layout(dest, image.store):
            return fingerprint
    tmp = make_temp_dir(dest)
    try:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for digest in image.blob_digests():
            link_or_copy(image.store.path(digest), blobs / split_digest(digest)[1])
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


def _write_small(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o644)


def _blob_path(layout: Path, digest: str) -> Path:
    algo, hexd = split_digest(digest)  # refuses anything that could escape the layout
    return layout / "blobs" / algo / hexd


def _load_index(path: Path) -> Index:
    try:
        raw = (path / INDEX_FILE).read_bytes()
    except FileNotFoundError:
        raise CacheError(f"{path} is not an OCI image layout: it has no {INDEX_FILE}") from None
    try:
        idx = parse_manifest_or_index(raw, OCI_INDEX)
    except ManifestError as e:
        raise CacheError(f"{path / INDEX_FILE} is not a valid OCI index: {e}") from e
    if not isinstance(idx, Index):
        raise CacheError(f"{path / INDEX_FILE} is an image manifest, not an index")
    return idx


def read_oci_layout(
    path: Path, *, ref_name: str | None = None, platform: Platform | None = None
) -> tuple[Index, str, str | None]:
    """Return ``(index, manifest_digest, ref_name)`` for the one image a layout holds.

    With several entries, pick by ``ref_name`` (matched against the
    ``org.opencontainers.image.ref.name`` annotation). An entry that is
    itself an index (a multi-platform layout written by skopeo) is resolved
    to ``platform`` (default: this machine's).
    """
    path = Path(path)
    idx = _load_index(path)
    entries = list(idx.manifests)
    if ref_name is not None:
        entries = [d for d in entries if d.annotations.get(REF_NAME_ANNOTATION) == ref_name]
        if not entries:
            names = [d.annotations.get(REF_NAME_ANNOTATION) for d in idx.manifests]
            raise CacheError(f"{path} has no image named {ref_name!r}; it holds: {names}")
    if not entries:
        raise CacheError(f"{path / INDEX_FILE} lists no manifests; the layout is empty")
    if len(entries) > 1:
        names = [d.annotations.get(REF_NAME_ANNOTATION) for d in entries]
        raise CacheError(f"{path} holds {len(entries)} images ({names}); pass ref_name to pick one")
    desc = entries[0]
    name = desc.annotations.get(REF_NAME_ANNOTATION)
    seen = 0
    while desc.media_type in INDEX_TYPES or (not desc.media_type and _is_index_blob(path, desc)):
        seen += 1
        if seen > 4:
            raise CacheError(f"{path}: indexes nested too deeply")
        raw = _read_blob(path, desc)
        nested = parse_manifest_or_index(raw)
        if not isinstance(nested, Index):
            break
        desc = nested.select(platform or Platform.host())
    return idx, desc.digest, name


def _is_index_blob(layout: Path, desc: Descriptor) -> bool:
    try:
        return isinstance(parse_manifest_or_index(_read_blob(layout, desc)), Index)
    except (CacheError, ManifestError):
        return False


def _read_blob(layout: Path, desc: Descriptor) -> bytes:
    p = _blob_path(layout, desc.digest)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise CacheError(f"{layout}: blob {desc.digest} is missing; the layout is incomplete") from None
    if sha256_bytes(raw) != desc.digest:
        raise IntegrityError(
            f"{p} does not hash to its name; the layout was altered: write it again",
            expected=desc.digest,
            actual=sha256_bytes(raw),
        )
    return raw


def ingest_oci_layout(
    store: BlobStore, path: Path, *, ref_name: str | None = None, platform: Platform | None = None
) -> str:
    """Import the image a layout holds into ``store`` (every blob verified); return its manifest digest."""
    path = Path(path)
    _, manifest_digest, _ = read_oci_layout(path, ref_name=ref_name, platform=platform)
    raw = _read_blob(path, Descriptor("", manifest_digest, 0))
    try:
        manifest = parse_manifest(raw)
    except ManifestError as e:
        raise CacheError(f"{path}: manifest {manifest_digest} is invalid: {e}") from e
    for desc in (manifest.config, *manifest.layers):
        if store.has(desc.digest) and store.is_trusted(desc.digest):
            continue
        src = _blob_path(path, desc.digest)
        if not src.is_file():
            raise CacheError(f"{path}: blob {desc.digest} is missing; the layout is incomplete")
        if src.stat().st_size != desc.size:
            raise IntegrityError(
                f"{src}: {src.stat().st_size} bytes, the manifest says {desc.size}; the layout is corrupt",
                expected=desc.digest,
            )
        with store.lock(desc.digest):
            if not store.has(desc.digest):
                store.put_file(src, expected_digest=desc.digest)
    if not store.has(manifest_digest):
        store.put_bytes(raw, expected_digest=manifest_digest)
    return manifest_digest


def verify_oci_layout(path: Path, store: BlobStore | None = None, full: bool = False) -> list[str]:
    """List what is wrong with a layout (empty list: it is intact).

    Manifests, indexes and configs are always re-hashed (they are small and
    pin everything). A layer blob is re-hashed unless ``store`` trusts it:
    the same inode as the store's verified blob, or a copy whose size and
    mtime match the store's record (``BlobStore.is_trusted``); ``full``
    re-hashes everything regardless.
    """
    path = Path(path)
    problems: list[str] = []
    try:
        layout = json.loads((path / OCI_LAYOUT_FILE).read_bytes())
        if not isinstance(layout, Mapping) or "imageLayoutVersion" not in layout:
            problems.append(f"{path / OCI_LAYOUT_FILE}: no imageLayoutVersion")
    except FileNotFoundError:
        problems.append(f"{path / OCI_LAYOUT_FILE} is missing")
    except ValueError as e:
        problems.append(f"{path / OCI_LAYOUT_FILE} is not valid JSON: {e}")
    try:
        idx = _load_index(path)
    except CacheError as e:
        return [*problems, str(e)]

    checked: set[str] = set()

    def check_blob(desc: Descriptor, small: bool) -> bytes | None:
        """Check one blob; return its bytes when ``small`` and it is intact."""
        try:
            p = _blob_path(path, desc.digest)
        except IntegrityError as e:
            problems.append(str(e))
            return None
        if not p.is_file():
            problems.append(f"blob {desc.digest} is missing ({p})")
            return None
        size = p.stat().st_size
        if size != desc.size:
            problems.append(f"blob {desc.digest}: {size} bytes, expected {desc.size} ({p})")
            return None
        if small:
            raw = p.read_bytes()
            if sha256_bytes(raw) != desc.digest:
                problems.append(f"blob {desc.digest} does not hash to its name ({p}): altered")
                return None
            return raw
        if desc.digest in checked:
            return None
        checked.add(desc.digest)
        if not full and store is not None and _trusted(store, desc.digest, p):
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
            if depth > 4:
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
        problems.append(f"{path / INDEX_FILE} lists no manifests")
    for desc in idx.manifests:
        walk(desc, 0)
    return problems


def _trusted(store: BlobStore, digest: str, p: Path) -> bool:
    try:
        st = p.stat()
        sst = store.path(digest).stat()
    except OSError:
        return store.is_trusted(digest, p)
    if (st.st_dev, st.st_ino) == (sst.st_dev, sst.st_ino):
        return store.is_trusted(digest)
    return store.is_trusted(digest, p)

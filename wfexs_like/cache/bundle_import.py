"""``import_bundle``: publish a bundle's images into a cache, after checking all of it.

A bundle arrives from somewhere else, so it is read as hostile until proven
otherwise, in one streaming pass:

- every member is refused before its bytes are read when its name is
  absolute or climbs out with ``..``, when it is a link (symbolic or hard), a
  device node, a FIFO or anything but a regular file, when its name repeats,
  when it is not a member a bundle has, or when it exceeds the bounds
  (``ImportLimits``: per member, in total, member count);
- every blob is hashed while it is written to a staging dir inside the
  cache (same filesystem: publishing is then a rename) and must hash to its
  name; every member must match ``SHA256SUMS``, and everything the bundle
  manifest and ``index.json`` name must be in the bundle.

Only then is anything published: blobs into the blob store, then tag
resolutions, then snapshot entries (an OCI layout rebuilt from the store's
blobs with the bundle's own ``index.json``, a SIF or docker-archive as its
file), so an offline materialize on this machine finds exactly what the
exporting machine had, digest for digest. A refusal removes the staging dir
and any directory the import created: the cache is as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .. import progress
from ..digests import CHUNK, split_digest
from ..errors import CacheError, IntegrityError, ProvenanceError, UnsafeArchiveError
from ..fsutil import atomic_write_bytes
from ..images.layout import oci_layout_bytes, parse_index, verify_oci_layout
from ..images.manifest import Descriptor, Manifest, parse_manifest_or_index
from ..images.sif import read_sif
from ..images.staging import link_or_copy
from ..provenance import load_containers
from .build import work_dir
from .bundle import (
    DIRECTORY_MEMBERS,
    DOCUMENT_LIMIT,
    DOCUMENT_MEMBERS,
    FILE_KINDS,
    INDEX_MEMBER,
    MANIFEST_MEMBER,
    OCI_LAYOUT_MEMBER,
    RECORDS_MEMBER,
    SUMS_MEMBER,
    BundleManifest,
    ImportLimits,
    ImportSummary,
    SnapshotEntry,
    blob_member,
    blob_of_member,
    load_json_document,
    parse_sums,
    reachable_blobs,
)
from .paths import default_cache_dir
from .snapshots import ImageCache

NOT_OURS = (
    "'wfexs-like export' never writes such a member: do not use this file; export the images again "
    "on the machine that has them"
)
DAMAGED = (
    "the bundle was damaged or altered after it was written: copy it again and compare its sha256 "
    "with the one 'wfexs-like export' printed"
)
TRUNCATED = "the bundle is incomplete (a copy cut short?): copy it again"
#: What a damaged stream raises from tarfile or the decompressors (a bundle may have been gzipped).
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


def _refuse(where: str, name: str, problem: str, advice: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"bundle {where}: member {name!r} {problem}; nothing was imported. {advice}")


def _damaged(where: str, name: str, problem: str, **digests: str | None) -> IntegrityError:
    return IntegrityError(
        f"bundle {where}: member {name!r} {problem}; nothing was imported. {DAMAGED}", **digests
    )


@dataclass
class _Received:
    """What one pass over the tar left in memory (documents) and in the staging dir (blobs)."""

    documents: dict[str, bytes] = field(default_factory=dict)
    blobs: dict[str, Path] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    total: int = 0


@dataclass
class _Contents:
    """A verified bundle: what to publish, and from which staged files."""

    manifest: BundleManifest
    image_blobs: set[str]
    layouts: dict[str, tuple[bytes, set[str]]]
    images: int
    records: bytes | None
    n_records: int


class _HashingReader:
    """The bundle file as tarfile reads it, hashed and counted on the way (progress, summary digest)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._hash = hashlib.sha256()
        self.offset = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._hash.update(data)
        self.offset += len(data)
        return data

    def drain(self) -> str:
        while self.read(CHUNK):
            progress.check_cancelled()
        return "sha256:" + self._hash.hexdigest()


def import_bundle(
    bundle: Path,
    cache_dir: Path | None = None,
    *,
    limits: ImportLimits | None = None,
    records_out: Path | None = None,
) -> ImportSummary:
    """Verify ``bundle`` completely, then publish its images into the cache at ``cache_dir``.

    ``records_out`` receives the containers YAML the bundle carries (when
    it was exported from records). Raises ``UnsafeArchiveError`` or
    ``IntegrityError`` naming the member at fault; the cache is then
    untouched.
    """
    limits = limits or ImportLimits()
    bundle = Path(bundle)
    where = str(bundle)
    root = Path(cache_dir or default_cache_dir()).absolute()
    if records_out is not None and not Path(records_out).absolute().parent.is_dir():
        raise CacheError(f"cannot write records to {records_out}: its directory does not exist")
    try:
        size = bundle.stat().st_size
        fh = open(bundle, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise CacheError(f"cannot read bundle {bundle}: {e.strerror or e}") from e
    label = f"import {bundle.name}"
    reporter = progress.current()
    reporter.begin(label)
    started = time.monotonic()
    try:
        with fh:
            received, contents, digest, staging = _stage_and_verify(
                fh, size, where, root, limits, label, need_records=records_out is not None
            )
        try:
            reporter.step(label, "publishing")
            new_blobs = _publish(ImageCache(root), received, contents)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if records_out is not None and contents.records is not None:
            atomic_write_bytes(Path(records_out), contents.records, mode=0o644)
    except Exception as e:
        reporter.finish(
            progress.ImageSummary(label, "failed", seconds=time.monotonic() - started, reason=str(e))
        )
        raise
    m = contents.manifest
    reporter.finish(progress.ImageSummary(label, "cached", digest, size, time.monotonic() - started))
    return ImportSummary(
        bundle=bundle,
        cache_dir=root,
        references=tuple(sorted({r.reference for r in m.resolutions} | {s.reference for s in m.snapshots})),
        images=contents.images,
        snapshots=len(m.snapshots),
        blobs=len(received.blobs),
        new_blobs=new_blobs,
        bytes=size,
        digest=digest,
        records=contents.n_records,
    )


def _stage_and_verify(
    fh: IO[bytes], size: int, where: str, root: Path, limits: ImportLimits, label: str, *, need_records: bool
) -> tuple[_Received, _Contents, str, Path]:
    """Receive and check everything into a staging dir; on any failure leave no trace in ``root``."""
    created = _make_dirs(root / "tmp")
    try:
        staging = Path(tempfile.mkdtemp(prefix="import-", dir=root / "tmp"))
    except OSError as e:
        _remove_dirs(created)
        raise CacheError(
            f"cannot write to the cache at {root}: {e.strerror}; choose another with --cache-dir"
        ) from e
    try:
        reader = _HashingReader(fh)
        progress.current().step(label, "verifying")
        received = _receive(reader, size, where, staging, limits, label)
        digest = reader.drain()
        try:
            contents = _verify(received, where)
        except RecursionError as e:
            raise CacheError(
                f"bundle {where}: a JSON document in it is nested too deeply; it is not a wfexs-like bundle"
            ) from e
        if need_records and contents.records is None:
            raise CacheError(f"bundle {where} carries no containers YAML; drop --records-out")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_dirs(created)
        raise
    return received, contents, digest, staging


def _remove_dirs(created: list[Path]) -> None:
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


def _make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; return those created (removed again on a refusal)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            _remove_dirs(created)
            raise CacheError(
                f"cannot create cache directory {d}: {e.strerror}; choose another with --cache-dir"
            ) from e
        created.append(d)
    return created


# -- one pass over the tar -----------------------------------------------------------------------


def _member_name(raw: str, where: str) -> str:
    if not raw or "\0" in raw:
        raise _refuse(where, raw, "has an empty or invalid name", NOT_OURS)
    if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw):
        raise _refuse(where, raw, "has an absolute path", NOT_OURS)
    if ".." in raw.replace("\\", "/").split("/"):
        raise _refuse(where, raw, "climbs out of the bundle with '..'", NOT_OURS)
    return posixpath.normpath(raw)


def _check_type(ti: tarfile.TarInfo, name: str, where: str) -> None:
    """Only regular files (and the two blob directories) belong in a bundle."""
    if ti.issym() or ti.islnk():
        target = ti.linkname
        base = posixpath.dirname(name) if ti.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target)) if target else ".."
        outside = target.startswith("/") or resolved == ".." or resolved.startswith("../")
        kind = "symbolic" if ti.issym() else "hard"
        where_to = "outside the bundle" if outside else "and a bundle holds only regular files"
        raise _refuse(where, name, f"is a {kind} link to {target!r}, {where_to}", NOT_OURS)
    if ti.ischr() or ti.isblk():
        what = "character" if ti.ischr() else "block"
        raise _refuse(where, name, f"is a {what} device node", NOT_OURS)
    if ti.isfifo():
        raise _refuse(where, name, "is a FIFO (named pipe)", NOT_OURS)
    if ti.isdir():
        if name not in DIRECTORY_MEMBERS:
            raise _refuse(where, name, "is a directory no bundle has", NOT_OURS)
        return
    if not ti.isreg():
        raise _refuse(where, name, f"is not a regular file (tar type {ti.type!r})", NOT_OURS)
    if ti.issparse():
        raise _refuse(where, name, "is a sparse file", NOT_OURS)


def _check_bounds(ti: tarfile.TarInfo, name: str, where: str, total: int, limits: ImportLimits) -> None:
    raise_hint = "if the bundle is genuine, raise the limit with {flag}"
    if ti.size < 0:
        raise _refuse(where, name, f"claims a negative size ({ti.size})", NOT_OURS)
    if ti.size > limits.max_member_bytes:
        raise _refuse(
            where,
            name,
            f"is {ti.size} bytes, more than the {limits.max_member_bytes} allowed per member",
            raise_hint.format(flag="--max-member-size"),
        )
    if total + ti.size > limits.max_total_bytes:
        raise _refuse(
            where,
            name,
            f"brings the bundle past the {limits.max_total_bytes} bytes allowed in total",
            raise_hint.format(flag="--max-total-size"),
        )
    if name in (*DOCUMENT_MEMBERS, SUMS_MEMBER) and ti.size > DOCUMENT_LIMIT:
        raise _refuse(where, name, f"is {ti.size} bytes, far too large for what it should be", NOT_OURS)


def _receive(
    reader: _HashingReader, size: int, where: str, staging: Path, limits: ImportLimits, label: str
) -> _Received:
    got = _Received()
    reporter = progress.current()
    last = "(the start)"
    try:
        tf = tarfile.open(fileobj=reader, mode="r|*")  # type: ignore[call-overload]  # noqa: SIM115
    except _READ_ERRORS as e:
        raise CacheError(f"{where} is not a tar archive ({e}); it is not a wfexs-like bundle") from e
    seen: set[str] = set()
    count = 0
    while True:
        try:
            ti = tf.next()
        except _READ_ERRORS as e:
            raise CacheError(
                f"bundle {where} is truncated or corrupt after member {last!r} ({e}); "
                f"nothing was imported. {TRUNCATED}"
            ) from e
        if ti is None:
            break
        count += 1
        if count > limits.max_members:
            raise _refuse(where, ti.name, f"is past the limit of {limits.max_members} members", NOT_OURS)
        name = _member_name(ti.name, where)
        if name in seen:
            raise _refuse(where, name, "appears twice", NOT_OURS)
        seen.add(name)
        _check_type(ti, name, where)
        if ti.isdir():
            continue
        _check_bounds(ti, name, where, got.total, limits)
        digest = blob_of_member(name)
        if digest is None and name not in (*DOCUMENT_MEMBERS, SUMS_MEMBER):
            raise _refuse(where, name, "is not part of a wfexs-like bundle", NOT_OURS)
        got.total += ti.size
        src = tf.extractfile(ti)
        assert src is not None  # a regular file
        if digest is None:
            data = b"".join(_chunks(src, ti.size, name, where, reader, size, label))
            got.documents[name] = data
            got.digests[name] = "sha256:" + hashlib.sha256(data).hexdigest()
        else:
            got.blobs[digest] = _stage_blob(src, ti.size, name, digest, where, staging, reader, size, label)
            got.digests[name] = digest
        last = name
        reporter.advance(label, "bundle", reader.offset, size)
    return got


def _chunks(
    src: IO[bytes], size: int, name: str, where: str, reader: _HashingReader, total: int, label: str
) -> Iterator[bytes]:
    """A member's bytes; a stream that ends early is a truncated bundle, named by its member."""
    reporter = progress.current()
    left = size
    while left > 0:
        progress.check_cancelled()
        try:
            chunk = src.read(min(CHUNK, left))
        except _READ_ERRORS as e:
            raise CacheError(
                f"bundle {where}: member {name!r} is cut short ({e}); nothing was imported. {TRUNCATED}"
            ) from e
        if not chunk:
            raise CacheError(
                f"bundle {where}: member {name!r} is cut short; nothing was imported. {TRUNCATED}"
            )
        left -= len(chunk)
        reporter.advance(label, "bundle", reader.offset, total)
        yield chunk


def _stage_blob(
    src: IO[bytes],
    size: int,
    name: str,
    digest: str,
    where: str,
    staging: Path,
    reader: _HashingReader,
    total: int,
    label: str,
) -> Path:
    free = shutil.disk_usage(staging).free
    if size > free:
        raise CacheError(
            f"bundle {where}: member {name!r} needs {size} bytes and the cache's filesystem has {free} "
            "free; nothing was imported. Free some space (wfexs-like cache prune) or use another --cache-dir"
        )
    path = staging / split_digest(digest)[1]
    h = hashlib.sha256()
    with open(path, "wb") as out:
        for chunk in _chunks(src, size, name, where, reader, total, label):
            h.update(chunk)
            out.write(chunk)
    actual = "sha256:" + h.hexdigest()
    if actual != digest:
        raise _damaged(
            where,
            name,
            f"does not hash to its name (its bytes hash to {actual})",
            expected=digest,
            actual=actual,
        )
    return path


# -- checking what arrived -----------------------------------------------------------------------


def _verify(got: _Received, where: str) -> _Contents:
    """SHA256SUMS, then the structure: everything named is present, every image complete."""
    _check_sums(got, where)
    for name in (OCI_LAYOUT_MEMBER, INDEX_MEMBER, MANIFEST_MEMBER):
        if name not in got.documents:
            raise CacheError(f"bundle {where} has no {name}; it is not a wfexs-like bundle")
    layout = load_json_document(got.documents[OCI_LAYOUT_MEMBER], f"bundle {where}: {OCI_LAYOUT_MEMBER}")
    if "imageLayoutVersion" not in layout:
        raise CacheError(f"bundle {where}: {OCI_LAYOUT_MEMBER} has no imageLayoutVersion; {DAMAGED}")
    manifest = BundleManifest.from_bytes(got.documents[MANIFEST_MEMBER], f"bundle {where}")
    index = parse_index(got.documents[INDEX_MEMBER], f"bundle {where}: {INDEX_MEMBER}")
    check = _Structure(got, where)
    for desc in index.manifests:
        check.image_blobs |= check.complete(desc, f"image {desc.digest} of {INDEX_MEMBER}")
    for r in manifest.resolutions:
        what = f"image {r.manifest_digest} of {r.reference}"
        if not isinstance(parse_manifest_or_index(check.read_small(r.manifest_digest)), Manifest):
            raise CacheError(f"bundle {where}: {what} is an index, not one image; {DAMAGED}")
        check.image_blobs |= check.complete(Descriptor("", r.manifest_digest, 0), what)
    for s in manifest.snapshots:
        check.snapshot(s)
    records, n_records = _records(got, manifest, where)
    return _Contents(manifest, check.image_blobs, check.layouts, len(index.manifests), records, n_records)


def _check_sums(got: _Received, where: str) -> None:
    """Every member listed with the digest its bytes have, and nothing listed that did not arrive."""
    if SUMS_MEMBER not in got.documents:
        raise CacheError(f"bundle {where} has no {SUMS_MEMBER} at its end; nothing was imported. {TRUNCATED}")
    listed = parse_sums(got.documents[SUMS_MEMBER], f"bundle {where}")
    for name, digest in got.digests.items():
        if name == SUMS_MEMBER:
            continue
        if name not in listed:
            raise _damaged(where, name, f"is not listed in {SUMS_MEMBER}")
        if listed[name] != digest:
            raise _damaged(
                where,
                name,
                f"does not match {SUMS_MEMBER} (its bytes hash to {digest}, the list says {listed[name]})",
                expected=listed[name],
                actual=digest,
            )
    for name in listed:
        if name not in got.digests:
            raise _refuse(where, name, f"is listed in {SUMS_MEMBER} but is not in the bundle", TRUNCATED)


class _Structure:
    """Checks that everything the bundle's documents name arrived; collects what to publish."""

    def __init__(self, got: _Received, where: str) -> None:
        self.got = got
        self.where = where
        self.image_blobs: set[str] = set()
        self.layouts: dict[str, tuple[bytes, set[str]]] = {}

    def read_small(self, digest: str) -> bytes:
        path = self.got.blobs.get(digest)
        if path is None:
            raise CacheError(
                f"bundle {self.where} lacks blob {digest}, which an image in it needs; {DAMAGED}"
            )
        if path.stat().st_size > DOCUMENT_LIMIT:
            raise CacheError(f"bundle {self.where}: blob {digest} is far too large for a manifest; {DAMAGED}")
        return path.read_bytes()

    def complete(self, desc: Descriptor, what: str) -> set[str]:
        """The blobs of the image (or index) ``desc`` names, each present with the size named."""
        needed = {desc.digest}
        for child in reachable_blobs(
            self.read_small(desc.digest), self.read_small, f"bundle {self.where}: {what}"
        ):
            path = self.got.blobs.get(child.digest)
            if path is None:
                raise CacheError(f"bundle {self.where}: {what} lacks blob {child.digest}; {DAMAGED}")
            if path.stat().st_size != child.size:
                raise CacheError(
                    f"bundle {self.where}: blob {child.digest} of {what} is {path.stat().st_size} bytes, "
                    f"its descriptor says {child.size}; {DAMAGED}"
                )
            needed.add(child.digest)
        return needed

    def snapshot(self, s: SnapshotEntry) -> None:
        what = f"the {s.kind} snapshot {s.fingerprint} of {s.reference}"
        path = self.got.blobs.get(s.fingerprint)
        if path is None:
            raise CacheError(f"bundle {self.where} lacks {what}; {DAMAGED}")
        if s.kind == "sif":
            try:
                read_sif(path)
            except Exception as e:  # any parse failure means "not a SIF we can trust"
                raise _damaged(
                    self.where, blob_member(s.fingerprint), f"is not a valid SIF file ({e})"
                ) from e
        if s.kind in FILE_KINDS:
            return
        raw = self.read_small(s.fingerprint)
        index = parse_index(raw, f"bundle {self.where}: {what}")
        needed: set[str] = set()
        for desc in index.manifests:
            needed |= self.complete(desc, what)
        self.image_blobs |= needed
        self.layouts[s.fingerprint] = (raw, needed)


def _records(got: _Received, manifest: BundleManifest, where: str) -> tuple[bytes | None, int]:
    raw = got.documents.get(RECORDS_MEMBER)
    if (raw is None) != (manifest.records is None):
        raise CacheError(
            f"bundle {where}: {MANIFEST_MEMBER} and the {RECORDS_MEMBER} member disagree; {DAMAGED}"
        )
    if raw is None:
        return None, 0
    try:
        return raw, len(load_containers(raw))
    except ProvenanceError as e:
        raise CacheError(f"bundle {where}: {RECORDS_MEMBER} is not a readable containers YAML ({e})") from e


# -- publishing ----------------------------------------------------------------------------------


def _publish(cache: ImageCache, got: _Received, contents: _Contents) -> int:
    """Blobs, then resolutions, then snapshot entries: a reader never sees an entry without its bytes."""
    store = cache.store
    new = 0
    for digest in sorted(contents.image_blobs):
        progress.check_cancelled()
        if store.has(digest) and store.verify(digest):
            continue
        store.adopt_file(got.blobs[digest], digest)
        new += 1
    m = contents.manifest
    for r in m.resolutions:
        cache.record_resolution(r.reference, r.platform, r.manifest_digest, source="bundle")
    for s in m.snapshots:
        progress.check_cancelled()
        hit = cache.lookup(s.reference, s.kind, s.platform)
        if hit is not None and hit.fingerprint == s.fingerprint:
            continue
        if s.kind in FILE_KINDS:
            staged = got.blobs[s.fingerprint]
            if staged.exists():
                new += not store.has(s.fingerprint)
                cache.put(s.reference, s.kind, staged, s.metadata, platform=s.platform, move=True)
            else:  # a second entry for the same file: the first one published it
                cache.put(
                    s.reference,
                    s.kind,
                    store.path(s.fingerprint),
                    s.metadata,
                    platform=s.platform,
                    move=False,
                )
            continue
        raw, needed = contents.layouts[s.fingerprint]
        with work_dir(cache, "import-layout-") as work:
            layout = work / "layout"
            blobs = layout / "blobs" / "sha256"
            blobs.mkdir(parents=True)
            for digest in sorted(needed):
                link_or_copy(store.path(digest), blobs / split_digest(digest)[1])
            for name, data in ((OCI_LAYOUT_MEMBER, oci_layout_bytes()), ("index.json", raw)):
                (layout / name).write_bytes(data)
                os.chmod(layout / name, 0o644)
            problems = verify_oci_layout(layout, store)
            if problems:
                raise IntegrityError(
                    f"the OCI layout of {s.reference} rebuilt from the bundle is not intact: "
                    + "; ".join(problems)
                    + ". Run 'wfexs-like cache verify --repair' and import again"
                )
            cache.put(s.reference, "oci-layout", layout, s.metadata, platform=s.platform, move=True)
    return new

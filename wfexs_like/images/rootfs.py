"""Apply OCI / Docker layer tarballs onto a directory, as a container runtime would, but safely.

A layer is untrusted input: it comes from whatever registry a workflow names.
So every member is placed by resolving its path component by component,
never letting the kernel follow a symlink the layer planted, and nothing is
ever created, changed or deleted outside the root.

The SIF builder streams layers without extracting them (``tarstream.py``,
which applies these same rules to a tree in memory and shares the helpers
below); this extraction is its fallback where ``tar2sqfs`` is missing, and
the reference the streamed merge is tested against.

The rules (the interpretation of "a symlink escaping the root is refused"):

- A member name that is absolute or has a ``..`` component is refused.
- Symlinks are stored exactly as the layer says, whatever they point to:
  ``etc/mtab -> /proc/mounts`` is normal in an image, and a symlink is
  harmless until something is written *through* it.
- A member (or a whiteout) whose parent path goes through a symlink is
  followed only while the link is relative and stays inside the root. A
  link with an absolute target, or one whose ``..`` climbs above the root,
  points outside the root from the host's point of view, so writing
  through it is refused: ``etc -> /`` followed by ``etc/passwd`` raises
  ``UnsafeArchiveError``, it never touches the host's ``/passwd``.
- A hardlink's target must be a non-directory already in the root, named
  without ``..`` or a leading ``/``, and reached by the same rules.

Any refusal raises ``UnsafeArchiveError`` naming the layer (by digest) and
the member; the root is then half-applied and should be thrown away.

Layers are ``Layer`` objects and are read through ``uncompressed()``, so
compression is decided by ``compression.py`` alone and every byte is checked
against the layer's diff id (and its digest, unless the source already
vouches for the blob). Each stream is read to its end for that check to run:
bytes that are not the image's raise ``IntegrityError`` after the layer was
applied, which again leaves a root to throw away, never a published result.

Other behaviour follows the OCI image-spec layer rules: ``.wh.<name>``
deletes ``<name>`` from lower layers, ``.wh..wh..opq`` empties its directory
of lower-layer content, later entries replace earlier ones. Modes (setuid
and sticky bits included) and mtimes are kept; ownership is kept when
running as root (an unprivileged user cannot chown). Device nodes are
skipped with a warning, since creating them needs privileges and a rootfs
for an unprivileged runtime does not need them. Extended attributes
(e.g. file capabilities) are not applied.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import logging
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .. import progress
from ..digests import CHUNK
from ..errors import ContainerFactoryException, UnsafeArchiveError
from .base import Layer

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
MAX_SYMLINK_HOPS = 40
#: One template for every skipped device node, so the progress renderer folds them into one line.
DEVICE_NODE_WARNING = "layer %s: skipping device node %r (not created by an unprivileged build)"
UNSUPPORTED_MEMBER_WARNING = "layer %s: skipping member %r of unsupported tar type %r"
_COPY_CHUNK = 1 << 20
#: What a damaged tar or compressed stream raises while it is read (bz2 raises a plain OSError).
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def apply_layers(layers: Sequence[Layer], rootfs: Path, *, implicit_mtime: int = 0) -> None:
    """Apply ``layers``, lowest first, into ``rootfs`` (created if missing).

    Directory modes and mtimes are set only once every layer is in, because
    extracting into a directory changes its mtime and a read-only directory
    from one layer may still receive files from the next. Directories no
    layer describes (implicit parents, and the root when no layer has a
    ``./`` entry) get mode 0755 and ``implicit_mtime``, so that the result
    does not depend on when it was extracted.
    """
    rootfs = Path(rootfs)
    rootfs.mkdir(parents=True, exist_ok=True)
    applier = _Applier(os.path.realpath(rootfs), implicit_mtime)
    for layer in layers:
        applier.apply(layer)
    applier.finish()


@dataclass(frozen=True)
class _DirMeta:
    mode: int
    mtime: float
    uid: int
    gid: int


class _Forward:
    """A forward-only file over a stream, with the ``tell`` and ``seek`` that ``tarfile`` asks of one."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self._pos:
            raise tarfile.StreamError("seeking backwards is not allowed")
        while self._pos < pos:
            progress.check_cancelled()
            if not self.read(min(pos - self._pos, CHUNK)):
                raise tarfile.ReadError("unexpected end of data")
        return self._pos


class _Body:
    """One member's bytes, read straight from the layer stream in the caller's chunk size."""

    def __init__(self, fileobj: _Forward, size: int) -> None:
        self._f = fileobj
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n) if n else b""
        if n and not data:
            raise tarfile.ReadError("unexpected end of data")
        self._left -= len(data)
        return data


class LayerTar:
    """The members of a layer read as a stream: ``tarfile``'s own header parsing, bodies read direct.

    Why not ``tarfile.open(mode="r|")``: its stream object hands member
    bytes over in 10 KiB reads joined in Python, which was a fifth of a SIF
    build's own CPU on a base image. Headers (ustar, GNU long names, pax,
    sparse) still come from ``TarInfo.fromtarfile``, the documented way to
    read one member through an object with ``fileobj``, ``encoding``,
    ``errors`` and ``pax_headers``; ``next`` ends and fails as
    ``TarFile.next`` does. Iterate once; ``extractfile`` is for the member
    just yielded (a stream never looks back, and no header is kept).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.fileobj = _Forward(stream)
        self.encoding = "utf-8"
        self.errors = "surrogateescape"
        self.pax_headers: dict[str, str] = {}
        self.offset = 0  # where the next header starts (``TarInfo`` keeps it current)

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while (member := self.next()) is not None:
            yield member

    def next(self) -> tarfile.TarInfo | None:
        if self.offset != self.fileobj.tell():
            self.fileobj.seek(self.offset)  # skip what the caller did not read of the last body
        try:
            return tarfile.TarInfo.fromtarfile(self)  # type: ignore[arg-type]
        except tarfile.EOFHeaderError:
            return None
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as e:
            if self.offset == 0:
                raise tarfile.ReadError(str(e)) from None
            return None  # as tarfile: a damaged header after the first ends the archive
        except tarfile.EmptyHeaderError:
            if self.offset == 0:
                raise tarfile.ReadError("empty file") from None
            return None
        except tarfile.SubsequentHeaderError as e:
            raise tarfile.ReadError(str(e)) from None

    def extractfile(self, member: tarfile.TarInfo) -> _Body:
        self.fileobj.seek(member.offset_data)
        return _Body(self.fileobj, member.size)


@contextmanager
def open_layer(layer: Layer, name: str) -> Iterator[LayerTar]:
    """The layer as a tar stream; on leaving, the rest of the stream is read so its check runs."""
    with contextlib.closing(layer.uncompressed()) as stream:
        try:
            yield LayerTar(stream)
            _drain(stream)
        except READ_ERRORS as exc:
            _check_blob(layer)
            raise ContainerFactoryException(
                f"layer {name} matches its digest but is not a readable (compressed) tar archive: "
                f"{exc}; the image was published broken: rebuild or re-push it"
            ) from exc


def _drain(stream: BinaryIO) -> None:
    """Read to the end: tar stops at its end-of-archive marker, before the padding and checks."""
    while stream.read(CHUNK):
        progress.check_cancelled()


def _check_blob(layer: Layer) -> None:
    """Read the blob as stored: wrong bytes raise IntegrityError, the real cause of a broken stream."""
    with contextlib.closing(layer.compressed()) as raw:
        _drain(raw)


def member_parts(name: str, layer: str, member: str, what: str = "member") -> list[str]:
    if "\x00" in name:
        raise UnsafeArchiveError(f"layer {layer}: {what} {member!r} has a NUL byte in its name")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"layer {layer}: {what} {member!r} has an absolute path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"layer {layer}: {what} {member!r} has a '..' component in {name!r}")
    return parts


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


class _Applier:
    def __init__(self, root: str, implicit_mtime: int) -> None:
        self.root = root
        self.implicit_mtime = implicit_mtime
        self.as_root = os.geteuid() == 0
        self.dirs: dict[str, _DirMeta] = {root: _DirMeta(0o755, implicit_mtime, 0, 0)}
        # Paths this layer wrote (and their ancestors): whiteouts only remove lower content.
        self.layer_paths: set[str] = set()

    # ---- one layer -------------------------------------------------------------------
    def apply(self, layer: Layer) -> None:
        self.layer_paths = set()
        name = layer.digest()
        with open_layer(layer, name) as tf:
            for member in tf:
                progress.check_cancelled()
                try:
                    self._member(tf, member, name)
                except (ContainerFactoryException, *READ_ERRORS):
                    raise
                except OSError as exc:
                    raise ContainerFactoryException(
                        f"layer {name}: cannot extract member {member.name!r}: {exc}"
                    ) from exc

    def _member(self, tf: LayerTar, m: tarfile.TarInfo, layer: str) -> None:
        parts = member_parts(m.name, layer, m.name)
        if not parts:
            if not m.isdir():
                raise UnsafeArchiveError(f"layer {layer}: member {m.name!r} would replace the root")
            self.dirs[self.root] = _DirMeta(m.mode & 0o7777, m.mtime, m.uid, m.gid)
            return
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, layer, m.name)
            return
        parent = self._resolve_dir(parts[:-1], layer, m.name, create=True)
        assert parent is not None
        target = os.path.join(parent, base)

        link_source = None
        if m.islnk():
            link_source = self._hardlink_source(m, layer)
            if link_source == target:
                self._mark(target)
                return

        existing = _lstat(target)
        if existing is not None and not (m.isdir() and stat.S_ISDIR(existing.st_mode)):
            self._remove(target)
            existing = None

        if m.isdir():
            if existing is None:
                os.mkdir(target, 0o700)
            elif not os.access(target, os.W_OK | os.X_OK):
                os.chmod(target, stat.S_IMODE(existing.st_mode) | 0o700)
            self.dirs[target] = _DirMeta(m.mode & 0o7777, m.mtime, m.uid, m.gid)
            if self.as_root:
                os.lchown(target, m.uid, m.gid)
        elif m.isreg():
            self._write_file(tf, m, target)
        elif m.issym():
            os.symlink(m.linkname, target)
            if self.as_root:
                os.lchown(target, m.uid, m.gid)
            os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)
        elif m.islnk():
            assert link_source is not None
            os.link(link_source, target, follow_symlinks=False)
        elif m.isfifo():
            os.mkfifo(target, 0o600)
            self._set_meta(target, m)
        elif m.ischr() or m.isblk():
            log.warning(DEVICE_NODE_WARNING, layer, m.name)
            return
        else:
            log.warning(UNSUPPORTED_MEMBER_WARNING, layer, m.name, m.type)
            return
        self._mark(target)

    def _write_file(self, tf: LayerTar, m: tarfile.TarInfo, target: str) -> None:
        src = tf.extractfile(m)
        assert src is not None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                while chunk := src.read(_COPY_CHUNK):
                    out.write(chunk)
                    progress.check_cancelled()
            if self.as_root:
                os.fchown(fd, m.uid, m.gid)  # before chmod: chown clears setuid/setgid
            os.fchmod(fd, m.mode & 0o7777)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def _set_meta(self, target: str, m: tarfile.TarInfo) -> None:
        if self.as_root:
            os.lchown(target, m.uid, m.gid)
        os.chmod(target, m.mode & 0o7777)
        os.utime(target, (m.mtime, m.mtime))

    def _hardlink_source(self, m: tarfile.TarInfo, layer: str) -> str:
        parts = member_parts(m.linkname, layer, m.name, what="hardlink target of")
        if not parts:
            raise UnsafeArchiveError(f"layer {layer}: member {m.name!r} is a hardlink to the root")
        parent = self._resolve_dir(parts[:-1], layer, m.name, create=False)
        source = os.path.join(parent, parts[-1]) if parent is not None else None
        st = _lstat(source) if source is not None else None
        if source is None or st is None:
            raise ContainerFactoryException(
                f"layer {layer}: member {m.name!r} is a hardlink to {m.linkname!r}, "
                "which is not in the image (yet); the layer is malformed or its layers are out of order"
            )
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeArchiveError(
                f"layer {layer}: member {m.name!r} is a hardlink to directory {m.linkname!r}"
            )
        return source

    def _whiteout(self, parts: list[str], layer: str, member: str) -> None:
        base = parts[-1]
        if base == OPAQUE_WHITEOUT:
            directory = self._resolve_dir(parts[:-1], layer, member, create=True)
            assert directory is not None
            self._mark(directory)
            self._clear_lower(directory)
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if name.startswith(WHITEOUT_PREFIX) or name in ("", ".", ".."):
            log.debug("layer %s: ignoring special whiteout %r", layer, member)
            return
        parent = self._resolve_dir(parts[:-1], layer, member, create=False)
        if parent is None:
            return
        target = os.path.join(parent, name)
        if target not in self.layer_paths and _lstat(target) is not None:
            self._remove(target)

    def _clear_lower(self, directory: str) -> None:
        with os.scandir(directory) as entries:
            children = [(e.path, e.is_dir(follow_symlinks=False)) for e in entries]
        for path, is_dir in children:
            if path in self.layer_paths:
                if is_dir:
                    self._clear_lower(path)
            else:
                self._remove(path)

    # ---- paths -----------------------------------------------------------------------
    def _resolve_dir(self, parts: Sequence[str], layer: str, member: str, *, create: bool) -> str | None:
        """The real directory ``parts`` names, following only symlinks that stay inside.

        Missing directories are created (as implicit parents) when ``create``;
        otherwise a missing one yields None.
        """
        cur = self.root
        pending = collections.deque(parts)
        hops = 0
        while pending:
            comp = pending.popleft()
            if comp in ("", "."):
                continue
            if comp == "..":
                if cur == self.root:
                    raise UnsafeArchiveError(
                        f"layer {layer}: member {member!r} resolves, through a symlink, outside the root"
                    )
                cur = os.path.dirname(cur)
                continue
            nxt = os.path.join(cur, comp)
            st = _lstat(nxt)
            if st is None:
                if not create:
                    return None
                os.mkdir(nxt, 0o700)
                self.dirs[nxt] = _DirMeta(0o755, self.implicit_mtime, 0, 0)
                self._mark(nxt)
                cur = nxt
            elif stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise UnsafeArchiveError(f"layer {layer}: member {member!r}: too many levels of symlinks")
                link = os.readlink(nxt)
                if link.startswith("/"):
                    raise UnsafeArchiveError(
                        f"layer {layer}: member {member!r} would be written through symlink "
                        f"/{os.path.relpath(nxt, self.root)} -> {link}, which points outside the root"
                    )
                pending.extendleft(reversed(link.split("/")))
            elif stat.S_ISDIR(st.st_mode):
                cur = nxt
            else:
                raise ContainerFactoryException(
                    f"layer {layer}: member {member!r} needs /{os.path.relpath(nxt, self.root)} "
                    "to be a directory, but it is a file; the layer is malformed"
                )
        return cur

    def _mark(self, path: str) -> None:
        while path != self.root and path not in self.layer_paths:
            self.layer_paths.add(path)
            path = os.path.dirname(path)

    def _remove(self, path: str) -> None:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            _make_tree_removable(path)
            shutil.rmtree(path)
            prefix = path + os.sep
            for key in [k for k in self.dirs if k == path or k.startswith(prefix)]:
                del self.dirs[key]
        else:
            os.unlink(path)

    def _is_plain(self, path: str) -> bool:
        """True when every component below the root is a real directory (no symlink)."""
        rel = os.path.relpath(path, self.root)
        cur = self.root
        if rel == ".":
            return True
        for comp in rel.split(os.sep):
            cur = os.path.join(cur, comp)
            st = _lstat(cur)
            if st is None or not stat.S_ISDIR(st.st_mode):
                return False
        return True

    def finish(self) -> None:
        # Deepest first: an unprivileged user needs x on a parent to reach its children.
        for path in sorted(self.dirs, key=lambda p: p.count(os.sep), reverse=True):
            if not self._is_plain(path):
                continue
            meta = self.dirs[path]
            if self.as_root:
                os.lchown(path, meta.uid, meta.gid)
            os.chmod(path, meta.mode)
            os.utime(path, (meta.mtime, meta.mtime))


def _make_tree_removable(top: str) -> None:
    """Give the owner rwx on every real directory under ``top`` so rmtree can empty it.

    Never follows symlinks: a planted ``x -> /`` must not get ``/`` chmodded.
    """
    st = os.lstat(top)
    if not stat.S_ISDIR(st.st_mode):
        return
    if stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
        os.chmod(top, stat.S_IMODE(st.st_mode) | 0o700)
    for dirpath, dirnames, _files in os.walk(top):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
                os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)


def remove_tree(path: Path) -> None:
    """Remove an extracted rootfs, read-only directories included; missing is fine."""
    p = os.fspath(path)
    if _lstat(p) is None:
        return
    if os.path.islink(p) or not os.path.isdir(p):
        os.unlink(p)
        return
    _make_tree_removable(p)
    shutil.rmtree(p)

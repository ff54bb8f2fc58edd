"""An image's merged root file system as one tar stream, built without extracting anything.

Why: packing a SIF used to extract every layer to disk, then have
``mksquashfs`` read the tree back: every byte written and read once more,
and a syscall storm per member. A squashfs writer that reads a tar
(``tar2sqfs``) needs neither, if it is given the *merged* tree: each path
once, as the last layer left it, whiteouts applied.

How: the layers are read as tar streams, never seeked, and the largest
one (usually the base image: most of the bytes) only once. The layers
below it are read first into an in-memory model of the tree
(``MergedTree``: names, kinds, directory attributes, symlink targets,
which layer member holds each file's bytes; never file contents); the
layers above it are only listed (their headers, and the paths they touch).
Then the largest layer is read, applied to the model and written out as it
goes, except the entries a layer above touches, which wait. The listed
layers are applied, and finally the layers whose entries survived and were
not written yet are read again, in order, their surviving members written
with their bytes streamed from the layer. Directories, whose attributes the
last layer naming them decides, are written last. Should a layer change an
entry already written after all (the same path twice in one layer, a write
through a symlink onto it, the caller's additions replacing it), the stream
is abandoned (``MergeConflict``) and rebuilt with every layer read into the
model first.

The rules are ``rootfs.py``'s, applied to the model instead of a disk:
member names with ``..`` or a leading ``/`` are refused; a member is placed
through symlinks only while they are relative and stay inside the root;
``.wh.<name>`` deletes lower-layer content, ``.wh..wh..opq`` empties a
directory of it; hard links keep pointing at the bytes they were made to;
device nodes are skipped with the same warning. The model answers the same
tree ``apply_layers`` leaves on disk when run as root, and the tests hold
both to that.

What is written: a POSIX (pax) tar with numeric owners and no user or
group names, no extended attributes, mtimes clamped to what squashfs
stores, symlinks with mode 0777 (as ``lstat`` reports them). File bytes go
through the layer's ``uncompressed()`` reader on the second read too, so
bytes that are not the image's raise ``IntegrityError``.
"""

from __future__ import annotations

import logging
import math
import tarfile
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, Protocol

from .. import progress
from ..errors import ContainerFactoryException, UnsafeArchiveError
from .base import Layer
from .rootfs import (
    DEVICE_NODE_WARNING,
    MAX_SYMLINK_HOPS,
    OPAQUE_WHITEOUT,
    UNSUPPORTED_MEMBER_WARNING,
    WHITEOUT_PREFIX,
    LayerTar,
    member_parts,
    open_layer,
)

log = logging.getLogger(__name__)

BLOCK = tarfile.BLOCKSIZE
_COPY_CHUNK = 1 << 20
_MAX_TIME = 2**32 - 1  # squashfs stores unsigned 32-bit seconds
#: The "layer" of what the caller adds after the image's layers (``MergedTree.add_file`` ...).
ADDED = -1
#: The most members an image's layers may hold together: the tree costs about 300 bytes each, and
#: real images have well under a million files, so more is an attempt to exhaust memory.
MAX_MEMBERS = 2_000_000
#: Tar types of the non-directory inodes the tree holds.
REG, SYM, FIFO = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.FIFOTYPE


class Writable(Protocol):
    """Where the tar goes: a pipe, a file, a buffer."""

    def write(self, data: bytes, /) -> object: ...


class MergeConflict(Exception):
    """What was already written is changed after all: the stream must be rebuilt from the start."""


class _Inode:
    """A non-directory: where its bytes are (a layer member, or ``data``) and what it needs to be resolved."""

    __slots__ = ("data", "kind", "layer", "linkname", "mode", "mtime", "ordinal", "written_as")

    def __init__(
        self,
        kind: bytes,
        layer: int,
        ordinal: int,
        linkname: str = "",
        data: bytes | None = None,
        mode: int = 0,
        mtime: int = 0,
    ) -> None:
        self.kind = kind
        self.layer = layer
        self.ordinal = ordinal
        self.linkname = linkname
        self.data = data
        self.mode = mode
        self.mtime = mtime
        self.written_as: str | None = None  # the path it was written under, once written


class _Leaf:
    """One name of an inode (hard links share the inode); ``mark`` is the last layer that wrote it."""

    __slots__ = ("inode", "mark", "written")

    def __init__(self, inode: _Inode, mark: int) -> None:
        self.inode = inode
        self.mark = mark
        self.written = False


class _Dir:
    __slots__ = ("children", "gid", "mark", "mode", "mtime", "uid", "written_below")

    def __init__(self, mode: int, uid: int, gid: int, mtime: int, mark: int) -> None:
        self.children: dict[str, _Dir | _Leaf] = {}
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.mark = mark
        self.written_below = False


_Stack = list[tuple[str, _Dir]]


def _mtime(value: float) -> int:
    return min(max(math.floor(value), 0), _MAX_TIME)


def _path(stack: _Stack, name: str | None = None) -> str:
    names = [n for n, _ in stack[1:]]
    if name is not None:
        names.append(name)
    return "/".join(names)


class MergedTree:
    """The merged tree of an image's layers, as ``rootfs.apply_layers`` would leave it, kept in memory.

    Layers are applied with ``apply`` member by member, lowest layer
    first. While ``guard_written`` is set, removing or replacing anything
    already written raises ``MergeConflict``.
    """

    def __init__(self, implicit_mtime: int) -> None:
        self.implicit_mtime = _mtime(implicit_mtime)
        self.root = _Dir(0o755, 0, 0, self.implicit_mtime, ADDED)
        self.layer = ADDED
        self.layer_name = ""
        self.guard_written = False
        self.members = 0

    def begin_layer(self, index: int, name: str) -> None:
        self.layer = index
        self.layer_name = name

    # ---- one member ----------------------------------------------------------------------------
    def apply(self, m: tarfile.TarInfo, ordinal: int) -> tuple[str, _Leaf] | None:
        """Apply one member; answer (path, leaf) when it made a new name of a non-directory."""
        layer = self.layer_name
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise UnsafeArchiveError(
                f"layer {layer}: the image's layers hold more than {MAX_MEMBERS} members; not merging them"
            )
        parts = member_parts(m.name, layer, m.name)
        if not parts:
            if not m.isdir():
                raise UnsafeArchiveError(f"layer {layer}: member {m.name!r} would replace the root")
            self._set_meta(self.root, m)
            return None
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, m.name)
            return None
        stack = self._resolve(parts[:-1], m.name, create=True)
        assert stack is not None
        parent = stack[-1][1]

        source: _Leaf | None = None
        if m.islnk():
            source, source_parent = self._hardlink_source(m)
            if source_parent is parent and parent.children.get(base) is source:
                self._mark(stack)
                source.mark = self.layer
                return None

        existing = parent.children.get(base)
        if existing is not None and not (m.isdir() and isinstance(existing, _Dir)):
            self._remove(parent, base)
            existing = None

        if m.isdir():
            if existing is None:
                parent.children[base] = existing = _Dir(0, 0, 0, 0, self.layer)
            assert isinstance(existing, _Dir)
            self._set_meta(existing, m)
            existing.mark = self.layer
            self._mark(stack)
            return None
        if m.isreg():
            inode = _Inode(REG, self.layer, ordinal)
        elif m.issym():
            inode = _Inode(SYM, self.layer, ordinal, linkname=m.linkname)
        elif m.isfifo():
            inode = _Inode(FIFO, self.layer, ordinal)
        elif m.islnk():
            assert source is not None
            if self._lookup(m.linkname) is not source:
                raise ContainerFactoryException(
                    f"layer {layer}: member {m.name!r} is a hardlink to {m.linkname!r}, "
                    "which the member itself replaced; the layer is malformed"
                )
            inode = source.inode
        elif m.ischr() or m.isblk():
            log.warning(DEVICE_NODE_WARNING, layer, m.name)
            return None
        else:
            log.warning(UNSUPPORTED_MEMBER_WARNING, layer, m.name, m.type)
            return None
        leaf = parent.children[base] = _Leaf(inode, self.layer)
        self._mark(stack)
        return _path(stack, base), leaf

    def _set_meta(self, d: _Dir, m: tarfile.TarInfo) -> None:
        d.mode, d.uid, d.gid, d.mtime = m.mode & 0o7777, m.uid, m.gid, _mtime(m.mtime)

    def _mark(self, stack: _Stack) -> None:
        for _, d in stack[1:]:
            d.mark = self.layer

    def _hardlink_source(self, m: tarfile.TarInfo) -> tuple[_Leaf, _Dir]:
        layer = self.layer_name
        parts = member_parts(m.linkname, layer, m.name, what="hardlink target of")
        if not parts:
            raise UnsafeArchiveError(f"layer {layer}: member {m.name!r} is a hardlink to the root")
        stack = self._resolve(parts[:-1], m.name, create=False)
        node = stack[-1][1].children.get(parts[-1]) if stack is not None else None
        if stack is None or node is None:
            raise ContainerFactoryException(
                f"layer {layer}: member {m.name!r} is a hardlink to {m.linkname!r}, "
                "which is not in the image (yet); the layer is malformed or its layers are out of order"
            )
        if isinstance(node, _Dir):
            raise UnsafeArchiveError(
                f"layer {layer}: member {m.name!r} is a hardlink to directory {m.linkname!r}"
            )
        return node, stack[-1][1]

    def _lookup(self, name: str) -> _Dir | _Leaf | None:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        stack = self._resolve(parts[:-1], name, create=False)
        return stack[-1][1].children.get(parts[-1]) if stack is not None else None

    def _whiteout(self, parts: list[str], member: str) -> None:
        base = parts[-1]
        if base == OPAQUE_WHITEOUT:
            stack = self._resolve(parts[:-1], member, create=True)
            assert stack is not None
            self._mark(stack)
            self._clear_lower(stack[-1][1])
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if name.startswith(WHITEOUT_PREFIX) or name in ("", ".", ".."):
            log.debug("layer %s: ignoring special whiteout %r", self.layer_name, member)
            return
        stack = self._resolve(parts[:-1], member, create=False)
        if stack is None:
            return
        parent = stack[-1][1]
        node = parent.children.get(name)
        if node is not None and node.mark != self.layer:
            self._remove(parent, name)

    def _clear_lower(self, directory: _Dir) -> None:
        todo = [directory]  # not recursive: a hostile layer may nest directories thousands deep
        while todo:
            d = todo.pop()
            for name, node in list(d.children.items()):
                if node.mark != self.layer:
                    self._remove(d, name)
                elif isinstance(node, _Dir):
                    todo.append(node)

    def _remove(self, parent: _Dir, name: str) -> None:
        node = parent.children[name]
        if self.guard_written and (node.written if isinstance(node, _Leaf) else node.written_below):
            raise MergeConflict(name)
        del parent.children[name]

    # ---- paths ---------------------------------------------------------------------------------
    def _resolve(self, parts: Sequence[str], member: str, *, create: bool) -> _Stack | None:
        """The chain of real directories ``parts`` names, following only symlinks that stay inside.

        Missing directories are created (as implicit parents, 0755, owned
        by root, at the implicit time) when ``create``; otherwise a missing
        one yields None.
        """
        layer = self.layer_name
        stack: _Stack = [("", self.root)]
        pending = list(reversed(parts))
        hops = 0
        while pending:
            comp = pending.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                if len(stack) == 1:
                    raise UnsafeArchiveError(
                        f"layer {layer}: member {member!r} resolves, through a symlink, outside the root"
                    )
                stack.pop()
                continue
            cur = stack[-1][1]
            node = cur.children.get(comp)
            if node is None:
                if not create:
                    return None
                node = cur.children[comp] = _Dir(0o755, 0, 0, self.implicit_mtime, self.layer)
                stack.append((comp, node))
            elif isinstance(node, _Dir):
                stack.append((comp, node))
            elif node.inode.kind == SYM:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise UnsafeArchiveError(f"layer {layer}: member {member!r}: too many levels of symlinks")
                link = node.inode.linkname
                if link.startswith("/"):
                    raise UnsafeArchiveError(
                        f"layer {layer}: member {member!r} would be written through symlink "
                        f"/{_path(stack, comp)} -> {link}, which points outside the root"
                    )
                pending.extend(reversed(link.split("/")))
            else:
                raise ContainerFactoryException(
                    f"layer {layer}: member {member!r} needs /{_path(stack, comp)} "
                    "to be a directory, but it is a file; the layer is malformed"
                )
        return stack

    # ---- what the caller adds (runtime files), with ``lstat`` semantics: no symlink is followed ----
    def _real_dir(self, rel: str) -> _Dir | None:
        """The directory ``rel`` names if every component of it is a real directory, else None."""
        cur = self.root
        for comp in (c for c in rel.split("/") if c):
            node = cur.children.get(comp)
            if not isinstance(node, _Dir):
                return None
            cur = node
        return cur

    def _parent_of(self, rel: str) -> tuple[_Dir, str]:
        parent_rel, _, name = rel.strip("/").rpartition("/")
        parent = self._real_dir(parent_rel)
        if parent is None:
            raise ValueError(f"/{parent_rel} is not a directory")
        return parent, name

    def kind_of(self, rel: str) -> str | None:
        """``"dir"``, ``"file"``, ``"symlink"``, ``"other"`` or None (absent), as ``lstat`` tells for ``rel``.

        Only real directories lead there: behind a symlink, nothing is.
        """
        parent_rel, _, name = rel.strip("/").rpartition("/")
        parent = self._real_dir(parent_rel)
        node = parent.children.get(name) if parent is not None else None
        if node is None:
            return None
        if isinstance(node, _Dir):
            return "dir"
        return {REG: "file", SYM: "symlink"}.get(node.inode.kind, "other")

    def ensure_dir(self, rel: str, *, replace: bool, mtime: int) -> bool:
        """Make ``rel`` a directory, creating missing ones (0755, root's, at ``mtime``).

        A component that is not a directory is replaced when ``replace``;
        otherwise the image wins and False says "left alone".
        """
        cur = self.root
        for comp in (c for c in rel.split("/") if c):
            node = cur.children.get(comp)
            if node is not None and not isinstance(node, _Dir):
                if not replace:
                    return False
                self._remove(cur, comp)
                node = None
            if node is None:
                node = cur.children[comp] = _Dir(0o755, 0, 0, _mtime(mtime), ADDED)
            cur = node
        return True

    def add_file(self, rel: str, data: bytes, mode: int, *, mtime: int) -> None:
        """A regular file owned by root at ``rel`` (replacing whatever is there); its parent must exist."""
        parent, name = self._parent_of(rel)
        if name in parent.children:
            self._remove(parent, name)
        inode = _Inode(REG, ADDED, 0, data=data, mode=mode & 0o7777, mtime=_mtime(mtime))
        parent.children[name] = _Leaf(inode, ADDED)

    def add_symlink(self, rel: str, target: str, *, mtime: int) -> None:
        """A symlink at ``rel`` unless something is there already."""
        parent, name = self._parent_of(rel)
        if name not in parent.children:
            inode = _Inode(SYM, ADDED, 0, linkname=target, mode=0o777, mtime=_mtime(mtime))
            parent.children[name] = _Leaf(inode, ADDED)

    # ---- after the last layer ------------------------------------------------------------------
    def plan(self) -> tuple[dict[tuple[int, int], tuple[_Inode, list[str]]], list[tuple[str, str]]]:
        """What is left to write, once every layer is applied.

        Every surviving layer inode not written yet, keyed by the member
        holding its bytes, with all its paths (sorted); and the names,
        as (path, target), of inodes already written that are not written yet
        (hard links made after the inode was written).
        """
        found: dict[int, tuple[_Inode, list[str]]] = {}
        links = []
        for path, node in self._walk_tree():
            if not isinstance(node, _Leaf) or node.inode.layer == ADDED:
                continue
            if node.inode.written_as is None:
                found.setdefault(id(node.inode), (node.inode, []))[1].append(path)
            elif not node.written:
                links.append((path, node.inode.written_as))
        return {(inode.layer, inode.ordinal): (inode, paths) for inode, paths in found.values()}, links

    def _walk_tree(self) -> Iterator[tuple[str, _Dir | _Leaf]]:
        todo: list[tuple[str, _Dir | _Leaf]] = [("", self.root)]
        while todo:
            path, node = todo.pop()
            yield path, node
            if isinstance(node, _Dir):
                prefix = f"{path}/" if path else ""
                todo.extend(
                    (prefix + name, node.children[name]) for name in sorted(node.children, reverse=True)
                )


_NUL8 = b"\0" * 8
_USTAR_TAIL = tarfile.POSIX_MAGIC + b"\0" * 64  # magic, version, empty uname and gname
_OCTAL7 = 8**7
_OCTAL11 = 8**11


def ustar_header(
    name: str, kind: bytes, *, mode: int, uid: int, gid: int, mtime: int, size: int, linkname: str
) -> bytes | None:
    """The bytes ``tarfile.TarInfo.tobuf(PAX_FORMAT)`` makes for an entry that needs no pax record
    (ASCII names of at most 100 bytes, numbers that fit their octal fields, no device numbers,
    empty owner names); None for any other entry, which then goes through ``tarfile``.

    Why: ``tobuf`` costs tens of microseconds per entry in Python, and a base image has tens of
    thousands of entries, all streamed while the squashfs compressor wants both cores.
    """
    if kind == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    if (
        len(name) > 100
        or len(linkname) > 100
        or not name.isascii()
        or not linkname.isascii()
        or kind in (tarfile.CHRTYPE, tarfile.BLKTYPE)
        or not (0 <= uid < _OCTAL7 and 0 <= gid < _OCTAL7 and 0 <= size < _OCTAL11 and 0 <= mtime < _OCTAL11)
    ):
        return None
    head = b"".join(
        (
            name.encode("ascii").ljust(100, b"\0"),
            b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime),
            b"        ",
            kind,
            linkname.encode("ascii").ljust(100, b"\0"),
            _USTAR_TAIL,
            _NUL8,
            _NUL8,
        )
    ).ljust(BLOCK, b"\0")
    chksum = 256 + sum(head[:148]) + sum(head[156:])  # the checksum field counts as eight spaces
    return head[:148] + b"%06o\0 " % chksum + head[156:]


class TarWriter:
    """Writes tar entries to ``out`` (a pipe): pax headers built by ``tarfile``, bodies copied in chunks."""

    def __init__(self, out: Writable) -> None:
        self.out = out

    def header(
        self,
        name: str,
        kind: bytes,
        *,
        mode: int,
        uid: int = 0,
        gid: int = 0,
        mtime: int = 0,
        size: int = 0,
        linkname: str = "",
    ) -> None:
        mode = 0o777 if kind == SYM else mode & 0o7777
        fast = ustar_header(
            name, kind, mode=mode, uid=uid, gid=gid, mtime=mtime, size=size, linkname=linkname
        )
        if fast is not None:
            self.out.write(fast)
            return
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid, ti.uname, ti.gname = uid, gid, "", ""
        ti.mtime = mtime
        ti.size = size
        ti.linkname = linkname
        self.out.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def body(self, src: BinaryIO, size: int) -> None:
        left = size
        while left:
            chunk = src.read(min(left, _COPY_CHUNK))
            if not chunk:
                raise tarfile.ReadError("unexpected end of data")
            self.out.write(chunk)
            left -= len(chunk)
            progress.check_cancelled()
        self._pad(size)

    def data(self, payload: bytes) -> None:
        self.out.write(payload)
        self._pad(len(payload))

    def _pad(self, size: int) -> None:
        if size % BLOCK:
            self.out.write(b"\0" * (BLOCK - size % BLOCK))

    def close(self) -> None:
        self.out.write(b"\0" * (2 * BLOCK))


class _Upper:
    """What the layers above the eager one touch, by raw path: an eager entry there must wait.

    Raw paths ignore symlinks: when a layer above writes through one onto
    an entry already written, applying it raises ``MergeConflict``.
    """

    def __init__(self) -> None:
        self.exact: set[str] = set()  # paths an entry replaces (a directory only merges there)
        self.subtree: set[str] = set()  # paths whose whole subtree goes: whiteouts, opaque dirs, non-dirs
        self.records: list[list[tuple[str, bytes, str, int, int, int, float]]] = []

    def add(self, m: tarfile.TarInfo) -> None:
        parts = [p for p in m.name.split("/") if p not in ("", ".")]
        if parts and ".." not in parts:
            base, path = parts[-1], "/".join(parts)
            parent = "/".join(parts[:-1])
            if base == OPAQUE_WHITEOUT:
                self.subtree.add(parent)
            elif base.startswith(WHITEOUT_PREFIX):
                self.subtree.add(f"{parent}/{base[len(WHITEOUT_PREFIX) :]}".lstrip("/"))
            else:
                self.exact.add(path)
                if not m.isdir():
                    self.subtree.add(path)
        self.records[-1].append((m.name, m.type, m.linkname, m.mode, m.uid, m.gid, m.mtime))

    def touches(self, path: str) -> bool:
        if path in self.exact:
            return True
        if not self.subtree:
            return False
        cut = len(path)
        while cut > 0:
            if path[:cut] in self.subtree:
                return True
            cut = path.rfind("/", 0, cut)
        return False


def _replayed(record: tuple[str, bytes, str, int, int, int, float]) -> tarfile.TarInfo:
    m = tarfile.TarInfo(record[0])
    m.type, m.linkname, m.mode, m.uid, m.gid, m.mtime = record[1:]
    return m


class _Merge:
    """One attempt at the merged stream (see the module docstring).

    The eager layer, read once and written as it is read, is the largest
    (usually the base image); the layers below it are applied to the tree
    first, the ones above are only listed (``_Upper``) and applied after it.
    """

    def __init__(self, layers: Sequence[Layer], out: Writable, implicit_mtime: int, speculate: bool) -> None:
        self.layers = layers
        self.tree = MergedTree(implicit_mtime)
        self.out = TarWriter(out)
        self.eager: int | None = None
        if speculate and layers:
            sizes = [layer.size() for layer in layers]
            self.eager = max(range(len(layers)), key=lambda i: (sizes[i], i))
        self.upper = _Upper()

    def index(self, on_stage: Callable[[str], None]) -> None:
        on_stage("reading layers")
        below = len(self.layers) if self.eager is None else self.eager
        for i in range(below):
            self._read(i)
        if self.eager is not None:
            for i in range(self.eager + 1, len(self.layers)):
                self._list(i)

    def write(self, add: Callable[[MergedTree], None] | None, on_stage: Callable[[str], None]) -> None:
        on_stage("squashing")
        tree = self.tree
        if self.eager is not None:
            tree.guard_written = True
            self._read(self.eager, eager=True)
            for offset, records in enumerate(self.upper.records, start=self.eager + 1):
                tree.begin_layer(offset, self.layers[offset].digest())
                for ordinal, record in enumerate(records):
                    progress.check_cancelled()
                    tree.apply(_replayed(record), ordinal)
            self.upper.records = []
        if add is not None:
            add(tree)
        plan, links = tree.plan()
        by_layer: list[dict[int, tuple[_Inode, list[str]]]] = [{} for _ in self.layers]
        for (layer, ordinal), entry in plan.items():
            by_layer[layer][ordinal] = entry
        for i, wanted in enumerate(by_layer):
            if wanted:
                self._write_layer(i, wanted)
        for path, target in links:
            self.out.header(path, tarfile.LNKTYPE, mode=0, linkname=target)
        self._write_added_and_dirs()
        self.out.close()

    # -- reading ---------------------------------------------------------------------------------
    def _read(self, index: int, *, eager: bool = False) -> None:
        layer = self.layers[index]
        name = layer.digest()
        self.tree.begin_layer(index, name)
        with open_layer(layer, name) as tf:
            for ordinal, m in enumerate(tf):
                progress.check_cancelled()
                made = self.tree.apply(m, ordinal)
                if eager and made is not None and not self.upper.touches(made[0]):
                    self._write_now(tf, m, *made)

    def _list(self, index: int) -> None:
        layer = self.layers[index]
        self.upper.records.append([])
        with open_layer(layer, layer.digest()) as tf:
            for ordinal, m in enumerate(tf):
                progress.check_cancelled()
                self.upper.add(m)
                if ordinal % 1000 == 999:
                    tf.members = []

    def _write_now(self, tf: LayerTar, m: tarfile.TarInfo, path: str, leaf: _Leaf) -> None:
        """Write an entry of the eager layer as it is read: nothing above touches it (or it's a conflict)."""
        inode = leaf.inode
        if inode.written_as is not None:
            self.out.header(path, tarfile.LNKTYPE, mode=0, linkname=inode.written_as)
        elif m.islnk():
            return  # a hard link to bytes not written yet: written with them
        else:
            self._write_member(tf, m, path)
            inode.written_as = path
        leaf.written = True
        self._mark_written(path)

    def _mark_written(self, path: str) -> None:
        d = self.tree.root
        for comp in path.split("/")[:-1]:
            d.written_below = True
            child = d.children[comp]
            assert isinstance(child, _Dir)
            d = child
        d.written_below = True

    def _write_member(self, tf: LayerTar, m: tarfile.TarInfo, path: str) -> None:
        kind = REG if m.isreg() else m.type
        size = m.size if kind == REG else 0
        self.out.header(
            path,
            kind,
            mode=m.mode,
            uid=m.uid,
            gid=m.gid,
            mtime=_mtime(m.mtime),
            size=size,
            linkname=m.linkname,
        )
        if kind == REG:
            src = tf.extractfile(m)
            assert src is not None
            self.out.body(src, size)

    # -- writing what the first reads could not -------------------------------------------------
    def _write_layer(self, index: int, wanted: dict[int, tuple[_Inode, list[str]]]) -> None:
        layer = self.layers[index]
        name = layer.digest()
        left = len(wanted)
        mismatch = None
        with open_layer(layer, name) as tf:
            for ordinal, m in enumerate(tf):
                progress.check_cancelled()
                entry = wanted.get(ordinal)
                if ordinal % 1000 == 999:
                    tf.members = []
                if entry is None:
                    continue
                inode, paths = entry
                if inode.kind != (REG if m.isreg() else m.type):
                    mismatch = m.name
                    break
                self._write_member(tf, m, paths[0])
                for alias in paths[1:]:
                    self.out.header(alias, tarfile.LNKTYPE, mode=0, linkname=paths[0])
                left -= 1
                if not left:
                    break
        # Leaving the block read the layer to its end: bytes that are not the image's raised there.
        if mismatch is not None or left:
            raise ContainerFactoryException(
                f"layer {name} read differently the second time (member {mismatch!r}); "
                "its blob changed while the SIF was built: run `wfexs-like cache verify --repair` and retry"
            )

    def _write_added_and_dirs(self) -> None:
        for path, node in self.tree._walk_tree():
            if isinstance(node, _Dir):
                self.out.header(
                    f"{path}/" if path else "./",
                    tarfile.DIRTYPE,
                    mode=node.mode,
                    uid=node.uid,
                    gid=node.gid,
                    mtime=node.mtime,
                )
            elif node.inode.layer == ADDED:
                inode = node.inode
                data = inode.data or b""
                size = len(data) if inode.kind == REG else 0
                self.out.header(
                    path, inode.kind, mode=inode.mode, mtime=inode.mtime, size=size, linkname=inode.linkname
                )
                if inode.kind == REG:
                    self.out.data(data)


def write_merged_tar(
    layers: Sequence[Layer],
    out: Writable,
    *,
    implicit_mtime: int,
    add: Callable[[MergedTree], None] | None = None,
    speculate: bool = True,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> None:
    """Write the merged tree of ``layers`` (lowest first) to ``out`` as one tar stream.

    ``add`` is called with the final tree, before anything but the largest
    layer's entries is written, to add or replace entries
    (``MergedTree.ensure_dir``, ``add_file``, ``add_symlink``). With
    ``speculate`` the largest layer is read once and written as it is
    read; ``MergeConflict`` then means the stream written so far is unusable
    and the caller must start again with ``speculate=False``. ``on_stage`` hears ``"reading layers"`` when the
    first pass starts and ``"squashing"`` when the writing does.
    """
    merge = _Merge(layers, out, implicit_mtime, speculate)
    merge.index(on_stage)
    merge.write(add, on_stage)

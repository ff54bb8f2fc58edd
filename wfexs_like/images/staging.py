"""Put cached blobs where a workflow wants them, as cheaply as the filesystem allows.

A snapshot is mostly bytes the blob store already holds, so staging one
should cost a directory entry, not a copy: a hard link first (O(1), and it
shares the inode, which is what lets ``BlobStore.is_trusted`` accept the
staged file without re-hashing it), then a reflink (O(1) on btrfs/xfs/bcachefs
across directories a hard link cannot cross, e.g. another subvolume), and a
real copy only when neither works (another filesystem, tmpfs, a
hard-link limit reached).

Whatever the method, bytes land under a temporary name in the destination's
directory and are renamed into place, so a final name never holds a
half-written file: a copy killed halfway leaves a ``.*.tmp`` file and nothing
else. Copies keep the source's mtime (nanoseconds) and mode, so the blob
store's size+mtime trust check still recognises them.

A copy that does not fit is refused before it starts when the free space
says so, and otherwise stopped by the kernel's "no room"; either way the
temporary file or tree is removed and ``DiskFullError`` names the
destination directory and what the whole stage needs, so a full stage dir
never holds a half-written snapshot and is not left full by one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from ..errors import CacheError, DiskFullError
from ..fsutil import (
    disk_full_error,
    fsync_dir,
    is_disk_full,
    no_room_errno,
    require_space,
    temp_dir_in,
    temp_file_in,
)

Method = Literal["hardlink", "reflink", "copy"]
METHODS: tuple[Method, ...] = ("hardlink", "reflink", "copy")

#: ``_IOW(0x94, 9, int)``: clone a whole file (btrfs, xfs with reflink=1, bcachefs, ocfs2).
FICLONE = 0x40049409

# os.link failures that mean "this filesystem / this pair of paths cannot do
# it", i.e. try the next method, as opposed to a real error to report.
_LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP}
_CLONE_FALLBACK = {
    errno.EXDEV,
    errno.EPERM,
    errno.EINVAL,
    errno.ENOTTY,
    errno.ENOTSUP,
    errno.EOPNOTSUPP,
    errno.EBADF,
    errno.ENOSYS,
}
_COPY_CHUNK = 64 << 20
#: Copies up to this size skip the free-space check (a ``statvfs``) and let the write decide.
_SMALL_COPY = 1 << 20
_RENAME_EXCHANGE = 2


def _temp_name(dst: Path) -> Path:
    """A name beside ``dst`` that no other writer picks, recognisable as leftover if we die."""
    fd, name = temp_file_in(dst.parent, f".{dst.name}.", ".tmp")
    os.close(fd)
    os.unlink(name)
    return Path(name)


def _try_hardlink(src: str | Path, dst: str | Path) -> bool:
    try:
        os.link(src, dst, follow_symlinks=True)
    except OSError as e:
        if e.errno in _LINK_FALLBACK:
            return False
        raise
    return True


def _try_clone(src_fd: int, dst_fd: int) -> bool:
    """Make ``dst_fd`` share ``src_fd``'s extents (a reflink); False where the filesystem cannot."""
    if not hasattr(fcntl, "ioctl") or os.name != "posix":
        return False
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as e:
        if e.errno in _CLONE_FALLBACK:
            return False
        raise
    return True


def _copy_bytes(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy in the kernel where possible (``copy_file_range``), else through a buffer."""
    offset = 0
    use_cfr = hasattr(os, "copy_file_range")
    while offset < size:
        n = 0
        if use_cfr:
            try:
                n = os.copy_file_range(src_fd, dst_fd, min(_COPY_CHUNK, size - offset))
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                use_cfr = False
                continue
        else:
            chunk = os.read(src_fd, min(1 << 20, size - offset))
            if chunk:
                n = os.write(dst_fd, chunk)
                if n < len(chunk):
                    os.lseek(src_fd, offset + n, os.SEEK_SET)
        if n == 0:
            raise CacheError(f"source shrank while being copied (got {offset} of {size} bytes); retry")
        offset += n


def _clone_or_copy(src: str | Path, dst: str | Path, name: str, *, sync: bool) -> Method:
    """Create ``dst`` (a new name) with ``src``'s bytes, mode and mtime: a reflink if the filesystem
    has one, else a copy; ``sync``: fsync it (the cache must survive a power cut, a stage dir need not).

    The mtime is kept to the nanosecond so ``BlobStore.is_trusted`` still knows a copied blob.
    """
    src_fd = os.open(src, os.O_RDONLY)
    try:
        st = os.fstat(src_fd)
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            method: Method = "reflink"
            if not _try_clone(src_fd, dst_fd):
                method = "copy"
                if st.st_size > _SMALL_COPY:  # a small file's "no room" comes from the write itself
                    require_space(Path(dst).parent, st.st_size, what=f"copying {name}")
                _copy_bytes(src_fd, dst_fd, st.st_size)
            if sync:
                os.fsync(dst_fd)
            os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))
            os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dst)
        raise
    finally:
        os.close(src_fd)
    return method


def link_or_copy(src: Path, dst: Path, *, sync: bool = True) -> Method:
    """Make ``dst`` hold ``src``'s bytes by the cheapest available means; return which.

    ``dst`` is replaced if it exists (atomically: readers see the old file or
    the new one). A ``dst`` that already is ``src`` (same inode) is left alone.
    A copy that does not fit raises ``DiskFullError`` (``fsutil.reword_disk_full``
    lets a caller add the option that picks another directory). ``sync=False``
    skips the fsync of a copy (for stage dirs, see ``link_tree``).
    """
    src, dst = Path(src), Path(dst)
    try:
        sst = src.stat()
    except FileNotFoundError as e:
        raise CacheError(f"cannot stage {src}: it does not exist; re-fetch the image") from e
    if not stat.S_ISREG(sst.st_mode):
        raise CacheError(f"cannot stage {src}: not a regular file")
    with contextlib.suppress(OSError):
        dst_st = dst.stat()
        if (dst_st.st_dev, dst_st.st_ino) == (sst.st_dev, sst.st_ino):
            return "hardlink"
    tmp = _temp_name(dst)
    try:
        linked = _try_hardlink(src, tmp)
        method: Method = "hardlink" if linked else _clone_or_copy(src, tmp, dst.name, sync=sync)
        os.replace(tmp, dst)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(e, OSError) and is_disk_full(e):
            what = f"copying {dst.name}"
            raise disk_full_error(dst.parent, what=what, needed=sst.st_size, code=e.errno) from e
        raise
    return method


def write_file(dst: Path, data: bytes, *, mode: int = 0o644, sync: bool = True) -> None:
    """Replace ``dst`` with ``data`` through a temporary name beside it (never half-written).

    ``fsutil.atomic_write_bytes`` with the fsyncs optional: a stage dir's
    small files are compared with the cache's on every run and rewritten
    when they differ, so the power cut an fsync guards against costs only a
    rewrite there, while the fsync costs every run a disk flush.
    """
    fd, tmp = temp_file_in(dst.parent, f".{dst.name}.", ".tmp")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, dst)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and is_disk_full(e):
            raise disk_full_error(
                dst.parent, what=f"writing {dst.name}", needed=len(data), code=e.errno
            ) from e
        raise
    if sync:
        fsync_dir(dst.parent)


@functools.cache
def _libc() -> Any:
    import ctypes  # only when a dir is replaced in place

    try:
        return ctypes.CDLL(None, use_errno=True)  # the already-loaded C library
    except OSError:
        return None


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    libc = _libc()
    fn = getattr(libc, "renameat2", None) if libc is not None else None
    if fn is None:
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    import ctypes

    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def publish_dir(tmp_dir: Path, dst_dir: Path, *, replace: bool) -> bool:
    """Rename a fully built ``tmp_dir`` to ``dst_dir``; True if it was published.

    Without ``replace`` an existing ``dst_dir`` wins (``tmp_dir`` is removed).
    With it the two are swapped in one atomic step where the kernel allows,
    so a reader never sees a missing or half-filled directory; elsewhere
    the old one is moved aside first, leaving only a brief gap.
    """
    tmp_dir, dst_dir = Path(tmp_dir), Path(dst_dir)
    try:
        os.rename(tmp_dir, dst_dir)
        return True
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    if not replace:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        return False
    try:
        if _renameat2_exchange(tmp_dir, dst_dir):
            remove_path(tmp_dir)  # now holds the old contents
            return True
        old = _temp_name(dst_dir)
        os.rename(dst_dir, old)
        os.rename(tmp_dir, dst_dir)
        remove_path(old)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return True


def _tree_full(src_dir: Path, dst_dir: Path, e: BaseException) -> DiskFullError:
    copied = _device(src_dir) != _device(dst_dir.parent)
    what = f"staging {dst_dir.name}" + (" (a copy: its source is on another filesystem)" if copied else "")
    code = no_room_errno(e)  # a full disk or a quota, whichever file or directory hit it
    needed = tree_size(src_dir) if copied else None
    return disk_full_error(dst_dir.parent, what=what, needed=needed, code=code)


def _device(path: Path) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def sweep_temps(*dsts: Path) -> int:
    """Remove what writers of each ``dst`` killed mid-write left beside it; return how many entries went.

    Those are the ``.<name>.<random>.tmp`` files and trees of ``link_or_copy``,
    ``link_tree``, ``write_file`` and ``fsutil.atomic_write``: in a stage dir
    (the user's workflow dir) nothing else would ever remove them, and a
    copied snapshot killed halfway is as big as what it was copying. A live
    writer's temp has the same name, so call this only while holding the
    lock that every writer of ``dst`` takes (``ImageCache.stage`` holds one
    per staged path). Paths in one directory are swept with one listing.
    """
    by_dir: dict[Path, list[str]] = {}
    for dst in map(Path, dsts):
        # atomic_write cuts long names to 200
        by_dir.setdefault(dst.parent, []).extend({f".{dst.name}.", f".{dst.name[:200]}."})
    swept = 0
    for parent, prefixes in by_dir.items():
        try:
            entries = os.listdir(parent)
        except OSError:
            continue
        for name in entries:
            if name.endswith(".tmp") and any(_is_temp_of(name, p) for p in prefixes):
                remove_path(parent / name)
                swept += 1
    return swept


def _is_temp_of(name: str, prefix: str) -> bool:
    middle = name[len(prefix) : -len(".tmp")]
    return (
        name.startswith(prefix) and bool(middle) and (middle.replace("_", "a").isalnum() and middle.isascii())
    )


def remove_path(path: Path) -> None:
    """Remove a file, symlink or directory tree; already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def make_temp_dir(dst: Path) -> Path:
    """An empty directory beside ``dst`` to build into before ``publish_dir``."""
    dst = Path(dst)
    try:
        try:
            tmp = Path(temp_dir_in(dst.parent, f".{dst.name}.", ".tmp"))
        except FileNotFoundError:  # the parent is new (it usually is there: a stage dir's images)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(temp_dir_in(dst.parent, f".{dst.name}.", ".tmp"))
    except OSError as e:
        if is_disk_full(e):
            what = f"creating a directory for {dst.name}"
            raise disk_full_error(dst.parent, what=what, code=e.errno) from e
        raise
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the snapshot from other users
    return tmp


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed): what copying it takes."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, f))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def link_tree(
    src_dir: Path,
    dst_dir: Path,
    *,
    force: bool = False,
    share: Callable[[str], bool] | None = None,
    sync: bool = True,
) -> dict[str, int]:
    """Stage a whole directory tree file by file; return how many files each method took.

    The tree is built in a private directory beside ``dst_dir`` and renamed
    into place, so ``dst_dir`` is either absent, the old tree, or the
    complete new one; inside that private directory files get their final
    names at once. An existing ``dst_dir`` is kept as it is unless ``force``
    (then it is swapped out atomically); in that case the counts are all
    zero. Symlinks are recreated as symlinks, never followed. A tree that
    does not fit raises ``DiskFullError`` naming what the whole tree needs.

    ``share(rel)`` (``rel``: the file's ``/``-separated path under
    ``src_dir``) says which files may be hard links to the source; the
    others are reflinked or copied, so writing to them cannot reach the
    source (None: every file may). ``sync=False`` skips the fsync of copies:
    for a stage dir, whose files are checked against the cache on every use.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise CacheError(f"cannot stage {src_dir}: not a directory")
    if dst_dir.exists() and not force:
        return dict.fromkeys(METHODS, 0)
    src = os.fspath(src_dir)
    return _build_and_publish(
        src_dir, dst_dir, force, lambda tmp, counts: _fill_tree(src, tmp, "", counts, share, sync)
    )


#: The files of an OCI layout besides its blobs: copied, never linked (a workflow may write them).
LAYOUT_FILES = ("oci-layout", "index.json")


def link_layout(
    src_dir: Path, dst_dir: Path, blob_names: Iterable[str], *, sync: bool = True
) -> dict[str, int]:
    """``link_tree(force=True, share=is_blob_path)`` for an OCI layout whose files are known:
    ``LAYOUT_FILES`` copied and ``blobs/sha256/<name>`` for each of ``blob_names`` hard-linked
    (copied where a link cannot be made), with no directory listed.

    Why: a re-stage of a cached layout is a few dozen system calls per image, and listing the
    layout's three directories (as ``link_tree`` must, not knowing the tree) was a tenth of them.
    Only what is named is staged: give every blob the layout holds (``layout_blobs``).
    """
    src = os.fspath(src_dir)

    def fill(tmp: str, counts: dict[str, int]) -> None:
        for name in LAYOUT_FILES:
            _stage_file(f"{src}/{name}", f"{tmp}/{name}", name, counts, False, sync)
        os.mkdir(f"{tmp}/blobs")
        os.mkdir(f"{tmp}/blobs/sha256")
        for name in blob_names:
            _stage_file(f"{src}/blobs/sha256/{name}", f"{tmp}/blobs/sha256/{name}", name, counts, True, sync)

    return _build_and_publish(Path(src_dir), Path(dst_dir), True, fill)


def _build_and_publish(
    src_dir: Path, dst_dir: Path, replace: bool, fill: Callable[[str, dict[str, int]], None]
) -> dict[str, int]:
    """Build ``dst_dir`` with ``fill(private dir, counts)`` beside it, then publish it (a tree
    that does not fit is a ``DiskFullError`` naming what the whole of it needs)."""
    counts = dict.fromkeys(METHODS, 0)
    tmp = make_temp_dir(dst_dir)
    try:
        fill(os.fspath(tmp), counts)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if no_room_errno(e) is not None:
            # Name what the whole stage takes, measured now that the half-built tree is gone.
            raise _tree_full(src_dir, dst_dir, e) from e
        raise
    if not publish_dir(tmp, dst_dir, replace=replace):
        return dict.fromkeys(METHODS, 0)
    return counts


def _fill_tree(
    src: str, dst: str, rel: str, counts: dict[str, int], share: Callable[[str], bool] | None, sync: bool
) -> None:
    """Recreate ``src`` under the (private, empty) ``dst`` with strings and ``scandir``: one
    ``stat`` per entry, no temporary names (nobody else writes inside a private directory)."""
    with os.scandir(src) as it:
        entries = list(it)
    for entry in entries:
        out = os.path.join(dst, entry.name)
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), out)
        elif entry.is_dir(follow_symlinks=False):
            os.mkdir(out)
            _fill_tree(entry.path, out, f"{rel}{entry.name}/", counts, share, sync)
        elif entry.is_file(follow_symlinks=False):
            _stage_file(entry.path, out, entry.name, counts, share is None or share(rel + entry.name), sync)


def _stage_file(src: str, out: str, name: str, counts: dict[str, int], link: bool, sync: bool) -> None:
    """Make ``out`` (a new name) hold ``src``: a hard link when ``link`` and the filesystem allow,
    else a reflink or copy; count which."""
    if link and _try_hardlink(src, out):
        counts["hardlink"] += 1
    else:
        counts[_clone_or_copy(src, out, name, sync=sync)] += 1

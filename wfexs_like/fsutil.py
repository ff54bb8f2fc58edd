"""The one way this project publishes a file: temp beside it, fsync, rename, fsync the dir.

Every final name a reader can see (a blob, a sidecar, a SIF, a provenance
record, an exported archive) must hold either the old content or the
complete new one, even across a crash. Keeping that rule in one place keeps
every writer honest about it.

A full disk is the same rule seen from the other side: the temporary file
is removed before the error leaves, so running out of space never leaves a
file that keeps the disk full, and the error (``DiskFullError``) names the
directory, what the step needed and what is free, instead of a bare
``[Errno 28]``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import DiskFullError

#: ``ENOSPC`` (the filesystem is full) and ``EDQUOT`` (the user's quota is): both mean "no room here".
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: What a ``DiskFullError`` advises when its writer knows no better.
DEFAULT_HINT = "free some space there or write somewhere else"


def is_disk_full(e: BaseException) -> bool:
    """Is ``e`` the kernel saying "no room" (a full filesystem or quota), rather than some other I/O error?"""
    return isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS


def no_room_errno(e: BaseException) -> int | None:
    """``ENOSPC`` or ``EDQUOT`` when ``e`` means "no room", else None.

    Besides an ``OSError`` and our own ``DiskFullError``, a tool that failed
    for lack of room (``mksquashfs``, ``tar``) only says so in its stderr, as
    the C library's message: a ``ContainerEngineException`` carrying it counts.
    """
    if isinstance(e, OSError):
        return e.errno if e.errno in DISK_FULL_ERRNOS else None
    if isinstance(e, DiskFullError):
        return e.errno
    tail = getattr(e, "stderr_tail", None)
    if isinstance(tail, str):
        for code in DISK_FULL_ERRNOS:
            if os.strerror(code) in tail:
                return code
    return None


def free_bytes(path: Path) -> int | None:
    """Bytes an ordinary user may still write on ``path``'s filesystem; None when it cannot be told.

    ``path`` need not exist yet: its nearest existing parent is asked. A
    quota is not visible here (only the write that crosses it is), which is
    why every writer also turns ``EDQUOT`` into ``DiskFullError``.
    """
    p = Path(path).absolute()
    while True:
        try:
            st = os.statvfs(p)
        except FileNotFoundError:
            if p.parent == p:
                return None
            p = p.parent
        except OSError:
            return None
        else:
            return st.f_bavail * st.f_frsize


def human_bytes(n: int | None) -> str:
    """Decimal units, as registries and ``df -H`` print them."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def disk_full_error(
    directory: Path,
    *,
    what: str,
    needed: int | None = None,
    at_least: bool = False,
    code: int | None = None,
    cause: OSError | None = None,
    hint: str = DEFAULT_HINT,
) -> DiskFullError:
    """The one-line error for "no room in ``directory``": what was being written, the space it needs, what
    is free (measured now: call it after removing what was half-written) and what to do.

    ``code`` is the errno that said so (``ENOSPC`` or ``EDQUOT``), or
    ``cause`` the ``OSError`` carrying it; ``at_least`` marks ``needed`` as a
    lower bound (a stream of unknown length).
    """
    if code is None:
        code = cause.errno if cause is not None else errno.ENOSPC
    where = _CONTROL.sub("?", str(directory))
    quota = code == errno.EDQUOT
    free = free_bytes(Path(directory))
    parts = [f"{'disk quota exceeded' if quota else 'no space left'} in {where}: {what}"]
    if needed is not None and not (at_least and needed == 0):
        parts.append(f" needs {'more than ' if at_least else ''}{human_bytes(needed)}")
    if free is not None and not quota:
        parts.append(f", {human_bytes(free)} free")
    parts.append(f"; {hint}")
    return DiskFullError(
        "".join(parts),
        path=str(directory),
        what=what,
        needed=needed,
        at_least=at_least,
        free=free,
        errno=code if code in DISK_FULL_ERRNOS else errno.ENOSPC,
    )


def reword_disk_full(
    e: DiskFullError, directory: Path | None = None, *, hint: str = DEFAULT_HINT
) -> DiskFullError:
    """The same error told from the caller's side: about ``directory`` (the cache rather than one of its
    work dirs, which is gone by now) and with the caller's advice (the option that picks another place)."""
    return disk_full_error(
        Path(directory if directory is not None else e.path or "."),
        what=e.what or "writing",
        needed=e.needed,
        at_least=e.at_least,
        code=e.errno,
        hint=hint,
    )


def require_space(directory: Path, needed: int, *, what: str, hint: str = DEFAULT_HINT) -> None:
    """Refuse, before writing anything, a step that cannot fit in ``directory``.

    Unknown free space passes: the write itself is then the judge.
    """
    free = free_bytes(directory)
    if free is not None and free < needed:
        raise disk_full_error(directory, what=what, needed=needed, hint=hint)


@contextlib.contextmanager
def translate_disk_full(directory: Path, *, what: str, needed: int | None = None) -> Iterator[None]:
    """Turn a "no room" ``OSError`` raised in the block into a ``DiskFullError`` about ``directory``.

    For writers that do not go through ``atomic_write`` (a tree being
    extracted, a temp name being made): the caller still removes what it
    half-wrote, this only makes the message say where and how much.
    """
    try:
        yield
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise disk_full_error(directory, what=what, needed=needed, code=e.errno) from e


def names_open_file(path: str | Path, fd: int) -> bool:
    """Does ``path`` still lead to the file open as ``fd``? False once a sweep has removed it.

    What a creator checks after locking a fresh temp file or dir that a
    concurrent ``cache gc`` may have removed between its creation and the lock.
    """
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def read_with_stat(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """A small file's bytes and its ``fstat``, from one open.

    Plain ``os`` calls: ``open()`` and ``read()`` of a file object take eight
    system calls (a tty check, seeks, a second stat) where this takes four,
    and records and sidecars are read for every entry and every stage."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks), st


def random_hex(nbytes: int = 8) -> str:
    """Random hex for temporary names (``os.urandom``: ``secrets`` would import ``random`` and
    ``hashlib`` into every command's start-up for the same bytes)."""
    return os.urandom(nbytes).hex()


def fsync_dir(path: Path) -> None:
    """Make a rename durable; some filesystems refuse to fsync a directory, which is fine."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def temp_file_in(parent: str | os.PathLike[str], prefix: str, suffix: str) -> tuple[int, str]:
    """``tempfile.mkstemp`` in ``parent`` (mode 0600, ``O_EXCL``), named ``PREFIX<hex>SUFFIX``.

    Why not ``tempfile``: it imports ``random`` (and with it ``hashlib``)
    into every command's start-up, for names ``random_hex`` gives as well.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = os.path.join(parent, f"{prefix}{random_hex(6)}{suffix}")
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {parent}")


def temp_dir_in(parent: str | os.PathLike[str], prefix: str, suffix: str = "") -> str:
    """``tempfile.mkdtemp`` in ``parent`` (mode 0700), named ``PREFIX<hex>SUFFIX``; see ``temp_file_in``."""
    for _ in range(100):
        name = os.path.join(parent, f"{prefix}{random_hex(6)}{suffix}")
        try:
            os.mkdir(name, 0o700)
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"no free temporary name in {parent}")


def _create_temp_beside(dest: Path) -> tuple[int, Path]:
    # 0o666 so the umask applies as for any file the user writes (mkstemp's
    # 0o600 would survive the rename).
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    stem = dest.name[:200]
    for _ in range(100):
        tmp = dest.with_name(f".{stem}.{random_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {dest}")


@contextlib.contextmanager
def atomic_write(dest: Path, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """Yield a binary file (readable, seekable) that becomes ``dest`` only if the block succeeds.

    ``mode`` sets the final permissions; by default the umask decides. On
    any exception the temporary file is removed and ``dest`` is untouched.
    The directory must exist: whether to create it is the caller's decision.
    """
    dest = Path(dest)
    with translate_disk_full(dest.parent, what=f"creating {dest.name}"):
        fd, tmp = _create_temp_beside(dest)
    fh = os.fdopen(fd, "w+b")
    reached: int | None = None  # how far the writer got, for a "needs more than" message
    try:
        try:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError, ValueError):
                reached = fh.tell()
            with contextlib.suppress(OSError):  # a close that cannot flush: the first error says why
                fh.close()
            raise
        fh.close()
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and is_disk_full(e):
            what = f"writing {dest.name}"
            raise disk_full_error(dest.parent, what=what, needed=reached, at_least=True, code=e.errno) from e
        raise
    fsync_dir(dest.parent)


def atomic_write_bytes(dest: Path, data: bytes, *, mode: int | None = None) -> None:
    with atomic_write(dest, mode=mode) as fh:
        fh.write(data)

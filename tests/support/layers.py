"""Build OCI layer tarballs member by member, including the ones a hostile registry would serve.

``imagegen`` builds whole images into a blob store; the SIF builder's tests
need finer control over single layers: exact modes and owners, whiteouts,
device nodes, hardlinks, and members no honest tool would write (``../evil``,
``/abs``, a write through ``etc -> /``). Every header is deterministic
(fixed mtime, numeric owners, PAX format, gzip without a timestamp) so that
layers, and the SIFs built from them, are byte-identical across runs.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MTIME = 1_700_000_000


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # file, dir, symlink, hardlink, fifo, chardev, blockdev
    data: bytes = b""
    mode: int = 0o644
    target: str = ""
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    major: int = 0
    minor: int = 0


def file(name: str, data: bytes = b"", mode: int = 0o644, **kw: Any) -> Member:
    return Member(name, "file", data=data, mode=mode, **kw)


def directory(name: str, mode: int = 0o755, **kw: Any) -> Member:
    return Member(name, "dir", mode=mode, **kw)


def symlink(name: str, target: str, **kw: Any) -> Member:
    return Member(name, "symlink", target=target, mode=0o777, **kw)


def hardlink(name: str, target: str, **kw: Any) -> Member:
    return Member(name, "hardlink", target=target, **kw)


def whiteout(path: str) -> Member:
    """The marker deleting ``path`` from lower layers (``dir/.wh.name``)."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}")


def opaque(dirname: str) -> Member:
    """The marker hiding every lower-layer entry of ``dirname``."""
    return file(f"{dirname.rstrip('/')}/.wh..wh..opq")


def chardev(name: str, major: int, minor: int) -> Member:
    return Member(name, "chardev", mode=0o666, major=major, minor=minor)


def fifo(name: str, mode: int = 0o644) -> Member:
    return Member(name, "fifo", mode=mode)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
}


def tar_bytes(members: Iterable[Member]) -> bytes:
    """An uncompressed tar holding ``members`` in the given order, names kept verbatim."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            ti = tarfile.TarInfo(m.name)
            ti.type = _TYPES[m.kind]
            ti.mode = m.mode
            ti.uid, ti.gid = m.uid, m.gid
            ti.uname = ti.gname = ""
            ti.mtime = m.mtime
            ti.linkname = m.target
            ti.devmajor, ti.devminor = m.major, m.minor
            payload = None
            if m.kind == "file":
                ti.size = len(m.data)
                payload = io.BytesIO(m.data)
            tf.addfile(ti, payload)
    return buf.getvalue()


def write_layer(path: Path, members: Iterable[Member], *, compression: str = "gzip") -> Path:
    """Write a layer blob: ``gzip`` (the usual), ``none`` (plain tar) or ``zstd`` (needs the CLI)."""
    raw = tar_bytes(members)
    if compression == "gzip":
        path.write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))
    elif compression == "none":
        path.write_bytes(raw)
    elif compression == "zstd":
        zstd = shutil.which("zstd")
        if zstd is None:
            raise RuntimeError("zstd is not installed (apt-get install zstd)")
        path.write_bytes(
            subprocess.run([zstd, "-q", "-c"], input=raw, capture_output=True, check=True).stdout
        )
    else:
        raise ValueError(f"unknown compression {compression!r}")
    return path


def busybox_bytes() -> bytes:
    """The host's static busybox: a real executable that runs in any rootfs."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).is_file():
            return Path(candidate).read_bytes()
    raise RuntimeError("busybox-static is not installed (apt-get install busybox-static)")


def image_config(
    *,
    arch: str = "amd64",
    env: Sequence[str] = ("PATH=/bin",),
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    created: str | None = "2023-11-14T22:13:20Z",
) -> dict[str, Any]:
    """An OCI image config, the blob the SIF builder reads Env/Entrypoint/Cmd/Labels from."""
    inner: dict[str, Any] = {"Env": list(env)}
    if entrypoint is not None:
        inner["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        inner["Cmd"] = list(cmd)
    if labels:
        inner["Labels"] = dict(labels)
    config: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "config": inner,
        "rootfs": {"type": "layers"},
    }
    if created is not None:
        config["created"] = created
    return config

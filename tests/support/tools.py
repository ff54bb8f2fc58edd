"""Small helpers the image tests share: run a tool that must succeed, write a tar by hand."""

from __future__ import annotations

import io
import subprocess
import tarfile


def run_ok(*cmd: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd``; a non-zero exit fails the test with the command and its stderr tail."""
    proc = subprocess.run(cmd, input=input, capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}"
    return proc


def tar_of(members: list[tuple[str, bytes]], links: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A tar of ``(name, bytes)`` files and ``(name, target)`` symlinks, names taken as given
    (hostile ones included: that is what the archive readers are tested against)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for name, target in links:
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            tf.addfile(ti)
    return buf.getvalue()

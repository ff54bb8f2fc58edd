"""Bit rot as the issue describes it: one byte flipped in place, its mode and mtime put back."""

from __future__ import annotations

import os
from pathlib import Path


def flip_keep_mtime(path: Path) -> None:
    """Flip the middle byte in place, then restore mode and mtime (``touch -r``); size stays."""
    st = path.stat()
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(st.st_size // 2)
        b = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([b[0] ^ 0x55]))
    os.chmod(path, st.st_mode)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size

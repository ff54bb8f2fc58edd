"""Small helpers the tests share: run a tool that must succeed, write a tar by hand, watch
partial downloads, see what a command loaded."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path


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


def partial_sizes(tmp_dir: Path) -> dict[str, int]:
    """File name -> bytes for every ``*.partial`` download in a cache's tmp dir, read while the
    download runs: one may finish (be renamed into blobs/) between the listing and its stat, and
    is then simply not partial any more."""
    out = {}
    for p in tmp_dir.glob("*.partial"):
        try:
            out[p.name] = p.stat().st_size
        except FileNotFoundError:
            continue
    return out


#: Runs the CLI as the console script does and writes every module loaded, at exit, to argv[1].
_MODULES_AT_EXIT = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "wfexs-like"
from wfexs_like.cli import run
run()
"""


def cli_modules(*args: str, tmp: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``wfexs-like ARGS``; its result, and the modules it had loaded when it left
    (``sys.modules`` at exit, so whoever imported them, ``importlib`` included).

    Not ``-X importtime``: it reports only imports made by the import
    statement, so a module loaded through ``importlib.import_module`` (as
    the packages' lazy names are) would be missed.
    """
    listing = tmp / f"modules-{uuid.uuid4().hex[:8]}.json"
    out = subprocess.run(
        [sys.executable, "-c", _MODULES_AT_EXIT, str(listing), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out, set(json.loads(listing.read_text()))

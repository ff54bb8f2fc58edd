"""A full disk or a reached quota, under the cache or the stage dir: one clear line, nothing left behind.

Issue 13, item 2: with the cache on a 60 MB tmpfs, materializing a 93 MB
image printed a 53-line traceback and left a 63 MB ``.partial`` that kept
the disk 100 % full, so the next small pull failed too. Here every case
runs the installed command against a real registry on real small
filesystems (tmpfs, whose limit the kernel enforces mid-write) and checks
the three things a user relies on: the error is one line naming the
directory and the space needed, nothing half-written is left (least of all
under a final name), and the cache works right afterwards.

``EDQUOT`` cannot come from a tmpfs here (this kernel has no quota
support), so it is injected by ``strace`` into the real process's
``write`` of one partial file, or its ``copy_file_range`` while staging:
the same syscall failing with the errno a quota gives.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import tmpfs
from tests.support.imagegen import BuiltImage, build_image, busybox_base_layer
from tests.support.proxy import FaultProxy
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from tests.support.tools import partial_sizes
from wfexs_like.filelocks import FileLock
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.provenance import read_containers_file

small_tmpfs = tmpfs.small_tmpfs  # the fixture, where pytest looks for it
fill = tmpfs.fill
WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"
MiB = 1 << 20
SIZE = r"(\d+ B|\d+\.\d [kMGT]B)"  # as the messages print sizes
Tmpfs = Callable[[str, str], Path]


def push_random_image(
    registry_url: str, store: BlobStore, repo: str, layer_sizes: list[int], seed: int
) -> BuiltImage:
    """A runnable image whose extra layers are random bytes (gzip cannot shrink them), pushed as repo:1."""
    rng = random.Random(seed)
    layers = [busybox_base_layer()] + [
        {f"data/layer{i}.bin": rng.randbytes(size)} for i, size in enumerate(layer_sizes)
    ]
    image = build_image(store, layers)
    push_image(registry_url, repo, "1", store, image.manifest)
    return image


@dataclass
class Pushed:
    host: str
    prefix: str
    images: dict[str, BuiltImage]

    def tag(self, name: str, host: str | None = None) -> str:
        return f"{host or self.host}/{self.prefix}/{name}:1"

    def size(self, name: str) -> int:
        m = self.images[name].manifest
        return m.config.size + sum(layer.size for layer in m.layers)

    def biggest_layer(self, name: str) -> str:
        return max(self.images[name].manifest.layers, key=lambda layer: layer.size).digest


@pytest.fixture(scope="module")
def pushed(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    """big: 3 x 30 MiB (95 MB, the issue's 93 MB image); mid: 2 x 12 MiB; small: the busybox base only."""
    store = BlobStore(tmp_path_factory.mktemp("disk-full-src"))
    prefix = f"wl-df-{uuid.uuid4().hex[:8]}"
    images = {
        name: push_random_image(registry.url, store, f"{prefix}/{name}", sizes, seed)
        for name, sizes, seed in (("big", [30 * MiB] * 3, 13), ("mid", [12 * MiB] * 2, 14), ("small", [], 15))
    }
    return Pushed(registry.host, prefix, images)


def run(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it; never a traceback, whatever the outcome."""
    out = subprocess.run(
        [*prefix, str(WFEXS_LIKE), *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


def materialize(
    tag: str, stage: Path, cache: Path, *extra: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return run(
        "materialize", "-q", "--stage-dir", str(stage), "--cache-dir", str(cache), *extra, tag, prefix=prefix
    )


def failure_reason(out: subprocess.CompletedProcess[str], tag: str) -> str:
    """The one line that says why ``tag`` failed; anything more (a traceback, a wrapped message) fails."""
    assert out.returncode == 1, (out.returncode, out.stderr)
    lines = out.stderr.splitlines()
    assert lines[0] == "wfexs-like: 1 container(s) failed:", out.stderr
    assert len(lines) == 2 and lines[1].startswith(f"  {tag}: "), out.stderr
    return lines[1].removeprefix(f"  {tag}: ")


def assert_names_space(reason: str, directory: Path, quota: bool = False) -> None:
    kind = "disk quota exceeded" if quota else "no space left"
    assert reason.startswith(f"{kind} in {directory}: "), reason
    assert re.search(rf" needs (more than )?{SIZE}", reason), f"no space needed in: {reason}"
    if not quota:
        assert re.search(rf", {SIZE} free; ", reason), f"no free space in: {reason}"


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def used_bytes(mount: Path) -> int:
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def blob_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in (cache / "blobs" / "sha256").iterdir())


def assert_cache_sound(cache: Path) -> None:
    out = run("cache", "verify", "--full", "--cache-dir", str(cache))
    assert out.returncode == 0, out.stdout + out.stderr


def assert_staged(pushed: Pushed, name: str, stage: Path, cache: Path, *extra: str) -> None:
    """``name`` materializes into ``stage`` from this cache, at exactly the digest the registry has."""
    records_file = stage.parent / f"{stage.name}.yaml"
    out = materialize(pushed.tag(name), stage, cache, "-o", str(records_file), *extra)
    assert out.returncode == 0, out.stderr
    (record,) = read_containers_file(records_file)
    assert record.fingerprint.endswith("@" + pushed.images[name].digest), record.fingerprint


def strace(path: Path | None, syscall: str, errno_name: str, when: str) -> tuple[str, ...]:
    """Make the command's ``syscall`` fail with ``errno_name`` (on ``path`` only, when given) from the
    ``when``-th call on: the kernel-level failure, injected into the real process."""
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed; run scripts/setup-host.sh (apt-get install strace)")
    only = ("-P", str(path)) if path is not None else ()
    return ("strace", "-f", "-qq", "-o", "/dev/null", *only, "-e", f"trace={syscall}",
            "-e", f"inject={syscall}:error={errno_name}:when={when}")  # fmt: skip


# -- the cache's filesystem --------------------------------------------------------------------------


def test_a_full_cache_fails_in_one_line_frees_its_partials_and_keeps_working(
    pushed: Pushed, small_tmpfs: Tmpfs, tmp_path: Path
) -> None:
    mount = small_tmpfs("cache-fs", "60m")
    cache = mount / "cache"
    out = materialize(pushed.tag("big"), tmp_path / "stage", cache)
    reason = failure_reason(out, pushed.tag("big"))
    assert_names_space(reason, cache / "tmp")
    assert reason.endswith("or use another --cache-dir"), reason

    assert files_under(cache / "tmp") == [], "a partial that cannot finish must not keep the disk full"
    assert used_bytes(mount) <= blob_bytes(cache) + 2 * MiB, "only complete blobs may take the space"
    assert_cache_sound(cache)
    assert_staged(pushed, "small", tmp_path / "stage", cache)
    assert_cache_sound(cache)


def test_abandoned_partials_make_room_but_one_being_resumed_is_kept(
    pushed: Pushed, small_tmpfs: Tmpfs, tmp_path: Path
) -> None:
    """The issue's stuck state: a disk kept full by a partial download nobody finishes. A pull that needs
    room drops it, unless a live process holds its digest lock (it is being resumed right now)."""
    mount = small_tmpfs("cache-fs", "60m")
    cache = mount / "cache"
    store = BlobStore(cache)
    hexd = random.Random(7).randbytes(32).hex()
    partial = store.tmp_dir / f"sha256-{hexd}.partial"
    fill(partial)
    assert os.statvfs(mount).f_bavail == 0

    with FileLock(str(store.locks_dir / f"sha256-{hexd}.lock")):
        out = materialize(pushed.tag("small"), tmp_path / "stage", cache)
        assert_names_space(failure_reason(out, pushed.tag("small")), cache / "tmp")
        assert partial.exists(), "a partial download whose owner is alive was deleted"

    assert_staged(pushed, "small", tmp_path / "stage", cache)
    assert not partial.exists()
    assert files_under(store.tmp_dir) == []
    assert_cache_sound(cache)


def test_a_disk_that_fills_up_mid_download(
    pushed: Pushed, small_tmpfs: Tmpfs, registry: RunningRegistry, tmp_path: Path
) -> None:
    """The free-space check passes (the image fits), then something else takes the room mid-transfer."""
    mount = small_tmpfs("cache-fs", "60m")
    cache = mount / "cache"
    proxy = FaultProxy(registry.url)
    try:
        proxy.throttle(4_000_000)
        tag = pushed.tag("mid", proxy.host)
        cmd = [str(WFEXS_LIKE), "materialize", "-q", "--stage-dir", str(tmp_path / "stage")]
        proc = subprocess.Popen(
            [*cmd, "--cache-dir", str(cache), tag],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not any(size > MiB for size in partial_sizes(cache / "tmp").values()):
            assert proc.poll() is None and time.monotonic() < deadline, "the download never started"
            time.sleep(0.02)
        filler = fill(mount / "filler.bin")
        _, stderr = proc.communicate(timeout=120)
    finally:
        proxy.stop()
    out = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    assert "Traceback" not in stderr, stderr
    assert_names_space(failure_reason(out, tag), cache / "tmp")
    assert files_under(cache / "tmp") == []

    filler.unlink()
    assert_staged(pushed, "mid", tmp_path / "stage", cache)
    assert_cache_sound(cache)


def test_a_quota_reached_mid_download(pushed: Pushed, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    partial = cache / "tmp" / f"sha256-{pushed.biggest_layer('mid').split(':')[1]}.partial"
    out = materialize(
        pushed.tag("mid"), tmp_path / "stage", cache, prefix=strace(partial, "write", "EDQUOT", "4+")
    )
    assert_names_space(failure_reason(out, pushed.tag("mid")), cache / "tmp", quota=True)
    assert files_under(cache / "tmp") == []
    assert_staged(pushed, "mid", tmp_path / "stage", cache)
    assert_cache_sound(cache)


# -- the stage dir's filesystem ------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["docker", "singularity"])
def test_a_full_stage_dir_holds_nothing_half_written(
    engine: str, pushed: Pushed, small_tmpfs: Tmpfs, tmp_path: Path
) -> None:
    """The cache is on the disk, the stage dir on a 60 MB tmpfs: the snapshot (an OCI layout tree, or a
    SIF file) must be copied across, and does not fit."""
    cache = tmp_path / "cache"
    stage = small_tmpfs("stage-fs", "60m") / "containers"
    out = materialize(pushed.tag("big"), stage, cache, "--engine", engine)
    reason = failure_reason(out, pushed.tag("big"))
    assert_names_space(reason, stage)
    needed = float(re.search(r" needs (\d+\.\d) MB", reason).group(1))  # type: ignore[union-attr]
    assert needed >= pushed.size("big") / 1e6 - 0.1, reason
    assert files_under(stage) == [], "nothing may be left in the stage dir, under a final name or not"
    assert used_bytes(stage.parent) < MiB

    assert_staged(pushed, "big", tmp_path / "roomy", cache, "--engine", engine, "--offline")
    assert_cache_sound(cache)


def test_a_quota_reached_while_staging(pushed: Pushed, small_tmpfs: Tmpfs, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    stage = small_tmpfs("stage-fs", "200m") / "containers"  # another filesystem: staging copies
    out = materialize(pushed.tag("mid"), stage, cache, prefix=strace(None, "copy_file_range", "EDQUOT", "2+"))
    assert_names_space(failure_reason(out, pushed.tag("mid")), stage, quota=True)
    assert files_under(stage) == []
    assert_staged(pushed, "mid", stage, cache, "--offline")
    assert_cache_sound(cache)


# -- a SIF built on a full cache ---------------------------------------------------------------------

#: mid (25 MB of layers) as a SIF: in 40 MB the packer runs out of room, in 60 MB writing the SIF does.
SIF_CACHE_SIZES = ["40m", "60m"]


def _sif_on_a_full_cache(pushed: Pushed, small_tmpfs: Tmpfs, tmp_path: Path, size: str) -> tuple[Path, str]:
    cache = small_tmpfs("cache-fs", size) / "cache"
    out = materialize(pushed.tag("mid"), tmp_path / "stage", cache, "--engine", "singularity")
    assert out.returncode == 1, out.stderr
    return cache, out.stderr


@pytest.mark.parametrize("size", SIF_CACHE_SIZES)
def test_a_sif_build_on_a_full_cache_leaves_nothing_and_the_cache_keeps_working(
    size: str, pushed: Pushed, small_tmpfs: Tmpfs, tmp_path: Path
) -> None:
    cache, _ = _sif_on_a_full_cache(pushed, small_tmpfs, tmp_path, size)
    assert files_under(cache / "tmp") == [], "the build dir (tree, squashfs, SIF) must go"
    assert files_under(tmp_path / "stage") == []
    assert_cache_sound(cache)
    assert_staged(pushed, "small", tmp_path / "stage", cache, "--engine", "singularity")
    assert_cache_sound(cache)


@pytest.mark.parametrize("size", SIF_CACHE_SIZES)
def test_a_sif_build_on_a_full_cache_fails_in_one_line(
    size: str, pushed: Pushed, small_tmpfs: Tmpfs, tmp_path: Path
) -> None:
    cache, stderr = _sif_on_a_full_cache(pushed, small_tmpfs, tmp_path, size)
    reason = failure_reason(subprocess.CompletedProcess([], 1, "", stderr), pushed.tag("mid"))
    assert_names_space(reason, cache / "tmp")
    assert reason.endswith("or use another --cache-dir"), reason

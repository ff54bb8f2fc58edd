"""A SIF build SIGKILLed mid-squash leaves no packer running, and ``cache gc`` sweeps its build dir.

Found before: after 10 kills, ``mksquashfs`` outlived its parent in 4 of 7
and kept writing, and the abandoned ``tmp/sif-*`` dirs (1.08 GB) were never
removed. Here a driver process builds the SIF the way the cache does (a
claimed work dir ``tmp/sif-*`` inside the cache, ``build_sif`` writing
there), is SIGKILLed once its packer is compressing, and then:

- the packer is gone within 2 s (it dies with its parent: ``PR_SET_PDEATHSIG``);
- ``wfexs-like cache gc`` removes the build dir as an abandoned work dir
  (its owner's claim died with it), while a gc run during the build spared it;
- the driver's ``TMPDIR`` is still empty: nothing is written outside the cache.

Both packers are tried: ``tar2sqfs`` (fed by a pipe) and the ``mksquashfs``
fallback (no pipe: nothing but the parent-death signal stops it).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.layers import image_config
from tests.support.storeimage import store_image
from wfexs_like.images.blobstore import BlobStore

REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20

DRIVER = """
import sys
from pathlib import Path
from wfexs_like.cache.build import work_dir
from wfexs_like.cache.snapshots import ImageCache
from wfexs_like.images.sif_build import build_sif
from wfexs_like.images.store import StoreImage

root, digest, packer = sys.argv[1:]
cache = ImageCache(Path(root))
image = StoreImage(cache.store, digest)
with work_dir(cache, "sif-") as work:
    print(work, flush=True)
    build_sif(image, work / "image.sif", tmp_dir=work, tar2sqfs=None if packer == "mksquashfs" else packer)
print("built", flush=True)
"""


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A ~200 MB image (incompressible and text files, one gzip layer) in a blob store to copy from."""
    d = tmp_path_factory.mktemp("seed")
    rng = random.Random(13)
    layer = d / "layer.tar"
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(40):
            data = (
                os.urandom(4 * MiB)
                if i % 2
                else b"".join(b"%08d lorem ipsum\n" % rng.randrange(10**8) for _ in range(4 * MiB // 24))
            )
            info = tarfile.TarInfo(f"opt/data/part{i:02d}")
            info.size, info.mtime = len(data), 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    image = store_image(BlobStore(d / "store"), [layer], image_config())
    return d / "store", image.digest()


def fresh_cache(seed: tuple[Path, str], where: Path) -> Path:
    """A cache holding the seed image's blobs (hard links: a try costs no copy)."""
    store, _ = seed
    blobs = where / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (store / "blobs" / "sha256").iterdir():
        os.link(blob, blobs / blob.name)
    return where


def packer_of(pid: int, name: str) -> int | None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == name:
                    return int(child)
            except OSError:
                continue
    return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def gc(cache: Path, *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "wfexs_like.cli", "cache", "gc", "--cache-dir", str(cache), "--json", *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def removed_paths(report: dict) -> dict[str, str]:
    return {item["path"]: item["what"] for item in report["removed"]}


def kill_mid_squash(seed: tuple[Path, str], cache: Path, tmpdir: Path, packer: str, delay: float) -> Path:
    """Start a build, SIGKILL it once its packer compresses; check the packer dies; return the build dir."""
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(cache), seed[1], packer],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmpdir)},
    )
    try:
        assert driver.stdout is not None
        build_dir = Path(driver.stdout.readline().decode().strip())
        assert build_dir.parent == cache / "tmp" and build_dir.name.startswith("sif-"), build_dir
        child = wait_for(lambda: packer_of(driver.pid, packer), 60, f"{packer} to start")
        assert isinstance(child, int)
        wait_for(lambda: next(build_dir.glob("sif-build-*/rootfs.squashfs"), None), 30, "the squashfs")
        time.sleep(delay)
        assert alive(child), f"{packer} finished before the kill: make the image bigger"
        # Hold the packer where it is: the gc below is a cold-started process, and on a loaded
        # machine the build could finish meanwhile. A stopped child still dies with its parent.
        os.kill(child, signal.SIGSTOP)
        spared = gc(cache, "--min-age", "0s", "--dry-run")
        assert str(build_dir) not in removed_paths(spared), "gc would remove a live build's dir"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        killed = time.monotonic()
        while alive(child) and time.monotonic() - killed < 2:
            time.sleep(0.02)
        assert not alive(child), f"{packer} (pid {child}) outlived its killed parent by 2 s"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    return build_dir


@pytest.mark.parametrize("packer", ["tar2sqfs", "mksquashfs"])
def test_a_killed_sif_build_leaves_no_packer_and_gc_sweeps_its_dir(
    packer: str, seed: tuple[Path, str], tmp_path: Path, tries: Callable[[int, int], int]
) -> None:
    rng = random.Random(packer)
    for attempt in range(tries(3, 10)):
        cache = fresh_cache(seed, tmp_path / f"cache-{attempt}")
        tmpdir = tmp_path / f"tmpdir-{attempt}"
        tmpdir.mkdir()
        build_dir = kill_mid_squash(seed, cache, tmpdir, packer, rng.uniform(0.1, 1.0))
        assert build_dir.is_dir(), "the killed build's dir is there for gc to find"
        report = gc(cache, "--min-age", "0s")
        assert removed_paths(report).get(str(build_dir)) == "abandoned work dir", report["removed"]
        assert not build_dir.exists()
        assert list((cache / "tmp").iterdir()) == []
        assert list(tmpdir.iterdir()) == [], "the build wrote outside the cache"

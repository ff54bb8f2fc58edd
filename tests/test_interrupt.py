"""Ctrl-C during a pull: the command leaves within a second, keeps what it downloaded, exits 130.

The installed command runs as a subprocess in its own session and gets a
real SIGINT while its workers stream ~30 MB of random layers through a proxy
that lets only ~2 MB/s through (all connections together), so the pull is
certainly mid-body when the signal lands: before the fix, the command waited
for every in-flight layer to finish (15 s here).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.imagegen import BuiltImage, build_image
from tests.support.proxy import FaultProxy, Rule
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from tests.support.tools import partial_sizes
from wfexs_like import progress
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.registry import RegistryClient

pytestmark = [pytest.mark.registry]

WFEXS_LIKE = Path(sys.executable).with_name("wfexs-like")
RATE = 2_000_000
#: The issue asks for 1 s; the margin covers a loaded test machine (what it guards against, waiting
#: for the slow link to deliver a layer, takes 15 s).
EXIT_BOUND = 6.0


@pytest.fixture(scope="module")
def big_image(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """Three 10 MB layers of random bytes (gzip cannot shrink them)."""
    store = BlobStore(tmp_path_factory.mktemp("big-src"))
    layers = [{"data/": None, f"data/{i}.bin": os.urandom(10 << 20)} for i in range(3)]
    img = build_image(store, layers)
    push_image(registry.url, "t/big", "v1", store, img.manifest)
    return img


@dataclass
class Slow:
    proxy: FaultProxy
    rule: Rule

    def open_up(self) -> None:
        """Full speed from now on (the rule has fired as often as it may)."""
        self.rule.times = self.rule.fired


@pytest.fixture
def slow_link(registry: RunningRegistry) -> Iterator[Slow]:
    proxy = FaultProxy(registry.url)
    rule = proxy.throttle(RATE)
    yield Slow(proxy, rule)
    proxy.stop()


def materialize(tmp_path: Path, tag: str) -> list[str]:
    return [
        str(WFEXS_LIKE), "materialize", "--engine", "podman", "--stage-dir", str(tmp_path / "stage"),
        "--cache-dir", str(tmp_path / "cache"), tag,
    ]  # fmt: skip


def partials(cache: Path) -> dict[str, int]:
    """``sha256:<hex>`` -> bytes kept, for every non-empty partial blob in the cache's tmp dir."""
    return {
        "sha256:" + name.removeprefix("sha256-").removesuffix(".partial"): size
        for name, size in partial_sizes(cache / "tmp").items()
        if size and name.startswith("sha256-")
    }


def start_and_wait_for_a_partial(cmd: list[str], cache: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not partials(cache):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"no partial download appeared (exit {proc.returncode}); stderr:\n{err}")
        time.sleep(0.05)
    time.sleep(0.3)  # well into the bodies
    return proc


def interrupt(proc: subprocess.Popen, times: int = 1) -> tuple[float, str]:
    """Send SIGINT ``times`` (0.1 s apart); seconds from the first signal to the exit, and stderr."""
    t0 = time.monotonic()
    for i in range(times):
        if i:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running 60 s after Ctrl-C; stderr:\n{err}")
    return time.monotonic() - t0, err


def test_ctrl_c_stops_downloads_keeps_partials_and_the_next_run_resumes(
    big_image: BuiltImage, slow_link: Slow, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    tag = f"{slow_link.proxy.host}/t/big:v1"
    proc = start_and_wait_for_a_partial(materialize(tmp_path, tag), cache)
    elapsed, err = interrupt(proc)

    assert proc.returncode == 130, err
    assert elapsed < EXIT_BOUND, f"exit took {elapsed:.2f} s after Ctrl-C"
    assert "Traceback" not in err
    kept = partials(cache)
    layers = {d.digest: d.size for d in big_image.manifest.layers}
    assert kept and set(kept) <= set(layers), "partial layers are kept"
    assert all(size < layers[d] for d, size in kept.items())
    assert not any((cache / "blobs" / "sha256" / d.split(":")[1]).exists() for d in kept)

    slow_link.open_up()
    done = subprocess.run(
        materialize(tmp_path, tag), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    for digest, size in kept.items():
        ranges = [h.headers.get("Range") for h in slow_link.proxy.hits(digest, "GET")]
        assert f"bytes={size}-" in ranges, f"{digest} resumed at byte {size}: {ranges}"
    assert not partials(cache)


def test_a_second_ctrl_c_is_clean_too(big_image: BuiltImage, slow_link: Slow, tmp_path: Path) -> None:
    proc = start_and_wait_for_a_partial(
        materialize(tmp_path, f"{slow_link.proxy.host}/t/big:v1"), tmp_path / "cache"
    )
    elapsed, err = interrupt(proc, times=2)
    assert proc.returncode == 130, err
    assert elapsed < EXIT_BOUND, f"exit took {elapsed:.2f} s after Ctrl-C"
    assert "Traceback" not in err


# -- the library, cancelled from another thread (what the command's SIGINT handler does) -----------
class Recorder:
    """A progress reporter that keeps every ``advance`` call."""

    def __init__(self) -> None:
        self.advances: list[tuple[str, str, int, int | None]] = []

    def begin(self, tag: str) -> None:
        pass

    def advance(self, tag: str, key: str, done: int, total: int | None) -> None:
        self.advances.append((tag, key, done, total))

    def step(self, tag: str, text: str) -> None:
        pass

    def finish(self, summary: object) -> None:
        pass

    def warn(self, text: str, *, key: str | None = None) -> None:
        pass


@pytest.fixture
def cancel_flag() -> Iterator[None]:
    progress.reset_cancel()
    yield
    progress.reset_cancel()


def cancel_when(ready: Callable[[], bool]) -> threading.Thread:
    """Request cancellation from a thread as soon as ``ready()``; records when into ``.at``."""

    def run() -> None:
        deadline = time.monotonic() + 60
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        t.at = time.monotonic()  # type: ignore[attr-defined]
        progress.request_cancel()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_cancelled_pull_raises_cancelled_and_keeps_partials(
    big_image: BuiltImage, slow_link: Slow, tmp_path: Path, cancel_flag: None
) -> None:
    store = BlobStore(tmp_path / "store")
    canceller = cancel_when(lambda: bool(partials(store.root)))
    before = set(threading.enumerate())
    with RegistryClient(max_workers=3) as c, pytest.raises(progress.Cancelled):
        c.pull(slow_link.proxy.host, "t/big", "v1", store)
    elapsed = time.monotonic() - canceller.at  # type: ignore[attr-defined]
    assert elapsed < EXIT_BOUND, f"the pull returned {elapsed:.2f} s after the cancel"
    # The client waits only CANCEL_GRACE for its workers; one still writing when the flag is
    # lowered below would go on, and its partial would not be where the resume starts.
    deadline = time.monotonic() + 30
    while any(t.name.startswith("wfexs-pull") for t in set(threading.enumerate()) - before):
        assert time.monotonic() < deadline, "pull workers still running 30 s after the cancel"
        time.sleep(0.05)
    kept = partials(store.root)
    assert kept

    progress.reset_cancel()
    slow_link.open_up()
    with RegistryClient() as c:
        assert c.pull(slow_link.proxy.host, "t/big", "v1", store).manifest_digest == big_image.digest
    for digest, size in kept.items():
        assert f"bytes={size}-" in [h.headers.get("Range") for h in slow_link.proxy.hits(digest, "GET")]


def test_a_cancelled_download_keeps_its_partial_and_reports_progress(
    big_image: BuiltImage, slow_link: Slow, tmp_path: Path, cancel_flag: None
) -> None:
    layer = big_image.manifest.layers[0]
    url = f"http://user:secret@{slow_link.proxy.host}/v2/t/big/blobs/{layer.digest}"
    dest = tmp_path / "layer.bin"
    partial = dest.with_name("layer.bin.partial")
    rec = Recorder()
    cancel_when(lambda: partial_sizes(tmp_path).get(partial.name, 0) > 0)
    with progress.reporting(rec), RegistryClient() as c, pytest.raises(progress.Cancelled):
        c.download(url, dest, expected_digest=layer.digest)
    assert not dest.exists() and 0 < partial.stat().st_size < layer.size
    shown = f"http://{slow_link.proxy.host}/v2/t/big/blobs/{layer.digest}"
    assert rec.advances and {(tag, key) for tag, key, _, _ in rec.advances} == {(shown, "layer.bin")}
    assert rec.advances[-1][3] == layer.size

    progress.reset_cancel()
    slow_link.open_up()
    kept = partial.stat().st_size
    with progress.reporting(rec), RegistryClient() as c:
        assert c.download(url, dest, expected_digest=layer.digest) == layer.digest
    assert f"bytes={kept}-" in [h.headers.get("Range") for h in slow_link.proxy.hits(layer.digest, "GET")]
    assert rec.advances[-1][2:] == (layer.size, layer.size)

"""SIGKILL at random moments of ``wfexs-like materialize``: the cache never breaks, leftovers stay bounded.

Issue 13 ("Crashes"): kill the real command during download, publish,
staging and SIF build, then check what a user relies on after a crash:

- nothing incomplete is ever under a final name, in the cache or in the
  stage dir (checked right after the kill, before anything could repair it);
- the next run succeeds and stages exactly the registry's digest (a SIF:
  the same bytes every time, the native builder is reproducible);
- ``cache verify --full`` is clean;
- no child (``mksquashfs``) outlives the killed process;
- the cache's ``tmp/`` stays within a fixed bound whatever the number of
  kills, and ``cache gc`` sweeps it empty.

Each kill waits for a sign that its phase has begun (a partial download,
every layer blob published, a temp entry in the stage dir, a SIF build dir)
and then a random delay, so kills land inside the phase, anywhere in it.
The delays come from one seeded generator: the seed is printed (shown with
a failure) and ``WFEXS_LIKE_CRASH_SEED=<seed>`` replays the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.test_disk_full import MiB, push_random_image
from tests.support import tmpfs
from tests.support.imagegen import BuiltImage
from tests.support.proxy import FaultProxy, Rule
from tests.support.registry import RunningRegistry
from wfexs_like.digests import sha256_file
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.provenance import read_containers_file

small_tmpfs = tmpfs.small_tmpfs  # the fixture, where pytest looks for it
WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"
PHASES = ("download", "publish", "staging", "sif-build")
#: Bytes per second through the throttled proxy: the 25 MB image takes ~3 s to download.
SLOW = 8_000_000
FAST = 1e12


@dataclass
class Setup:
    cache: Path
    stage: Path  # on its own tmpfs: staging copies, so it takes long enough to be hit
    proxy: FaultProxy
    throttle: Rule
    image: BuiltImage
    tag: str
    rng: random.Random
    sif_digests: set[str] = field(default_factory=set)

    def slow(self, on: bool) -> None:
        self.throttle.rate = SLOW if on else FAST
        self.throttle.next_at = 0.0


@dataclass
class Round:
    phase: str
    engine: str
    delay: float
    killed: bool
    tmp_after_kill: int = 0
    tmp_after_next_run: int = 0
    tmp_entries_after_next_run: int = 0


@pytest.fixture(scope="module")
def crash_image(
    registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, BuiltImage]:
    store = BlobStore(tmp_path_factory.mktemp("crash-src"))
    repo = f"wl-crash-{uuid.uuid4().hex[:8]}/img"
    return repo, push_random_image(registry.url, store, repo, [12 * MiB, 12 * MiB], seed=31)


@pytest.fixture
def setup(
    crash_image: tuple[str, BuiltImage], registry: RunningRegistry, small_tmpfs: Callable[[str, str], Path]
) -> Iterator[Setup]:
    seed = int(os.environ.get("WFEXS_LIKE_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"crash seed: {seed} (replay with WFEXS_LIKE_CRASH_SEED={seed})")
    repo, image = crash_image
    stage_fs = small_tmpfs("stage-fs", "256m")
    proxy = FaultProxy(registry.url)
    try:
        rule = proxy.throttle(SLOW)
        yield Setup(
            cache=stage_fs.parent / "cache",
            stage=stage_fs / "containers",
            proxy=proxy,
            throttle=rule,
            image=image,
            tag=f"{proxy.host}/{repo}:1",
            rng=random.Random(seed),
        )
    finally:
        proxy.stop()


# -- running and killing ----------------------------------------------------------------------------


def wfexs(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(WFEXS_LIKE), *args], capture_output=True, text=True, timeout=600, check=False)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def materialize_args(s: Setup, engine: str, *extra: str) -> list[str]:
    return ["materialize", "-q", "--engine", engine, "--stage-dir", str(s.stage / engine),
            "--cache-dir", str(s.cache), *extra, s.tag]  # fmt: skip


def trigger(s: Setup, phase: str, engine: str) -> Callable[[], bool]:
    """A test for "this phase has begun" that a poll loop can call every millisecond.

    Only names that were not there before the run count: a leftover of an
    earlier kill must not fire it.
    """
    tmp = s.cache / "tmp"
    blobs = s.cache / "blobs" / "sha256"
    stage = s.stage / engine
    layers = {d.digest.split(":")[1] for d in s.image.manifest.layers}

    def listing(d: Path) -> set[str]:
        try:
            return set(os.listdir(d))
        except OSError:
            return set()

    old_tmp, old_stage = listing(tmp), listing(stage)
    if phase == "download":
        return lambda: any(n.endswith(".partial") for n in listing(tmp) - old_tmp)
    if phase == "publish":
        return lambda: layers <= listing(blobs)
    if phase == "staging":  # the first new entry, whatever its name (a temp one, or not, if a bug)
        return lambda: bool(listing(stage) - old_stage)
    return lambda: any(n.startswith("sif-") for n in listing(tmp) - old_tmp)


def run_and_kill(s: Setup, phase: str, engine: str, delay: float) -> bool:
    """Start materialize, wait for ``phase`` to begin, SIGKILL after ``delay`` s; False if it ended first."""
    begun = trigger(s, phase, engine)
    proc = subprocess.Popen(
        [str(WFEXS_LIKE), *materialize_args(s, engine)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    try:
        while not begun():
            if proc.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"phase {phase} never began"
            time.sleep(0.001)
        time.sleep(delay)
        if proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGKILL)
        return True
    finally:
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err


def survivors(cache: Path) -> list[str]:
    """Processes (a ``mksquashfs``...) still working on this cache once the run that started them is dead."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(cache) in cmd and int(pid) != os.getpid():
            found.append(f"{pid}: {cmd.strip()}")
    return found


def survivors_after(cache: Path, grace: float = 5.0) -> list[str]:
    """``survivors`` once a child that follows its parent's death (PR_SET_PDEATHSIG) had time to
    go: one busy in disk I/O on a loaded machine can take well over 0.1 s to be reaped."""
    deadline = time.monotonic() + grace
    while (left := survivors(cache)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def kill_survivors(cache: Path) -> None:
    for line in survivors(cache):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)


# -- what must hold after a kill --------------------------------------------------------------------


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def stage_temps(s: Setup) -> dict[str, int]:
    """Temp entries (a dot name) left in the stage dirs: litter in the user's workflow directory."""
    return {
        f"{d.name}/{p.name}": tree_bytes(p) if p.is_dir() else p.stat().st_size
        for d in (sorted(s.stage.iterdir()) if s.stage.is_dir() else [])
        for p in sorted(d.iterdir())
        if p.name.startswith(".")
    }


def tmp_listing(tmp: Path) -> dict[str, int]:
    return {p.name: tree_bytes(p) if p.is_dir() else p.stat().st_size for p in sorted(tmp.iterdir())}


def assert_layout_complete(layout: Path) -> None:
    assert (layout / "index.json").is_file(), f"{layout} is under its final name without index.json"
    json.loads((layout / "index.json").read_text())
    for blob in (layout / "blobs" / "sha256").iterdir():
        assert sha256_file(blob) == "sha256:" + blob.name, f"{blob} is incomplete or wrong"


def assert_nothing_partial_published(s: Setup) -> None:
    """Every final name, in the cache and in the stage dirs, holds complete and right bytes."""
    for blob in (s.cache / "blobs" / "sha256").iterdir():
        assert sha256_file(blob) == "sha256:" + blob.name, f"cached blob {blob} is incomplete or wrong"
    snapshots = s.cache / "snapshots"
    for snap in snapshots.iterdir() if snapshots.is_dir() else ():
        if snap.name.startswith(".") or snap.name.endswith("_meta.json"):
            continue
        if snap.is_dir():
            assert_layout_complete(snap)
        else:
            assert sha256_file(snap).split(":")[1] == snap.name.split("-")[-1], f"{snap} is incomplete"
    for engine_dir in s.stage.iterdir() if s.stage.is_dir() else ():
        for staged in engine_dir.iterdir():
            if staged.name.startswith("."):
                continue  # a temp name: allowed to be incomplete, never read
            if staged.name.endswith("_meta.json"):
                json.loads(staged.read_text())
            elif staged.is_dir():
                assert_layout_complete(staged)
            else:  # a SIF: the builder is reproducible, so every complete one has the same digest
                s.sif_digests.add(sha256_file(staged))
                assert len(s.sif_digests) == 1, f"{staged} is incomplete or wrong: {s.sif_digests}"


def next_run_succeeds(s: Setup, engine: str) -> None:
    records = s.stage.parent / "records.yaml"
    out = wfexs(*materialize_args(s, engine, "-o", str(records)))
    assert out.returncode == 0, out.stderr
    (record,) = read_containers_file(records)
    assert record.fingerprint.endswith("@" + s.image.digest), record.fingerprint
    assert_nothing_partial_published(s)
    out = wfexs("cache", "verify", "--full", "--cache-dir", str(s.cache))
    assert out.returncode == 0, out.stdout + out.stderr


def forget_image(s: Setup) -> None:
    """So the next round downloads (or builds) again: the entries and the blobs only they used go."""
    if not (s.cache / "tags").is_dir():
        return  # the first round: nothing cached yet
    out = wfexs("cache", "rm", "--cache-dir", str(s.cache), s.tag)
    assert out.returncode == 0, out.stdout + out.stderr


def test_sigkill_at_random_moments_never_breaks_the_cache(
    setup: Setup, tries: Callable[[int, int], int]
) -> None:
    s = setup
    image_bytes = sum(d.size for d in s.image.manifest.layers)
    # The most a cycle of kills (one per phase) may leave in tmp/ between two sweeps: partials of every
    # layer are resumed by the next run, so one SIF build (its tree, squashfs and SIF) and small temps.
    bound = 3 * image_bytes + MiB
    rounds: list[Round] = []
    orphans: list[str] = []
    for n in range(tries(8, 30)):
        phase = PHASES[n % len(PHASES)]
        engine = "singularity" if phase == "sif-build" or (phase == "staging" and n % 8 >= 4) else "docker"
        if phase in ("download", "publish", "sif-build"):
            forget_image(s)
        else:  # staging: the image is cached, the run only stages (copies: the stage dir is a tmpfs)
            shutil.rmtree(s.stage / engine, ignore_errors=True)
        delay = {
            "download": lambda: s.rng.uniform(0.0, 2.5),
            "publish": lambda: s.rng.uniform(0.0, 0.02),
            "staging": lambda: s.rng.uniform(0.0, 0.02),
            # merging the layers into the packer, squashing, writing the SIF: about 1 s for this image
            # since the build is streamed, so a later kill would mostly land after it had ended
            "sif-build": lambda: s.rng.uniform(0.0, 0.8),
        }[phase]()
        s.slow(phase == "download")
        killed = run_and_kill(s, phase, engine, delay)
        s.slow(False)
        left = survivors_after(s.cache)
        if left:
            orphans += [f"round {n} ({phase}): {x}" for x in left]
            kill_survivors(s.cache)
        r = Round(phase, engine, delay, killed, tmp_after_kill=tree_bytes(s.cache / "tmp"))
        print(f"round {n} after the kill, tmp/: {tmp_listing(s.cache / 'tmp')}")
        assert_nothing_partial_published(s)
        next_run_succeeds(s, engine)
        r.tmp_after_next_run = tree_bytes(s.cache / "tmp")
        r.tmp_entries_after_next_run = len(os.listdir(s.cache / "tmp"))
        print(f"round {n} stage leftovers: {stage_temps(s)}")
        rounds.append(r)
        print(f"round {n}: {r}")
        assert r.tmp_after_next_run <= bound, f"tmp/ grew to {r.tmp_after_next_run} bytes: {rounds}"
        if phase == PHASES[-1]:  # once per cycle, so leftovers may pile up between two sweeps
            sweep(s)

    assert not orphans, "children outlived the killed materialize:\n" + "\n".join(orphans)
    for phase in PHASES:
        assert any(r.killed for r in rounds if r.phase == phase), f"no kill landed during {phase}: {rounds}"
    sweep(s)
    out = wfexs("cache", "verify", "--full", "--cache-dir", str(s.cache))
    assert out.returncode == 0, out.stdout + out.stderr


def sweep(s: Setup) -> None:
    """``cache gc`` removes every leftover of the killed runs (nobody is running: nothing is spared)."""
    out = wfexs("cache", "gc", "--min-age", "0s", "--cache-dir", str(s.cache))
    assert out.returncode == 0, out.stdout + out.stderr
    assert tmp_listing(s.cache / "tmp") == {}, "cache gc left leftovers of dead processes"


def _tracee(strace_pid: int) -> int | None:
    """The command ``strace`` runs (its first child), once it has started."""
    try:
        children = Path(f"/proc/{strace_pid}/task/{strace_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


@pytest.mark.parametrize("engine", ["docker", "singularity"])
def test_a_kill_mid_staging_leaves_no_litter_once_the_next_run_is_done(
    engine: str,
    crash_image: tuple[str, BuiltImage],
    registry: RunningRegistry,
    small_tmpfs: Callable[[str, str], Path],
    tmp_path: Path,
) -> None:
    """A copy into the stage dir (another filesystem) is held still by ``strace`` and killed there: its
    temp (a tree, or a half-copied SIF) is in the user's workflow dir, and the next run must remove it."""
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed; run scripts/setup-host.sh (apt-get install strace)")
    repo, _ = crash_image
    cache, stage = tmp_path / "cache", small_tmpfs("stage-fs", "256m") / engine
    common = ["materialize", "-q", "--engine", engine, "--cache-dir", str(cache)]
    tag = f"{registry.host}/{repo}:1"
    out = wfexs(*common, "--stage-dir", str(tmp_path / "warm"), tag)  # cached: the next run only stages
    assert out.returncode == 0, out.stderr
    hold = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=copy_file_range",
            "-e", "inject=copy_file_range:delay_enter=5000000"]  # fmt: skip
    proc = subprocess.Popen([*hold, str(WFEXS_LIKE), *common, "--stage-dir", str(stage), tag])
    try:
        deadline = time.monotonic() + 60
        while not (stage.is_dir() and any(n.startswith(".") for n in os.listdir(stage))):
            assert proc.poll() is None and time.monotonic() < deadline, "staging never began"
            time.sleep(0.005)
        pid = _tracee(proc.pid)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    litter = [n for n in os.listdir(stage) if n.startswith(".")]
    assert litter, "the kill landed after staging: this test proves nothing"

    out = wfexs(*common, "--stage-dir", str(stage), tag)
    assert out.returncode == 0, out.stderr
    assert [n for n in os.listdir(stage) if n.startswith(".")] == [], "the killed run's temps are still there"


#: How long a dead run's work dir must sit before the next run may take it for abandoned (the
#: proposed ``cache.garbage.WORK_DIR_GRACE``: a live owner claims its dir, this only covers ``mkdtemp``).
SWEEP_GRACE = 10.0


def test_the_next_run_sweeps_what_a_killed_sif_build_left(
    crash_image: tuple[str, BuiltImage], registry: RunningRegistry, tmp_path: Path
) -> None:
    """Issue 13 item 5: killed SIF builds left 1.08 GB of ``tmp/sif-*`` that no later run removed. Here
    the next run comes a little later; ``cache gc`` must not be needed for that."""
    repo, _ = crash_image
    cache = tmp_path / "cache"
    common = ["materialize", "-q", "--engine", "singularity", "--cache-dir", str(cache)]
    tag = f"{registry.host}/{repo}:1"
    out = wfexs("materialize", "-q", "--cache-dir", str(cache), "--stage-dir", str(tmp_path / "layouts"), tag)
    assert out.returncode == 0, out.stderr  # the blobs are cached: the killed run goes straight to the build
    proc = subprocess.Popen([str(WFEXS_LIKE), *common, "--stage-dir", str(tmp_path / "sifs"), tag])
    try:
        deadline = time.monotonic() + 60
        # Kill once the packer writes its squashfs: past the build's first writes, and early
        # enough on any machine (a fixed delay would outlast a fast build).
        while not any((cache / "tmp").glob("sif-*/sif-build-*/rootfs.squashfs")):
            assert proc.poll() is None and time.monotonic() < deadline, "the SIF build never wrote"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not survivors_after(cache), "the packer outlived the killed materialize"
    dead = {n for n in os.listdir(cache / "tmp") if (cache / "tmp" / n).is_dir()}
    assert any(n.startswith("sif-") for n in dead), "the kill left no build dir: this test proves nothing"
    time.sleep(SWEEP_GRACE + 2)

    out = wfexs(*common, "--stage-dir", str(tmp_path / "sifs"), tag)
    assert out.returncode == 0, out.stderr
    assert dead.isdisjoint(os.listdir(cache / "tmp")), f"left by the dead run: {sorted(dead)}"

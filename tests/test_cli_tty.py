"""Progress on a real terminal: bars and the summary appear under tmux, and not with -q or a pipe.

The terminal is a real one: a tmux pane (a pseudo-terminal, so ``isatty()``
is true, and rich draws with cursor movements the pane interprets), polled
with ``capture-pane`` while the pull runs. The pull goes through a relay that
trickles the registry's bytes at a fixed rate, so there is a window of a few
seconds in which the bars are on screen; nothing here asserts a duration.

Two programs are exercised: a small driver that installs the CLI's
reporter and pulls through ``RegistryClient`` with a progress callback (the
renderer end to end, independent of any one command), and the installed
``wfexs-like materialize`` itself.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.imagegen import build_image, busybox_base_layer
from tests.support.layers import busybox_bytes, chardev, directory, file, image_config, write_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from tests.support.storeimage import store_image
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.manifest import Manifest, parse_manifest_or_index

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("wfexs-like")
#: Bytes per second the relay lets through: ~3 MB of layers then take a couple of seconds.
RATE = 1_500_000
LAYER_BYTES = 1_500_000
#: What rich draws a bar with; plain output never contains it.
BAR = "━"
ESC = "\x1b"
#: Any SGR sequence that sets a colour (foreground/background, 8/16/256/truecolour).
COLOUR_SGR = re.compile(r"\x1b\[[0-9;]*(?:(?<=[\[;])(?:3[0-8]|4[0-8]|9[0-7]|10[0-7]))[0-9;]*m")
SUMMARY_HEADER = re.compile(r"tag\s+digest\s+size\s+result\s+time")
PLAIN_HEADER = re.compile(r"TAG\s+DIGEST\s+SIZE\s+RESULT\s+TIME")

DRIVER = r'''
"""Install the CLI's reporter and pull tags through RegistryClient, as materialize will."""
import argparse
import time
from pathlib import Path

from wfexs_like import progress
from wfexs_like.cli._common import global_options, setup_logging
from wfexs_like.cli.render import reporter_for
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.sif_build import build_sif
from wfexs_like.images.store import StoreImage
from wfexs_like.registry.client import RegistryClient

p = argparse.ArgumentParser(parents=[global_options()])
p.set_defaults(verbose=0, quiet=False, progress="auto", debug=False)
p.add_argument("--store", type=Path, required=True)
p.add_argument("--sif-dir", type=Path)
p.add_argument("tags", nargs="+")
args = p.parse_args()
setup_logging(args)
reporter = reporter_for(args)
store = BlobStore(args.store)
try:
    with progress.reporting(reporter):
        for tag in args.tags:
            t0 = time.monotonic()
            registry, _, rest = tag.partition("/")
            repository, _, reference = rest.rpartition(":")
            reporter.begin(tag)
            reporter.step(tag, "resolving")

            def advance(ev, tag=tag):
                progress.current().advance(tag, ev.digest, ev.done, ev.total)

            with RegistryClient(progress=advance, max_workers=2) as client:
                result = client.pull(registry, repository, reference, store)
            size = sum(d.size for d in (result.manifest.config, *result.manifest.layers))
            outcome = "fetched"
            if args.sif_dir:
                args.sif_dir.mkdir(parents=True, exist_ok=True)
                dest = args.sif_dir / f"{repository.replace('/', '_')}.sif"
                image = StoreImage(store, result.manifest_digest)
                build_sif(image, dest, tmp_dir=args.sif_dir / "tmp", source=tag, label=tag)
                outcome = "built"
            reporter.finish(
                progress.ImageSummary(
                    tag, outcome, result.manifest_digest, size, time.monotonic() - t0
                )
            )
finally:
    reporter.close()
'''


# -- a relay that trickles bytes ------------------------------------------------------------------


class TrickleRelay:
    """A TCP relay to ``upstream`` that passes the server's bytes at ``rate`` bytes per second.

    The registry on loopback answers a few MB in milliseconds, far too fast
    for a bar to be drawn; this stretches a pull to a few seconds without
    touching the protocol (every byte and header passes through unchanged).
    """

    def __init__(self, upstream: str, rate: int) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._conns: list[socket.socket] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.rate), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, rate: int | None) -> None:
        chunk = 16 << 10
        try:
            while data := src.recv(chunk):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        for s in self._conns:
            with contextlib.suppress(OSError):
                s.close()


# -- a terminal -----------------------------------------------------------------------------------


@dataclass
class Run:
    snapshots: list[str]  # every distinct screen seen while the command ran, with attributes
    final: str  # the screen once it exited (plain text)
    exit_code: int

    def seen(self) -> str:
        return "\n".join(self.snapshots)


def run_in_tty(tmp: Path, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
    """Run ``argv`` in a fresh tmux server's pane (140x50) and watch its screen until it exits."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed; run scripts/setup-host.sh")
    sock = Path(tempfile.gettempdir()) / f"wfexs-tty-{uuid.uuid4().hex[:10]}.sock"  # short: a socket path
    script = tmp / f"run-{uuid.uuid4().hex[:6]}.sh"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
    script.write_text(
        "#!/bin/sh\n"
        f"cd {shlex.quote(str(tmp))}\n"
        "unset NO_COLOR FORCE_COLOR\n"
        f"{exports}"
        f"{shlex.join(argv)}\n"
        'echo "__EXIT__ $?"\n'
        "exec sleep 600\n"
    )
    tmux = ["tmux", "-S", str(sock), "-f", "/dev/null"]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "140", "-y", "50", "-s", "t", "sh", str(script)],
        check=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    snapshots: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        while True:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p", "-e", "-t", "t"], capture_output=True, text=True, check=True
            ).stdout
            if not snapshots or snapshots[-1] != screen:
                snapshots.append(screen)
            done = re.search(r"__EXIT__ (\d+)", screen)
            if done:
                final = subprocess.run(
                    [*tmux, "capture-pane", "-p", "-J", "-S", "-", "-t", "t"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                return Run(snapshots, final, int(done.group(1)))
            if time.monotonic() > deadline:
                pytest.fail(f"{argv} did not finish in {timeout} s; screen:\n{screen}")
            time.sleep(0.05)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
        sock.unlink(missing_ok=True)


# -- fixtures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    repo: str
    digest: str


def _push_random_image(registry: RunningRegistry, store: BlobStore, repo: str, seed: int) -> Pushed:
    rnd = random.Random(seed)
    layers = [
        busybox_base_layer(),
        {"data/": None, "data/a.bin": rnd.randbytes(LAYER_BYTES)},
        {"data/b.bin": rnd.randbytes(LAYER_BYTES)},
    ]
    img = build_image(store, layers)
    return Pushed(repo, push_image(registry.url, repo, "1", store, img.manifest))


@pytest.fixture(scope="module")
def images(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pushed]:
    """Two images of ~3 MB of incompressible layers, and one whose layer holds 30 device nodes."""
    store = BlobStore(tmp_path_factory.mktemp("tty-src"))
    pushed = {
        "big": _push_random_image(registry, store, "tty/big", 1),
        "other": _push_random_image(registry, store, "tty/other", 2),
    }
    d = tmp_path_factory.mktemp("tty-layers")
    members = [directory("bin/"), file("bin/busybox", busybox_bytes(), mode=0o755), directory("dev/")]
    members += [chardev(f"dev/tty{i}", 4, i) for i in range(30)]
    image = store_image(store, [write_layer(d / "devs.tar.gz", members)], image_config())
    manifest = parse_manifest_or_index(store.path(image.digest()).read_bytes())
    assert isinstance(manifest, Manifest)
    pushed["devices"] = Pushed("tty/devices", push_image(registry.url, "tty/devices", "1", store, manifest))
    return pushed


@pytest.fixture
def relay(registry: RunningRegistry) -> Iterator[TrickleRelay]:
    r = TrickleRelay(registry.host, RATE)
    yield r
    r.stop()


@pytest.fixture
def driver(tmp_path: Path) -> Path:
    path = tmp_path / "driver.py"
    path.write_text(DRIVER)
    return path


def _tag(relay: TrickleRelay, pushed: Pushed) -> str:
    return f"{relay.host}/{pushed.repo}:1"


def _plain(screen: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)


def _assert_bars(run: Run, tag: str) -> None:
    seen = _plain(run.seen())
    bar_lines = [line for line in seen.splitlines() if BAR in line]
    assert any(tag in line and "MB" in line for line in bar_lines), f"no byte bar for {tag}:\n{seen}"
    assert any(line.lstrip().startswith("total (") for line in bar_lines), f"no overall bar:\n{seen}"


def _assert_summary(screen: str, tag: str, outcome: str) -> None:
    assert SUMMARY_HEADER.search(screen), f"no summary table:\n{screen}"
    row = [line for line in screen.splitlines() if tag in line and outcome in line]
    assert row, f"no summary row for {tag} ({outcome}):\n{screen}"
    assert re.search(r"sha256:[0-9a-f]{12}\b", row[0]) and " MB" in row[0], row[0]


# -- the renderer, driven by a real pull ----------------------------------------------------------


def test_bars_then_summary_on_a_terminal(
    tmp_path: Path, driver: Path, relay: TrickleRelay, images: dict[str, Pushed]
) -> None:
    big, other = _tag(relay, images["big"]), _tag(relay, images["other"])
    run = run_in_tty(tmp_path, [sys.executable, str(driver), "--store", "store", big, other])
    assert run.exit_code == 0, run.final
    _assert_bars(run, big)
    _assert_bars(run, other)
    assert any("total (1/2 images)" in s for s in map(_plain, run.snapshots)), run.seen()
    # bars are transient: what stays is the summary, one row per image in the order given
    assert BAR not in run.final
    _assert_summary(run.final, big, "fetched")
    _assert_summary(run.final, other, "fetched")
    assert run.final.index(big) < run.final.index(other)


def test_quiet_on_a_terminal_prints_nothing(
    tmp_path: Path, driver: Path, relay: TrickleRelay, images: dict[str, Pushed]
) -> None:
    tag = _tag(relay, images["big"])
    run = run_in_tty(tmp_path, [sys.executable, str(driver), "-q", "--store", "store", tag])
    assert run.exit_code == 0, run.final
    assert (tmp_path / "store").is_dir()
    seen = _plain(run.seen())
    assert BAR not in seen and "total (" not in seen and not SUMMARY_HEADER.search(seen), seen
    assert tag not in seen.replace(str(driver), ""), seen


def test_piped_stderr_gets_plain_lines_without_escapes(
    tmp_path: Path, driver: Path, relay: TrickleRelay, images: dict[str, Pushed]
) -> None:
    tag = _tag(relay, images["big"])
    cmd = shlex.join([sys.executable, str(driver), "--store", "store", tag])
    run = run_in_tty(tmp_path, ["bash", "-o", "pipefail", "-c", f"{cmd} 2>&1 | cat > err.txt"])
    assert run.exit_code == 0, run.final
    err = (tmp_path / "err.txt").read_text()
    assert ESC not in err and BAR not in err, repr(err)
    lines = err.splitlines()
    assert f"{tag}: started" in lines and f"{tag}: resolving" in lines, err
    assert any(
        re.fullmatch(rf"{re.escape(tag)}: fetched sha256:[0-9a-f]{{12}} \(.* MB\) in .* s", x) for x in lines
    )
    assert any(PLAIN_HEADER.match(x) for x in lines), err


def test_no_color_on_a_terminal_draws_bars_without_colour(
    tmp_path: Path, driver: Path, relay: TrickleRelay, images: dict[str, Pushed]
) -> None:
    tag = _tag(relay, images["big"])
    argv = [sys.executable, str(driver), "--store", "store", tag]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    coloured = run_in_tty(tmp_path / "a", argv)
    assert coloured.exit_code == 0
    _assert_bars(coloured, tag)
    assert COLOUR_SGR.search(coloured.seen()), (
        "the control run shows no colour: the check below proves nothing"
    )
    plain = run_in_tty(tmp_path / "b", argv, env={"NO_COLOR": "1"})
    assert plain.exit_code == 0
    _assert_bars(plain, tag)
    assert not COLOUR_SGR.search(plain.seen()), plain.seen()


def test_sif_stages_and_folded_device_warnings_on_a_terminal(
    tmp_path: Path, driver: Path, relay: TrickleRelay, images: dict[str, Pushed]
) -> None:
    tag = _tag(relay, images["devices"])
    run = run_in_tty(tmp_path, [sys.executable, str(driver), "-v", "--store", "s", "--sif-dir", "sif", tag])
    assert run.exit_code == 0, run.final
    text = run.final
    for stage in ("reading layers", "squashing", "writing SIF"):
        assert f"{tag}: building SIF: {stage}" in text, text
    warnings = [line for line in text.splitlines() if "skipping device node" in line]
    assert len(warnings) == 2, text  # the first at once, then the count at the end
    assert warnings[1].endswith("(29 more like this)"), warnings
    _assert_summary(text, tag, "built")
    assert (tmp_path / "sif" / "tty_devices.sif").stat().st_size > 0


# -- the installed command ------------------------------------------------------------------------
# These need `materialize` to install reporter_for(args) and report begin/advance/finish.


def _materialize(tag: str, *extra: str) -> list[str]:
    return [
        str(CLI),
        "materialize",
        *extra,
        "--engine",
        "docker",
        "--stage-dir",
        "stage",
        "--cache-dir",
        "cache",
        "-o",
        "c.yaml",
        tag,
    ]


def test_materialize_draws_bars_and_a_summary_on_a_terminal(
    tmp_path: Path, relay: TrickleRelay, images: dict[str, Pushed]
) -> None:
    tag = _tag(relay, images["big"])
    run = run_in_tty(tmp_path, _materialize(tag))
    assert run.exit_code == 0, run.final
    _assert_bars(run, tag)
    _assert_summary(run.final, tag, "fetched")
    assert images["big"].digest in (tmp_path / "c.yaml").read_text()


def test_materialize_quiet_on_a_terminal_prints_no_bars_and_no_summary(
    tmp_path: Path, relay: TrickleRelay, images: dict[str, Pushed]
) -> None:
    tag = _tag(relay, images["big"])
    run = run_in_tty(tmp_path, _materialize(tag, "--quiet"))
    assert run.exit_code == 0, run.final
    seen = _plain(run.seen())
    assert BAR not in seen and "total (" not in seen and not SUMMARY_HEADER.search(seen), seen
    assert images["big"].digest in (tmp_path / "c.yaml").read_text()


def test_materialize_with_stderr_piped_prints_plain_lines(
    tmp_path: Path, relay: TrickleRelay, images: dict[str, Pushed]
) -> None:
    tag = _tag(relay, images["big"])
    run = run_in_tty(
        tmp_path, ["bash", "-o", "pipefail", "-c", f"{shlex.join(_materialize(tag))} 2>&1 | cat > err.txt"]
    )
    assert run.exit_code == 0, run.final
    err = (tmp_path / "err.txt").read_text()
    assert ESC not in err and BAR not in err, repr(err)
    assert f"{tag}: started" in err.splitlines(), err
    assert any(PLAIN_HEADER.match(x) for x in err.splitlines()), err
    assert any(x.startswith(tag) and "fetched" in x for x in err.splitlines()[1:]), err

"""The command line's progress reporter, driven directly: plain lines, bars, folding, quiet, NO_COLOR.

The stream the plain reporter writes to is an ``io.StringIO`` and the clock
a counter the test moves: both are inputs of our own code, not stand-ins for
a real component. Bars are rendered by the real rich onto a console forced
into terminal mode; the TTY end to end (a real pseudo-terminal) is in
``test_cli_tty.py``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.layers import chardev, directory, file, image_config, write_layer
from tests.support.storeimage import store_image
from wfexs_like import progress
from wfexs_like.cli.render import (
    BarReporter,
    PlainReporter,
    SilentReporter,
    human_bytes,
    plain_table,
    reporter_for,
    short_digest,
)
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.rootfs import apply_layers
from wfexs_like.progress import ImageSummary

COLOUR_SGR = re.compile(r"\x1b\[[0-9;]*(?:(?<=[\[;])(?:3[0-8]|4[0-8]|9[0-7]|10[0-7]))[0-9;]*m")
D1 = "sha256:" + "ab" * 32
D2 = "sha256:" + "cd" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def args(**kw: object) -> argparse.Namespace:
    base = {"verbose": 0, "quiet": False, "progress": "auto", "debug": False}
    return argparse.Namespace(**{**base, **kw})


def plain(**kw: object) -> tuple[PlainReporter, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return PlainReporter(out, clock=clock, **kw), out, clock  # type: ignore[arg-type]


# -- plain lines ----------------------------------------------------------------------------------


def test_plain_lines_start_step_bytes_finish_and_a_summary() -> None:
    r, out, clock = plain()
    r.begin("busybox:1.36")
    r.step("busybox:1.36", "resolving")
    r.advance("busybox:1.36", D1, 0, 30_000_000)
    r.advance("busybox:1.36", D2, 0, 10_100_000)
    clock.now += 2.5
    r.advance("busybox:1.36", D1, 12_300_000, 30_000_000)
    r.finish(ImageSummary("busybox:1.36", "fetched", D1, 40_100_000, 3.21))
    r.close()
    assert out.getvalue().splitlines() == [
        "busybox:1.36: started",
        "busybox:1.36: resolving",
        "busybox:1.36: 12.3 MB / 40.1 MB",
        f"busybox:1.36: fetched {short_digest(D1)} (40.1 MB) in 3.2 s",
        "",
        "TAG           DIGEST                  SIZE  RESULT    TIME",
        "busybox:1.36  sha256:abababababab  40.1 MB  fetched  3.2 s",
    ]


def test_byte_lines_are_throttled_per_image() -> None:
    r, out, clock = plain(interval=2.0)
    r.begin("a")
    r.begin("b")
    for _ in range(40):  # 40 events over 10 s: a line at most every 2 s for each image
        clock.now += 0.25
        r.advance("a", D1, int(clock.now), 1000)
        r.advance("b", D1, int(clock.now), 1000)
    bytes_lines = [x for x in out.getvalue().splitlines() if " / " in x]
    for tag in ("a", "b"):
        mine = [x for x in bytes_lines if x.startswith(f"{tag}: ")]
        assert len(mine) == 5, mine
    r.close()


def test_an_image_total_is_the_sum_of_the_blob_totals_seen_and_resumes_count_once() -> None:
    r, _, _ = plain()
    r.begin("t")
    r.advance("t", D1, 0, 100)
    r.advance("t", D1, 60, 100)
    r.advance("t", D2, 10, 50)
    r.advance("t", D1, 100, 100)  # a resumed blob restarts from its offset, not from zero
    img = r.images["t"]
    assert (img.done, img.total) == (110, 150)
    r.advance("t", "sha256:unknown-size", 7, None)
    assert (img.done, img.total) == (117, 157)
    r.close()


def test_summary_rows_follow_the_order_images_began_not_ended() -> None:
    r, out, _ = plain(show_progress=False)
    for tag in ("first", "second", "third"):
        r.begin(tag)
    r.finish(ImageSummary("third", "cached", D2, 1_000, 0.0))
    r.finish(ImageSummary("first", "failed", None, None, 1.5, reason="manifest unknown"))
    r.finish(ImageSummary("second", "built", D1, 2_500_000_000, 75.0))
    r.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == ""
    assert [x.split()[0] for x in lines[2:]] == ["first", "second", "third"]
    assert lines[2].split() == ["first", "-", "-", "failed", "1.5", "s"]
    assert lines[3].split() == ["second", "sha256:abababababab", "2.5", "GB", "built", "1m15s"]
    # aligned: tag, digest and result start, size and time end, at the same offset on every line
    spans = [[m.span() for m in re.finditer(r"\S+(?: \S+)*", line)] for line in lines[1:]]
    assert all(len(cells) == 5 for cells in spans), lines
    edges = {(c[0][0], c[1][0], c[2][1], c[3][0], c[4][1]) for c in spans}
    assert len(edges) == 1, lines


def test_no_summary_when_no_image_was_reported() -> None:
    r, out, _ = plain()
    r.step("deploy", "loading")  # a command may report steps and print its own table
    r.close()
    assert out.getvalue() == "deploy: loading\n"


def test_progress_none_keeps_warnings_and_summary_only() -> None:
    r, out, _ = plain(show_progress=False)
    r.begin("t")
    r.step("t", "resolving")
    r.advance("t", D1, 5, 10)
    r.warn("disk nearly full")
    r.finish(ImageSummary("t", "fetched", D1, 10, 0.1))
    r.close()
    assert out.getvalue().splitlines()[0] == "warning: disk nearly full"
    assert "resolving" not in out.getvalue() and "started" not in out.getvalue()
    assert PlainHeader.search(out.getvalue())


PlainHeader = re.compile(r"^TAG\s+DIGEST\s+SIZE\s+RESULT\s+TIME$", re.M)


def test_plain_output_never_carries_escape_codes_even_from_a_hostile_tag() -> None:
    r, out, _ = plain()
    evil = "evil\x1b[2J\x1b]0;pwned\x07:1\r"
    r.begin(evil)
    r.step(evil, "resolving\x9b31m")
    r.warn("layer says \x1b[31mred\x1b[0m")
    r.finish(ImageSummary(evil, "failed", reason="no\x1b[1m"))
    r.close()
    text = out.getvalue()
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", text), repr(text)
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07:1\\r: started" in text


def test_human_units() -> None:
    assert [human_bytes(n) for n in (0, 999, 1000, 12_345_678, 40_100_000_000, None)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "12.3 MB",
        "40.1 GB",
        "?",
    ]
    assert short_digest(D1) == "sha256:abababababab" and short_digest(None) == "-"
    assert plain_table([]) == ["TAG  DIGEST  SIZE  RESULT  TIME"]


# -- folding --------------------------------------------------------------------------------------


def test_warnings_sharing_a_key_are_folded_and_counted_at_close() -> None:
    r, out, _ = plain()
    for i in range(5):
        r.warn(f"layer x: skipping device node 'dev/tty{i}'", key="device-node")
    r.warn("something else", key="other")
    r.warn("same text")
    r.warn("same text")
    assert out.getvalue().splitlines() == [
        "warning: layer x: skipping device node 'dev/tty0'",
        "warning: something else",
        "warning: same text",
    ]
    r.close()
    assert out.getvalue().splitlines()[3:] == [
        "warning: layer x: skipping device node 'dev/tty0' (4 more like this)",
        "warning: same text (1 more like this)",
    ]


def test_library_log_warnings_are_folded_by_template_for_the_run(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    lib = logging.getLogger("wfexs_like")
    handlers, propagate = list(lib.handlers), lib.propagate
    r = reporter_for(args(progress="plain"), stream=out)
    log = logging.getLogger("wfexs_like.images.rootfs")
    for i in range(3):
        log.warning("layer %s: skipping device node %r", D1, f"dev/tty{i}")
    log.warning("image config names no architecture; assuming %s", "amd64")
    with caplog.at_level(logging.ERROR):
        log.error("a real error: %s", "boom")
    assert [rec.getMessage() for rec in caplog.records] == ["a real error: boom"]  # errors go on as before
    r.close()
    assert out.getvalue().splitlines() == [
        f"warning: layer {D1}: skipping device node 'dev/tty0'",
        "warning: image config names no architecture; assuming amd64",
        f"warning: layer {D1}: skipping device node 'dev/tty0' (2 more like this)",
    ]
    assert lib.handlers == handlers and lib.propagate == propagate
    with caplog.at_level(logging.WARNING):
        log.warning("after the run")
    assert "after the run" not in out.getvalue()
    assert caplog.records[-1].getMessage() == "after the run"


def test_device_nodes_of_a_real_layer_become_one_line_and_a_count(tmp_path: Path) -> None:
    members = [directory("dev/"), file("dev/README", b"x")] + [
        chardev(f"dev/tty{i}", 4, i) for i in range(12)
    ]
    layer = write_layer(tmp_path / "devs.tar.gz", members)
    (lay,) = store_image(BlobStore(tmp_path / "store"), [layer], image_config()).layers()
    out = io.StringIO()
    r = reporter_for(args(progress="plain"), stream=out)
    try:
        apply_layers([lay], tmp_path / "rootfs")
    finally:
        r.close()
    lines = [x for x in out.getvalue().splitlines() if "device node" in x]
    assert len(lines) == 2, out.getvalue()
    assert "'dev/tty0'" in lines[0] and lines[1].endswith("(11 more like this)")


def test_a_second_reporter_for_while_one_is_open_shares_it() -> None:
    out = io.StringIO()
    outer = reporter_for(args(progress="plain"), stream=out)
    try:
        inner = reporter_for(args(progress="plain"), stream=io.StringIO())
        assert not isinstance(inner, PlainReporter)
        inner.begin("t")
        inner.finish(ImageSummary("t", "cached", D1, 5, 0.0))
        logging.getLogger("wfexs_like.x").warning("folded %s", 1)
        inner.close()  # the command's own close: nothing yet, the owner prints at the end
        assert PlainHeader.search(out.getvalue()) is None
        assert out.getvalue().count("folded 1") == 1  # one log handler, not two
    finally:
        outer.close()
    assert PlainHeader.search(out.getvalue())
    again = reporter_for(args(progress="plain"), stream=io.StringIO())
    assert isinstance(again, PlainReporter)
    again.close()


# -- quiet ----------------------------------------------------------------------------------------


def test_quiet_prints_nothing_and_installs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    lib = logging.getLogger("wfexs_like")
    handlers = list(lib.handlers)
    for mode in ("auto", "plain", "none"):
        r = reporter_for(args(quiet=True, progress=mode), stream=out)
        assert isinstance(r, SilentReporter)
        assert lib.handlers == handlers
        r.begin("t")
        r.advance("t", D1, 1, 2)
        r.step("t", "resolving")
        r.warn("w")
        r.finish(ImageSummary("t", "fetched", D1, 2, 0.1))
        r.close()
    assert out.getvalue() == ""


def test_not_a_tty_or_plain_gives_plain_lines_and_never_imports_rich(tmp_path: Path) -> None:
    code = (
        "import argparse, sys\n"
        "from wfexs_like.cli.render import reporter_for, PlainReporter\n"
        "from wfexs_like.progress import ImageSummary\n"
        "for mode in ('auto', 'plain', 'none'):\n"
        "    r = reporter_for(argparse.Namespace(verbose=1, quiet=False, progress=mode, debug=False))\n"
        "    assert isinstance(r, PlainReporter), r\n"
        "    r.begin('t'); r.step('t', 'resolving'); r.warn('w')\n"
        "    r.finish(ImageSummary('t', 'fetched', 'sha256:' + '0' * 64, 5, 0.1)); r.close()\n"
        "assert 'rich' not in sys.modules, 'rich imported without bars'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # progress is never written to stdout
    assert proc.stderr.count("t: resolving") == 2  # auto and plain; none shows no progress
    assert proc.stderr.count("TAG") == 3


def _pty_stream() -> tuple[io.TextIOWrapper, int]:
    """A real terminal (the follower end of a pseudo-terminal) to hand to ``reporter_for``."""
    leader, follower = os.openpty()
    return open(follower, "w", encoding="utf-8", closefd=True), leader


def test_a_terminal_gets_bars_unless_plain_none_or_a_dumb_term(monkeypatch: pytest.MonkeyPatch) -> None:
    stream, leader = _pty_stream()
    try:
        assert stream.isatty()
        monkeypatch.setenv("TERM", "xterm")
        kinds = {}
        for mode in ("auto", "plain", "none"):
            r = reporter_for(args(progress=mode), stream=stream)
            kinds[mode] = type(r)
            r.close()
        assert kinds == {"auto": BarReporter, "plain": PlainReporter, "none": PlainReporter}
        monkeypatch.setenv("TERM", "dumb")
        r = reporter_for(args(), stream=stream)
        assert isinstance(r, PlainReporter)
        r.close()
    finally:
        stream.close()
        os.close(leader)


# -- bars -----------------------------------------------------------------------------------------


def _bar_reporter(monkeypatch: pytest.MonkeyPatch, *, no_color: bool = False, verbose: int = 0):
    from rich.console import Console

    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system="truecolor", highlight=False)
    return BarReporter(console, verbose=verbose), out


def _screen(r: BarReporter, height: int = 40) -> str:
    """What the live display shows on a terminal of ``height`` lines."""
    from rich.console import Console

    r.console.height = height
    c = Console(file=io.StringIO(), width=120, color_system=None)
    with c.capture() as cap:
        for renderable in r.progress.get_renderables():
            c.print(renderable)
    return cap.get()


def test_bars_one_per_image_and_the_overall_last_showing_the_sif_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, _ = _bar_reporter(monkeypatch)
    try:
        r.begin("busybox:1.36")
        r.begin("alpine:3")
        r.step("alpine:3", "resolving")
        assert _screen(r).splitlines()[1].startswith("alpine:3: resolving")
        r.advance("busybox:1.36", D1, 1_000_000, 4_000_000)
        r.advance("alpine:3", D2, 500_000, 1_000_000)
        r.step("busybox:1.36", "building SIF: squashing")
        lines = _screen(r).splitlines()
        assert lines[0].startswith("busybox:1.36: building SIF: squashing") and "1.0/4.0 MB" in lines[0]
        assert lines[1].startswith("alpine:3 ") and "0.5/1.0 MB" in lines[1]  # bytes flow: not resolving
        assert lines[2].startswith("total (0/2 images)") and "1.5/5.0 MB" in lines[2]
        r.finish(ImageSummary("alpine:3", "failed", reason="interrupted"))
        lines = _screen(r).splitlines()
        # a finished image's bar goes; a failed one's missing bytes leave the overall total
        assert len(lines) == 2 and lines[1].startswith("total (1/2 images)") and "1.5/4.5 MB" in lines[1]
    finally:
        r.close()


def test_a_short_terminal_shows_the_busy_bars_and_keeps_the_overall_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, _ = _bar_reporter(monkeypatch)
    try:
        for i in range(10):
            r.begin(f"img{i}")
        r.advance("img7", D1, 10, 100)
        r.advance("img8", D1, 10, 100)
        lines = _screen(r, height=6).splitlines()
        assert len(lines) == 5
        assert [x.split()[0] for x in lines[:4]] == ["img7", "img8", "img0", "img1"]
        assert lines[4].startswith("total (0/10 images) +6 more")
        assert len(_screen(r, height=40).splitlines()) == 11
    finally:
        r.close()


def test_bar_summary_table_and_folded_warnings_at_close(monkeypatch: pytest.MonkeyPatch) -> None:
    r, out = _bar_reporter(monkeypatch)
    r.begin("busybox:1.36")
    for i in range(3):
        r.warn(f"skipping device node {i}", key="dev")
    r.finish(ImageSummary("busybox:1.36", "fetched", D1, 4_000_000, 2.0))
    r.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert re.search(r"tag\s+digest\s+size\s+result\s+time", text), text
    assert re.search(r"busybox:1\.36\s+sha256:abababababab\s+4\.0 MB\s+fetched\s+2\.0 s", text), text
    assert text.count("skipping device node") == 2 and "skipping device node 0 (2 more like this)" in text
    assert COLOUR_SGR.search(out.getvalue())  # the control: without NO_COLOR, rich colours


def test_no_color_bars_and_summary_have_no_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    r, out = _bar_reporter(monkeypatch, no_color=True)
    r.begin("busybox:1.36")
    r.advance("busybox:1.36", D1, 10, 100)
    r.progress.refresh()
    r.warn("a warning")
    r.finish(ImageSummary("busybox:1.36", "failed", reason="x"))
    r.close()
    assert "busybox:1.36" in out.getvalue()
    assert not COLOUR_SGR.search(out.getvalue()), repr(out.getvalue())


def test_verbose_bars_print_each_step_and_finish_above_the_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    for verbose, expect in ((0, False), (1, True)):
        r, out = _bar_reporter(monkeypatch, verbose=verbose)
        r.begin("t")
        r.step("t", "building SIF: writing SIF")
        r.finish(ImageSummary("t", "built", D1, 5, 0.5))
        r.close()
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
        assert ("t: building SIF: writing SIF\n" in text) is expect, text
        assert ("t: built sha256:abababababab (5 B) in 0.5 s" in text) is expect, text


def test_bars_leave_stdout_alone_and_put_stderr_back(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout, stderr = sys.stdout, sys.stderr
    r, _ = _bar_reporter(monkeypatch)
    r.begin("t")
    assert sys.stdout is stdout  # results printed during the run must still reach stdout
    r.close()
    assert sys.stderr is stderr


# -- threads --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "bars"])
def test_events_from_many_threads_add_up(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "plain":
        r: PlainReporter | BarReporter = plain(interval=0.0)[0]
    else:
        r = _bar_reporter(monkeypatch)[0]
    tags = [f"img{i}" for i in range(4)]
    for t in tags:
        r.begin(t)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            tag = tags[n % 4]
            for k in range(1, 301):
                r.advance(tag, f"blob{n}", k * 10, 3000)
                if k % 100 == 0:
                    r.warn(f"w{k}", key="same")
                    r.step(tag, f"step {k}")
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    with progress.reporting(r):
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    for t in tags:
        r.finish(ImageSummary(t, "fetched", D1, 12_000, 1.0))
    r.close()
    assert errors == []
    for t in tags:
        assert (r.images[t].done, r.images[t].total) == (4 * 3000, 4 * 3000)
    assert r.folder.more["same"] == 16 * 3 - 1


# -- stopping long work ---------------------------------------------------------------------------


def test_a_stop_request_interrupts_layer_extraction(tmp_path: Path) -> None:
    members = [directory("d/")] + [file(f"d/f{i}", b"x" * 10) for i in range(50)]
    (lay,) = store_image(
        BlobStore(tmp_path / "store"), [write_layer(tmp_path / "l.tar.gz", members)], image_config()
    ).layers()
    progress.request_cancel()
    try:
        with pytest.raises(progress.Cancelled):
            apply_layers([lay], tmp_path / "rootfs")
    finally:
        progress.reset_cancel()
    assert not (tmp_path / "rootfs" / "d" / "f49").exists()
    apply_layers([lay], tmp_path / "again")  # and once the flag is down, the same layer applies
    assert (tmp_path / "again" / "d" / "f49").read_bytes() == b"x" * 10


def test_sif_build_reports_its_stages_under_the_label(tmp_path: Path) -> None:
    from wfexs_like.images.sif_build import build_sif

    members = [directory("bin/"), file("bin/sh", b"#!x", mode=0o755)]
    image = store_image(
        BlobStore(tmp_path / "store"), [write_layer(tmp_path / "l.tar.gz", members)], image_config()
    )
    r, out, _ = plain()
    with progress.reporting(r):
        build_sif(image, tmp_path / "a.sif", tmp_dir=tmp_path / "tmp", source="docker://x/y:1", label="y:1")
        build_sif(image, tmp_path / "b.sif", tmp_dir=tmp_path / "tmp", source="docker://x/y:1")
    r.close()
    stages = ["reading layers", "squashing", "writing SIF"]
    assert out.getvalue().splitlines() == [f"y:1: building SIF: {s}" for s in stages] + [
        f"docker://x/y:1: building SIF: {s}" for s in stages
    ]
    assert (tmp_path / "a.sif").read_bytes() == (tmp_path / "b.sif").read_bytes()

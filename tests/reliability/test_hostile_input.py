"""Hostile input never gets past the front door (issue 13: items 3, 4 and 8, and hostile image files).

Each failure the issue lists has its reproducing test here, run against the
real command or the real readers:

- item 3: a 560-byte YAML alias bomb, and a 50 MB records file, are refused
  at once (bounded memory, a clear error naming the file), and no error
  message ever takes the ``repr`` of a value read from a file;
- item 4: a local path or a URL is never sent to a registry: the parser
  classifies them, and the command run against a recording proxy makes no
  connection at all;
- item 8: a huge tag, and a tag holding a newline, give a short one-line
  error; Ctrl-C during start-up gives no traceback;
- OCI layouts, docker- and oci-archives, SIFs and layers with path
  traversal, absurd sizes, symlink loops, FIFOs and device nodes are
  refused, and nothing outside the cache is touched.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socketserver
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.imagegen import BuiltImage, build_image
from tests.support.layers import chardev, file, hardlink, symlink, write_layer
from tests.support.storeimage import store_image
from wfexs_like.errors import (
    AbstractWfExSException,
    CacheError,
    IntegrityError,
    InvalidReferenceError,
    ProvenanceError,
    UnsafeArchiveError,
    UnsafeInputError,
    quote,
)
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.docker_archive import DockerArchiveImage, write_docker_archive
from wfexs_like.images.layout import INDEX_FILE, LayoutImage, blob_file, write_oci_layout
from wfexs_like.images.oci_archive import OciArchiveImage, write_oci_archive
from wfexs_like.images.rootfs import apply_layers
from wfexs_like.images.sif import (
    DESCRIPTOR_SIZE,
    SifDataType,
    SifFormatError,
    SifObject,
    read_object,
    read_sif,
    write_sif,
)
from wfexs_like.images.store import StoreImage, write_to_store
from wfexs_like.provenance import (
    RECORDS_MAX_BYTES,
    container_from_dict,
    load_containers,
    read_containers_file,
)
from wfexs_like.references import REFERENCE_LENGTH_MAX, Reference, parse_reference

WFEXS_LIKE = Path(sys.executable).with_name("wfexs-like")


def run(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it."""
    return subprocess.run(
        [str(WFEXS_LIKE), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    """The command's error (``wfexs-like: ...`` and what follows it), and no traceback."""
    assert "Traceback" not in p.stderr, p.stderr
    start = p.stderr.find("wfexs-like: ")
    assert start >= 0, f"exit {p.returncode} without an error line:\n{p.stderr}"
    return p.stderr[start:]


def measured(fn: Callable[[], Any]) -> tuple[BaseException | None, float, int]:
    """(what ``fn`` raised, seconds it took, peak bytes it allocated)."""
    tracemalloc.start()
    started = time.monotonic()
    error: BaseException | None = None
    try:
        fn()
    except BaseException as e:
        error = e
    finally:
        seconds = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, seconds, peak


# =================================================================================================
# Item 3: YAML bombs and huge records files
# =================================================================================================


def alias_bomb(levels: int = 10, width: int = 9, top: str = "containers: *a{last}\n") -> str:
    """The classic: ``levels`` anchors, each a list of ``width`` aliases of the one before."""
    lines = ["a0: &a0 [" + ",".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n" + top.format(last=levels - 1)


BOMBS = {
    # a WfExS-backend stage state (no format key): only its containers are built
    "stage-state": alias_bomb(),
    # our own format
    "ours": "wfexs_like_containers: 1\n" + alias_bomb(top="containers: [*a{last}]\n"),
    # a bare list of records
    "list": "- &a0 ["
    + ",".join(['"lol"'] * 9)
    + "]\n"
    + "".join(f"- &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10)),
    # the bomb in mapping values and keys of one record
    "mapping": "x0: &x0 {"
    + ", ".join(f"k{j}: lol" for j in range(9))
    + "}\n"
    + "".join(
        f"x{i}: &x{i} {{" + ", ".join(f"k{j}: *x{i - 1}" for j in range(9)) + "}\n" for i in range(1, 10)
    )
    + "containers:\n- origTaggedName: busybox\n  type: docker\n  registries: *x9\n",
}


@pytest.mark.parametrize("shape", sorted(BOMBS))
def test_an_alias_bomb_is_refused_at_once_naming_the_file(shape: str, tmp_path: Path) -> None:
    text = BOMBS[shape]
    assert len(text.encode()) < 1200, "a bomb is a small file"
    path = tmp_path / "containers.yaml"
    path.write_text(text)

    error, seconds, peak = measured(lambda: read_containers_file(path))
    assert isinstance(error, ProvenanceError) and isinstance(error, UnsafeInputError), repr(error)
    assert str(path) in str(error) and "expands to more than" in str(error)
    # The issue: MemoryError after 64 s. "Well under a second", and no more memory than a small file:
    # the memory bound is the proof; the time bound (under tracemalloc, on a loaded machine) is loose.
    assert seconds < 5.0, f"took {seconds:.2f} s"
    assert peak < 8 << 20, f"peak {peak} bytes"

    error, _, peak = measured(lambda: load_containers(text))
    assert isinstance(error, ProvenanceError) and "<string>" in str(error)
    assert peak < 8 << 20


def test_the_command_refuses_an_alias_bomb_in_one_line(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    for args in (
        ("deploy", bomb, "--stage-dir", tmp_path / "stage"),
        ("materialize", "-f", bomb, "--stage-dir", tmp_path / "stage", "--cache-dir", tmp_path / "c"),
        ("provenance", "convert", bomb, "-o", tmp_path / "out.yaml"),
    ):
        p = run(*args, timeout=60)
        assert p.returncode in (1, 2), p.stderr
        err = one_line_error(p)
        assert "expands to more than" in err and len(err) < 1000, err
        assert str(bomb) in err, err


def test_a_50_mb_records_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """The issue: 159 s and 1.8 GB. Sparse, so the test itself costs nothing."""
    path = tmp_path / "huge.yaml"
    with open(path, "w") as fh:
        fh.write("wfexs_like_containers: 1\ncontainers: []\n")
        fh.truncate(50 << 20)

    error, _, peak = measured(lambda: read_containers_file(path))
    assert isinstance(error, ProvenanceError) and isinstance(error, UnsafeInputError), repr(error)
    assert str(path) in str(error) and str(50 << 20) in str(error)
    assert peak < 1 << 20, f"{peak} bytes allocated: the file was read"

    p = run("deploy", path, "--stage-dir", tmp_path / "stage", timeout=60)
    assert p.returncode in (1, 2)
    assert str(path) in one_line_error(p)


def test_a_stream_is_read_no_further_than_the_bound() -> None:
    """An endless stream (a pipe, /dev/zero through ``-f -``) is cut at the bound, not read to the end."""

    class Endless(io.RawIOBase):
        given = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            b[:] = b"#" * len(b)
            self.given += len(b)
            return len(b)

    raw = Endless()
    with pytest.raises(ProvenanceError, match="more than the"):
        load_containers(io.BufferedReader(raw))
    assert raw.given <= RECORDS_MAX_BYTES + (1 << 20)


def shared_bomb(levels: int = 10, width: int = 9) -> list[Any]:
    """What a loaded alias bomb is in memory: a small graph whose ``repr`` has width**levels items."""
    value: list[Any] = ["lol"] * width
    for _ in range(levels - 1):
        value = [value] * width
    return value


@pytest.mark.parametrize("field", ["origTaggedName", "type", "registries", "localPath", "signature"])
def test_an_error_about_a_value_never_takes_its_whole_repr(field: str) -> None:
    """``_describe`` took the repr of the value before cutting it: a 560-byte file, a MemoryError."""
    record: dict[str, Any] = {"origTaggedName": "busybox", "type": "docker", field: shared_bomb()}
    error, seconds, peak = measured(lambda: container_from_dict(record))
    assert isinstance(error, ProvenanceError), repr(error)
    assert len(str(error)) < 400, str(error)
    assert seconds < 5.0 and peak < 4 << 20


def test_a_long_value_in_a_record_is_quoted_short() -> None:
    """Within the bounds, a value can still be long: a message shows a few items of it, never all."""
    items = ", ".join(f'"{"x" * 50}{i}"' for i in range(20_000))
    for doc, says in (
        (f"- [{items}]\n", "expected a container record, got list ["),
        (f"- origTaggedName: [{items}]\n  type: docker\n", "origTaggedName is list ["),
        (f"- origTaggedName: {'y' * 500_000}\n  type: [docker]\n", "unknown container type ["),
    ):
        with pytest.raises(ProvenanceError) as ei:
            load_containers(doc)
        assert says in str(ei.value) and len(str(ei.value)) < 400, str(ei.value)[:1000]


# =================================================================================================
# Item 4: local paths and URLs never reach a registry
# =================================================================================================

LOCAL = [
    "../etc/passwd",
    "file:///etc/shadow",
    "/home/u/secret/image.sif",
    "./image.sif",
    "file:relative/x.sif",
    "FILE:///etc/shadow",
    "//etc/shadow",
    "file://localhost/etc/shadow",
    "oci:/some/layout",
    "oci-archive:../saved.tar",
    "docker-archive:/saved.tar:busybox:1",
]
URLS = ["http://127.0.0.1:5601/x:1", "HTTPS://Example.org/images/x.sif", "https://h.example/x.sif?sig=1"]
#: Scheme-less names that a user writes for a file; read as registry names they would be sent away.
FILE_LOOKALIKES = ["image.sif", "secret/image.sif", "images/x.simg", "wf/saved.tar.gz", "staged.img"]


@pytest.mark.parametrize("tag", LOCAL)
def test_local_paths_are_classified_local(tag: str) -> None:
    ref = parse_reference(tag)
    assert ref.is_local and not ref.is_registry and ref.registry is None
    assert ref.repository.startswith("/"), "an absolute path on this machine"
    with pytest.raises(InvalidReferenceError, match="no host to talk to"):
        ref.api_host  # noqa: B018 - what a registry client would ask first


@pytest.mark.parametrize("tag", URLS)
def test_urls_are_classified_urls(tag: str) -> None:
    ref = parse_reference(tag)
    assert ref.scheme in ("http", "https") and not ref.is_registry and ref.registry is None
    assert ref.canonical().startswith(ref.scheme + "://"), "never docker.io/<url>"
    assert ref.api_host == ref.repository.split("/", 1)[0]


@pytest.mark.parametrize("tag", FILE_LOOKALIKES)
def test_a_file_lookalike_must_say_what_it_is(tag: str) -> None:
    with pytest.raises(InvalidReferenceError) as ei:
        parse_reference(tag)
    assert quote("./" + tag) in str(ei.value) and quote("docker://" + tag) in str(ei.value)
    # Said explicitly, either meaning is taken.
    assert parse_reference("./" + tag).is_local
    explicit = parse_reference("docker://" + tag)
    assert explicit.is_registry and explicit.registry == "docker.io"
    assert parse_reference(tag + ":1").is_registry, "with a tag it is an image name"


class RecordingProxy:
    """A loopback HTTP(S) proxy that answers every connection 502 and remembers its first line.

    ``requests`` honours ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``: with
    ``NO_PROXY`` empty, every connection the command makes, to any host (the
    loopback included), arrives here first, so an empty ``seen`` means that
    nothing was sent anywhere.
    """

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(5)
                try:
                    first = self.request.recv(4096)
                finally:
                    proxy.seen.append(first.split(b"\r\n", 1)[0] if "first" in locals() else b"?")
                self.request.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        names = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
        return {
            **{n: self.url for n in names},
            **{n.lower(): self.url for n in names},
            "NO_PROXY": "",
            "no_proxy": "",
        }

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def recording_proxy() -> Iterator[RecordingProxy]:
    proxy = RecordingProxy()
    yield proxy
    proxy.stop()


def _materialize_docker(tag: str, tmp_path: Path, proxy: RecordingProxy) -> subprocess.CompletedProcess[str]:
    return run(
        "materialize", "--engine", "docker", "-vv", "--retry-times", "0",
        "--stage-dir", tmp_path / "stage", "--cache-dir", tmp_path / "cache", tag,
        env=proxy.env(), cwd=tmp_path, timeout=120,
    )  # fmt: skip


def test_the_recording_proxy_sees_a_registry_pull(tmp_path: Path, recording_proxy: RecordingProxy) -> None:
    """The instrument works: a registry tag does go out (to a name that resolves nowhere)."""
    p = _materialize_docker("registry.example.invalid/x:1", tmp_path, recording_proxy)
    assert p.returncode == 1
    assert any(b"registry.example.invalid" in line for line in recording_proxy.seen), recording_proxy.seen


@pytest.mark.parametrize("tag", ["../etc/passwd", "file:///etc/shadow", "/home/u/secret/image.sif",
                                 "http://127.0.0.1:5601/x:1", "secret/image.sif"])  # fmt: skip
def test_materialize_docker_sends_nothing_for_a_local_path_or_url(
    tag: str, tmp_path: Path, recording_proxy: RecordingProxy
) -> None:
    p = _materialize_docker(tag, tmp_path, recording_proxy)
    assert p.returncode in (1, 2), p.stdout + p.stderr
    err = one_line_error(p)
    assert quote(tag) in err or f"  {tag}: " in err, err
    assert "references" in err or "looks like an image file" in err, err
    assert "docker.io" not in err and "registry-1" not in err, err
    assert recording_proxy.seen == [], f"connections were made: {recording_proxy.seen}"


# =================================================================================================
# Item 8: huge and multi-line tags, Ctrl-C during start-up
# =================================================================================================


def test_a_50_mb_tag_is_not_echoed() -> None:
    tag = "busybox:" + "a" * (50 << 20)
    error, _, _ = measured(lambda: parse_reference(tag))
    assert isinstance(error, InvalidReferenceError)
    message = str(error)
    assert len(message) < 600, len(message)
    assert f"{len(tag)} characters" in message and "\n" not in message
    # a hand-built Reference is held to the same
    with pytest.raises(InvalidReferenceError) as ei:
        Reference("docker", "docker.io", "a" * (50 << 20))
    assert len(str(ei.value)) < 800


def test_the_command_quotes_a_huge_tag_short(tmp_path: Path) -> None:
    tags = tmp_path / "tags.txt"
    tags.write_text("busybox:" + "a" * (10 << 20) + "\n")
    long_path = "/x/" + "a" * (REFERENCE_LENGTH_MAX + 10)
    for args in (("-f", tags), ("busybox:" + "b" * 100_000,), (long_path,)):
        p = run("materialize", "--stage-dir", tmp_path / "s", "--cache-dir", tmp_path / "c", *args)
        assert p.returncode == 2, p.stderr[:500]
        err = one_line_error(p)
        assert len(err) < 1000 and "characters long" in err, err[:1000]


NEWLINE_TAGS = ["busybox:1\nFAKE: injected line", "busybox\r\nFAKE", "quay.io/x:1\x1b[2K\rFAKE"]


@pytest.mark.parametrize("tag", NEWLINE_TAGS)
def test_a_tag_with_a_newline_stays_on_its_error_line(tag: str, tmp_path: Path) -> None:
    records = tmp_path / "records.yaml"
    records.write_text(
        json.dumps({"wfexs_like_containers": 1, "containers": [{"origTaggedName": tag, "type": "docker"}]})
    )
    common = ("--stage-dir", tmp_path / "s", "--cache-dir", tmp_path / "c")
    for args in ((tag,), ("-f", records), ("--keep-going", tag, "-f", records)):
        p = run("materialize", *common, *args)
        assert p.returncode == 2, p.stderr
        err = one_line_error(p)
        assert all(not line.startswith("FAKE") for line in err.splitlines()), err
        assert "\x1b" not in err and "\r" not in err
        assert "FAKE" in err and quote(tag) in err


#: Imported by ``wfexs_like.cli`` after its handler is installed, in ``main_with``, and in ``run``.
STARTUP_IMPORTS = [
    "wfexs_like.cli._common",
    "argparse",
    "wfexs_like.cli.materialize",
    "wfexs_like.ops.materialize",
]


def _sigint_at_import(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment whose interpreter sends itself SIGINT when ``module`` is first imported."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "class _Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            sys.meta_path.remove(self)\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Interrupt())\n"
    )
    return {"PYTHONPATH": str(site)}


@pytest.mark.parametrize("module", STARTUP_IMPORTS)
def test_ctrl_c_during_start_up_prints_no_traceback(module: str, tmp_path: Path) -> None:
    env = _sigint_at_import(tmp_path, module)
    for command in ([str(WFEXS_LIKE)], [sys.executable, "-m", "wfexs_like.cli"]):
        p = subprocess.run(
            [*command, "materialize", "--stage-dir", str(tmp_path / "s"), "busybox:1.36"],
            capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False,
        )  # fmt: skip
        assert p.returncode == 130, p.stderr
        assert "Traceback" not in p.stderr and "KeyboardInterrupt" not in p.stderr, p.stderr
        assert "wfexs-like: interrupted" in p.stderr


def test_a_program_importing_the_cli_keeps_its_own_ctrl_c(tmp_path: Path) -> None:
    """The control: the signal does land mid-import, and only the command changes what it does."""
    env = _sigint_at_import(tmp_path, "wfexs_like.cli._common")
    p = subprocess.run(
        [sys.executable, "-c", "import wfexs_like.cli"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False,
    )  # fmt: skip
    assert p.returncode != 0 and "KeyboardInterrupt" in p.stderr, p.stderr


# =================================================================================================
# Hostile image files: OCI layouts, docker-/oci-archives, SIFs, layers
# =================================================================================================


@pytest.fixture
def image(tmp_path: Path) -> tuple[BlobStore, BuiltImage]:
    src = BlobStore(tmp_path / "src-store")
    return src, build_image(src, [{"etc/": None, "etc/hello": b"hello\n"}, {"etc/more": b"more\n"}])


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A directory outside every cache and image: nothing a refusal does may change it."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text("keep me\n")
    (d / "manifest-like.json").write_text("{}\n")
    before = _listing(d)
    yield d
    assert _listing(d) == before, "a refused input touched a file outside the cache"


def _listing(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(root)): (
            p.lstat().st_mode,
            p.lstat().st_mtime_ns,
            p.read_bytes() if p.is_file() else b"",
        )
        for p in sorted(root.rglob("*"))
    }


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _device(path: Path) -> Path:
    """``/dev/zero``'s node (char 1,5): never ends when read."""
    os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))
    return path


def refused(fn: Callable[[], Any], *types: type[BaseException], unblock: Path | None = None) -> BaseException:
    """``fn()``'s refusal, within 30 s: a reader blocked on a FIFO fails the test instead of hanging it."""
    out: list[BaseException | None] = []

    def call() -> None:
        try:
            fn()
            out.append(None)
        except BaseException as e:
            out.append(e)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():
        if unblock is not None:  # release the reader: a writer that closes at once
            os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"{fn} blocked (on a FIFO or an endless device) instead of refusing")
    error = out[0]
    assert error is not None, "a hostile input was accepted"
    assert isinstance(error, types), repr(error)
    assert isinstance(error, AbstractWfExSException)
    assert len(str(error)) < 2000
    return error


def _layout(tmp_path: Path, image: tuple[BlobStore, BuiltImage]) -> tuple[Path, BuiltImage]:
    src, img = image
    layout = tmp_path / "layout"
    write_oci_layout(StoreImage(src, img.digest), layout, ref_name="localhost/x:1")
    return layout, img


def _replace(path: Path, make: Callable[[Path], Any]) -> Path:
    path.unlink()
    make(path)
    return path


def _index_naming(layout: Path, digest: str) -> None:
    manifest = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 8}
    (layout / INDEX_FILE).write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))


def _blobs_dir_outside(layout: Path) -> None:
    elsewhere = layout.parent / "elsewhere"
    shutil.copytree(layout / "blobs" / "sha256", elsewhere)
    shutil.rmtree(layout / "blobs" / "sha256")
    (layout / "blobs" / "sha256").symlink_to(elsewhere)


# case -> (how to spoil a genuine layout, what may be raised)
LayoutCase = Callable[[Path, BuiltImage, Path], object]
LAYOUT_CASES: dict[str, tuple[LayoutCase, tuple[type[BaseException], ...]]] = {
    "index links to /dev/zero": (
        lambda lay, img, out: _replace(lay / INDEX_FILE, lambda p: p.symlink_to("/dev/zero")),
        (UnsafeArchiveError,),
    ),
    "index is a device node": (
        lambda lay, img, out: _replace(lay / INDEX_FILE, _device),
        (UnsafeArchiveError,),
    ),
    "index is a FIFO": (lambda lay, img, out: _replace(lay / INDEX_FILE, _fifo), (UnsafeArchiveError,)),
    "index is a symlink loop": (
        lambda lay, img, out: _replace(lay / INDEX_FILE, lambda p: p.symlink_to(p.name)),
        (CacheError,),
    ),
    "index is a directory": (
        lambda lay, img, out: _replace(lay / INDEX_FILE, Path.mkdir),
        (UnsafeArchiveError,),
    ),
    "index is 20 GB": (lambda lay, img, out: os.truncate(lay / INDEX_FILE, 20 << 30), (CacheError,)),
    "manifest links outside": (
        lambda lay, img, out: _replace(
            blob_file(lay, img.digest), lambda p: p.symlink_to(out / "manifest-like.json")
        ),
        (UnsafeArchiveError,),
    ),
    "blobs dir links outside": (lambda lay, img, out: _blobs_dir_outside(lay), (UnsafeArchiveError,)),
    "manifest digest climbs out": (
        lambda lay, img, out: _index_naming(lay, "sha256:../../../outside/victim"),
        (IntegrityError, CacheError),
    ),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_a_hostile_oci_layout_is_refused(
    case: str, tmp_path: Path, image: tuple[BlobStore, BuiltImage], outside: Path
) -> None:
    layout, img = _layout(tmp_path, image)
    make, types = LAYOUT_CASES[case]
    make(layout, img, outside)
    fifo = layout / INDEX_FILE if "FIFO" in case else None
    error = refused(lambda: LayoutImage(layout), *types, unblock=fifo)
    assert str(layout) in str(error)


LAYER_CASES: dict[str, Callable[[Path], Any]] = {
    "device node": _device,
    "FIFO": _fifo,
    "link to /dev/zero": lambda p: p.symlink_to("/dev/zero"),
    "symlink loop": lambda p: p.symlink_to(p.name),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_a_hostile_layer_blob_in_a_layout_never_reaches_the_store(
    case: str, tmp_path: Path, image: tuple[BlobStore, BuiltImage], outside: Path
) -> None:
    layout, img = _layout(tmp_path, image)
    layer = blob_file(layout, img.manifest.layers[1].digest)
    _replace(layer, LAYER_CASES[case])
    store = BlobStore(tmp_path / "cache")
    refused(
        lambda: write_to_store(LayoutImage(layout), store),
        CacheError,
        UnsafeArchiveError,
        unblock=layer if case == "FIFO" else None,
    )
    assert not store.has(img.manifest.layers[1].digest) and not store.has(img.digest)


def test_a_layer_blob_larger_than_its_descriptor_is_cut_short(
    tmp_path: Path, image: tuple[BlobStore, BuiltImage]
) -> None:
    layout, img = _layout(tmp_path, image)
    layer = blob_file(layout, img.manifest.layers[0].digest)
    shutil.copyfile(layer, tmp_path / "copy")
    _replace(layer, lambda p: shutil.copyfile(tmp_path / "copy", p))
    os.truncate(layer, 1 << 40)  # a terabyte, sparse
    store = BlobStore(tmp_path / "cache")
    error, _, peak = measured(lambda: write_to_store(LayoutImage(layout), store))
    assert isinstance(error, IntegrityError) and "longer than" in str(error), repr(error)
    assert peak < 32 << 20
    assert not store.has(img.manifest.layers[0].digest)


# -- archives ---------------------------------------------------------------------------------------


def _members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(archive) as tf:
        return [(ti, tf.extractfile(ti).read() if ti.isfile() else b"") for ti in tf.getmembers()]  # type: ignore[union-attr]


def _rewrite(archive: Path, items: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in items:
            if ti.isfile():
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, linkname
    return ti


def _with_manifest(
    items: list[tuple[tarfile.TarInfo, bytes]], **changes: Any
) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    for ti, data in items:
        if ti.name == "manifest.json":
            doc = json.loads(data)
            doc[0].update(changes)
            data = json.dumps(doc).encode()
        out.append((ti, data))
    return out


def _sparse_member(name: str) -> tuple[tarfile.TarInfo, bytes]:
    """A PAX 1.0 sparse member claiming a terabyte (no tool that saves images writes one)."""
    ti = tarfile.TarInfo(name)
    ti.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(1 << 40),
    }
    return ti, b"1\n0\n1\n".ljust(512, b"\0")


def _append_huge_member(archive: Path) -> None:
    """A last member whose header claims a terabyte, with nothing behind it."""
    with tarfile.open(archive) as tf:
        last = tf.getmembers()[-1]
    end = last.offset_data + -(-last.size // 512) * 512
    ti = tarfile.TarInfo("big.tar")
    ti.size = 1 << 40
    data = archive.read_bytes()[:end] + ti.tobuf(tarfile.PAX_FORMAT) + b"\0" * 1024
    archive.write_bytes(data)


def _layers_are_a_device(archive: Path, items: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    count = next(len(json.loads(d)[0]["Layers"]) for ti, d in items if ti.name == "manifest.json")
    _rewrite(
        archive,
        [*_with_manifest(items, Layers=["dev/zero"] * count), (_info("dev/zero", tarfile.CHRTYPE), b"")],
    )


ArchiveCase = Callable[[Path, list[tuple[tarfile.TarInfo, bytes]], Path], None]

DOCKER_ARCHIVE_CASES: dict[str, tuple[ArchiveCase, tuple[type[BaseException], ...]]] = {
    "dot-dot member": (
        lambda a, m, o: _rewrite(a, [*m, (_info("../../outside/victim"), b"x")]),
        (UnsafeArchiveError,),
    ),
    "absolute member": (
        lambda a, m, o: _rewrite(a, [(_info(str(o / "victim")), b"x"), *m]),
        (UnsafeArchiveError,),
    ),
    "symlink out": (
        lambda a, m, o: _rewrite(a, [*m, (_info("escape", tarfile.SYMTYPE, "../../../etc/passwd"), b"")]),
        (UnsafeArchiveError,),
    ),
    "absolute symlink": (
        lambda a, m, o: _rewrite(a, [*m, (_info("etc", tarfile.SYMTYPE, "/etc"), b"")]),
        (UnsafeArchiveError,),
    ),
    "hard link out": (
        lambda a, m, o: _rewrite(a, [*m, (_info("h", tarfile.LNKTYPE, "../outside/victim"), b"")]),
        (UnsafeArchiveError,),
    ),
    "config is a symlink loop": (
        lambda a, m, o: _rewrite(
            a,
            [
                *_with_manifest(m, Config="loop/a.json"),
                (_info("loop/a.json", tarfile.SYMTYPE, "b.json"), b""),
                (_info("loop/b.json", tarfile.SYMTYPE, "a.json"), b""),
            ],
        ),
        (UnsafeArchiveError, CacheError),
    ),
    "config climbs out": (
        lambda a, m, o: _rewrite(a, _with_manifest(m, Config="../../etc/passwd")),
        (UnsafeArchiveError,),
    ),
    "layer is a device node": (lambda a, m, o: _layers_are_a_device(a, m), (CacheError,)),
    "sparse member": (lambda a, m, o: _rewrite(a, [*m, _sparse_member("big.tar")]), (UnsafeArchiveError,)),
    "a terabyte member": (lambda a, m, o: _append_huge_member(a), (CacheError,)),
    "archive is a FIFO": (lambda a, m, o: _replace(a, _fifo), (UnsafeArchiveError,)),
    "archive is a device": (lambda a, m, o: _replace(a, _device), (UnsafeArchiveError,)),
    "archive is a directory": (lambda a, m, o: _replace(a, Path.mkdir), (UnsafeArchiveError,)),
    "archive links to /dev/zero": (
        lambda a, m, o: _replace(a, lambda p: p.symlink_to("/dev/zero")),
        (UnsafeArchiveError,),
    ),
}


@pytest.mark.parametrize("case", sorted(DOCKER_ARCHIVE_CASES))
def test_a_hostile_docker_archive_is_refused(
    case: str, tmp_path: Path, image: tuple[BlobStore, BuiltImage], outside: Path
) -> None:
    src, img = image
    archive = tmp_path / "saved.tar"
    write_docker_archive(StoreImage(src, img.digest), archive, ["localhost/x:1"])
    make, types = DOCKER_ARCHIVE_CASES[case]
    make(archive, _members(archive), outside)
    store = BlobStore(tmp_path / "cache")

    def read() -> None:
        with DockerArchiveImage(archive) as source:
            write_to_store(source, store)

    refused(read, *types, unblock=archive if "FIFO" in case else None)
    assert not store.has(img.digest)


OCI_ARCHIVE_CASES: dict[str, tuple[ArchiveCase, tuple[type[BaseException], ...]]] = {
    "index links out": (
        lambda a, m, o: _rewrite(
            a,
            [(ti, d) for ti, d in m if ti.name != INDEX_FILE]
            + [(_info(INDEX_FILE, tarfile.SYMTYPE, "/etc/passwd"), b"")],
        ),
        (UnsafeArchiveError,),
    ),
    "blob climbs out": (
        lambda a, m, o: _rewrite(a, [(_info("blobs/sha256/../../../x"), b"x"), *m]),
        (UnsafeArchiveError,),
    ),
    "index is a device": (
        lambda a, m, o: _rewrite(
            a, [(ti, d) for ti, d in m if ti.name != INDEX_FILE] + [(_info(INDEX_FILE, tarfile.CHRTYPE), b"")]
        ),
        (CacheError,),
    ),
    "sparse blob": (
        lambda a, m, o: _rewrite(a, [_sparse_member("blobs/sha256/" + "0" * 64), *m]),
        (UnsafeArchiveError,),
    ),
    "archive is a FIFO": (lambda a, m, o: _replace(a, _fifo), (UnsafeArchiveError,)),
}


@pytest.mark.parametrize("case", sorted(OCI_ARCHIVE_CASES))
def test_a_hostile_oci_archive_is_refused(
    case: str, tmp_path: Path, image: tuple[BlobStore, BuiltImage], outside: Path
) -> None:
    src, img = image
    archive = tmp_path / "image.oci.tar"
    write_oci_archive(StoreImage(src, img.digest), archive, ref_name="localhost/x:1")
    make, types = OCI_ARCHIVE_CASES[case]
    make(archive, _members(archive), outside)
    store = BlobStore(tmp_path / "cache")

    def read() -> None:
        with OciArchiveImage(archive) as source:
            write_to_store(source, store)

    refused(read, *types, unblock=archive if "FIFO" in case else None)
    assert not store.has(img.digest)


# -- SIF --------------------------------------------------------------------------------------------


def _sif(path: Path) -> Path:
    write_sif(
        path,
        [SifObject(SifDataType.Deffile, b"bootstrap: docker\nfrom: busybox\n", group_id=1)],
        uuid=uuid.UUID(int=1),
        created=1_700_000_000,
    )
    return path


def _patch(path: Path, offset: int, fmt: str, *values: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack(fmt, *values))


# header: launch[32] magic[10] version[3] arch[3] uuid[16] = 64 bytes, then 8 int64:
# ctime mtime dfree dtotal descr_off descr_size data_off data_size
_DTOTAL, _DSIZE = 64 + 3 * 8, 64 + 5 * 8
# the first descriptor (at 4096): datatype(4) used(1) id(4) group(4) link(4) offset(8), then size
_OBJECT_SIZE = 4096 + 17 + 8


def _too_many_descriptors(path: Path) -> None:
    _sif(path)
    _patch(path, _DTOTAL, "<q", 1 << 20)
    _patch(path, _DSIZE, "<q", (1 << 20) * DESCRIPTOR_SIZE)


def _object_past_the_end(path: Path) -> None:
    _sif(path)
    _patch(path, _OBJECT_SIZE, "<q", 1 << 40)


SIF_CASES: dict[str, Callable[[Path], object]] = {
    "FIFO": _fifo,
    "device": _device,
    "link to /dev/zero": lambda p: p.symlink_to("/dev/zero"),
    "directory": Path.mkdir,
    "symlink loop": lambda p: p.symlink_to(p.name),
    "a million descriptors": _too_many_descriptors,
    "object past the end": _object_past_the_end,
}


@pytest.mark.parametrize("case", sorted(SIF_CASES))
def test_a_hostile_sif_is_refused(case: str, tmp_path: Path) -> None:
    path = tmp_path / "image.sif"
    SIF_CASES[case](path)
    refused(lambda: read_sif(path), SifFormatError, unblock=path if case == "FIFO" else None)


def test_a_huge_sif_object_is_not_read_into_memory(tmp_path: Path) -> None:
    path = _sif(tmp_path / "image.sif")
    descriptor = read_sif(path).descriptors[0]
    os.truncate(path, 4 << 30)
    _patch(path, _OBJECT_SIZE, "<q", 3 << 30)
    big = read_sif(path).descriptors[0]
    assert big.size == 3 << 30 and big.id == descriptor.id
    error, _, peak = measured(lambda: read_object(path, big))
    assert isinstance(error, SifFormatError) and "more than" in str(error)
    assert peak < 1 << 20


# -- layers applied onto a root filesystem ----------------------------------------------------------


def _apply(tmp_path: Path, members: list[Any]) -> Path:
    layer = write_layer(tmp_path / f"layer-{len(list(tmp_path.glob('layer-*')))}.tar.gz", members)
    store = BlobStore(tmp_path / "layer-store")
    img = store_image(store, [layer], {"architecture": "amd64", "os": "linux"})
    rootfs = tmp_path / "cache" / "rootfs"
    apply_layers(img.layers(), rootfs)
    return rootfs


ROOTFS_CASES: dict[str, Callable[[Path], list[Any]]] = {
    "write through a symlink loop": lambda out: [symlink("a", "b"), symlink("b", "a"), file("a/x", b"x")],
    "hardlink to an absolute path": lambda out: [hardlink("h", str(out / "victim"))],
    "hardlink climbing out": lambda out: [hardlink("h", "../../outside/victim")],
    "member climbing out": lambda out: [file("../../outside/victim", b"pwned")],
    "absolute member": lambda out: [file(str(out / "victim"), b"pwned")],
    "write through a link to outside": lambda out: [symlink("etc", str(out)), file("etc/victim", b"pwned")],
}


@pytest.mark.parametrize("case", sorted(ROOTFS_CASES))
def test_a_hostile_layer_never_writes_outside_the_root(case: str, tmp_path: Path, outside: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        _apply(tmp_path, ROOTFS_CASES[case](outside))


def test_device_nodes_in_a_layer_are_never_created(tmp_path: Path, outside: Path) -> None:
    rootfs = _apply(tmp_path, [file("etc/ok", b"ok"), chardev("dev/zero", 1, 5), chardev("dev/sda", 8, 0)])
    assert (rootfs / "etc" / "ok").read_bytes() == b"ok"
    for p in rootfs.rglob("*"):
        mode = p.lstat().st_mode
        assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)), f"{p} is a device node"

"""The front door, fuzzed: the tag parser, the records YAML loader and the bundle importer.

Each reads what a workflow, a colleague or another machine hands over, so
each is given arbitrary text and bytes (huge, binary, control characters),
YAML-ish token soup, structured random documents and alias bombs, and
mutated genuine bundles. Whatever comes in:

- only our documented exceptions escape (``AbstractWfExSException`` and
  the ``ValueError`` subclasses hanging under it);
- an error message is one bounded, printable line (it reaches a terminal
  and logs);
- memory stays bounded (``tracemalloc`` peak per input);
- a refused bundle leaves the cache exactly as it was.

Counts: ``tries(reduced, full)``; CI runs the reduced ones.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import tempfile
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.imagegen import build_image
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.cache.bundle_import import import_bundle
from wfexs_like.errors import AbstractWfExSException, InvalidReferenceError, ProvenanceError
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.model import Container
from wfexs_like.provenance import FORMAT_KEY, KNOWN_TAGS, load_containers
from wfexs_like.references import SCHEMES, Reference, parse_reference

Tries = Callable[[int, int], int]
MESSAGE_MAX = 2000


def fuzz(tries: Tries, reduced: int = 300, full: int = 5000) -> settings:
    return settings(
        max_examples=tries(reduced, full),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def call_bounded(fn: Callable[[], Any], limit: int) -> tuple[Any, BaseException | None]:
    """``fn()``'s result or documented error (anything else escapes); its memory peak under ``limit``."""
    tracemalloc.start()
    try:
        try:
            return fn(), None
        except AbstractWfExSException as e:
            return None, e
        finally:
            _, peak = tracemalloc.get_traced_memory()
            assert peak < limit, f"{peak} bytes allocated for one input (bound {limit})"
    finally:
        tracemalloc.stop()


def one_printable_line(message: str) -> None:
    assert len(message) < MESSAGE_MAX, f"{len(message)}-character message"
    assert message.isprintable(), f"a message with a line break or control character: {message!r}"


# =================================================================================================
# The tag parser
# =================================================================================================

_SCHEMES = st.sampled_from([*SCHEMES, "ftp", "s3", "FILE", "Docker", "x", ""])
_SEPARATORS = st.sampled_from(["://", ":", ":/", ":///", "", "//"])
_WORDS = st.sampled_from(
    ["busybox", "quay.io", "localhost:5000", "127.0.0.1:5601", "[::1]:5000", "library", "..", ".", "~",
     "etc", "shadow", "x.sif", "a" * 300, "sha256", "@", ":", "/", "?", "#", "%00", "%2e%2e", " ", "\n",
     "\x00", "\x1b[2K", "\u2028", "é", "latest", "1.36", "0" * 64, "user:pw@h"]
)  # fmt: skip
_CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F) | st.sampled_from(
    ["\x7f", "\x85", "\u2028", "\ufeff"]
)


@st.composite
def tag_like(draw: st.DrawFn) -> str:
    """A scheme, a separator, then path-ish words: the shapes the parser branches on."""
    parts = [draw(_SCHEMES), draw(_SEPARATORS)]
    for _ in range(draw(st.integers(0, 6))):
        parts.append(draw(_WORDS | st.text(max_size=6)))
        parts.append(draw(st.sampled_from(["/", ":", "@", "", "@sha256:", "./", "../"])))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(parts)))
        parts.insert(at, draw(_CONTROL))
    return "".join(parts)


huge_text = st.builds(lambda unit, n: unit * n, st.text(min_size=1, max_size=8), st.integers(500, 300_000))
any_tag = st.text() | tag_like() | huge_text | st.text(alphabet=_CONTROL, max_size=20)


def check_tag(tag: str) -> None:
    ref, error = call_bounded(lambda: parse_reference(tag), (4 << 20) + 8 * len(tag))
    if error is not None:
        assert isinstance(error, InvalidReferenceError), repr(error)
        one_printable_line(str(error))
        return
    assert isinstance(ref, Reference)
    # What parses says where it lives, and reads back as itself.
    assert parse_reference(ref.canonical()) == ref
    if tag.startswith(("/", "./", "../")) or tag.lower().startswith("file:"):
        assert ref.is_local and not ref.is_registry
    if ref.is_registry:
        assert ref.registry and "/" not in ref.registry
    else:
        assert ref.registry is None or ref.scheme == "docker-daemon"


def test_the_tag_parser_only_raises_its_documented_error(tries: Tries) -> None:
    @fuzz(tries)
    @example("busybox:" + "a" * (50 << 20))
    @example("busybox:1\nFAKE")
    @example("https://user:pw@host/x.sif")
    @example("../etc/passwd")
    @example("file:///etc/shadow")
    @example("http://127.0.0.1:5601/x:1")
    @given(any_tag)
    def check(tag: str) -> None:
        check_tag(tag)

    check()


# =================================================================================================
# The records YAML loader
# =================================================================================================

_TOKENS = st.sampled_from(
    ["- ", "\n", "  ", "    ", ": ", "? ", ", ", "{", "}", "[", "]", "'", '"', "|", ">", "#", "---", "...",
     "%YAML 1.1", "%TAG ! tag:x,2000:", "&a ", "&b ", "*a", "*b", "<<: ", "~", "null", "yes", "1e400",
     "0x1F", "2001-12-14", "!!int ", "!!float ", "!!str ", "!!binary ", "!!set ", "!!omap ", "!!timestamp ",
     "!!python/object/apply:os.system ", "!!python/name:os.system ", "!local ", "!!python/tuple ",
     "containers:", "wfexs_like_containers: 1", f"{FORMAT_KEY}: 99", "_type: Container", "origTaggedName: ",
     "type: docker", "type: ", "registries: ", "localPath: ", "{_enum: ContainerType, value: docker}",
     "busybox", "x.sif", "\t", "\x00", "\ufeff", "\x85", *sorted("!" + tag for tag in KNOWN_TAGS)]
)  # fmt: skip

yamlish = st.lists(_TOKENS | st.text(max_size=4), max_size=60).map("".join)

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=8)
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4)
        | st.builds(lambda x, n: [x] * n, inner, st.integers(2, 5))
    ),  # shared: dumped as aliases
    max_leaves=25,
)
_FIELDS = [
    "origTaggedName", "type", "registries", "taggedName", "architecture", "operatingSystem", "localPath",
    "signature", "fingerprint", "metadataLocalPath", "source_type", "image_signature", "_type", "extra",
]  # fmt: skip
records = st.lists(
    st.dictionaries(
        st.sampled_from(_FIELDS),
        documents | st.sampled_from(["docker", "singularity", "podman", "Docker", "busybox", "x.sif", ""]),
        max_size=8,
    ),
    max_size=4,
)
record_documents = st.one_of(
    st.builds(lambda v, cs: {FORMAT_KEY: v, "containers": cs}, st.integers(-1, 3) | scalars, records),
    st.builds(lambda cs: {"containers": cs, "engineDesc": {"x": 1}}, records | scalars),
    records,
    documents,
)


@st.composite
def alias_bombs(draw: st.DrawFn) -> str:
    levels, width = draw(st.integers(1, 14)), draw(st.integers(1, 12))
    lines = ["a0: &a0 [" + ",".join(['"lol"'] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    top = draw(st.sampled_from(["containers: *a{n}", "containers: [*a{n}]", "- *a{n}", "x: *a{n}"]))
    prefix = draw(st.sampled_from(["", f"{FORMAT_KEY}: 1\n"]))
    return prefix + "\n".join(lines) + "\n" + top.format(n=levels - 1) + "\n"


def _dump(doc: Any, flow: bool) -> str:
    # The full dumper: Python-object tags (tuples, bytes) and anchors for shared values, as the
    # reference's records carry them.
    return yaml.dump(doc, Dumper=yaml.Dumper, default_flow_style=flow)


any_records_text = st.one_of(
    st.text(),
    yamlish,
    st.builds(_dump, record_documents, st.booleans()),
    alias_bombs(),
    st.binary(max_size=200),
)


def check_records(text: str | bytes) -> None:
    result, error = call_bounded(lambda: load_containers(text), (48 << 20) + 40 * len(text))
    if error is not None:
        assert isinstance(error, ProvenanceError), repr(error)
        one_printable_line(str(error))
        return
    assert isinstance(result, list) and all(isinstance(c, Container) for c in result)


def test_the_records_loader_only_raises_its_documented_error(tries: Tries) -> None:
    @fuzz(tries)
    @example(b"containers: \xff\xfe\n")
    @example("_type: []")
    @example("!!int")
    @example("- !!bool x")
    @example("a: !!timestamp x")
    @example("--- []\n--- []\n")
    @example("[" * 3000)
    @example("- !!python/object/apply:os.system [echo pwned]\n")
    @given(any_records_text)
    def check(text: str | bytes) -> None:
        check_records(text)

    check()


# =================================================================================================
# The bundle importer
# =================================================================================================

WFEXS_LIKE = Path(sys.executable).with_name("wfexs-like")
Member = tuple[tarfile.TarInfo, bytes]


@dataclass
class Genuine:
    data: bytes
    members: list[Member]


@pytest.fixture(scope="module")
def genuine(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Genuine:
    """A small real bundle: one two-layer image, exported after a real materialize from a registry."""
    import subprocess

    root = tmp_path_factory.mktemp("fuzz-bundle")
    src = BlobStore(root / "src")
    img = build_image(src, [{"etc/": None, "etc/a": b"a\n"}, {"etc/b": b"b" * 3000}], cmd=None)
    repo = f"wl-fuzz-{uuid.uuid4().hex[:8]}/img"
    push_image(registry.url, repo, "1", src, img.manifest)
    tag = f"{registry.host}/{repo}:1"
    env = {k: v for k, v in os.environ.items() if k != "WFEXS_LIKE_CACHE_DIR"}
    for args in (
        ["materialize", "--cache-dir", str(root / "A"), "--stage-dir", str(root / "stage"), tag],
        ["export", "--cache-dir", str(root / "A"), "-o", str(root / "bundle.tar"), tag],
    ):
        p = subprocess.run([str(WFEXS_LIKE), *args], capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
    data = (root / "bundle.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = [(ti, tf.extractfile(ti).read() if ti.isfile() else b"") for ti in tf.getmembers()]  # type: ignore[union-attr]
    return Genuine(data, members)


def _tar(items: list[Member], *, resum: bool) -> bytes:
    if resum:
        sums = "".join(
            f"{hashlib.sha256(d).hexdigest()}  {ti.name}\n"
            for ti, d in items
            if ti.isfile() and ti.name != "SHA256SUMS"
        ).encode()
        items = [(ti, sums) if ti.name == "SHA256SUMS" else (ti, d) for ti, d in items]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, d in items:
            ti = _copy(ti)
            if ti.isfile():
                ti.size = len(d)
                tf.addfile(ti, io.BytesIO(d))
            else:
                ti.size = 0
                tf.addfile(ti)
    return buf.getvalue()


def _copy(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    new = tarfile.TarInfo(ti.name)
    for attr in ("type", "linkname", "mode", "mtime", "uid", "gid", "devmajor", "devminor"):
        setattr(new, attr, getattr(ti, attr))
    return new


_HOSTILE_NAMES = st.sampled_from(
    ["../x", "../../etc/passwd", "/abs/x", "blobs/sha256/../../x", "blobs/sha256/" + "0" * 64, "SHA256SUMS",
     "index.json", "oci-layout", "wfexs-like-bundle.json", "containers.yaml", "blobs", "blobs/sha256",
     "a" * 400, "C:\\x", "blobs\\..\\x", ".", ""]
)  # fmt: skip
_TYPES = st.sampled_from(
    [tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.DIRTYPE,
     tarfile.BLKTYPE, b"7"]
)  # fmt: skip


@st.composite
def member_edits(draw: st.DrawFn, members: list[Member]) -> tuple[list[Member], bool]:
    """Drop, repeat, reorder, rename, retype or rewrite members of the genuine bundle."""
    items = [(_copy(ti), d) for ti, d in members]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(items) - 1))
        op = draw(st.sampled_from(["drop", "repeat", "swap", "rename", "retype", "content", "add"]))
        ti, d = items[i]
        if op == "drop" and len(items) > 1:
            items.pop(i)
        elif op == "repeat":
            items.insert(draw(st.integers(0, len(items))), (_copy(ti), d))
        elif op == "swap":
            j = draw(st.integers(0, len(items) - 1))
            items[i], items[j] = items[j], items[i]
        elif op == "rename":
            ti.name = draw(_HOSTILE_NAMES | st.text(min_size=1, max_size=30))
        elif op == "retype":
            ti.type = draw(_TYPES)
            ti.linkname = draw(_HOSTILE_NAMES)
            ti.devmajor, ti.devminor = 1, 5
        elif op == "content":
            items[i] = (ti, draw(st.binary(max_size=300) | st.just(d[: len(d) // 2]) | st.just(d + b"\0")))
        else:
            new = tarfile.TarInfo(draw(_HOSTILE_NAMES))
            items.insert(i, (new, draw(st.binary(max_size=100))))
    return items, draw(st.booleans())


@st.composite
def byte_edits(draw: st.DrawFn, data: bytes) -> bytes:
    """Flip, cut, insert: what a bad copy or a hostile hand does to the file itself."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert", "zero-block", "size-field"]))
        if op == "flip":
            out[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del out[at:]
            if not out:
                break
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "zero-block":
            out[at - at % 512 : at - at % 512 + 512] = bytes(512)
        else:  # a header's size field (offset 124, 12 octal digits), made absurd
            header = at - at % 512
            out[header + 124 : header + 136] = b"77777777777\0"
    return bytes(out)


def _listing(root: Path) -> dict[str, tuple[int, bytes]]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.lstat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in root.rglob("*")
    }


def check_bundle(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="wl-fuzz-") as tmp:
        bundle = Path(tmp) / "bundle.tar"
        bundle.write_bytes(data)
        cache = Path(tmp) / "cache"
        cache.mkdir()
        (cache / "keep").write_text("kept\n")
        before = _listing(cache)
        _, error = call_bounded(lambda: import_bundle(bundle, cache), 64 << 20)
        if error is not None:
            one_printable_line(str(error))
            assert _listing(cache) == before, "a refused bundle changed the cache"


def test_the_bundle_importer_refuses_random_bytes(tries: Tries) -> None:
    @fuzz(tries, 200, 3000)
    @example(b"")
    @example(b"\0" * 1024)
    @example(b"\x1f\x8b" + b"\0" * 100)
    @given(st.binary(max_size=4096))
    def check(data: bytes) -> None:
        check_bundle(data)

    check()


def test_the_bundle_importer_refuses_a_damaged_bundle(genuine: Genuine, tries: Tries) -> None:
    @fuzz(tries, 200, 3000)
    @given(byte_edits(genuine.data))
    def check(data: bytes) -> None:
        check_bundle(data)

    check()


def test_the_bundle_importer_refuses_an_altered_bundle(genuine: Genuine, tries: Tries) -> None:
    @fuzz(tries, 200, 3000)
    @given(member_edits(genuine.members))
    def check(edit: tuple[list[Member], bool]) -> None:
        items, resum = edit
        check_bundle(_tar(items, resum=resum))

    check()


def test_the_genuine_bundle_imports(genuine: Genuine, tmp_path: Path) -> None:
    """The control: the bundle the fuzzers spoil is accepted as it is (so refusals are the spoiling's)."""
    bundle = tmp_path / "bundle.tar"
    bundle.write_bytes(genuine.data)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "keep").write_text("kept\n")  # as check_bundle prepares it
    _, error = call_bounded(lambda: import_bundle(bundle, cache), 64 << 20)
    assert error is None, error
    assert any(cache.rglob("*_meta.json")) or any(cache.rglob("*.json"))

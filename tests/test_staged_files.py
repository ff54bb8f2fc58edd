"""What a workflow does to staged files never reaches the cache (issue 13, item 6).

Staged blobs are hard links to the store's blobs and read-only, like them;
everything else a stage dir receives (the ``_meta.json`` sidecar, a layout's
``index.json`` and ``oci-layout``) is a copy, so writing to it changes the
stage dir alone. Each test writes the way a careless workflow would
(``echo '{}' > file``: truncate in place, no rename), then re-stages the same
tag offline into another dir, through the installed command, and re-hashes
the whole cache.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.imagegen import build_image
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.cache import ImageCache
from wfexs_like.digests import sha256_file
from wfexs_like.images.blobstore import BLOB_MODE, BlobStore
from wfexs_like.images.layout import is_blob_path
from wfexs_like.model import META_JSON_POSTFIX

WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"


def wl(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(WFEXS_LIKE), *args], capture_output=True, text=True, timeout=300, check=False)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def materialize(tag: str, cache: Path, stage: Path, *extra: str) -> Path:
    """Stage ``tag``; return the staged layout dir."""
    records = stage.parent / f"{stage.name}.yaml"
    out = wl(
        "materialize", tag, "--cache-dir", str(cache), "--stage-dir", str(stage), "-o", str(records), *extra
    )
    assert out.returncode == 0, out.stderr
    layouts = [p for p in stage.iterdir() if p.is_dir()]
    assert len(layouts) == 1, sorted(p.name for p in stage.iterdir())
    return layouts[0]


def damage(cache: Path) -> list[str]:
    """What is wrong with the cache, re-hashing everything: every store blob against its name, every
    cached snapshot in full (its index, manifests, configs and layers)."""
    problems = [
        f"blob {p.name} does not hash to its name"
        for p in (cache / "blobs").rglob("*")
        if p.is_file() and len(p.name) == 64 and sha256_file(p) != f"sha256:{p.name}"
    ]
    images = ImageCache(cache)
    for snap in images.snapshots_dir.iterdir():
        if not snap.name.endswith(META_JSON_POSTFIX):
            problems += images.verify_snapshot(snap, snap.name.replace("-", ":", 1), full=True)
    return problems


def overwrite(path: Path, text: str = "{}\n") -> None:
    """``echo '{}' > path``: truncate and write through the existing inode (what a shell does)."""
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(text.encode())


@pytest.fixture
def image_tag(registry: RunningRegistry, src_store: BlobStore) -> str:
    prefix = f"wl-staged-{uuid.uuid4().hex[:8]}"
    img = build_image(src_store, [{"etc/hello": f"{prefix}\n".encode()}], cmd=["/bin/sh"])
    push_image(registry.url, f"{prefix}/img", "1.0", src_store, img.manifest)
    return f"{registry.host}/{prefix}/img:1.0"


def staged_files(layout: Path) -> dict[str, Path]:
    return {p.relative_to(layout).as_posix(): p for p in layout.rglob("*") if p.is_file()}


def test_only_blobs_are_shared_with_the_cache_and_they_are_read_only(image_tag: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    layout = materialize(image_tag, cache, tmp_path / "run1")
    meta = next((tmp_path / "run1").glob("*_meta.json"))
    files = staged_files(layout)
    assert {"index.json", "oci-layout"} <= set(files)
    blobs = {rel: p for rel, p in files.items() if is_blob_path(rel)}
    assert len(blobs) >= 3  # manifest, config, layer
    store_inodes = {p.stat().st_ino for p in (cache / "blobs").rglob("*") if p.is_file()}
    for rel, p in blobs.items():
        st = p.stat()
        assert st.st_ino in store_inodes, f"{rel} is not a link of the store's blob"
        assert stat.S_IMODE(st.st_mode) == BLOB_MODE == 0o444, f"{rel} is writable: {oct(st.st_mode)}"
        if os.geteuid() != 0:  # root writes through any mode; everyone else is refused
            with pytest.raises(PermissionError):
                open(p, "r+b").close()
    for p in (meta, files["index.json"], files["oci-layout"]):
        st = p.stat()
        assert st.st_nlink == 1, f"{p} is shared with another file ({st.st_nlink} links)"
        assert st.st_ino not in store_inodes
        assert stat.S_IMODE(st.st_mode) == 0o644


@pytest.mark.parametrize("victim", ["_meta.json", "index.json", "oci-layout"])
def test_writing_to_a_staged_file_leaves_the_cache_intact(
    image_tag: str, tmp_path: Path, victim: str
) -> None:
    cache = tmp_path / "cache"
    layout = materialize(image_tag, cache, tmp_path / "run1")
    first_meta = next((tmp_path / "run1").glob("*_meta.json"))
    original = {p.name: p.read_bytes() for p in (first_meta, layout / "index.json", layout / "oci-layout")}
    target = first_meta if victim == "_meta.json" else layout / victim
    overwrite(target)
    assert target.read_bytes() == b"{}\n"

    again = materialize(image_tag, cache, tmp_path / "run2", "--offline")
    again_meta = next((tmp_path / "run2").glob("*_meta.json"))
    assert again_meta.read_bytes() == original[first_meta.name]
    assert json.loads(again_meta.read_bytes())["image_signature"].startswith("sha256:")
    assert (again / "index.json").read_bytes() == original["index.json"]
    assert (again / "oci-layout").read_bytes() == original["oci-layout"]
    assert damage(cache) == []

    # and the damaged stage dir itself is repaired by staging there again
    materialize(image_tag, cache, tmp_path / "run1", "--offline")
    assert target.read_bytes() == original[target.name]


def test_a_write_to_a_staged_blob_is_refused_or_caught(image_tag: str, tmp_path: Path) -> None:
    """A blob is shared with the store, so it must not be written: 0444 refuses everyone but root;
    root writes through any mode, and then a full check names the damage."""
    cache = tmp_path / "cache"
    layout = materialize(image_tag, cache, tmp_path / "run1")
    index = json.loads((layout / "index.json").read_bytes())
    manifest_hex = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_hex).read_bytes())
    layer = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    size = layer.stat().st_size
    try:
        overwrite(layer, "\0" * size)
    except PermissionError:
        assert os.geteuid() != 0
        assert damage(cache) == []
        return
    assert os.geteuid() == 0, "a non-root process could write to a staged blob"
    assert damage(cache), "a rewritten blob went unnoticed"
    # the trust record (size, mtime) no longer vouches for it, so a re-stage re-hashes and refuses it
    # A re-stage must not hand the altered bytes out as the image (offline they cannot be replaced).
    run2 = tmp_path / "run2"
    again = wl("materialize", image_tag, "--offline", "--cache-dir", str(cache), "--stage-dir", str(run2))
    staged = [
        p for p in run2.rglob("*") if p.is_file() and is_blob_path(p.relative_to(p.parents[2]).as_posix())
    ]
    assert again.returncode != 0 or all(sha256_file(p) == f"sha256:{p.name}" for p in staged), again.stderr


def test_link_layout_stages_the_named_files_and_replaces_an_old_copy(tmp_path: Path) -> None:
    """``link_layout`` (what a re-stage of a cached layout uses): ``oci-layout`` and ``index.json``
    are copies, each named blob is a link of the source's, nothing else is staged, and a stage
    already there is replaced whole."""
    from wfexs_like.images.staging import link_layout

    src = tmp_path / "src"
    (src / "blobs" / "sha256").mkdir(parents=True)
    (src / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (src / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    (src / "stray").write_text("not part of a layout")
    names = [c * 64 for c in "ab"]
    for n in names:
        (src / "blobs" / "sha256" / n).write_bytes(n.encode())
    dst = tmp_path / "stage" / "img"
    dst.mkdir(parents=True)
    (dst / "old").write_text("from an earlier run")

    counts = link_layout(src, dst, names, sync=False)

    staged = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert staged == sorted(["oci-layout", "index.json", *(f"blobs/sha256/{n}" for n in names)])
    for n in names:
        assert (dst / "blobs" / "sha256" / n).stat().st_ino == (src / "blobs" / "sha256" / n).stat().st_ino
    for name in ("oci-layout", "index.json"):
        assert (dst / name).read_bytes() == (src / name).read_bytes()
        assert (dst / name).stat().st_ino != (src / name).stat().st_ino
    assert counts["hardlink"] == 2 and counts["hardlink"] + counts["reflink"] + counts["copy"] == 4
    assert [p.name for p in dst.parent.iterdir()] == ["img"]  # no temporary dir left beside it

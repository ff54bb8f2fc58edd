"""``cache ls`` reads a summary of what earlier scans derived; it must never show anything but the files.

Every check compares what a scan through the summary finds with what a scan
reading every record, sidecar and manifest finds, after the cache was
changed the ways other processes change it: entries added and removed, a
record rewritten in place, the summary itself deleted, corrupted or of
another version.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.registry import RunningRegistry
from tests.test_cli_cache import cli
from tests.test_lifecycle import DAY, Images, materialize
from wfexs_like.cache import ImageCache, remove_references, scan_entries, verify_cache
from wfexs_like.cache.inventory import SUMMARY_FILE
from wfexs_like.images.blobstore import BlobStore


@pytest.fixture
def images(registry: RunningRegistry, src_store: BlobStore) -> Images:
    return Images(registry, src_store)


def age(cache_dir: Path, days: float = 40) -> None:
    """Make every record and sidecar look written ``days`` ago: old enough for the summary to keep."""
    ts = time.time() - days * DAY
    for sub in ("tags", "refs", "snapshots"):
        for root, _dirs, files in os.walk(cache_dir / sub):
            for f in files:
                if f.endswith(".json"):
                    os.utime(os.path.join(root, f), (ts, ts))


def truth(cache_dir: Path) -> list[dict[str, Any]]:
    """What ``cache ls --json`` must say: every file read, no summary used."""
    return [e.to_json() for e in scan_entries(ImageCache(cache_dir), summary=False)]


def listed(cache_dir: Path) -> list[dict[str, Any]]:
    return json.loads(cli("cache", "ls", "--json", cache=cache_dir).stdout)


def summary(cache_dir: Path) -> dict[str, Any]:
    return json.loads((cache_dir / SUMMARY_FILE).read_bytes())


def test_ls_through_the_summary_follows_other_processes(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf1", [images.tag("x"), images.tag("y")])
    age(cache_dir)
    first = listed(cache_dir)
    assert first == truth(cache_dir) and len(first) == 4
    kept = summary(cache_dir)
    assert len(kept["records"]) == 4 and len(kept["images"]) == 2 and len(kept["snapshots"]) == 2
    assert listed(cache_dir) == first  # served from the summary now

    # another process adds an entry
    materialize(cache_dir, tmp_path / "wf2", [images.tag("z")])
    after_add = listed(cache_dir)
    assert after_add == truth(cache_dir)
    assert {e["reference"] for e in after_add} == {images.tag(n) for n in "xyz"}

    # another process removes one
    remove_references(ImageCache(cache_dir), [images.tag("y")])
    after_rm = listed(cache_dir)
    assert after_rm == truth(cache_dir)
    assert {e["reference"] for e in after_rm} == {images.tag("x"), images.tag("z")}
    assert not any(images.tag("y") in json.dumps(v) for v in summary(cache_dir)["records"].values())


def test_a_record_edited_in_place_with_its_mtime_restored_is_read_again(
    tmp_path: Path, images: Images
) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y")])
    age(cache_dir)
    listed(cache_dir)
    [x_image] = [e for e in scan_entries(ImageCache(cache_dir)) if e.kind == "image" and "/x:" in e.reference]
    st = os.stat(x_image.record_file)
    rec = json.loads(Path(x_image.record_file).read_bytes())
    rec["manifest_digest"] = images.digest("y")  # same length: same size, same inode
    with open(x_image.record_file, "r+b") as fh:
        fh.write(json.dumps(rec, indent=2, sort_keys=True).encode() + b"\n")
    os.utime(x_image.record_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(x_image.record_file)
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (st.st_size, st.st_ino, st.st_mtime_ns)

    now = listed(cache_dir)
    assert now == truth(cache_dir)
    [entry] = [e for e in now if e["kind"] == "image" and "/x:" in e["reference"]]
    assert entry["digest"] == images.digest("y")


@pytest.mark.parametrize("damage", ["missing", "garbage", "not-an-object", "other-version", "wrong-types"])
def test_a_missing_or_damaged_summary_is_rebuilt(tmp_path: Path, images: Images, damage: str) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("z")])
    age(cache_dir)
    expected = listed(cache_dir)
    path = cache_dir / SUMMARY_FILE
    good = summary(cache_dir)
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif damage == "not-an-object":
        path.write_text("[1, 2, 3]")
    elif damage == "other-version":
        path.write_text(json.dumps({**good, "version": 999, "records": {}}))
    else:  # every value of the wrong shape
        bad = {k: ({n: "x" for n in v} if isinstance(v, dict) else v) for k, v in good.items()}
        path.write_text(json.dumps(bad))
    assert listed(cache_dir) == expected == truth(cache_dir)
    assert summary(cache_dir)["version"] == good["version"]
    assert set(summary(cache_dir)["records"]) == set(good["records"])


def test_dry_runs_use_the_summary_but_write_nothing(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x")])
    assert not (cache_dir / SUMMARY_FILE).exists()
    cli("cache", "prune", "--older-than", "1s", "--dry-run", cache=cache_dir)
    cli("cache", "rm", "--dry-run", images.tag("x"), cache=cache_dir)
    cli("cache", "verify", cache=cache_dir)
    assert not (cache_dir / SUMMARY_FILE).exists()
    listed(cache_dir)
    assert (cache_dir / SUMMARY_FILE).exists()


def test_verify_calls_a_blob_that_is_gone_missing_not_corrupt(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x")])
    cache = ImageCache(cache_dir)
    layer = images.built["x"].manifest.layers[1].digest
    cache.store.path(layer).unlink()
    # the OCI layout keeps its own link of the layer: only the image entry lacks it
    report = verify_cache(cache)
    [bad] = report.bad_blobs
    assert bad.digest == layer and bad.problem.startswith("missing")
    [broken] = report.broken
    assert broken.entry.kind == "image"
    assert f"blob {layer} is missing" in broken.problems
    assert not any("corrupt" in p for p in broken.problems)
    out = cli("cache", "verify", cache=cache_dir, check=1).stdout
    assert "missing" in out and "corrupt" not in out


def test_a_blob_removed_after_the_summary_is_seen_missing(tmp_path: Path, images: Images) -> None:
    """The store is not listed again while its dir is as the summary saw it; removing a blob
    changes the dir, so the next listing reads it again and finds the blob gone."""
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x")])
    age(cache_dir)
    blobs_dir = ImageCache(cache_dir).store.blobs_dir
    hour_ago = time.time() - 3600
    os.utime(blobs_dir, (hour_ago, hour_ago))
    listed(cache_dir)
    assert summary(cache_dir)["blobs_dir"] is not None, "the summary did not keep the store's stat key"
    assert listed(cache_dir) == truth(cache_dir)

    layer = images.built["x"].manifest.layers[1].digest
    ImageCache(cache_dir).store.path(layer).unlink()
    now = listed(cache_dir)
    assert now == truth(cache_dir)
    [image] = [e for e in now if e["kind"] == "image"]
    assert image["missing"] == [layer]

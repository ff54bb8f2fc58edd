"""``wfexs-like cache ...`` end to end: the installed command as a subprocess, on caches filled by real
materializes against the loopback registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.registry import RunningRegistry
from tests.support.tools import cli_modules
from tests.test_lifecycle import REPO, Images, backdate, flip_byte, listing, materialize
from wfexs_like.cache import ImageCache, scan_entries
from wfexs_like.digests import sha256_file

WFEXS_LIKE = Path(sys.executable).with_name("wfexs-like")
SUBCOMMANDS = ("ls", "du", "inspect", "verify", "rm", "prune", "gc")


def cli(*args: str, cache: Path | None = None, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    cmd = [str(WFEXS_LIKE), *args] + (["--cache-dir", str(cache)] if cache is not None else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    if check is not None:
        assert proc.returncode == check, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def images(registry: RunningRegistry, src_store) -> Images:
    return Images(registry, src_store)


def test_every_cache_subcommand_help_ends_with_examples() -> None:
    for name in ("", *SUBCOMMANDS):
        out = cli("cache", *([name] if name else []), "--help").stdout
        tail = out.rstrip().split("\n\nexamples:\n", 1)
        assert len(tail) == 2, f"cache {name} --help has no examples at the end:\n{out}"
        assert all(line.startswith("  wfexs-like cache") for line in tail[1].splitlines())
        if name:
            assert f"wfexs-like cache {name}" in tail[1]


def test_usage_errors_exit_2_with_one_line() -> None:
    for args, needle in (
        (("cache", "prune"), "say what to prune"),
        (("cache", "prune", "--older-than", "30x"), "invalid duration"),
        (("cache", "prune", "--max-size", "lots"), "invalid size"),
        (("cache", "verify", "--offline"), "--repair"),
        (("cache", "ls", "--kin", "sif"), "unrecognized arguments"),  # no abbreviations
    ):
        proc = cli(*args, check=2)
        assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_ls_du_inspect_tables_and_json(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    [x, y] = materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y")])
    entries = scan_entries(ImageCache(cache_dir))

    rows = json.loads(cli("cache", "ls", "--json", cache=cache_dir).stdout)
    assert [(r["reference"], r["kind"], r["digest"], r["size"]) for r in rows] == [
        (e.reference, e.kind, e.digest, e.size) for e in entries
    ]
    assert all(r["platform"] == "linux/amd64" and r["last_used"] for r in rows)
    table = cli("cache", "ls", cache=cache_dir).stdout.splitlines()
    assert table[0].split() == ["REFERENCE", "PLATFORM", "KIND", "DIGEST", "SIZE", "LAST", "USED"]
    body = [line.split() for line in table[1:5]]
    assert [(r[0], r[2]) for r in body] == [(e.reference, e.kind) for e in entries]
    assert all(r[3] == "sha256:" + (e.digest or "")[7:19] for r, e in zip(body, entries, strict=True))
    assert "counts once per image" in table[-1]
    only = json.loads(cli("cache", "ls", "--kind", "image", "--json", cache=cache_dir).stdout)
    assert {r["kind"] for r in only} == {"image"} and len(only) == 2

    du = json.loads(cli("cache", "du", "--json", cache=cache_dir).stdout)
    assert du["shared"]["files"] == 1 and du["unreferenced"]["files"] == 0
    assert du["per_kind"]["image"]["entries"] == 2 and du["per_kind"]["sif"]["entries"] == 0
    assert du["blobs"]["files"] == len(images.blobs("x") | images.blobs("y"))
    text = cli("cache", "du", cache=cache_dir).stdout
    assert "shared (several images)" in text and "total" in text

    info = json.loads(cli("cache", "inspect", images.tag("x"), "--json", cache=cache_dir).stdout)
    assert info["references"] == [images.tag("x")] and info["in_use"] is False
    layout = next(e for e in info["entries"] if e["kind"] == "oci-layout")
    assert layout["fingerprint"] == x.image_signature and layout["metadata"][
        "manifest_digest"
    ] == images.digest("x")
    assert layout["staged"] == [
        {"path": str(x.localPath), "metadata_path": str(x.metadataLocalPath), "present": True}
    ]
    assert {b["digest"] for b in layout["blobs"]} == images.blobs("x")
    text = cli("cache", "inspect", images.digest("y")[:19], cache=cache_dir).stdout
    assert images.tag("y") in text and str(y.localPath) in text and "shared with " + images.tag("x") in text
    missing = cli("cache", "inspect", "nothing/here:1", cache=cache_dir, check=1)
    assert "nothing/here:1" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_commands_on_a_missing_cache_create_nothing(tmp_path: Path) -> None:
    cache_dir = tmp_path / "no-cache"
    assert json.loads(cli("cache", "ls", "--json", cache=cache_dir).stdout) == []
    cli("cache", "verify", cache=cache_dir)
    cli("cache", "gc", cache=cache_dir)
    cli("cache", "prune", "--unused", cache=cache_dir)
    # --json always prints JSON, of the same shape as with a cache
    verify = json.loads(cli("cache", "verify", "--json", cache=cache_dir).stdout)
    assert verify["ok"] is True and verify["blobs_checked"] == 0 and verify["bad_blobs"] == []
    gc = json.loads(cli("cache", "gc", "--dry-run", "--json", cache=cache_dir).stdout)
    assert gc == {"dry_run": True, "removed": [], "spared": [], "freed_bytes": 0}
    pruned = json.loads(cli("cache", "prune", "--older-than", "30d", "--json", cache=cache_dir).stdout)
    assert pruned["removed"] == [] and pruned["freed_bytes"] == 0 and pruned["dry_run"] is False
    assert not cache_dir.exists()


def test_verify_finds_a_flipped_byte_and_repair_fixes_it(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    before = materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y"), images.tag("z")])
    cli("cache", "verify", cache=cache_dir)
    layer = images.built["x"].manifest.layers[1].digest  # x's own layer: only x breaks
    flip_byte(ImageCache(cache_dir).store.path(layer))

    found = cli("cache", "verify", cache=cache_dir, check=1)
    assert f"BAD {layer}" in found.stdout
    assert f"breaks {images.tag('x')} (image, oci-layout)" in found.stdout
    assert images.tag("y") not in found.stdout and images.tag("z") not in found.stdout
    assert "problems remain" in found.stdout and "--repair" in found.stdout
    again = json.loads(cli("cache", "verify", "--json", cache=cache_dir, check=1).stdout)
    assert again["ok"] is False  # moved aside by the first run: gone from the store, and still named
    [bad] = again["bad_blobs"]
    assert bad["digest"] == layer and bad["problem"].startswith("corrupt: moved aside to ")
    assert bad["problem"].split()[4] == str(cache_dir / "corrupt" / layer.split(":")[1])
    assert {(b["reference"], b["kind"]) for b in again["broken"]} == {
        (images.tag("x"), "image"),
        (images.tag("x"), "oci-layout"),
    }

    repaired = cli("cache", "verify", "--repair", cache=cache_dir)
    assert "re-fetched" in repaired.stdout and "all repaired" in repaired.stdout
    assert sha256_file(ImageCache(cache_dir).store.path(layer)) == layer
    clean = json.loads(cli("cache", "verify", "--full", "--json", cache=cache_dir).stdout)
    assert clean["ok"] and clean["bad_blobs"] == [] and clean["broken"] == []
    after = materialize(
        cache_dir, tmp_path / "wf2", [images.tag("x"), images.tag("y"), images.tag("z")], offline=True
    )
    assert [(c.fingerprint, c.image_signature) for c in after] == [
        (c.fingerprint, c.image_signature) for c in before
    ]


def test_verify_repair_offline_drops_the_broken_entries(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("z")])
    layer = images.built["x"].manifest.layers[1].digest
    flip_byte(ImageCache(cache_dir).store.path(layer))
    out = json.loads(cli("cache", "verify", "--repair", "--offline", "--json", cache=cache_dir).stdout)
    assert out["ok"] and [(b["digest"], b["action"]) for b in out["bad_blobs"]] == [(layer, "removed")]
    assert {(b["reference"], b["kind"], b["action"]) for b in out["broken"]} == {
        (images.tag("x"), "image", "removed"),
        (images.tag("x"), "oci-layout", "removed"),
    }
    assert {r["reference"] for r in json.loads(cli("cache", "ls", "--json", cache=cache_dir).stdout)} == {
        images.tag("z")
    }


CONCURRENT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from wfexs_like.container_factories import DockerContainerFactory
    from wfexs_like.model import ContainerTaggedName, ContainerType
    cache, tag, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    stop = work / "stop"
    f = DockerContainerFactory(containersCacheDir=cache, stagedContainersDir=work / "wf0")
    seen, i = set(), 0
    while i < 3 or not stop.exists():  # before, during and after the prune
        [c] = f.materializeContainers([ContainerTaggedName(tag, ContainerType.Docker)], work / f"wf{i}")
        seen.add((c.fingerprint, c.image_signature))
        if i == 0:
            print("started", flush=True)
        i += 1
    print(json.dumps({"runs": i, "records": sorted(seen)}), flush=True)
    """
)


def test_prune_dry_run_changes_nothing_then_frees_it_while_a_kept_image_materializes(
    tmp_path: Path, images: Images
) -> None:
    cache_dir = tmp_path / "cache"
    [x, y, z] = materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y"), images.tag("z")])
    cache = ImageCache(cache_dir)
    backdate(cache, images.tag("x"), 45)
    backdate(cache, images.tag("z"), 31)

    before = listing(cache_dir)
    dry = json.loads(
        cli("cache", "prune", "--older-than", "30d", "--dry-run", "--json", cache=cache_dir).stdout
    )
    assert listing(cache_dir) == before
    text = cli("cache", "prune", "--older-than", "30d", "--dry-run", cache=cache_dir).stdout
    assert "would remove" in text and images.tag("x") in text and images.tag("y") not in text
    assert listing(cache_dir) == before
    doomed = (images.blobs("x") | images.blobs("z")) - images.blobs("y")
    assert {b["digest"] for b in dry["blobs"]} == doomed
    assert {(e["reference"], e["kind"]) for e in dry["removed"]} == {
        (images.tag(n), k) for n in "xz" for k in ("image", "oci-layout")
    }
    assert dry["freed_bytes"] == sum(b["size"] for b in dry["blobs"]) + dry["snapshot_bytes"]

    work = tmp_path / "busy"
    work.mkdir()
    busy = subprocess.Popen(
        [sys.executable, "-c", CONCURRENT, str(cache_dir), images.tag("y"), str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert busy.stdout is not None and busy.stdout.readline().strip() == "started"
        real = json.loads(cli("cache", "prune", "--older-than", "30d", "--json", cache=cache_dir).stdout)
        (work / "stop").touch()
        out, err = busy.communicate(timeout=300)
    finally:
        if busy.poll() is None:
            busy.kill()
    assert busy.returncode == 0, err
    result = json.loads(out)
    assert result["runs"] >= 3 and result["records"] == [[y.fingerprint, y.image_signature]]
    assert {**real, "dry_run": True} == dry
    store = ImageCache(cache_dir).store
    assert all(not store.has(d) for d in doomed)
    assert all(store.has(d) for d in images.blobs("y"))
    assert not Path(cache.snapshot_path(x.image_signature or "")).exists()
    assert not Path(cache.snapshot_path(z.image_signature or "")).exists()
    assert cli("cache", "verify", "--full", cache=cache_dir).returncode == 0
    [y2] = materialize(cache_dir, tmp_path / "wf3", [images.tag("y")], offline=True)
    assert y2.image_signature == y.image_signature


def test_gc_removes_litter_and_unreferenced_blobs_keeps_referenced(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("z")])
    store = ImageCache(cache_dir).store
    referenced = set(store.iter_digests())
    orphan = store.put_bytes(b"unreferenced")
    partial = store.tmp_dir / ("sha256-" + "c" * 64 + ".partial")
    partial.write_bytes(b"half")
    build = store.tmp_dir / "sif-1234abcd"
    (build / "squashfs").mkdir(parents=True)
    (build / "squashfs" / "out.sqfs").write_bytes(b"s" * 4096)

    kept = json.loads(cli("cache", "gc", "--json", cache=cache_dir).stdout)  # default --min-age 1h
    assert kept["removed"] == [] and store.has(orphan) and partial.exists() and build.exists()
    before = listing(cache_dir)
    dry = cli("cache", "gc", "--min-age", "0s", "--dry-run", cache=cache_dir).stdout
    assert listing(cache_dir) == before
    assert "would remove unreferenced blob: 1" in dry and "would remove abandoned work dir: 1" in dry
    done = json.loads(cli("cache", "gc", "--min-age", "0s", "--json", cache=cache_dir).stdout)
    removed = {(Path(i["path"]), i["what"]) for i in done["removed"]}
    assert {
        (store.path(orphan), "unreferenced blob"),
        (partial, "stale partial download"),
        (build, "abandoned work dir"),
    } <= removed
    assert not partial.exists() and not build.exists() and not store.has(orphan)
    assert set(store.iter_digests()) == referenced
    assert cli("cache", "verify", "--full", cache=cache_dir).returncode == 0


def test_rm_then_materialize_fetches_again(tmp_path: Path, images: Images, registry: RunningRegistry) -> None:
    cache_dir = tmp_path / "cache"
    stage = tmp_path / "wf"

    def materialize_cli(*extra: str) -> subprocess.CompletedProcess[str]:
        return cli(
            "materialize", "-q", "--engine", "docker", "--stage-dir", str(stage), "--format", "json",
            *extra, images.tag("x"), cache=cache_dir, check=None,
        )  # fmt: skip

    first = materialize_cli()
    assert first.returncode == 0, first.stderr
    gone = cli("cache", "rm", images.tag("x"), "nothing/like:this", cache=cache_dir, check=1)
    assert "removed:" in gone.stdout and images.tag("x") in gone.stdout
    assert "nothing/like:this" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1
    assert json.loads(cli("cache", "ls", "--json", cache=cache_dir).stdout) == []
    assert materialize_cli("--offline").returncode == 1
    mark = registry.mark()
    again = materialize_cli()
    assert again.returncode == 0, again.stderr
    fetched = {g.path.rsplit("/", 1)[1] for g in registry.blob_gets(mark)}
    assert fetched == images.blobs("x") - {images.digest("x")}  # config and every layer, again
    assert json.loads(again.stdout) == json.loads(first.stdout)


def test_rm_refuses_what_a_running_process_holds(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("z")])
    hold = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from wfexs_like.cache import ImageCache; c = ImageCache(sys.argv[1]); "
            "c.hold(sys.argv[2], None); print('held', flush=True); sys.stdin.read()",
            str(cache_dir),
            images.tag("z"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert hold.stdout is not None and hold.stdout.readline().strip() == "held"
        refused = cli("cache", "rm", images.tag("z"), cache=cache_dir, check=1)
        assert "in use by a running process" in refused.stderr
        assert json.loads(cli("cache", "inspect", images.tag("z"), "--json", cache=cache_dir).stdout)[
            "in_use"
        ]
    finally:
        hold.stdin.close()  # type: ignore[union-attr]
        hold.wait(timeout=10)
    cli("cache", "rm", images.tag("z"), cache=cache_dir)
    assert json.loads(cli("cache", "ls", "--json", cache=cache_dir).stdout) == []


def test_prune_max_size_parses_units_and_removes_least_recently_used(tmp_path: Path, images: Images) -> None:
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("y"), images.tag("z")])
    cache = ImageCache(cache_dir)
    backdate(cache, images.tag("z"), 2)  # z is the least recently used
    y_bytes = sum(cache.store.size(d) for d in images.blobs("y"))
    limit_kib = -(-y_bytes // 1024)  # room for y alone, not for z too
    out = json.loads(cli("cache", "prune", "--max-size", f"{limit_kib}KiB", "--json", cache=cache_dir).stdout)
    assert {e["reference"] for e in out["removed"]} == {images.tag("z")}
    assert {b["digest"] for b in out["blobs"]} == images.blobs("z")
    assert sum(cache.store.size(d) for d in cache.store.iter_digests()) == y_bytes <= limit_kib * 1024


#: What writes a cache and what hashes: a listing whose summary is current needs none of it.
WRITERS = (
    "wfexs_like.cache.snapshots",
    "wfexs_like.images.blobstore",
    "wfexs_like.images.manifest",
    "wfexs_like.images.layout",
    "wfexs_like.model",
    "wfexs_like.references",
    "hashlib",
)
#: What reports progress and logs, and what building records takes: a listing does neither.
REPORTING = ("logging", "dataclasses", "wfexs_like.progress", "wfexs_like.cli.render")


def test_ls_reads_a_current_summary_without_the_writing_machinery(tmp_path: Path, images: Images) -> None:
    """``cache ls`` names the cache's directories (``CacheDirs``) and reads its files; the blob store,
    snapshot and manifest code load only for what the summary does not vouch for."""
    cache_dir = tmp_path / "cache"
    materialize(cache_dir, tmp_path / "wf", [images.tag("x"), images.tag("y")])
    hour_ago = time.time() - 3600  # older than the summary's racy window: it may vouch for them
    for dirpath, _dirs, files in os.walk(cache_dir):
        for name in files:
            os.utime(os.path.join(dirpath, name), (hour_ago, hour_ago))
    cli("cache", "ls", cache=cache_dir)  # writes the summary

    out, loaded = cli_modules("cache", "ls", "--json", "--cache-dir", str(cache_dir), tmp=tmp_path)
    assert "wfexs_like.cache.inventory" in loaded, "the run did not reach the scan"
    assert sorted(loaded & set(WRITERS)) == []
    assert sorted(loaded & set(REPORTING)) == []
    rows = json.loads(out.stdout)
    entries = scan_entries(ImageCache(cache_dir), summary=False)
    assert [(r["reference"], r["kind"], r["digest"], r["size"]) for r in rows] == [
        (e.reference, e.kind, e.digest, e.size) for e in entries
    ]
    assert len(rows) == 4


def test_cache_dirs_are_the_directories_image_cache_uses(tmp_path: Path) -> None:
    from wfexs_like import model
    from wfexs_like.cache import names
    from wfexs_like.cache.names import CacheDirs

    assert names.META_JSON_POSTFIX == model.META_JSON_POSTFIX

    c, d = ImageCache(tmp_path / "c"), CacheDirs(tmp_path / "c")
    assert (d.root, d.blobs_dir, d.snapshots_dir, d.tags_dir, d.refs_dir, d.usage_dir) == (
        c.root, c.store.blobs_dir, c.snapshots_dir, c.tags_dir, c.refs_dir, c.usage.root,
    )  # fmt: skip

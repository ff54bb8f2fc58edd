"""A large cache, written directly in the cache's own format, and the lifecycle verbs on it.

Materializing 1,000 images to fill a cache would take longer than the rest
of the benchmark; what ``cache ls``/``prune``/``verify`` cost depends only on
the files the cache holds, so they are written here the way the cache
writes them (``wfexs_like/cache/snapshots.py``, ``images/blobstore.py``,
``cache/usage.py``): blobs under ``blobs/sha256`` (read-only), a trust
record per blob taken after its last link, ``tags/`` and ``refs/oci-layout/``
records keyed by ``entry_key``, an OCI layout per image whose blobs are hard
links of the store's, its ``_meta.json`` sidecar, and usage records. Half
the images were last used 60 days ago, so ``prune --older-than 30d`` has
half to select. The generated cache is checked by the tool itself before
anything is timed: ``cache ls --json`` must list every entry and ``cache
verify`` must find it intact (its exit status says so).

Two caches: 1,000 images of 10 small blobs (10,000 blobs) for ``ls``,
``prune`` and the cheap ``verify``; and one of fewer, bigger blobs (2 GB)
for ``verify --full`` against ``sha256sum`` over the very same files
(both read them from the page cache: they were just written).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

from wfexs_like.cache.snapshots import entry_key
from wfexs_like.digests import sha256_bytes

from .context import Context, Scenario, Tool
from .proc import measure, run, settle

DAY = 86_400
MB = 1_000_000
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _record(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _compact(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class _Writer:
    """Writes one cache dir; remembers which blobs it stored so trust records come last."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        for sub in (
            "blobs/sha256",
            "trust/sha256",
            "tags",
            "refs/oci-layout",
            "snapshots",
            "tmp",
            "locks",
            "usage/image",
            "usage/oci-layout",
        ):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.stored: list[str] = []
        self.bytes = 0

    def blob(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        path = self.blobs / digest.split(":", 1)[1]
        if not path.exists():
            path.write_bytes(data)
            path.chmod(0o444)
            self.stored.append(digest)
            self.bytes += len(data)
        return digest

    def image(self, reference: str, layers: list[bytes], aged: bool) -> None:
        layer_descs = [{"mediaType": OCI_LAYER_GZIP, "digest": self.blob(b), "size": len(b)} for b in layers]
        config = _compact(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": "2024-01-01T00:00:00Z",
                "config": {"Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": [sha256_bytes(b) for b in layers]},
            }
        )
        manifest = _compact(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": self.blob(config), "size": len(config)},
                "layers": layer_descs,
            }
        )
        m_digest = self.blob(manifest)
        index = _compact(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": m_digest,
                        "size": len(manifest),
                        "platform": {"architecture": "amd64", "os": "linux"},
                        "annotations": {
                            "io.containerd.image.name": reference,
                            "org.opencontainers.image.ref.name": reference,
                        },
                    }
                ],
            }
        )
        fingerprint = sha256_bytes(index)
        snap = self.root / "snapshots" / fingerprint.replace(":", "-")
        (snap / "blobs" / "sha256").mkdir(parents=True)
        (snap / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (snap / "index.json").write_bytes(index)
        for d in [m_digest, json.loads(manifest)["config"]["digest"], *(x["digest"] for x in layer_descs)]:
            hexd = d.split(":", 1)[1]
            os.link(self.blobs / hexd, snap / "blobs" / "sha256" / hexd)
        repo = reference.rsplit(":", 1)[0]
        _record(
            snap.with_name(snap.name + "_meta.json"),
            {
                "tagged_name": reference,
                "manifest_digest": m_digest,
                "image_signature": fingerprint,
                "image_id": json.loads(manifest)["config"]["digest"],
                "architecture": "amd64",
                "os": "linux",
                "variant": None,
                "registry": repo.split("/", 1)[0],
                "repository": repo.split("/", 1)[1],
                "size": sum(len(b) for b in layers) + len(config) + len(manifest),
                "layers": [x["digest"] for x in layer_descs],
                "media_type": OCI_MANIFEST,
                "snapshot_kind": "oci-layout",
                "extra": {"index_digest": None, "source": "registry"},
            },
        )
        key = entry_key(reference, None)
        records = [self.root / "tags" / f"{key}.json", self.root / "refs" / "oci-layout" / f"{key}.json"]
        _record(records[0], {"reference": reference, "platform": None, "manifest_digest": m_digest})
        _record(
            records[1],
            {"reference": reference, "kind": "oci-layout", "platform": None, "fingerprint": fingerprint},
        )
        usage = [self.root / "usage" / "image" / key, self.root / "usage" / "oci-layout" / key]
        for u in usage:
            u.touch()
        if aged:
            then = time.time() - 60 * DAY
            for p in (*records, *usage):
                os.utime(p, (then, then))

    def trust(self) -> None:
        """Trust records last: they hold the ctime, which every hard link above changed."""
        for digest in self.stored:
            hexd = digest.split(":", 1)[1]
            st = (self.blobs / hexd).stat()
            key = {
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "ino": st.st_ino,
                "ctime_ns": st.st_ctime_ns,
            }
            (self.root / "trust" / "sha256" / hexd).write_text(json.dumps(key))


def generate(root: Path, images: int, layers_per_image: int, layer_bytes: int, seed: int) -> int:
    """Write a cache of ``images`` images of ``layers_per_image`` random layers; returns blob bytes."""
    rng = random.Random(seed)
    w = _Writer(root)
    for i in range(images):
        size = layer_bytes if layer_bytes > 64_000 else rng.randrange(layer_bytes // 2, layer_bytes)
        layers = [rng.randbytes(size) for _ in range(layers_per_image)]
        w.image(f"127.0.0.1:5999/wfexs-bench/cache-{i // 100}/img-{i:04d}:1", layers, aged=i % 2 == 0)
    w.trust()
    return w.bytes


def run_all(ctx: Context) -> None:
    d = ctx.scratch / "bigcache"
    shutil.rmtree(d, ignore_errors=True)
    plan = ctx.plan
    try:
        big, verify = d / "big", d / "verify"
        generate(big, plan.cache_images, plan.blobs_per_image - 2, 4096, seed=1)
        blobs = len(os.listdir(big / "blobs" / "sha256"))
        listed = json.loads(run([str(ctx.wfexs_like), "cache", "ls", "--json", "--cache-dir", str(big)]))
        if len(listed) != 2 * plan.cache_images:
            raise RuntimeError(
                f"the generated cache lists {len(listed)} entries, not {2 * plan.cache_images}"
            )
        dry = run(
            [
                str(ctx.wfexs_like),
                "cache",
                "prune",
                "--older-than",
                "30d",
                "--dry-run",
                "--json",
                "--cache-dir",
                str(big),
            ]
        )
        selected = _count(json.loads(dry))
        common = {"images": plan.cache_images, "blobs": blobs, "entries": len(listed)}
        settle()  # the 20,000 files just generated are written back before anything is timed
        for n in range(plan.cache_runs):
            m = ctx.wl("cache", "ls", "--cache-dir", str(big))
            ctx.add_measured(Scenario.BIG_CACHE, Tool.WL_CACHE_LS, n, m, **common)
            m = ctx.wl("cache", "prune", "--older-than", "30d", "--dry-run", "--cache-dir", str(big))
            ctx.add_measured(Scenario.BIG_CACHE, Tool.WL_CACHE_PRUNE, n, m, selected=selected, **common)
            m = ctx.wl("cache", "verify", "--cache-dir", str(big))
            ctx.add_measured(Scenario.BIG_CACHE, Tool.WL_CACHE_VERIFY, n, m, **common)

        layer = 62_500_000 if plan.verify_mb >= 1000 else 16_000_000
        images = max(1, plan.verify_mb * MB // (2 * layer))
        total = generate(verify, images, 2, layer, seed=2)
        files = sorted(str(p) for p in (verify / "blobs" / "sha256").iterdir())
        settle()
        for n in range(plan.runs):
            order = ("ours", "sha256sum") if n % 2 == 0 else ("sha256sum", "ours")
            for who in order:
                if who == "ours":
                    m = ctx.wl("cache", "verify", "--full", "--cache-dir", str(verify))
                    tool = Tool.WL_VERIFY_FULL
                else:
                    m = measure(["sha256sum", *files])
                    tool = Tool.SHA256SUM
                ctx.add_measured(
                    Scenario.VERIFY, tool, n, m, bytes=total, files=len(files), throughput=total / m.seconds
                )
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _count(report: object) -> int | None:
    """How many entries a ``prune --dry-run --json`` report would remove (its shape is the CLI's)."""
    if isinstance(report, dict):
        for key in ("removed", "entries", "would_remove"):
            if isinstance(report.get(key), list):
                return len(report[key])
    if isinstance(report, list):
        return len(report)
    return None

"""The images the newer scenarios need, built once and kept in the benchmark's registry.

- ``small``: 50 tiny images (busybox, shared, plus one unique 64 kB layer
  each) under ``wfexs-bench/small:1..50``: the parallelism scenario, and the
  small half of the warm re-stage.
- ``big``: one image of random, incompressible layers (1 GB; 200 MB for
  ``--quick``) under ``wfexs-bench/big:<size>``: cold materialize of a large
  image, and peak RSS while streaming it. Beside it, in the same repository,
  ``large-1..10``: the big image plus one unique small layer each, the large
  half of the warm re-stage (ten distinct images whose bytes are mostly
  shared, as a lab's images share bases; the registry stores the big layers
  once, and a push finds them already there).

Everything is deterministic (seeded ``random``, fixed mtimes, gzip without
timestamps), so a rebuild gives the same digests; a stamp per set records
them, trusted only while the registry still serves every one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from tests.support.imagegen import MTIME, build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.images.blobstore import BlobStore, BlobWriter
from wfexs_like.images.manifest import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Manifest,
    parse_manifest_or_index,
)

from .images import MANIFEST_ACCEPT

MB = 1_000_000
CHUNK = 1 << 20


@dataclass(frozen=True)
class Pushed:
    """One pushed image: where it is, its pin, and its compressed size (config + layers)."""

    repo: str
    tag: str
    digest: str
    compressed: int

    def ref(self, host: str) -> str:
        return f"{host}/{self.repo}:{self.tag}"


def _serves(registry: RunningRegistry, images: Sequence[Pushed]) -> bool:
    with requests.Session() as s:
        s.trust_env = False
        for img in images:
            r = s.head(
                f"{registry.url}/v2/{img.repo}/manifests/{img.tag}",
                headers={"Accept": MANIFEST_ACCEPT},
                timeout=30,
            )
            if r.status_code != 200 or r.headers.get("Docker-Content-Digest") != img.digest:
                return False
    return True


def _stamped(work: Path, name: str, registry: RunningRegistry) -> list[Pushed] | None:
    stamp = work / f"set-{name}.json"
    if not stamp.is_file():
        return None
    images = [Pushed(**d) for d in json.loads(stamp.read_text())]
    return images if _serves(registry, images) else None


def _stamp(work: Path, name: str, images: list[Pushed]) -> None:
    (work / f"set-{name}.json").write_text(json.dumps([asdict(i) for i in images], indent=2) + "\n")


def _push(registry: RunningRegistry, store: BlobStore, repo: str, tag: str, m: Manifest) -> Pushed:
    digest = push_image(registry.url, repo, tag, store, m)
    return Pushed(repo, tag, digest, m.config.size + sum(d.size for d in m.layers))


# -- small: 50 tiny images -------------------------------------------------------------------
def small_set(work: Path, registry: RunningRegistry, count: int = 50) -> list[Pushed]:
    """``wfexs-bench/small:1..count``; built and pushed only when the stamp is stale."""
    name = f"small-{count}"
    found = _stamped(work, name, registry)
    if found is not None:
        return found
    store_dir = work / "small-store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = BlobStore(store_dir)
    rng = random.Random(50)
    out = []
    try:
        for i in range(1, count + 1):
            img = build_image(store, [busybox_base_layer(), {f"opt/small/{i}.bin": rng.randbytes(64_000)}])
            out.append(_push(registry, store, "wfexs-bench/small", str(i), img.manifest))
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    _stamp(work, name, out)
    return out


# -- big: random layers, streamed --------------------------------------------------------------
class _Sink:
    """The file object gzip writes to: the blob writer (hashing the compressed bytes as they go)."""

    def __init__(self, writer: BlobWriter) -> None:
        self.writer = writer

    def write(self, data: bytes) -> int:
        self.writer.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class _Tee:
    """The file object tar writes to: hashes the uncompressed stream (the diff id), passes it on."""

    def __init__(self, out: gzip.GzipFile) -> None:
        self.out = out
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.out.write(data)


class _Random:
    """``size`` seeded random bytes, read in chunks: the layer's file body, never all in memory."""

    def __init__(self, rng: random.Random, size: int) -> None:
        self.rng = rng
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return self.rng.randbytes(n)


def _random_layer(store: BlobStore, rng: random.Random, files: Sequence[tuple[str, int]]) -> tuple[dict, str]:
    """One gzip layer of random files, streamed into the store; (descriptor json, diff id)."""
    with store.writer() as w:
        gz = gzip.GzipFile(fileobj=_Sink(w), mode="wb", compresslevel=1, mtime=0)  # type: ignore[arg-type]
        tee = _Tee(gz)
        with tarfile.open(fileobj=tee, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
            for name, size in files:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime, ti.mode = size, MTIME, 0o644
                tf.addfile(ti, _Random(rng, size))
        gz.close()
    desc = {"mediaType": OCI_LAYER_GZIP, "digest": w.digest, "size": w.written}
    return desc, "sha256:" + tee.hash.hexdigest()


def _compose(store: BlobStore, layers: Sequence[tuple[dict, str]], label: str) -> Manifest:
    """Config and manifest over already stored layers (what ``docker build`` would write)."""
    created = "2024-01-01T00:00:00Z"
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "Labels": {"wfexs-bench": label}},
        "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
        "history": [{"created": created, "created_by": f"wfexs-bench layer {i}"} for i in range(len(layers))],
    }
    raw_cfg = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": store.put_bytes(raw_cfg), "size": len(raw_cfg)},
        "layers": [desc for desc, _ in layers],
    }
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    store.put_bytes(raw)
    m = parse_manifest_or_index(raw)
    assert isinstance(m, Manifest)
    return m


def big_set(work: Path, registry: RunningRegistry, megabytes: int, large: int = 10) -> list[Pushed]:
    """``[big, large-1, ..., large-N]`` in ``wfexs-bench/big``: ``megabytes`` of random layers (≥ 8 MB
    each), and N images of those layers plus one small unique layer."""
    name = f"big-{megabytes}m-{large}"
    found = _stamped(work, name, registry)
    if found is not None:
        return found
    store_dir = work / "big-store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = BlobStore(store_dir)
    rng = random.Random(megabytes)
    count = max(1, min(8, megabytes // 8))
    per_layer = megabytes * MB // count
    try:
        layers = [
            _random_layer(store, rng, [(f"opt/big/{i}/part-{j}.bin", per_layer // 4) for j in range(4)])
            for i in range(count)
        ]
        repo = "wfexs-bench/big"
        out = [_push(registry, store, repo, f"{megabytes}m", _compose(store, layers, "big"))]
        for k in range(1, large + 1):
            extra = _random_layer(store, rng, [(f"opt/large/{k}.bin", 64_000)])
            m = _compose(store, [*layers, extra], f"large-{k}")
            out.append(_push(registry, store, repo, f"{megabytes}m-large-{k}", m))
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    _stamp(work, name, out)
    return out

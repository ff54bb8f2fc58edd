"""Build the benchmark's two images once and keep them in a loopback registry.

Why two images: workflows rarely use one container, and the images they use
share bases. The second image is the first plus one small layer, so the
"second image" scenario shows what each tool re-downloads and re-stores.

Two kinds:

- ``debian``: ``debootstrap --variant=minbase bookworm`` imported with
  ``docker import`` (≈ 200 MB uncompressed, ≈ 90 MB gzipped) — a realistic
  base, and the one the reference timings in ENVIRONMENT.md were taken on.
  The second image is ``docker build`` ``FROM`` it, adding a small layer.
- ``synthetic``: ≈ 60 MB of mixed compressible and incompressible files in
  four layers, built in Python with the test suite's image builder (no
  network, a few seconds): what ``--quick`` uses, and the fallback when the
  Debian archive is unreachable.

Everything expensive is cached under ``bench/.work/``: the rootfs tarball,
the registry's storage (the registry listens on a new port every run, but
serves the same repositories from the same directory) and a stamp per kind
recording the pushed manifest digests. A stamp is trusted only if the
registry still answers those digests, so deleting any piece rebuilds it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from tests.support.imagegen import build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.images.blobstore import BlobStore

from . import engines
from .proc import CommandError, run

#: debootstrap uses its configured default mirror unless this variable names one.
DEBIAN_MIRROR = os.environ.get("BENCH_DEBIAN_MIRROR")
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
MB = 1_000_000


@dataclass(frozen=True)
class ImageSet:
    """The two benchmark images as pushed: names, pins and sizes."""

    kind: str
    description: str
    base_repo: str
    tool_repo: str
    tag: str
    base_digest: str
    tool_digest: str
    base_uncompressed: int  # bytes of the base's layer tars
    base_compressed: int  # bytes of the base's blobs in the registry (layers + config)
    base_layers: int

    def base_ref(self, host: str) -> str:
        return f"{host}/{self.base_repo}:{self.tag}"

    def tool_ref(self, host: str) -> str:
        return f"{host}/{self.tool_repo}:{self.tag}"


def prepare(kind: str, work: Path, registry: RunningRegistry) -> ImageSet:
    """The ``kind`` image set, served by ``registry``; built and pushed only if not already there."""
    stamp = work / f"images-{kind}.json"
    if stamp.is_file():
        images = ImageSet(**json.loads(stamp.read_text()))
        if _registry_serves(registry, images):
            return images
    images = _build_debian(work, registry) if kind == "debian" else _build_synthetic(work, registry)
    stamp.write_text(json.dumps(asdict(images), indent=2) + "\n")
    return images


# -- registry queries ------------------------------------------------------------
def _manifest(registry: RunningRegistry, repo: str, tag: str) -> tuple[str, dict] | None:
    """(digest, parsed manifest) of ``repo:tag``, or None when the registry lacks it."""
    with requests.Session() as s:
        s.trust_env = False
        r = s.get(
            f"{registry.url}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}, timeout=30
        )
    if r.status_code != 200:
        return None
    return r.headers["Docker-Content-Digest"], r.json()


def _registry_serves(registry: RunningRegistry, images: ImageSet) -> bool:
    """Whether the registry still has both images under the stamped digests (else rebuild)."""
    for repo, digest in ((images.base_repo, images.base_digest), (images.tool_repo, images.tool_digest)):
        found = _manifest(registry, repo, images.tag)
        if found is None or found[0] != digest:
            return False
    return True


def _pinned(registry: RunningRegistry, repo: str, tag: str) -> tuple[str, int, int]:
    """(manifest digest, compressed bytes, layer count) of a freshly pushed image."""
    found = _manifest(registry, repo, tag)
    if found is None:
        raise RuntimeError(f"{registry.host}/{repo}:{tag} was pushed but the registry does not serve it")
    digest, manifest = found
    compressed = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    return digest, compressed, len(manifest["layers"])


# -- debian: debootstrap + docker import + docker build ---------------------------
def _rootfs_tar(work: Path) -> Path:
    """A tarball of ``debootstrap --variant=minbase bookworm``, made once (about half a minute)."""
    tar = work / "debian-bookworm-minbase.tar"
    if tar.is_file():
        return tar
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get update && apt-get install -y debootstrap)")
    rootfs = work / "rootfs.tmp"
    shutil.rmtree(rootfs, ignore_errors=True)
    try:
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "bookworm",
                str(rootfs),
                *([DEBIAN_MIRROR] if DEBIAN_MIRROR else []),
            ]
        )
        partial = tar.with_suffix(".tar.partial")
        run(["tar", "-C", str(rootfs), "-c", "."], stdout=partial)
        partial.rename(tar)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return tar


def _tool_context(work: Path, base: str) -> Path:
    """A ``docker build`` context adding one small layer (a 2 MB file and a script) to ``base``."""
    ctx = work / "tool-context"
    ctx.mkdir(exist_ok=True)
    (ctx / "payload.bin").write_bytes(random.Random(7).randbytes(2 * MB))
    (ctx / "tool.sh").write_text("#!/bin/sh\necho 'a workflow step'\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nCOPY payload.bin /opt/tool/payload.bin\nCOPY tool.sh /usr/local/bin/tool.sh\n"
        'CMD ["/bin/sh", "/usr/local/bin/tool.sh"]\n'
    )
    return ctx


def _build_debian(work: Path, registry: RunningRegistry) -> ImageSet:
    """Import the rootfs, build the tool image on it, push both, and untag them from Docker."""
    tar = _rootfs_tar(work)
    base_repo, tool_repo, tag = "wfexs-bench/debian", "wfexs-bench/debian-tool", "bookworm"
    base = f"{registry.host}/{base_repo}:{tag}"
    tool = f"{registry.host}/{tool_repo}:{tag}"
    try:
        run(["docker", "import", "--change", 'CMD ["/bin/bash"]', str(tar), base])
        run(["docker", "build", "-q", "-t", tool, str(_tool_context(work, base))])
        run(["docker", "push", "-q", base])
        run(["docker", "push", "-q", tool])
    finally:
        engines.remove("docker", [base, tool])
    base_digest, compressed, layers = _pinned(registry, base_repo, tag)
    tool_digest = _pinned(registry, tool_repo, tag)[0]
    return ImageSet(
        kind="debian",
        description="debootstrap --variant=minbase bookworm, docker import",
        base_repo=base_repo,
        tool_repo=tool_repo,
        tag=tag,
        base_digest=base_digest,
        tool_digest=tool_digest,
        base_uncompressed=tar.stat().st_size,
        base_compressed=compressed,
        base_layers=layers,
    )


# -- synthetic: built in Python ------------------------------------------------------
def _text(rng: random.Random, size: int) -> bytes:
    """Log-like text: compresses about 3-4x with gzip, like documentation and scripts do."""
    words = [
        f"{rng.choice(['lib', 'usr', 'conf', 'data', 'item'])}{rng.randrange(10_000)}" for _ in range(4000)
    ]
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choices(words, k=12)) + "\n").encode()
    return bytes(out[:size])


def _synthetic_layers() -> list[dict]:
    """Four layers, ≈ 60 MB: busybox, incompressible blobs, text, half-and-half libraries."""
    rng = random.Random(2024)
    binaries = {f"opt/data/blob-{i:02d}.bin": rng.randbytes(4 * MB) for i in range(5)}
    docs = {f"usr/share/doc/pkg{i:02d}/README.txt": _text(rng, 2 * MB) for i in range(10)}
    libs = {f"usr/lib/libmixed{i:02d}.so": rng.randbytes(MB) + bytes(2 * MB) for i in range(5)}
    return [busybox_base_layer(), {"opt/": None, "opt/data/": None, **binaries}, docs, libs]


def _tool_layer() -> dict:
    """The second image's one extra layer: small, so the shared base dominates."""
    rng = random.Random(7)
    return {
        "usr/local/bin/tool.bin": rng.randbytes(MB // 2),
        "usr/local/bin/tool.sh": b"#!/bin/sh\necho step\n",
    }


def _build_synthetic(work: Path, registry: RunningRegistry) -> ImageSet:
    """Build both images in a scratch blob store, push them, and drop the store."""
    store_dir = work / "synthetic-store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = BlobStore(store_dir)
    layers = _synthetic_layers()
    base = build_image(store, layers)
    tool = build_image(store, [*layers, _tool_layer()])
    base_repo, tool_repo, tag = "wfexs-bench/synthetic", "wfexs-bench/synthetic-tool", "1"
    push_image(registry.url, base_repo, tag, store, base.manifest)
    push_image(registry.url, tool_repo, tag, store, tool.manifest)
    shutil.rmtree(store_dir, ignore_errors=True)  # the registry holds the bytes now
    base_digest, compressed, count = _pinned(registry, base_repo, tag)
    return ImageSet(
        kind="synthetic",
        description="synthetic, built in Python: busybox + incompressible + text + mixed layers",
        base_repo=base_repo,
        tool_repo=tool_repo,
        tag=tag,
        base_digest=base_digest,
        tool_digest=_pinned(registry, tool_repo, tag)[0],
        base_uncompressed=sum(len(t) for t in base.layer_tars),
        base_compressed=compressed,
        base_layers=count,
    )


def prepare_with_fallback(kind: str, work: Path, registry: RunningRegistry) -> tuple[ImageSet, str | None]:
    """``prepare(kind)``; if the Debian image cannot be built, the synthetic one and the reason why."""
    try:
        return prepare(kind, work, registry), None
    except (CommandError, RuntimeError, OSError) as e:
        if kind != "debian":
            raise
        why = " ".join(str(e).split())  # one line: it goes into a Markdown bullet
        reason = f"debian image unavailable ({why}); fell back to the synthetic image"
        return prepare("synthetic", work, registry), reason

"""Build real OCI images in Python, straight into a BlobStore.

Tests need images whose every byte they control: several layers, a shared
base, whiteouts, two architectures behind one index. Building them here
(deterministically: fixed mtimes, gzip without timestamps) gives the same
digests on every run, so tests can assert on exact values.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wfexs_like.digests import sha256_bytes
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.manifest import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
    parse_manifest_or_index,
)

MTIME = 1_700_000_000


def _busybox_bytes() -> bytes:
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(p).is_file():
            return Path(p).read_bytes()
    raise RuntimeError("busybox-static is not installed (apt-get install busybox-static)")


# An entry value: bytes -> regular file; None -> directory; ("symlink", target);
# ("hardlink", target); ("mode", bytes, mode).
Entry = bytes | None | tuple


def make_tar(entries: Mapping[str, Entry]) -> bytes:
    """A tar stream with entries in the given order, every header deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, value in entries.items():
            ti = tarfile.TarInfo(name)
            ti.mtime = MTIME
            ti.uid = ti.gid = 0
            data = None
            if value is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
            elif isinstance(value, bytes):
                ti.mode = 0o755 if name.endswith("busybox") else 0o644
                ti.size = len(value)
                data = io.BytesIO(value)
            elif value[0] == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = value[1]
                ti.mode = 0o777
            elif value[0] == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = value[1]
                ti.mode = 0o644
            elif value[0] == "mode":
                ti.mode = value[2]
                ti.size = len(value[1])
                data = io.BytesIO(value[1])
            else:
                raise ValueError(f"unknown entry kind {value!r}")
            tf.addfile(ti, data)
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


@dataclass
class BuiltImage:
    manifest: Manifest
    config: dict
    layer_tars: list[bytes]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def image_id(self) -> str:
        return self.manifest.config.digest


def build_image(
    store: BlobStore,
    layers: Sequence[Mapping[str, Entry]],
    *,
    arch: str = "amd64",
    os_name: str = "linux",
    variant: str | None = None,
    env: Sequence[str] = ("PATH=/bin",),
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = ("/bin/busybox", "sh"),
    labels: Mapping[str, str] | None = None,
    created: str = "2023-11-14T22:13:20Z",
) -> BuiltImage:
    """Store layers, config and manifest; return the manifest (its digest pins the image)."""
    tars = [make_tar(layer) for layer in layers]
    layer_descs = []
    diff_ids = []
    for t in tars:
        gz = gzip_bytes(t)
        d = store.put_bytes(gz)
        layer_descs.append({"mediaType": OCI_LAYER_GZIP, "digest": d, "size": len(gz)})
        diff_ids.append(sha256_bytes(t))
    config: dict = {
        "created": created,
        "architecture": arch,
        "os": os_name,
        "config": {"Env": list(env)},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": f"wfexs-like test layer {i}"} for i in range(len(tars))
        ],
    }
    if variant:
        config["variant"] = variant
    if entrypoint is not None:
        config["config"]["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        config["config"]["Cmd"] = list(cmd)
    if labels:
        config["config"]["Labels"] = dict(labels)
    cfg_raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    cfg_digest = store.put_bytes(cfg_raw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": len(cfg_raw)},
        "layers": layer_descs,
    }
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    store.put_bytes(raw)
    m = parse_manifest_or_index(raw)
    assert isinstance(m, Manifest)
    return BuiltImage(m, config, tars)


def build_index(store: BlobStore, images: Sequence[BuiltImage]) -> Index:
    """An OCI index over single-platform images, each tagged with its config's platform."""
    entries = []
    for img in images:
        plat = Platform(img.config["os"], img.config["architecture"], img.config.get("variant"))
        d = Descriptor(OCI_MANIFEST, img.digest, len(img.manifest.raw), plat)
        entries.append(d.to_json())
    raw = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    store.put_bytes(raw)
    idx = parse_manifest_or_index(raw)
    assert isinstance(idx, Index)
    return idx


def busybox_base_layer() -> dict[str, Entry]:
    """A runnable base: busybox-static at /bin/busybox with sh and ls links."""
    return {
        "bin/": None,
        "bin/busybox": _busybox_bytes(),
        "bin/sh": ("symlink", "busybox"),
        "bin/ls": ("symlink", "busybox"),
        "bin/cat": ("symlink", "busybox"),
        "etc/": None,
        "etc/os-release": b"NAME=wfexs-like-test\n",
        "tmp/": None,
    }

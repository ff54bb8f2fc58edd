"""The tiers from the command line: --remote-cache (S3), --library-dir, and the same from the config.

Node A materializes from the registry and publishes to a real SeaweedFS;
node B, with an empty cache and --offline, gets identical records from S3
alone; node C reads A's cache dir as a read-only library. The registry is a
private one, stopped before B and C run, so nothing can come from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.imagegen import build_image, busybox_base_layer
from tests.support.push import push_image
from tests.support.registry import start_registry
from tests.support.seaweed import RunningS3
from wfexs_like.images.blobstore import BlobStore

WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(WFEXS_LIKE), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


def _records(out: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    rows = data["containers"] if isinstance(data, dict) else data
    return {r["origTaggedName"]: (r["fingerprint"], r["image_signature"]) for r in rows}


def test_node_b_materializes_offline_from_s3_and_node_c_from_a_library(
    s3_server: RunningS3, tmp_path: Path
) -> None:
    env = {**os.environ, **s3_server.env(), "XDG_CONFIG_HOME": str(tmp_path / "no-config")}
    remote = s3_server.url(s3_server.new_prefix())
    store = BlobStore(tmp_path / "src")
    img = build_image(store, [busybox_base_layer(), {"etc/tier": uuid.uuid4().bytes}])
    reg = start_registry(tmp_path / "reg")
    try:
        tag = f"{reg.host}/tiers/cli:1"
        push_image(reg.url, "tiers/cli", "1", store, img.manifest)
        a = run(
            "materialize", tag, "--stage-dir", str(tmp_path / "a-stage"), "--cache-dir", str(tmp_path / "a"),
            "--remote-cache", remote, "--format", "json", env=env,
        )  # fmt: skip
        want = _records(a)
    finally:
        reg.stop()
    # the registry is gone: from here on only S3 and A's cache dir hold the image
    b = run(
        "materialize", tag, "--offline", "--stage-dir", str(tmp_path / "b-stage"),
        "--cache-dir", str(tmp_path / "b"), "--remote-cache", remote, "--format", "json", env=env,
    )  # fmt: skip
    assert _records(b) == want
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'remote-cache = "{remote}"\n')
    b2 = run(
        "--config", str(cfg), "materialize", tag, "--offline", "--stage-dir", str(tmp_path / "b2-stage"),
        "--cache-dir", str(tmp_path / "b2"), "--format", "json", env=env,
    )  # fmt: skip
    assert _records(b2) == want, "the config file's remote cache is used"
    no = run(
        "--config", str(cfg), "materialize", tag, "--offline", "--no-remote",
        "--stage-dir", str(tmp_path / "n-stage"), "--cache-dir", str(tmp_path / "n"), env=env,
    )  # fmt: skip
    assert no.returncode == 1, "--no-remote leaves S3 out: offline, nothing holds the image"
    c = run(
        "materialize", tag, "--offline", "--library-dir", str(tmp_path / "a"),
        "--stage-dir", str(tmp_path / "c-stage"), "--cache-dir", str(tmp_path / "c"), "--format", "json",
        env=env,
    )  # fmt: skip
    assert _records(c) == want
    missing = run(
        "materialize", tag, "--library-dir", str(tmp_path / "nope"), "--stage-dir", str(tmp_path / "x"),
        env=env,
    )  # fmt: skip
    assert missing.returncode == 2 and "--library-dir" in missing.stderr

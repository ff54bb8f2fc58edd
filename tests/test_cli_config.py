"""Settings from the config file, the environment and flags reach the commands; `config show` says whence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.imagegen import build_image, busybox_base_layer
from tests.support.proxy import FaultProxy
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.images.blobstore import BlobStore

WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(WFEXS_LIKE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CONFIG_HOME": "/nonexistent", **(env or {})},
        timeout=300,
        check=False,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


def test_config_show_names_the_source_of_every_value(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text('jobs = 6\nlibrary-dirs = ["/shared/images"]\n[mirrors]\n"docker.io" = ["127.0.0.1:9"]\n')
    out = run("--config", str(cfg), "config", "show", "--json", env={"WFEXS_LIKE_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    settings = data["settings"]
    assert data["file"] == str(cfg)
    assert settings["jobs"] == {"value": 6, "source": f"config file {cfg}"}
    assert settings["cache-dir"] == {"value": str(tmp_path), "source": "environment WFEXS_LIKE_CACHE_DIR"}
    assert settings["mirrors"]["value"] == {"docker.io": ["127.0.0.1:9"]}
    assert settings["remote-cache"] == {"value": None, "source": "default"}
    table = run("--config", str(cfg), "config", "show")
    assert "library-dirs" in table.stdout and "/shared/images" in table.stdout


def test_a_broken_config_file_is_one_clear_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("jobs = [\n")
    out = run("--config", str(cfg), "config", "show")
    assert out.returncode == 1 and str(cfg) in out.stderr and "not valid TOML" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _pushed(registry: RunningRegistry, tmp_path: Path) -> str:
    store = BlobStore(tmp_path / "src")
    img = build_image(store, [busybox_base_layer(), {"etc/x": uuid.uuid4().bytes}])
    repo = f"wl-mirror-{uuid.uuid4().hex[:8]}/img"
    push_image(registry.url, repo, "1.0", store, img.manifest)
    return repo


def test_mirror_flag_and_config_mirrors_are_asked_first(registry: RunningRegistry, tmp_path: Path) -> None:
    """The upstream is named by a host nothing listens on: only the mirror can serve the image."""
    repo = _pushed(registry, tmp_path)
    mirror = FaultProxy(registry.url)
    try:
        upstream = "127.0.0.1:9"  # discard port: nothing listens
        empty_conf = tmp_path / "registries.conf"
        empty_conf.write_text("")  # not this machine's /etc/containers/registries.conf
        tag = f"{upstream}/{repo}:1.0"
        out = run(
            "materialize", tag, "--mirror", f"{upstream}={mirror.host}", "--stage-dir", str(tmp_path / "s1"),
            "--cache-dir", str(tmp_path / "c1"), "--format", "json", "--registries-conf", str(empty_conf),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        (record,) = (
            json.loads(out.stdout)["containers"] if "containers" in out.stdout else json.loads(out.stdout)
        )
        assert record["fingerprint"].startswith(f"{upstream}/{repo}@sha256:"), (
            "records keep the upstream name"
        )
        assert mirror.hits("/manifests/"), "the mirror was asked"
        first = len(mirror.hits("/"))

        cfg = tmp_path / "site.toml"
        cfg.write_text(f'[mirrors]\n"{upstream}" = ["{mirror.host}"]\n')
        again = run(
            "--config", str(cfg), "materialize", tag, "--stage-dir", str(tmp_path / "s2"),
            "--cache-dir", str(tmp_path / "c2"), "--registries-conf", str(empty_conf),
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert len(mirror.hits("/")) > first, "the config file's mirror was asked"
    finally:
        mirror.stop()

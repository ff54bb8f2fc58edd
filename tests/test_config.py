"""The configuration file: precedence, origins, and clear errors for a malformed one."""

from __future__ import annotations

from pathlib import Path

import pytest

from wfexs_like.config import ConfigError, load_config, parse_mirror_flags


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_file_env_and_flags_in_that_order(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    cfg_file = _write(
        xdg / "wfexs-like" / "config.toml",
        'jobs = 8\nlibrary-dirs = ["/shared/a"]\nremote-cache = "s3://b/p"\n'
        '[mirrors]\n"docker.io" = ["127.0.0.1:5001", "127.0.0.1:5002"]\n',
    )
    env = {"XDG_CONFIG_HOME": str(xdg), "WFEXS_LIKE_REMOTE_CACHE": "s3://other/q"}
    cfg = load_config(env=env)
    assert cfg.path == cfg_file
    assert cfg["jobs"] == 8 and cfg.source("jobs") == f"config file {cfg_file}"
    assert cfg["library-dirs"] == [Path("/shared/a")]
    assert cfg["mirrors"] == {"docker.io": ["127.0.0.1:5001", "127.0.0.1:5002"]}
    assert cfg["remote-cache"] == "s3://other/q"
    assert cfg.source("remote-cache") == "environment WFEXS_LIKE_REMOTE_CACHE"
    assert cfg["cache-dir"] is None and cfg.source("cache-dir") == "default"
    cfg.override("jobs", 2, "--jobs")
    cfg.override("library-dirs", [], "--library-dir")  # not given: the file's value stays
    assert cfg["jobs"] == 2 and cfg.source("jobs") == "flag --jobs"
    assert cfg.source("library-dirs").startswith("config file")
    assert [row[0] for row in cfg.rows()][:2] == ["cache-dir", "jobs"]


def test_a_missing_default_file_is_fine_an_explicit_one_is_not(tmp_path: Path) -> None:
    cfg = load_config(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert cfg.path is None and cfg["jobs"] == 4
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs = \n", "not valid TOML"),
        ("jbos = 3\n", "unknown setting 'jbos'"),
        ("jobs = 0\n", "jobs must be a positive integer"),
        ('library-dirs = "/one"\n', "library-dirs must be a list"),
        ('[mirrors]\n"docker.io" = [1]\n', "mirrors must be"),
    ],
)
def test_malformed_files_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


def test_mirror_flags() -> None:
    assert parse_mirror_flags(["docker.io=127.0.0.1:1", "docker.io=127.0.0.1:2", "quay.io=h:3"]) == {
        "docker.io": ["127.0.0.1:1", "127.0.0.1:2"],
        "quay.io": ["h:3"],
    }
    with pytest.raises(ConfigError, match="REGISTRY=HOST"):
        parse_mirror_flags(["docker.io"])

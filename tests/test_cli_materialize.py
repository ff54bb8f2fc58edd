"""``wfexs-like materialize`` and ``deploy`` end to end: the installed command, a real registry, real engines.

Every run goes through ``run()``, which also checks that no stderr ever
carries a traceback. Usage mistakes are sent at a fault proxy in front of
the registry, so "found before any work" is measured as "no request
reached the registry" rather than assumed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import pytest

from tests.support.imagegen import BuiltImage, build_image, build_index, busybox_base_layer
from tests.support.proxy import FaultProxy
from tests.support.push import push_image
from tests.support.registry import RunningRegistry
from wfexs_like.images.blobstore import BlobStore
from wfexs_like.provenance import read_containers_file

WFEXS_LIKE = Path(sys.executable).parent / "wfexs-like"


def run(
    *args: str, stdin: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it; never a traceback, whatever the outcome."""
    assert WFEXS_LIKE.exists(), f"{WFEXS_LIKE} is not installed; run `pip install -e .` in the venv"
    env = {**os.environ, **(env or {})}
    out = subprocess.run(
        [str(WFEXS_LIKE), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
        check=False,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


class Pushed:
    """Two images sharing a base layer, pushed under a fresh prefix."""

    def __init__(self, reg: RunningRegistry, store: BlobStore) -> None:
        self.reg = reg
        self.prefix = f"wl-cli-{uuid.uuid4().hex[:8]}"
        base = busybox_base_layer()
        self.images: dict[str, BuiltImage] = {
            name: build_image(
                store,
                [base, {f"etc/{name}": f"{name}-{self.prefix}\n".encode()}],
                cmd=["/bin/busybox", "cat", f"/etc/{name}"],
            )
            for name in ("left", "right")
        }
        for name, img in self.images.items():
            push_image(reg.url, f"{self.prefix}/{name}", "1.0", store, img.manifest)

    def tag(self, name: str, host: str | None = None) -> str:
        return f"{host or self.reg.host}/{self.prefix}/{name}:1.0"


@pytest.fixture
def pushed(registry: RunningRegistry, src_store: BlobStore) -> Pushed:
    return Pushed(registry, src_store)


def _common(tmp_path: Path, stage: str = "wf/containers") -> list[str]:
    return ["--stage-dir", str(tmp_path / stage), "--cache-dir", str(tmp_path / "cache")]


def test_tags_from_a_file_and_from_stdin(tmp_path: Path, pushed: Pushed) -> None:
    listing = tmp_path / "tags.txt"
    listing.write_text(f"# the workflow's images\n\n{pushed.tag('left')}\n   {pushed.tag('right')}  # two\n")
    (tmp_path / "wf").mkdir()
    out = run("materialize", "-f", str(listing), "-o", str(tmp_path / "wf" / "c.yaml"), *_common(tmp_path))
    assert out.returncode == 0, out.stderr
    records = read_containers_file(tmp_path / "wf" / "c.yaml")
    assert [r.origTaggedName for r in records] == [pushed.tag("left"), pushed.tag("right")]
    assert [r.signature for r in records] == [pushed.images[n].image_id for n in ("left", "right")]

    piped = run(
        "materialize",
        pushed.tag("left"),
        "-f",
        "-",
        "--format",
        "json",
        "-o",
        "-",
        *_common(tmp_path, "wf2"),
        stdin=f"{pushed.tag('right')}\n# and again\n{pushed.tag('left')}\n",
    )
    assert piped.returncode == 0, piped.stderr
    document = json.loads(piped.stdout)
    assert document["wfexs_like_containers"] == 1
    assert document["stage_dir"] == str(tmp_path / "wf2")
    got = [(c["origTaggedName"], c["fingerprint"]) for c in document["containers"]]
    assert got == [
        (pushed.tag(n), f"{pushed.reg.host}/{pushed.prefix}/{n}@{pushed.images[n].digest}")
        for n in ("left", "right")
    ], "positional tags first, then the list, each tag once"


def test_a_containers_yaml_from_stdin_restages_its_pins_offline(tmp_path: Path, pushed: Pushed) -> None:
    out = run("materialize", pushed.tag("left"), "-o", str(tmp_path / "c.yaml"), *_common(tmp_path, "wf1"))
    assert out.returncode == 0, out.stderr
    again = run(
        "materialize",
        "-f",
        "-",
        "--offline",
        "--format",
        "json",
        *_common(tmp_path, "wf2"),
        stdin=(tmp_path / "c.yaml").read_text(),
    )
    assert again.returncode == 0, again.stderr
    [record] = json.loads(again.stdout)["containers"]
    assert record["fingerprint"].endswith("@" + pushed.images["left"].digest)
    assert (tmp_path / "wf2" / record["localPath"]).is_dir()


def test_keep_going_writes_what_worked_and_exits_3(tmp_path: Path, pushed: Pushed) -> None:
    missing = f"{pushed.reg.host}/{pushed.prefix}/missing:9"
    records = tmp_path / "c.yaml"
    strict = run(
        "materialize",
        pushed.tag("left"),
        missing,
        "--retry-times",
        "0",
        "-o",
        str(records),
        *_common(tmp_path),
    )
    assert strict.returncode == 1
    assert missing in strict.stderr and "not found" in strict.stderr
    assert not records.exists(), "without --keep-going nothing is written"

    partial = run(
        "materialize",
        missing,
        pushed.tag("left"),
        "--keep-going",
        "--retry-times",
        "0",
        "-o",
        str(records),
        *_common(tmp_path),
    )
    assert partial.returncode == 3, partial.stderr
    assert [r.origTaggedName for r in read_containers_file(records)] == [pushed.tag("left")]
    assert f"{missing}:" in partial.stderr and "1 of 2 container(s) failed" in partial.stderr


@pytest.fixture
def proxy(registry: RunningRegistry) -> FaultProxy:
    p = FaultProxy(registry.url)
    yield p  # type: ignore[misc]
    p.stop()


def test_usage_mistakes_exit_2_before_any_request(tmp_path: Path, pushed: Pushed, proxy: FaultProxy) -> None:
    tag = pushed.tag("left", host=proxy.host)
    cache = tmp_path / "cache"
    cases: dict[str, tuple[list[str], list[str]]] = {
        "missing output dir": (
            [tag, "-o", str(tmp_path / "missing" / "dir" / "c.yaml")],
            [str(tmp_path / "missing" / "dir"), "does not exist"],
        ),
        "misspelled option": ([tag, "--stage-dri", "x"], ["unrecognized arguments: --stage-dri"]),
        "bad tag": ([tag, "Bad Tag"], ["'Bad Tag'"]),
        "bare os as platform": ([tag, "--platform", "linux"], ["invalid platform 'linux'"]),
        "unknown architecture": ([tag, "--platform", "linux/amd46"], ["unknown architecture 'amd46'"]),
        "no tags": (["-f", os.devnull], ["no tags to materialize"]),
        "missing tag list": ([tag, "-f", str(tmp_path / "nope.txt")], ["nope.txt"]),
        "missing authfile": ([tag, "--authfile", str(tmp_path / "auth.json")], ["--authfile"]),
        "jobs zero": ([tag, "--jobs", "0"], ["--jobs"]),
    }
    for name, (args, expected) in cases.items():
        out = run("materialize", *args, "--stage-dir", str(tmp_path / "wf"), "--cache-dir", str(cache))
        assert out.returncode == 2, (name, out.stderr)
        for text in expected:
            assert text in out.stderr, (name, out.stderr)
    assert "required" not in run("materialize", tag, "--stage-dri", "x").stderr
    assert proxy.seen == [], "no request before the call was found sound"
    assert not cache.exists() and not (tmp_path / "wf").exists()


def test_options_are_never_abbreviated(tmp_path: Path) -> None:
    cases = {"--stage": ["--stage", str(tmp_path)], "--keep": ["--stage-dir", str(tmp_path), "--keep"]}
    for abbreviated, args in cases.items():
        out = run("materialize", "busybox:1.36", *args)
        assert out.returncode == 2
        assert f"unrecognized arguments: {abbreviated}" in out.stderr, out.stderr
    help_ = run("materialize", "--help")
    assert help_.returncode == 0 and "\nexamples:\n" in help_.stdout
    assert "--stage-dir DIR" in help_.stdout.split("\n\n")[0], "usage shows --stage-dir as required"


def test_a_bare_architecture_means_linux(
    tmp_path: Path, registry: RunningRegistry, src_store: BlobStore
) -> None:
    amd = build_image(src_store, [busybox_base_layer(), {"etc/arch": b"amd64\n"}])
    arm = build_image(src_store, [{"etc/": None, "etc/arch": b"arm64\n"}], arch="arm64", variant="v8")
    repo = f"wl-cli-{uuid.uuid4().hex[:8]}/multi"
    push_image(registry.url, repo, "1", src_store, build_index(src_store, [amd, arm]))
    for platform in ("arm64", "linux/arm64", "linux/arm64/v8"):
        out = run(
            "materialize",
            f"{registry.host}/{repo}:1",
            "--platform",
            platform,
            "--format",
            "json",
            *_common(tmp_path, f"wf-{platform.replace('/', '-')}"),
        )
        assert out.returncode == 0, (platform, out.stderr)
        [record] = json.loads(out.stdout)["containers"]
        assert (record["architecture"], record["signature"]) == ("arm64", arm.image_id), platform


def _states(table: str) -> list[tuple[str, str]]:
    lines = table.splitlines()
    assert lines[0].split() == ["STATE", "TAG", "IMAGE", "SIGNATURE"], table
    return [(line.split()[0], line.split()[1]) for line in lines[1:]]


def test_deploy_finds_the_stage_dir_noted_beside_the_records(
    tmp_path: Path, pushed: Pushed, docker_client: docker.DockerClient
) -> None:
    wf = tmp_path / "wf"  # not created: staging into wf/containers creates it (the README quickstart)
    out = run(
        "materialize", pushed.tag("left"), pushed.tag("right"), "-o", str(wf / "c.yaml"), *_common(tmp_path)
    )
    assert out.returncode == 0, out.stderr
    copy = tmp_path / "copy"
    shutil.copytree(wf, copy)
    shutil.rmtree(wf)
    ids = [img.image_id for img in pushed.images.values()]

    def cleanup() -> None:
        for image_id in ids:
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(image_id, force=True)

    cleanup()
    try:
        first = run("deploy", str(copy / "c.yaml"), "--cache-dir", str(tmp_path / "cache"))
        assert first.returncode == 0, first.stderr
        assert _states(first.stdout) == [("loaded", pushed.tag("left")), ("loaded", pushed.tag("right"))]
        assert str(copy / "containers") in first.stderr and "2 loaded" in first.stderr
        assert docker_client.containers.run(pushed.tag("left"), remove=True, network_mode="none") == (
            f"left-{pushed.prefix}\n".encode()
        )
        again = run("deploy", "c.yaml", "--json", "--cache-dir", str(tmp_path / "cache"), cwd=copy)
        assert again.returncode == 0, again.stderr
        assert [(r["state"], r["signature"]) for r in json.loads(again.stdout)] == [
            ("present", i) for i in ids
        ]
    finally:
        cleanup()

    skipped = run("deploy", str(copy / "c.yaml"), "--engine", "none", "--cache-dir", str(tmp_path / "cache"))
    assert skipped.returncode == 0, skipped.stderr
    assert [s for s, _ in _states(skipped.stdout)] == ["skipped", "skipped"]
    assert "0 loaded, 0 present, 0 converted, 2 skipped" in skipped.stderr


def test_deploy_of_records_that_note_no_stage_dir_asks_for_one(tmp_path: Path) -> None:
    bare = tmp_path / "c.yaml"
    bare.write_text("wfexs_like_containers: 1\ncontainers: []\n")
    out = run("deploy", str(bare))
    assert out.returncode == 2 and "--stage-dir" in out.stderr


def test_authfile_and_cert_dir_reach_a_private_tls_registry(
    tmp_path: Path, auth_registry: RunningRegistry, src_store: BlobStore
) -> None:
    user, password = next(iter(auth_registry.users.items()))
    img = build_image(src_store, [busybox_base_layer(), {"etc/private": b"private\n"}])
    repo = f"private/wl-cli-{uuid.uuid4().hex[:8]}"
    push_image(
        auth_registry.url,
        repo,
        "1",
        src_store,
        img.manifest,
        auth=(user, password),
        verify=auth_registry.verify,
    )
    home = tmp_path / "home"
    home.mkdir()
    isolated = {
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "XDG_RUNTIME_DIR": str(home / "run"),
    }
    isolated["REGISTRY_AUTH_FILE"] = ""
    login = base64.b64encode(f"{user}:{password}".encode()).decode()
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {auth_registry.host: {"auth": login}}}))
    certs = tmp_path / "certs"
    certs.mkdir()
    assert auth_registry.ca_cert is not None
    shutil.copy(auth_registry.ca_cert, certs / "ca.crt")
    tag = f"{auth_registry.host}/{repo}:1"

    def materialize(*extra: str) -> subprocess.CompletedProcess[str]:
        return run(
            "materialize",
            tag,
            "--retry-times",
            "0",
            "--format",
            "json",
            *extra,
            *_common(tmp_path),
            env=isolated,
        )

    ok = materialize("--authfile", str(authfile), "--cert-dir", str(certs))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["containers"][0]["signature"] == img.image_id
    no_login = materialize("--cert-dir", str(certs), "--force")
    assert no_login.returncode == 1 and tag in no_login.stderr
    no_ca = materialize("--authfile", str(authfile), "--force")
    assert no_ca.returncode == 1 and tag in no_ca.stderr


def test_from_workflow_materializes_what_the_scanner_finds(pushed: Pushed, tmp_path: Path) -> None:
    """A CWL step and a Nextflow process name the two images; --from-workflow stages both."""
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "tool.cwl").write_text(
        "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: cat\n"
        f"hints:\n  DockerRequirement:\n    dockerPull: {pushed.tag('left')}\n"
        "  SoftwareRequirement:\n    packages: [{package: samtools, version: ['1.15']}]\n"
        "inputs: []\noutputs: []\n"
    )
    (wf / "main.nf").write_text(
        f"process SAY {{\n  container '{pushed.tag('right')}'\n  script:\n  'echo hi'\n}}\n"
        "workflow {\n  SAY()\n}\n"
    )
    out = run(
        "materialize", "--from-workflow", str(wf), "--stage-dir", str(tmp_path / "stage"),
        "--cache-dir", str(tmp_path / "cache"), "--format", "json", "--progress", "plain",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    records = data["containers"] if isinstance(data, dict) else data
    assert sorted(r["origTaggedName"] for r in records) == sorted([pushed.tag("left"), pushed.tag("right")])
    assert "samtools" in out.stderr, "the conda package that is not materialized is named, not dropped"


def test_from_workflow_and_from_crate_refuse_missing_paths(tmp_path: Path) -> None:
    for flag in ("--from-workflow", "--from-crate"):
        out = run("materialize", flag, str(tmp_path / "nope"), "--stage-dir", str(tmp_path / "s"))
        assert out.returncode == 2 and "nope: no such file or directory" in out.stderr


def test_from_crate_restages_exactly_the_recorded_digests(pushed: Pushed, tmp_path: Path) -> None:
    """records -> RO-Crate -> a second machine's materialize --from-crate: the same digests."""
    cache, stage = tmp_path / "cache", tmp_path / "wf" / "containers"
    records = tmp_path / "wf" / "containers.yaml"
    first = run(
        "materialize", pushed.tag("left"), pushed.tag("right"), "--stage-dir", str(stage),
        "--cache-dir", str(cache), "-o", str(records),
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    crate = tmp_path / "crate"
    made = run("provenance", "rocrate", str(records), "-o", str(crate))
    assert made.returncode == 0, made.stderr
    again = run(
        "materialize", "--from-crate", str(crate), "--stage-dir", str(tmp_path / "other"),
        "--cache-dir", str(tmp_path / "cache2"), "--format", "json",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    got = {
        r["origTaggedName"]: r["fingerprint"]
        for r in (data["containers"] if isinstance(data, dict) else data)
    }
    want = {c.origTaggedName: c.fingerprint for c in read_containers_file(records)}
    assert got == want

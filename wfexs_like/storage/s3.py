"""An S3-compatible object store as a backend (botocore), for the tier many machines share.

Why these choices:
- **Nothing partial under a final key.** Small objects go up in one PUT,
  which S3 publishes atomically; large ones as a multipart upload, which
  exists under its key only once completed. Either way every part is hashed
  before it is sent and the upload is completed only when the whole matches
  the digest; otherwise it is aborted.
- **Memory does not grow with the blob.** A part is sent as a window on
  the source file (``_Window``), never as bytes in memory; parts go one at
  a time (more in flight was not faster against a real gateway, and the
  publisher already uploads several blobs at once).
- **Idempotent by content.** Keys are digests, so two nodes publishing the
  same blob at once both succeed and leave the same bytes.
- **Every read is re-hashed** by whoever consumes it (``Tiers``), because an
  object store is a cache we do not control.
- Credentials come from the usual AWS chain (environment, shared files,
  instance roles); a refusal names the bucket and says what to set.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from ..digests import CHUNK
from ..errors import IntegrityError
from ..progress import check_cancelled
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
    """``s3://bucket/prefix`` through botocore (imported only when a remote cache is configured)."""

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
                # botocore alone: boto3's session layer adds import time and memory and nothing we use
                import botocore.session
                from botocore.config import Config
            except ImportError as e:
                raise StorageError("the S3 remote cache needs boto3: pip install 'wfexs-like[s3]'") from e
            loc = self.location
            # A session of our own: a shared one caches the credentials it found first.
            self._client = botocore.session.Session().create_client(
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
        if not _seekable(source):
            # A pipe or socket: spooled (in memory up to one part, then on disk) so it can be windowed.
            with tempfile.SpooledTemporaryFile(max_size=PART_SIZE) as spool:
                while chunk := source.read(CHUNK):
                    check_cancelled()
                    spool.write(chunk)
                spool.seek(0)
                self.put(key, spool, digest=digest, size=size)  # type: ignore[arg-type]
            return
        k = self._key(key)
        where = f"{self.name}/{key}"
        bucket = self.location.bucket
        start = source.tell()
        end = source.seek(0, io.SEEK_END)
        if size is not None and end - start != size:
            raise IntegrityError(f"{where}: got {end - start} bytes, expected {size}", expected=digest)
        hasher = HashingReader(source)
        if end - start < PART_SIZE:
            body = _Window.hashed(source, start, end - start, hasher)
            hasher.check(where, digest, size)
            self._call(f"writing {k}", self.client.put_object, Bucket=bucket, Key=k, Body=body)
            return
        upload = self._call(
            f"starting an upload of {k}", self.client.create_multipart_upload, Bucket=bucket, Key=k
        )
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            for offset in range(start, end, PART_SIZE):
                number = len(parts) + 1
                resp = self._call(
                    f"uploading part {number} of {k}",
                    self.client.upload_part,
                    Bucket=bucket,
                    Key=k,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=_Window.hashed(source, offset, min(PART_SIZE, end - offset), hasher),
                )
                parts.append({"ETag": resp["ETag"], "PartNumber": number})
            hasher.check(where, digest, size)
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


def _seekable(source: BinaryIO) -> bool:
    try:
        return bool(source.seekable())
    except (AttributeError, ValueError, OSError):
        return False


class _Window:
    """Bytes ``[start, start + length)`` of a seekable source, as the body of one request.

    Why not the bytes themselves: botocore reads a body up to three times
    (to sign it, to checksum it, to send it) and copies a ``bytes`` body
    once more while sending, so a 16 MB part held in memory cost several
    times that per upload in flight. A window reads the source in the small
    pieces botocore asks for, so an upload of any size holds about one
    chunk. The window is hashed, in order, before it is sent (``hashed``);
    the source must not change meanwhile (store blobs never do: they are
    replaced, never rewritten), and S3 checks what it receives against the
    signature and checksum botocore computed from the same window.
    """

    def __init__(self, source: BinaryIO, start: int, length: int) -> None:
        self._source = source
        self._start = start
        self._length = length
        self._pos = 0

    @classmethod
    def hashed(cls, source: BinaryIO, start: int, length: int, hasher: HashingReader) -> _Window:
        """The window, its bytes first fed to ``hasher`` (which must have hashed all before ``start``)."""
        source.seek(start)
        left = length
        while left > 0:
            check_cancelled()
            chunk = hasher.read(min(CHUNK, left))
            if not chunk:
                break  # the source shrank: the hasher's size no longer matches, and check() says so
            left -= len(chunk)
        return cls(source, start, length)

    def __len__(self) -> int:
        return self._length

    def read(self, n: int | None = -1) -> bytes:
        left = self._length - self._pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        self._source.seek(self._start + self._pos)
        data = self._source.read(n)
        if not data:
            raise StorageError(f"the file being uploaded ended {left} bytes early (it changed meanwhile)")
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

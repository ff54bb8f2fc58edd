"""Digests in the one form this project speaks: ``sha256:<64 lowercase hex>``.

That is what registries, ``sha256sum`` and the OCI specs print, so a user can
check any fingerprint we record with tools they already have. WfExS-backend
writes ``sha256=<base64>``; we accept it on input and never emit it.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Iterable
from pathlib import Path

from .errors import IntegrityError

CHUNK = 1 << 20
_HEX = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")


# hashlib is imported where a hash is taken: loading it loads OpenSSL, which a reader that only
# checks digests' form (``cache ls``) never needs.


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hash a file with a bounded buffer so multi-GB layers never sit in memory."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def sha256_chunks(chunks: Iterable[bytes]) -> tuple[str, int]:
    import hashlib

    h = hashlib.sha256()
    n = 0
    for chunk in chunks:
        h.update(chunk)
        n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def is_digest(value: str) -> bool:
    m = _DIGEST_RE.match(value)
    return bool(m) and len(m.group(2)) == _HEX[m.group(1)]


@functools.lru_cache(maxsize=1 << 16)
def split_digest(digest: str) -> tuple[str, str]:
    """Return (algorithm, hex), refusing anything that could escape a path join.

    Cached: a re-stage asks it for the same few digests many times over, and
    the answer for a string never changes (a refusal raises, and is not cached).
    """
    m = _DIGEST_RE.match(digest)
    if not m or len(m.group(2)) != _HEX[m.group(1)]:
        raise IntegrityError(
            f"malformed digest {digest!r}: expected 'sha256:' followed by 64 lowercase hex digits"
        )
    return m.group(1), m.group(2)


def normalize_fingerprint(value: str) -> str:
    """Accept ``sha256:<hex>`` or WfExS's ``sha256=<base64>``; return ``sha256:<hex>``."""
    value = value.strip()
    if is_digest(value.lower()):
        return value.lower()
    if "=" in value:
        algo, _, b64 = value.partition("=")
        algo = algo.lower()
        if algo in _HEX:
            try:
                raw = binascii.a2b_base64(b64 + "=" * (-len(b64) % 4))  # base64's b64decode, minus its import
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) * 2 == _HEX[algo]:
                return f"{algo}:{raw.hex()}"
    raise IntegrityError(
        f"unrecognised fingerprint {value!r}: expected 'sha256:<hex>' or WfExS's 'sha256=<base64>'"
    )


def wfexs_fingerprint(digest: str) -> str:
    """WfExS-backend's spelling of a sha256 digest (``sha256=<base64>``), the inverse of the above.

    Only for files WfExS-backend reads itself (a staged ``.img`` sidecar), whose
    loader compares the string verbatim; everything of ours says ``sha256:<hex>``.
    """
    algo, hexd = split_digest(digest)
    return f"{algo}=" + binascii.b2a_base64(bytes.fromhex(hexd), newline=False).decode("ascii")

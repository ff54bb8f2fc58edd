"""The SIF stream's fast tar headers are the very bytes ``tarfile`` writes, or not made at all.

``ustar_header`` stands in for ``TarInfo.tobuf(PAX_FORMAT)`` on the entries
that need no pax record; a byte of difference would change what the
squashfs packer reads, and so the SIF. Every other entry must be left to
``tarfile`` (None).
"""

from __future__ import annotations

import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from wfexs_like.images.tarstream import ustar_header

KINDS = [
    tarfile.REGTYPE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.FIFOTYPE,
    tarfile.CHRTYPE,
]
NAMES = st.text(alphabet=st.sampled_from("ab/._-\u00e9 "), min_size=1, max_size=120)
NUMBERS = st.sampled_from([0, 1, 511, 65534, 8**7 - 1, 8**7, 1_700_000_000, 8**11 - 1, 8**11])


@settings(max_examples=1500, deadline=None)
@given(
    name=NAMES,
    kind=st.sampled_from(KINDS),
    link=st.one_of(st.just(""), NAMES),
    mode=st.sampled_from([0o644, 0o755, 0o777, 0o4755, 0o1777, 0o7777]),
    uid=NUMBERS,
    gid=NUMBERS,
    size=NUMBERS,
    mtime=NUMBERS,
)
def test_same_bytes_as_tarfile_or_none(
    name: str, kind: bytes, link: str, mode: int, uid: int, gid: int, size: int, mtime: int
) -> None:
    got = ustar_header(name, kind, mode=mode, uid=uid, gid=gid, mtime=mtime, size=size, linkname=link)
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = kind, mode, uid, gid, "", ""
    ti.mtime, ti.size, ti.linkname = mtime, size, link
    want = ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if got is not None:
        assert got == want
    else:  # left to tarfile: it needed a pax record, or device numbers
        assert len(want) > tarfile.BLOCKSIZE or kind == tarfile.CHRTYPE


def test_plain_entries_take_the_fast_path() -> None:
    assert ustar_header(
        "usr/bin/env", tarfile.REGTYPE, mode=0o755, uid=0, gid=0, mtime=1, size=9, linkname=""
    )
    assert ustar_header("usr/lib", tarfile.DIRTYPE, mode=0o755, uid=0, gid=0, mtime=1, size=0, linkname="")

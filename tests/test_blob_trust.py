"""The cheap guard on every reuse of a stored blob (issue 13, item 1: bit rot with its mtime put back).

``is_trusted`` compares size and mtime, which ``touch -r`` restores after an
edit. ``unchanged`` compares the inode and ctime too: nothing sets a ctime
back. Our own hard links bump the ctime as well, so ``relinked`` re-records
it right after them, for blobs whose size, mtime and inode still match.

Decided for the window between the strict check and ``relinked``: an edit
there with the size and mtime put back is indistinguishable from our link
and is re-recorded (``cache verify --full`` still finds it, by hash); one
that moved the mtime or size is not. ``linking`` keeps the order that makes
that window the only one: check, link, re-record only what passed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.rot import flip_keep_mtime
from wfexs_like.digests import sha256_file
from wfexs_like.images.blobstore import BlobStore


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "cache")


def test_an_edit_with_the_mtime_restored_fools_size_and_mtime_but_not_the_strict_check(
    store: BlobStore,
) -> None:
    digest = store.put_bytes(b"a layer" * 1000)
    assert store.unchanged(digest) and store.is_trusted(digest)
    flip_keep_mtime(store.path(digest))
    assert sha256_file(store.path(digest)) != digest
    assert store.is_trusted(digest)  # what re-staging relied on: fooled
    assert not store.unchanged(digest)  # the ctime moved
    assert not store.verify(digest, full=True)  # the re-hash the failed check calls for
    assert not store.has(digest)  # ... moved the blob aside


def test_relinked_keeps_a_clean_blob_trusted_after_our_own_link(store: BlobStore, tmp_path: Path) -> None:
    digest = store.put_bytes(b"staged")
    os.link(store.path(digest), tmp_path / "staged")
    assert not store.unchanged(digest, strict=True)  # the link bumped the ctime
    assert store.relinked([digest]) == [digest]
    assert store.unchanged(digest, strict=True)
    assert store.unchanged(digest)
    assert store.relinked([digest]) == [digest]  # nothing to re-record: still reported as fine


def test_relinked_does_not_bless_an_edit_that_moved_the_mtime_or_the_size(
    store: BlobStore, tmp_path: Path
) -> None:
    a = store.put_bytes(b"mtime moved")
    b = store.put_bytes(b"size moved")
    for d in (a, b):
        os.link(store.path(d), tmp_path / d.split(":")[1])
    st = store.path(a).stat()
    os.utime(store.path(a), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    os.chmod(store.path(b), 0o644)
    with open(store.path(b), "ab") as fh:
        fh.write(b"!")
    assert store.relinked([a, b]) == []
    assert not store.unchanged(a) and not store.unchanged(b)


def test_an_edit_with_the_mtime_restored_between_link_and_relinked_is_blessed_and_verify_finds_it(
    store: BlobStore, tmp_path: Path
) -> None:
    """The documented window: only a full re-hash can tell such an edit from our own link."""
    digest = store.put_bytes(b"window" * 100)
    os.link(store.path(digest), tmp_path / "staged")
    flip_keep_mtime(store.path(digest))
    assert store.relinked([digest]) == [digest]
    assert store.unchanged(digest)
    assert not store.verify(digest, full=True)


def test_linking_re_records_only_what_passed_the_check_before_the_links(
    store: BlobStore, tmp_path: Path
) -> None:
    """An edit made before the check (``touch -r``) fails it and is never re-recorded by the links after."""
    clean = store.put_bytes(b"clean")
    rotten = store.put_bytes(b"rotten" * 10)
    flip_keep_mtime(store.path(rotten))
    with store.linking([clean, rotten]) as ok:
        assert ok == {clean}
        for d in (clean, rotten):
            os.link(store.path(d), tmp_path / d.split(":")[1])
    assert store.unchanged(clean, strict=True)
    assert not store.unchanged(rotten, strict=True)


def test_links_made_or_removed_by_others_pass_the_reuse_check_but_not_a_write(
    store: BlobStore, tmp_path: Path
) -> None:
    """A deleted stage dir (fewer links) must not cost a re-hash of every layer it shared; a write
    with the mtime restored and the same links still fails. The gap, a write in the same interval
    as a link change, is left to ``cache verify --full``."""
    staged = store.put_bytes(b"staged then the stage dir was deleted")
    link = tmp_path / "wf" / "blob"
    link.parent.mkdir()
    os.link(store.path(staged), link)
    assert store.relinked([staged]) == [staged]
    link.unlink()  # the workflow's clean-up: the ctime moves, the link count drops
    assert not store.unchanged(staged, strict=True)
    assert store.unchanged(staged)  # ... and the record now says so
    assert store.unchanged(staged, strict=True)

    written = store.put_bytes(b"written in place" * 10)
    flip_keep_mtime(store.path(written))
    assert not store.unchanged(written)

    both = store.put_bytes(b"written, then its stage dir deleted" * 10)
    os.link(store.path(both), tmp_path / "wf" / "both")
    store.relinked([both])
    flip_keep_mtime(store.path(both))
    (tmp_path / "wf" / "both").unlink()
    assert store.unchanged(both)  # the documented gap
    assert not store.verify(both, full=True)


def test_a_blob_with_no_record_is_never_trusted_and_relinked_does_not_invent_one(store: BlobStore) -> None:
    digest = store.put_bytes(b"recorded once")
    store._trust_file(digest).unlink()
    assert not store.unchanged(digest) and not store.is_trusted(digest)
    assert store.relinked([digest, "sha256:" + "0" * 64]) == []
    assert not store._trust_file(digest).exists()
    assert store.verify(digest, full=True) and store.unchanged(digest)  # a re-hash records it again


def test_trust_records_are_renamed_into_place_without_fsync(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost record costs a re-hash; an fsync per blob on every re-stage costs every run."""
    digest = store.put_bytes(b"no fsync")
    os.link(store.path(digest), tmp_path / "staged")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    assert store.relinked([digest]) == [digest]
    assert synced == []
    assert not [p for p in store.trust_dir.iterdir() if p.name.endswith(".tmp")]

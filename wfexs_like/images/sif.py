"""The SIF container format (Singularity Image Format), written and read in pure Python.

Apptainer and SingularityCE run a ``.sif`` file directly, so a SIF built here
must be one they accept: the on-disk layout below follows the SIF
specification version 01 as implemented by ``sylabs/sif`` (``pkg/sif``) and
checked by its ``siftool``. Nothing here depends on those tools.

Layout (all integers little-endian, structures packed with no padding)::

    0      global header (128 bytes), zero padded up to the descriptors
    4096   48 descriptors of 585 bytes each (unused ones all zero)
    32176  data objects, one after another, each at its alignment
           (partitions at 4096, everything else unaligned)

Writing is deterministic: the same objects, UUID and timestamps always give
the same bytes, which is what lets a cached SIF be pinned by its sha256.
"""

from __future__ import annotations

import enum
import os
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .. import progress
from ..errors import CacheError, ContainerFactoryException, UnsafeArchiveError
from ..fsutil import atomic_write
from .regular import open_regular

LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"
MAGIC = b"SIF_MAGIC\x00"
SPEC_VERSION = b"01\x00"
DESCRIPTOR_CAPACITY = 48
DESCRIPTORS_OFFSET = 4096
PARTITION_ALIGNMENT = 4096
GROUP_MASK = 0xF0000000
NAME_LEN = 128
EXTRA_LEN = 384

# launch[32] magic[10] version[3] arch[3] uuid[16], then 8 int64:
# ctime mtime dfree dtotal descr_off descr_size data_off data_size
_HEADER = struct.Struct("<32s10s3s3s16s8q")
# datatype used id group link offset size size_with_padding ctime mtime uid gid name extra
_DESCRIPTOR = struct.Struct(f"<i?III7q{NAME_LEN}s{EXTRA_LEN}s")
# fstype parttype arch[3]: the "extra" payload of a partition descriptor
_PARTITION_EXTRA = struct.Struct("<ii3s")

HEADER_SIZE = _HEADER.size
DESCRIPTOR_SIZE = _DESCRIPTOR.size
DATA_OFFSET = DESCRIPTORS_OFFSET + DESCRIPTOR_CAPACITY * DESCRIPTOR_SIZE

_COPY_CHUNK = 1 << 20
_KERNEL_CHUNK = 1 << 30
#: The most descriptors a SIF read here may have: SIF writers make 48, ``siftool`` grows the table
#: a few at a time; a header claiming more is not a SIF.
MAX_DESCRIPTORS = 1 << 12
#: The largest object ``read_object`` returns (a definition file, a JSON object: never a partition).
MAX_SMALL_OBJECT = 16 << 20


class SifFormatError(ContainerFactoryException, ValueError):
    """A file that is not a SIF, or a SIF whose header or descriptors are inconsistent."""


class SifDataType(enum.IntEnum):
    """Data object types; names are siftool's (``siftool add --datatype``)."""

    Deffile = 0x4001
    EnvVar = 0x4002
    Labels = 0x4003
    Partition = 0x4004
    Signature = 0x4005
    GenericJSON = 0x4006
    Generic = 0x4007
    CryptoMessage = 0x4008
    SBOM = 0x4009
    OCIRootIndex = 0x400A
    OCIBlob = 0x400B


class SifFsType(enum.IntEnum):
    Squash = 1
    Ext3 = 2
    ImmuObj = 3
    Raw = 4
    EncryptedSquash = 5


class SifPartType(enum.IntEnum):
    """``PrimSys`` is the partition a runtime boots; siftool prints it as ``*System``."""

    System = 1
    PrimSys = 2
    Data = 3
    Overlay = 4


# SIF architecture codes, keyed by Go/OCI architecture name (what image configs use).
_ARCH_CODES = {
    "386": b"01",
    "amd64": b"02",
    "arm": b"03",
    "arm64": b"04",
    "ppc64": b"05",
    "ppc64le": b"06",
    "mips": b"07",
    "mipsle": b"08",
    "mips64": b"09",
    "mips64le": b"10",
    "s390x": b"11",
    "riscv64": b"12",
}
_ARCH_NAMES = {code: name for name, code in _ARCH_CODES.items()}
# Kernel spellings people pass where an OCI name is expected.
_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "i386": "386", "i686": "386", "armv7l": "arm"}
ARCH_UNKNOWN = b"00"


def sif_arch_code(arch: str) -> bytes:
    """The 2-character SIF code for an OCI/Go architecture name (``amd64`` -> ``b"02"``)."""
    name = _ARCH_ALIASES.get(arch, arch)
    try:
        return _ARCH_CODES[name]
    except KeyError:
        known = ", ".join(sorted(_ARCH_CODES))
        raise ValueError(f"architecture {arch!r} has no SIF code; known: {known}") from None


def sif_arch_name(code: bytes) -> str:
    """The OCI/Go architecture name of a SIF code, or ``"unknown"`` (as siftool prints it)."""
    return _ARCH_NAMES.get(code.rstrip(b"\x00"), "unknown")


@dataclass(frozen=True)
class SifObject:
    """One data object to store in a SIF.

    ``data`` is bytes for small objects (definition file, JSON) or a Path that
    is streamed, so a multi-GB squashfs is never held in memory. Partitions
    need ``fs_type``, ``part_type`` and ``arch``; ``group_id`` 1 is the group
    Apptainer puts its objects in, 0 means "no group" (siftool's default;
    stored, like every group id, with the group mask bit set).
    """

    datatype: SifDataType
    data: bytes | Path
    name: str = ""
    group_id: int = 1
    link_id: int = 0
    alignment: int | None = None
    fs_type: SifFsType | None = None
    part_type: SifPartType | None = None
    arch: str | None = None

    def __post_init__(self) -> None:
        if len(self.name.encode()) > NAME_LEN:
            raise ValueError(f"SIF object name longer than {NAME_LEN} bytes: {self.name!r}")
        if not 0 <= self.group_id < GROUP_MASK:
            raise ValueError(f"SIF group id out of range: {self.group_id}")
        if self.datatype == SifDataType.Partition:
            if self.fs_type is None or self.part_type is None or self.arch is None:
                raise ValueError("a SIF partition needs fs_type, part_type and arch")
            sif_arch_code(self.arch)

    @property
    def effective_alignment(self) -> int:
        if self.alignment is not None:
            return self.alignment
        return PARTITION_ALIGNMENT if self.datatype == SifDataType.Partition else 0

    def extra(self) -> bytes:
        if self.datatype != SifDataType.Partition:
            return b""
        assert self.fs_type is not None and self.part_type is not None and self.arch is not None
        return _PARTITION_EXTRA.pack(int(self.fs_type), int(self.part_type), sif_arch_code(self.arch))


@dataclass(frozen=True)
class SifDescriptor:
    """One used descriptor as stored in a SIF file.

    ``group_id`` is 0 for "no group" (the on-disk mask bit stripped), the way
    siftool reports it; the partition fields are None for other data types.
    """

    id: int
    datatype: int
    group_id: int
    link_id: int
    offset: int
    size: int
    size_with_padding: int
    created: int
    modified: int
    name: str
    fs_type: int | None = None
    part_type: int | None = None
    arch: str | None = None


@dataclass(frozen=True)
class SifInfo:
    """The global header and used descriptors of a SIF file."""

    launch_script: str
    version: str
    arch: str
    uuid: uuid.UUID
    created: int
    modified: int
    descriptors_free: int
    descriptors_total: int
    descriptors_offset: int
    descriptors_size: int
    data_offset: int
    data_size: int
    descriptors: tuple[SifDescriptor, ...]

    def primary_partition(self) -> SifDescriptor | None:
        for d in self.descriptors:
            if d.datatype == SifDataType.Partition and d.part_type == SifPartType.PrimSys:
                return d
        return None

    def by_id(self, object_id: int) -> SifDescriptor:
        for d in self.descriptors:
            if d.id == object_id:
                return d
        raise KeyError(object_id)


def _align(offset: int, alignment: int) -> int:
    if alignment <= 1:
        return offset
    return -(-offset // alignment) * alignment


def _copy_into(out: BinaryIO, data: bytes | Path) -> int:
    if isinstance(data, bytes | bytearray | memoryview):
        out.write(data)
        return len(data)
    with open(data, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        out.flush()
        start = out.tell()
        try:
            done = _copy_in_kernel(src.fileno(), out.fileno(), size, start)
        except OSError:  # another filesystem, or a kernel that cannot: copy through user space
            done = 0
        out.seek(start + done)
        src.seek(done)
        while chunk := src.read(_COPY_CHUNK):
            out.write(chunk)
            done += len(chunk)
            progress.check_cancelled()
    return done


def _copy_in_kernel(src: int, dst: int, size: int, at: int) -> int:
    """``copy_file_range`` the whole of ``src`` to offset ``at`` of ``dst`` (a reflink where the
    filesystem shares extents); a multi-GB squashfs then never passes through this process."""
    done = 0
    while done < size:
        n = os.copy_file_range(src, dst, min(size - done, _KERNEL_CHUNK), done, at + done)
        if n == 0:
            break
        done += n
        progress.check_cancelled()
    return done


def _fixed(text: bytes, size: int) -> bytes:
    return text.ljust(size, b"\x00")


def write_sif(dest: Path, objects: Sequence[SifObject], *, uuid: uuid.UUID, created: int) -> None:
    """Write a SIF holding ``objects`` in order (their ids are 1, 2, ...).

    Atomic: the file is built beside ``dest`` under a temporary name, fsynced
    and renamed, so a reader (or a crash) never sees a half-written SIF under
    the final name. ``uuid`` and ``created`` are taken as given instead of
    random/now, which is what makes the output reproducible.
    """
    dest = Path(dest)
    if len(objects) > DESCRIPTOR_CAPACITY:
        raise ValueError(f"a SIF holds at most {DESCRIPTOR_CAPACITY} objects, got {len(objects)}")
    primaries = [o for o in objects if o.part_type == SifPartType.PrimSys]
    if len(primaries) > 1:
        raise ValueError("a SIF can have only one primary system partition")
    header_arch = sif_arch_code(primaries[0].arch) if primaries and primaries[0].arch else ARCH_UNKNOWN

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Executable like the SIFs Apptainer writes: the launch line lets `./image.sif` run it.
    with atomic_write(dest, mode=0o755) as out:
        descriptors: list[bytes] = []
        offset = DATA_OFFSET
        out.seek(offset)
        for index, obj in enumerate(objects):
            start = _align(offset, obj.effective_alignment)
            out.write(b"\x00" * (start - offset))
            size = _copy_into(out, obj.data)
            descriptors.append(
                _DESCRIPTOR.pack(
                    int(obj.datatype),
                    True,
                    index + 1,
                    obj.group_id | GROUP_MASK,
                    obj.link_id,
                    start,
                    size,
                    start - offset + size,
                    created,
                    created,
                    0,
                    0,
                    _fixed(obj.name.encode(), NAME_LEN),
                    _fixed(obj.extra(), EXTRA_LEN),
                )
            )
            offset = start + size
        header = _HEADER.pack(
            _fixed(LAUNCH_SCRIPT, 32),
            MAGIC,
            SPEC_VERSION,
            _fixed(header_arch, 3),
            uuid.bytes,
            created,
            created,
            DESCRIPTOR_CAPACITY - len(objects),
            DESCRIPTOR_CAPACITY,
            DESCRIPTORS_OFFSET,
            DESCRIPTOR_CAPACITY * DESCRIPTOR_SIZE,
            DATA_OFFSET,
            offset - DATA_OFFSET,
        )
        out.seek(0)
        out.write(header.ljust(DESCRIPTORS_OFFSET, b"\x00"))
        table = b"".join(descriptors)
        out.write(table + b"\x00" * (DESCRIPTOR_CAPACITY * DESCRIPTOR_SIZE - len(table)))
        out.truncate(offset)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


def read_sif(path: Path) -> SifInfo:
    """Parse the header and used descriptors, checking every object lies inside the file."""
    path = Path(path)
    with _open_sif(path) as f:
        head = f.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE:
            raise SifFormatError(f"{path}: too short to be a SIF ({len(head)} bytes)")
        (
            launch,
            magic,
            version,
            arch,
            raw_uuid,
            ctime,
            mtime,
            dfree,
            dtotal,
            doff,
            dsize,
            data_off,
            data_size,
        ) = _HEADER.unpack(head)
        if magic != MAGIC:
            raise SifFormatError(f"{path}: not a SIF file (magic {magic!r}, expected {MAGIC!r})")
        if not 0 < dtotal <= MAX_DESCRIPTORS or dsize != dtotal * DESCRIPTOR_SIZE or doff < HEADER_SIZE:
            raise SifFormatError(f"{path}: inconsistent descriptor table (total {dtotal}, size {dsize})")
        file_size = os.fstat(f.fileno()).st_size
        if doff + dsize > file_size:
            raise SifFormatError(f"{path}: truncated descriptor table")
        f.seek(doff)
        table = f.read(dsize)
        if len(table) != dsize:
            raise SifFormatError(f"{path}: truncated descriptor table")
    descriptors = []
    for i in range(dtotal):
        fields = _DESCRIPTOR.unpack_from(table, i * DESCRIPTOR_SIZE)
        (dtype, used, oid, group, link, offset, size, padded, d_ctime, d_mtime, _uid, _gid, name, extra) = (
            fields
        )
        if not used:
            continue
        if offset < 0 or size < 0 or offset + size > file_size:
            raise SifFormatError(
                f"{path}: object {oid} ({offset}+{size}) lies outside the file ({file_size} bytes)"
            )
        part: dict[str, object] = {}
        if dtype == SifDataType.Partition:
            fs, pt, parch = _PARTITION_EXTRA.unpack_from(extra)
            part = {"fs_type": fs, "part_type": pt, "arch": sif_arch_name(parch)}
        descriptors.append(
            SifDescriptor(
                id=oid,
                datatype=dtype,
                group_id=group & ~GROUP_MASK,
                link_id=link,
                offset=offset,
                size=size,
                size_with_padding=padded,
                created=d_ctime,
                modified=d_mtime,
                name=_cstr(name),
                **part,  # type: ignore[arg-type]
            )
        )
    return SifInfo(
        launch_script=_cstr(launch),
        version=_cstr(version),
        arch=sif_arch_name(arch),
        uuid=uuid.UUID(bytes=raw_uuid),
        created=ctime,
        modified=mtime,
        descriptors_free=dfree,
        descriptors_total=dtotal,
        descriptors_offset=doff,
        descriptors_size=dsize,
        data_offset=data_off,
        data_size=data_size,
        descriptors=tuple(descriptors),
    )


def _open_sif(path: Path) -> BinaryIO:
    """The file, if it is a regular one: a FIFO or a device handed over as a SIF is not one."""
    try:
        return open_regular(path, "SIF file")
    except (CacheError, UnsafeArchiveError) as e:
        raise SifFormatError(str(e)) from e


def read_object(path: Path, descriptor: SifDescriptor, *, limit: int = MAX_SMALL_OBJECT) -> bytes:
    """The bytes of one (small) data object, e.g. the definition file or a JSON object."""
    if descriptor.size > limit:
        raise SifFormatError(
            f"{path}: object {descriptor.id} is {descriptor.size} bytes, "
            f"more than the {limit} read into memory"
        )
    with _open_sif(path) as f:
        f.seek(descriptor.offset)
        data = f.read(descriptor.size)
    if len(data) != descriptor.size:
        raise SifFormatError(f"{path}: object {descriptor.id} is truncated")
    return data

"""Judges an uploaded zip from its central directory alone, before any job exists.

Nothing is decompressed here: names, sizes, flags and offsets are enough to refuse path
tricks, symlinks, encryption and decompression bombs in well under a second, so a bad
archive is a 4xx to the uploader instead of a failed job later.
"""

from __future__ import annotations

import itertools
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from server.kit.errors import PayloadTooLarge, Unprocessable
from server.settings import Settings

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD = b"PK\x06\x06"
_MAX_COMMENT = 65535

_ENCRYPTED = 0x1
_STRONG_ENCRYPTION = 0x40
_READABLE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# Small members (label files full of identical lines) compress absurdly well and are
# harmless; the ratio only says "bomb" once there are real bytes behind it.
RATIO_MIN_BYTES = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveSummary:
    entries: int
    files: int
    unpacked_bytes: int


def _show(name: str) -> str:
    return name if len(name) <= 200 else name[:200] + "..."


def unsafe_name_reason(name: str) -> str | None:
    """Why an entry name could escape the extraction root, or None when it is safe."""
    if name.startswith(("/", "\\")):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "is a drive path"
    if ".." in re.split(r"[\\/]", name):
        return "has a '..' component"
    return None


def _declared_entries(fh: BinaryIO) -> int | None:
    """The entry count the end-of-central-directory record claims, read before
    ``zipfile`` builds an object per entry (a cheap guard against millions of them).

    None when the record cannot be read; ``zipfile`` then has the last word.
    """
    fh.seek(0, 2)
    size = fh.tell()
    tail_len = min(size, _EOCD_SIZE + _MAX_COMMENT + _ZIP64_LOCATOR_SIZE)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(_EOCD)
    if pos < 0 or pos + _EOCD_SIZE > len(tail):
        return None
    total = int.from_bytes(tail[pos + 10 : pos + 12], "little")
    if total != 0xFFFF or pos < _ZIP64_LOCATOR_SIZE:
        return total
    locator = tail[pos - _ZIP64_LOCATOR_SIZE : pos]
    if not locator.startswith(_ZIP64_LOCATOR):
        return total
    record_at = int.from_bytes(locator[8:16], "little")
    if record_at + 56 > size:
        return None
    fh.seek(record_at)
    record = fh.read(56)
    if not record.startswith(_ZIP64_EOCD):
        return None
    return int.from_bytes(record[32:40], "little")


def _check_entry(info: zipfile.ZipInfo) -> None:
    name = info.filename
    reason = unsafe_name_reason(name)
    if reason is not None:
        raise Unprocessable(f"zip entry {_show(name)!r} {reason}; refusing the archive")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise Unprocessable(f"zip entry {_show(name)!r} is a symbolic link; refusing the archive")
    if info.flag_bits & (_ENCRYPTED | _STRONG_ENCRYPTION):
        raise Unprocessable(f"zip entry {_show(name)!r} is encrypted; upload an unencrypted zip")
    if info.compress_type not in _READABLE_METHODS:
        raise Unprocessable(
            f"zip entry {_show(name)!r} uses compression method {info.compress_type}, which "
            "is not supported (use deflate or store)"
        )


def _check_ratio(info: zipfile.ZipInfo, max_ratio: int) -> None:
    if info.file_size <= RATIO_MIN_BYTES:
        return
    ratio = info.file_size / max(info.compress_size, 1)
    if ratio > max_ratio:
        raise PayloadTooLarge(
            f"zip entry {_show(info.filename)!r} expands {ratio:.0f}x ({info.compress_size} to "
            f"{info.file_size} bytes), over the limit of {max_ratio}x: refusing a zip bomb"
        )


def _check_total_ratio(infos: list[zipfile.ZipInfo], max_ratio: int) -> None:
    """The per-entry check skips small members, so a bomb can be many small ones
    (10,000 entries of 1 MiB of zeros each pass it one by one): the archive as a whole
    must stay under the ratio too. Images, the bulk of any real dataset, hardly
    compress, so a real zip is far below it."""
    unpacked = sum(info.file_size for info in infos)
    if unpacked <= RATIO_MIN_BYTES:
        return
    packed = sum(info.compress_size for info in infos)
    ratio = unpacked / max(packed, 1)
    if ratio > max_ratio:
        raise PayloadTooLarge(
            f"the zip's {len(infos)} entries expand {ratio:.0f}x ({packed} to {unpacked} "
            f"bytes), over the limit of {max_ratio}x: refusing a zip bomb"
        )


def _check_overlap(infos: list[zipfile.ZipInfo]) -> None:
    """Entries whose data overlap (the shared-kernel zip bomb) never come from a real
    zip tool. A member's data follows its >= 30-byte local header, so it overlaps the
    next member once ``offset + compressed size`` passes the next offset."""
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for current, following in itertools.pairwise(ordered):
        if current.header_offset + current.compress_size > following.header_offset:
            raise Unprocessable(
                f"zip entries {_show(current.filename)!r} and {_show(following.filename)!r} "
                "overlap; refusing a malformed archive"
            )


def check_archive(path: Path, settings: Settings) -> ArchiveSummary:
    """Raises Unprocessable (422) or PayloadTooLarge (413) naming what is wrong."""
    max_entries = settings.max_import_entries
    try:
        with open(path, "rb") as fh:
            declared = _declared_entries(fh)
            if declared is not None and declared > max_entries:
                raise PayloadTooLarge(
                    f"the zip has {declared} entries, over the limit of {max_entries}"
                )
            with zipfile.ZipFile(fh) as archive:
                infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise Unprocessable(f"the upload is not a readable zip file ({exc})") from exc
    if len(infos) > max_entries:
        raise PayloadTooLarge(f"the zip has {len(infos)} entries, over the limit of {max_entries}")
    for info in infos:
        _check_entry(info)
    unpacked = sum(info.file_size for info in infos)
    if unpacked > settings.max_import_unpacked_bytes:
        raise PayloadTooLarge(
            f"the zip unpacks to {unpacked} bytes, over the limit of "
            f"{settings.max_import_unpacked_bytes}"
        )
    for info in infos:
        _check_ratio(info, settings.max_import_ratio)
    _check_total_ratio(infos, settings.max_import_ratio)
    _check_overlap(infos)
    files = sum(not info.is_dir() for info in infos)
    if files == 0:
        raise Unprocessable("the zip is empty")
    return ArchiveSummary(entries=len(infos), files=files, unpacked_bytes=unpacked)

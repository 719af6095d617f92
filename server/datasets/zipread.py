"""Reading members out of an accepted zip, never trusting the sizes its headers declare."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import PurePosixPath

from server.kit.storage import HashingWriter

_CHUNK = 1024 * 1024
# Errors a damaged or lying member raises while it is read.
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError)

_JUNK_DIRS = {"__macosx"}
_JUNK_FILES = {".ds_store", "thumbs.db", "desktop.ini"}


class MemberError(Exception):
    """A member that cannot be read; the message is the reason shown to the user."""


def is_junk(name: str) -> bool:
    """Files archivers and desktops add that are never part of a dataset."""
    path = PurePosixPath(name)
    if any(part.lower() in _JUNK_DIRS for part in path.parts[:-1]):
        return True
    return path.name.lower() in _JUNK_FILES or path.name.startswith("._")


def read_small(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
    """The whole member, refusing one that declares or yields more than ``max_bytes``."""
    if info.file_size > max_bytes:
        raise MemberError(f"is {info.file_size} bytes, over the limit of {max_bytes} for this file")
    try:
        with archive.open(info) as src:
            data = src.read(max_bytes + 1)
    except READ_ERRORS as exc:
        raise MemberError(f"cannot be read from the zip ({exc})") from None
    if len(data) > max_bytes:
        raise MemberError(f"holds more than {max_bytes} bytes")
    return data


def extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, writer: HashingWriter) -> None:
    """Streams a member into ``writer``, whose cap is the member's declared size: a
    header that lies about the size cannot make us write more than it declared."""
    try:
        with archive.open(info) as src:
            while chunk := src.read(_CHUNK):
                writer.write(chunk)
                if writer.too_large:
                    raise MemberError("holds more bytes than its zip header declares")
    except READ_ERRORS as exc:
        writer.discard()
        raise MemberError(f"cannot be read from the zip ({exc})") from None
    except MemberError:
        writer.discard()
        raise
    writer.close()
    if writer.size != info.file_size:
        writer.discard()
        raise MemberError(f"holds {writer.size} bytes but its zip header declares {info.file_size}")

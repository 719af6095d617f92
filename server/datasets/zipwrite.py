"""A zip writer for exports: the archive format of ``zipfile`` (the same records, ZIP64
past the same limits; read by ``zipfile``, ``unzip`` and our importer) at a fraction of
its cost per entry.

``zipfile`` writes an entry's local header, its data, then seeks back to rewrite the
header with the CRC: three seeks, each flushing its buffer, and for a deflated entry a
new compressor with zlib's default 256 KiB of state. An export writes two entries per
image (the image and its label file), so that overhead, not the bytes, was most of its
time. Here entries are assembled in one output buffer: a file is read straight into it
behind room left for its header, its CRC taken there, the header filled in, and the
buffer goes to the file in large writes. Only what does not fit the buffer (a huge
blob, the COCO JSON) is streamed, with the seek back to patch its header.

The target is a seekable binary file positioned where the archive starts; offsets are
absolute, as zipfile writes them.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Final, NamedTuple, Protocol

ZIP_STORED: Final = 0
ZIP_DEFLATED: Final = 8

# zipfile's limits: past them an entry or the archive needs ZIP64 records.
ZIP64_LIMIT: Final = (1 << 31) - 1
ZIP_FILECOUNT_LIMIT: Final = (1 << 16) - 1

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")
_EXTRA64 = struct.Struct("<HHQQ")  # a local header's ZIP64 field: both sizes
_CRC_AND_SIZES = struct.Struct("<LLL")
_SIZES64 = struct.Struct("<QQ")
_CRC = struct.Struct("<L")
_CRC_AT = 14  # bytes from a local header's start to its CRC

_VERSION = 20
_VERSION64 = 45
_UNIX = 3
_UTF8_NAME = 0x800
_MODE = 0o644 << 16

# Label files are a few hundred bytes of decimal numbers, where LZ77 finds next to
# nothing to match: Huffman coding alone compresses them within a few percent of
# zlib's default, in half the time, and a 4 KiB window with a small hash table keeps
# the compressor's setup to one small allocation instead of 256 KiB of fresh pages.
_SMALL = 1 << 12
_SMALL_WBITS = -12
_SMALL_MEMLEVEL = 4

DEFAULT_BUFFER = 4 << 20


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


class Rewindable(Readable, Protocol):
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class _Entry(NamedTuple):
    version: int  # needed to extract: 45 when the local header has a ZIP64 field
    name: bytes
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    offset: int


def dos_date_time(date_time: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
    year, month, day, hour, minute, second = date_time
    return (year - 1980) << 9 | month << 5 | day, hour << 11 | minute << 5 | second // 2


def _encoded(name: str) -> tuple[bytes, int]:
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), _UTF8_NAME


def _compressor(size_hint: int) -> zlib._Compress:
    if size_hint <= _SMALL:
        return zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION,
            zlib.DEFLATED,
            _SMALL_WBITS,
            _SMALL_MEMLEVEL,
            zlib.Z_HUFFMAN_ONLY,
        )
    # zlib's fastest level: a fifth of the default's time on COCO JSON, for about 9 %
    # more bytes of what is a small part of an archive of images.
    return zlib.compressobj(zlib.Z_BEST_SPEED, zlib.DEFLATED, -15)


def _read_fd(fd: int, view: memoryview) -> int:
    """Fills ``view`` as far as the file goes; short only at its end."""
    filled = 0
    while filled < len(view):
        got = os.readv(fd, [view[filled:]])
        if not got:
            break
        filled += got
    return filled


def _read_into(source: Readable, view: memoryview) -> int:
    filled = 0
    while filled < len(view):
        got = source.readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled


def _chunks(source: Readable, view: memoryview) -> Iterator[memoryview]:
    while filled := _read_into(source, view):
        yield view[:filled]


class ZipSink:
    """Writes entries one after another, then the central directory on ``close``. Every
    entry gets the same timestamp and mode 0644."""

    def __init__(
        self,
        target: IO[bytes],
        date_time: tuple[int, int, int, int, int, int],
        buffer_bytes: int = DEFAULT_BUFFER,
        *,
        flush_behind: bool = False,
    ) -> None:
        self.target = target
        self.date, self.time = dos_date_time(date_time)
        self.written = target.tell()
        # Start the disk writing what went out as we go (see _flush_behind).
        self.flush_behind = flush_behind and hasattr(os, "posix_fadvise")
        self.behind = self.written
        self.entries: list[_Entry] = []
        # Entries assembled before they go out; files are read straight into it.
        self.buffer = memoryview(bytearray(buffer_bytes))
        self.pending = 0
        self.closed = False

    @property
    def end(self) -> int:
        """The archive's size so far, what is still in the buffer included."""
        return self.written + self.pending

    # --- entries --------------------------------------------------------------------------

    def add_bytes(self, name: str, data: bytes, *, deflate: bool) -> None:
        """An entry held in memory, deflated (text) or stored."""
        crc = zlib.crc32(data)
        method, body = ZIP_STORED, data
        if deflate:
            compressor = _compressor(len(data))
            method, body = ZIP_DEFLATED, compressor.compress(data) + compressor.flush()
        encoded, flags = _encoded(name)
        zip64 = len(data) > ZIP64_LIMIT or len(body) > ZIP64_LIMIT
        header = self._local(encoded, flags, method, crc, len(body), len(data), zip64)
        version = _VERSION64 if zip64 else _VERSION
        self.entries.append(
            _Entry(version, encoded, flags, method, crc, len(body), len(data), self.end)
        )
        self._put(header)
        self._put(body)

    def add_file(self, name: str, fd: int, size_hint: int) -> None:
        """The rest of the open file ``fd``, stored: images are compressed already.
        ``size_hint`` (its size on disk) decides where it is read and whether its header
        needs ZIP64 room; the sizes recorded are those read. A raw descriptor, not a file
        object: setting one up and tearing it down costs as much as reading an image."""
        encoded, flags = _encoded(name)
        zip64 = size_hint > ZIP64_LIMIT
        version = _VERSION64 if zip64 else _VERSION
        head = _LOCAL.size + len(encoded) + (_EXTRA64.size if zip64 else 0)
        room = len(self.buffer)
        if head + size_hint >= room:
            self._stream_file(encoded, flags, zip64, fd)
            return
        if self.pending + head + size_hint >= room:
            self._flush()
        start = self.pending
        offset = self.written + start
        filled = _read_fd(fd, self.buffer[start + head :])
        data = self.buffer[start + head : start + head + filled]
        crc = zlib.crc32(data)
        if start + head + filled < room:
            self.buffer[start : start + head] = self._local(
                encoded, flags, ZIP_STORED, crc, filled, filled, zip64
            )
            self.pending = start + head + filled
            self.entries.append(
                _Entry(version, encoded, flags, ZIP_STORED, crc, filled, filled, offset)
            )
            return
        # Bigger than its size on disk said, and it filled the buffer: what was read
        # goes out behind a header to be patched, the rest streams after it.
        self.buffer[start : start + head] = self._local(encoded, flags, ZIP_STORED, 0, 0, 0, zip64)
        self.pending = room
        self._flush()
        crc, size = self._copy_rest(fd, crc, filled)
        self._patch(_Entry(version, encoded, flags, ZIP_STORED, crc, size, size, offset), head)

    def add_stream(self, name: str, parts: Iterable[Rewindable | bytes]) -> None:
        """``parts`` one after another (bytes, or files read from their start), deflated
        as they stream. The size is not known in advance, so the header always has ZIP64
        room, as zipfile's ``force_zip64`` gives it."""
        self._flush()
        encoded, flags = _encoded(name)
        header = self._local(encoded, flags, ZIP_DEFLATED, 0, 0, 0, zip64=True)
        offset = self.written
        self._write(header)
        compressor = _compressor(ZIP64_LIMIT)
        crc = size = compressed = 0
        for part in parts:
            if isinstance(part, bytes):
                chunks: Iterable[bytes | memoryview] = (part,)
            else:
                part.seek(0)
                chunks = _chunks(part, self.buffer)
            for chunk in chunks:
                crc = zlib.crc32(chunk, crc)
                size += len(chunk)
                out = compressor.compress(chunk)
                compressed += len(out)
                self._write(out)
        out = compressor.flush()
        compressed += len(out)
        self._write(out)
        entry = _Entry(_VERSION64, encoded, flags, ZIP_DEFLATED, crc, compressed, size, offset)
        self._patch(entry, len(header))

    def close(self) -> None:
        """The central directory and the end records; the target stays open."""
        if self.closed:
            return
        self.closed = True
        self._flush()
        directory = b"".join(self._central(entry) for entry in self.entries)
        count, size, offset = len(self.entries), len(directory), self.written
        tail = [directory]
        if count > ZIP_FILECOUNT_LIMIT or size > ZIP64_LIMIT or offset > ZIP64_LIMIT:
            end64_at = offset + size
            tail += [
                _END64.pack(
                    b"PK\x06\x06", _END64.size - 12, _VERSION64, _VERSION64, 0, 0,
                    count, count, size, offset,
                ),
                _LOCATOR64.pack(b"PK\x06\x07", 0, end64_at, 1),
            ]  # fmt: skip
            count = min(count, ZIP_FILECOUNT_LIMIT)
            size, offset = min(size, 0xFFFFFFFF), min(offset, 0xFFFFFFFF)
        tail.append(_END.pack(b"PK\x05\x06", 0, 0, count, count, size, offset, 0))
        self._write(b"".join(tail))

    # --- output ---------------------------------------------------------------------------

    def _put(self, data: bytes) -> None:
        """Appends to the buffer; what does not fit it goes out directly."""
        if self.pending + len(data) > len(self.buffer):
            self._flush()
            if len(data) > len(self.buffer):
                self._write(data)
                return
        self.buffer[self.pending : self.pending + len(data)] = data
        self.pending += len(data)

    def _flush(self) -> None:
        if self.pending:
            self.target.write(self.buffer[: self.pending])
            self.written += self.pending
            self.pending = 0
            self._flush_behind()

    def _flush_behind(self) -> None:
        """Has the kernel start writing what went out since the last call, without
        waiting for it: the fsync that makes the archive durable then finds most of it
        on disk already, instead of writing all of it at the end. POSIX_FADV_DONTNEED
        starts write-back on Linux and leaves dirty pages be; it is what PostgreSQL's
        ``*_flush_after`` falls back to without sync_file_range. Only an early start:
        durability still comes from that fsync."""
        if not self.flush_behind or self.written - self.behind < len(self.buffer):
            return
        self.target.flush()
        os.posix_fadvise(
            self.target.fileno(), self.behind, self.written - self.behind, os.POSIX_FADV_DONTNEED
        )
        self.behind = self.written

    def _write(self, data: bytes | memoryview) -> None:
        """Straight to the file; the buffer must be empty."""
        self.target.write(data)
        self.written += len(data)

    def _stream_file(self, name: bytes, flags: int, zip64: bool, fd: int) -> None:
        self._flush()
        offset = self.written
        header = self._local(name, flags, ZIP_STORED, 0, 0, 0, zip64)
        self._write(header)
        crc, size = self._copy_rest(fd, 0, 0)
        version = _VERSION64 if zip64 else _VERSION
        self._patch(_Entry(version, name, flags, ZIP_STORED, crc, size, size, offset), len(header))

    def _copy_rest(self, fd: int, crc: int, size: int) -> tuple[int, int]:
        """Copies ``fd`` to its end through the (empty) buffer; the CRC and size of the
        entry's data so far go in, those of all of it come out."""
        while got := _read_fd(fd, self.buffer):
            chunk = self.buffer[:got]
            crc = zlib.crc32(chunk, crc)
            self._write(chunk)
            self._flush_behind()
            size += got
        return crc, size

    def _patch(self, entry: _Entry, head: int) -> None:
        """Records an entry written ahead of its CRC and sizes, and fills them in."""
        zip64 = entry.version == _VERSION64
        if not zip64 and max(entry.size, entry.compressed) > ZIP64_LIMIT:
            raise ValueError(f"{entry.name!r} grew past 2 GiB while it was written")
        self.entries.append(entry)
        self.target.seek(entry.offset + _CRC_AT)
        if zip64:  # the sizes live in the ZIP64 field at the header's end
            self.target.write(_CRC.pack(entry.crc))
            self.target.seek(entry.offset + head - _SIZES64.size)
            self.target.write(_SIZES64.pack(entry.size, entry.compressed))
        else:
            self.target.write(_CRC_AND_SIZES.pack(entry.crc, entry.compressed, entry.size))
        self.target.seek(self.written)

    # --- records --------------------------------------------------------------------------

    def _local(
        self,
        name: bytes,
        flags: int,
        method: int,
        crc: int,
        compressed: int,
        size: int,
        zip64: bool,
    ) -> bytes:
        extra, version = b"", _VERSION
        if zip64:
            extra, version = _EXTRA64.pack(1, _SIZES64.size, size, compressed), _VERSION64
            compressed = size = 0xFFFFFFFF
        fixed = _LOCAL.pack(
            b"PK\x03\x04", version, 0, flags, method, self.time, self.date,
            crc, compressed, size, len(name), len(extra),
        )  # fmt: skip
        return fixed + name + extra

    def _central(self, entry: _Entry) -> bytes:
        fields: list[int] = []
        compressed, size, offset = entry.compressed, entry.size, entry.offset
        if size > ZIP64_LIMIT or compressed > ZIP64_LIMIT:
            fields += [size, compressed]
            size = compressed = 0xFFFFFFFF
        if offset > ZIP64_LIMIT:
            fields.append(offset)
            offset = 0xFFFFFFFF
        extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        version = _VERSION64 if fields else entry.version
        fixed = _CENTRAL.pack(
            b"PK\x01\x02", version, _UNIX, version, 0, entry.flags, entry.method,
            self.time, self.date, entry.crc, compressed, size, len(entry.name),
            len(extra), 0, 0, 0, _MODE, offset,
        )  # fmt: skip
        return fixed + entry.name + extra

"""The shared storage root: content-addressed blobs, cached thumbnails, atomic writes.

Layout under ``OCULAB_DATA_DIR``::

    blobs/ab/cd/<sha256>     original files, named by their content hash
    thumbs/ab/<sha256>.jpg   thumbnails, derived from a blob and regenerated if missing
    tmp/                     partial writes; same filesystem so a rename is atomic
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


class Storage:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.tmp_dir = root / "tmp"

    def ensure_layout(self) -> None:
        for sub in ("blobs", "thumbs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def blob_path(self, sha256: str) -> Path:
        # One join, not four: exports resolve this once per image.
        return self.root / f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def thumbnail_path(self, sha256: str) -> Path:
        return self.root / "thumbs" / sha256[:2] / f"{sha256}.jpg"

    def temp_path(self, suffix: str = "") -> Path:
        return self.tmp_dir / f"{uuid.uuid4().hex}{suffix}"

    def commit_file(self, tmp: Path, final: Path) -> bool:
        """Move a finished temp file into place. Returns False when the target existed.

        Content-addressed targets with the same name have the same bytes, so an
        existing file is kept and the temp file dropped.
        """
        if final.exists():
            tmp.unlink(missing_ok=True)
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        if self.fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)
        return True

    @contextlib.contextmanager
    def atomic_writer(self, final: Path) -> Iterator[BinaryIO]:
        """Write to a temp file and rename it over ``final`` only if the block succeeds."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.temp_path(final.suffix)
        try:
            with open(tmp, "wb") as fh:
                yield fh
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def delete_blob(self, sha256: str) -> None:
        self.blob_path(sha256).unlink(missing_ok=True)
        self.thumbnail_path(sha256).unlink(missing_ok=True)

    def check_writable(self) -> None:
        """Raises OSError when the storage root cannot take a write (used by /api/ready)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        probe = self.temp_path(".ready")
        probe.write_bytes(b"ok")
        probe.unlink()


class HashingWriter:
    """Streams chunks into a temp file while hashing and counting, with a byte cap."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self.too_large = False
        self._hash = hashlib.sha256()
        self._fh: BinaryIO | None = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, chunk: bytes) -> None:
        if self.too_large:
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            # Keep counting nothing further; the part is drained and rejected.
            self.too_large = True
            self.close()
            self.path.unlink(missing_ok=True)
            return
        assert self._fh is not None
        self._fh.write(chunk)
        self._hash.update(chunk)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

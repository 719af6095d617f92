"""The shared storage root: content-addressed blobs, cached thumbnails, atomic writes.

Layout under ``OCULAB_DATA_DIR``::

    blobs/ab/<sha256>        original files, named by their content hash (earlier
                             releases wrote blobs/ab/cd/<sha256>; still read)
    thumbs/ab/<sha256>.jpg   thumbnails, derived from a blob and regenerated if missing
    tmp/                     partial writes; same filesystem so a rename is atomic
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

log = logging.getLogger(__name__)

# What tmp/ holds lives for a request or a step of a job (an upload's files, an export's
# spool, a training snapshot being linked): untouched for this long, it was left by a
# process that died mid-way, and nothing will ever use or remove it.
STALE_TEMP_SECONDS = 24 * 3600

# How a batch of files is made durable: ``file``, an fsync of each file and of each
# folder that gained an entry (about 1.8 per image of an upload); ``filesystem``, one
# syncfs(2) of the storage's filesystem before the batch's renames and one after,
# which flushes the same blocks with two waits instead of hundreds. syncfs also
# flushes whatever else is dirty on that filesystem, so it suits a filesystem the
# data directory has to itself.
SyncMode = Literal["file", "filesystem"]
# How each mode is named in the log line a process writes as it starts (and that
# bench/ingest.py looks for).
SYNC_DESCRIPTIONS: dict[SyncMode, str] = {
    "file": "an fsync per file",
    "filesystem": "syncfs per batch",
}

# Local filesystems whose syncfs reports writeback errors (Linux >= 5.8 does so for
# all) and flushes data and metadata alike: ext2/3/4, XFS, Btrfs. A network
# filesystem (NFS, CephFS, SMB) keeps per-file fsync, its semantics are its own.
_SYNCFS_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs"})


def resolve_sync(root: Path, wanted: Literal["auto", "file", "filesystem"]) -> SyncMode:
    """The sync mode for a storage root. ``auto`` picks ``filesystem`` only where it
    is safe and cheap: Linux with syncfs, and ``root`` the mount point of a whole local
    filesystem (a volume of its own, as a block-device PersistentVolume is), so a
    syncfs flushes nothing that is not the storage's. A data directory on the root
    filesystem (standalone's default), a bind mount of a folder of a larger filesystem
    (k3s local-path, a docker volume) and a network filesystem keep per-file fsync."""
    if wanted == "file":
        return "file"
    if _syncfs_function() is None:
        if wanted == "filesystem":
            raise ValueError(
                "OCULAB_STORAGE_SYNC=filesystem needs Linux's syncfs(2), which this "
                f"system ({sys.platform}) lacks; use 'file' or 'auto'"
            )
        return "file"
    if wanted == "filesystem":
        return "filesystem"
    mount = mount_at(root)
    if mount is None or mount.source_root != "/":
        return "file"
    return "filesystem" if mount.fstype in _SYNCFS_FILESYSTEMS else "file"


@dataclass(frozen=True)
class Mount:
    fstype: str
    # The folder of the filesystem mounted there: "/" for a whole filesystem, a
    # deeper path for a bind mount of one of its folders.
    source_root: str


def mount_at(folder: Path, mountinfo: str | None = None) -> Mount | None:
    """The mount whose mount point is ``folder``; None when ``folder`` is not a mount
    point (or /proc is not there to say)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    try:
        target = os.path.realpath(folder)
    except OSError:
        return None
    found: Mount | None = None
    for line in mountinfo.splitlines():
        # "<id> <parent> <maj:min> <root> <mount point> <options> [<tags>...] - <type> ..."
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        if _MOUNTINFO_ESCAPE.sub(_unescape, parts[4]) == target:
            # The last mount over a point is the one a path reaches.
            found = Mount(rest.split()[0], _MOUNTINFO_ESCAPE.sub(_unescape, parts[3]))
    return found


_MOUNTINFO_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 8))


class Storage:
    def __init__(self, root: Path, *, fsync: bool = True, sync: SyncMode = "file") -> None:
        self.root = root
        self.fsync = fsync
        self.sync_mode: SyncMode = sync
        self.tmp_dir = root / "tmp"
        self._syncer: ThreadPoolExecutor | None = None
        self._syncer_lock = threading.Lock()

    def ensure_layout(self) -> None:
        for sub in ("blobs", "thumbs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def sweep_temp(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Removes what tmp/ holds that nothing has written to for ``older_than``
        seconds (a folder counts as written while any folder in it is); returns how
        many entries went. Safe while other processes share the folder: their entries
        are in use, so recent."""
        cutoff = time.time() - older_than
        removed = 0
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if _newest_folder_mtime(entry.path) < cutoff:
                        shutil.rmtree(entry.path)
                        removed += 1
                elif entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue  # gone meanwhile, or not ours to remove: the next start tries again
        if removed:
            log.info("removed %d stale entries from %s", removed, self.tmp_dir)
        return removed

    def blob_path(self, sha256: str) -> Path:
        """Where a blob is written. One level of 256 folders: with two (``ab/cd/``, the
        layout of earlier releases) nearly every new image of the first hundred thousand made
        a folder of its own, a mkdir and a folder fsync more per upload."""
        # One join, not several: exports resolve this once per image.
        return self.root / f"blobs/{sha256[:2]}/{sha256}"

    def legacy_blob_path(self, sha256: str) -> Path:
        """Where earlier releases wrote the blob (``blobs/ab/cd/<sha256>``)."""
        return self.root / f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def blob_file(self, sha256: str) -> Path:
        """Where a stored blob is read: its ``blob_path``, or its legacy place when only
        that exists (blobs stored by earlier releases stay where they are). The path may not exist:
        a blob lost from storage."""
        path = self.blob_path(sha256)
        if not path.exists():
            legacy = self.legacy_blob_path(sha256)
            if legacy.exists():
                return legacy
        return path

    def thumbnail_path(self, sha256: str) -> Path:
        return self.root / "thumbs" / sha256[:2] / f"{sha256}.jpg"

    def temp_path(self, suffix: str = "") -> Path:
        return self.tmp_dir / f"{uuid.uuid4().hex}{suffix}"

    def commit_file(self, tmp: Path, final: Path) -> bool:
        """Move a finished temp file into place, durably. Returns False when the target
        existed (``commit_files``)."""
        return self.commit_files([(tmp, final)])[0]

    def commit_files(
        self, moves: Sequence[tuple[Path, Path]], *, prepared: bool = False
    ) -> list[bool]:
        """Moves many finished temp files into place with one wait for the disk: every
        temp file is made durable (``prepared``: the caller did, see ``prepare_soon``
        and ``durable_soon``) before any is renamed, then the directories that gained
        an entry are. When this returns, every target is durable. One bool per move:
        False when the target existed already (content-addressed: same name, same
        bytes; its temp file is dropped)."""
        fresh: list[tuple[Path, Path]] = []
        placed: list[bool] = []
        for tmp, final in moves:
            if _complete(final, tmp):
                tmp.unlink(missing_ok=True)
                placed.append(False)
            else:
                fresh.append((tmp, final))
                placed.append(True)
        if not fresh:
            return placed
        if not prepared:
            self.sync([tmp for tmp, _ in fresh])
        touched: set[Path] = set()
        for tmp, final in fresh:
            touched.update(_make_parents(final.parent))
            os.replace(tmp, final)
            touched.add(final.parent)
        self.sync(sorted(touched))
        return placed

    def sync(self, paths: Sequence[Path]) -> None:
        """Makes files or directories of this storage durable: one syncfs
        (``filesystem`` mode), else an fsync of each, several at a time (one journal
        commit can carry them all), not one after the other."""
        if not self.fsync or not paths:
            return
        if self.sync_mode == "filesystem":
            _syncfs(self.root)
            return
        if len(paths) == 1:
            _fsync(paths[0])
            return
        # A few threads with a share each: a future per path costs more than its fsync.
        shares = [paths[i::_SYNC_THREADS] for i in range(min(len(paths), _SYNC_THREADS))]
        list(self._sync_pool().map(_fsync_all, shares))

    def prepare_soon(self, tmp: Path, final: Path, data: bytes | None = None) -> Future[None]:
        """Starts, in the background, the first half of making ``tmp`` ready for
        ``commit_files(..., prepared=True)``: ``tmp`` written from ``data`` (when given)
        and the folders of ``final`` created, each fsync'ed in ``file`` mode. An upload
        does it for each file while the next ones arrive; a folder made for a file that
        is then rejected stays empty. ``durable_soon`` is the second half."""
        return self._sync_pool().submit(self._prepare, tmp, final, data)

    def durable_soon(self, prepared: Sequence[Path]) -> Future[None]:
        """Once ``prepare_soon`` has finished each of ``prepared``: a future done when
        all are durable. In ``file`` mode they are already; in ``filesystem`` mode it is
        one syncfs, run in the background so the caller can wait for something else
        (an upload, for the decoding of its last files) meanwhile."""
        if self.sync_mode == "file" or not self.fsync or not prepared:
            done: Future[None] = Future()
            done.set_result(None)
            return done
        return self._sync_pool().submit(self.sync, prepared)

    def _prepare(self, tmp: Path, final: Path, data: bytes | None) -> None:
        each = self.fsync and self.sync_mode == "file"
        if data is not None:
            _write(tmp, data, sync=each)
        elif each:
            _fsync(tmp)
        created = _make_parents(final.parent)
        if each:
            for folder in created:
                _fsync(folder)

    def _sync_pool(self) -> ThreadPoolExecutor:
        with self._syncer_lock:
            if self._syncer is None:
                self._syncer = ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="fsync")
            return self._syncer

    @contextlib.contextmanager
    def atomic_writer(self, final: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
        """Write to a temp file and rename it over ``final`` only if the block succeeds.
        ``durable=False`` skips the fsync and writes the temp file beside ``final``
        (``.<random>.part``), for derived files such as thumbnails that are rebuilt when
        missing or empty and are written in the background: ``tmp/`` keeps only the
        partial writes of requests."""
        if durable:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.temp_path(final.suffix)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f".{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as fh:
                yield fh
                fh.flush()
                if self.fsync and durable:
                    os.fsync(fh.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def delete_blob(self, sha256: str) -> None:
        self.blob_path(sha256).unlink(missing_ok=True)
        self.legacy_blob_path(sha256).unlink(missing_ok=True)
        self.thumbnail_path(sha256).unlink(missing_ok=True)

    def check_writable(self) -> None:
        """Raises OSError when the storage root cannot take a write (used by /api/ready)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        probe = self.temp_path(".ready")
        probe.write_bytes(b"ok")
        probe.unlink()


_SYNC_THREADS = 8


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _syncfs_function() -> Any | None:
    """libc's syncfs, where there is one (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def _syncfs(folder: Path) -> None:
    """syncfs(2) of the filesystem holding ``folder``: every dirty page and inode of it
    written and flushed. A writeback error since the last syncfs is raised (Linux
    >= 5.8 reports them here, as fsync does per file)."""
    function = _syncfs_function()
    if function is None:  # resolve_sync never picks filesystem mode then
        raise OSError("syncfs is not available on this system")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if function(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), str(folder))
    finally:
        os.close(fd)


def _write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_all(paths: Sequence[Path]) -> None:
    for path in paths:
        _fsync(path)


def _newest_folder_mtime(top: str) -> float:
    """The latest mtime of ``top`` and the folders under it: adding a file to a folder
    touches the folder, so a tree being filled is recent."""
    newest = os.stat(top).st_mtime
    for folder, subfolders, _files in os.walk(top):
        for name in subfolders:
            newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime)
    return newest


def _complete(final: Path, tmp: Path) -> bool:
    """Whether a content-addressed target already holds the bytes: same name, same
    size. (A target of another size cannot hold them: damaged, it is replaced.)"""
    try:
        return final.stat().st_size == tmp.stat().st_size
    except FileNotFoundError:
        return False


def _make_parents(folder: Path) -> list[Path]:
    """Creates ``folder`` and missing ancestors; returns the folders whose entries
    changed (the parents of those created), to be fsync'ed."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
    return [created.parent for created in missing]


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

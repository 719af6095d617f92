"""How the storage makes a batch of files durable: an fsync per file and folder, or two
syncfs(2) of its filesystem per batch (``OCULAB_STORAGE_SYNC``)."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from server import migrate
from server.images import decoding
from server.kit import storage as storage_module
from server.kit.storage import Mount, Storage, mount_at, resolve_sync
from server.models.image import Image
from server.settings import Settings
from tests.factories import Factory, noisy_jpeg, png_bytes
from tests.helpers import BACKEND

MOUNTINFO = """\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
35 22 0:31 / /proc rw,nosuid shared:12 - proc proc rw
41 22 259:2 / /srv/lab\\040data rw,relatime shared:20 - xfs /dev/vdb rw,attr2
42 22 0:40 / /mnt/shared rw,relatime shared:21 - nfs4 nas:/export rw,vers=4.2
43 22 259:3 / /mnt/stacked rw shared:22 - ext4 /dev/vdc rw
44 43 0:41 / /mnt/stacked rw shared:23 - tmpfs tmpfs rw
45 22 259:1 /pv/pvc-1 /var/lib/oculab rw,relatime shared:1 - ext4 /dev/vda1 rw
"""


def test_mount_at_reads_the_mount_point_from_mountinfo() -> None:
    assert mount_at(Path("/srv/lab data"), MOUNTINFO) == Mount("xfs", "/")
    assert mount_at(Path("/mnt/shared"), MOUNTINFO) == Mount("nfs4", "/")
    assert mount_at(Path("/"), MOUNTINFO) == Mount("ext4", "/")
    assert mount_at(Path("/var/lib/oculab"), MOUNTINFO) == Mount("ext4", "/pv/pvc-1")
    # A folder inside a mount is not a mount point: its filesystem may be shared.
    assert mount_at(Path("/srv/lab data/oculab"), MOUNTINFO) is None
    assert mount_at(Path("/srv"), MOUNTINFO) is None
    # Mounted over: the last mount is the one a path reaches.
    assert mount_at(Path("/mnt/stacked"), MOUNTINFO) == Mount("tmpfs", "/")


def test_auto_keeps_per_file_fsync_for_a_folder_that_is_not_a_mount(tmp_path: Path) -> None:
    assert mount_at(tmp_path) is None
    assert resolve_sync(tmp_path, "auto") == "file"
    assert resolve_sync(tmp_path, "file") == "file"
    assert resolve_sync(tmp_path, "filesystem") == "filesystem"


def test_auto_takes_syncfs_only_for_a_whole_local_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = {
        "/srv/lab data": "filesystem",  # a whole XFS volume
        "/mnt/shared": "file",  # NFS
        "/var/lib/oculab": "file",  # a bind mount of one folder of the root filesystem
        "/mnt/stacked": "file",  # tmpfs
    }
    real_mount_at = storage_module.mount_at
    monkeypatch.setattr(storage_module, "mount_at", lambda f: real_mount_at(f, MOUNTINFO))
    for folder, expected in cases.items():
        assert resolve_sync(Path(folder), "auto") == expected, folder
    # On this machine, from its own mount table: the root is a mount point.
    monkeypatch.setattr(storage_module, "mount_at", real_mount_at)
    root = mount_at(Path("/"))
    assert root is not None
    local = root.fstype in {"ext2", "ext3", "ext4", "xfs", "btrfs"} and root.source_root == "/"
    assert resolve_sync(Path("/"), "auto") == ("filesystem" if local else "file")


def test_a_bad_storage_sync_setting_is_refused(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValidationError, match="storage_sync"):
        make_settings(storage_sync="sometimes")


class SyncLog:
    """Calls through to the storage's real sync calls, noting what was in place at
    each syncfs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, finals: list[Path]) -> None:
        self.finals = finals
        self.syncfs: list[list[bool]] = []  # per syncfs: which finals existed
        self.fsyncs = 0  # files and folders fsync'ed one by one
        real_syncfs, real_fsync = storage_module._syncfs, storage_module._fsync
        real_write = storage_module._write

        def syncfs(folder: Path) -> None:
            self.syncfs.append([final.exists() for final in self.finals])
            real_syncfs(folder)

        def fsync(path: Path) -> None:
            self.fsyncs += 1
            real_fsync(path)

        def write(path: Path, data: bytes, *, sync: bool) -> None:
            self.fsyncs += sync
            real_write(path, data, sync=sync)

        monkeypatch.setattr(storage_module, "_syncfs", syncfs)
        monkeypatch.setattr(storage_module, "_write", write)
        monkeypatch.setattr(storage_module, "_fsync", fsync)


def _moves(storage: Storage, count: int) -> list[tuple[Path, Path]]:
    moves = []
    for index in range(count):
        data = f"blob {index}".encode()
        tmp = storage.temp_path()
        tmp.write_bytes(data)
        moves.append((tmp, storage.blob_path(hashlib.sha256(data).hexdigest())))
    return moves


def test_filesystem_mode_syncs_the_data_before_any_rename_and_the_renames_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(tmp_path, sync="filesystem")
    storage.ensure_layout()
    moves = _moves(storage, 5)
    log = SyncLog(monkeypatch, [final for _, final in moves])
    assert storage.commit_files(moves) == [True] * 5
    # Two waits for the disk, whatever the batch's size: the first while nothing is
    # renamed (a crash then leaves no named blob with unwritten bytes), the second once
    # everything is.
    assert log.syncfs == [[False] * 5, [True] * 5]
    assert log.fsyncs == 0
    assert [final.read_bytes() for _, final in moves] == [f"blob {i}".encode() for i in range(5)]
    assert list(storage.tmp_dir.iterdir()) == []


def test_filesystem_mode_syncs_what_prepare_soon_wrote_once_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(tmp_path, sync="filesystem")
    storage.ensure_layout()
    data = [f"prepared {i}".encode() for i in range(3)]
    moves = [(storage.temp_path(), storage.blob_path(hashlib.sha256(d).hexdigest())) for d in data]
    log = SyncLog(monkeypatch, [final for _, final in moves])
    for (tmp, final), d in zip(moves, data, strict=True):
        storage.prepare_soon(tmp, final, d).result()
    # Written and its folder made, nothing flushed yet: the batch's syncfs does that.
    assert all(tmp.read_bytes() == d for (tmp, _), d in zip(moves, data, strict=True))
    assert log.syncfs == []
    assert log.fsyncs == 0
    storage.durable_soon([tmp for tmp, _ in moves]).result()
    assert log.syncfs == [[False] * 3]
    assert storage.commit_files(moves, prepared=True) == [True] * 3
    assert log.syncfs == [[False] * 3, [True] * 3]
    assert log.fsyncs == 0


def test_file_mode_fsyncs_each_file_and_folder_and_never_the_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(tmp_path)
    storage.ensure_layout()
    moves = _moves(storage, 3)
    log = SyncLog(monkeypatch, [final for _, final in moves])
    assert storage.commit_files(moves) == [True] * 3
    assert log.syncfs == []
    folders = {final.parent for _, final in moves} | {final.parent.parent for _, final in moves}
    assert log.fsyncs == 3 + len(folders)
    # Prepared: each file and new folder is fsync'ed as it is written, so there is
    # nothing left to wait for before the renames.
    data = b"prepared in file mode"
    tmp, final = storage.temp_path(), storage.blob_path(hashlib.sha256(data).hexdigest())
    log.fsyncs = 0
    storage.prepare_soon(tmp, final, data).result()
    prepared = log.fsyncs
    assert prepared == 1 + (final.parent not in folders)
    storage.durable_soon([tmp]).result()
    assert log.fsyncs == prepared
    assert storage.commit_files([(tmp, final)], prepared=True) == [True]
    assert log.syncfs == []
    assert log.fsyncs == prepared + 1  # the folder that gained the blob


def test_commit_file_makes_the_rename_durable_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(tmp_path)
    storage.ensure_layout()
    [(tmp, final)] = _moves(storage, 1)
    log = SyncLog(monkeypatch, [final])
    assert storage.commit_file(tmp, final) is True
    # The file, its new folder, and blobs/ which gained that folder.
    assert log.fsyncs == 3
    again = storage.temp_path()
    again.write_bytes(final.read_bytes())
    assert storage.commit_file(again, final) is False
    assert not again.exists()


def test_an_upload_in_filesystem_mode_stores_every_file_with_two_syncfs(
    make_app: Callable[..., FastAPI],
    factory_for: Callable[[FastAPI], Factory],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(fsync=True, storage_sync="filesystem")
    storage: Storage = app.state.storage
    assert storage.sync_mode == "filesystem"
    factory = factory_for(app)
    alice = factory.client(factory.user("alice"))
    project = alice.project()
    log = SyncLog(monkeypatch, [])
    files = [(f"{seed}.png", png_bytes(seed)) for seed in range(1, 21)]
    response = alice.upload(project["id"], *files, ("cut.png", png_bytes(99)[:60]))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["created"], body["rejected"]) == (20, 1)
    assert len(log.syncfs) == 2
    assert log.fsyncs == 0
    for item in body["items"][:20]:
        assert storage.blob_file(item["sha256"]).read_bytes() == dict(files)[item["filename"]]
    assert factory.count(Image) == 20
    assert list(storage.tmp_dir.iterdir()) == []


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A whole 8 MiB ext4 filesystem of its own, mounted from a loop file (needs root
    and a loop device: skipped where the machine has neither)."""
    image, point = tmp_path / "volume.img", tmp_path / "volume"
    point.mkdir()
    with image.open("wb") as fh:
        fh.truncate(8 * 1024 * 1024)
    made = subprocess.run(
        ["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True, check=False
    )
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4: {made.stderr.strip()}")
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop filesystem here: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        # Lazily: a thumbnail the background renderer is still writing holds it a moment.
        subprocess.run(["umount", "--lazy", str(point)], check=True)


def test_auto_takes_syncfs_for_a_real_filesystem_of_its_own(small_volume: Path) -> None:
    assert mount_at(small_volume) == Mount("ext4", "/")
    assert resolve_sync(small_volume, "auto") == "filesystem"
    (small_volume / "data").mkdir()
    assert resolve_sync(small_volume / "data", "auto") == "file"


@pytest.mark.parametrize("sync", ["filesystem", "file"])
def test_an_upload_that_fills_the_storage_is_refused_and_leaves_nothing(
    small_volume: Path,
    sync: str,
    make_app: Callable[..., FastAPI],
    factory_for: Callable[[FastAPI], Factory],
) -> None:
    app = make_app(data_dir=small_volume, fsync=True, storage_sync=sync)
    factory = factory_for(app)
    alice = factory.client(factory.user("alice"))
    project = alice.project()
    kept = alice.upload(project["id"], ("kept.png", png_bytes(1)))
    assert kept.status_code == 201, kept.text
    before = sorted(p.relative_to(small_volume) for p in (small_volume / "blobs").rglob("*"))
    # About 12 MiB of photos that do not compress, for 8 MiB of disk.
    photos = [(f"{seed}.jpg", noisy_jpeg((640, 480), seed)) for seed in range(60)]
    response = alice.upload(project["id"], *photos)
    assert response.status_code == 507, response.text
    assert "storage is full" in response.json()["detail"]
    assert factory.count(Image) == 1
    after = sorted(p.relative_to(small_volume) for p in (small_volume / "blobs").rglob("*"))
    assert [p for p in after if p.is_file()] == [p for p in before if p.is_file()]
    assert list((small_volume / "tmp").iterdir()) == []
    # The space is back: an upload that fits goes in.
    again = alice.upload(project["id"], *photos[:4])
    assert again.status_code == 201, again.text
    assert again.json()["created"] == 4
    decoding.drain_thumbnails()


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's own disk-full error")
def test_a_standalone_database_on_a_full_volume_answers_507_and_recovers(
    small_volume: Path,
    make_app: Callable[..., FastAPI],
    factory_for: Callable[[FastAPI], Factory],
) -> None:
    # Standalone keeps its database in the data directory.
    url = f"sqlite:///{small_volume / 'oculab.db'}"
    migrate.upgrade(url)
    app = make_app(database_url=url, data_dir=small_volume / "data")
    factory = factory_for(app)
    alice = factory.client(factory.user("alice"))
    # Everything but the last few KiB taken by another file on the same volume.
    filler = small_volume / "filler"
    with filler.open("wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
    payload = {"name": "Big", "description": "x" * 10_000, "classes": ["a"]}
    refused = alice.post("/api/projects", json=payload)
    assert refused.status_code == 507, refused.text
    assert "storage is full" in refused.json()["detail"]
    filler.unlink()
    created = alice.post("/api/projects", json=payload)
    assert created.status_code == 201, created.text
    assert [p["name"] for p in alice.get("/api/projects").json()["items"]] == ["Big"]
    app.state.engine.dispose()

"""The export's own zip writer (server/datasets/zipwrite.py): whatever path an entry
takes through it, zipfile and Info-ZIP's unzip read back exactly what went in; and the
export job around it, durable and cancelable."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from server.datasets.exporter import _blob_path, _legacy_blob_path, _open_blob
from server.datasets.zipwrite import DEFAULT_BUFFER, ZIP64_LIMIT, ZIP_FILECOUNT_LIMIT, ZipSink
from server.kit.storage import Storage
from tests.factories import ApiClient, Factory, png_bytes
from tests.helpers import wait_job, wait_until

WHEN = (2026, 3, 4, 5, 6, 8)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    """Blob-like files of awkward sizes, written under tmp_path/src."""
    src = tmp_path / "src"
    src.mkdir()
    contents = {f"f{size}": os.urandom(size) for size in (0, 1, 4095, 4096, 9_000, 70_000, 300_000)}
    for name, data in contents.items():
        (src / name).write_bytes(data)
    return contents


def add_file(sink: ZipSink, name: str, path: Path, size_hint: int | None = None) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        sink.add_file(name, fd, os.fstat(fd).st_size if size_hint is None else size_hint)
    finally:
        os.close(fd)


def unzip_test(path: Path) -> None:
    if shutil.which("unzip") is None:
        pytest.skip("Info-ZIP unzip is not installed")
    done = subprocess.run(["unzip", "-tq", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("buffer_bytes", [4096, 65_536, 4 << 20])
@pytest.mark.parametrize("hint", ["true", "too small", "too large"])
def test_every_entry_reads_back_byte_for_byte(
    tmp_path: Path, files: dict[str, bytes], buffer_bytes: int, hint: str
) -> None:
    """Files that fit the buffer, overflow it, or are larger than their size on disk
    said (all through the same header patching), text deflated, a streamed entry."""
    spool = tmp_path / "spool"
    spool.write_bytes(b'{"id":1},' * 50_000)
    labels = {name: b"0 0.5 0.5 0.25 0.125\n" * (len(data) % 7) for name, data in files.items()}
    target = tmp_path / "out.zip"
    with open(target, "wb") as fh:
        sink = ZipSink(fh, WHEN, buffer_bytes=buffer_bytes)
        for name, data in files.items():
            size = {"true": len(data), "too small": 1, "too large": len(data) * 3 + 10}[hint]
            add_file(sink, f"images/train/{name}.jpg", tmp_path / "src" / name, size)
            sink.add_bytes(f"labels/train/{name}.txt", labels[name], deflate=True)
        with open(spool, "rb") as part:
            sink.add_stream("annotations/instances_train.json", [b"[", part, b"]"])
        sink.add_bytes("data.yaml", b"names: [cat, dog]\n", deflate=True)
        sink.close()

    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        for name, data in files.items():
            assert archive.read(f"images/train/{name}.jpg") == data
            assert archive.read(f"labels/train/{name}.txt") == labels[name]
        assert archive.read("annotations/instances_train.json") == b"[" + spool.read_bytes() + b"]"
        for info in archive.infolist():
            stored = info.filename.startswith("images/")
            assert info.compress_type == (zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
            assert info.date_time == WHEN
            assert info.external_attr >> 16 == 0o644
    unzip_test(target)


def test_the_same_bytes_as_zipfile_reads_them_in_order_with_utf8_names(tmp_path: Path) -> None:
    target = tmp_path / "out.zip"
    names = ["images/train/chat_été.png", "images/val/猫.png", "labels/train/plain.txt"]
    with open(target, "wb") as fh:
        sink = ZipSink(fh, WHEN)
        for index, name in enumerate(names):
            sink.add_bytes(name, f"entry {index}\n".encode(), deflate=name.endswith(".txt"))
        sink.close()
    with zipfile.ZipFile(target) as archive:
        assert archive.namelist() == names
        for index, info in enumerate(archive.infolist()):
            assert info.flag_bits & 0x800 == (0 if info.filename.isascii() else 0x800)
            assert archive.read(info) == f"entry {index}\n".encode()
    unzip_test(target)


def test_label_text_is_really_compressed(tmp_path: Path) -> None:
    text = "".join(f"{i % 5} 0.{i:06d}3 0.4{i:05d} 0.0{i:04d}7 0.12{i:03d}\n" for i in range(40))
    target = tmp_path / "out.zip"
    with open(target, "wb") as fh:
        sink = ZipSink(fh, WHEN)
        sink.add_bytes("labels/train/a.txt", text.encode(), deflate=True)
        sink.close()
    with zipfile.ZipFile(target) as archive:
        (info,) = archive.infolist()
        assert info.compress_size < 0.75 * info.file_size
        assert archive.read(info).decode() == text


def test_more_entries_than_a_plain_zip_can_count_get_zip64_records(tmp_path: Path) -> None:
    count = ZIP_FILECOUNT_LIMIT + 10
    target = tmp_path / "many.zip"
    with open(target, "wb") as fh:
        sink = ZipSink(fh, WHEN)
        for index in range(count):
            sink.add_bytes(f"labels/{index}.txt", b"%d\n" % index, deflate=True)
        sink.close()
    tail = target.read_bytes()[-200:]
    assert b"PK\x06\x06" in tail  # the ZIP64 end record
    assert b"PK\x06\x07" in tail  # and its locator
    with zipfile.ZipFile(target) as archive:
        infos = archive.infolist()
        assert len(infos) == count
        assert archive.read(infos[-1]) == b"%d\n" % (count - 1)
    unzip_test(target)


def test_entries_past_2_gib_get_zip64_offsets(tmp_path: Path) -> None:
    """The archive starts 2.5 GiB into a sparse file: every offset needs ZIP64 fields,
    and zipfile finds the archive behind the leading bytes, as it does a
    self-extractor's."""
    target = tmp_path / "far.zip"
    image = os.urandom(50_000)
    (tmp_path / "image").write_bytes(image)
    with open(target, "wb") as fh:
        fh.seek(ZIP64_LIMIT + (512 << 20))
        sink = ZipSink(fh, WHEN)
        add_file(sink, "images/train/a.jpg", tmp_path / "image")
        sink.add_bytes("labels/train/a.txt", b"1 0.5 0.5 0.5 0.5\n", deflate=True)
        with io.BytesIO(b"[]") as part:
            sink.add_stream("annotations/instances_train.json", [part])
        sink.close()
    with zipfile.ZipFile(target) as archive:
        offsets = [info.header_offset for info in archive.infolist()]
        assert min(offsets) > ZIP64_LIMIT
        assert archive.read("images/train/a.jpg") == image
        assert archive.read("labels/train/a.txt") == b"1 0.5 0.5 0.5 0.5\n"
        assert archive.read("annotations/instances_train.json") == b"[]"


def test_the_exporters_blob_path_is_storages(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    root = os.fspath(storage.root)
    for seed in range(5):
        sha = hashlib.sha256(bytes([seed])).hexdigest()
        assert _blob_path(root, sha) == os.fspath(storage.blob_path(sha))
        assert _legacy_blob_path(root, sha) == os.fspath(storage.legacy_blob_path(sha))


def test_the_exporter_reads_a_blob_where_an_earlier_release_stored_it(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    root = os.fspath(storage.root)
    old, new = hashlib.sha256(b"old").hexdigest(), hashlib.sha256(b"new").hexdigest()
    storage.legacy_blob_path(old).parent.mkdir(parents=True)
    storage.legacy_blob_path(old).write_bytes(b"old")
    storage.blob_path(new).parent.mkdir(parents=True)
    storage.blob_path(new).write_bytes(b"new")
    for sha, data in ((old, b"old"), (new, b"new")):
        fd = _open_blob(root, sha)
        try:
            assert os.read(fd, 10) == data
        finally:
            os.close(fd)
    with pytest.raises(FileNotFoundError):
        _open_blob(root, hashlib.sha256(b"lost").hexdigest())


def test_crcs_are_those_of_the_bytes(tmp_path: Path, files: dict[str, bytes]) -> None:
    target = tmp_path / "out.zip"
    with open(target, "wb") as fh:
        sink = ZipSink(fh, WHEN, buffer_bytes=8192)
        for name in files:
            add_file(sink, name, tmp_path / "src" / name)
        sink.close()
    with zipfile.ZipFile(target) as archive:
        for info in archive.infolist():
            assert zlib.crc32(files[info.filename]) == info.CRC
            assert info.file_size == info.compress_size == len(files[info.filename])


# --- the export job, end to end ------------------------------------------------------------


def _noise_png(size: int) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(out, format="PNG")
    return out.getvalue()


def _export(client: ApiClient, project_id: int) -> dict[str, Any]:
    response = client.post(f"/api/projects/{project_id}/exports", json={"format": "yolo"})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def test_a_durable_export_larger_than_the_write_buffer_reads_back(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    """With fsync on, the archive's pages are pushed to disk while it is written (past
    each buffer's worth) and the whole is fsynced at the end: the same bytes come back."""
    app = make_app(run_jobs=True, fsync=True)
    with TestClient(app):
        owner = factory_for(app).client(factory_for(app).user("olga"))
        pid = owner.project("big")["id"]
        images = {f"noise{i}.png": _noise_png(700) for i in range(5)}
        assert sum(map(len, images.values())) > DEFAULT_BUFFER
        assert owner.upload(pid, *images.items()).status_code == 201
        job = wait_job(owner, _export(owner, pid)["id"])
        assert job["state"] == "succeeded", job
        artifact = owner.get(f"/api/jobs/{job['id']}/artifact")
        assert artifact.status_code == 200, artifact.text
    with zipfile.ZipFile(io.BytesIO(artifact.content)) as archive:
        assert archive.testzip() is None
        for name, data in images.items():
            assert archive.read(f"images/train/{name}") == data


def test_a_canceled_export_stops_and_leaves_no_archive(
    make_app: Callable[..., FastAPI],
    factory_for: Callable[[FastAPI], Factory],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A progress report (where a cancel takes effect) after every image, each a write
    # transaction: far slower than the cancel is to arrive.
    monkeypatch.setattr("server.datasets.exporter.PROGRESS_SECONDS", 0.0)
    app = make_app(run_jobs=True)
    with TestClient(app):
        owner = factory_for(app).client(factory_for(app).user("olga"))
        pid = owner.project("cancel")["id"]
        for first in range(0, 400, 100):
            files = [(f"i{n}.png", png_bytes(n, (8, 8))) for n in range(first, first + 100)]
            assert owner.upload(pid, *files).status_code == 201
        job = _export(owner, pid)
        wait_until(
            lambda: owner.get(f"/api/jobs/{job['id']}").json()["state"] != "queued",
            240,
            "the export never started",
            0.01,
        )
        canceled = owner.post(f"/api/jobs/{job['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
        finished = wait_job(owner, job["id"])
        assert finished["state"] == "canceled", finished
        assert not finished["has_artifact"]
        assert owner.get(f"/api/jobs/{job['id']}/artifact").status_code == 404
        data_dir = app.state.settings.data_dir
        assert not (data_dir / "exports" / f"{job['id']}.zip").exists()
        assert list((data_dir / "tmp").iterdir()) == []

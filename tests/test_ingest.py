"""The upload pipeline: decode pool, DCT-scaled validation, group fsync, batched rows,
thumbnails after the response. Bad files in a request with good ones leave nothing of
themselves behind."""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from fastapi import FastAPI
from PIL import Image as PILImage

from server.images import decoding, processing, service
from server.images.upload import MemoryWriter, ReceivedFile
from server.kit.storage import Storage
from server.models.image import Image
from server.settings import Settings
from tests.factories import ApiClient, Factory, noisy_jpeg, png_bomb, png_bytes
from tests.helpers import wait_until


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _jpeg(size: tuple[int, int] = (640, 480), *, progressive: bool = False, seed: int = 0) -> bytes:
    # Coarse noise scaled up compresses like a photo: many entropy-coded bytes.
    coarse = (size[0] // 16, size[1] // 16)
    noise = random.Random(seed).randbytes(coarse[0] * coarse[1] * 3)
    out = io.BytesIO()
    PILImage.frombytes("RGB", coarse, noise).resize(size, PILImage.Resampling.BILINEAR).save(
        out, format="JPEG", quality=85, progressive=progressive
    )
    return out.getvalue()


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("cut", [2, 100, 5000, 0.5])
def test_truncated_jpeg_fails_even_at_the_smallest_dct_scale(
    tmp_path: Path, progressive: bool, cut: float
) -> None:
    data = _jpeg(progressive=progressive)
    keep = len(data) - int(cut) if cut >= 1 else int(len(data) * cut)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:keep])
    # What the decode workers run: validation at draft scale 1/8.
    [verdict] = processing.check_files([processing.Check(str(path), 40_000_000)])
    assert verdict.info is None
    assert verdict.rejected is not None
    assert "truncated" in verdict.rejected.reason
    # The scaled decode really is scaled: the same bytes, whole, decode to 80x60.
    path.write_bytes(data)
    seen: list[tuple[int, int]] = []
    processing.inspect(
        path, max_pixels=40_000_000, thumb_size=80, on_decoded=lambda im: seen.append(im.size)
    )
    assert seen == [(80, 60)]
    [whole] = processing.check_files([processing.Check(str(path), 40_000_000)])
    assert whole.info == processing.ImageInfo("jpeg", 640, 480)
    # An upload's files are checked from the bytes it kept in memory, just as strictly.
    cut_in_memory, whole_in_memory = processing.check_files(
        [
            processing.Check(str(tmp_path / "absent"), 40_000_000, data=data[:keep]),
            processing.Check(str(tmp_path / "absent"), 40_000_000, data=data),
        ]
    )
    assert cut_in_memory.rejected is not None
    assert "truncated" in cut_in_memory.rejected.reason
    assert whole_in_memory.info == processing.ImageInfo("jpeg", 640, 480)


def test_a_part_kept_in_memory_goes_on_in_its_file_past_the_budget(tmp_path: Path) -> None:
    kept = MemoryWriter(tmp_path / "kept", max_bytes=1000, budget=100)
    kept.write(b"k" * 100)
    kept.close()
    assert (kept.data, kept.size, kept.too_large) == (b"k" * 100, 100, False)
    assert kept.sha256 == hashlib.sha256(b"k" * 100).hexdigest()
    assert not kept.path.exists()  # the caller writes it

    spilled = MemoryWriter(tmp_path / "spilled", max_bytes=1000, budget=100)
    spilled.write(b"a" * 60)
    spilled.write(b"b" * 60)
    spilled.write(b"c" * 60)
    spilled.close()
    assert (spilled.data, spilled.size, spilled.too_large) == (None, 180, False)
    assert spilled.path.read_bytes() == b"a" * 60 + b"b" * 60 + b"c" * 60
    assert spilled.sha256 == hashlib.sha256(spilled.path.read_bytes()).hexdigest()

    # The per-file cap still holds for a part that was in memory: drained, not stored.
    over = MemoryWriter(tmp_path / "over", max_bytes=150, budget=10_000)
    over.write(b"o" * 100)
    over.write(b"o" * 100)
    over.close()
    assert (over.data, over.too_large) == (None, True)
    assert _files(tmp_path) == [spilled.path]


def _multipart_parts(boundary: bytes, files: list[tuple[str, bytes]]) -> bytes:
    """The parts of a multipart body, without its closing boundary."""
    return b"".join(
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; '
        b'filename="' + name.encode() + b'"\r\n\r\n' + data + b"\r\n"
        for name, data in files
    )


def test_an_upload_cut_off_after_some_files_leaves_nothing_behind(
    alice: ApiClient, factory: Factory, settings: Settings
) -> None:
    project = alice.project()
    # Twelve whole files (decoded from memory and written by the storage's threads as
    # they arrive), then the body ends inside the thirteenth.
    files = [(f"{i}.jpg", _jpeg(seed=i)) for i in range(12)] + [("13.jpg", _jpeg(seed=13)[:1000])]
    body = _multipart_parts(b"cut", files).removesuffix(b"\r\n")
    response = alice.post(
        f"/api/projects/{project['id']}/images",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=cut"},
    )
    assert response.status_code == 400, response.text
    assert "ended before the last part" in response.json()["detail"]
    assert factory.count(Image) == 0
    assert _files(settings.data_dir / "blobs") == []
    assert _files(settings.data_dir / "tmp") == []


def test_an_abandoned_intake_removes_the_files_its_threads_wrote(settings: Settings) -> None:
    storage = Storage(settings.data_dir)
    storage.ensure_layout()
    intake = service.Intake(storage, settings)
    for i in range(12):
        data = _jpeg(seed=i)
        intake.add(
            ReceivedFile(
                field="files",
                filename=f"{i}.jpg",
                path=storage.temp_path(".upload"),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                too_large=False,
                data=data,
            )
        )
    # The storage's threads write each file kept in memory to its temp path.
    wait_until(lambda: len(_files(storage.tmp_dir)) == 12, 30, "the files were never written")
    intake.abandon()
    assert _files(storage.tmp_dir) == []


def test_one_file_too_many_fails_the_request_and_leaves_nothing_behind(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory], settings: Settings
) -> None:
    f = factory_for(make_app(max_files_per_request=3))
    alice = f.client(f.user("alice"))
    project = alice.project()
    response = alice.upload(project["id"], *[(f"{i}.jpg", _jpeg(seed=i)) for i in range(4)])
    assert response.status_code == 413, response.text
    assert "too many files" in response.json()["detail"]
    assert f.count(Image) == 0
    assert _files(settings.data_dir / "blobs") == []
    assert _files(settings.data_dir / "tmp") == []


def test_a_request_of_good_and_bad_files_stores_only_the_good_ones(
    alice: ApiClient, factory: Factory, settings: Settings
) -> None:
    project = alice.project()
    good = _jpeg(seed=1)
    cut = _jpeg(seed=2)
    response = alice.upload(
        project["id"],
        ("good.jpg", good),
        ("cut.jpg", cut[: len(cut) - 50]),
        ("bomb.png", png_bomb(14000, 14000)),
        ("text.jpg", b"GIF89a? no, just text pretending to be a JPEG"),
        ("empty.jpg", b""),
        ("again.jpg", good),
        ("small.png", png_bytes(3)),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["created"], body["duplicate"], body["rejected"]) == (2, 1, 4)
    items = {item["filename"]: item for item in body["items"]}
    assert [item["filename"] for item in body["items"]] == [
        "good.jpg",
        "cut.jpg",
        "bomb.png",
        "text.jpg",
        "empty.jpg",
        "again.jpg",
        "small.png",
    ]
    assert "truncated" in items["cut.jpg"]["reason"]
    assert items["cut.jpg"]["kind"] == "invalid"
    assert "pixel" in items["bomb.png"]["reason"]
    assert items["bomb.png"]["kind"] == "too_large"
    assert "not a recognised image" in items["text.jpg"]["reason"]
    assert items["text.jpg"]["kind"] == "unsupported"
    assert items["empty.jpg"]["reason"] == "file is empty"
    assert items["again.jpg"]["status"] == "duplicate"
    assert items["again.jpg"]["image_id"] == items["good.jpg"]["image_id"]
    assert factory.count(Image) == 2
    stored = {p.name for p in _files(settings.data_dir / "blobs")}
    assert stored == {items["good.jpg"]["sha256"], items["small.png"]["sha256"]}
    # Thumbnails come after the response, for the stored images only.
    storage = Storage(settings.data_dir)
    for name in ("good.jpg", "small.png"):
        thumb = storage.thumbnail_path(items[name]["sha256"])
        # Liveness, not speed: the background renderer gets there eventually.
        wait_until(partial(processing.usable_thumbnail, thumb), 60, f"{thumb} never appeared")
    decoding.drain_thumbnails()
    assert len(_files(settings.data_dir / "thumbs")) == 2
    assert _files(settings.data_dir / "tmp") == []


def test_duplicates_within_one_request_get_the_first_ones_id(
    alice: ApiClient, factory: Factory
) -> None:
    project = alice.project()
    a, b = png_bytes(1), png_bytes(2)
    response = alice.upload(
        project["id"], ("a.png", a), ("b.png", b), ("a2.png", a), ("b2.png", b), ("a3.png", a)
    )
    assert response.status_code == 201
    items = response.json()["items"]
    assert [i["status"] for i in items] == [
        "created",
        "created",
        "duplicate",
        "duplicate",
        "duplicate",
    ]
    assert items[2]["image_id"] == items[4]["image_id"] == items[0]["image_id"]
    assert items[3]["image_id"] == items[1]["image_id"]
    assert items[0]["image_id"] < items[1]["image_id"]  # ids follow the upload order
    assert factory.count(Image) == 2
    listed = alice.get(f"/api/projects/{project['id']}/images").json()["items"]
    assert [i["filename"] for i in listed] == ["a.png", "b.png"]


def test_all_files_rejected_is_a_4xx_with_every_reason(
    alice: ApiClient, factory: Factory, settings: Settings
) -> None:
    project = alice.project()
    data = noisy_jpeg()
    response = alice.upload(
        project["id"], ("cut.jpg", data[: len(data) // 2]), ("zero.jpg", b""), ("x.jpg", b"x")
    )
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == "none of the 3 files was accepted"
    assert [i["status"] for i in body["items"]] == ["rejected"] * 3
    assert factory.count(Image) == 0
    decoding.drain_thumbnails()
    assert _files(settings.data_dir / "blobs") == []
    assert _files(settings.data_dir / "thumbs") == []
    assert _files(settings.data_dir / "tmp") == []


def test_a_thumbnail_that_is_not_ready_is_rendered_on_demand(
    alice: ApiClient, settings: Settings
) -> None:
    project = alice.project()
    item = alice.upload(project["id"], ("p.jpg", _jpeg(seed=3))).json()["items"][0]
    thumb = Storage(settings.data_dir).thumbnail_path(item["sha256"])
    wait_until(partial(processing.usable_thumbnail, thumb), 60, f"{thumb} never appeared")
    # Not rendered yet, or left empty by a crash (thumbnails are not fsync'ed).
    thumb.write_bytes(b"")
    response = alice.get(f"/api/images/{item['image_id']}/thumbnail")
    assert response.status_code == 200
    with PILImage.open(io.BytesIO(response.content)) as img:
        assert img.format == "JPEG"
        assert img.size == (settings.thumbnail_size, settings.thumbnail_size * 3 // 4)
    thumb.unlink()
    assert alice.get(f"/api/images/{item['image_id']}/thumbnail").status_code == 200
    assert processing.usable_thumbnail(thumb)


def test_thumbnails_wait_while_an_upload_is_in_flight(
    alice: ApiClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendered during an upload, thumbnails slowed it by a fifth on the bench machine:
    they are held back until this process's uploads have gone quiet."""
    monkeypatch.setattr(decoding._backlog, "quiet", 0.2)
    project = alice.project()
    storage = Storage(settings.data_dir)
    with service.receiving():  # another upload, still arriving
        item = alice.upload(project["id"], ("p.jpg", _jpeg(seed=4))).json()["items"][0]
        thumb = storage.thumbnail_path(item["sha256"])
        # Ten quiet periods, and more than a render takes: still held back.
        time.sleep(2.0)
        assert not thumb.exists()
        # Meanwhile the gallery gets it from the endpoint, which renders it.
        assert alice.get(f"/api/images/{item['image_id']}/thumbnail").status_code == 200
        thumb.unlink()
        second = alice.upload(project["id"], ("q.jpg", _jpeg(seed=5))).json()["items"][0]
        time.sleep(0.5)
        assert not storage.thumbnail_path(second["sha256"]).exists()
    for sha in (item["sha256"], second["sha256"]):
        path = storage.thumbnail_path(sha)
        wait_until(partial(processing.usable_thumbnail, path), 60, f"{path} never appeared")
    decoding.drain_thumbnails()


def test_uploads_that_never_stop_hold_thumbnails_back_only_so_long(
    alice: ApiClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decoding._backlog, "quiet", 3600.0)
    monkeypatch.setattr(decoding._backlog, "max_hold", 0.5)
    project = alice.project()
    with service.receiving():  # and it never goes quiet
        item = alice.upload(project["id"], ("p.jpg", _jpeg(seed=7))).json()["items"][0]
        thumb = Storage(settings.data_dir).thumbnail_path(item["sha256"])
        wait_until(partial(processing.usable_thumbnail, thumb), 20, f"{thumb} never appeared")
    decoding.drain_thumbnails()


def test_drain_hands_over_thumbnails_held_back_by_an_upload(
    alice: ApiClient, settings: Settings
) -> None:
    project = alice.project()
    with service.receiving():
        item = alice.upload(project["id"], ("p.jpg", _jpeg(seed=6))).json()["items"][0]
        decoding.drain_thumbnails()
        thumb = Storage(settings.data_dir).thumbnail_path(item["sha256"])
        assert processing.usable_thumbnail(thumb)


def test_uploads_survive_decode_workers_that_die(alice: ApiClient, factory: Factory) -> None:
    project = alice.project()
    assert alice.upload(project["id"], ("warm.png", png_bytes(10))).status_code == 201
    pool = decoding.shared_pool()
    for process in list(pool._processes.values()):
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
    response = alice.upload(
        project["id"],
        *[(f"{seed}.png", png_bytes(seed)) for seed in range(11, 31)],
        ("cut.jpg", noisy_jpeg()[:500]),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["created"], body["rejected"]) == (20, 1)
    assert factory.count(Image) == 21
    assert decoding.shared_pool() is not pool


def test_commit_files_places_fsyncs_and_repairs(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.ensure_layout()
    moves = []
    for index, data in enumerate([b"one", b"two", b"three"]):
        tmp = storage.temp_path()
        tmp.write_bytes(data)
        moves.append((tmp, storage.blob_path(f"{index:02d}" * 32)))
    # A target left short by a crash before blobs were fsync'ed is replaced.
    moves[2][1].parent.mkdir(parents=True)
    moves[2][1].write_bytes(b"")
    assert storage.commit_files(moves) == [True, True, True]
    assert [final.read_bytes() for _, final in moves] == [b"one", b"two", b"three"]
    again = storage.temp_path()
    again.write_bytes(b"one")
    assert storage.commit_files([(again, moves[0][1])]) == [False]
    assert not again.exists()
    assert _files(storage.tmp_dir) == []


_POOL_OWNER = """
import sys
from server.images import decoding, processing
[verdict] = decoding.shared_pool().submit(
    processing.check_files, [processing.Check(sys.argv[1], 1000)]
).result()
decoding.render_later(decoding.Path("."), [], 1)
decoding._thumbnail_pool().submit(processing.render_thumbnails, ".", [], 1).result()
print(*[p.pid for p in decoding.shared_pool()._processes.values()],
      *[p.pid for p in decoding._thumbnail_pool()._processes.values()], flush=True)
sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _pool_owner(script: str, tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    """A process running ``script`` (given an image's path), which starts the decode
    and thumbnail pools and prints their children's pids; and those pids."""
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(1))
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(image)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    children = [int(pid) for pid in owner.stdout.readline().split()]
    assert len(children) >= 2, owner.stderr.read() if owner.stderr else ""
    return owner, children


def test_pool_children_exit_when_the_server_is_killed(tmp_path: Path) -> None:
    owner, children = _pool_owner(_POOL_OWNER, tmp_path)
    try:
        assert all(_alive(pid) for pid in children)
    finally:
        owner.kill()
        owner.wait()
    wait_until(
        lambda: not any(_alive(pid) for pid in children),
        30,
        "pool children outlived their parent",
        0.1,
    )


_INTERRUPTED_OWNER = """
import sys
from server.images import decoding, processing
check = [processing.Check(sys.argv[1], 10_000_000)]
pool = decoding.shared_pool()
pool.submit(processing.check_files, check).result()
decoding._thumbnail_pool().submit(processing.render_thumbnails, ".", [], 1).result()
print(*[p.pid for p in pool._processes.values()],
      *[p.pid for p in decoding._thumbnail_pool()._processes.values()], flush=True)
sys.stdin.readline()
[verdict] = decoding.shared_pool().submit(processing.check_files, check).result()
print(decoding.shared_pool() is pool, verdict.rejected, flush=True)
decoding.shutdown()
"""


def test_ctrl_c_in_the_terminal_leaves_the_pool_children_to_their_parent(
    tmp_path: Path,
) -> None:
    """Ctrl-C signals the terminal's whole process group: the server stops its pools
    itself, so a child neither dies with a KeyboardInterrupt traceback nor breaks the
    pool under uploads still in flight."""
    owner, children = _pool_owner(_INTERRUPTED_OWNER, tmp_path)
    for pid in children:
        os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    assert all(_alive(pid) for pid in children)
    out, err = owner.communicate("go\n", timeout=60)
    assert owner.returncode == 0, err
    assert out.split() == ["True", "None"]  # the same pool decoded the file again
    assert "KeyboardInterrupt" not in err


# A script without an ``if __name__ == "__main__"`` guard, as people write them: a spawn
# child would run it again (appending a second line) before decoding anything.
_UNGUARDED = """
import sys
from pathlib import Path
from server.images import decoding
from server.images.processing import Check
marker = Path(sys.argv[1])
with marker.open("a") as fh:
    fh.write("ran\\n")
checker = decoding.Checker()
checker.add(Check(sys.argv[2], 10_000_000))
print(checker.results()[0].rejected)
decoding.shutdown()
"""


def test_decoders_do_not_run_the_parents_main_module(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED)
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(1))
    marker = tmp_path / "ran.txt"
    done = subprocess.run(
        [sys.executable, str(script), str(marker), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"  # decoded and accepted
    assert marker.read_text() == "ran\n"

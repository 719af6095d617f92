from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from PIL import Image as PILImage

from server.images import decoding
from server.kit.storage import Storage
from server.models.image import Image
from server.settings import Settings
from tests.factories import (
    ApiClient,
    Factory,
    image_bytes,
    noisy_jpeg,
    png_bomb,
    png_bytes,
)


def _blobs(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]


def _leftovers(data_dir: Path) -> list[Path]:
    decoding.drain_thumbnails()  # its temp files are its own, and short-lived
    return [p for p in (data_dir / "tmp").iterdir()] if (data_dir / "tmp").exists() else []


def test_upload_many_files_reports_each(alice: ApiClient, settings: Settings) -> None:
    project = alice.project()
    response = alice.upload(
        project["id"],
        ("a.png", png_bytes(1)),
        ("b.jpg", image_bytes("JPEG", 2)),
        ("c.webp", image_bytes("WEBP", 3)),
        ("d.bmp", image_bytes("BMP", 4)),
        ("e.tiff", image_bytes("TIFF", 5)),
        ("again.png", png_bytes(1)),
        ("notes.txt", b"hello"),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["created"], body["duplicate"], body["rejected"]) == (5, 1, 1)
    statuses = {item["filename"]: item["status"] for item in body["items"]}
    assert statuses["again.png"] == "duplicate"
    assert statuses["notes.txt"] == "rejected"
    formats = sorted(
        i["format"] for i in alice.get(f"/api/projects/{project['id']}/images").json()["items"]
    )
    assert formats == ["bmp", "jpeg", "png", "tiff", "webp"]
    assert len(_blobs(settings.data_dir)) == 5
    assert _leftovers(settings.data_dir) == []


def test_reupload_is_a_duplicate_with_the_same_id(alice: ApiClient, factory: Factory) -> None:
    project = alice.project()
    first = alice.upload(project["id"], ("x.png", png_bytes(9))).json()["items"][0]
    second = alice.upload(project["id"], ("renamed.png", png_bytes(9)))
    assert second.status_code == 200
    item = second.json()["items"][0]
    assert item["status"] == "duplicate"
    assert item["image_id"] == first["image_id"]
    assert factory.count(Image) == 1


def test_a_blob_an_earlier_release_stored_two_folders_deep_is_still_used(
    alice: ApiClient, settings: Settings
) -> None:
    p1, p2 = alice.project("one"), alice.project("two")
    data = noisy_jpeg((64, 48))
    item = alice.upload(p1["id"], ("old.jpg", data)).json()["items"][0]
    sha = item["sha256"]
    storage = Storage(settings.data_dir)
    assert _blobs(settings.data_dir) == [settings.data_dir / "blobs" / sha[:2] / sha]
    # Where earlier releases stored it, with no thumbnail rendered yet.
    decoding.drain_thumbnails()
    legacy = storage.legacy_blob_path(sha)
    legacy.parent.mkdir(parents=True)
    storage.blob_path(sha).rename(legacy)
    storage.thumbnail_path(sha).unlink(missing_ok=True)

    assert alice.get(f"/api/images/{item['image_id']}/file").content == data
    assert alice.get(f"/api/images/{item['image_id']}/thumbnail").status_code == 200
    # The same bytes uploaded again are not stored a second time, and the thumbnail the
    # upload queues is rendered from where the blob is.
    storage.thumbnail_path(sha).unlink()
    again = alice.upload(p2["id"], ("again.jpg", data)).json()["items"][0]
    assert again["status"] == "created"
    decoding.drain_thumbnails()
    assert storage.thumbnail_path(sha).exists()
    assert _blobs(settings.data_dir) == [legacy]
    # The blob goes with the last image that used it.
    assert alice.delete(f"/api/images/{item['image_id']}").status_code == 204
    assert alice.delete(f"/api/images/{again['image_id']}").status_code == 204
    assert _blobs(settings.data_dir) == []


def test_same_bytes_in_two_projects_share_one_blob(alice: ApiClient, settings: Settings) -> None:
    p1, p2 = alice.project("one"), alice.project("two")
    a = alice.image(p1["id"], seed=5)
    b = alice.image(p2["id"], seed=5)
    assert a["image_id"] != b["image_id"]
    assert len(_blobs(settings.data_dir)) == 1
    # Deleting one image keeps the blob the other still needs.
    assert alice.delete(f"/api/images/{a['image_id']}").status_code == 204
    assert alice.get(f"/api/images/{b['image_id']}/file").status_code == 200
    assert alice.delete(f"/api/images/{b['image_id']}").status_code == 204
    assert _blobs(settings.data_dir) == []


@pytest.mark.parametrize(
    ("name", "data", "status", "reason"),
    [
        ("text.jpg", b"this is not an image at all", 415, "not a recognised image"),
        (
            "drawing.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            415,
            "not a recognised image",
        ),
        ("anim.gif", image_bytes("GIF"), 415, "unsupported image format GIF"),
        ("empty.png", b"", 422, "empty"),
    ],
)
def test_non_images_are_rejected_from_content(
    alice: ApiClient,
    factory: Factory,
    settings: Settings,
    name: str,
    data: bytes,
    status: int,
    reason: str,
) -> None:
    project = alice.project()
    response = alice.upload(project["id"], (name, data))
    assert response.status_code == status, response.text
    body = response.json()
    assert reason in body["detail"]
    assert body["items"][0]["status"] == "rejected"
    assert factory.count(Image) == 0
    assert _blobs(settings.data_dir) == []
    assert _leftovers(settings.data_dir) == []


def test_truncated_jpeg_is_rejected(alice: ApiClient, factory: Factory, settings: Settings) -> None:
    project = alice.project()
    data = noisy_jpeg()
    response = alice.upload(project["id"], ("cut.jpg", data[: len(data) // 2]))
    assert response.status_code == 422
    assert "truncated" in response.json()["detail"]
    assert factory.count(Image) == 0
    assert _blobs(settings.data_dir) == []


def test_png_decompression_bomb_is_rejected(
    alice: ApiClient, factory: Factory, settings: Settings
) -> None:
    project = alice.project()
    bomb = png_bomb(14000, 14000)
    assert len(bomb) < 1_000_000
    response = alice.upload(project["id"], ("bomb.png", bomb))
    assert response.status_code == 413, response.text
    assert "pixel" in response.json()["detail"]
    assert factory.count(Image) == 0
    assert _blobs(settings.data_dir) == []


def test_pixel_cap_follows_setting(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(max_image_pixels=1000)
    alice = factory_for(app).client(factory_for(app).user("alice"))
    project = alice.project()
    response = alice.upload(project["id"], ("big.png", png_bytes(size=(40, 40))))
    assert response.status_code == 413
    assert "1600 pixels" in response.json()["detail"]
    ok = alice.upload(project["id"], ("small.png", png_bytes(size=(30, 30))))
    assert ok.status_code == 201


def test_oversized_file_is_rejected_without_storing(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory], settings: Settings
) -> None:
    app = make_app(max_upload_bytes=50_000)
    f = factory_for(app)
    alice = f.client(f.user("alice"))
    project = alice.project()
    big = noisy_jpeg((400, 300))
    assert len(big) > 50_000
    response = alice.upload(project["id"], ("big.jpg", big), ("small.png", png_bytes(3)))
    assert response.status_code == 201
    items = {i["filename"]: i for i in response.json()["items"]}
    assert items["big.jpg"]["status"] == "rejected"
    assert "larger than the limit" in items["big.jpg"]["reason"]
    assert items["small.png"]["status"] == "created"
    only_big = alice.upload(project["id"], ("big.jpg", big))
    assert only_big.status_code == 413
    assert f.count(Image) == 1
    assert len(_blobs(settings.data_dir)) == 1
    assert _leftovers(settings.data_dir) == []


def test_request_over_the_total_cap_is_413(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory], settings: Settings
) -> None:
    app = make_app(max_request_bytes=20_000)
    f = factory_for(app)
    alice = f.client(f.user("alice"))
    project = alice.project()
    response = alice.upload(project["id"], ("big.jpg", noisy_jpeg((400, 300))))
    assert response.status_code == 413
    assert f.count(Image) == 0
    assert _leftovers(settings.data_dir) == []


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/json", b"{}", 415),
        (None, b"", 415),
        ("multipart/form-data", b"--x--", 400),
        (
            "multipart/form-data; boundary=xyz",
            b"--xyz\r\nContent-Disposition: form-data; "
            b'name="files"; filename="a.png"\r\n\r\n\x89PNG',
            400,
        ),
        ("multipart/form-data; boundary=xyz", b"--xyz--\r\n", 422),
    ],
)
def test_malformed_upload_requests(
    alice: ApiClient,
    factory: Factory,
    settings: Settings,
    content_type: str | None,
    body: bytes,
    status: int,
) -> None:
    project = alice.project()
    headers = {"content-type": content_type} if content_type else {}
    response = alice.post(f"/api/projects/{project['id']}/images", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert factory.count(Image) == 0
    assert _leftovers(settings.data_dir) == []


def test_only_owners_upload_and_delete(alice: ApiClient, bob: ApiClient, factory: Factory) -> None:
    project = alice.project()
    image = alice.image(project["id"])
    alice.add_member(project["id"], bob, "annotator")
    assert bob.upload(project["id"], ("x.png", png_bytes(7))).status_code == 403
    assert bob.delete(f"/api/images/{image['image_id']}").status_code == 403
    assert factory.count(Image) == 1


def test_another_projects_image_is_404(alice: ApiClient, bob: ApiClient) -> None:
    project = alice.project()
    image = alice.image(project["id"])
    bob.project("bob's")
    for url in ("", "/file", "/thumbnail", "/annotations"):
        response = bob.get(f"/api/images/{image['image_id']}{url}")
        assert response.status_code == 404, url
        assert response.json() == {"detail": "image not found"}
    assert bob.delete(f"/api/images/{image['image_id']}").status_code == 404
    put = bob.put(
        f"/api/images/{image['image_id']}/annotations", json={"base_revision": 0, "boxes": []}
    )
    assert put.status_code == 404


def test_file_is_served_with_fixed_type_and_nosniff(alice: ApiClient) -> None:
    project = alice.project()
    data = image_bytes("JPEG", 4)
    item = alice.upload(project["id"], ("photo.png", data)).json()["items"][0]
    response = alice.get(f"/api/images/{item['image_id']}/file")
    assert response.status_code == 200
    assert response.content == data
    # Type from the content (JPEG), not the .png name the client gave.
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


def test_thumbnail_is_generated_once_and_cached(alice: ApiClient, settings: Settings) -> None:
    project = alice.project()
    item = alice.upload(project["id"], ("big.jpg", noisy_jpeg((640, 480)))).json()["items"][0]
    thumb = settings.data_dir / "thumbs" / item["sha256"][:2] / f"{item['sha256']}.jpg"
    # Rendered after the response (or now, on demand, if the background is behind).
    first = alice.get(f"/api/images/{item['image_id']}/thumbnail")
    assert thumb.exists()
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/jpeg"
    with PILImage.open(io.BytesIO(first.content)) as img:
        assert max(img.size) == settings.thumbnail_size
    mtime = thumb.stat().st_mtime_ns
    alice.get(f"/api/images/{item['image_id']}/thumbnail")
    assert thumb.stat().st_mtime_ns == mtime
    # Lost thumbnails are regenerated from the original.
    thumb.unlink()
    again = alice.get(f"/api/images/{item['image_id']}/thumbnail")
    assert again.status_code == 200
    assert thumb.exists()


def test_list_filters_by_status_and_split_and_paginates(alice: ApiClient) -> None:
    project = alice.project()
    pid = project["id"]
    alice.upload(pid, *[(f"t{i}.png", png_bytes(i)) for i in range(5)], split="train")
    alice.upload(pid, *[(f"v{i}.png", png_bytes(100 + i)) for i in range(3)], split="val")
    val = alice.get(f"/api/projects/{pid}/images", params={"split": "val"}).json()["items"]
    assert [i["filename"] for i in val] == ["v0.png", "v1.png", "v2.png"]
    first = val[0]["id"]
    alice.put(f"/api/images/{first}/annotations", json={"base_revision": 0, "boxes": []})
    reviewed = alice.get(f"/api/projects/{pid}/images", params={"status": "reviewed"}).json()
    assert [i["id"] for i in reviewed["items"]] == [first]
    unlabeled = alice.get(
        f"/api/projects/{pid}/images", params={"status": "unlabeled", "split": "val"}
    ).json()["items"]
    assert len(unlabeled) == 2
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = alice.get(f"/api/projects/{pid}/images", params=params).json()
        seen += [i["filename"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 8
    assert seen[:5] == [f"t{i}.png" for i in range(5)]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "bogus"},
        {"split": "holdout"},
        {"limit": 0},
        {"limit": 501},
        {"limit": "x"},
    ],
)
def test_bad_list_parameters_are_422(alice: ApiClient, params: dict[str, object]) -> None:
    project = alice.project()
    response = alice.get(f"/api/projects/{project['id']}/images", params=params)
    assert response.status_code == 422


def test_bad_split_on_upload_is_422_and_stores_nothing(
    alice: ApiClient, factory: Factory, settings: Settings
) -> None:
    project = alice.project()
    response = alice.upload(project["id"], ("a.png", png_bytes(1)), split="everything")
    assert response.status_code == 422
    assert factory.count(Image) == 0
    assert _blobs(settings.data_dir) == []


def test_filenames_are_reduced_to_a_safe_base_name(alice: ApiClient) -> None:
    project = alice.project()
    item = alice.upload(project["id"], ("../../etc/passwd.png", png_bytes(2))).json()["items"][0]
    assert item["filename"] == "passwd.png"
    stored = alice.get(f"/api/images/{item['image_id']}").json()
    assert stored["filename"] == "passwd.png"

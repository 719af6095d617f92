"""Dataset import and export: real uploads, real zips, real in-process jobs."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from server.datasets.csvformat import COLUMNS, box_row, text_cell
from server.models.annotation import Annotation
from server.models.image import Image
from server.models.job import Job
from tests.factories import ApiClient, Factory, make_zip, png_bytes, post_zip
from tests.helpers import wait_job, wait_until

TOLERANCE = 1e-9

# --- helpers -----------------------------------------------------------------------------


def zip_with_info(info: zipfile.ZipInfo, data: bytes = b"x") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("images/ok.png", png_bytes(1))
        archive.writestr(info, data)
    return out.getvalue()


def run_import(client: ApiClient, project_id: int, data: bytes) -> dict[str, Any]:
    response = post_zip(client, project_id, data)
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "datasets.import"
    return wait_job(client, response.json()["id"])


def imported(client: ApiClient, project_id: int, data: bytes) -> dict[str, Any]:
    job = run_import(client, project_id, data)
    assert job["state"] == "succeeded", job
    report: dict[str, Any] = job["result"]
    return report


def export(client: ApiClient, project_id: int, **body: Any) -> tuple[dict[str, Any], bytes]:
    response = client.post(f"/api/projects/{project_id}/exports", json=body)
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["has_artifact"]
    download = client.get(f"/api/jobs/{job['id']}/artifact")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/zip"
    return job, download.content


def images_of(client: ApiClient, project_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(
        f"/api/projects/{project_id}/images", params={"limit": 500}
    ).json()["items"]
    return items


def boxes_by_sha(client: ApiClient, project_id: int) -> dict[str, list[tuple[Any, ...]]]:
    """sha256 -> [(class name, x, y, w, h)] of the boxes an export includes."""
    classes = client.get(f"/api/projects/{project_id}").json()["classes"]
    found = {}
    for image in images_of(client, project_id):
        boxes = client.get(f"/api/images/{image['id']}/annotations").json()["boxes"]
        found[image["sha256"]] = [
            (classes[b["class_id"]], b["x"], b["y"], b["w"], b["h"])
            for b in boxes
            if b["status"] != "rejected"
        ]
    return found


def assert_same_boxes(
    got: dict[str, list[tuple[Any, ...]]], want: dict[str, list[tuple[Any, ...]]]
) -> None:
    assert got.keys() == want.keys()
    for sha, boxes in want.items():
        assert len(got[sha]) == len(boxes), sha
        for a, b in zip(got[sha], boxes, strict=True):
            assert a[0] == b[0]
            assert all(abs(x - y) <= TOLERANCE for x, y in zip(a[1:], b[1:], strict=True)), (a, b)


def save_boxes(client: ApiClient, image_id: int, boxes: list[dict[str, Any]]) -> None:
    response = client.put(
        f"/api/images/{image_id}/annotations", json={"base_revision": 0, "boxes": boxes}
    )
    assert response.status_code == 200, response.text


def leftovers(data_dir: Path) -> list[Path]:
    found: list[Path] = []
    for folder in ("tmp", "imports"):
        if (data_dir / folder).exists():
            found.extend((data_dir / folder).iterdir())
    return found


def blobs(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def jobs_app(make_running_app: Callable[..., FastAPI]) -> FastAPI:
    return make_running_app(run_jobs=True)


@pytest.fixture
def jobs_factory(jobs_app: FastAPI, factory_for: Callable[[FastAPI], Factory]) -> Factory:
    return factory_for(jobs_app)


@pytest.fixture
def owner(jobs_factory: Factory) -> ApiClient:
    return jobs_factory.client(jobs_factory.user("olga"))


@pytest.fixture
def labelled_project(owner: ApiClient) -> dict[str, Any]:
    """Boxes of every status, awkward numbers, clashing file names, a negative image and
    an unlabelled one."""
    project = owner.project("source", classes=["cat", "dog", "bird"])
    pid = project["id"]
    uploads = [
        ("a.png", png_bytes(1, (64, 48))),
        ("a.png", png_bytes(2, (80, 60))),  # same name, other bytes
        ("a.PNG", png_bytes(3, (33, 17))),
        ("b.png", png_bytes(4)),
        ("negative.png", png_bytes(5)),
        ("unlabelled.png", png_bytes(6)),
    ]
    ids = []
    for name, data in uploads:
        response = owner.upload(pid, (name, data))
        assert response.status_code == 201, response.text
        ids.append(response.json()["items"][0]["image_id"])
    save_boxes(
        owner,
        ids[0],
        [
            {"class_id": 0, "x": 0.1234567891234, "y": 0.2, "w": 0.3333333333333, "h": 0.25},
            {"class_id": 2, "x": 0.0, "y": 0.0, "w": 1.0, "h": 1.0},
            {"class_id": 1, "x": 0.5, "y": 0.5, "w": 0.1, "h": 0.1, "status": "rejected"},
        ],
    )
    save_boxes(
        owner,
        ids[1],
        [
            {"class_id": 1, "x": 0.7, "y": 0.6, "w": 0.2999999, "h": 0.4},
            {"class_id": 0, "x": 0.01, "y": 0.02, "w": 0.03, "h": 0.04, "status": "predicted"},
        ],
    )
    save_boxes(owner, ids[2], [{"class_id": 2, "x": 1 / 3, "y": 2 / 7, "w": 0.5, "h": 0.5}])
    save_boxes(owner, ids[3], [{"class_id": 1, "x": 0.25, "y": 0.25, "w": 0.5, "h": 0.5}])
    save_boxes(owner, ids[4], [])
    return project


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_export_then_import_reproduces_every_box(
    owner: ApiClient, labelled_project: dict[str, Any], jobs_factory: Factory, fmt: str
) -> None:
    source = labelled_project["id"]
    job, artifact = export(owner, source, format=fmt)
    assert job["result"]["images"] == 6
    assert job["result"]["boxes"] == 6  # the rejected box is never exported
    names = zipfile.ZipFile(io.BytesIO(artifact)).namelist()
    image_names = [n for n in names if n.startswith("images/")]
    assert len(image_names) == len({n.lower() for n in image_names}) == 6

    target = owner.project("copy", classes=[])["id"]
    report = imported(owner, target, artifact)
    assert report["format"] == fmt
    assert report["counts"]["images_created"] == 6
    assert report["counts"]["boxes_imported"] == 6
    assert report["counts"]["labels_skipped"] == 0
    assert report["issues"] == []
    assert owner.get(f"/api/projects/{target}").json()["classes"] == ["cat", "dog", "bird"]
    assert_same_boxes(boxes_by_sha(owner, target), boxes_by_sha(owner, source))
    statuses = {i["filename"]: i["status"] for i in images_of(owner, target)}
    assert statuses["unlabelled.png"] == "unlabeled"
    assert statuses["negative.png"] == "reviewed"

    # The same zip again: nothing new, boxes untouched.
    before = (jobs_factory.count(Image), jobs_factory.count(Annotation))
    again = imported(owner, target, artifact)
    assert again["counts"]["images_created"] == 0
    assert again["counts"]["images_duplicate"] == 6
    assert again["counts"]["boxes_imported"] == 0
    assert again["counts"]["images_kept_existing"] == 5
    assert (jobs_factory.count(Image), jobs_factory.count(Annotation)) == before
    assert_same_boxes(boxes_by_sha(owner, target), boxes_by_sha(owner, source))


def test_yolo_export_layout_and_reviewed_only(
    owner: ApiClient, labelled_project: dict[str, Any]
) -> None:
    _, artifact = export(owner, labelled_project["id"], format="yolo", only_reviewed=True)
    archive = zipfile.ZipFile(io.BytesIO(artifact))
    data = yaml.safe_load(archive.read("data.yaml"))
    assert data["names"] == ["cat", "dog", "bird"]
    assert data["train"] == "images/train"
    labels = [n for n in archive.namelist() if n.startswith("labels/train/")]
    # Only reviewed images: the predicted one and the unlabelled one are left out.
    assert len([n for n in archive.namelist() if n.startswith("images/")]) == 4
    assert len(labels) == 4
    text = archive.read("labels/train/b.txt").decode()
    assert text == "1 0.5 0.5 0.5 0.5\n"
    for info in archive.infolist():
        expected = zipfile.ZIP_STORED if info.filename.startswith("images/") else 8
        assert info.compress_type == expected


def test_coco_export_has_pixel_boxes(owner: ApiClient, labelled_project: dict[str, Any]) -> None:
    _, artifact = export(owner, labelled_project["id"], format="coco")
    archive = zipfile.ZipFile(io.BytesIO(artifact))
    doc = json.loads(archive.read("annotations/instances_train.json"))
    assert [c["name"] for c in doc["categories"]] == ["cat", "dog", "bird"]
    by_name = {image["file_name"]: image for image in doc["images"]}
    assert "unlabelled.png" not in by_name  # exported as a file, not as a labelled image
    b = by_name["b.png"]
    (box,) = [a for a in doc["annotations"] if a["image_id"] == b["id"]]
    assert box["bbox"] == [16.0, 12.0, 32.0, 24.0]
    assert box["category_id"] == 2


def test_val_fraction_splits_the_same_way_every_time(owner: ApiClient) -> None:
    pid = owner.project("split")["id"]
    for seed in range(12):
        owner.image(pid, seed=seed)
    first, artifact = export(owner, pid, format="yolo", val_fraction=0.5, seed=7)
    second, again = export(owner, pid, format="yolo", val_fraction=0.5, seed=7)
    assert first["result"]["splits"] == second["result"]["splits"]
    assert set(first["result"]["splits"]) == {"train", "val"}
    names = sorted(n for n in zipfile.ZipFile(io.BytesIO(artifact)).namelist())
    assert names == sorted(zipfile.ZipFile(io.BytesIO(again)).namelist())
    assert yaml.safe_load(zipfile.ZipFile(io.BytesIO(artifact)).read("data.yaml"))["val"] == (
        "images/val"
    )


# --- import behaviour --------------------------------------------------------------------


def test_yolo_import_maps_classes_by_name_and_keeps_splits(owner: ApiClient) -> None:
    pid = owner.project("mapped", classes=["Dog", "cat"])["id"]
    data = make_zip(
        {
            "data.yaml": yaml.safe_dump({"names": {0: "cat", 1: "DOG", 2: "bird"}}),
            "images/train/x.png": png_bytes(1),
            "images/val/y.png": png_bytes(2),
            "images/test/z.png": png_bytes(3),
            "labels/train/x.txt": "0 0.5 0.5 0.2 0.4\n2 0.25 0.25 0.5 0.5\n",
            "labels/val/y.txt": "1 0.5 0.5 1 1\n",
        }
    )
    report = imported(owner, pid, data)
    assert report["classes_added"] == ["bird"]
    assert owner.get(f"/api/projects/{pid}").json()["classes"] == ["Dog", "cat", "bird"]
    images = {i["filename"]: i for i in images_of(owner, pid)}
    assert {name: i["split"] for name, i in images.items()} == {
        "x.png": "train",
        "y.png": "val",
        "z.png": "test",
    }
    assert images["z.png"]["status"] == "unlabeled"
    x = owner.get(f"/api/images/{images['x.png']['id']}/annotations").json()
    assert x["status"] == "reviewed"
    assert x["revision"] == 1
    assert [(b["class_id"], b["source"], b["status"]) for b in x["boxes"]] == [
        (1, "manual", "accepted"),
        (2, "manual", "accepted"),
    ]
    # Centre format in the file, top-left in the project.
    first = x["boxes"][0]
    assert (first["x"], first["y"], first["w"], first["h"]) == pytest.approx((0.4, 0.3, 0.2, 0.4))
    y = owner.get(f"/api/images/{images['y.png']['id']}/annotations").json()
    assert [b["class_id"] for b in y["boxes"]] == [0]


def test_malformed_yolo_lines_are_skipped_and_reported(owner: ApiClient) -> None:
    pid = owner.project("messy")["id"]
    lines = "\n".join(
        [
            "0 0.5 0.5 0.2 0.2",
            "0 0.5 0.5 0.2",
            "0 abc 0.5 0.2 0.2",
            "7 0.5 0.5 0.2 0.2",
            "0 0.95 0.5 0.2 0.2",
            "1 0.5 0.5 0 0.2",
            "1 nan 0.5 0.2 0.2",
            "",
            "1 0.25 0.25 0.1 0.1",
        ]
    )
    data = make_zip(
        {
            "data.yaml": "names: [cat, dog]\n",
            "images/a.png": png_bytes(1),
            "labels/a.txt": lines,
            "labels/orphan.txt": "0 0.5 0.5 0.1 0.1\n",
        }
    )
    report = imported(owner, pid, data)
    assert report["counts"]["boxes_imported"] == 2
    assert report["counts"]["labels_skipped"] == 6
    reasons = {(i["file"], i["line"]): i["reason"] for i in report["issues"]}
    assert "expected 5 fields" in reasons[("labels/a.txt", 2)]
    assert "is not a number" in reasons[("labels/a.txt", 3)]
    assert "class id 7 is not one of the dataset's classes" in reasons[("labels/a.txt", 4)]
    assert "outside the image" in reasons[("labels/a.txt", 5)]
    assert "width or height" in reasons[("labels/a.txt", 6)]
    assert "not a finite number" in reasons[("labels/a.txt", 7)]
    assert "without a matching image" in reasons[("labels/orphan.txt", None)]


def test_broken_images_are_rejected_per_file(owner: ApiClient, settings: Any) -> None:
    pid = owner.project("broken")["id"]
    data = make_zip(
        {
            "classes.txt": "cat\ndog\n",
            "images/good.png": png_bytes(1),
            "images/truncated.png": png_bytes(2, (200, 200))[:150],
            "images/fake.jpg": b"this is not an image",
            "labels/good.txt": "1 0.5 0.5 0.5 0.5\n",
            "labels/truncated.txt": "1 0.5 0.5 0.5 0.5\n",
        }
    )
    report = imported(owner, pid, data)
    assert report["counts"]["images_created"] == 1
    assert report["counts"]["images_rejected"] == 2
    reasons = {i["file"]: i["reason"] for i in report["issues"]}
    assert "image rejected" in reasons["images/truncated.png"]
    assert "not a recognised image" in reasons["images/fake.jpg"]
    assert [i["filename"] for i in images_of(owner, pid)] == ["good.png"]
    assert leftovers(settings.data_dir) == []


def test_coco_import_normalises_pixels_and_checks_sizes(owner: ApiClient) -> None:
    pid = owner.project("coco", classes=[])["id"]
    doc = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "pics/b.png", "width": 999, "height": 48},
            {"id": 3, "file_name": "missing.png", "width": 64, "height": 48},
            {"id": 4, "file_name": "c.png", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [16, 12, 32, 24]},
            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1]},
            {"id": 3, "image_id": 1, "category_id": 5, "bbox": [60, 0, 30, 10]},
            {"id": 4, "image_id": 2, "category_id": 5, "bbox": [0, 0, 10, 10]},
            {"id": 5, "image_id": 3, "category_id": 5, "bbox": [0, 0, 10, 10]},
            {"id": 6, "image_id": 1, "category_id": 7, "bbox": "wide"},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 5, "name": "cat"}],
    }
    data = make_zip(
        {
            "annotations/instances_val.json": json.dumps(doc),
            "images/a.png": png_bytes(1),
            "images/pics/b.png": png_bytes(2),
            "images/c.png": png_bytes(3),
            "images/extra.png": png_bytes(4),
        }
    )
    report = imported(owner, pid, data)
    assert owner.get(f"/api/projects/{pid}").json()["classes"] == ["cat", "dog"]
    assert report["counts"]["images_created"] == 4
    assert report["counts"]["boxes_imported"] == 1
    reasons = " | ".join(i["reason"] for i in report["issues"])
    assert "category_id 9" in reasons
    assert "outside the image" in reasons
    assert "999x48 but the image is 64x48" in reasons
    assert "'missing.png' is not in the zip" in reasons
    assert "bbox must be a list" in reasons
    images = {i["filename"]: i for i in images_of(owner, pid)}
    assert {n: i["split"] for n, i in images.items()} == {
        "a.png": "val",
        "b.png": "val",
        "c.png": "val",
        "extra.png": None,
    }
    # Listed without annotations: a reviewed negative. Not listed: unlabelled.
    assert images["c.png"]["status"] == "reviewed"
    assert images["extra.png"]["status"] == "unlabeled"
    assert images["b.png"]["status"] == "unlabeled"
    a = owner.get(f"/api/images/{images['a.png']['id']}/annotations").json()["boxes"]
    assert [(b["class_id"], b["x"], b["y"], b["w"], b["h"]) for b in a] == [
        (0, 0.25, 0.25, 0.5, 0.5)
    ]


def test_broken_coco_json_fails_before_any_image_is_written(
    owner: ApiClient, jobs_factory: Factory, settings: Any
) -> None:
    pid = owner.project("badjson")["id"]
    data = make_zip(
        {
            "annotations.json": '{"images": [{"id": 1, ',
            "images/a.png": png_bytes(1),
        }
    )
    job = run_import(owner, pid, data)
    assert job["state"] == "failed"
    assert "annotations.json is not valid JSON" in job["error"]
    assert jobs_factory.count(Image) == 0
    assert blobs(settings.data_dir) == []
    assert leftovers(settings.data_dir) == []


def test_a_zip_without_images_fails_the_job_clearly(owner: ApiClient, settings: Any) -> None:
    pid = owner.project("empty")["id"]
    job = run_import(owner, pid, make_zip({"README.txt": "hello", "data.yaml": "names: [a]"}))
    assert job["state"] == "failed"
    assert "contains no images" in job["error"]
    assert leftovers(settings.data_dir) == []


def test_existing_annotations_are_kept(owner: ApiClient) -> None:
    pid = owner.project("kept")["id"]
    image = owner.image(pid, seed=1)
    save_boxes(owner, image["image_id"], [{"class_id": 1, "x": 0, "y": 0, "w": 0.5, "h": 0.5}])
    data = make_zip(
        {
            "data.yaml": "names: [cat, dog]",
            "images/a.png": png_bytes(1),
            "labels/a.txt": "0 .5 .5 .2 .2",
        }
    )
    report = imported(owner, pid, data)
    assert report["counts"]["images_duplicate"] == 1
    assert report["counts"]["images_kept_existing"] == 1
    assert report["issues"][0]["reason"].startswith("already in the project with annotations")
    boxes = owner.get(f"/api/images/{image['image_id']}/annotations").json()["boxes"]
    assert [b["class_id"] for b in boxes] == [1]


# --- bad uploads: 4xx and nothing left behind ----------------------------------------------


def _encrypted_zip() -> bytes:
    data = bytearray(make_zip({"images/a.png": png_bytes(1)}, zipfile.ZIP_STORED))
    data[6] |= 0x1  # local header flags
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1  # central directory flags
    return bytes(data)


def _overlapping_zip() -> bytes:
    data = bytearray(make_zip({"a.bin": b"a" * 100, "b.bin": b"b" * 100}, zipfile.ZIP_STORED))
    second = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)
    data[second + 42 : second + 46] = (0).to_bytes(4, "little")  # b's data = a's
    return bytes(data)


def _symlink_info() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("images/link.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("data", "settings_overrides", "status", "detail"),
    [
        (b"PK\x03\x04 definitely not a zip", {}, 422, "not a readable zip"),
        (zip_with_info(zipfile.ZipInfo("../evil.txt")), {}, 422, "'../evil.txt' has a '..'"),
        (zip_with_info(zipfile.ZipInfo("/etc/cron.d/x")), {}, 422, "is an absolute path"),
        (zip_with_info(zipfile.ZipInfo("C:\\evil.txt")), {}, 422, "is a drive path"),
        (zip_with_info(zipfile.ZipInfo("a\\..\\..\\x")), {}, 422, "has a '..' component"),
        (zip_with_info(_symlink_info(), b"/etc/passwd"), {}, 422, "is a symbolic link"),
        (_encrypted_zip(), {}, 422, "is encrypted"),
        (_overlapping_zip(), {}, 422, "overlap"),
        (
            make_zip({"zeros.bin": bytes(4 * 1024 * 1024)}),
            {"max_import_ratio": 100},
            413,
            "zip bomb",
        ),
        (
            # Each entry under the per-entry threshold, the whole far over the ratio.
            make_zip({f"labels/{i}.txt": bytes(256 * 1024) for i in range(16)}),
            {},
            413,
            "the zip's 16 entries expand",
        ),
        (
            make_zip({f"images/{i}.png": png_bytes(i) for i in range(5)}),
            {"max_import_entries": 3},
            413,
            "5 entries, over the limit of 3",
        ),
        (
            make_zip({"images/a.png": png_bytes(1), "images/b.png": png_bytes(2)}),
            {"max_import_unpacked_bytes": 200},
            413,
            "over the limit of 200",
        ),
        (
            make_zip({"images/a.png": png_bytes(1, (300, 300))}, zipfile.ZIP_STORED),
            {"max_import_bytes": 500},
            413,
            "larger than the limit of 500 bytes",
        ),
    ],
    ids=[
        "not-a-zip",
        "dotdot",
        "absolute",
        "drive",
        "backslash-dotdot",
        "symlink",
        "encrypted",
        "overlapping",
        "ratio-bomb",
        "many-small-entries-bomb",
        "too-many-entries",
        "unpacked-too-big",
        "upload-too-big",
    ],
)
def test_bad_zip_is_refused_and_leaves_nothing(
    make_app: Callable[..., FastAPI],
    factory_for: Callable[[FastAPI], Factory],
    data: bytes,
    settings_overrides: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    app = make_app(**settings_overrides)
    factory = factory_for(app)
    alice = factory.client(factory.user("alice"))
    pid = alice.project()["id"]
    response = post_zip(alice, pid, data)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert factory.count(Job) == 0
    assert factory.count(Image) == 0
    assert leftovers(app.state.settings.data_dir) == []


def test_import_and_export_need_the_right_role(
    alice: ApiClient, bob: ApiClient, factory: Factory, settings: Any
) -> None:
    pid = alice.project()["id"]
    alice.add_member(pid, bob, "viewer")
    data = make_zip({"images/a.png": png_bytes(1)})
    refused = post_zip(bob, pid, data)
    assert refused.status_code == 403
    assert "owner" in refused.json()["detail"]
    exported = bob.post(f"/api/projects/{pid}/exports", json={"format": "yolo"})
    assert exported.status_code == 403
    foreign = bob.project("bob's")["id"]
    assert post_zip(alice, foreign, data).status_code == 404
    assert alice.post(f"/api/projects/{foreign}/exports", json={"format": "yolo"}).status_code == (
        404
    )
    assert factory.count(Job) == 0
    assert leftovers(settings.data_dir) == []


def test_import_without_a_file_is_422(alice: ApiClient, factory: Factory) -> None:
    pid = alice.project()["id"]
    response = alice.post(f"/api/projects/{pid}/imports", files={"note": (None, "no file")})
    assert response.status_code == 422
    assert "one zip file" in response.json()["detail"]
    assert factory.count(Job) == 0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"format": "xml"}, "format"),
        ({"format": "CSV"}, "format"),
        ({"format": "csv", "only_reviewed": "yes"}, "only_reviewed"),
        ({"format": "yolo", "colour": "red"}, "colour"),
        ({"format": "yolo", "val_fraction": 2}, "val_fraction"),
        ({"format": "coco", "val_fraction": -0.1}, "val_fraction"),
        ({"format": "coco", "seed": -1}, "seed"),
        ({}, "format"),
    ],
)
def test_bad_export_requests_are_422(
    alice: ApiClient, factory: Factory, body: dict[str, Any], detail: str
) -> None:
    pid = alice.project()["id"]
    response = alice.post(f"/api/projects/{pid}/exports", json=body)
    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]
    assert factory.count(Job) == 0


def test_artifact_of_an_unfinished_or_foreign_job_is_404(
    alice: ApiClient, bob: ApiClient, factory: Factory
) -> None:
    pid = alice.project()["id"]
    job = alice.post(f"/api/projects/{pid}/exports", json={"format": "coco"}).json()
    assert job["state"] == "queued"
    assert alice.get(f"/api/jobs/{job['id']}/artifact").status_code == 404
    assert bob.get(f"/api/jobs/{job['id']}/artifact").status_code == 404


def test_export_skips_images_whose_file_is_missing(owner: ApiClient, settings: Any) -> None:
    pid = owner.project("holes")["id"]
    kept = owner.image(pid, seed=1)
    lost = owner.image(pid, seed=2)
    (settings.data_dir / "blobs" / lost["sha256"][:2] / lost["sha256"]).unlink()
    job, artifact = export(owner, pid, format="yolo")
    assert job["result"]["images"] == 1
    assert job["result"]["missing_files"] == [lost["image_id"]]
    names = zipfile.ZipFile(io.BytesIO(artifact)).namelist()
    assert names == ["images/train/img1.png", "data.yaml"]
    assert kept["sha256"] != lost["sha256"]


def test_stale_import_zips_are_swept_by_the_next_import(owner: ApiClient, settings: Any) -> None:
    folder = settings.data_dir / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / f"{'0' * 32}.zip"
    fresh = folder / f"{'1' * 32}.zip"
    for path in (stale, fresh):
        path.write_bytes(b"left behind by a job canceled before it started")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    pid = owner.project("sweep")["id"]
    imported(owner, pid, make_zip({"images/a.png": png_bytes(1)}))
    assert sorted(folder.iterdir()) == [fresh]  # young files may belong to a request


def test_canceled_import_stops_between_batches_and_deletes_its_zip(
    owner: ApiClient, jobs_factory: Factory, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.datasets.importer.BATCH_IMAGES", 1)
    pid = owner.project("cancel")["id"]
    # One image per transaction: far more than can finish before the cancel arrives.
    data = make_zip({f"images/{i}.png": png_bytes(i, (8, 8)) for i in range(1000)})
    job = post_zip(owner, pid, data).json()
    wait_until(
        lambda: owner.get(f"/api/jobs/{job['id']}").json()["state"] != "queued",
        240,
        "the import never started",
        0.01,
    )
    canceled = owner.post(f"/api/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    finished = wait_job(owner, job["id"])
    assert finished["state"] == "canceled", finished
    assert jobs_factory.count(Image) < 1000  # it stopped between two batches
    assert leftovers(settings.data_dir) == []


def test_import_size_follows_the_import_limit_not_the_upload_limit(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(max_request_bytes=1000, max_import_bytes=1_000_000)
    factory = factory_for(app)
    alice = factory.client(factory.user("alice"))
    pid = alice.project()["id"]
    data = make_zip({"images/a.png": png_bytes(1, (300, 300))}, zipfile.ZIP_STORED)
    assert len(data) > 1000
    assert post_zip(alice, pid, data).status_code == 202
    assert alice.upload(pid, ("a.png", data)).status_code == 413


def test_a_job_that_cannot_be_recorded_leaves_no_zip(app: FastAPI, alice: ApiClient) -> None:
    pid = alice.project()["id"]
    del app.state.kinds["datasets.import"]  # submit() refuses; the request rolls back
    response = post_zip(alice, pid, make_zip({"images/a.png": png_bytes(1)}))
    assert response.status_code == 422
    assert "unknown job kind" in response.json()["detail"]
    assert leftovers(app.state.settings.data_dir) == []


def test_an_entry_that_lies_about_its_size_is_rejected(owner: ApiClient, settings: Any) -> None:
    image = png_bytes(2, (100, 100))
    data = bytearray(
        make_zip({"images/a.png": png_bytes(1), "images/liar.png": image}, zipfile.ZIP_STORED)
    )
    declared = (len(image) // 2).to_bytes(4, "little")
    local = data.index(b"PK\x03\x04", 4)  # the second member's local header
    data[local + 22 : local + 26] = declared
    central = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)
    data[central + 24 : central + 28] = declared
    pid = owner.project("liar")["id"]
    report = imported(owner, pid, bytes(data))
    assert report["counts"]["images_created"] == 1
    assert report["counts"]["images_rejected"] == 1
    reasons = {i["file"]: i["reason"] for i in report["issues"]}
    assert "cannot be read from the zip" in reasons["images/liar.png"]
    assert leftovers(settings.data_dir) == []


# --- the csv format ----------------------------------------------------------------------


def export_csv(client: ApiClient, project_id: int, **body: Any) -> tuple[dict[str, Any], str]:
    response = client.post(f"/api/projects/{project_id}/exports", json={"format": "csv", **body})
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    assert job["state"] == "succeeded", job
    download = client.get(f"/api/jobs/{job['id']}/artifact")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    assert download.headers["x-content-type-options"] == "nosniff"
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment")
    assert f"{job['id']}.csv" in disposition
    return job, download.content.decode("utf-8")


def test_csv_export_has_a_row_per_box_in_both_coordinate_systems(
    owner: ApiClient, labelled_project: dict[str, Any]
) -> None:
    pid = labelled_project["id"]
    tricky = "=SUM(1,2) it's.png"  # (clients percent-encode quotes and newlines)
    uploaded = owner.upload(pid, (tricky, png_bytes(7, (200, 100))))
    assert uploaded.status_code == 201, uploaded.text
    stored_name = owner.get(f"/api/images/{uploaded.json()['items'][0]['image_id']}").json()[
        "filename"
    ]
    assert stored_name == tricky
    save_boxes(
        owner,
        uploaded.json()["items"][0]["image_id"],
        [
            {
                "class_id": 2,
                "x": 0.25,
                "y": 0.5,
                "w": 0.5,
                "h": 0.25,
                "status": "predicted",
                "confidence": 0.87654,
            }
        ],
    )
    job, text = export_csv(owner, pid)
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(COLUMNS)
    body = rows[1:]
    # 6 accepted or predicted boxes of the fixture and the new one; rejected never.
    assert len(body) == 7
    assert job["result"]["boxes"] == 7
    assert job["result"]["format"] == "csv"
    assert job["result"]["images"] == 7
    assert job["result"]["zip_bytes"] == len(text.encode())
    by_file: dict[str, list[list[str]]] = {}
    for row in body:
        by_file.setdefault(row[0], []).append(row)
    # A name a spreadsheet would run as a formula comes back as text, whole: quoted
    # because of its comma.
    assert f'\r\n"\'{tricky}",bird,' in text
    normalised = ["0.250000", "0.500000", "0.500000", "0.250000"]
    pixels = ["50.0", "50.0", "100.0", "25.0"]
    assert by_file[f"'{stored_name}"] == [
        [f"'{stored_name}", "bird", "0.8765", *normalised, *pixels]
    ]
    (b,) = by_file["b.png"]
    assert b[1:3] == ["dog", ""]  # drawn by a person: no confidence
    assert [float(v) for v in b[3:]] == [0.25, 0.25, 0.5, 0.5, 16.0, 12.0, 32.0, 24.0]
    assert "negative.png" not in by_file
    assert "unlabelled.png" not in by_file


def test_csv_export_of_reviewed_images_leaves_predicted_boxes_out(
    owner: ApiClient, labelled_project: dict[str, Any]
) -> None:
    _, text = export_csv(owner, labelled_project["id"], only_reviewed=True)
    rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
    # The second a.png still holds a predicted box, so it is not reviewed: left out.
    assert len(rows) == 4
    assert all(row[2] == "" for row in rows)
    assert sorted(row[0] for row in rows) == ["a.PNG", "a.png", "a.png", "b.png"]


def test_csv_export_of_an_empty_project_is_the_header_alone(owner: ApiClient) -> None:
    job, text = export_csv(owner, owner.project("empty")["id"])
    assert text == ",".join(COLUMNS) + "\r\n"
    assert job["result"]["images"] == 0
    assert job["result"]["boxes"] == 0


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("plain", "plain"),
        ("a=b", "a=b"),
    ],
)
def test_csv_text_cells_that_look_like_formulas_get_a_quote(value: str, cell: str) -> None:
    assert text_cell(value) == cell


def test_csv_cells_with_quotes_commas_and_newlines_read_back_whole() -> None:
    out = io.StringIO(newline="")
    name = 'say "cheese",\nplease.png'
    csv.writer(out).writerow(box_row(name, "dog", 0.5, (0.0, 0.0, 1.0, 1.0), 10, 20))
    (row,) = csv.reader(io.StringIO(out.getvalue(), newline=""))
    assert row[0] == name
    assert row[2:] == ["0.5000", *["0.000000"] * 2, *["1.000000"] * 2, "0.0", "0.0", "10.0", "20.0"]

"""The review queue's order (lowest prediction confidence first) and an image's
neighbours for the editor's previous / next / next-unreviewed keys."""

from __future__ import annotations

import base64

import pytest
import sqlalchemy as sa

from server.images.service import confidence_pages
from server.models.image import Image, ImageStatus
from tests.factories import ApiClient, png_bytes


def _predict(client: ApiClient, image_id: int, *confidences: float | None) -> None:
    boxes = [
        {
            "class_id": 0,
            "x": 0.1 * i,
            "y": 0.1,
            "w": 0.05,
            "h": 0.05,
            "confidence": conf,
            "status": "predicted",
        }
        for i, conf in enumerate(confidences)
    ]
    revision = client.get(f"/api/images/{image_id}/annotations").json()["revision"]
    response = client.put(
        f"/api/images/{image_id}/annotations", json={"base_revision": revision, "boxes": boxes}
    )
    assert response.status_code == 200, response.text


def _queue(client: ApiClient, project_id: int, limit: int) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"status": "predicted", "order": "confidence", "limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = client.get(f"/api/projects/{project_id}/images", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        names += [item["filename"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return names


def test_predicted_images_page_lowest_confidence_first_with_ties_by_id(
    alice: ApiClient,
) -> None:
    project = alice.project()
    pid = project["id"]
    items = alice.upload(pid, *[(f"i{n}.png", png_bytes(n)) for n in range(7)]).json()["items"]
    ids = [item["image_id"] for item in items]
    _predict(alice, ids[0], 0.9, 0.8)  # lowest 0.8
    _predict(alice, ids[1], 0.95, 0.3)  # lowest 0.3
    _predict(alice, ids[2], 0.5)
    _predict(alice, ids[3], 0.3)  # ties with i1: by id
    _predict(alice, ids[4])  # an empty save is a reviewed negative: not in the queue
    _predict(alice, ids[5], None, 0.99)  # no confidence counts as 0
    # A reviewed image is not in the queue; accepted boxes do not count.
    alice.put(
        f"/api/images/{ids[6]}/annotations",
        json={"base_revision": 0, "boxes": [{"class_id": 0, "x": 0, "y": 0, "w": 0.1, "h": 0.1}]},
    )
    expected = ["i5.png", "i1.png", "i3.png", "i2.png", "i0.png"]
    for limit in (1, 2, 4, 100):
        assert _queue(alice, pid, limit) == expected, limit
    # Accepting an image takes it out of the queue, and a cursor still continues.
    first = alice.get(
        f"/api/projects/{pid}/images",
        params={"status": "predicted", "order": "confidence", "limit": 2},
    ).json()
    assert (
        alice.post(f"/api/images/{ids[1]}/review", json={"action": "accept_all"}).status_code == 200
    )
    rest = alice.get(
        f"/api/projects/{pid}/images",
        params={"status": "predicted", "order": "confidence", "cursor": first["next_cursor"]},
    ).json()
    assert [i["filename"] for i in rest["items"]] == ["i3.png", "i2.png", "i0.png"]
    # The gallery's default order is unchanged.
    default = alice.get(f"/api/projects/{pid}/images").json()["items"]
    assert [i["id"] for i in default] == ids


def test_bad_order_or_a_cursor_of_another_order_is_refused(alice: ApiClient) -> None:
    project = alice.project()
    pid = project["id"]
    alice.upload(pid, *[(f"i{n}.png", png_bytes(n)) for n in range(3)])
    url = f"/api/projects/{pid}/images"
    assert alice.get(url, params={"order": "random"}).status_code == 422
    by_id = alice.get(url, params={"limit": 1}).json()["next_cursor"]
    response = alice.get(url, params={"order": "confidence", "cursor": by_id})
    assert response.status_code == 400
    assert response.json() == {"detail": "invalid cursor"}
    for raw in (b"conf:nan:1", b"conf:0.5:0", b"conf:x:1", b"conf:0.5"):
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        got = alice.get(url, params={"order": "confidence", "cursor": cursor})
        assert got.status_code == 400, raw


def test_neighbors_give_previous_next_and_the_next_unreviewed_wrapping(
    alice: ApiClient, bob: ApiClient
) -> None:
    project = alice.project()
    pid = project["id"]
    items = alice.upload(pid, *[(f"i{n}.png", png_bytes(n)) for n in range(4)]).json()["items"]
    a, b, c, d = (item["image_id"] for item in items)
    for image_id in (b, d):
        alice.put(f"/api/images/{image_id}/annotations", json={"base_revision": 0, "boxes": []})

    def around(image_id: int) -> dict[str, int | None]:
        response = alice.get(f"/api/images/{image_id}/neighbors")
        assert response.status_code == 200, response.text
        body: dict[str, int | None] = response.json()
        return body

    assert around(a) == {"previous": None, "next": b, "next_unreviewed": c}
    assert around(c) == {"previous": b, "next": d, "next_unreviewed": a}  # wraps
    assert around(d) == {"previous": c, "next": None, "next_unreviewed": a}
    alice.put(f"/api/images/{a}/annotations", json={"base_revision": 0, "boxes": []})
    assert around(c)["next_unreviewed"] is None  # only itself is left
    alice.add_member(pid, bob, "viewer")
    assert bob.get(f"/api/images/{a}/neighbors").status_code == 200
    other = bob.project("bob's")
    mine = bob.image(other["id"])
    assert alice.get(f"/api/images/{mine['image_id']}/neighbors").status_code == 404


def test_the_stored_order_follows_edits_and_reviews(alice: ApiClient) -> None:
    """``images.min_confidence`` is kept by every write of boxes, so the queue's order
    moves with edits, reviews and accepted boxes; images without a predicted box come
    last (ties by id, across cursor pages)."""
    project = alice.project()
    pid = project["id"]
    items = alice.upload(pid, *[(f"e{n}.png", png_bytes(n)) for n in range(5)]).json()["items"]
    ids = [item["image_id"] for item in items]
    _predict(alice, ids[0], 0.9)
    _predict(alice, ids[1], 0.5)
    _predict(alice, ids[2], 0.7, 0.6)
    for limit in (1, 2, 100):
        assert _queue(alice, pid, limit) == ["e1.png", "e2.png", "e0.png"]
    # An edit lowers e0 below everything; another raises e1.
    _predict(alice, ids[0], 0.95, 0.1)
    _predict(alice, ids[1], 0.99)
    for limit in (1, 2, 100):
        assert _queue(alice, pid, limit) == ["e0.png", "e2.png", "e1.png"]
    # Accepting one of e2's boxes in the editor leaves only the other to count.
    boxes = alice.get(f"/api/images/{ids[2]}/annotations").json()
    body = [
        {k: b[k] for k in ("class_id", "x", "y", "w", "h", "confidence", "status", "source")}
        for b in boxes["boxes"]
    ]
    low = min(range(len(body)), key=lambda i: body[i]["confidence"])
    body[low]["status"] = "accepted"
    saved = alice.put(
        f"/api/images/{ids[2]}/annotations",
        json={"base_revision": boxes["revision"], "boxes": body},
    )
    assert saved.status_code == 200, saved.text
    assert _queue(alice, pid, 1) == ["e0.png", "e2.png", "e1.png"]
    _predict(alice, ids[1], 0.65)
    assert _queue(alice, pid, 1) == ["e0.png", "e1.png", "e2.png"]
    # Reviewing the whole image takes it out; without the status filter, the images
    # with no predicted box follow the others by id.
    assert (
        alice.post(f"/api/images/{ids[0]}/review", json={"action": "reject_all"}).status_code == 200
    )
    assert _queue(alice, pid, 2) == ["e1.png", "e2.png"]
    names: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"order": "confidence", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = alice.get(f"/api/projects/{pid}/images", params=params).json()
        names += [item["filename"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert names == ["e1.png", "e2.png", "e0.png", "e3.png", "e4.png"]


def test_the_queue_reads_its_index_on_postgresql(alice: ApiClient, engine: sa.Engine) -> None:
    """Prints (does not assert) PostgreSQL's plan of a queue page: the index on
    (project_id, status, min_confidence, id) serves the order and the cursor."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    project = alice.project()
    pid = project["id"]
    items = alice.upload(pid, *[(f"p{n}.png", png_bytes(n)) for n in range(3)]).json()["items"]
    for n, item in enumerate(items):
        _predict(alice, item["image_id"], 0.2 * (n + 1))
    stmt = sa.select(Image).where(Image.project_id == pid, Image.status == ImageStatus.predicted)
    scored, unscored = confidence_pages(stmt, 50, (0.2, items[0]["image_id"]))
    assert scored is not None
    lines = ["review queue page plans:"]
    with engine.connect() as conn:
        conn.execute(sa.text("SET enable_seqscan = off"))  # a tiny table would be scanned
        for query in (scored, unscored):
            compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
            lines += conn.execute(sa.text(f"EXPLAIN {compiled}")).scalars().all()
    print("\n".join(lines))

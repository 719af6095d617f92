""" "This model belongs to the project and is ready": one rule (``models.service.
ready_model``) for the train and auto-label endpoints, the predict endpoint and the jobs
that check it again when they start."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from server.jobs.context import JobFailed
from server.models.job import Job
from server.models.registered_model import ModelState
from server.registry.service import ready_model_for_job
from tests.factories import ApiClient, Factory


@pytest.fixture
def projects(alice: ApiClient) -> tuple[int, int]:
    return alice.project("mine", classes=["cat"])["id"], alice.project("other")["id"]


def _unusable(factory: Factory, projects: tuple[int, int]) -> dict[int, str]:
    """Model ids that may not be used in the first project, and why."""
    mine, other = projects
    return {
        factory.model(other): "is not a model of this project",
        999999: "is not a model of this project",
        factory.model(mine, ModelState.pending): "is not ready (pending)",
        factory.model(mine, ModelState.failed): "is not ready (failed)",
    }


def test_train_and_autolabel_refuse_a_foreign_missing_or_unready_model(
    alice: ApiClient, factory: Factory, projects: tuple[int, int]
) -> None:
    mine, _ = projects
    for model_id, why in _unusable(factory, projects).items():
        for url, body in (
            (f"/api/projects/{mine}/jobs/train", {"base": model_id}),
            (f"/api/projects/{mine}/jobs/train", {"base": str(model_id)}),
            (f"/api/projects/{mine}/jobs/autolabel", {"model_id": model_id}),
        ):
            response = alice.post(url, json=body)
            assert response.status_code == 422, (url, body, response.text)
            assert response.json()["detail"] == f"model {model_id} {why}"
    assert factory.count(Job) == 0


def test_a_base_model_sent_as_number_or_text_reaches_the_job_as_one_shape(
    alice: ApiClient, factory: Factory, projects: tuple[int, int]
) -> None:
    mine, _ = projects
    model_id = factory.model(mine)
    for base in (model_id, str(model_id)):
        job = alice.post(f"/api/projects/{mine}/jobs/train", json={"base": base, "epochs": 1})
        assert job.status_code == 202, job.text
        assert job.json()["params"]["base"] == f"model:{model_id}"
    job = alice.post(f"/api/projects/{mine}/jobs/train", json={"base": "yolo11s.yaml"})
    assert job.json()["params"]["base"] == "yolo11s.yaml"
    assert (
        alice.post(
            f"/api/projects/{mine}/jobs/train", json={"base": f"model:{model_id}"}
        ).status_code
        == 422
    )


def test_predict_on_an_unready_model_is_a_conflict(
    alice: ApiClient, factory: Factory, projects: tuple[int, int]
) -> None:
    mine, _ = projects
    model_id = factory.model(mine, ModelState.pending)
    response = alice.post(f"/api/models/{model_id}/predict", files={"files": ("a.png", b"x")})
    assert response.status_code == 409, response.text
    assert response.json()["detail"] == f"model {model_id} is not ready (pending)"


def test_a_job_fails_with_the_text_an_endpoint_gives(
    db: Session, factory: Factory, projects: tuple[int, int]
) -> None:
    mine, _ = projects
    # Arranged first: on SQLite the session below holds the write lock once it reads.
    usable, unusable = factory.model(mine), _unusable(factory, projects)
    assert ready_model_for_job(db, mine, usable).project_id == mine
    for model_id, why in unusable.items():
        with pytest.raises(JobFailed) as failed:
            ready_model_for_job(db, mine, model_id)
        assert str(failed.value) == f"model {model_id} {why}"
    with pytest.raises(JobFailed, match="is not a model of this project"):
        ready_model_for_job(db, None, usable)

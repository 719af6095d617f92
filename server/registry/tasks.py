"""Jobs of the registry: inspecting uploaded weights, and interactive predictions."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from server.jobs.context import JobContext, JobFailed
from server.jobs.kinds import JobKind
from server.models.project import Project
from server.models.registered_model import ModelState, RegisteredModel
from server.registry.service import ClassMap, ready_model_for_job, weights_file
from workers import cpus, inference


def inspect_model(ctx: JobContext) -> dict[str, Any]:
    """Loads uploaded weights in a confined child of the worker (workers/ml/sandbox.py)
    and fills in what they are, or fails them with the reason."""
    from workers.ml import sandbox

    model_id = int(ctx.params["model_id"])
    with ctx.session() as db:
        model = db.get(RegisteredModel, model_id)
        if model is None:
            raise JobFailed("the model was deleted")
        if model.state is ModelState.ready:
            return {"model_id": model_id}  # a redelivery after success
        path = weights_file(ctx.storage, model.sha256)
    try:
        info = sandbox.inspect_isolated(path, sandbox.Limits.from_settings(ctx.settings), ctx.log)
        if info.task != "detect":
            raise ValueError(f"only detection models are supported; this is a {info.task} model")
    except ValueError as exc:
        with ctx.session() as db:
            db.execute(
                sa.update(RegisteredModel)
                .where(RegisteredModel.id == model_id)
                .values(state=ModelState.failed, error=str(exc)[:2000])
            )
        raise JobFailed(str(exc)) from exc
    with ctx.session() as db:
        db.execute(
            sa.update(RegisteredModel)
            .where(RegisteredModel.id == model_id)
            .values(
                state=ModelState.ready,
                error=None,
                task=info.task,
                class_names=info.class_names,
                imgsz=info.imgsz,
                parameters=info.parameters,
                architecture=info.architecture,
            )
        )
    return {"model_id": model_id, "classes": len(info.class_names), "task": info.task}


def predict(ctx: JobContext) -> dict[str, Any]:
    """Runs a model on a few uploaded images, ahead of batch work in the pool (or in the
    CPU pool while longer jobs hold every GPU slot), in the slot's inference process
    (workers/inference.py); says where it ran."""
    files: list[dict[str, str]] = ctx.params["files"]
    staged = [ctx.storage.root / f["path"] for f in files]
    try:
        with ctx.session() as db:
            model = ready_model_for_job(db, ctx.project_id, int(ctx.params["model_id"]))
            project = db.get(Project, model.project_id)
            assert project is not None
            classes = ClassMap.between(model.class_names, project.classes)
            weights = weights_file(ctx.storage, model.sha256)
            sha, model_id = model.sha256, model.id
        request = inference.Request(
            weights=weights,
            sha=sha,
            label=f"model {model_id}",
            conf=float(ctx.params.get("conf", 0.25)),
            iou=float(ctx.params.get("iou", 0.7)),
            imgsz=ctx.params.get("imgsz"),
            batch=max(len(staged), 1),
            decode_threads=min(len(staged), cpus.usable()) or 1,
            # A blank run at this request's batch shape would double its wait.
            warm=False,
        )
        try:
            with inference.CHILDREN.session(
                ctx.settings.data_dir,
                ctx.gpu_index,
                request,
                ctx.settings.inference_idle_seconds,
                check=ctx.check_interrupted,
            ) as session:
                assert session.ready is not None
                found = session.result(session.submit(staged))
                ready = session.ready
        except inference.InferenceError as exc:
            raise JobFailed(str(exc)) from exc
        if any(image is None for image in found.images):
            raise JobFailed("an image could not be decoded")
        results = []
        for f, image in zip(files, found.images, strict=True):
            assert image is not None
            results.append(
                {
                    "filename": f["filename"],
                    "width": image.width,
                    "height": image.height,
                    "boxes": [
                        {
                            "class_id": classes.project_id(d.class_index),
                            "class_name": classes.name(d.class_index),
                            "confidence": round(d.confidence, 5),
                            "x": d.x,
                            "y": d.y,
                            "w": d.w,
                            "h": d.h,
                        }
                        for d in image.boxes
                    ],
                }
            )
        return {
            "images": results,
            "device": inference.device_name(ready, ctx.gpu_index),
            "half": ready.half,
        }
    finally:
        if staged:
            shutil.rmtree(Path(staged[0]).parent, ignore_errors=True)


JOB_KINDS = [
    JobKind("models.inspect", inspect_model, runs_on="cpu", time_limit_hours=0.5),
    JobKind("models.predict", predict, runs_on="gpu", time_limit_hours=0.1),
]

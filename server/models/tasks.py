"""Jobs of the registry: inspecting uploaded weights, and interactive predictions."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from server.jobs.kinds import JobKind
from server.jobs.runtime import JobContext, JobFailed
from server.models.models import ModelState, RegisteredModel
from server.models.service import class_mapping, weights_file
from server.projects.models import Project


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
    CPU pool while longer jobs hold every GPU slot); says where it ran."""
    import cv2

    from workers.ml import yolo

    files: list[dict[str, str]] = ctx.params["files"]
    staged = [ctx.storage.root / f["path"] for f in files]
    try:
        with ctx.session() as db:
            model = db.get(RegisteredModel, int(ctx.params["model_id"]))
            if model is None or model.state is not ModelState.ready:
                raise JobFailed("the model is not ready")
            project = db.get(Project, model.project_id)
            assert project is not None
            mapping = class_mapping(model.class_names, project.classes)
            names = list(model.class_names)
            weights = weights_file(ctx.storage, model.sha256)
            sha, model_id = model.sha256, model.id
        yolo.configure_offline(ctx.settings.data_dir)
        device = yolo.device_for(ctx.gpu_index)
        try:
            loaded = yolo.MODELS.get(weights, sha, device)
        except ValueError as exc:
            raise JobFailed(f"the model could not be loaded: {exc}") from exc
        except yolo.GpuOutOfMemory as exc:
            raise JobFailed(f"model {model_id}: {exc}") from exc
        decoded = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in staged]
        images: list[Any] = [img for img in decoded if img is not None]
        if len(images) != len(decoded):
            raise JobFailed("an image could not be decoded")
        imgsz: int | None = ctx.params.get("imgsz")

        def run(chunk: Sequence[Any]) -> list[list[Any]]:
            return yolo.predict(
                loaded,
                chunk,
                conf=float(ctx.params.get("conf", 0.25)),
                iou=float(ctx.params.get("iou", 0.7)),
                imgsz=imgsz,
                device=device,
            )

        what = f"model {model_id} at image size {yolo.image_size(loaded, imgsz)}"
        try:
            detections, _ = yolo.run_in_batches(run, images, len(images), what=what)
        except yolo.GpuOutOfMemory as exc:
            raise JobFailed(str(exc)) from exc
        ran_on, half = yolo.placement(loaded)
        results = []
        for f, img, found in zip(files, images, detections, strict=True):
            results.append(
                {
                    "filename": f["filename"],
                    "width": int(img.shape[1]),
                    "height": int(img.shape[0]),
                    "boxes": [
                        {
                            "class_id": mapping.get(d.class_index),
                            "class_name": names[d.class_index]
                            if d.class_index < len(names)
                            else "",
                            "confidence": round(d.confidence, 5),
                            "x": d.x,
                            "y": d.y,
                            "w": d.w,
                            "h": d.h,
                        }
                        for d in found
                    ],
                }
            )
        return {"images": results, "device": ran_on, "half": half}
    finally:
        yolo.release_cuda_memory()
        if staged:
            shutil.rmtree(Path(staged[0]).parent, ignore_errors=True)


JOB_KINDS = [
    JobKind("models.inspect", inspect_model, runs_on="cpu", time_limit_hours=0.5),
    JobKind("models.predict", predict, runs_on="gpu", time_limit_hours=0.1),
]

"""The auto-labeling job: predicted boxes for every selected image, in batches, with
image decoding overlapped with inference (server/autolabel/decoding.py), never touching
what a person reviewed. On a GPU it runs in FP16 and halves its batch when the GPU runs
out of memory; the result says where it ran and at which batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult

from server.annotations.confidence import refresh_min_confidence
from server.annotations.models import Annotation, BoxStatus
from server.autolabel import decoding
from server.autolabel.decoding import Row
from server.images.models import Image, ImageStatus
from server.jobs.kinds import JobKind
from server.jobs.runtime import JobContext, JobFailed
from server.kit.db import utcnow
from server.models.models import ModelState, RegisteredModel
from server.models.service import class_mapping, weights_file
from server.projects.models import Project
from workers import cpus


def autolabel(ctx: JobContext) -> dict[str, Any]:
    from workers.ml import yolo

    params = ctx.params
    statuses = [ImageStatus(s) for s in params.get("statuses", ["unlabeled"])]
    batch = int(params.get("batch") or ctx.settings.autolabel_batch)
    with ctx.session() as db:
        project = db.get(Project, ctx.project_id)
        model = db.get(RegisteredModel, int(params["model_id"]))
        if project is None or model is None or model.project_id != project.id:
            raise JobFailed("the model or project no longer exists")
        if model.state is not ModelState.ready:
            raise JobFailed(f"model {model.id} is not ready ({model.state.value})")
        mapping = class_mapping(model.class_names, project.classes)
        names = list(model.class_names)
        weights, sha, model_id = weights_file(ctx.storage, model.sha256), model.sha256, model.id
        selected = sa.and_(Image.project_id == project.id, Image.status.in_(statuses))
        total = db.scalar(sa.select(sa.func.count()).select_from(Image).where(selected)) or 0

    yolo.configure_offline(ctx.settings.data_dir)
    device = yolo.device_for(ctx.gpu_index)
    try:
        loaded = yolo.MODELS.get(weights, sha, device)
    except ValueError as exc:  # refused by the restricted loader, or unreadable
        raise JobFailed(f"the model could not be loaded: {exc}") from exc
    except yolo.GpuOutOfMemory as exc:
        raise JobFailed(f"model {model_id}: {exc}") from exc
    try:
        return _label(ctx, loaded, device, batch, selected, total, mapping, names, model_id)
    except yolo.GpuOutOfMemory as exc:
        raise JobFailed(str(exc)) from exc
    finally:
        # The batches' activations stay reserved by this process otherwise, out of reach
        # of the next training child on this GPU.
        yolo.release_cuda_memory()


def _label(
    ctx: JobContext,
    loaded: Any,
    device: str,
    batch: int,
    selected: sa.ColumnElement[bool],
    total: int,
    mapping: dict[int, int | None],
    names: list[str],
    model_id: int,
) -> dict[str, Any]:
    import cv2

    from workers.ml import yolo

    params = ctx.params
    conf, iou = float(params.get("conf", 0.25)), float(params.get("iou", 0.7))
    imgsz: int | None = params.get("imgsz")
    state = ctx.checkpoint
    after = int(state.get("after_id", 0))
    counts: Counter[str] = Counter(state.get("counts", {}))
    dropped: Counter[str] = Counter(state.get("dropped", {}))
    seen = 0  # rows looked at by this attempt; `total` counted what it had left
    source = f"model:{model_id}"
    what = f"model {model_id} at image size {yolo.image_size(loaded, imgsz)}"
    # Starts at the job's batch; smaller for good once the GPU ran out of memory.
    predict_batch = (
        yolo.warm_up(loaded, batch=batch, imgsz=imgsz, what=what, log=ctx.log) if total else batch
    )

    def fetch(after_id: int) -> list[Row]:
        with ctx.session() as db:
            rows = db.execute(
                sa.select(Image.id, Image.sha256, Image.revision)
                .where(selected, Image.id > after_id)
                .order_by(Image.id)
                .limit(batch)
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def decode(row: Row) -> Any:
        return cv2.imread(str(ctx.storage.blob_path(row[1])), cv2.IMREAD_COLOR)

    def run(images: Sequence[Any]) -> list[list[Any]]:
        return yolo.predict(loaded, images, conf=conf, iou=iou, imgsz=imgsz, device=device)

    plan = decoding.plan(device, batch, cpus.usable(), ctx.settings.autolabel_decode_threads)
    with closing(decoding.batches(fetch, decode, after, plan)) as ahead:
        for rows, images in ahead:
            usable = [(row, img) for row, img in zip(rows, images, strict=True) if img is not None]
            counts["unreadable"] += len(rows) - len(usable)
            detections, predict_batch = yolo.run_in_batches(
                run, [img for _, img in usable], predict_batch, what=what, log=ctx.log
            )
            after = rows[-1][0]
            _write(ctx, usable, detections, mapping, names, source, counts, dropped, after)
            seen += len(rows)
            # Between batches: report, and stop here if canceled.
            ctx.progress(
                seen / max(total, 1), f"{counts['images']} images, {counts['boxes']} boxes"
            )
    ran_on, half = yolo.placement(loaded)
    return {
        "model_id": model_id,
        "images": counts["images"],
        "boxes": counts["boxes"],
        "skipped_reviewed_meanwhile": counts["skipped"],
        "unreadable": counts["unreadable"],
        "dropped_classes": dict(dropped),
        "device": ran_on,
        "half": half,
        "batch": predict_batch,
        "decode_threads": plan.threads,
    }


def _write(
    ctx: JobContext,
    usable: list[tuple[Row, Any]],
    detections: list[list[Any]],
    mapping: dict[int, int | None],
    names: list[str],
    source: str,
    counts: Counter[str],
    dropped: Counter[str],
    after: int,
) -> None:
    """Writes one batch and the checkpoint after it in one transaction: a redelivered
    job resumes exactly after the last batch that landed."""
    now = utcnow()
    with ctx.session() as db:
        for ((image_id, _sha, revision), _img), found in zip(usable, detections, strict=True):
            # Compare-and-swap on the revision: a person who saved or reviewed the image
            # since we read it wins, and their boxes are never replaced.
            claimed = cast(
                CursorResult[Any],
                db.execute(
                    sa.update(Image)
                    .where(
                        Image.id == image_id,
                        Image.revision == revision,
                        Image.status != ImageStatus.reviewed,
                    )
                    .values(
                        revision=Image.revision + 1, status=ImageStatus.predicted, annotated_at=now
                    )
                    .execution_options(synchronize_session=False)
                ),
            )
            if claimed.rowcount != 1:
                counts["skipped"] += 1
                continue
            db.execute(sa.delete(Annotation).where(Annotation.image_id == image_id))
            boxes: list[dict[str, Any]] = []
            for d in found:
                class_id = mapping.get(d.class_index)
                if class_id is None:
                    name = (
                        names[d.class_index] if d.class_index < len(names) else str(d.class_index)
                    )
                    dropped[name] += 1
                    continue
                boxes.append(
                    {
                        "image_id": image_id,
                        "position": len(boxes),
                        "class_id": class_id,
                        "x": d.x,
                        "y": d.y,
                        "w": d.w,
                        "h": d.h,
                        "source": source,
                        "confidence": d.confidence,
                        "status": BoxStatus.predicted,
                    }
                )
            if boxes:
                db.execute(sa.insert(Annotation), boxes)
            refresh_min_confidence(db, [image_id])
            counts["images"] += 1
            counts["boxes"] += len(boxes)
        ctx.save_checkpoint(
            {"after_id": after, "counts": dict(counts), "dropped": dict(dropped)}, db
        )


JOB_KINDS = [JobKind("autolabel.run", autolabel, runs_on="gpu")]

"""The auto-labeling job: predicted boxes for every selected image, in batches, never
touching what a person reviewed. The model runs in the slot's inference process
(workers/inference.py), which decodes each batch while the previous one runs
(server/autolabel/decoding.py); this worker only reads rows and writes boxes. On a GPU it
runs in FP16 and halves its batch when the GPU runs out of memory; the result says where
it ran and at which batch."""

from __future__ import annotations

from collections import Counter
from contextlib import closing
from typing import Any

import sqlalchemy as sa

from server.annotations.boxes import NewBox, replace_boxes
from server.autolabel import decoding
from server.autolabel.decoding import Row
from server.jobs.context import JobContext, JobFailed, Release
from server.jobs.kinds import JobKind
from server.kit.db import utcnow
from server.models.annotation import BoxStatus
from server.models.image import Image, ImageStatus
from server.models.project import Project
from server.registry.service import ClassMap, ready_model_for_job, weights_file
from workers import cpus, inference


def autolabel(ctx: JobContext) -> dict[str, Any]:
    params = ctx.params
    statuses = [ImageStatus(s) for s in params.get("statuses", ["unlabeled"])]
    batch = int(params.get("batch") or ctx.settings.autolabel_batch)
    with ctx.session() as db:
        project = db.get(Project, ctx.project_id)
        if project is None:
            raise JobFailed("the project was deleted")
        model = ready_model_for_job(db, project.id, int(params["model_id"]))
        classes = ClassMap.between(model.class_names, project.classes)
        weights, sha, model_id = weights_file(ctx.storage, model.sha256), model.sha256, model.id
        selected = sa.and_(Image.project_id == project.id, Image.status.in_(statuses))
        total = db.scalar(sa.select(sa.func.count()).select_from(Image).where(selected)) or 0

    device = "cpu" if ctx.gpu_index is None else f"cuda:{ctx.gpu_index}"
    plan = decoding.plan(device, batch, cpus.usable(), ctx.settings.autolabel_decode_threads)
    request = inference.Request(
        weights=weights,
        sha=sha,
        label=f"model {model_id}",
        conf=float(params.get("conf", 0.25)),
        iou=float(params.get("iou", 0.7)),
        imgsz=params.get("imgsz"),
        batch=batch,
        decode_threads=plan.threads,
        warm=total > 0,
    )
    ctx.check_canceled()  # a worker frozen since its claim must not start a model
    try:
        with inference.CHILDREN.session(
            ctx.settings.data_dir,
            ctx.gpu_index,
            request,
            ctx.settings.inference_idle_seconds,
            on_log=ctx.log,
            check=ctx.check_interrupted,
        ) as session:
            assert session.ready is not None
            found = _label(ctx, session, plan, selected, total, classes, model_id)
            return {
                "model_id": model_id,
                **found,
                "device": inference.device_name(session.ready, ctx.gpu_index),
                "half": session.ready.half,
                "decode_threads": plan.threads,
            }
    except inference.ChildDied as exc:
        # Batches already written stay; the next attempt resumes after them.
        raise Release(str(exc)) from exc
    except inference.InferenceError as exc:
        raise JobFailed(str(exc)) from exc


def _label(
    ctx: JobContext,
    session: inference.Session,
    plan: decoding.DecodePlan,
    selected: sa.ColumnElement[bool],
    total: int,
    classes: ClassMap,
    model_id: int,
) -> dict[str, Any]:
    assert session.ready is not None
    state = ctx.checkpoint
    after = int(state.get("after_id", 0))
    counts: Counter[str] = Counter(state.get("counts", {}))
    dropped: Counter[str] = Counter(state.get("dropped", {}))
    seen = 0  # rows looked at by this attempt; `total` counted what it had left
    source = f"model:{model_id}"
    # Starts at the warmed-up batch; smaller for good once the GPU ran out of memory.
    predict_batch = session.ready.batch
    batch = session.request.batch

    def fetch(after_id: int) -> list[Row]:
        with ctx.session() as db:
            rows = db.execute(
                sa.select(Image.id, Image.sha256, Image.revision)
                .where(selected, Image.id > after_id)
                .order_by(Image.id)
                .limit(batch)
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def submit(rows: list[Row]) -> int:
        return session.submit([ctx.storage.blob_file(row[1]) for row in rows])

    ahead = decoding.batches(fetch, submit, session.result, after, plan.batches_ahead)
    with closing(ahead):
        for rows, result in ahead:
            usable = [
                (row, found)
                for row, found in zip(rows, result.images, strict=True)
                if found is not None
            ]
            counts["unreadable"] += len(rows) - len(usable)
            predict_batch = result.batch
            after = rows[-1][0]
            _write(ctx, usable, classes, source, counts, dropped, after)
            seen += len(rows)
            # Between batches: report, and stop here if canceled (the session's end
            # drops what was sent ahead).
            ctx.progress(
                seen / max(total, 1), f"{counts['images']} images, {counts['boxes']} boxes"
            )
    return {
        "images": counts["images"],
        "boxes": counts["boxes"],
        "skipped_reviewed_meanwhile": counts["skipped"],
        "unreadable": counts["unreadable"],
        "dropped_classes": dict(dropped),
        "batch": predict_batch,
    }


def _write(
    ctx: JobContext,
    usable: list[tuple[Row, inference.Decoded]],
    classes: ClassMap,
    source: str,
    counts: Counter[str],
    dropped: Counter[str],
    after: int,
) -> None:
    """Writes one batch and the checkpoint after it in one transaction: a redelivered
    job resumes exactly after the last batch that landed."""
    now = utcnow()
    with ctx.session() as db:
        conn = db.connection()
        for (image_id, _sha, revision), decoded in usable:
            boxes: list[NewBox] = []
            unmapped: Counter[str] = Counter()
            for d in decoded.boxes:
                class_id = classes.project_id(d.class_index)
                if class_id is None:
                    unmapped[classes.name(d.class_index)] += 1
                    continue
                boxes.append(
                    NewBox(class_id, d.x, d.y, d.w, d.h, source, d.confidence, BoxStatus.predicted)
                )
            # Compare-and-swap on the revision: a person who saved or reviewed the image
            # since we read it wins, and their boxes are never replaced.
            written = replace_boxes(
                conn,
                image_id,
                boxes,
                expected_revision=revision,
                status=ImageStatus.predicted,
                annotated_by=None,
                now=now,
                keep_reviewed=True,
            )
            if not written:
                counts["skipped"] += 1
                continue
            counts["images"] += 1
            counts["boxes"] += len(boxes)
            dropped.update(unmapped)
        ctx.save_checkpoint(
            {"after_id": after, "counts": dict(counts), "dropped": dict(dropped)}, db
        )


JOB_KINDS = [JobKind("autolabel.run", autolabel, runs_on="gpu")]

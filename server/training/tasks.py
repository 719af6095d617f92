"""The training job: snapshot the data, supervise ultralytics in a child process,
report every epoch, resume from the last checkpoint on redelivery, register the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from server.jobs.kinds import JobKind
from server.jobs.runtime import JobContext, JobFailed
from server.models.models import ModelState, RegisteredModel
from server.models.service import weights_file
from server.projects.models import Project
from server.training import snapshot

_POLL_SECONDS = 1.0
_STOP_GRACE_SECONDS = 15


def train(ctx: JobContext) -> dict[str, Any]:
    params = ctx.params
    with ctx.session() as db:
        project = db.get(Project, ctx.project_id)
        if project is None:
            raise JobFailed("the project was deleted")
        base, base_model_id = _resolve_base(db, ctx, str(params["base"]))
        try:
            snap = snapshot.build(
                db,
                ctx.storage,
                project.id,
                list(project.classes),
                val_fraction=float(params.get("val_fraction", 0.2)),
                seed=int(params.get("seed", 0)),
                only_reviewed=bool(params.get("only_reviewed", True)),
            )
        except snapshot.EmptyDataset as exc:
            raise JobFailed(str(exc)) from exc
    if not project.classes:
        raise JobFailed("the project has no classes to train")
    ctx.log(
        f"dataset snapshot {snap.key[:12]}: {snap.train_images} train and "
        f"{snap.val_images} val images, {snap.boxes} boxes"
    )

    run_dir = ctx.storage.root / "runs" / f"job-{ctx.job_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    events = run_dir / "events.jsonl"
    last = run_dir / "train" / "weights" / "last.pt"
    if last.exists():
        ctx.log(f"attempt {ctx.attempt}: resuming from the last checkpoint")
    spec = {
        "base": base,
        "data": str(snap.data_yaml),
        "epochs": int(params["epochs"]),
        "imgsz": int(params["imgsz"]),
        "batch": int(params["batch"]),
        "seed": int(params.get("seed", 0)),
        "warmup_epochs": float(params.get("warmup_epochs", 3.0)),
        "project": str(run_dir),
        "device": "0" if ctx.gpu_index is not None else "cpu",
        "workers": 4 if ctx.gpu_index is not None else 0,
        "last": str(last),
        "events": str(events),
    }
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    done = _supervise(ctx, spec_path, events, run_dir / "train.log", int(params["epochs"]))
    model_id = _register(ctx, Path(done["best"]), done, snap, base, base_model_id, project.id)
    return {"model_id": model_id, "snapshot": snap.key, "metrics": _summary(done["metrics"])}


def _resolve_base(db: Any, ctx: JobContext, base: str) -> tuple[str, int | None]:
    if base.startswith("model:") or base.isdigit():
        model_id = int(base.removeprefix("model:"))
        model = db.get(RegisteredModel, model_id)
        if model is None or model.project_id != ctx.project_id:
            raise JobFailed(f"base model {model_id} is not a model of this project")
        if model.state is not ModelState.ready:
            raise JobFailed(f"base model {model_id} is not ready")
        return str(weights_file(ctx.storage, model.sha256)), model.id
    return base, None


def _child_env(ctx: JobContext) -> dict[str, str]:
    from workers.ml import yolo

    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(yolo.configure_offline(ctx.settings.data_dir))
    # One job per GPU: the child sees only its own device, as cuda:0.
    env["CUDA_VISIBLE_DEVICES"] = str(ctx.gpu_index) if ctx.gpu_index is not None else ""
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _supervise(
    ctx: JobContext, spec: Path, events: Path, log_path: Path, epochs: int
) -> dict[str, Any]:
    """Runs the child and relays its epochs; stops it on cancel or worker shutdown."""
    reported = int(ctx.checkpoint.get("epochs_reported", 0))
    offset = 0
    with open(log_path, "ab") as log:
        child = subprocess.Popen(  # noqa: S603 - our own module, our own arguments
            [sys.executable, "-m", "workers.ml.train_child", str(spec), str(os.getpid())],
            env=_child_env(ctx),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    done: dict[str, Any] | None = None
    try:
        while True:
            exited = child.poll() is not None
            offset, new = _read_events(events, offset)
            for event in new:
                if event["type"] == "epoch" and event["epoch"] > reported:
                    reported = event["epoch"]
                    ctx.metrics({"epoch": event["epoch"], **event["metrics"]})
                    ctx.save_checkpoint({"epochs_reported": reported})
                    ctx.progress(
                        event["epoch"] / max(epochs, 1), f"epoch {event['epoch']}/{event['epochs']}"
                    )
                elif event["type"] == "resume":
                    ctx.log(f"resumed after epoch {event['after_epoch']}")
                elif event["type"] == "done":
                    done = event
            if exited:
                break
            ctx.check_canceled()
            # Sleeps until the next poll, or returns the moment the child exits.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=_POLL_SECONDS)
    except BaseException:
        # Canceled, shutting down or crashed: the child must not outlive the attempt.
        _stop(child)
        raise
    if child.returncode != 0 or done is None:
        tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
        ctx.log(tail)
        raise JobFailed(f"training failed (exit code {child.returncode}); see the job logs")
    return done


def _read_events(path: Path, offset: int) -> tuple[int, list[dict[str, Any]]]:
    if not path.exists():
        return offset, []
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    complete = data[: data.rfind(b"\n") + 1]
    events = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return offset + len(complete), events


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _summary(metrics: dict[str, float]) -> dict[str, float]:
    names = {
        "metrics/precision(B)": "precision",
        "metrics/recall(B)": "recall",
        "metrics/mAP50(B)": "mAP50",
        "metrics/mAP50-95(B)": "mAP50-95",
    }
    return {short: metrics[key] for key, short in names.items() if key in metrics}


def _register(
    ctx: JobContext,
    best: Path,
    done: dict[str, Any],
    snap: snapshot.Snapshot,
    base: str,
    base_model_id: int | None,
    project_id: int,
) -> int:
    """Registers best.pt once, however many times this job's message is delivered."""
    with ctx.session() as db:
        existing = db.scalar(
            sa.select(RegisteredModel.id).where(RegisteredModel.job_id == ctx.job_id)
        )
        if existing is not None:
            return existing
    digest = hashlib.sha256()
    tmp = ctx.storage.temp_path(".pt")
    with open(best, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    sha = digest.hexdigest()
    size = tmp.stat().st_size
    ctx.storage.commit_file(tmp, ctx.storage.blob_path(sha))
    params = ctx.params
    metrics = _summary(done.get("metrics", {}))
    try:
        with ctx.session() as db:
            model = RegisteredModel(
                project_id=project_id,
                name=str(params.get("name") or f"train-{ctx.job_id}"),
                state=ModelState.ready,
                source="training",
                filename=f"job-{ctx.job_id}-best.pt",
                sha256=sha,
                size_bytes=size,
                task="detect",
                class_names=snap.classes,
                imgsz=int(params["imgsz"]),
                parameters=done.get("parameters"),
                architecture=Path(base).stem if base.endswith(".yaml") else None,
                base=str(params["base"]),
                base_model_id=base_model_id,
                job_id=ctx.job_id,
                dataset_snapshot=snap.key,
                hyperparams={
                    k: params[k]
                    for k in (
                        "epochs",
                        "imgsz",
                        "batch",
                        "val_fraction",
                        "seed",
                        "warmup_epochs",
                        "only_reviewed",
                    )
                    if k in params
                },
                metrics=metrics,
                created_by=ctx.created_by,
            )
            db.add(model)
            db.flush()
            return model.id
    except IntegrityError:
        with ctx.session() as db:
            existing = db.scalar(
                sa.select(RegisteredModel.id).where(RegisteredModel.job_id == ctx.job_id)
            )
            if existing is None:
                raise
            return existing


JOB_KINDS = [JobKind("training.train", train, runs_on="gpu")]

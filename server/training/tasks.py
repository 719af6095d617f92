"""The training job: snapshot the data, supervise ultralytics in a child process,
report every epoch, resume from the last checkpoint on redelivery, register the model.

Each attempt trains in a folder of its own (``runs/job-N/attempt-K``), resuming from the
newest checkpoint an earlier attempt kept whole (``resume-EEEE/``, copied there by the
child after each epoch), so two processes never write the same files. The child holds a
lease its supervisor sends through the child's stdin, counted from the attempt's newest
heartbeat: a worker that is frozen (SIGSTOP), starved or stuck stops extending it and the
child stops itself ``heartbeat_timeout / 2`` after that heartbeat, before the reconciler
can give the job to another attempt. Every write back to the
database is fenced by the attempt (see ``JobContext.write``): an attempt that lost the
job reports nothing more and stops its child.

The child runs on its slot's GPU only (``CUDA_VISIBLE_DEVICES`` names that GPU by UUID,
in NVML's order), with data-loader workers sized to the CPUs this process may use, and
reports what it really trained on: the job log gets one line for it, the job's result
and the model's hyperparameters keep it (with the batch actually used, which ultralytics
halves when the GPU runs out of memory in the first epoch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from server.jobs.context import JobContext, JobFailed, Release
from server.jobs.kinds import JobKind
from server.models.job import Job
from server.models.project import Project
from server.models.registered_model import ModelState, RegisteredModel
from server.registry.service import ready_model_for_job, weights_file
from server.training import snapshot
from server.training.schemas import base_model_id
from workers import cpus

# The child's exit status when its lease ran out, and the one OCULAB_ variable it is
# passed (the share of its GPU's memory it may use: a test and operations knob). The
# child module imports only the standard library at the top, so this costs nothing.
from workers.ml.train_child import LEASE_EXPIRED_EXIT, MEMORY_FRACTION_ENV

_POLL_SECONDS = 1.0
_STOP_GRACE_SECONDS = 15
# More loader processes than this rarely feed one GPU faster, and each holds a copy of
# the dataset's index and a slice of shared memory.
_MAX_LOADER_WORKERS = 8


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
    here = run_dir / f"attempt-{ctx.attempt}"
    here.mkdir(parents=True, exist_ok=True)
    # This attempt's own folder may hold a run handed back by a stopping worker (the
    # attempt number was given back): it counts as an earlier run like the others.
    earlier = _earlier_runs(run_dir, ctx.attempt)
    prior = _epoch_events(earlier)
    events = here / "events.jsonl"
    offset = events.stat().st_size if events.exists() else 0
    epochs = int(params["epochs"])
    done = _finished(earlier, prior, epochs)
    if done is not None:
        ctx.log(f"attempt {ctx.attempt}: an earlier attempt finished training")
        reported = int(ctx.checkpoint.get("epochs_reported", 0))
        _relay_replay(ctx, prior, reported, epochs, epochs)
    else:
        last = here / "train" / "weights" / "last.pt"
        if _prepare_resume(earlier, last):
            ctx.log(f"attempt {ctx.attempt}: resuming from the last checkpoint")
        spec = {
            "base": base,
            "data": str(snap.data_yaml),
            "epochs": epochs,
            "imgsz": int(params["imgsz"]),
            "batch": int(params["batch"]),
            "seed": int(params.get("seed", 0)),
            "warmup_epochs": float(params.get("warmup_epochs", 3.0)),
            "project": str(here),
            "save_dir": str(here / "train"),
            "resume_dir": str(here),
            "device": "0" if ctx.gpu_index is not None else "cpu",
            "workers": loader_workers(ctx.gpu_index is not None, cpus.usable()),
            "deterministic": bool(params.get("deterministic", True)),
            "last": str(last),
            "events": str(events),
            "lease_seconds": lease_seconds(ctx),
        }
        spec_path = here / "spec.json"
        spec_path.write_text(json.dumps(spec))
        done = _supervise(ctx, spec_path, events, offset, here / "train.log", epochs, prior)
    model_id = _register(ctx, Path(done["best"]), done, snap, base, base_model_id, project.id)
    result = {"model_id": model_id, "snapshot": snap.key, "metrics": _summary(done["metrics"])}
    if done.get("device"):
        result["device"] = {**done["device"], "batch_used": done.get("batch")}
    return result


def _resolve_base(db: Any, ctx: JobContext, base: str) -> tuple[str, int | None]:
    """What the child starts from: the architecture file, or the base model's weights
    (still the project's and ready: checked again, as it may have changed since)."""
    model_id = base_model_id(base)
    if model_id is None:
        return base, None
    model = ready_model_for_job(db, ctx.project_id, model_id)
    return str(weights_file(ctx.storage, model.sha256)), model.id


def _child_env(ctx: JobContext) -> dict[str, str]:
    from workers import gpus
    from workers.ml import yolo

    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(yolo.offline_env(ctx.settings.data_dir))
    # ultralytics' own lines (the device it picked, AMP, loader workers) make train.log.
    env["YOLO_VERBOSE"] = "True"
    # One job per GPU: the child sees only its slot's device (by UUID where NVML names
    # it, so any CUDA_VISIBLE_DEVICES this worker was given, in any order, maps right),
    # as cuda:0; in NVML's order, which is what the slot numbers follow.
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    try:
        env["CUDA_VISIBLE_DEVICES"] = gpus.visible_devices_for(ctx.gpu_index)
    except gpus.GpuUnusable as exc:
        raise JobFailed(str(exc)) from exc
    if os.environ.get(MEMORY_FRACTION_ENV):
        env[MEMORY_FRACTION_ENV] = os.environ[MEMORY_FRACTION_ENV]
    env["PYTHONUNBUFFERED"] = "1"
    return env


def loader_workers(gpu: bool, cpus: int) -> int:
    """Data-loader processes for a training child: on a GPU as many as the CPUs allow,
    one CPU left for the training loop itself; none on a CPU, where they would only
    compete with the model for the same cores (ultralytics forces 0 there anyway)."""
    if not gpu:
        return 0
    return max(0, min(_MAX_LOADER_WORKERS, cpus - 1))


def lease_seconds(ctx: JobContext) -> float:
    """How long after its attempt's newest heartbeat the child may train on: half the
    heartbeat timeout. The reconciler gives the job to another attempt no sooner than a
    whole timeout after that heartbeat was stamped, so the child of a worker that is
    frozen, starved or stuck is gone first; the other half covers the child's exit and
    the clocks of the reconciler's host and ours."""
    return max(1.0, ctx.settings.heartbeat_timeout_seconds / 2)


class _Lease:
    """Tells the child until when it may train, on its stdin: a line with a deadline on
    the ``time.monotonic()`` clock the child shares with us, the attempt's newest
    heartbeat plus the lease, sent again each time a heartbeat moves it.

    Counted from the heartbeat (``Attempt.heard``), not from when this thread last ran:
    a worker whose heartbeats stall (frozen, starved, stuck in a call) while this thread
    still runs stops extending it, and the child stops on its own in time."""

    def __init__(
        self, child: subprocess.Popen[bytes], heard: Callable[[], float], seconds: float
    ) -> None:
        assert child.stdin is not None
        self._pipe = child.stdin
        os.set_blocking(self._pipe.fileno(), False)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._feed,
            args=(heard, seconds, min(0.2, seconds / 8)),
            name=f"lease-{child.pid}",
            daemon=True,
        )
        self._thread.start()

    def _feed(self, heard: Callable[[], float], seconds: float, every: float) -> None:
        fd = self._pipe.fileno()
        sent = 0.0
        while True:
            deadline = heard() + seconds
            if deadline > sent:
                try:
                    # Under PIPE_BUF bytes: written whole or not at all.
                    os.write(fd, f"{deadline:.6f}\n".encode())
                    sent = deadline
                except BlockingIOError:
                    pass  # the child has not read for a long while; try again
                except OSError:
                    return  # the child is gone
            if self._stop.wait(every):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            self._pipe.close()


def _supervise(
    ctx: JobContext,
    spec: Path,
    events: Path,
    offset: int,
    log_path: Path,
    epochs: int,
    prior: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """Runs the child and relays its epochs; stops it on cancel, loss of the job or
    worker shutdown."""
    reported = int(ctx.checkpoint.get("epochs_reported", 0))
    ctx.check_canceled()  # a worker frozen since its claim must not start a child
    with open(log_path, "ab") as log:
        child = subprocess.Popen(  # noqa: S603 - our own module, our own arguments
            [sys.executable, "-m", "workers.ml.train_child", str(spec), str(os.getpid())],
            env=_child_env(ctx),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    lease = _Lease(child, ctx.heard_at, lease_seconds(ctx))
    done: dict[str, Any] | None = None
    device: dict[str, Any] | None = None
    failure = ""
    try:
        while True:
            exited = child.poll() is not None
            offset, new = _read_events(events, offset)
            for event in new:
                if event["type"] == "epoch" and event["epoch"] > reported:
                    _relay(ctx, event, epochs)
                    reported = int(event["epoch"])
                elif event["type"] == "resume":
                    # Epochs an earlier attempt trained but did not get to report.
                    after = int(event["after_epoch"])
                    reported = _relay_replay(ctx, prior, reported, after, epochs)
                    ctx.log(f"resumed after epoch {after}")
                elif event["type"] == "device":
                    device = {k: v for k, v in event.items() if k != "type"}
                    ctx.log(describe_device(device))
                elif event["type"] == "batch":
                    ctx.log(
                        f"out of memory at batch {event['was']}: ultralytics lowered the "
                        f"batch to {event['batch']} and restarted the epoch"
                    )
                elif event["type"] == "done":
                    done = event
                elif event["type"] == "error":  # e.g. a checkpoint the loader refused
                    failure = str(event.get("message", ""))[:2000]
            if exited:
                break
            ctx.check_canceled()
            # Sleeps until the next poll, or returns the moment the child exits.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=_POLL_SECONDS)
    except BaseException:
        # Canceled, lost, shutting down or crashed: the child must not outlive the attempt.
        _stop(child)
        raise
    finally:
        lease.stop()
    if child.returncode == LEASE_EXPIRED_EXIT and done is None:
        # This worker was frozen or starved past the lease; if the job is still ours it
        # goes back to the queue and resumes from the last whole checkpoint.
        raise Release("the training process lost contact with its worker")
    if child.returncode != 0 or done is None:
        tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
        ctx.log(tail)
        if failure:
            raise JobFailed(f"training failed: {failure}")
        raise JobFailed(f"training failed (exit code {child.returncode}); see the job logs")
    return {**done, "device": device} if device is not None else done


def describe_device(device: dict[str, Any]) -> str:
    """The child's device report as one line of the job log."""
    if device.get("uuid"):
        where = (
            f"{device.get('device')} ({device.get('name')}, {device.get('uuid')}; "
            f"CUDA_VISIBLE_DEVICES={device.get('cuda_visible_devices')}, "
            f"{device.get('device_count')} visible)"
        )
    else:
        where = str(device.get("device") or "cpu")
    return (
        f"training on {where}: model on {device.get('model_device')} in "
        f"{device.get('dtype')}, AMP {'on' if device.get('amp') else 'off'}, batch "
        f"{device.get('batch')}, {device.get('workers')} loader workers, "
        f"image size {device.get('imgsz')}, "
        f"{'deterministic' if device.get('deterministic') else 'not deterministic'}"
    )


def _relay(ctx: JobContext, event: dict[str, Any], epochs: int) -> None:
    """Reports one epoch: metrics, checkpoint and progress in one fenced transaction,
    skipped if already reported (an earlier attempt, or a commit an outage hid)."""
    epoch = int(event["epoch"])

    def record(db: Any) -> None:
        saved = db.scalar(sa.select(Job.checkpoint).where(Job.id == ctx.job_id)) or {}
        if int(saved.get("epochs_reported", 0)) >= epoch:
            return
        ctx.metrics({"epoch": epoch, **event["metrics"]}, db=db)
        ctx.save_checkpoint({**saved, "epochs_reported": epoch}, db=db)
        ctx.progress(epoch / max(epochs, 1), f"epoch {epoch}/{event['epochs']}", db=db)

    ctx.write(record)


def _relay_replay(
    ctx: JobContext, prior: dict[int, dict[str, Any]], reported: int, upto: int, epochs: int
) -> int:
    """Relays earlier attempts' epochs after ``reported`` up to ``upto``; returns the
    last epoch reported."""
    for epoch in sorted(e for e in prior if reported < e <= upto):
        _relay(ctx, prior[epoch], epochs)
        reported = epoch
    return reported


# --- earlier attempts' folders ----------------------------------------------------------


def _earlier_runs(run_dir: Path, attempt: int) -> list[Path]:
    """Folders of earlier runs of this job, newest attempt first; the pre-attempt layout
    (``runs/job-N`` itself) last. Later attempts' folders are ignored: their owner
    lost the job to us or is about to."""
    runs: list[tuple[int, Path]] = []
    for path in run_dir.glob("attempt-*"):
        number = path.name.removeprefix("attempt-")
        if number.isdigit() and int(number) <= attempt:
            runs.append((int(number), path))
    ordered = [path for _, path in sorted(runs, reverse=True)]
    return [*ordered, run_dir]


def _epoch_events(runs: list[Path]) -> dict[int, dict[str, Any]]:
    """Each epoch's event as the newest run that trained it wrote it."""
    found: dict[int, dict[str, Any]] = {}
    for run in runs:
        _, events = _read_events(run / "events.jsonl", 0)
        for event in events:
            if event.get("type") == "epoch":
                found.setdefault(int(event["epoch"]), event)
    return found


def _resume_dirs(run: Path) -> list[tuple[int, Path]]:
    dirs = []
    for path in run.glob("resume-*"):
        number = path.name.removeprefix("resume-")
        if number.isdigit() and (path / "last.pt").is_file():
            dirs.append((int(number), path))
    return sorted(dirs, reverse=True)


def _finished(
    runs: list[Path], prior: dict[int, dict[str, Any]], epochs: int
) -> dict[str, Any] | None:
    """The outcome of an earlier run that trained every epoch, if one did."""
    for run in runs:
        _, events = _read_events(run / "events.jsonl", 0)
        for event in reversed(events):
            if event.get("type") == "done" and Path(event["best"]).is_file():
                return dict(event)
        kept = _resume_dirs(run)
        if kept and kept[0][0] >= epochs:
            # Trained to the end but stopped before its final report: its last kept
            # checkpoint is the result (best.pt as of that epoch where there is one).
            folder = kept[0][1]
            best = folder / "best.pt" if (folder / "best.pt").is_file() else folder / "last.pt"
            return {
                "type": "done",
                "best": str(best),
                "metrics": prior.get(epochs, {}).get("metrics", {}),
            }
        if kept:
            return None  # a newer attempt's checkpoint supersedes older outcomes
    return None


def _prepare_resume(runs: list[Path], last: Path) -> bool:
    """Puts the newest whole checkpoint of an earlier run where the child resumes from
    (this attempt's own ``last.pt``); False to train from the start."""
    last.parent.mkdir(parents=True, exist_ok=True)
    for run in runs:
        kept = _resume_dirs(run)
        if kept:
            folder = kept[0][1]
            _copy(folder / "last.pt", last)
            if (folder / "best.pt").is_file():
                _copy(folder / "best.pt", last.with_name("best.pt"))
            return True
        legacy = run / "train" / "weights" / "last.pt"
        if run.name.startswith("job-") and legacy.is_file():
            _copy(legacy, last)
            return True
    # Whatever a handed-back run of this attempt left in its weights folder may be torn.
    last.unlink(missing_ok=True)
    last.with_name("best.pt").unlink(missing_ok=True)
    return False


def _copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


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
    """Registers best.pt once, however many times this job's message is delivered (or
    its insert is retried after a database outage that hid whether it committed)."""

    def existing(db: Any) -> int | None:
        found: int | None = db.scalar(
            sa.select(RegisteredModel.id).where(RegisteredModel.job_id == ctx.job_id)
        )
        return found

    found = ctx.write(existing)
    if found is not None:
        return found
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

    def insert(db: Any) -> int:
        found = existing(db)
        if found is not None:
            return found
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
                    "deterministic",
                )
                if k in params
            }
            | _as_trained(done),
            metrics=metrics,
            created_by=ctx.created_by,
        )
        db.add(model)
        db.flush()
        return model.id

    try:
        return ctx.write(insert)
    except IntegrityError:
        found = ctx.write(existing)
        if found is None:
            raise
        return found


def _as_trained(done: dict[str, Any]) -> dict[str, Any]:
    """What the run really used, where the child reported it: the batch after any
    halving for lack of memory, and the device."""
    out: dict[str, Any] = {}
    if done.get("batch") is not None:
        out["batch_used"] = int(done["batch"])
    device = done.get("device") or {}
    if device.get("name"):
        out["device"] = str(device["name"])
    return out


JOB_KINDS = [JobKind("training.train", train, runs_on="gpu")]

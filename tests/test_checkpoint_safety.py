"""A model checkpoint never runs code (issue 8 §1).

A corpus of malicious checkpoints, each of which would write a marker file if anything
unpickled it the way ultralytics does by default (proved by the first test), is refused
at upload or fails inspection, and the worker's loader refuses each one directly too, as
if the upload scan had been bypassed. Genuine checkpoints (built from YAML, trainer
checkpoints) still upload, inspect, auto-label and predict; training resumes from a
trainer-written last.pt through the restricted loader; inspection runs confined.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import pickletools
import shutil
import struct
import subprocess
import sys
import textwrap
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.models.auth import User
from server.models.job import Job
from server.models.registered_model import ModelState, RegisteredModel
from tests.factories import Factory, labeled_shapes_project, png_bytes
from tests.helpers import wait_job

if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the ml extra is not installed", allow_module_level=True)


# --- the corpus ---------------------------------------------------------------------


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _call(func: bytes, *args: bytes) -> bytes:
    """func(*args): MARK, the arguments, TUPLE, REDUCE."""
    return func + b"(" + b"".join(args) + b"tR"


def _pickle(body: bytes, protocol: int = 2) -> bytes:
    return b"\x80" + bytes([protocol]) + body + b"."


def _inline(obj: Any) -> bytes:
    """An object's opcodes without PROTO and STOP, to embed in a hand-made pickle."""
    return pickletools.optimize(pickle.dumps(obj, protocol=2))[2:-1]


def _torch_zip(data_pkl: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return out.getvalue()


def _touch(marker: Path) -> str:
    return f"touch {marker}"


def _write(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


class _Exploit:
    """Pickles as os.system("touch MARKER") (GLOBAL posix system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (_touch(self.marker),))


def _os_system(marker: Path) -> bytes:
    return _call(_global("os", "system"), _str(_touch(marker)))


def _import(module: str) -> bytes:
    return _call(_global("importlib", "import_module"), _str(module))


_GENUINE: dict[str, bytes] = {}


def genuine(arch: str = "yolo11n") -> bytes:
    """A checkpoint saved the way ultralytics saves one (Model.save), built from YAML."""
    if arch not in _GENUINE:
        import tempfile

        from ultralytics import YOLO

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{arch}.pt"
            YOLO(f"{arch}.yaml").save(str(path))
            _GENUINE[arch] = path.read_bytes()
    return _GENUINE[arch]


def _genuine_checkpoint() -> dict[str, Any]:
    from workers.ml import checkpoints

    loaded: dict[str, Any] = checkpoints.load(genuine())
    return loaded


def _torch_save(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _with_entries(base: bytes, entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": that is the point
        with zipfile.ZipFile(out, "a") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
    return out.getvalue()


def _root(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.namelist()[0].split("/", 1)[0]


def _evil_activation(marker: Path) -> str:
    # parse_model evals this string when it (re)builds the model, e.g. to train it.
    return f"__import__('os').system('touch {marker}') or nn.SiLU()"


def _yaml_with(marker: Path) -> dict[str, Any]:
    import copy

    config: dict[str, Any] = copy.deepcopy(_genuine_checkpoint()["model"].yaml)
    config["activation"] = _evil_activation(marker)
    return config


def _inner_torch_zip(aux: Path, marker: Path, suffix: str = ".pt") -> Path:
    inner = aux / f"inner{suffix}"
    inner.write_bytes(_torch_zip(_pickle(_os_system(marker))))
    return inner


def _data_only_yaml_trick(marker: Path, aux: Path) -> bytes:
    checkpoint = _genuine_checkpoint()
    checkpoint["model"].yaml["activation"] = _evil_activation(marker)
    return _torch_save(checkpoint)


def _numpy_load(marker: Path, aux: Path) -> bytes:
    import numpy as np

    inner = aux / "inner.npy"
    np.save(inner, np.array([_Exploit(marker)], dtype=object), allow_pickle=True)
    # numpy.load(file, mmap_mode=None, allow_pickle=True)
    return _torch_zip(_pickle(_call(_global("numpy", "load"), _str(str(inner)), b"N", b"\x88")))


def _hub_download(marker: Path, aux: Path) -> bytes:
    source = aux / "payload.txt"
    source.write_text("downloaded\n")
    url = f"file://{source}"
    return _torch_zip(
        _pickle(_call(_global("torch.hub", "download_url_to_file"), _str(url), _str(str(marker))))
    )


@dataclass(frozen=True)
class Evil:
    name: str
    build: Callable[[Path, Path], bytes]  # (marker, scratch dir) -> the file's bytes
    # Where the server stops it: "upload" (422, nothing stored) or "inspect".
    stops_at: str = "upload"
    # Whether an unrestricted load (torch.load(weights_only=False), then building the
    # model from its config as training does) writes the marker.
    live: bool = True


CORPUS = [
    Evil("os-system", lambda m, a: _torch_zip(_pickle(_os_system(m)))),
    Evil(
        "posix-system-raw-pickle",
        lambda m, a: _pickle(_call(_global("posix", "system"), _str(_touch(m)))),
        # Not a zip: torch.load's legacy format unpickles its first object all the same.
    ),
    Evil(
        "subprocess",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _global("subprocess", "check_call"), b"](" + _str("touch") + _str(str(m)) + b"e"
                )
            )
        ),
    ),
    Evil(
        "builtins-eval",
        lambda m, a: _torch_zip(_pickle(_call(_global("builtins", "eval"), _str(_write(m))))),
    ),
    Evil(
        "builtin-exec-protocol-2-name",
        lambda m, a: _torch_zip(_pickle(_call(_global("__builtin__", "exec"), _str(_write(m))))),
    ),
    Evil(
        "builtins-open",
        lambda m, a: _torch_zip(
            _pickle(_call(_global("builtins", "open"), _str(str(m)), _str("w")))
        ),
    ),
    Evil(
        "builtins-getattr-import",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _call(
                        _global("builtins", "getattr"),
                        _call(_global("builtins", "__import__"), _str("os")),
                        _str("system"),
                    ),
                    _str(_touch(m)),
                )
            )
        ),
    ),
    Evil(
        # The audit's finding: allowed by the old "torch._utils" prefix.
        "torch-import-dotted-name",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _call(_global("torch._utils", "_import_dotted_name"), _str("os.system")),
                    _str(_touch(m)),
                )
            )
        ),
    ),
    Evil(
        "functools-partial",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _call(_global("functools", "partial"), _global("os", "system"), _str(_touch(m)))
                )
            )
        ),
    ),
    Evil(
        "operator-attrgetter",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _call(_call(_global("operator", "attrgetter"), _str("system")), _import("os")),
                    _str(_touch(m)),
                )
            )
        ),
    ),
    Evil(
        "operator-methodcaller",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _call(_global("operator", "methodcaller"), _str("system"), _str(_touch(m))),
                    _import("os"),
                )
            )
        ),
    ),
    Evil(
        "importlib-import-module",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _call(_global("builtins", "getattr"), _import("posix"), _str("system")),
                    _str(_touch(m)),
                )
            )
        ),
    ),
    Evil(
        # torch.load(inner, None, pickle): a pickle module means weights_only=False.
        "nested-torch-load",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _global("torch", "load"),
                    _str(str(_inner_torch_zip(a, m))),
                    b"N",
                    _import("pickle"),
                )
            )
        ),
    ),
    Evil(
        "nested-ultralytics-torch-load",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _global("ultralytics.utils.patches", "torch_load"),
                    _str(str(_inner_torch_zip(a, m))),
                )
            )
        ),
    ),
    Evil(
        # Allowed by the old "ultralytics.nn." prefix; loads the inner file unrestricted.
        "nested-ultralytics-torch-safe-load",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _global("ultralytics.nn.tasks", "torch_safe_load"),
                    _str(str(_inner_torch_zip(a, m))),
                )
            )
        ),
    ),
    Evil("torch-hub-download", _hub_download),
    Evil(
        "ultralytics-attempt-download-asset",
        lambda m, a: _torch_zip(
            _pickle(
                _call(
                    _global("ultralytics.utils.downloads", "attempt_download_asset"), _str(str(m))
                )
            )
        ),
        live=False,  # offline it finds nothing to download
    ),
    Evil(
        "ultralytics-yaml-save",
        # protocol 4 resolves the dotted name YAML.save
        lambda m, a: _torch_zip(
            _pickle(
                _call(_global("ultralytics.utils", "YAML.save"), _str(str(m)), b"}"), protocol=4
            )
        ),
    ),
    Evil(
        "ultralytics-yaml-load",
        lambda m, a: _torch_zip(
            _pickle(_call(_global("ultralytics.nn.tasks", "yaml_model_load"), _str("yolo11n.yaml")))
        ),
        live=False,  # reads a file: nothing to see, still not allowed
    ),
    Evil(
        "numpy-runstring",
        lambda m, a: _torch_zip(
            _pickle(
                _call(_global("numpy.testing._private.utils", "runstring"), _str(_write(m)), b"}")
            )
        ),
    ),
    Evil(
        "numpy-reconstruct-object-array",
        lambda m, a: _torch_zip(_numpy_object_array(m)),
    ),
    Evil("numpy-load-allow-pickle", _numpy_load),
    *[
        Evil(
            f"pickle-protocol-{protocol}",
            (lambda p: lambda m, a: _torch_zip(pickle.dumps(_Exploit(m), protocol=p)))(protocol),
        )
        for protocol in range(6)
    ],
    Evil(
        "exploit-next-to-tensors",
        lambda m, a: _torch_save({"model": _zeros(), "evil": _Exploit(m)}),
    ),
    Evil(
        "exploit-inside-genuine-checkpoint",
        lambda m, a: _torch_save({**_genuine_checkpoint(), "date": _Exploit(m)}),
    ),
    Evil(
        "second-data-pkl-same-name",
        lambda m, a: _with_entries(
            genuine(), {f"{_root(genuine())}/data.pkl": _pickle(_os_system(m))}
        ),
        live=False,  # torch reads the first entry; other readers may read the second
    ),
    Evil(
        "second-record-directory",
        lambda m, a: _with_entries(genuine(), {"other/data.pkl": _pickle(_os_system(m))}),
        live=False,
    ),
    Evil(
        "extra-pickle-record",
        lambda m, a: _with_entries(
            genuine(), {f"{_root(genuine())}/extra.pkl": _pickle(_os_system(m))}
        ),
        live=False,
    ),
    Evil(
        # Only allowed globals, but REDUCE runs the constructor: DetectionModel(cfg)
        # parses the config, whose activation string parse_model would eval.
        "reduce-detection-model-with-yaml-eval",
        lambda m, a: _torch_zip(
            _pickle(
                _call(_global("ultralytics.nn.tasks", "DetectionModel"), _inline(_yaml_with(m)))
            )
        ),
        stops_at="inspect",
    ),
    Evil(
        # Data only: loads cleanly; the eval would come when training rebuilds the model.
        "yaml-activation-eval-data-only",
        _data_only_yaml_trick,
        stops_at="inspect",
    ),
]


def _zeros() -> Any:
    import torch

    return torch.zeros(4)


def _numpy_object_array(marker: Path) -> bytes:
    import numpy as np

    return pickle.dumps(np.array([_Exploit(marker)], dtype=object), protocol=2)


def _materialise(evil: Evil, tmp_path: Path) -> tuple[Path, Path]:
    """The case's file and the marker that proves its payload ran."""
    scratch = tmp_path / f"scratch-{evil.name}"
    scratch.mkdir(parents=True)
    marker = tmp_path / f"PWNED-{evil.name}"
    path = tmp_path / f"{evil.name}.pt"
    path.write_bytes(evil.build(marker, scratch))
    assert not marker.exists()
    return path, marker


# --- 1. the corpus is real: an unrestricted load runs every live payload -------------


@pytest.mark.no_database
def test_corpus_payloads_run_when_loaded_unrestricted(tmp_path: Path) -> None:
    assert len(CORPUS) >= 20
    cases = {evil.name: _materialise(evil, tmp_path) for evil in CORPUS}
    # The way ultralytics loads by default (torch.load with weights_only=False), then
    # what training does with the config; in a process of its own, without our loader.
    script = textwrap.dedent(
        """
        import copy, sys, torch
        from ultralytics.nn.tasks import DetectionModel
        for path in sys.argv[1:]:
            try:
                loaded = torch.load(path, map_location="cpu", weights_only=False)
                config = getattr(loaded.get("model"), "yaml", None)
                if isinstance(config, dict):
                    DetectionModel(cfg=copy.deepcopy(config), verbose=False)
            except Exception:
                pass
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "ULTRALYTICS_SAFE_LOAD"}
    env.update(YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp_path / "yolo"), YOLO_VERBOSE="False")
    subprocess.run(
        [sys.executable, "-c", script, *(str(path) for path, _ in cases.values())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=240,
        check=False,
    )
    ran = {name for name, (_, marker) in cases.items() if marker.exists()}
    assert ran == {evil.name for evil in CORPUS if evil.live}


# --- 2. the worker's loader refuses every one, even with the upload scan bypassed ----


@pytest.mark.parametrize("evil", CORPUS, ids=lambda e: e.name)
def test_worker_loader_refuses_malicious_checkpoint(evil: Evil, tmp_path: Path) -> None:
    import torch

    from workers.ml import checkpoints

    checkpoints.install()
    path, marker = _materialise(evil, tmp_path)
    with pytest.raises((ValueError, checkpoints.CheckpointRefused)) as refused:
        checkpoints.load_yolo(path)
    assert "refused" in str(refused.value) or "not a PyTorch" in str(refused.value)
    if evil.name != "yaml-activation-eval-data-only":
        # Every torch.load in a worker is the restricted one, whatever the caller asks.
        with pytest.raises(checkpoints.CheckpointRefused):
            torch.load(path, map_location="cpu", weights_only=False)
    else:
        # The weights are data only; what would run code is rebuilding the model from
        # its config (training does), and restricted mode refuses that too.
        from ultralytics.nn.tasks import DetectionModel

        config = torch.load(path, weights_only=False)["model"].yaml
        with pytest.raises(TypeError, match="unsupported activation"):
            DetectionModel(cfg=config, verbose=False)
    assert not marker.exists()


# --- 3. ...and the server refuses every one: at upload, or when inspecting -----------


def _stored_files(app: FastAPI) -> list[Path]:
    blobs = app.state.settings.data_dir / "blobs"
    return [p for p in blobs.rglob("*") if p.is_file()] if blobs.exists() else []


@pytest.mark.parametrize(
    "evil", [e for e in CORPUS if e.stops_at == "upload"], ids=lambda e: e.name
)
def test_malicious_checkpoint_is_refused_at_upload(
    evil: Evil,
    make_app: Callable[..., FastAPI],
    factory_for: Callable[[FastAPI], Factory],
    tmp_path: Path,
) -> None:
    app = make_app()
    f = factory_for(app)
    owner = f.client(f.user("owner"))
    project = owner.project()
    path, marker = _materialise(evil, tmp_path)
    response = owner.post(
        f"/api/models?project_id={project['id']}", files={"file": ("w.pt", path.read_bytes())}
    )
    assert response.status_code == 422, response.text
    assert "refused" in response.json()["detail"] or "not a PyTorch" in response.json()["detail"]
    assert f.count(RegisteredModel) == 0
    assert f.count(Job) == 0
    assert _stored_files(app) == []
    assert not marker.exists()


def test_checkpoints_that_pass_the_scan_fail_inspection_cleanly(
    ml_app: FastAPI, tmp_path: Path
) -> None:
    f = Factory(ml_app)
    owner = f.client(f.user("owner"))
    project = owner.project()
    expected = {
        "reduce-detection-model-with-yaml-eval": "never run a constructor",
        "yaml-activation-eval-data-only": "activation is not a plain torch.nn layer",
    }
    for evil in [e for e in CORPUS if e.stops_at == "inspect"]:
        path, marker = _materialise(evil, tmp_path)
        response = owner.post(
            f"/api/models?project_id={project['id']}",
            files={"file": (f"{evil.name}.pt", path.read_bytes())},
        )
        assert response.status_code == 202, response.text  # every pair is allowed...
        job = wait_job(owner, response.json()["inspect_job_id"])
        assert job["state"] == "failed", job  # ...and yet nothing runs
        assert expected[evil.name] in job["error"], job["error"]
        model = owner.get(f"/api/models/{response.json()['model']['id']}").json()
        assert model["state"] == "failed"
        assert expected[evil.name] in model["error"]
        assert not marker.exists(), evil.name


# --- 4. genuine checkpoints still work end to end ------------------------------------


class _StopTraining(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny training stopped after its first epoch, as a worker killed mid-run leaves
    it: last.pt is a full trainer checkpoint (optimizer, EMA, train args)."""
    from workers.ml import checkpoints
    from workers.ml.gen_allowlist import train_tiny

    checkpoints.install()
    root = tmp_path_factory.mktemp("interrupted")

    def stop(trainer: Any) -> None:
        raise _StopTraining

    with pytest.raises(_StopTraining):
        train_tiny(root, on_model_save=stop)
    last = root / "runs" / "train" / "weights" / "last.pt"
    assert checkpoints.load(last)["epoch"] == 0
    return last


def test_genuine_checkpoints_upload_inspect_autolabel_and_predict(
    ml_app: FastAPI, interrupted_run: Path
) -> None:
    f = Factory(ml_app)
    owner = f.client(f.user("owner"))
    project = owner.project(classes=["square", "circle", "triangle"])
    owner.upload(project["id"], ("a.png", png_bytes(1, (64, 64))), ("b.png", png_bytes(2)))
    uploads = {
        "yolo11n.pt": (genuine("yolo11n"), 80, "yolo11n"),
        "yolov8n.pt": (genuine("yolov8n"), 80, "yolov8n"),
        "last.pt": (interrupted_run.read_bytes(), 3, "yolo11n"),  # a trainer checkpoint
    }
    for filename, (data, classes, architecture) in uploads.items():
        uploaded = owner.post(
            f"/api/models?project_id={project['id']}",
            files={"file": (filename, data)},
            data={"name": filename},
        )
        assert uploaded.status_code == 202, uploaded.text
        inspect = wait_job(owner, uploaded.json()["inspect_job_id"])
        assert inspect["state"] == "succeeded", inspect
        model_id = uploaded.json()["model"]["id"]
        model = owner.get(f"/api/models/{model_id}").json()
        assert model["state"] == "ready"
        assert len(model["class_names"]) == classes
        assert model["architecture"] == architecture
        logs = [
            e["data"].get("line", "") for e in owner.get(f"/api/jobs/{inspect['id']}/logs").json()
        ]
        assert any("inspection sandbox: limits:" in line for line in logs), logs

        assert owner.post(f"/api/models/{model_id}/promote").status_code == 200
        labeled = owner.post(
            f"/api/projects/{project['id']}/jobs/autolabel",
            json={"conf": 0.5, "status": "unlabeled"},
        )
        assert labeled.status_code == 202, labeled.text
        autolabel = wait_job(owner, labeled.json()["id"])
        assert autolabel["state"] == "succeeded", autolabel

        predicted = owner.post(
            f"/api/models/{model_id}/predict",
            params={"conf": 0.001},
            files=[("files", ("c.png", png_bytes(3, (64, 64)), "image/png"))],
        )
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["images"][0]["width"] == 64


def test_published_weights_with_numpy_metrics_load_and_upload(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory], tmp_path: Path
) -> None:
    """ultralytics' published weights keep their metrics as numpy scalars: data the
    restricted loader rebuilds (numpy's scalar and dtype), and the scan accepts."""
    from workers.ml import checkpoints
    from workers.ml.gen_allowlist import release_style

    plain = tmp_path / "yolo11n.pt"
    metrics = {"metrics/mAP50(B)": 0.5, "fitness": 0.25}
    plain.write_bytes(_torch_save({**_genuine_checkpoint(), "train_metrics": metrics}))
    published = release_style(plain, tmp_path / "published.pt")
    loaded = checkpoints.load(published)
    assert {type(v).__name__ for v in loaded["train_metrics"].values()} == {"float64"}
    assert loaded["train_metrics"] == metrics
    assert checkpoints.load_yolo(published).task == "detect"
    app = make_app()
    f = factory_for(app)
    owner = f.client(f.user("owner"))
    project = owner.project()
    response = owner.post(
        f"/api/models?project_id={project['id']}",
        files={"file": ("published.pt", published.read_bytes())},
    )
    assert response.status_code == 202, response.text


# --- 5. training and resuming load through the restricted path -----------------------


def test_training_resumes_from_a_trainer_written_last_pt_through_the_restricted_loader(
    interrupted_run: Path, tmp_path: Path
) -> None:
    from ultralytics import YOLO

    from workers.ml import checkpoints

    # ultralytics' own resume path (check_resume -> load_checkpoint -> torch.load) meets
    # the restricted loader: a poisoned last.pt is refused there, and nothing runs.
    poisoned = tmp_path / "last.pt"
    marker = tmp_path / "PWNED-resume"
    poisoned.write_bytes(_torch_save({"epoch": 0, "ema": _Exploit(marker)}))
    with pytest.raises(FileNotFoundError) as refused:
        YOLO("yolo11n.yaml").train(resume=str(poisoned))
    assert "refused" in checkpoints.describe(refused.value)
    assert not marker.exists()

    # The genuine one resumes at epoch 2 of 2 and finishes (strip_optimizer and the
    # final validation load best.pt/last.pt through the same loader).
    model = checkpoints.load_yolo(interrupted_run)
    model.train(resume=True)
    assert model.trainer.start_epoch == 1
    best = Path(model.trainer.best)
    assert checkpoints.load(best)["epoch"] == -1  # stripped: training finished
    assert checkpoints.load_yolo(best).task == "detect"


def test_training_from_a_poisoned_base_model_fails_without_running_it(
    ml_app: FastAPI, tmp_path: Path
) -> None:
    """A base model in the registry whose file is poisoned (stored before this gate
    existed, or tampered with on shared storage) fails training with the reason."""
    f = Factory(ml_app)
    owner_row = f.user("owner")
    owner = f.client(owner_row)
    storage = ml_app.state.storage
    with f.sessionmaker() as db, db.begin():
        user = db.get(User, owner_row.id)
        assert user is not None
        project_id = labeled_shapes_project(db, storage, ml_app.state.settings, user, n_images=6).id
    bases = {
        "os-system": (CORPUS[0], "does not need"),
        "yaml-activation-eval-data-only": (CORPUS[-1], "activation is not a plain torch.nn"),
    }
    for evil, reason in bases.values():
        path, marker = _materialise(evil, tmp_path)
        import hashlib

        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        tmp = storage.temp_path(".pt")
        shutil.copyfile(path, tmp)
        storage.commit_file(tmp, storage.blob_path(sha))
        with f.sessionmaker() as db, db.begin():
            row = RegisteredModel(
                project_id=project_id,
                name=evil.name,
                state=ModelState.ready,
                source="upload",
                filename="base.pt",
                sha256=sha,
                size_bytes=path.stat().st_size,
                task="detect",
                class_names=["square", "circle", "triangle"],
                hyperparams={},
                metrics={},
            )
            db.add(row)
            db.flush()
            model_id = row.id
        started = owner.post(
            f"/api/projects/{project_id}/jobs/train",
            json={"base": model_id, "epochs": 1, "imgsz": 32, "batch": 2, "val_fraction": 0.34},
        )
        assert started.status_code == 202, started.text
        job = wait_job(owner, started.json()["id"])
        assert job["state"] == "failed", job
        assert reason in job["error"], job["error"]
        assert not marker.exists(), evil.name
    with f.sessionmaker() as db:
        trained = db.scalar(
            sa.select(sa.func.count())
            .select_from(RegisteredModel)
            .where(RegisteredModel.source == "training")
        )
    assert trained == 0


def test_a_poisoned_label_cache_on_shared_storage_is_never_unpickled(tmp_path: Path) -> None:
    """ultralytics keeps a dataset's labels.cache as a pickled numpy object array beside
    the snapshot; the worker rebuilds it instead of loading it."""
    import numpy as np

    from workers.ml import checkpoints

    checkpoints.install()
    from ultralytics.data import dataset

    marker = tmp_path / "marker"
    cache = tmp_path / "labels.cache"
    with open(cache, "wb") as out:
        np.save(out, np.array(_Exploit(marker), dtype=object), allow_pickle=True)
    with pytest.raises(FileNotFoundError):
        dataset.load_dataset_cache_file(cache)
    assert not marker.exists()


# --- 6. inspection is confined --------------------------------------------------------


def test_inspection_limits_end_in_a_clean_failure(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    # 1 GiB of address space is less than torch needs to import; 0.5 s is too short.
    for overrides, fragment in (
        ({"inspect_memory_limit_mb": 1024}, "memory"),
        ({"inspect_timeout_seconds": 0.5}, "did not finish within 0.5 s"),
    ):
        app = make_app(
            run_jobs=True,
            standalone_gpu_slots=0,
            standalone_cpu_slots=1,
            heartbeat_interval_seconds=0.5,
            scheduler_interval_seconds=0.1,
            **overrides,
        )
        f = factory_for(app)
        with TestClient(app):
            owner = f.client(f.user(f"owner{len(overrides)}{fragment[:3]}"))
            project = owner.project()
            uploaded = owner.post(
                f"/api/models?project_id={project['id']}",
                files={"file": ("yolo11n.pt", genuine())},
            )
            assert uploaded.status_code == 202, uploaded.text
            job = wait_job(owner, uploaded.json()["inspect_job_id"])
            model = owner.get(f"/api/models/{uploaded.json()['model']['id']}").json()
        assert job["state"] == "failed", job
        assert fragment in job["error"], job["error"]
        assert model["state"] == "failed"
        assert fragment in model["error"]


def test_inspection_child_has_no_network_and_drops_root(tmp_path: Path) -> None:
    """The confinement steps of the inspection child, run the way it runs them: after
    them, Redis on 127.0.0.1 (which the test database setup can reach) is unreachable
    and a root process has become nobody."""
    script = textwrap.dedent(
        """
        import json, os, socket, sys
        from pathlib import Path
        from workers.ml import sandbox
        limits = sandbox.Limits(memory_mb=8192, cpu_seconds=60, timeout_seconds=60, user="nobody")
        report = [sandbox.set_limits(limits)]
        ok, why = sandbox.isolate_network_as_root()
        report.append(why if ok else sandbox.isolate_network_unprivileged(why))
        report.append(sandbox.drop_privileges(limits.user, Path(sys.argv[1])))
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(2)
        try:
            probe.connect(("127.0.0.1", 6379))
            reached = True
        except OSError:
            reached = False
        print(json.dumps({"report": report, "reached": reached, "uid": os.getuid()}))
        """
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script, str(workdir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    import json

    result = json.loads(done.stdout.strip().splitlines()[-1])
    if any("NOT isolated" in line for line in result["report"]):
        pytest.skip(f"this kernel allows no network namespace: {result['report']}")
    assert result["reached"] is False, result
    if os.geteuid() == 0:
        import pwd

        assert result["uid"] == pwd.getpwnam("nobody").pw_uid, result


# --- 7. the allowlist matches the installed ultralytics -------------------------------


@pytest.mark.slow
@pytest.mark.no_database
def test_regenerating_the_allowlist_finds_no_missing_pair() -> None:
    """Builds every detection architecture ultralytics ships and a trained checkpoint;
    an ultralytics upgrade that needs new pairs fails here with what to regenerate."""
    done = subprocess.run(
        [sys.executable, "-m", "workers.ml.gen_allowlist", "--check"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "allowlist complete" in done.stdout

"""Regenerates server/kit/checkpoint/allowlist.py from the installed ultralytics and torch.

    python -m workers.ml.gen_allowlist           # rewrite the allowlist
    python -m workers.ml.gen_allowlist --check   # exit 1 if a pair is missing

It builds every plain detection architecture shipped in ``ultralytics/cfg/models`` from
its YAML (smallest scale; heads ``Detect`` and ``v10Detect``; the open-vocabulary
World/YOLOE models and RT-DETR are not ones Oculab can train or serve), saves each the
way ``Model.save`` does, trains yolo11n for two tiny epochs to capture a trainer
checkpoint (optimizer, EMA, train args) and its stripped ``best.pt``, and records every
pickle global they reference: those torch's restricted unpickler resolves by itself
and those it must be told about (the model classes and layers).

Everything it loads it wrote itself a moment before, so it does not install the
restricted loader: a stale allowlist must not stop it from regenerating one.
"""

from __future__ import annotations

import argparse
import os
import pickletools
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ALLOWLIST_FILE = (
    Path(__file__).resolve().parents[2] / "server" / "kit" / "checkpoint" / "allowlist.py"
)
DETECT_HEADS = frozenset({"Detect", "v10Detect"})


def detection_configs() -> list[Path]:
    """The shipped model YAMLs whose head is a plain detection head."""
    import ultralytics
    import yaml

    root = Path(ultralytics.__file__).parent / "cfg" / "models"
    found = []
    for path in sorted(root.rglob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        head = (config or {}).get("head") or []
        if head and str(head[-1][2]) in DETECT_HEADS:
            found.append(path)
    return found


def write_tiny_dataset(root: Path, n_train: int = 4, n_val: int = 2, size: int = 64) -> Path:
    """A few synthetic shapes in YOLO layout; returns its data.yaml."""
    # Upward on purpose (tests/test_layers.py): this generator, a developer's tool,
    # trains on the demo's pictures; shapes.py itself imports nothing of ours.
    from server.demo import shapes

    for split, seeds in (("train", range(n_train)), ("val", range(n_train, n_train + n_val))):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            png, boxes = shapes.render(seed, size=size)
            (root / "images" / split / f"{seed}.png").write_bytes(png)
            (root / "labels" / split / f"{seed}.txt").write_text(
                "".join(
                    f"{b.class_id} {b.x + b.w / 2:.6f} {b.y + b.h / 2:.6f} {b.w:.6f} {b.h:.6f}\n"
                    for b in boxes
                )
            )
    data = root / "data.yaml"
    data.write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames: {shapes.CLASSES}\n"
    )
    return data


def train_tiny(workdir: Path, *, on_model_save: Callable[[Any], None]) -> Any:
    """Trains yolo11n for 2 epochs on a tiny dataset under ``workdir`` (runs/train), with
    ``on_model_save`` called after each checkpoint ultralytics writes; the YOLO model."""
    from ultralytics import YOLO

    data = write_tiny_dataset(workdir / "dataset")
    model = YOLO("yolo11n.yaml")
    model.add_callback("on_model_save", on_model_save)
    model.train(
        data=str(data),
        epochs=2,
        imgsz=32,
        batch=2,
        workers=0,
        device="cpu",
        amp=False,
        plots=False,
        project=str(workdir / "runs"),
        name="train",
        exist_ok=True,
        verbose=False,
    )
    return model


def sample_checkpoints(workdir: Path) -> Iterator[Path]:
    """Every checkpoint shape Oculab meets: built from YAML, trained, mid-training."""
    import torch
    from ultralytics import YOLO

    for config in detection_configs():
        # Building runs one forward pass to find the strides; without autograd it is
        # several times faster, and the pickled model is the same.
        with torch.no_grad():
            model = YOLO(str(config), task="detect")
        out = workdir / f"{config.stem}.pt"
        # Only the pickle matters here; the tensor bytes are skipped to save time.
        with torch.serialization.skip_data():
            model.save(str(out))
        yield out

    snapshots: list[Path] = []

    def keep_last(trainer: Any) -> None:  # last.pt as saved mid-training, before stripping
        copy = workdir / f"last-epoch{len(snapshots) + 1}.pt"
        shutil.copyfile(trainer.last, copy)
        snapshots.append(copy)

    model = train_tiny(workdir, on_model_save=keep_last)
    yield from snapshots
    yield Path(model.trainer.best)
    yield Path(model.trainer.last)
    yield release_style(Path(model.trainer.best), workdir / "release-style.pt")


def release_style(best: Path, out: Path) -> Path:
    """best.pt as ultralytics' published weights store it: metrics as numpy scalars."""
    import numpy as np
    import torch

    checkpoint = torch.load(best, map_location="cpu", weights_only=False)  # written above
    metrics = checkpoint.get("train_metrics") or {}
    checkpoint["train_metrics"] = {key: np.float64(value) for key, value in metrics.items()}
    torch.save(checkpoint, out)
    return out


def pickle_globals(path: Path) -> set[str]:
    """Every ``module.Name`` the checkpoint's pickle names (protocol 2 GLOBAL opcodes)."""
    with zipfile.ZipFile(path) as archive:
        (record,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        data = archive.read(record)
    found = set()
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            module, name = str(arg).split(" ", 1)
            found.add(f"{module}.{name}")
        elif opcode.name == "STACK_GLOBAL":
            raise ValueError(f"{path.name}: torch.save wrote protocol 4+; update this script")
    return found


def collect() -> tuple[set[str], set[str], set[str]]:
    """(globals torch resolves itself, model classes, data constructors): see render()."""
    import torch

    torch.serialization.clear_safe_globals()  # measure against torch's defaults only
    native: set[str] = set()
    unsafe: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="oculab-allowlist-") as tmp:
        for path in sample_checkpoints(Path(tmp)):
            needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
            unsafe |= needed
            native |= pickle_globals(path) - needed
    data = {name for name in unsafe if name.startswith("numpy.")}
    if "numpy._core.multiarray.scalar" in data:
        # Published weights were saved with numpy 1.x, which names the module numpy.core.
        data.add("numpy.core.multiarray.scalar")
    models = unsafe - data
    for name in models:
        _check_model_class(name)
    return native, models, data


def _check_model_class(name: str) -> None:
    """A model global must name exactly a layer or model class (or the args namespace)."""
    import importlib

    import torch
    from ultralytics.utils import IterableSimpleNamespace

    module, _, attr = name.rpartition(".")
    found = getattr(importlib.import_module(module), attr, None)
    if not (
        isinstance(found, type)
        and f"{found.__module__}.{found.__qualname__}" == name
        and (issubclass(found, torch.nn.Module) or found is IterableSimpleNamespace)
    ):
        raise SystemExit(f"{name} is not a model or layer class; review before allowing it")


def render(native: set[str], models: set[str], data: set[str]) -> str:
    import torch
    import ultralytics

    def frozenset_of(comment: str, name: str, names: set[str]) -> str:
        items = "".join(f'        "{n}",\n' for n in sorted(names))
        return f"{comment}{name}: frozenset[str] = frozenset(\n    {{\n{items}    }}\n)\n\n"

    versions = f"ultralytics {ultralytics.__version__} and torch {torch.__version__}"
    return (
        '"""What a YOLO detection checkpoint may reference when unpickled: exact\n'
        "``module.Name`` pairs, nothing matched by prefix.\n\n"
        "Generated by ``python -m workers.ml.gen_allowlist`` (do not edit by hand) from\n"
        f"{versions}. Plain data, so the API, which has no torch,\n"
        "scans uploads against it too.\n"
        '"""\n\n'
        f'GENERATED_WITH = {{"ultralytics": "{ultralytics.__version__}", '
        f'"torch": "{torch.__version__}"}}\n\n'
        + frozenset_of(
            "# Tensors, storages, containers: the restricted unpickler resolves these itself.\n",
            "TORCH_GLOBALS",
            native,
        )
        + frozenset_of(
            "# Model classes and layers: the worker registers exactly these with the unpickler,\n"
            "# as stand-ins that refuse to run a constructor.\n",
            "MODEL_GLOBALS",
            models,
        )
        + frozenset_of(
            "# Constructors of plain data (numpy scalars in published weights' metrics), which\n"
            "# the pickle calls; registered as they are.\n",
            "DATA_GLOBALS",
            data,
        )
        + "CHECKPOINT_GLOBALS: frozenset[str] = TORCH_GLOBALS | MODEL_GLOBALS | DATA_GLOBALS\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report missing pairs")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    config_dir = tempfile.mkdtemp(prefix="oculab-allowlist-yolo-")
    os.environ.setdefault("YOLO_CONFIG_DIR", config_dir)
    try:
        native, registered, data = collect()
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)
    if args.check:
        from server.kit.checkpoint import allowlist

        missing = sorted(
            (registered - allowlist.MODEL_GLOBALS)
            | (data - allowlist.DATA_GLOBALS)
            | (native - allowlist.CHECKPOINT_GLOBALS)
        )
        if missing:
            import torch
            import ultralytics

            print(
                f"{len(missing)} pickle globals that genuine checkpoints of ultralytics "
                f"{ultralytics.__version__} / torch {torch.__version__} reference are missing "
                "from server/kit/checkpoint/allowlist.py "
                f"(generated with {allowlist.GENERATED_WITH}):\n  "
                + "\n  ".join(missing)
                + "\nRegenerate it with `python -m workers.ml.gen_allowlist` and review the diff.",
                file=sys.stderr,
            )
            return 1
        print(f"allowlist complete: {len(native | registered | data)} pairs referenced")
        return 0
    ALLOWLIST_FILE.write_text(render(native, registered, data))
    print(
        f"wrote {ALLOWLIST_FILE} ({len(native)} torch, {len(registered)} model, "
        f"{len(data)} data globals)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

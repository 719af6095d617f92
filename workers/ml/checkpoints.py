"""The one way a worker process unpickles a checkpoint.

``install()`` replaces ``torch.load`` in the process, so ultralytics' own loads
(``YOLO(path)``, trainer resume, ``strip_optimizer``, final validation) come through
here as well as ours. Every load:

- reads the file once into memory, so what is checked is what is loaded;
- refuses archives that are not one plain ``data.pkl`` (server/kit/checkpoint/archive.py);
- lists the pickle's globals and refuses any that torch's restricted unpickler does not
  resolve by itself and that are not an exact pair in server/kit/checkpoint/allowlist.py;
- registers exactly those classes, then unpickles with ``weights_only=True``, whatever
  the caller asked for.

A genuine checkpoint creates its modules with NEWOBJ (no ``__init__``) and fills them
with BUILD. A crafted one could REDUCE on an allowed class instead and so run its
constructor (``DetectionModel(cfg)`` parses a config, may fetch files); the unpickler
therefore sees each class through a stand-in that refuses constructor arguments.

ultralytics' restricted mode (``ULTRALYTICS_SAFE_LOAD``) is switched on as well: its
model builder then refuses to ``eval()`` the ``activation`` string of a model config, which
a data-only checkpoint could otherwise smuggle in for the moment training rebuilds it.
"""

from __future__ import annotations

import copy
import importlib
import io
import os
import pickle
import threading
from pathlib import Path
from typing import IO, Any

from server.kit.checkpoint.allowlist import DATA_GLOBALS, MODEL_GLOBALS
from server.kit.checkpoint.archive import NOT_A_CHECKPOINT, layout_problem

# add_safe_globals is one process-wide set: loads take turns, each with exactly its own
# registrations, and the set is emptied again afterwards.
_lock = threading.RLock()
_originals: dict[str, Any] = {}
_resolved: dict[str, tuple[type, type]] = {}


class CheckpointRefused(pickle.UnpicklingError):
    """A checkpoint that will not be unpickled; the message is meant for the user.

    An UnpicklingError so that ultralytics reports it as a format problem rather than
    retrying the load another way.
    """


def install() -> None:
    """Forces every checkpoint load in this process through the restricted path."""
    with _lock:
        if _originals:
            return
        # ultralytics reads the flag when it is first imported...
        os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
        import torch
        import torch.serialization as serialization
        import ultralytics.utils
        from ultralytics.nn import tasks

        if not hasattr(serialization, "get_unsafe_globals_in_checkpoint"):
            raise RuntimeError("restricted checkpoint loading needs torch >= 2.6")
        if not hasattr(tasks, "_SafeLoad") or not hasattr(tasks, "SAFE_LOAD"):
            raise RuntimeError(
                "this ultralytics has no restricted mode (ULTRALYTICS_SAFE_LOAD); "
                "workers/ml/checkpoints.py must be revisited before upgrading"
            )
        # ...and may have been imported before us (standalone mode, tests).
        ultralytics.utils.SAFE_LOAD = True
        tasks.SAFE_LOAD = True
        if not tasks._SafeLoad.restricted():
            raise RuntimeError("ultralytics' restricted model building could not be enabled")
        _originals["load"] = serialization.load
        _originals["add_safe_globals"] = serialization.add_safe_globals
        torch.load = serialization.load = _torch_load
        # ultralytics registers its own, prefix-based allowlist before each load; only our
        # exact pairs may be registered, so its registrations are dropped.
        serialization.add_safe_globals = _ignore_registration
        # A dataset's labels.cache is a pickle too (np.load(allow_pickle=True)), written
        # next to the snapshot on shared storage: never read one, rebuild it instead.
        from ultralytics.data import dataset

        dataset.load_dataset_cache_file = _refuse_label_cache


def _refuse_label_cache(path: Path) -> dict[str, Any]:
    raise FileNotFoundError(f"label caches are rebuilt, never unpickled: {path}")


def resolve_allowlist() -> None:
    """Imports and resolves every allowlisted global now, rather than at the first load."""
    install()
    for name in sorted(MODEL_GLOBALS):
        _resolve(name)
    for name in sorted(DATA_GLOBALS):
        _data_entries(name)


def _ignore_registration(safe_globals: Any) -> None:
    return None


def _torch_load(
    f: Any,
    map_location: Any = None,
    pickle_module: Any = None,
    *,
    weights_only: bool | None = None,
    mmap: bool | None = None,
    **pickle_load_args: Any,
) -> Any:
    """Stands in for torch.load: restricted, whatever ``weights_only`` says."""
    if pickle_module is not None:
        raise CheckpointRefused("refused: checkpoints load only with torch's restricted unpickler")
    return load(f, map_location=map_location, **pickle_load_args)


def _read(source: Path | str | IO[bytes] | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, str | os.PathLike):
        return Path(source).read_bytes()
    return source.read()


def load(
    source: Path | str | IO[bytes] | bytes, map_location: Any = "cpu", **pickle_load_args: Any
) -> Any:
    """Unpickles a torch.save checkpoint with the exact allowlist; CheckpointRefused if not."""
    if not _originals:
        install()
    import torch

    data = _read(source)
    with _lock:
        try:
            needed = _vet(data)
            entries: list[tuple[Any, str]] = []
            for name in sorted(needed):
                if name in DATA_GLOBALS:
                    entries += _data_entries(name)
                    continue
                cls, stand_in = _resolve(name)
                # The stand-in answers the pickle's GLOBAL; the class itself is registered
                # under a name no GLOBAL can spell (module and name are each one line), so
                # that BUILD accepts its instances.
                entries += [(stand_in, name), (cls, _instances_only(name))]
            if entries:
                _originals["add_safe_globals"](entries)
            try:
                return _originals["load"](
                    io.BytesIO(data),
                    map_location=map_location,
                    weights_only=True,
                    **pickle_load_args,
                )
            except CheckpointRefused:
                raise
            except pickle.UnpicklingError as exc:
                raise CheckpointRefused(_unpickler_reason(exc)) from exc
        finally:
            torch.serialization.clear_safe_globals()


def vet(path: Path) -> None:
    """Checks a checkpoint file without unpickling it; CheckpointRefused if it fails."""
    if not _originals:
        install()
    import torch

    data = path.read_bytes()
    with _lock:
        try:
            _vet(data)
        finally:
            torch.serialization.clear_safe_globals()


def _vet(data: bytes) -> set[str]:
    """The archive's layout and its pickle's globals (static, nothing is unpickled):
    returns the allowlisted classes it needs registered. Call holding the lock."""
    import torch

    problem = layout_problem(io.BytesIO(data))
    if problem:
        raise CheckpointRefused(problem)
    # What counts as unsafe depends on what is registered: nothing, while we check.
    torch.serialization.clear_safe_globals()
    try:
        needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
    except pickle.UnpicklingError as exc:  # an opcode the restricted unpickler lacks
        raise CheckpointRefused(f"refused by the restricted unpickler: {_first_line(exc)}") from exc
    except (ValueError, RuntimeError, EOFError) as exc:
        raise CheckpointRefused(f"{NOT_A_CHECKPOINT}: {_first_line(exc)}") from exc
    foreign = sorted(needed - MODEL_GLOBALS - DATA_GLOBALS)
    if foreign:
        raise CheckpointRefused(
            "refused: the weights reference code a YOLO checkpoint does not need: "
            + ", ".join(foreign[:10])
        )
    return needed


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    # torch re-raises whatever stopped its unpickler (our stand-ins' refusals included)
    # inside a long advisory text, "from None"; the reason follows this label.
    text = str(exc)
    label = "WeightsUnpickler error:"
    if label in text:
        text = text.split(label, 1)[1]
    reason = text.strip().split("\n", 1)[0][:300]
    return (
        reason if reason.startswith("refused") else f"refused by the restricted unpickler: {reason}"
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0][:300]


def _instances_only(name: str) -> str:
    return f"{name}\n(instances only)"


def _data_entries(name: str) -> list[tuple[Any, str]]:
    """A data constructor (numpy's scalar and dtype), which the pickle may call."""
    import warnings

    import numpy as np

    module_name, _, attr = name.rpartition(".")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core is numpy 1.x's name
        found = getattr(importlib.import_module(module_name), attr)
    entries: list[tuple[Any, str]] = [(found, name)]
    if found is np.dtype:
        # A pickled dtype is built from its state; only plain numeric dtypes may be.
        for code in "?bBhHiIlLqQefdFD":
            kind = type(np.dtype(code))
            entries.append((kind, _instances_only(f"{kind.__module__}.{kind.__qualname__}")))
    return entries


def _resolve(name: str) -> tuple[type, type]:
    """The class an allowlisted name denotes, and its constructor-free stand-in."""
    if name in _resolved:
        return _resolved[name]
    if name not in MODEL_GLOBALS:
        raise CheckpointRefused(f"refused: {name} is not allowed in a checkpoint")
    module_name, _, attr = name.rpartition(".")
    cls = getattr(importlib.import_module(module_name), attr, None)
    # Exactly the class that name denotes: not a re-export, alias or other object.
    if not isinstance(cls, type) or f"{cls.__module__}.{cls.__qualname__}" != name:
        raise CheckpointRefused(f"refused: {name} is not a class in this installation")
    _resolved[name] = (cls, _constructor_free(cls, name))
    return _resolved[name]


def _constructor_free(cls: type, name: str) -> type:
    def __new__(stand_in: type, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            raise CheckpointRefused(
                f"refused: the checkpoint calls {name}(...) while loading; "
                "genuine checkpoints never run a constructor"
            )
        # An instance of the real class, whose __init__ Python will not call (it is not
        # an instance of the stand-in); BUILD then fills in its state.
        allocate: Any = cls.__new__
        return allocate(cls)

    return type(f"NoInit{cls.__name__}", (), {"__new__": __new__, "__module__": __name__})


def describe(exc: BaseException) -> str:
    """A readable reason: ours if a refusal is anywhere in the chain, else the error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, CheckpointRefused):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return f"not loadable YOLO weights: {exc.__class__.__name__}: {_first_line(exc)}"


def load_yolo(path: Path) -> Any:
    """An ultralytics YOLO from weights, loaded restricted; ValueError if unusable."""
    install()
    from ultralytics import YOLO

    try:
        # Our verdict first: ultralytics inspects the file itself before it calls
        # torch.load (and imports the layer modules it names), and its messages are
        # less precise. torch.load then checks again whatever it actually reads.
        vet(path)
        model = YOLO(str(path), task=None)
    except Exception as exc:  # ultralytics raises many kinds for a broken file
        raise ValueError(describe(exc)) from exc
    check_architecture(model.model)
    return model


def _layer_name(module: Any) -> str:
    """The class parse_model would build for a config's module name, as module.Name."""
    import torch
    from ultralytics.nn import tasks

    if not isinstance(module, str):
        return repr(module)
    if module.startswith("nn."):
        found = getattr(torch.nn, module[3:], None)
    elif module.startswith("torchvision."):
        found = None  # parse_model would import it from torchvision.ops
    else:
        found = vars(tasks).get(module)
    if isinstance(found, type):
        return f"{found.__module__}.{found.__qualname__}"
    return module


def check_architecture(model: Any, *, rebuild: bool = False) -> None:
    """Refuses a model config that names layers outside the allowlist or code to run.

    Training rebuilds the network from ``model.yaml``, a dict that came out of the
    checkpoint; the weights alone being safe says nothing about it. ``rebuild`` also
    builds it (restricted) now, so a config that cannot train fails at inspection.
    """
    from ultralytics.nn import tasks

    config = getattr(model, "yaml", None)
    if not isinstance(config, dict):
        raise ValueError("refused: the checkpoint has no model configuration")
    layers = list(config.get("backbone") or []) + list(config.get("head") or [])
    for layer in layers:
        if not isinstance(layer, list | tuple) or len(layer) != 4:
            raise ValueError(
                f"refused: malformed layer in the model configuration: {layer!r}"[:300]
            )
        name = _layer_name(layer[2])
        if name not in MODEL_GLOBALS:
            raise ValueError(
                f"refused: the model configuration builds a layer not allowed: {name}"[:300]
            )
    activation = config.get("activation")
    if activation is not None:
        try:
            built = tasks._SafeLoad.activation(str(activation))
        except TypeError as exc:
            raise ValueError(
                f"refused: the model configuration's activation is not a plain torch.nn "
                f"layer: {str(activation)[:120]!r}"
            ) from exc
        name = f"{type(built).__module__}.{type(built).__qualname__}"
        if name not in MODEL_GLOBALS:
            raise ValueError(
                f"refused: the model configuration's activation is not allowed: {name}"
            )
    if rebuild:
        import torch

        try:
            with torch.no_grad():
                tasks.DetectionModel(cfg=copy.deepcopy(config), verbose=False)
        except Exception as exc:
            raise ValueError(
                f"refused: the model configuration does not build: {_first_line(exc)}"
            ) from exc

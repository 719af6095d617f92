"""Refuses weights files that would run code when unpickled (CVE-2025-5173 and kin).

Checked before anything is stored, in the API process, without unpickling: picklescan
lists every global the pickles reference. A file passes only if picklescan finds
nothing dangerous and every global comes from the modules a YOLO checkpoint is made of.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from picklescan.scanner import SafetyLevel, scan_file_path

from server.kit.errors import Unprocessable

# What a torch/ultralytics checkpoint legitimately references: layer classes, tensor
# rebuilders, storages, dtypes and a few containers. Notably absent: anything that can
# import, download, open files or start processes (builtins.getattr, os, subprocess,
# torch.hub, ultralytics.utils.checks, ...), whatever picklescan itself thinks of them.
_ALLOWED_PREFIXES = (
    "torch.nn.",
    "torch._utils",
    "ultralytics.nn.",
    "numpy.core.multiarray",
    "numpy._core.multiarray",
)
_ALLOWED_EXACT = {
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "dtype"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("_codecs", "encode"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("argparse", "Namespace"),
    ("types", "SimpleNamespace"),
    ("ultralytics.utils", "IterableSimpleNamespace"),
}
_TORCH_DTYPES = {
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "half",
    "float",
    "double",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
    "long",
    "int",
}
_BUILTINS = {
    "set",
    "frozenset",
    "dict",
    "list",
    "tuple",
    "slice",
    "range",
    "bytearray",
    "complex",
    "float",
    "int",
    "bool",
    "str",
    "bytes",
}


def _allowed(module: str, name: str) -> bool:
    if module in ("builtins", "__builtin__"):
        return name in _BUILTINS
    if module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPES):
        return True
    if (module, name) in _ALLOWED_EXACT:
        return True
    return any(module.startswith(prefix) for prefix in _ALLOWED_PREFIXES)


def check_weights(path: Path) -> None:
    """Raises Unprocessable unless the file is a PyTorch checkpoint with safe pickles."""
    result = scan_file_path(str(path))
    if result.scan_err or result.scanned_files == 0:
        raise Unprocessable("not a PyTorch weights file (no pickle could be read from it)")
    dangerous = [g for g in result.globals if g.safety == SafetyLevel.Dangerous]
    if result.infected_files or dangerous:
        names = ", ".join(sorted({f"{g.module}.{g.name}" for g in dangerous})) or "unknown"
        raise Unprocessable(f"refused: the weights would run code when loaded ({names})")
    foreign = sorted(
        {f"{g.module}.{g.name}" for g in result.globals if not _allowed(g.module, g.name)}
    )
    if foreign:
        raise Unprocessable(
            "refused: the weights reference code a YOLO checkpoint does not need: "
            + ", ".join(foreign[:10])
        )

    if not _is_torch_zip(path):
        raise Unprocessable(
            "not a PyTorch weights file (expected the zip checkpoint format torch.save writes)"
        )


def _is_torch_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False

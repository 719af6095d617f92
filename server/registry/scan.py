"""Refuses weights files that would run code when unpickled (CVE-2025-5173 and kin).

The first of two gates, in the API process before anything is stored, without
unpickling (the API has no torch): the file must be a plain torch.save archive (one
``data.pkl``, see archive.py), and every global its pickle names must be an exact
``module.Name`` pair of the generated allowlist (allowlist.py). picklescan lists the
globals. The second gate is the worker's restricted loader (workers/ml/checkpoints.py),
which checks the same pairs again at every load.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from picklescan.scanner import SafetyLevel, scan_file_path

from server.kit.checkpoint.allowlist import CHECKPOINT_GLOBALS
from server.kit.checkpoint.archive import NOT_A_CHECKPOINT, layout_problem
from server.kit.errors import Unprocessable


def check_weights(path: Path) -> None:
    """Raises Unprocessable unless the file is a PyTorch checkpoint with safe pickles."""
    try:
        result = scan_file_path(str(path))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        # picklescan opens a file named *.pt as a zip and lets a broken one escape.
        raise Unprocessable(layout_problem(path) or NOT_A_CHECKPOINT) from exc
    if result.scan_err or result.scanned_files == 0:
        raise Unprocessable("not a PyTorch weights file (no pickle could be read from it)")
    dangerous = [g for g in result.globals if g.safety == SafetyLevel.Dangerous]
    if result.infected_files or dangerous:
        names = ", ".join(sorted({f"{g.module}.{g.name}" for g in dangerous})) or "unknown"
        raise Unprocessable(f"refused: the weights would run code when loaded ({names})")
    foreign = sorted(
        {
            f"{g.module}.{g.name}"
            for g in result.globals
            if f"{g.module}.{g.name}" not in CHECKPOINT_GLOBALS
        }
    )
    if foreign:
        raise Unprocessable(
            "refused: the weights reference code a YOLO checkpoint does not need: "
            + ", ".join(foreign[:10])
        )
    problem = layout_problem(path)
    if problem:
        raise Unprocessable(problem)

"""The shape of a torch.save zip that we are willing to unpickle at all.

Both gates use this: the API before anything is stored, and the worker's loader before
each load. Pure zipfile, no torch, so the API can run it.

torch reads one record, ``<root>/data.pkl``; scanners may read another. A zip with a
second pickle (even a duplicate ``data.pkl`` entry, which zip tools resolve
differently), or with records under several top-level directories, is the classic way
to show a scanner one pickle and the loader another, so such archives are refused
rather than interpreted.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

NOT_A_CHECKPOINT = (
    "not a PyTorch weights file (expected the zip checkpoint format torch.save writes)"
)


def layout_problem(source: Path | IO[bytes]) -> str | None:
    """Why this is not a plain torch.save archive, or None when it is one."""
    try:
        with zipfile.ZipFile(source) as archive:
            names = [info.filename for info in archive.infolist()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return NOT_A_CHECKPOINT
    if len(set(names)) != len(names):
        return "refused: the checkpoint archive repeats an entry name"
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        return "refused: the checkpoint archive has several top-level record directories"
    (root,) = roots
    pickles = [name for name in names if name.lower().endswith((".pkl", ".pickle"))]
    if pickles != [f"{root}/data.pkl"]:
        if not pickles:
            return NOT_A_CHECKPOINT
        return (
            "refused: a checkpoint holds exactly one pickle, data.pkl; this one holds "
            + ", ".join(sorted(pickles)[:5])
        )
    return None

"""tmp/ holds what lives for a request or a job's step; a process killed mid-way leaves
it behind, and the next start of any process that writes files removes what nobody has
touched for a day, never what is in use."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from server.kit.storage import STALE_TEMP_SECONDS, Storage

DAY_AGO = time.time() - STALE_TEMP_SECONDS - 3600


def _age(path: Path, mtime: float = DAY_AGO) -> Path:
    os.utime(path, (mtime, mtime))
    return path


def _leftovers(tmp: Path) -> dict[str, Path]:
    """One of each kind of entry, stale or in use."""
    tmp.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for name in ("old.upload", "new.upload", "old.images.json"):
        (tmp / name).write_bytes(b"x" * 10)
        made[name] = tmp / name
    _age(made["old.upload"])
    _age(made["old.images.json"])
    # A snapshot abandoned mid-build, and one being built: its top folder is old, but
    # links are being added to a folder inside it.
    for name in ("snapshot-old", "snapshot-busy"):
        labels = tmp / name / "labels" / "train"
        labels.mkdir(parents=True)
        (labels / "1.txt").write_text("0 0.5 0.5 0.1 0.1\n")
        made[name] = tmp / name
    for folder in sorted((tmp / "snapshot-old").rglob("*"), reverse=True):
        _age(folder)
    _age(made["snapshot-old"])
    _age(made["snapshot-busy"])
    _age(made["snapshot-busy"] / "labels")
    return made


@pytest.mark.no_database
def test_sweep_removes_only_what_nobody_touched_for_a_day(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.ensure_layout()
    made = _leftovers(storage.tmp_dir)

    assert storage.sweep_temp() == 3
    left = sorted(p.name for p in storage.tmp_dir.iterdir())
    assert left == ["new.upload", "snapshot-busy"]
    assert (made["snapshot-busy"] / "labels" / "train" / "1.txt").exists()
    assert storage.sweep_temp() == 0  # nothing else is stale


@pytest.mark.no_database
def test_sweep_of_a_missing_tmp_is_a_no_op_and_the_age_is_the_callers(tmp_path: Path) -> None:
    assert Storage(tmp_path / "never-made").sweep_temp() == 0

    # A shorter age than the default, as a caller may ask: fresh files go too.
    storage = Storage(tmp_path / "data")
    storage.ensure_layout()
    (storage.tmp_dir / "fresh.upload").touch()
    (storage.tmp_dir / "snapshot-new").mkdir()
    assert storage.sweep_temp(older_than=-1) == 2
    assert list(storage.tmp_dir.iterdir()) == []


def test_an_app_start_sweeps_the_stale_temp_files(
    data_dir: Path, make_app: Callable[..., FastAPI]
) -> None:
    made = _leftovers(data_dir / "tmp")
    make_app()
    assert not made["old.upload"].exists()
    assert not made["snapshot-old"].exists()
    assert made["new.upload"].exists()
    assert made["snapshot-busy"].exists()

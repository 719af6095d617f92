"""Job kinds: the plain functions that do a job's work, and where they run.

Each domain lists its kinds in its ``tasks.py`` as ``JOB_KINDS``; plugins named in
``OCULAB_JOB_MODULES`` do the same. Nothing here knows about Dramatiq.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from server.jobs.context import JobContext
from server.settings import Settings

Handler = Callable[[JobContext], dict[str, Any] | None]

# Domains whose tasks.py define the built-in kinds.
_BUILTIN_MODULES = (
    "server.jobs.tasks",
    "server.datasets.tasks",
    "server.registry.tasks",
    "server.training.tasks",
    "server.autolabel.tasks",
)


@dataclass(frozen=True)
class JobKind:
    name: str  # "domain.verb"; also the Dramatiq actor name
    handler: Handler
    runs_on: Literal["cpu", "gpu"]  # which default pool takes it
    time_limit_hours: float | None = None  # None: the pool type's default


def load_kinds(settings: Settings) -> dict[str, JobKind]:
    kinds: dict[str, JobKind] = {}
    for module_name in (*_BUILTIN_MODULES, *settings.job_modules):
        module = importlib.import_module(module_name)
        for kind in getattr(module, "JOB_KINDS", ()):
            if kind.name in kinds:
                raise ValueError(f"job kind {kind.name!r} is defined twice")
            kinds[kind.name] = kind
    return kinds


def default_pool(settings: Settings, kind: JobKind) -> str:
    return settings.cpu_pool if kind.runs_on == "cpu" else settings.gpu_pool


def time_limit_ms(settings: Settings, kind: JobKind, pool: str) -> int:
    hours = kind.time_limit_hours
    if hours is None:
        hours = (
            settings.gpu_job_time_limit_hours
            if settings.is_gpu_pool(pool)
            else settings.cpu_job_time_limit_hours
        )
    return int(hours * 3600 * 1000)

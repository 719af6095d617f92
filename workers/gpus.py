"""GPU discovery and telemetry (NVML via nvidia-ml-py when present)."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def _nvml() -> Any | None:
    try:
        import pynvml  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def _visible_indices(count: int) -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    indices: list[int] = []
    for part in visible.split(","):
        part = part.strip()
        if part.isdigit() and int(part) < count:
            indices.append(int(part))
    return indices


def detect() -> list[int]:
    """Indices of the GPUs this process may use (empty: CPU only)."""
    nvml = _nvml()
    if nvml is not None:
        try:
            return _visible_indices(int(nvml.nvmlDeviceGetCount()))
        except Exception:
            log.warning("NVML device count failed", exc_info=True)
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]

        if torch.cuda.is_available():
            return list(range(torch.cuda.device_count()))
    except ImportError:
        pass
    return []


def telemetry(indices: list[int]) -> list[dict[str, Any]]:
    """Name, utilisation (0..1) and memory (bytes) per GPU; names only without NVML."""
    nvml = _nvml()
    report: list[dict[str, Any]] = []
    for index in indices:
        entry: dict[str, Any] = {
            "index": index,
            "name": "",
            "utilization": None,
            "memory_used": None,
            "memory_total": None,
        }
        if nvml is not None:
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = nvml.nvmlDeviceGetName(handle)
                entry["name"] = name.decode() if isinstance(name, bytes) else str(name)
                entry["utilization"] = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                entry["memory_used"] = int(memory.used)
                entry["memory_total"] = int(memory.total)
            except Exception:
                log.debug("NVML query failed for GPU %s", index, exc_info=True)
        report.append(entry)
    return report

"""GPU slots: which devices this process may use, how a child process and torch in this
process name each of them, and how busy each one is (NVML, through nvidia-ml-py).

One numbering. A slot is a CUDA device this process may use: a whole GPU, or a MIG
instance. Its number is the torch ordinal in this process (``cuda:N``); a child process
is given the device's UUID (``GPU-…`` or ``MIG-…``) in ``CUDA_VISIBLE_DEVICES``, which
names the same card whatever order or form the parent's variable used; telemetry finds
the device by that UUID. For the ordinal to mean what NVML means, CUDA must enumerate
in PCI bus order as NVML does (``CUDA_DEVICE_ORDER=PCI_BUS_ID``, set here before CUDA
starts); otherwise a machine with mixed GPU models numbers them fastest first.

The API process never imports torch: without NVML, the count comes from a child.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_SECONDS = 120


class GpuUnusable(Exception):
    """A GPU pool cannot use the GPUs it was given: the worker must not start."""


@dataclass(frozen=True)
class Device:
    """One CUDA device as NVML knows it: a whole GPU, or a MIG instance of one."""

    uuid: str  # "GPU-…" or "MIG-…"
    name: str
    nvml_index: int  # the physical GPU's NVML index (PCI bus order)
    gpu_uuid: str  # the physical GPU's UUID (its own for a whole GPU)
    mig_index: int | None = None  # the instance's place on its GPU; None: a whole GPU

    @property
    def is_mig(self) -> bool:
        return self.mig_index is not None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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


def devices(nvml: Any) -> list[Device]:
    """Every CUDA device on the machine in NVML's (PCI bus) order; a GPU in MIG mode is
    its instances, as CUDA sees it."""
    found: list[Device] = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = _text(nvml.nvmlDeviceGetName(handle))
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except Exception:
            current = 0  # MIG not supported: a whole GPU
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        if not current:
            found.append(Device(uuid, name, index, uuid))
            continue
        for place in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, place)
            except nvml.NVMLError:  # no instance in this place
                continue
            found.append(
                Device(
                    _text(nvml.nvmlDeviceGetUUID(mig)),
                    _text(nvml.nvmlDeviceGetName(mig)),
                    index,
                    uuid,
                    place,
                )
            )
    return found


def visible(all_devices: Sequence[Device], cuda_visible_devices: str | None) -> list[Device]:
    """The devices CUDA gives a process under ``CUDA_VISIBLE_DEVICES``, in its order.

    CUDA's rules: unset means all; each entry is an index into the whole GPUs (PCI
    order), a GPU UUID or a MIG UUID, either possibly shortened to a unique prefix; the
    list ends at the first entry that names nothing. A GPU in MIG mode named by index or
    UUID gives its instances."""
    if cuda_visible_devices is None:
        return list(all_devices)
    gpus = sorted({d.nvml_index for d in all_devices})
    chosen: list[Device] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        matches: list[Device]
        if entry.isdigit():
            place = int(entry)
            matches = (
                [d for d in all_devices if d.nvml_index == gpus[place]] if place < len(gpus) else []
            )
        elif entry.startswith("MIG-"):
            matches = [d for d in all_devices if d.is_mig and d.uuid.startswith(entry)]
        elif entry.startswith("GPU-"):
            # A GPU in MIG mode named by its own UUID gives its instances.
            matches = [d for d in all_devices if d.gpu_uuid.startswith(entry)]
        else:
            matches = []
        if not matches or len({d.nvml_index for d in matches}) > 1:
            break  # unknown or ambiguous: CUDA stops here
        chosen.extend(d for d in matches if d not in chosen)
    return chosen


@dataclass(frozen=True)
class Slot:
    """A device this process may run jobs on; ``ordinal`` is its ``cuda:N`` here."""

    ordinal: int
    device: Device | None  # None when NVML is missing: only the ordinal is known
    child_visible: str  # CUDA_VISIBLE_DEVICES for a child that must see only this device


def plan(all_devices: Sequence[Device], cuda_visible_devices: str | None) -> list[Slot]:
    """The slots of a process: each visible device once, numbered as torch numbers them.

    A CUDA process can use one MIG instance only: more than one visible is refused, for
    the jobs that run in this process (auto-label, predict) could not reach the others."""
    shown = visible(all_devices, cuda_visible_devices)
    migs = [d for d in shown if d.is_mig]
    if len(migs) > 1:
        raise GpuUnusable(
            f"this worker sees {len(migs)} MIG instances, but a CUDA process can use only "
            "one: run one worker per MIG instance (give each worker pod one, e.g. "
            "nvidia.com/mig-1g.10gb: 1)"
        )
    return [Slot(i, d, d.uuid) for i, d in enumerate(shown)]


def _gpu_hardware() -> bool:
    """Whether this machine may have a GPU that NVML cannot report (no NVML library, a
    ROCm build of torch): only then is a torch child worth its seconds."""
    return any(glob.glob(pattern) for pattern in ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg"))


def _tokens(cuda_visible_devices: str | None, count: int) -> list[str]:
    """Without NVML: what names each of ``count`` devices for a child (the parent's own
    entries when it has a list, else the indices)."""
    if cuda_visible_devices is None:
        return [str(i) for i in range(count)]
    entries = [e.strip() for e in cuda_visible_devices.split(",") if e.strip()]
    return entries[:count]


def pin_device_order() -> None:
    """Makes CUDA in this process (and its children) number GPUs as NVML does. Must run
    before CUDA starts; a process that set another order is told why it is overridden."""
    order = os.environ.get("CUDA_DEVICE_ORDER")
    if order not in (None, "PCI_BUS_ID"):
        log.warning("CUDA_DEVICE_ORDER=%s replaced by PCI_BUS_ID: slots follow NVML", order)
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"


def torch_view(env: dict[str, str] | None = None) -> dict[str, Any]:
    """What torch sees under ``env`` (this process's by default), asked of a child
    process so that this one never loads torch: ``{"torch": version or None, "cuda":
    its CUDA version, "count": devices it can use, "error": why not}``."""
    code = (
        "import json\n"
        "try:\n"
        "    import torch\n"
        "except ImportError as exc:\n"
        "    print(json.dumps({'torch': None, 'cuda': None, 'count': 0, 'error': str(exc)}))\n"
        "else:\n"
        "    try:\n"
        "        count, error = torch.cuda.device_count(), None\n"
        "        if count:\n"
        "            torch.zeros(1, device='cuda:0')\n"
        "    except Exception as exc:\n"
        "        count, error = 0, str(exc)\n"
        "    print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda,"
        " 'count': count, 'error': error}))\n"
    )
    try:
        run = subprocess.run(  # noqa: S603 - our interpreter, our code
            [sys.executable, "-c", code],
            env=env if env is not None else dict(os.environ),
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_SECONDS,
            check=False,
        )
        lines = run.stdout.strip().splitlines()
        view: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        return {"torch": None, "cuda": None, "count": 0, "error": str(exc)}
    return view or {"torch": None, "cuda": None, "count": 0, "error": run.stderr[-500:]}


def slots() -> list[Slot]:
    """This process's GPU slots (empty: CPU only)."""
    pin_device_order()
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    nvml = _nvml()
    if nvml is not None:
        try:
            return plan(devices(nvml), cvd)
        except GpuUnusable:
            raise
        except Exception:
            log.warning("NVML could not list the GPUs; asking torch", exc_info=True)
    if (cvd is not None and not cvd.strip()) or not _gpu_hardware():
        return []
    count = int(torch_view().get("count") or 0)
    return [Slot(i, None, token) for i, token in enumerate(_tokens(cvd, count))]


def detect() -> list[int]:
    """The ordinals of this process's GPU slots: ``cuda:N`` for each N (empty: CPU)."""
    return [slot.ordinal for slot in slots()]


def visible_devices_for(ordinal: int | None) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a child that must use only slot ``ordinal`` of this
    process ("" for none: the CPU)."""
    if ordinal is None:
        return ""
    for slot in slots():
        if slot.ordinal == ordinal:
            return slot.child_visible
    raise GpuUnusable(f"this process has no GPU slot {ordinal}")


def driver_version() -> str | None:
    """The NVIDIA driver's version as NVML reports it; None without NVML."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        return _text(nvml.nvmlSystemGetDriverVersion())
    except Exception:
        log.debug("NVML driver query failed", exc_info=True)
        return None


def versions(view: dict[str, Any]) -> dict[str, str | None]:
    """``{"torch", "cuda", "driver"}`` from a ``torch_view`` and NVML, for the logs and
    the admin queue."""
    torch, cuda = view.get("torch"), view.get("cuda")
    return {
        "torch": str(torch) if torch else None,
        "cuda": str(cuda) if cuda else None,
        "driver": driver_version(),
    }


def require_usable(found: list[Slot]) -> dict[str, Any] | None:
    """A GPU pool must not run on the CPU because torch cannot reach the GPUs NVML lists
    (a CUDA build newer than the driver, a missing ``oculab[ml]``): refuse with why.
    Returns the ``torch_view`` it judged by (None: no GPU, nothing asked)."""
    if not found:
        return None
    view = torch_view()
    if int(view.get("count") or 0) >= len(found) and not view.get("error"):
        return view
    nvml = _nvml()
    driver = cuda = "unknown"
    if nvml is not None:
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
            version = int(nvml.nvmlSystemGetCudaDriverVersion())
            cuda = f"{version // 1000}.{version % 1000 // 10}"
        except Exception:
            log.debug("NVML driver query failed", exc_info=True)
    if view.get("torch") is None:
        problem = f"torch is not installed ({view.get('error')}): install oculab[ml]"
    else:
        problem = (
            f"torch {view['torch']} (built for CUDA {view.get('cuda')}) can use "
            f"{view.get('count', 0)} of them ({view.get('error') or 'no error given'})"
        )
    raise GpuUnusable(
        f"NVML lists {len(found)} GPU slot(s) (driver {driver}, CUDA up to {cuda}) but "
        f"{problem}; a GPU pool does not fall back to the CPU. Install a torch build for "
        "this driver (docs/install.md, GPUs) or run this pool on a machine without GPUs."
    )


def telemetry(indices: list[int]) -> list[dict[str, Any]]:
    """Per slot: name, UUID, utilisation (0..1) and memory (bytes), each as far as NVML
    gives it (a MIG instance reports memory but not utilisation); names only without
    NVML."""
    nvml = _nvml()
    by_ordinal: dict[int, Slot] = {}
    if nvml is not None:
        try:
            by_ordinal = {
                s.ordinal: s for s in plan(devices(nvml), os.environ.get("CUDA_VISIBLE_DEVICES"))
            }
        except Exception:
            log.debug("NVML could not list the GPUs", exc_info=True)
    report: list[dict[str, Any]] = []
    for index in indices:
        entry: dict[str, Any] = {
            "index": index,
            "name": "",
            "uuid": None,
            "mig": False,
            "utilization": None,
            "memory_used": None,
            "memory_total": None,
        }
        slot = by_ordinal.get(index)
        if nvml is not None and slot is not None and slot.device is not None:
            entry.update(name=slot.device.name, uuid=slot.device.uuid, mig=slot.device.is_mig)
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(slot.device.uuid)
            except Exception:
                log.debug("NVML has no handle for %s", slot.device.uuid, exc_info=True)
                handle = None
            if handle is not None:
                try:
                    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                    entry["memory_used"] = int(memory.used)
                    entry["memory_total"] = int(memory.total)
                except Exception:
                    log.debug("NVML memory query failed for %s", slot.device.uuid, exc_info=True)
                # MIG instances do not report it: their memory still counts.
                with contextlib.suppress(Exception):
                    entry["utilization"] = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100
        report.append(entry)
    return report

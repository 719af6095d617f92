"""GPU slots on the CPU: NVML is faked at its boundary (the ``pynvml`` module), torch is
the real one (which sees no GPU here). One numbering: a slot's ordinal is torch's
``cuda:N`` in the worker, a child gets the slot's UUID, telemetry finds it by UUID."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from fastapi import FastAPI

from workers import gpus
from workers.gpus import Device, GpuUnusable
from workers.runner import Worker


class NVMLError(Exception):
    pass


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H200"
    mig: list[str | None] = field(default_factory=list)  # None: an empty MIG place
    mig_supported: bool = True


@dataclass
class Memory:
    used: int
    total: int


@dataclass
class Utilization:
    gpu: int


class FakeNvml:
    """What pynvml answers on a machine with these GPUs (index order = PCI order)."""

    NVMLError = NVMLError

    def __init__(self, *cards: FakeGpu) -> None:
        self.cards = list(cards)
        self.handles: dict[str, tuple[int, int | None]] = {}

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[int, int | None]:
        return (index, None)

    def nvmlDeviceGetName(self, handle: tuple[int, int | None]) -> bytes:
        card = self.cards[handle[0]]
        return (card.name if handle[1] is None else f"{card.name} MIG 1g.18gb").encode()

    def nvmlDeviceGetUUID(self, handle: tuple[int, int | None]) -> str:
        card = self.cards[handle[0]]
        return card.uuid if handle[1] is None else str(card.mig[handle[1]])

    def nvmlDeviceGetMigMode(self, handle: tuple[int, int | None]) -> tuple[int, int]:
        card = self.cards[handle[0]]
        if not card.mig_supported:
            raise NVMLError("Not Supported")
        return (1, 1) if card.mig else (0, 0)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: tuple[int, int | None]) -> int:
        return len(self.cards[handle[0]].mig)

    def nvmlDeviceGetMigDeviceHandleByIndex(
        self, handle: tuple[int, int | None], place: int
    ) -> tuple[int, int]:
        if self.cards[handle[0]].mig[place] is None:
            raise NVMLError("Not Found")
        return (handle[0], place)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> tuple[int, int | None]:
        for index, card in enumerate(self.cards):
            if card.uuid == uuid:
                return (index, None)
            if uuid in card.mig:
                return (index, card.mig.index(uuid))
        raise NVMLError("Not Found")

    def nvmlDeviceGetMemoryInfo(self, handle: tuple[int, int | None]) -> Memory:
        gib = 1 << 30
        return Memory(used=(handle[0] + 1) * gib, total=(141 if handle[1] is None else 18) * gib)

    def nvmlDeviceGetUtilizationRates(self, handle: tuple[int, int | None]) -> Utilization:
        if handle[1] is not None:
            raise NVMLError("Not Supported")  # as NVML answers for a MIG instance
        return Utilization(gpu=10 * (handle[0] + 1))

    def nvmlSystemGetDriverVersion(self) -> str:
        return "535.183.01"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12020


FOUR = [FakeGpu(f"GPU-{n}aaaaaaa-0000-0000-0000-00000000000{n}") for n in range(4)]
MIG_CARD = FakeGpu(
    "GPU-9mig0000-0000-0000-0000-000000000009",
    mig=["MIG-11111111-0000-0000-0000-000000000001", None, "MIG-22222222-0000-0000-0000-2"],
)


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeNvml]:
    """Installs a fake pynvml for this process and sets CUDA_VISIBLE_DEVICES."""

    def install(*cards: FakeGpu, visible: str | None = None) -> FakeNvml:
        nvml = FakeNvml(*cards)
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
        return nvml

    return install


def uuids(found: list[Device]) -> list[str]:
    return [d.uuid for d in found]


def test_devices_are_whole_gpus_in_pci_order_and_mig_instances() -> None:
    nvml = FakeNvml(FOUR[0], MIG_CARD, FakeGpu("GPU-old", mig_supported=False))
    found = gpus.devices(nvml)
    assert uuids(found) == [FOUR[0].uuid, MIG_CARD.mig[0], MIG_CARD.mig[2], "GPU-old"]
    assert [(d.nvml_index, d.mig_index) for d in found] == [(0, None), (1, 0), (1, 2), (2, None)]
    assert found[1].gpu_uuid == MIG_CARD.uuid
    assert found[1].name.endswith("MIG 1g.18gb")


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, [0, 1, 2, 3]),
        ("", []),
        ("2,3", [2, 3]),  # was cuda:2 and cuda:3 in a process that has cuda:0 and cuda:1
        ("1,0", [1, 0]),  # reversed: slot 0 is the second GPU
        (" 3 , 1 ", [3, 1]),
        ("0,7,1", [0]),  # CUDA stops at the first entry that names nothing
        ("0,bogus,1", [0]),
        (FOUR[2].uuid, [2]),
        ("GPU-3aaa", [3]),  # a unique prefix
        ("GPU-", []),  # ambiguous: stops
        (f"{FOUR[1].uuid},{FOUR[0].uuid}", [1, 0]),
        ("1,1", [1]),
    ],
)
def test_visible_devices_follow_cuda_rules(visible: str | None, expected: list[int]) -> None:
    found = gpus.devices(FakeNvml(*FOUR))
    assert uuids(gpus.visible(found, visible)) == [FOUR[i].uuid for i in expected]


def test_mig_instances_by_uuid_and_by_their_gpu() -> None:
    found = gpus.devices(FakeNvml(FOUR[0], MIG_CARD))
    assert uuids(gpus.visible(found, "MIG-2222")) == [MIG_CARD.mig[2]]
    assert uuids(gpus.visible(found, MIG_CARD.uuid)) == [MIG_CARD.mig[0], MIG_CARD.mig[2]]
    assert uuids(gpus.visible(found, "1")) == [MIG_CARD.mig[0], MIG_CARD.mig[2]]


def test_a_process_may_use_one_mig_instance_only() -> None:
    found = gpus.devices(FakeNvml(MIG_CARD))
    [slot] = gpus.plan(found, MIG_CARD.mig[0])
    assert (slot.ordinal, slot.child_visible) == (0, MIG_CARD.mig[0])
    with pytest.raises(GpuUnusable, match="one worker per MIG instance"):
        gpus.plan(found, None)


def test_slots_number_as_torch_and_name_the_gpu_for_children(
    machine: Callable[..., FakeNvml],
) -> None:
    machine(*FOUR, visible="2,3")
    assert gpus.detect() == [0, 1]
    # A child of slot 0 is given GPU 2 by its UUID, not "0" (another card) or "2".
    assert gpus.visible_devices_for(0) == FOUR[2].uuid
    assert gpus.visible_devices_for(1) == FOUR[3].uuid
    assert gpus.visible_devices_for(None) == ""
    with pytest.raises(GpuUnusable):
        gpus.visible_devices_for(2)
    import os

    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_telemetry_finds_each_slot_by_uuid_and_keeps_mig_memory(
    machine: Callable[..., FakeNvml],
) -> None:
    machine(FOUR[0], FOUR[1], visible="1,0")
    first, second = gpus.telemetry([0, 1])
    assert (first["uuid"], first["utilization"], first["memory_used"]) == (
        FOUR[1].uuid,
        0.2,
        2 << 30,
    )
    assert (second["uuid"], second["utilization"]) == (FOUR[0].uuid, 0.1)

    machine(MIG_CARD, visible=MIG_CARD.mig[2])
    [mig] = gpus.telemetry([0])
    assert mig["mig"] is True
    assert mig["name"].endswith("MIG 1g.18gb")
    assert mig["utilization"] is None  # NVML does not report it for an instance
    assert (mig["memory_used"], mig["memory_total"]) == (1 << 30, 18 << 30)


def test_a_gpu_pool_whose_torch_cannot_use_the_gpus_refuses_to_start(
    machine: Callable[..., FakeNvml], make_app: Callable[..., FastAPI]
) -> None:
    # NVML lists a GPU; the real torch here cannot use it (as a CUDA 13 build on a 535
    # driver could not): the worker must not run the GPU pool on the CPU.
    machine(FOUR[0])
    app = make_app()
    with pytest.raises(GpuUnusable) as refused:
        Worker(app.state.settings, StubBroker(), app.state.sessionmaker, app.state.storage, ["gpu"])
    message = str(refused.value)
    assert "NVML lists 1 GPU slot(s) (driver 535.183.01, CUDA up to 12.2)" in message
    assert "torch 2." in message
    assert "does not fall back to the CPU" in message


def test_a_gpu_pool_has_one_slot_per_gpu(make_app: Callable[..., FastAPI]) -> None:
    app = make_app()

    def worker(**kwargs: Any) -> Worker:
        return Worker(
            app.state.settings,
            StubBroker(),
            app.state.sessionmaker,
            app.state.storage,
            ["gpu"],
            **kwargs,
        )

    assert worker(gpu_indices=[0, 1]).slots == 2
    with pytest.raises(GpuUnusable, match="one job per GPU"):
        worker(gpu_indices=[0], slots=3)
    # No GPU at all: the pool runs on the CPU, with the slots it was given.
    assert worker(gpu_indices=[], slots=3).slots == 3


def test_finding_no_gpu_never_loads_torch_in_the_process() -> None:
    code = (
        "import sys; from workers import gpus; "
        "print(gpus.detect(), gpus.telemetry([]), 'torch' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert run.stdout.split() == ["[]", "[]", "False"]

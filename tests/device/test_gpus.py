"""GPU discovery never crashes and never probes CUDA or NVML on a machine without a GPU.

NVML is replaced by a fake module, so the MIG and matching logic runs on CPU-only CI.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

from autoq.device import _gpu
from autoq.device._gpu import collect_gpus

GIB = 2**30


class FakeNVMLError(Exception):
    pass


class FakeNotFound(FakeNVMLError):
    pass


class FakeNotSupported(FakeNVMLError):
    pass


@dataclass
class FakeGpu:
    uuid: str
    name: str
    memory: int
    mig: str | list[FakeGpu | None] = "unsupported"  # or "disabled", or MIG slots
    calls: list[str] = field(default_factory=list)


def _fake_pynvml(gpus: list[FakeGpu], calls: list[str]) -> types.ModuleType:
    """A stand-in for the `pynvml` module describing ``gpus``; records each call."""
    module = types.ModuleType("pynvml")

    def recorded(name: str, result: Callable[..., object]) -> Callable[..., object]:
        def function(*args: object) -> object:
            calls.append(name)
            return result(*args)

        return function

    def mig_mode(gpu: FakeGpu) -> tuple[int, int]:
        if gpu.mig == "unsupported":
            raise FakeNotSupported("Not Supported")
        return (0, 0) if gpu.mig == "disabled" else (1, 1)

    def mig_handle(gpu: FakeGpu, slot: int) -> FakeGpu:
        assert isinstance(gpu.mig, list)
        instance = gpu.mig[slot]
        if instance is None:
            raise FakeNotFound("Not Found")
        return instance

    module.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    module.NVMLError_NotFound = FakeNotFound  # type: ignore[attr-defined]
    module.NVML_DEVICE_MIG_ENABLE = 1  # type: ignore[attr-defined]
    functions: dict[str, Callable[..., object]] = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlSystemGetDriverVersion": lambda: "550.54.15",
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda index: gpus[index],
        "nvmlDeviceGetMigMode": mig_mode,
        "nvmlDeviceGetMaxMigDeviceCount": lambda gpu: len(gpu.mig),
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
        "nvmlDeviceGetUUID": lambda gpu: gpu.uuid,
        "nvmlDeviceGetName": lambda gpu: gpu.name,
        "nvmlDeviceGetMemoryInfo": lambda gpu: types.SimpleNamespace(total=gpu.memory),
    }
    for name, result in functions.items():
        setattr(module, name, recorded(name, result))
    return module


def _torch_device(index: int, uuid: str | None, memory: int = 80 * GIB) -> _gpu._TorchDevice:
    return _gpu._TorchDevice(
        index=index,
        name="NVIDIA H100 80GB HBM3",
        total_memory_bytes=memory,
        compute_capability="9.0",
        uuid=uuid,
    )


def test_no_cuda_gives_no_gpus_and_never_calls_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml([], calls))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert collect_gpus() == ()
    assert calls == []
    assert not torch.cuda.is_initialized()


@pytest.mark.parametrize("error", [FakeNVMLError("Driver Not Loaded"), OSError("no libnvidia-ml")])
def test_nvml_init_failure_gives_empty_nvml_list(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    fake = _fake_pynvml([], [])

    def fail() -> None:
        raise error

    fake.nvmlInit = fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert _gpu._nvml_devices() == []


def test_real_pynvml_without_driver_gives_empty_nvml_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pynvml = pytest.importorskip("pynvml")

    def fail() -> None:
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    assert _gpu._nvml_devices() == []


def test_torch_gpu_without_nvml_keeps_torch_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml([], [])

    def fail() -> None:
        raise FakeNVMLError("Driver Not Loaded")

    fake.nvmlInit = fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(_gpu, "_torch_devices", lambda: [_torch_device(0, "abc")])
    (gpu,) = collect_gpus()
    assert (gpu.name, gpu.total_memory_bytes, gpu.compute_capability) == (
        "NVIDIA H100 80GB HBM3",
        80 * GIB,
        "9.0",
    )
    assert gpu.driver_version is None
    assert gpu.mig_mode is None


def test_gpus_match_torch_by_uuid_including_mig(monkeypatch: pytest.MonkeyPatch) -> None:
    mig_a = FakeGpu("MIG-aaaa-0001", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", 10 * GIB)
    mig_b = FakeGpu("MIG-aaaa-0002", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", 40 * GIB)
    plain = FakeGpu("GPU-BBBB-0000", "NVIDIA H100 80GB HBM3", 80 * GIB, mig="disabled")
    old = FakeGpu("GPU-cccc-0000", "Tesla T4", 15 * GIB)  # MIG not supported at all
    parent = FakeGpu("GPU-aaaa-0000", "NVIDIA H100 80GB HBM3", 80 * GIB, mig=[mig_a, None, mig_b])
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml([parent, plain, old], calls))
    # Torch numbers devices its own way and writes UUIDs without the NVML prefix.
    monkeypatch.setattr(
        _gpu,
        "_torch_devices",
        lambda: [
            _torch_device(0, "bbbb-0000"),
            _torch_device(1, "aaaa-0002", memory=40 * GIB),
            _torch_device(2, None),
        ],
    )
    gpus = collect_gpus()
    assert [(g.index, g.uuid, g.mig_mode) for g in gpus] == [
        (0, "GPU-BBBB-0000", False),
        (1, "MIG-aaaa-0002", True),
        (2, None, None),
    ]
    assert gpus[1].name == "NVIDIA H100 80GB HBM3 MIG 3g.40gb"
    assert gpus[1].total_memory_bytes == 40 * GIB
    assert gpus[0].driver_version == "550.54.15"
    assert calls[-1] == "nvmlShutdown"


def test_nvml_skips_a_device_it_cannot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    good = FakeGpu("GPU-good", "NVIDIA L4", 24 * GIB, mig="disabled")
    fake = _fake_pynvml([good, good], [])
    results: list[FakeGpu | Exception] = [FakeNVMLError("No Permission"), good]
    handles = iter(results)

    def handle(index: int) -> FakeGpu:
        result = next(handles)
        if isinstance(result, Exception):
            raise result
        return result

    fake.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert [device.uuid for device in _gpu._nvml_devices()] == ["GPU-good"]

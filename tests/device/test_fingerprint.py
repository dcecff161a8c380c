"""The fingerprint: complete, stable, keyed on identity only, and safe to store as JSON."""

from __future__ import annotations

import json
import re

import pydantic
import pytest

from autoq.device import (
    ComputeMeasurements,
    DeviceIdentity,
    Fingerprint,
    Measurements,
    fingerprint,
)


@pytest.fixture(scope="module")
def identity() -> DeviceIdentity:
    return fingerprint(bench=False).identity


def _measurements(gflops: float) -> Measurements:
    cpu = ComputeMeasurements(
        device="cpu",
        fp32_matmul_gflops=gflops,
        bf16_matmul_gflops=2 * gflops,
        int8_matmul_gops=None,
        memory_bandwidth_gbps=20.0,
    )
    return Measurements(torch_threads=2, cpu=cpu, gpus=())


def test_identity_fields_are_present(identity: DeviceIdentity) -> None:
    assert identity.system
    assert identity.python_version.count(".") == 2
    assert identity.software.torch is not None
    assert identity.cpu.model
    assert identity.cpu.logical_cores >= identity.cpu.usable_cores >= 1
    assert set(identity.cpu.isa_flags) <= {
        "amx_bf16",
        "amx_int8",
        "amx_tile",
        "asimddp",
        "avx2",
        "avx512_bf16",
        "avx512_vnni",
        "avx512f",
        "avx_vnni",
        "bf16",
        "i8mm",
        "sve",
        "sve2",
    }
    assert 0 < identity.memory_limit_bytes <= identity.total_memory_bytes


def test_without_bench_there_are_no_measurements() -> None:
    result = fingerprint(bench=False)
    assert result.measurements is None
    assert result.schema_version == 1
    assert re.fullmatch(r"[0-9a-f]{12}", result.fingerprint_id)
    assert json.loads(result.model_dump_json())["fingerprint_id"] == result.fingerprint_id


def test_fingerprint_id_is_stable_across_calls() -> None:
    assert fingerprint(bench=False).fingerprint_id == fingerprint(bench=False).fingerprint_id


def test_bench_measures_positive_numbers() -> None:
    result = fingerprint(bench=True)
    assert result.measurements is not None
    cpu = result.measurements.cpu
    assert cpu.device == "cpu"
    for value in (cpu.fp32_matmul_gflops, cpu.bf16_matmul_gflops, cpu.memory_bandwidth_gbps):
        assert value is not None
        assert value > 0
    assert cpu.int8_matmul_gops is None or cpu.int8_matmul_gops > 0
    assert len(result.measurements.gpus) == len(result.identity.gpus)


def test_id_ignores_measurements(identity: DeviceIdentity) -> None:
    slow = Fingerprint(identity=identity, measurements=_measurements(10.0))
    fast = Fingerprint(identity=identity, measurements=_measurements(500.0))
    bare = Fingerprint(identity=identity, measurements=None)
    assert slow.fingerprint_id == fast.fingerprint_id == bare.fingerprint_id


def test_id_ignores_patch_versions_but_not_minor(identity: DeviceIdentity) -> None:
    def with_torch(version: str) -> str:
        software = identity.software.model_copy(update={"torch": version})
        changed = identity.model_copy(update={"software": software})
        return Fingerprint(identity=changed, measurements=None).fingerprint_id

    assert with_torch("2.13.0+cpu") == with_torch("2.13.4+cpu")
    assert with_torch("2.13.0") != with_torch("2.14.0")


def test_id_changes_with_hardware(identity: DeviceIdentity) -> None:
    other_cpu = identity.cpu.model_copy(update={"model": "Another CPU"})
    other = identity.model_copy(update={"cpu": other_cpu})
    assert (
        Fingerprint(identity=other, measurements=None).fingerprint_id
        != Fingerprint(identity=identity, measurements=None).fingerprint_id
    )


def test_json_round_trip(identity: DeviceIdentity) -> None:
    original = Fingerprint(identity=identity, measurements=_measurements(42.0))
    assert Fingerprint.model_validate_json(original.model_dump_json()) == original


def test_loading_rejects_an_id_that_does_not_match(identity: DeviceIdentity) -> None:
    data = json.loads(Fingerprint(identity=identity, measurements=None).model_dump_json())
    data["fingerprint_id"] = "000000000000"
    with pytest.raises(pydantic.ValidationError, match="does not match"):
        Fingerprint.model_validate(data)


def test_loading_rejects_an_unknown_schema_version(identity: DeviceIdentity) -> None:
    data = json.loads(Fingerprint(identity=identity, measurements=None).model_dump_json())
    data["schema_version"] = 99
    with pytest.raises(pydantic.ValidationError, match="schema_version must be 1"):
        Fingerprint.model_validate(data)


def test_fingerprint_is_frozen(identity: DeviceIdentity) -> None:
    result = Fingerprint(identity=identity, measurements=None)
    with pytest.raises(pydantic.ValidationError):
        result.measurements = _measurements(1.0)

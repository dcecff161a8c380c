"""CPU identity parsed from /proc/cpuinfo on x86 and Arm layouts."""

from __future__ import annotations

from pathlib import Path

from autoq.device import _identity

X86 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16
"""

ARM = """processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd asimddp sve sve2 i8mm bf16
CPU implementer\t: 0x41
"""


def test_x86_model_and_int8_bf16_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(X86)
    cpu = _identity._cpu(cpuinfo)
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu.isa_flags == (
        "amx_bf16",
        "amx_int8",
        "amx_tile",
        "avx2",
        "avx512_bf16",
        "avx512_vnni",
        "avx512f",
    )


def test_arm_features_and_model_fallback(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(ARM)
    cpu = _identity._cpu(cpuinfo)
    assert cpu.model  # no "model name" line: platform's answer instead
    assert cpu.isa_flags == ("asimddp", "bf16", "i8mm", "sve", "sve2")


def test_missing_cpuinfo_still_describes_the_cpu(tmp_path: Path) -> None:
    cpu = _identity._cpu(tmp_path / "absent")
    assert cpu.model
    assert cpu.isa_flags == ()
    assert cpu.logical_cores >= 1

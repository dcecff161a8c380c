"""`import autoq.device` stays cheap: no torch, no NVML, no CUDA until a function is called."""

from __future__ import annotations

import subprocess
import sys


def test_import_loads_neither_torch_nor_pynvml() -> None:
    code = (
        "import sys, autoq.device\n"
        "heavy = sorted({'torch', 'pynvml', 'diffusers'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

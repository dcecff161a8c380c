"""Executors: how a component runs (eager, channels-last, ``torch.compile``, OpenVINO),
one registry beside the precision backends' (how its weights are stored).

Nothing here imports torch, inductor or OpenVINO until an executor is checked or applied.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from autoq.execution._base import (
    EAGER,
    EXECUTORS,
    Executor,
    get_executor,
    list_executors,
    register_executor,
)
from autoq.execution._openvino import check_openvino, to_openvino
from autoq.execution._probe import ExecutorProbe, probe_executors
from autoq.execution._torch import (
    COMPILE_PRECISIONS,
    channels_last,
    check_compile,
    compile_module,
    compile_snippet,
    eager,
    inductor_cache_dir,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


def _openvino(weights: str | None) -> functools.partial[nn.Module]:
    return functools.partial(to_openvino, weights=weights)


for _executor in (
    Executor(EAGER, "PyTorch, eager (as stored)", eager, snippet=lambda component, module: ""),
    Executor(
        "channels_last",
        "PyTorch, 4-D weights in channels-last memory format",
        channels_last,
        convolutional=True,
        snippet=lambda c, module: f"pipe.{c}.to(memory_format=torch.channels_last)",
        shares_weights=False,
    ),
    Executor(
        "compile",
        "torch.compile (inductor, static shapes; frozen weights on CPU; kernels cached)",
        compile_module,
        check=check_compile,
        precisions=COMPILE_PRECISIONS,
        snippet=compile_snippet,
        builds_per_shape=True,
    ),
    Executor(
        "openvino",
        "OpenVINO on the CPU, converted from the torch module (bf16 where the CPU has it)",
        _openvino(None),
        check=check_openvino,
        precisions=("fp32",),
        shares_weights=False,  # OpenVINO holds its own constants
        builds_per_shape=True,
    ),
    Executor(
        "openvino_int8",
        "OpenVINO on the CPU with NNCF int8 weight compression",
        _openvino("int8"),
        check=check_openvino,
        precisions=("fp32",),
        shares_weights=False,  # OpenVINO holds its own constants
        builds_per_shape=True,
    ),
):
    register_executor(_executor)


def usable_executors(device: torch.device) -> dict[str, str | None]:
    """Every executor with why it cannot run on ``device`` (``None``: it can)."""
    return {name: executor.check(device) for name, executor in EXECUTORS.items()}


__all__ = [
    "COMPILE_PRECISIONS",
    "EAGER",
    "EXECUTORS",
    "Executor",
    "ExecutorProbe",
    "get_executor",
    "inductor_cache_dir",
    "list_executors",
    "probe_executors",
    "register_executor",
    "usable_executors",
]

"""PyTorch executors: eager, channels-last memory format, and ``torch.compile``.

Compiled code is cached on disk (inductor's FX graph cache, under autoq's cache folder),
so a rerun, the runtime and ``autoq serve`` trace again but do not generate or build the
kernels a previous process built.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["channels_last", "compile_module", "compile_snippet", "eager", "inductor_cache_dir"]

# Storages inductor compiles here: the dtype casts and torchao's int8 tensor subclasses.
# The others (bitsandbytes, quanto, GGUF) call custom kernels dynamo cannot trace through.
COMPILE_PRECISIONS = ("fp32", "bf16", "fp16", "ao_int8wo", "ao_int8dq")

# Children of a VAE the pipeline reaches through ``vae.decode``, not ``vae(...)``.
_VAE_PARTS = ("decoder", "post_quant_conv")


def eager(module: nn.Module, component: str) -> nn.Module:
    """``module`` as it is."""
    return module


def channels_last(module: nn.Module, component: str) -> nn.Module:
    """A copy of ``module`` whose 4-D weights are stored channels-last, which the CPU and
    CUDA convolution kernels run faster."""
    import torch

    return copy.deepcopy(module).to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def inductor_cache_dir() -> str:
    """Where compiled kernels are kept: ``$TORCHINDUCTOR_CACHE_DIR`` when set, else
    ``inductor/`` under autoq's cache folder (set for this process on first use)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from autoq.backends import cache_dir

    # Importing inductor fills the variable with its default: that counts as unset.
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not current or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _compiled(module: nn.Module, device_type: str) -> nn.Module:
    """A shallow copy of ``module`` (same children and weights) whose calls are compiled."""
    import torch

    out = copy.copy(module)
    out.__dict__ = dict(module.__dict__)  # own attribute dict: compiling marks only the copy
    options: dict[str, str | int | bool | Callable[..., Any]] = (
        {"freezing": True} if device_type == "cpu" else {}
    )
    out._compiled_call_impl = torch.compile(out._call_impl, dynamic=False, options=options)
    return out


def compile_module(module: nn.Module, component: str) -> nn.Module:
    """``module`` compiled by inductor for static shapes (frozen weights on CPU).

    A VAE is compiled where the pipeline calls it (its decoder); a denoiser whose class
    declares repeated blocks (diffusers' ``_repeated_blocks``) is compiled block by block,
    which compiles one block once instead of the whole graph.
    """
    from autoq.backends import module_device

    inductor_cache_dir()
    _enable_caches()
    device_type = module_device(module).type
    shell = copy.copy(module)
    shell.__dict__ = dict(module.__dict__)
    shell._modules = dict(module._modules)
    repeated = getattr(module, "_repeated_blocks", None) or ()
    if hasattr(module, "decode") and any(p in module._modules for p in _VAE_PARTS):
        targets = [p for p in _VAE_PARTS if module._modules.get(p) is not None]
    elif repeated:
        return _compile_blocks(shell, set(repeated), device_type)
    else:
        return _compiled(module, device_type)
    for name in targets:
        child = module._modules[name]
        assert child is not None
        shell._modules[name] = _compiled(child, device_type)
    return shell


def compile_snippet(component: str, module: nn.Module | None) -> str:
    """The diffusers idiom that compiles ``component`` as `compile_module` does."""
    if component.startswith("vae"):  # the pipeline calls `vae.decode`, not `vae(...)`
        return f"pipe.{component}.decode = torch.compile(pipe.{component}.decode)"
    if module is not None and getattr(module, "_repeated_blocks", None):
        return f"pipe.{component}.compile_repeated_blocks()"
    return f"pipe.{component} = torch.compile(pipe.{component})"


def _compile_blocks(shell: nn.Module, classes: set[str], device_type: str) -> nn.Module:
    """``shell`` with each child whose class is in ``classes`` compiled, at any depth;
    the parents on the way are copied so the original module stays eager."""

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            if type(child).__name__ in classes:
                parent._modules[name] = _compiled(child, device_type)
            else:
                copied = copy.copy(child)
                copied.__dict__ = dict(child.__dict__)
                copied._modules = dict(child._modules)
                parent._modules[name] = copied
                visit(copied)

    visit(shell)
    return shell


@functools.cache
def _enable_caches() -> None:
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True
    inductor.freezing_discard_parameters = False  # the weights stay shared, not discarded


def check_compile(device: torch.device) -> str | None:
    """Why inductor cannot compile on ``device``, or ``None``."""
    import shutil

    if device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
        return "inductor needs a C++ compiler on CPU (install g++)"
    if device.type not in ("cpu", "cuda", "xpu"):
        return f"inductor does not compile for {device.type}"
    return None

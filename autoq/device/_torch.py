"""Torch device helpers shared by the tuner, the runtime and the backends."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

from autoq.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["release_memory", "resolve_device"]


def resolve_device(device: torch.device | str | None) -> torch.device:
    """Parse ``device`` and check that it exists here; ``None`` means the first CUDA
    device when there is one, else the CPU (the one default policy of autoq).

    Raises:
        ConfigError: The name is not a torch device, or names a GPU this machine lacks.
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(
            f"Unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'."
        ) from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (resolved.index or 0) >= count:
            raise ConfigError(
                f"Device {device!r} is not available: this machine has {count} CUDA device(s). "
                "Use --device cpu, or install a CUDA build of torch "
                "(docs/contributing.md: GPU install)."
            )
    return resolved


def release_memory(device: torch.device) -> None:
    """Collect garbage and, on CUDA, hand cached blocks back to the driver."""
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()

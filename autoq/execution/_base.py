"""How a component executes, as opposed to how its weights are stored: one registry.

An `Executor` takes a component already stored in its precision (the backends' job) and
returns a module the pipeline calls exactly like the original: compiled by inductor, in
channels-last memory format, or converted to an OpenVINO model. Each executor declares
which components and precisions it applies to and checks its environment before any
work, as the precision backends do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autoq.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "EAGER",
    "EXECUTORS",
    "Executor",
    "get_executor",
    "list_executors",
    "register_executor",
]

EAGER = "eager"
"""The executor every component has: the module as stored, run by PyTorch eagerly."""


@dataclass(frozen=True)
class Executor:
    """One way to execute a component.

    Attributes:
        name: The name plans and the CLI use (``compile``, ``openvino_int8``, ...).
        description: One line for ``autoq backends``.
        apply: ``apply(module, component) -> module``: a module the pipeline calls like
            ``module``. It may share ``module``'s weights but never changes ``module``.
        check: ``check(device) -> reason`` why it cannot run on ``device``, or ``None``.
        precisions: The storage precisions it runs on (``None``: any).
        components: Substrings of the component names it applies to (``None``: any).
        convolutional: Only for components with 2-D convolutions (UNet, VAE).
        snippet: ``snippet(component, module) -> line``: the Python plain diffusers users
            run on ``pipe`` for the same execution (``""``: nothing to run), or ``None`` when
            only autoq can run it. ``module`` is the torch component, when known.
        shares_weights: The executed module reuses the stored module's weights.
        builds_per_shape: Each new input shape (a batch size, an image size) compiles or
            converts again on its first call.
    """

    name: str
    description: str
    apply: Callable[[nn.Module, str], nn.Module]
    check: Callable[[torch.device], str | None] = field(default=lambda device: None)
    precisions: tuple[str, ...] | None = None
    components: tuple[str, ...] | None = None
    convolutional: bool = False
    snippet: Callable[[str, nn.Module | None], str] | None = None
    shares_weights: bool = True
    builds_per_shape: bool = False

    def runs_on(self, precision: str) -> bool:
        """Whether this executor runs a component stored in ``precision``."""
        return self.precisions is None or precision in self.precisions

    def applies_to(self, component: str, module: nn.Module, precision: str | None = None) -> bool:
        """Whether this executor can run ``module`` (component ``component``, stored in
        ``precision`` when given)."""
        from torch import nn

        if precision is not None and not self.runs_on(precision):
            return False
        if self.components is not None and not any(c in component for c in self.components):
            return False
        if self.convolutional:
            return any(isinstance(m, nn.Conv2d) for m in module.modules())
        return True


EXECUTORS: dict[str, Executor] = {}
"""Every executor by name, in display order (eager first)."""


def register_executor(executor: Executor) -> None:
    """Add ``executor`` to `EXECUTORS` (a name is registered once)."""
    if executor.name in EXECUTORS:
        raise ValueError(f"executor {executor.name!r} is already registered.")
    EXECUTORS[executor.name] = executor


def get_executor(name: str) -> Executor:
    """The executor called ``name``.

    Raises:
        ConfigError: No executor has that name; the message lists the valid ones.
    """
    try:
        return EXECUTORS[name]
    except KeyError:
        raise ConfigError(f"Unknown executor {name!r}; valid: {list(EXECUTORS)}.") from None


def list_executors() -> list[str]:
    """Every registered executor name, eager first."""
    return list(EXECUTORS)

"""The contract suite's parametrized component fixture.

``AUTOQ_TEST_DEVICE=cuda:0`` runs the components on that device (`make gpu-check` does);
the default is the CPU.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from torch import nn

from tests.backends.components import COMPONENTS, Component

DEVICE = torch.device(os.environ.get("AUTOQ_TEST_DEVICE", "cpu"))


def on_device(component: Component, device: torch.device) -> Component:
    """``component`` built on ``device``, its (CPU-made) inputs moved there on each call."""
    if device.type == "cpu":
        return component

    def to_device(_module: nn.Module, args: Any, kwargs: Any) -> tuple[Any, Any]:
        from torch.utils import _pytree

        def move(x: Any) -> Any:
            return x.to(device) if isinstance(x, torch.Tensor) else x

        return _pytree.tree_map(move, args), _pytree.tree_map(move, kwargs)

    def build() -> nn.Module:
        module = component.build().to(device)
        module.register_forward_pre_hook(to_device, with_kwargs=True)
        return module

    return Component(component.name, build, component.run)


@pytest.fixture(params=list(COMPONENTS), scope="module")
def component(request: pytest.FixtureRequest) -> Component:
    return on_device(COMPONENTS[request.param], DEVICE)

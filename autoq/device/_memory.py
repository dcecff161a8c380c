"""Peak memory of a block of torch work (a diffusion generation), on CPU or CUDA.

``PeakMemory`` reports how many bytes of tensor storage the block needed above what was
already live when it started; the tuner adds the weights it loaded before the block.

CUDA (``method == "cuda_max_memory_allocated"``): the caching allocator's own statistics.
The peak counter is reset on enter and ``max_memory_allocated - memory_allocated(at enter)``
is read after a synchronize on exit. It counts every tensor block the allocator handed out
on that device, from any thread or stream, but not its cached-but-free blocks nor memory
outside the allocator (CUDA context, cuBLAS/cuDNN workspaces). Resetting the peak counter
means nested or concurrent CUDA measurements on one device disturb each other.

CPU (``method == "cpu_dispatch_tracker"``): there is no allocator statistic, so a
``TorchDispatchMode`` watches every aten op run in the entering thread. Each fresh CPU
storage an op returns (per the op schema, views and in-place/``out=`` results are not
fresh) adds its ``nbytes`` to a live counter, once per storage, so views never double
count; a weakref callback on the storage object subtracts it when the storage is freed
(torch keeps one Python object per storage alive as long as the storage is, so the weakref
dies exactly with the memory). Ops on tensor subclasses (quantized weights) are counted
through the plain ops their implementation runs. The peak is the highest value of that
counter. Not counted: scratch memory kernels allocate and free internally (e.g. oneDNN
convolution buffers), work in other threads, regions compiled with ``torch.compile``,
Python objects, and the allocator's fragmentation or caching; freeing a tensor that
predates the block does not lower the count. On a small UNet forward (2 busy CPU cores,
noisy timings) the tracker added at most about 40% wall time, at batch 1 and 4.
"""

from __future__ import annotations

import functools
import threading
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any

from autoq.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["PeakMemory"]

_CUDA_METHOD = "cuda_max_memory_allocated"
_CPU_METHOD = "cpu_dispatch_tracker"


class _StorageTracker:
    """Live and peak bytes of the CPU storages that tracked ops allocated."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # id(storage) -> (weakref whose callback releases the bytes, nbytes). Storage Python
        # objects are preserved while the storage lives, so the id cannot be reused before
        # the callback has removed the entry.
        self._live: dict[int, tuple[weakref.ref[Any], int]] = {}
        self.live_bytes = 0
        self.peak_bytes = 0

    def add(self, storage: Any) -> None:
        key = id(storage)
        if key in self._live:
            return
        nbytes = int(storage.nbytes())
        if nbytes == 0:
            return
        ref = weakref.ref(storage, functools.partial(self._release, key))
        with self._lock:
            self._live[key] = (ref, nbytes)
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)

    def _release(self, key: int, _ref: weakref.ref[Any]) -> None:
        with self._lock:
            entry = self._live.pop(key, None)
            if entry is not None:
                self.live_bytes -= entry[1]

    def close(self) -> None:
        """Drop every weakref, so storages freed after the block no longer call back."""
        with self._lock:
            self._live.clear()


@functools.cache
def _tracking_mode_class() -> type:
    """Build the dispatch mode class on first use, so importing this module skips torch."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class _TrackingMode(TorchDispatchMode):
        def __init__(self, tracker: _StorageTracker) -> None:
            super().__init__()
            self._tracker = tracker
            self._fresh: dict[Any, tuple[bool, ...]] = {}

        def _fresh_returns(self, func: Any) -> tuple[bool, ...]:
            fresh = self._fresh.get(func)
            if fresh is None:
                fresh = tuple(ret.alias_info is None for ret in func._schema.returns)
                self._fresh[func] = fresh
            return fresh

        def _track(self, value: Any) -> None:
            for leaf in tree_leaves(value):
                if isinstance(leaf, torch.Tensor) and leaf.is_cpu and leaf.layout is torch.strided:
                    try:
                        storage = leaf.untyped_storage()
                    except (RuntimeError, NotImplementedError):  # tensors with no storage to count
                        continue
                    self._tracker.add(storage)

        def __torch_dispatch__(
            self,
            func: Any,
            types: Any,
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            if any(_has_own_dispatch(t) for t in types):
                # Let tensor subclasses (quantized weights) run first: the plain ops they
                # call come back through this mode, so their temporaries are counted too.
                return NotImplemented
            out = func(*args, **(kwargs or {}))
            fresh = self._fresh_returns(func)
            if len(fresh) == 1:
                if fresh[0]:
                    self._track(out)
            elif isinstance(out, (tuple, list)) and len(out) == len(fresh):
                for value, is_fresh in zip(out, fresh, strict=True):
                    if is_fresh:
                        self._track(value)
            return out

    def _has_own_dispatch(cls: type) -> bool:
        # Subclasses that only override __torch_function__ (diffusers' GGUFParameter) or
        # plain tensors made with _make_subclass have nothing to run first.
        return getattr(cls, "__torch_dispatch__", None) is not torch.Tensor.__torch_dispatch__

    return _TrackingMode


def _device_type(device: torch.device | str) -> tuple[str, str]:
    """Split a device into its type and the name torch accepts, without importing torch."""
    name = str(device)
    kind = name.partition(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ConfigError(
            f"PeakMemory measures 'cpu' or 'cuda[:N]' devices, but got {name!r}; pass one of those."
        )
    return kind, name


class PeakMemory:
    """Context manager measuring the peak tensor memory a block allocates on one device.

    Example:
        >>> with PeakMemory("cpu") as peak:  # doctest: +SKIP
        ...     pipe(prompt)
        >>> peak.peak_bytes  # doctest: +SKIP

    Attributes:
        device: The measured device, as given.
        method: ``"cuda_max_memory_allocated"`` or ``"cpu_dispatch_tracker"``.
        peak_bytes: Highest bytes of tensor storage allocated during the block above what
            was live at its start; 0 until the block exits.
    """

    def __init__(self, device: torch.device | str) -> None:
        """Choose the method for ``device``.

        Args:
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, as a string or ``torch.device``.

        Raises:
            ConfigError: If the device is neither CPU nor CUDA.
        """
        self._kind, self._name = _device_type(device)
        self.device = device
        self.method = _CUDA_METHOD if self._kind == "cuda" else _CPU_METHOD
        self.peak_bytes = 0
        self._start_allocated = 0
        self._tracker = _StorageTracker()
        self._mode: Any = None

    def __enter__(self) -> PeakMemory:
        self.peak_bytes = 0
        if self._kind == "cuda":
            import torch

            torch.cuda.synchronize(self._name)
            torch.cuda.reset_peak_memory_stats(self._name)
            self._start_allocated = torch.cuda.memory_allocated(self._name)
        else:
            self._tracker = _StorageTracker()
            self._mode = _tracking_mode_class()(self._tracker)
            self._mode.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._kind == "cuda":
            import torch

            torch.cuda.synchronize(self._name)
            peak = torch.cuda.max_memory_allocated(self._name) - self._start_allocated
            self.peak_bytes = max(0, int(peak))
            return
        self._mode.__exit__(exc_type, exc, tb)
        self._mode = None
        self.peak_bytes = self._tracker.peak_bytes
        self._tracker.close()

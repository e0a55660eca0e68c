"""Tensor-level peak memory of a call, on any device: the largest sum of live tensor storages.

``LiveBytes`` is a ``TorchDispatchMode``: every tensor an aten op returns is registered by its
storage; a storage counts from the first tensor that shows it until the last tensor object that
shares it is garbage (a ``weakref.finalize`` per tensor). The running sum's maximum is the peak of
what the code under the mode keeps alive -- exact at tensor granularity, independent of the
allocator (no caching, no page rounding), and available on the CPU, where the process RSS only
gives a lower bound. Kernels' private workspaces that never surface as tensors are not seen.

Used as the oracle for :func:`lcprof.cost.model.activation_bytes`: the layer is run under the mode
on the CPU and the peak is compared with the analytic count. ``peak_step`` names the op that set
the peak, ``peak_tensors`` the storages live then.

    with torch.no_grad(), LiveBytes(exclude=layer.parameters()) as lb:
        lb.track(x)
        layer(x)
    lb.peak_bytes
"""

from __future__ import annotations

import weakref
from typing import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """Peak of live tensor storage bytes under the mode (see the module docstring)."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._skip = {t.untyped_storage().data_ptr() for t in exclude}
        self._live: dict[int, list[int]] = {}  # storage data_ptr -> [nbytes, tensor refs]
        self.current_bytes = 0
        self.peak_bytes = 0
        self.peak_step = ""
        self.peak_tensors: list[int] = []

    def track(self, t: torch.Tensor, step: str = "input") -> None:
        """Count ``t`` (made outside the mode, e.g. the input) until it is garbage."""
        st = t.untyped_storage()
        key = st.data_ptr()
        if key == 0 or key in self._skip:
            return
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [st.nbytes(), 0]
            self.current_bytes += entry[0]
        entry[1] += 1
        weakref.finalize(t, self._release, key)
        if self.current_bytes > self.peak_bytes:
            self.peak_bytes = self.current_bytes
            self.peak_step = step
            self.peak_tensors = sorted((v[0] for v in self._live.values()), reverse=True)

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current_bytes -= entry[0]
            del self._live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t, str(func))
        return out

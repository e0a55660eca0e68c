"""Tensor-level audits of a call, on any device: peak live bytes (``LiveBytes``) and the bytes
elementwise ops move (``MovedBytes``).

``LiveBytes`` is a ``TorchDispatchMode``: every tensor an aten op returns is registered by its
storage; a storage counts from the first tensor that shows it until the last tensor object that
shares it is garbage (a ``weakref.finalize`` per tensor). The running sum's maximum is the peak of
what the code under the mode keeps alive -- exact at tensor granularity, independent of the
allocator (no caching, no page rounding), and available on the CPU, where the process RSS only
gives a lower bound. Kernels' private workspaces that never surface as tensors are not seen.

Used as the oracle for :func:`lcprof.cost.model.activation_bytes`: the layer is run under the mode
on the CPU and the peak is compared with the analytic count. ``peak_step`` names the op that set
the peak, ``peak_tensors`` the storages live then.

``steps`` is the per-step oracle: the measured layers call :func:`mark` after each of their
memory-heavy steps (named as the cost model names them, ``mixer/chunk_cb``, ``attn/o_proj``, ...);
under an active mode each mark closes a segment of the run and ``steps[name]`` is the most bytes
live at any op since the previous mark or at the mark itself (the maximum over repeated marks of one
name, e.g. the iterations of a chunk loop). Outside a mode ``mark`` does nothing. The segments partition the run,
so the peak is the largest of them (what was live before the first mark or after the last one is
in ``unmarked_bytes``).

    with torch.no_grad(), LiveBytes(exclude=layer.parameters()) as lb:
        lb.track(x)
        layer(x)
    lb.peak_bytes

``MovedBytes`` sums, per aten op that is neither a view nor a matrix product nor an attention kernel,
the bytes of every tensor it reads (each tensor argument, as the op sees it: a broadcast operand
counts once; ``copy_`` does not read its destination) plus every tensor it writes: the traffic an
unfused (eager) implementation sends through memory outside the GEMMs. It is the oracle for the
``misc/elementwise`` and ``attn/elementwise`` bytes of :mod:`lcprof.cost.ops`.
"""

from __future__ import annotations

import weakref
from typing import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


#: LiveBytes modes entered and not yet left (innermost last): the ones :func:`mark` closes segments of
_ACTIVE: list["LiveBytes"] = []


def mark(name: str) -> None:
    """Close the current step segment under ``name`` in every active :class:`LiveBytes` (a no-op
    when none is active; it runs no torch op, so it changes nothing the layer computes)."""
    for lb in _ACTIVE:
        lb.close_step(name)


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
        self.steps: dict[str, int] = {}  # step name -> most bytes live in its segments
        self._segment = 0  # most bytes live since the last mark

    @property
    def unmarked_bytes(self) -> int:
        """Most bytes live since the last mark (or since the start, with no mark)."""
        return self._segment

    def close_step(self, name: str) -> None:
        """End the segment: the most bytes live at any op since the last mark, or now."""
        self.steps[name] = max(self.steps.get(name, 0), self._segment, self.current_bytes)
        self._segment = 0

    def __enter__(self):
        out = super().__enter__()
        _ACTIVE.append(self)
        return out

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return super().__exit__(*exc)

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
        if self.current_bytes > self._segment:
            self._segment = self.current_bytes
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


#: ops that move no data (views, metadata) or whose traffic the cost model counts elsewhere
#: (matrix products, attention kernels) or that only allocate
NOT_ELEMENTWISE = frozenset({
    "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "alias", "detach", "t", "transpose",
    "permute", "unsqueeze", "squeeze", "expand", "slice", "select", "split", "split_with_sizes", "unbind",
    "lift_fresh", "mm", "addmm", "bmm", "matmul", "baddbmm", "empty", "empty_like", "zeros", "zeros_like",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
})


class MovedBytes(TorchDispatchMode):
    """Bytes read + written by elementwise ops under the mode, by op name (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: dict[str, int] = {}

    @property
    def total_bytes(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if name.rstrip("_") in NOT_ELEMENTWISE:  # in-place variants (transpose_, ...) too
            return out
        reads = tree_flatten((args[1:], kwargs or {}))[0] if name == "copy_" else tree_flatten((args, kwargs or {}))[0]
        moved = sum(t.numel() * t.element_size() for t in reads if isinstance(t, torch.Tensor))
        moved += sum(t.numel() * t.element_size() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        self.by_op[name] = self.by_op.get(name, 0) + moved
        return out

"""Paged-KV memory on one GPU: the budget, KV groups, blocks per request. No torch.

Convention (vLLM-style paged KV cache, hybrid allocator):

* Layers are sorted into **KV groups**. Layers with the same attention kind and window share a
  kind; every kind is cut into groups of ``g`` layers, ``g`` = the greatest common divisor of the
  per-kind layer counts (gemma2-9b: 21 sliding + 21 global -> g = 21, two groups; llama4-scout:
  36 chunked + 12 global -> g = 12, three chunked groups and one global group; a uniform model is
  one group of all its layers). vLLM pads kinds to the smallest count instead; with the gcd no
  padding is needed and the bytes are the same.
* One **block** holds ``block_size`` consecutive token positions of every layer of ONE group, on
  every TP rank (each rank holds its own heads' share), so all blocks have the same size:
  ``block_bytes_per_gpu = block_size x g x kv_bytes_per_token_per_layer_per_gpu``. A uniform
  model's block is ``block_size x kv_bytes_per_token_per_gpu``, the number vLLM divides by.
* A request of context n holds, in each group, the blocks that cover the positions its layers
  still attend (the keys of the last token), counted exactly::

      blocks(n) = ceil(n / B) - floor(first_held_position / B)

      global:   first held = 0                     -> ceil(n / B)
      sliding:  first held = max(0, n - W)         -> ceil(min(n, W) / B), +1 block of slack
                                                      when the window straddles a block edge
      chunked:  first held = C * floor((n-1)/C)    -> the current chunk's blocks

  and a request's blocks are the sum over groups. Blocks wholly before the window are freed, as
  vLLM's sliding-window and chunked-local managers do.
* A **shared prefix** of P tokens (prefix caching) is stored once per replica in floor(P / B)
  full blocks per group; each request holds only the blocks after them (a partially filled last
  prefix block is private to each request). Windowed groups share only the prefix blocks still
  inside their window.

Bytes are integers. Capacities quoted in GiB (2**30) only when displayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce

import numpy as np

from lcprof.cost.model import activation_bytes, kv_bytes_per_token_by_layer, weight_bytes
from lcprof.errors import LcprofError
from lcprof.spec import LayerSpec, ModelSpec
from lcprof.units import gib

GIB = float(1 << 30)

#: dtypes whose matmuls still keep activations in bf16 (weight-only or fp8 GEMM quantization).
_LOW_PRECISION = ("fp8", "int8", "int4")


@dataclass(frozen=True)
class KVGroupKind:
    """All the layers of one attention kind, cut into ``n_groups`` KV groups of ``layers_per_group``."""

    kind: str  # global | sliding | chunked
    window: int | None
    n_layers: int
    layers_per_group: int

    @property
    def n_groups(self) -> int:
        return self.n_layers // self.layers_per_group

    @property
    def label(self) -> str:
        return self.kind if self.window is None else f"{self.kind}:{self.window}"


def kv_group_kinds(spec: ModelSpec) -> tuple[KVGroupKind, ...]:
    """The model's attention kinds with their KV-group cut (see the module docstring)."""
    counts: dict[tuple[str, int | None], int] = {}
    for layer in spec.layers:
        key = (layer.attn, layer.window)
        counts[key] = counts.get(key, 0) + 1
    g = reduce(math.gcd, counts.values())
    return tuple(KVGroupKind(kind, window, c, g) for (kind, window), c in counts.items())


def first_held_position(kind: str, window: int | None, n) -> np.ndarray:
    """Position of the oldest token a layer of this kind still attends at context n (array over n)."""
    n = np.asarray(n, dtype=np.int64)
    if kind == "global":
        return np.zeros_like(n)
    if kind == "sliding":
        return np.maximum(0, n - int(window))
    if kind == "chunked":
        return int(window) * ((n - 1) // int(window))
    raise LcprofError(f"unknown attention kind {kind!r}")


def blocks_held_by_kind(kind: str, window: int | None, n, block_size: int, prefix=0) -> np.ndarray:
    """Blocks ONE group of this kind holds privately for a request of context n (int64 over n).

    ``prefix``: shared-prefix tokens whose full blocks are stored once per replica, not per request.
    """
    n = np.asarray(n, dtype=np.int64)
    b = int(block_size)
    first_block = first_held_position(kind, window, n) // b
    held = -(-n // b) - first_block  # ceil(n / b) - floor(first / b)
    shared = np.maximum(0, int(prefix) // b - first_block)  # full prefix blocks still held
    return held - shared


def blocks_per_request(spec: ModelSpec, n, block_size: int = 16, prefix: int = 0) -> np.ndarray:
    """Private KV blocks one request of context n holds, summed over KV groups (int64 over n)."""
    n = np.atleast_1d(np.asarray(n, dtype=np.int64))
    total = np.zeros_like(n)
    for k in kv_group_kinds(spec):
        total = total + k.n_groups * blocks_held_by_kind(k.kind, k.window, n, block_size, prefix)
    return total


def shared_prefix_blocks(spec: ModelSpec, prefix: int, shortest_n: int, block_size: int = 16) -> int:
    """Blocks the shared prefix occupies once per replica (windowed groups: the part still attended
    by the shortest request)."""
    if prefix <= 0:
        return 0
    b = int(block_size)
    out = 0
    for k in kv_group_kinds(spec):
        first_block = int(first_held_position(k.kind, k.window, np.array([shortest_n]))[0]) // b
        out += k.n_groups * max(0, prefix // b - first_block)
    return out


def kv_block_bytes_per_gpu(spec: ModelSpec, kv_dtype: str = "bf16", tp: int = 1, block_size: int = 16) -> int:
    """Bytes of one KV block on one GPU: block_size tokens x one group's layers."""
    per_layer = kv_bytes_per_token_by_layer(spec, kv_dtype, tp)
    if not np.all(per_layer == per_layer[0]):  # pragma: no cover - every layer caches the same width today
        raise LcprofError(f"{spec.name}: layers cache different widths; uniform KV blocks are not defined")
    g = kv_group_kinds(spec)[0].layers_per_group
    return int(round(block_size * g * float(per_layer[0])))


def activation_dtype(dtype: str) -> str:
    """Activations stay in bf16 when weights are stored in fp8/int8/int4."""
    return "bf16" if dtype in _LOW_PRECISION else dtype


def activation_reserve_bytes_per_gpu(spec: ModelSpec, n_tokens, *, dtype: str = "bf16", tp: int = 1) -> np.ndarray:
    """Peak activation bytes of a prefill of ``n_tokens`` (the largest chunk), tiled attention, per GPU.

    The largest single-layer peak over the model's layer kinds (layers run one after another and
    free their activations), on one TP rank: heads and the MLP's intermediate width are split
    ``tp`` ways, the full-width residual, normed input and projection outputs are not
    (``cost.activation_bytes(tp=...)``). The layout is the unfused one lcprof measures (RMSNorm
    through fp32 temporaries): an upper bound for an engine with fused norms. The prefix of a
    chunk is not materialized (it is read from the paged cache). int64 over n.
    """
    n = np.atleast_1d(np.asarray(n_tokens, dtype=np.float64))
    kinds: dict[tuple, LayerSpec] = {}
    for layer in spec.layers:
        kinds.setdefault((layer.attn, layer.window, layer.moe), layer)
    peak = np.zeros_like(n)
    for layer in kinds.values():
        a = activation_bytes(spec, n, batch=1, dtype=activation_dtype(dtype), family="tiled", layer=layer, tp=tp)
        peak = np.maximum(peak, a)
    return np.ceil(peak).astype(np.int64)


@dataclass(frozen=True)
class MemoryBudget:
    """One GPU's memory split: usable = memory x utilization = weights + activation reserve + KV."""

    gpu_memory_bytes: int
    usable_bytes_per_gpu: int
    weights_bytes_per_gpu: int
    activation_reserve_bytes_per_gpu: int
    kv_budget_bytes_per_gpu: int
    kv_block_bytes_per_gpu: int
    kv_pool_blocks: int  # per replica (a block spans every TP rank of the replica)


def memory_budget(spec: ModelSpec, *, memory_bytes: int, memory_utilization: float, dtype: str, kv_dtype: str,
                  tp: int, block_size: int, largest_prefill_tokens: int) -> MemoryBudget:
    """The KV budget of one GPU; raises LcprofError when weights or the reserve leave nothing for KV."""
    usable = int(math.floor(memory_bytes * memory_utilization))
    w = weight_bytes(spec, dtype, tp)
    what = f"{spec.name} ({dtype} weights, TP={tp})"
    if w > usable:
        short = w - usable
        raise LcprofError(
            f"{what} does not fit the GPUs: {gib(w):.2f} GiB of weights per GPU > {gib(usable):.2f} GiB usable "
            f"({memory_utilization:g} x {gib(memory_bytes):.0f} GiB); missing {gib(short):.2f} GiB per GPU, "
            f"{gib(short * tp):.2f} GiB over the replica's {tp} GPU(s); raise --tp, use --dtype fp8, or a larger GPU")
    act = int(activation_reserve_bytes_per_gpu(spec, largest_prefill_tokens, dtype=dtype, tp=tp)[0])
    kv = usable - w - act
    if kv <= 0:
        raise LcprofError(
            f"nothing left for KV with {what}: {gib(usable):.2f} GiB usable - {gib(w):.2f} GiB weights - "
            f"{gib(act):.2f} GiB activation reserve ({largest_prefill_tokens} prefill tokens) is "
            f"{gib(kv):.2f} GiB, short by {gib(-kv):.2f} GiB per GPU; set --chunk, raise --tp or "
            f"--memory-utilization")
    bb = kv_block_bytes_per_gpu(spec, kv_dtype, tp, block_size)
    return MemoryBudget(int(memory_bytes), usable, int(w), act, int(kv), bb, int(kv // bb))

"""The planner's memory stage: weights, activation, the KV budget and the paged KV pool, per GPU. No torch.

KV groups and blocks (vLLM's hybrid allocator, ``vllm/v1/core/kv_cache_utils.py``
``_get_kv_cache_groups_uniform_page_size``):

* Layers with the same attention kind and window form a **kind**; every kind is cut into groups
  of ``g`` layers. vLLM takes g = the smallest per-kind layer count (the largest when all counts
  are within 1.5x of it) and pads the last group of a kind; lcprof's own accounting (``none``) and
  SGLang take the gcd, which needs no padding. gemma2-9b: 21 sliding + 21 global -> two groups of
  21; llama4-scout: 36 chunked + 12 global -> g = 12, three chunked groups and one global group.
* One **block** (vLLM's page) holds ``block_size`` token positions of every layer of ONE group on
  every TP rank, so all blocks have one size:
  ``block_bytes_per_gpu = block_size x g x kv_bytes_per_token_per_layer_per_gpu`` (scales included,
  ``lcprof.plan.kvformat``). Under pipeline parallelism each stage holds its own layers of every
  group; the pool has the block count of the stage with the fewest.
* A request of context n holds, in each group, the blocks covering the positions its layers still
  attend, counted exactly::

      blocks(n) = ceil(n / B) - floor(first_held_position / B)
      global:   first held = 0                     -> ceil(n / B)
      sliding:  first held = max(0, n - W)         -> ceil(min(n, W) / B), +1 block of slack
                                                      when the window straddles a block edge
      chunked:  first held = C * floor((n-1)/C)    -> the current chunk's blocks

  summed over groups. Blocks wholly before the window are freed, as vLLM's sliding-window and
  chunked-local managers do. A kind that holds a constant per-request state (Mamba, Gated DeltaNet:
  the hybrid-layers work) would add its own ``blocks_held`` here: a fixed number of state pages.
* A **shared prefix** of P tokens (prefix caching) is stored once per KV pool in floor(P / B) full
  blocks per group; each request holds only the blocks after them. Windowed groups share only the
  prefix blocks still inside their window.

vLLM also reports a *maximum concurrency* from a different count (``KVCacheSpec.max_memory_usage_bytes``):
a full-attention group needs cdiv(max_model_len, B) blocks, a sliding group
cdiv(min(W - 1 + max_num_batched_tokens, max_model_len), B) + 1 (the tokens chunked prefill keeps),
a chunked-local group cdiv(min(C + max_num_batched_tokens, max_model_len), B);
``vllm_blocks_at_max_len`` reproduces it.

Bytes are integers. Capacities are quoted in GiB (2**30) only when displayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import reduce

import numpy as np

from lcprof.cost.weights import VOCAB_PADDING, WeightBytes, weight_bytes_per_gpu
from lcprof.errors import LcprofError
from lcprof.plan import engines as E
from lcprof.plan.activation import engine_activation_peak_bytes, unfused_activation_peak_bytes
from lcprof.plan.kvformat import KVFormat, kv_bytes_per_token_per_layer
from lcprof.plan.parallel import Parallel
from lcprof.spec import ModelSpec
from lcprof.units import fmt_bytes, gib


def _cdiv(a, b):
    return -(-np.asarray(a, dtype=np.int64) // np.asarray(b, dtype=np.int64))


@dataclass(frozen=True)
class KVGroupKind:
    """All the layers of one attention kind, cut into ``n_groups`` KV groups of ``layers_per_group``
    (the last one padded when they do not divide)."""

    kind: str  # global | sliding | chunked
    window: int | None
    n_layers: int
    layers_per_group: int

    @property
    def n_groups(self) -> int:
        return -(-self.n_layers // self.layers_per_group)

    @property
    def padding_layers(self) -> int:
        return self.n_groups * self.layers_per_group - self.n_layers

    @property
    def label(self) -> str:
        return self.kind if self.window is None else f"{self.kind}:{self.window}"

    def first_held_position(self, n) -> np.ndarray:
        """Position of the oldest token a layer of this kind still attends at context n (array over n)."""
        n = np.asarray(n, dtype=np.int64)
        if self.kind == "global":
            return np.zeros_like(n)
        if self.kind == "sliding":
            return np.maximum(0, n - int(self.window))
        if self.kind == "chunked":
            return int(self.window) * ((n - 1) // int(self.window))
        raise LcprofError(f"unknown attention kind {self.kind!r}")  # pragma: no cover - LayerSpec validates

    def blocks_held(self, n, block_size: int, prefix=0) -> np.ndarray:
        """Blocks ONE group holds privately for a request of context n (int64 over n); full prefix
        blocks still attended are shared (``prefix``)."""
        n = np.asarray(n, dtype=np.int64)
        b = int(block_size)
        first_block = self.first_held_position(n) // b
        held = -(-n // b) - first_block  # ceil(n / b) - floor(first / b)
        shared = np.maximum(0, int(prefix) // b - first_block)
        return held - shared

    def vllm_blocks_at_max_len(self, max_model_len: int, max_num_batched_tokens: int, block_size: int) -> int:
        """Blocks ONE group needs for a max_model_len request in vLLM's concurrency count (module docstring)."""
        L, B = int(max_model_len), int(block_size)
        if self.kind == "global":
            return -(-L // B)
        if self.kind == "sliding":
            return -(-min(int(self.window) - 1 + int(max_num_batched_tokens), L) // B) + 1
        return -(-min(int(self.window) + int(max_num_batched_tokens), L) // B)


def kv_group_kinds(spec: ModelSpec, engine: str = "none") -> tuple[KVGroupKind, ...]:
    """The model's attention kinds with the engine's group cut (module docstring)."""
    counts: dict[tuple[str, int | None], int] = {}
    for layer in spec.layers:
        key = (layer.attn, layer.window)
        counts[key] = counts.get(key, 0) + 1
    if engine == "vllm":
        lo, hi = min(counts.values()), max(counts.values())
        g = hi if hi < lo * 1.5 else lo
    else:
        g = reduce(math.gcd, counts.values())
    return tuple(KVGroupKind(kind, window, c, g) for (kind, window), c in counts.items())


@dataclass(frozen=True)
class KVLayout:
    """The paged KV cache of one deployment: groups, block size and the bytes of one block per stage."""

    groups: tuple[KVGroupKind, ...]
    block_size: int
    kv_bytes_per_token_per_layer: int  # one GPU
    stage_block_bytes: tuple[int, ...]  # bytes of one block on one GPU of each pipeline stage

    @property
    def n_groups(self) -> int:
        return sum(k.n_groups for k in self.groups)

    @property
    def block_bytes_per_gpu(self) -> int:
        """Bytes of one block on the stage with the largest blocks."""
        return max(self.stage_block_bytes)

    def blocks_per_request(self, n, prefix: int = 0) -> np.ndarray:
        """Private blocks one request of context n holds, summed over groups (int64 over n)."""
        n = np.atleast_1d(np.asarray(n, dtype=np.int64))
        total = np.zeros_like(n)
        for k in self.groups:
            total = total + k.n_groups * k.blocks_held(n, self.block_size, prefix)
        return total

    def shared_prefix_blocks(self, prefix: int, shortest_n: int) -> int:
        """Blocks the shared prefix occupies once per pool (windowed groups: the part the shortest
        request still attends)."""
        if prefix <= 0:
            return 0
        b = self.block_size
        out = 0
        for k in self.groups:
            first_block = int(k.first_held_position(np.array([shortest_n]))[0]) // b
            out += k.n_groups * max(0, prefix // b - first_block)
        return out

    def vllm_blocks_at_max_len(self, max_model_len: int, max_num_batched_tokens: int) -> int:
        return sum(k.n_groups * k.vllm_blocks_at_max_len(max_model_len, max_num_batched_tokens, self.block_size)
                   for k in self.groups)


def kv_layout(spec: ModelSpec, fmt: KVFormat, par: Parallel = Parallel(), *, engine: str = "none",
              block_size: int = 16) -> KVLayout:
    """Groups of the whole model and the per-stage block bytes (module docstring)."""
    if block_size <= 0:
        raise LcprofError(f"block size must be a positive number of tokens, got {block_size}")
    groups = kv_group_kinds(spec, engine)
    per_layer = kv_bytes_per_token_per_layer(spec, fmt, par.tp)
    stage_bytes = []
    for layers in par.stages(spec):
        on_stage = {(k.kind, k.window): k.n_groups for k in groups}
        counts: dict[tuple, int] = {}
        for i in layers:
            key = (spec.layers[i].attn, spec.layers[i].window)
            counts[key] = counts.get(key, 0) + 1
        widest = max(-(-c // on_stage[key]) for key, c in counts.items())
        if par.pp == 1:
            widest = max(k.layers_per_group for k in groups)
        stage_bytes.append(int(block_size) * widest * per_layer)
    return KVLayout(groups, int(block_size), per_layer, tuple(stage_bytes))


@dataclass(frozen=True)
class MemoryStage:
    """One GPU's memory as the engine accounts for it, and the KV pool of one attention-DP rank."""

    limits: E.EngineLimits
    layout: KVLayout
    weights: WeightBytes  # the binding stage's
    decode_weights: WeightBytes  # the heaviest stage's: what a decode step reads per GPU
    stage: int  # the pipeline stage with the fewest blocks
    requested_bytes_per_gpu: int
    weights_bytes_per_gpu: int
    activation_bytes_per_gpu: int
    activation_tokens: int
    kv_budget_bytes_per_gpu: int
    kv_pool_blocks: int
    kv_cache_tokens: int  # what the engine logs ("GPU KV cache size", SGLang #tokens)
    max_concurrency_at_max_len: float | None
    max_num_seqs: int | None  # resolved cap on running requests per DP rank (None: none)
    startup_log: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def stage_weights(spec: ModelSpec, dep) -> list[WeightBytes]:
    """Weights of one GPU of every pipeline stage, as the deployment's engine loads them."""
    engine = dep.limits.engine
    pad = VOCAB_PADDING if engine != "none" else 1
    return [weight_bytes_per_gpu(spec, dep.precision.weights, dep.par.sharding(spec, s, pad),
                                 engine_buffers=engine != "none",
                                 mla_dequant_copies=engine == "vllm")
            for s in range(dep.par.pp)]


def stage_activation_bytes(spec: ModelSpec, dep, tokens) -> list[np.ndarray]:
    """Activation bytes the engine subtracts, per stage (arrays over ``tokens``): vLLM its profile
    run at ``tokens``; none the unfused reserve of a ``tokens`` prefill; SGLang nothing (reserve)."""
    lim, par = dep.limits, dep.par
    stages = par.stages(spec)
    tokens = np.asarray(tokens, dtype=np.int64)
    if lim.engine == "sglang":
        return [np.zeros(tokens.shape, dtype=np.int64) for _ in stages]
    if lim.engine == "vllm":
        rows = min(lim.max_num_seqs, int(np.max(tokens)))
        return [engine_activation_peak_bytes(spec, tokens, rows, par, act_dtype=dep.precision.act_dtype,
                                             layers=layers, last_stage=i == len(stages) - 1)
                for i, layers in enumerate(stages)]
    return [unfused_activation_peak_bytes(spec, tokens.ravel(), par, act_dtype=dep.precision.act_dtype,
                                          layers=layers).reshape(tokens.shape) for layers in stages]


def heaviest_stage(weights: list[WeightBytes]) -> WeightBytes:
    """The stage whose GPUs hold the most weight bytes (decode reads it on the critical path)."""
    return max(weights, key=lambda w: w.total_bytes)


def pool_blocks(dep, layout: KVLayout, weights: list[WeightBytes], activations: list, util=None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pool blocks, KV budget of the binding stage, binding stage index), broadcast over util and the
    activation arrays. The pool has the block count of the stage with the fewest blocks."""
    best = budget_best = stage_best = None
    for s, (w, a) in enumerate(zip(weights, activations)):
        budget = E.kv_budget_bytes(dep.limits, weights_bytes=w.total_bytes, activation_bytes=a, util=util)
        blocks = np.where(budget > 0, budget // layout.stage_block_bytes[s], 0)
        if best is None:
            best, budget_best, stage_best = blocks, budget, np.zeros(np.shape(blocks), dtype=np.int64)
        else:
            take = blocks < best
            best = np.where(take, blocks, best)
            budget_best = np.where(take, budget, budget_best)
            stage_best = np.where(take, s, stage_best)
    return best, budget_best, stage_best


def _fit_error(spec: ModelSpec, dep, w: int, requested: float) -> str:
    lim = dep.limits
    short = w - requested
    what = f"{spec.name} ({dep.precision.weights.name} weights, {dep.par.label})"
    return (f"{what} does not fit the GPUs: {gib(w):.2f} GiB of weights per GPU > {gib(requested):.2f} GiB "
            f"{'requested' if lim.engine != 'none' else 'usable'} ({lim.memory_utilization:g} x "
            f"{gib(lim.gpu_memory_bytes):.2f} GiB); missing {gib(short):.2f} GiB per GPU; raise --tp/--pp/--ep, "
            f"quantize the weights (--weights fp8) or use a larger GPU")


def memory_stage(spec: ModelSpec, dep, longest_new: int) -> MemoryStage:
    """The memory stage of one plan (raises LcprofError when the model or one request does not fit)."""
    lim = dep.limits
    layout = kv_layout(spec, dep.precision.kv, dep.par, engine=lim.engine, block_size=lim.block_size)
    weights = stage_weights(spec, dep)
    if lim.engine == "vllm":
        act_tokens = lim.max_num_batched_tokens
    elif lim.engine == "none":
        act_tokens = min(lim.max_num_batched_tokens, longest_new) if lim.max_num_batched_tokens else longest_new
    else:
        act_tokens = lim.max_num_batched_tokens
    acts = [int(a) for a in stage_activation_bytes(spec, dep, np.array(act_tokens))]
    requested = float(E.requested_bytes(lim))
    heaviest = max(w.total_bytes for w in weights)
    if lim.kv_memory_bytes is None and heaviest > requested:
        raise LcprofError(_fit_error(spec, dep, heaviest, requested))
    blocks, budget, stage = (int(x) for x in pool_blocks(dep, layout, weights, acts))
    w, a = weights[stage].total_bytes, acts[stage]
    if budget <= 0:
        raise LcprofError(
            f"nothing left for KV with {spec.name} ({dep.par.label}): {gib(requested):.2f} GiB "
            f"{'requested' if lim.engine != 'none' else 'usable'} - {gib(w):.2f} GiB weights - {gib(a):.2f} GiB "
            f"activation ({act_tokens} tokens) - {gib(lim.non_torch_bytes + lim.cuda_graph_bytes):.2f} GiB "
            f"non-torch/graphs is {gib(budget):.2f} GiB, short by {gib(-budget):.2f} GiB per GPU; lower --chunk, "
            f"raise --tp or --memory-utilization")
    warned: list[str] = []
    conc = None
    seqs = lim.max_num_seqs
    log: list[str] = []
    if lim.engine == "vllm":
        per_req = layout.vllm_blocks_at_max_len(lim.max_model_len, lim.max_num_batched_tokens)
        conc = blocks / per_req
        tokens = int(conc * lim.max_model_len)
        if conc < 1:
            raise LcprofError(E.not_enough_for_one_request(
                lim.max_model_len, per_req * layout.block_bytes_per_gpu, budget,
                _vllm_estimated_max_len(layout, blocks, lim)))
        log = E.vllm_startup_log(weights_bytes=w, available_kv_bytes=budget, kv_tokens=tokens,
                                 max_model_len=lim.max_model_len, max_concurrency=conc,
                                 profiled=lim.kv_memory_bytes is None)
    elif lim.engine == "sglang":
        tokens = blocks * lim.block_size
        if seqs is None:
            seqs = E.sglang_max_running_requests(tokens, lim.max_model_len)
        log = E.sglang_startup_log(weights_bytes=w, tokens=tokens,
                                   kv_bytes_per_token=layout.kv_bytes_per_token_per_layer * len(dep.par.stages(spec)[stage]),
                                   mla=spec.mla is not None, chunk=lim.max_num_batched_tokens, max_running=seqs,
                                   context_len=lim.max_model_len)
        reserve = (lim.gpu_memory_bytes - lim.non_torch_bytes) * (1 - lim.memory_utilization)
        need = int(engine_activation_peak_bytes(spec, [lim.max_num_batched_tokens], 1, dep.par,
                                                act_dtype=dep.precision.act_dtype, last_stage=False)[0])
        if need > reserve:
            warned.append(f"SGLang's reserve of {fmt_bytes(reserve)} (1 - mem_fraction_static) is smaller than the "
                          f"activation of a {lim.max_num_batched_tokens}-token chunk ({fmt_bytes(need)}): it may OOM")
    else:
        tokens = blocks * lim.block_size // max(layout.n_groups, 1)
    return MemoryStage(limits=lim, layout=layout, weights=weights[stage],
                       decode_weights=heaviest_stage(weights), stage=stage,
                       requested_bytes_per_gpu=int(requested), weights_bytes_per_gpu=w, activation_bytes_per_gpu=a,
                       activation_tokens=int(act_tokens) if lim.engine != "sglang" else 0,
                       kv_budget_bytes_per_gpu=budget, kv_pool_blocks=blocks, kv_cache_tokens=int(tokens),
                       max_concurrency_at_max_len=conc, max_num_seqs=seqs, startup_log=tuple(log),
                       warnings=tuple(warned))


def _vllm_estimated_max_len(layout: KVLayout, blocks: int, lim: E.EngineLimits) -> int:
    """vLLM's estimated maximum model length for the available memory (binary search)."""
    lo, hi = 0, lim.max_model_len
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if layout.vllm_blocks_at_max_len(mid, lim.max_num_batched_tokens) <= blocks:
            lo = mid
        else:
            hi = mid - 1
    return lo

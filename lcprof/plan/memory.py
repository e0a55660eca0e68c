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
  chunked-local managers do.
* **Hybrid models** (Mamba-1/2, Gated DeltaNet, KDA, lightning layers beside attention; vLLM
  ``HybridAttentionMambaModelConfig`` / ``Platform._align_hybrid_block_size`` and
  ``vllm/v1/kv_cache_interface.py`` ``MambaSpec``, commit 001cabc): every linear-time mixer is a
  cache of its own kind (``state``), grouped with the attention kinds by the same cut. One state
  page is the mixer's whole per-request state on one GPU (conv state in the activation dtype,
  recurrent state in ``--state-dtype``, default the config's, e.g. Qwen3.5's float32
  ``mamba_ssm_dtype``). vLLM raises the attention block size until one attention page holds a
  state page -- ``block = a x cdiv(state_page, a x kv_bytes_per_token_per_layer)`` with
  a = max(16, block_size) -- and pads the state page to the attention page, so every page has one
  size. A request holds, in each state group, ``pages`` pages whatever its length (1 with
  ``mamba_cache_mode`` none, prefix caching off; 2 with align, prefix caching on: the running
  state and its last block-aligned checkpoint), plus its attention blocks: displacement and
  concurrency count both. Qwen3-Next-80B-A3B (12 attention + 36 Gated DeltaNet layers, TP 1, bf16):
  state 1,097,728 B, attention 2,048 B/token -> block 16 x cdiv(1097728, 32768) = 544 tokens, page
  1,114,112 B (state padded 1.49%); groups of 12: one attention group, three state groups.
  A model without attention (Falcon-Mamba) has state pages only.
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


#: vLLM's kernel block alignment for the hybrid page unification: the smallest block the attention
#: kernels take (FlashAttention ``MultipleOf(16)``, FlashInfer 16), raised to the configured block size
#: (``vllm/platforms/interface.py`` ``_align_hybrid_block_size``; earlier
#: ``vllm/model_executor/models/config.py`` ``HybridAttentionMambaModelConfig``, commit 0144dd5: 16).
VLLM_HYBRID_BLOCK_ALIGNMENT = 16

#: State pages one request holds per state group, by vLLM ``mamba_cache_mode``
#: (``vllm/v1/kv_cache_interface.py`` ``MambaSpec.max_memory_usage_bytes``, commit 001cabc): ``none``
#: (prefix caching off) the running state; ``align`` (prefix caching on) the running state plus the
#: last block-aligned checkpoint.
STATE_PAGES = {"none": 1, "align": 2}


@dataclass(frozen=True)
class KVGroupKind:
    """All the layers of one cache kind, cut into ``n_groups`` KV groups of ``layers_per_group``
    (the last one padded when they do not divide). Kinds: ``global``, ``sliding``, ``chunked``,
    ``sparse`` (DSA: every token kept), ``masked`` (a ``--mask`` what-if on every attention
    layer) and ``state`` (a linear-time mixer's constant per-request state: ``pages`` pages a
    request, whatever its length)."""

    kind: str
    window: int | None
    n_layers: int
    layers_per_group: int
    mixer: str | None = None  # state: the mixer kind (mamba, mamba2, gated_deltanet, kda, lightning)
    pages: int = 1  # state: pages one request holds in each group
    mask: object = None  # masked: the lcprof.cost.masks.Mask

    @property
    def n_groups(self) -> int:
        return -(-self.n_layers // self.layers_per_group)

    @property
    def padding_layers(self) -> int:
        return self.n_groups * self.layers_per_group - self.n_layers

    @property
    def label(self) -> str:
        if self.kind == "state":
            return f"state:{self.mixer}"
        if self.kind == "masked":
            return f"mask:{self.mask.text()}"
        return self.kind if self.window is None else f"{self.kind}:{self.window}"

    def first_held_position(self, n) -> np.ndarray:
        """Position of the oldest token a layer of this kind still attends at context n (array over
        n); a state layer holds no tokens (n)."""
        n = np.asarray(n, dtype=np.int64)
        if self.kind in ("global", "sparse"):
            return np.zeros_like(n)
        if self.kind == "sliding":
            return np.maximum(0, n - int(self.window))
        if self.kind == "chunked":
            return int(self.window) * ((n - 1) // int(self.window))
        if self.kind == "state":
            return n.copy()
        if self.kind == "masked":
            return n - np.asarray(self.mask.kv_tokens(n), dtype=np.int64)
        raise LcprofError(f"unknown attention kind {self.kind!r}")  # pragma: no cover - LayerSpec validates

    def blocks_held(self, n, block_size: int, prefix=0) -> np.ndarray:
        """Blocks ONE group holds privately for a request of context n (int64 over n); full prefix
        blocks still attended are shared (``prefix``). A state group holds ``pages`` whatever n; a
        masked group the mask's reserved tokens packed into blocks (nothing shared)."""
        n = np.asarray(n, dtype=np.int64)
        b = int(block_size)
        if self.kind == "state":
            return np.full(n.shape, int(self.pages), dtype=np.int64)
        if self.kind == "masked":
            return _cdiv(np.asarray(self.mask.kv_tokens(n), dtype=np.int64), b)
        first_block = self.first_held_position(n) // b
        held = -(-n // b) - first_block  # ceil(n / b) - floor(first / b)
        shared = np.maximum(0, int(prefix) // b - first_block)
        return held - shared

    def vllm_blocks_at_max_len(self, max_model_len: int, max_num_batched_tokens: int, block_size: int) -> int:
        """Blocks ONE group needs for a max_model_len request in vLLM's concurrency count (module docstring)."""
        L, B = int(max_model_len), int(block_size)
        if self.kind in ("global", "sparse"):
            return -(-L // B)
        if self.kind == "sliding":
            return -(-min(int(self.window) - 1 + int(max_num_batched_tokens), L) // B) + 1
        if self.kind == "state":
            return int(self.pages)
        if self.kind == "masked":
            return int(_cdiv(int(self.mask.kv_tokens(np.array([L]))[0]), B))
        return -(-min(int(self.window) + int(max_num_batched_tokens), L) // B)


def _cache_entries(spec: ModelSpec, mask=None) -> list[tuple[int, tuple]]:
    """(layer index, cache key) of every cache one request holds: one per attention layer (key:
    its kind and window, or ``masked``) and one per linear-time mixer of a layer (key: ``state``
    and the mixer kind), as vLLM registers one KV-cache spec per attention or Mamba module."""
    out = []
    for i, layer in enumerate(spec.layers):
        if layer.has_attention:
            out.append((i, ("masked", None) if mask is not None else (layer.attn, layer.window)))
        for m in layer.mixers:
            if m != "attention":
                out.append((i, ("state", m)))
    return out


def _group_size(counts, engine: str) -> int:
    if engine == "vllm":
        lo, hi = min(counts), max(counts)
        return hi if hi < lo * 1.5 else lo
    return reduce(math.gcd, counts)


def kv_group_kinds(spec: ModelSpec, engine: str = "none", *, mask=None, state_pages: int = 1
                   ) -> tuple[KVGroupKind, ...]:
    """The model's cache kinds with the engine's group cut (module docstring)."""
    counts: dict[tuple, int] = {}
    for _, key in _cache_entries(spec, mask):
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        raise LcprofError(f"{spec.name} holds no KV and no state per request; there is nothing to plan")
    g = _group_size(list(counts.values()), engine)
    out = []
    for (kind, window), c in counts.items():
        if kind == "state":
            out.append(KVGroupKind("state", None, c, g, mixer=window, pages=int(state_pages)))
        elif kind == "masked":
            out.append(KVGroupKind("masked", None, c, g, mask=mask))
        else:
            out.append(KVGroupKind(kind, window, c, g))
    return tuple(out)


def hybrid_block_size(block_size: int, attn_bytes_per_token: int, state_page_bytes: int) -> int:
    """The attention block size vLLM uses so that one attention page (block x bytes per token of one
    layer) holds at least one state page: ``a x cdiv(state, a x per_token)`` tokens with a =
    max(16, block_size), or the configured block when that is larger (``_align_hybrid_block_size``).
    The state page is then padded to the attention page, so every page of the pool has one size."""
    if state_page_bytes <= 0 or attn_bytes_per_token <= 0:
        return int(block_size)
    a = max(VLLM_HYBRID_BLOCK_ALIGNMENT, int(block_size))
    return max(int(block_size), a * int(_cdiv(state_page_bytes, a * attn_bytes_per_token)))


@dataclass(frozen=True)
class KVLayout:
    """The paged KV cache of one deployment: groups, block size and the bytes of one block per stage.

    ``page_bytes_per_gpu`` is one layer's page (block_size tokens of attention KV, or one padded
    state); a block is ``layers_per_group`` pages (one per layer of a group)."""

    groups: tuple[KVGroupKind, ...]
    block_size: int
    kv_bytes_per_token_per_layer: int  # one GPU, an attention layer
    stage_block_bytes: tuple[int, ...]  # bytes of one block on one GPU of each pipeline stage
    configured_block_size: int = 0  # the engine's block size before the hybrid unification
    state_page_bytes: int = 0  # one layer's state on one GPU, unpadded (0: no state)
    page_bytes_per_gpu: int = 0
    attention_layers_per_stage: tuple[int, ...] = ()

    @property
    def n_groups(self) -> int:
        return sum(k.n_groups for k in self.groups)

    @property
    def n_attention_groups(self) -> int:
        return sum(k.n_groups for k in self.groups if k.kind != "state")

    @property
    def n_state_groups(self) -> int:
        return sum(k.n_groups for k in self.groups if k.kind == "state")

    @property
    def state_pages_per_request(self) -> int:
        return sum(k.n_groups * k.pages for k in self.groups if k.kind == "state")

    @property
    def block_bytes_per_gpu(self) -> int:
        """Bytes of one block on the stage with the largest blocks."""
        return max(self.stage_block_bytes)

    def kv_bytes_per_token_per_gpu(self, stage: int | None = None) -> int:
        """Attention KV bytes one token adds on one GPU of ``stage`` (default: the stage with the most
        attention layers), before window caps."""
        layers = (max(self.attention_layers_per_stage) if stage is None
                  else self.attention_layers_per_stage[stage])
        return self.kv_bytes_per_token_per_layer * layers

    def blocks_per_request(self, n, prefix: int = 0) -> np.ndarray:
        """Private blocks one request of context n holds, summed over groups (int64 over n)."""
        n = np.atleast_1d(np.asarray(n, dtype=np.int64))
        total = np.zeros_like(n)
        for k in self.groups:
            total = total + k.n_groups * k.blocks_held(n, self.block_size, prefix)
        return total

    def shared_prefix_blocks(self, prefix: int, shortest_n: int) -> int:
        """Blocks the shared prefix occupies once per pool (windowed groups: the part the shortest
        request still attends; state and masked groups share nothing)."""
        if prefix <= 0:
            return 0
        b = self.block_size
        out = 0
        for k in self.groups:
            if k.kind in ("state", "masked"):
                continue
            first_block = int(k.first_held_position(np.array([shortest_n]))[0]) // b
            out += k.n_groups * max(0, prefix // b - first_block)
        return out

    def vllm_blocks_at_max_len(self, max_model_len: int, max_num_batched_tokens: int) -> int:
        return sum(k.n_groups * k.vllm_blocks_at_max_len(max_model_len, max_num_batched_tokens, self.block_size)
                   for k in self.groups)

    def hybrid_log(self) -> list[str]:
        """What vLLM logs when it unifies the attention and state pages (its own words)."""
        if not self.state_page_bytes or not self.kv_bytes_per_token_per_layer:
            return []
        lines = []
        if self.block_size != self.configured_block_size:
            lines.append(f"Setting attention block size to {self.block_size} tokens to ensure that attention "
                         "page size is >= mamba page size.")
        if self.page_bytes_per_gpu != self.state_page_bytes:
            pct = 100 * (self.page_bytes_per_gpu - self.state_page_bytes) / self.state_page_bytes
            lines.append(f"Padding mamba page size by {pct:.2f}% to ensure that mamba page size and attention "
                         "page size are exactly equal.")
        return lines


def state_page_bytes(spec: ModelSpec, tp: int = 1, *, dtype: str = "bf16", state_dtype: str | None = None) -> int:
    """One layer's state on one GPU (the largest of the model's mixer kinds): conv state in ``dtype``,
    recurrent state in ``state_dtype`` (``lcprof.cost.kinds``; vLLM ``MambaSpec.page_size_bytes``)."""
    from lcprof.cost.kinds import mixer_state_bytes

    kinds = {m for layer in spec.layers for m in layer.mixers if m != "attention"}
    return max([int(mixer_state_bytes(spec.mixer(m), dtype, state_dtype=state_dtype, tp=tp)) for m in kinds],
               default=0)


def deployment_layout(dep, par: Parallel | None = None) -> KVLayout:
    """The paged cache of a deployment (its KV format, state dtype, engine, block size, state pages
    and mask what-if), optionally on another parallel layout (the grid)."""
    lim, prec = dep.limits, dep.precision
    return kv_layout(dep.spec, prec.kv, dep.par if par is None else par, engine=lim.engine,
                     block_size=lim.block_size, mask=dep.mask, state_dtype=prec.state_dtype,
                     state_pages=STATE_PAGES[lim.mamba_cache_mode], act_dtype=prec.act_dtype)


def kv_cache_tokens(layout: KVLayout, lim, pool) -> np.ndarray:
    """The token count the engine logs for a pool of ``pool`` blocks (int64, broadcasts): vLLM
    int(max concurrency x max_model_len), as vLLM 0.24 prints it (a Qwen3.6 log, tests/plan/
    test_hybrid.py); ``kv_cache_utils._report_kv_cache_config`` up to 0.19 and at commit 001cabc printed
    num_blocks // len(groups) x the smallest block size instead, which differs for hybrid models
    (vllm-project/vllm issue 40691) and agrees for one full-attention group when the block divides
    max_model_len. SGLang its #tokens (pool x page); none the tokens one request could hold over the
    attention groups after its state pages."""
    pool = np.asarray(pool, dtype=np.int64)
    if lim.engine == "vllm":
        need = layout.vllm_blocks_at_max_len(lim.max_model_len, lim.max_num_batched_tokens)
        return (pool / need * lim.max_model_len).astype(np.int64)
    if lim.engine == "sglang":
        return pool * lim.block_size
    attn = layout.n_attention_groups
    if attn == 0:
        return np.zeros_like(pool)
    return np.maximum(pool - layout.state_pages_per_request, 0) * layout.block_size // attn


def kv_layout(spec: ModelSpec, fmt: KVFormat, par: Parallel = Parallel(), *, engine: str = "none",
              block_size: int = 16, mask=None, state_dtype: str | None = None, state_pages: int = 1,
              act_dtype: str = "bf16") -> KVLayout:
    """Groups of the whole model and the per-stage block bytes (module docstring)."""
    if block_size <= 0:
        raise LcprofError(f"block size must be a positive number of tokens, got {block_size}")
    groups = kv_group_kinds(spec, engine, mask=mask, state_pages=state_pages)
    per_layer = kv_bytes_per_token_per_layer(spec, fmt, par.tp)
    state = state_page_bytes(spec, par.tp, dtype=act_dtype, state_dtype=state_dtype)
    block = hybrid_block_size(block_size, per_layer, state)
    page = block * per_layer if per_layer else state
    entries = _cache_entries(spec, mask)
    on_stage = {("state", k.mixer) if k.kind == "state" else (("masked", None) if k.kind == "masked"
                                                              else (k.kind, k.window)): k.n_groups for k in groups}
    stage_bytes, attn_layers = [], []
    for layers in par.stages(spec):
        members = set(layers)
        counts: dict[tuple, int] = {}
        for i, key in entries:
            if i in members:
                counts[key] = counts.get(key, 0) + 1
        widest = max([-(-c // on_stage[key]) for key, c in counts.items()], default=1)
        if par.pp == 1:
            widest = max(k.layers_per_group for k in groups)
        stage_bytes.append(int(widest * page))
        attn_layers.append(sum(1 for i in layers if spec.layers[i].has_attention))
    return KVLayout(groups, int(block), per_layer, tuple(stage_bytes), configured_block_size=int(block_size),
                    state_page_bytes=int(state), page_bytes_per_gpu=int(page),
                    attention_layers_per_stage=tuple(attn_layers))


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
    layout = deployment_layout(dep)
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
        tokens = int(kv_cache_tokens(layout, lim, blocks))
        if conc < 1:
            raise LcprofError(E.not_enough_for_one_request(
                lim.max_model_len, per_req * layout.block_bytes_per_gpu, budget,
                _vllm_estimated_max_len(layout, blocks, lim)))
        log = layout.hybrid_log() + E.vllm_startup_log(
            weights_bytes=w, available_kv_bytes=budget, kv_tokens=tokens, max_model_len=lim.max_model_len,
            max_concurrency=conc, profiled=lim.kv_memory_bytes is None)
    elif lim.engine == "sglang":
        tokens = int(kv_cache_tokens(layout, lim, blocks))
        if seqs is None:
            seqs = E.sglang_max_running_requests(tokens, lim.max_model_len)
        log = E.sglang_startup_log(weights_bytes=w, tokens=tokens,
                                   kv_bytes_per_token=layout.kv_bytes_per_token_per_gpu(stage),
                                   mla=spec.mla is not None, chunk=lim.max_num_batched_tokens, max_running=seqs,
                                   context_len=lim.max_model_len)
        reserve = (lim.gpu_memory_bytes - lim.non_torch_bytes) * (1 - lim.memory_utilization)
        need = int(engine_activation_peak_bytes(spec, [lim.max_num_batched_tokens], 1, dep.par,
                                                act_dtype=dep.precision.act_dtype, last_stage=False)[0])
        if need > reserve:
            warned.append(f"SGLang's reserve of {fmt_bytes(reserve)} (1 - mem_fraction_static) is smaller than the "
                          f"activation of a {lim.max_num_batched_tokens}-token chunk ({fmt_bytes(need)}): it may OOM")
    else:
        tokens = int(kv_cache_tokens(layout, lim, blocks))
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

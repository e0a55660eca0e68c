"""Peak activation memory of an engine's profile run (or of lcprof's measured layer), per GPU. No torch.

Two layouts:

* ``unfused`` -- transformers' (and lcprof's measured layer), counted step by step by
  ``lcprof.cost.model.activation_bytes`` (tiled attention): the ``none`` engine's reserve.
* ``fused`` -- vLLM's and SGLang's model code, which :func:`engine_activation_peak_bytes` counts.
  The engine measures the torch allocator's peak while it runs one forward pass of
  ``tokens`` = max_num_batched_tokens tokens (vLLM ``GPUModelRunner.profile_run``) and then the
  sampler on ``rows`` = min(max_num_seqs, tokens) logits rows (``_dummy_sampler_run``). Per token
  and per rank (bf16 activations, ``s`` bytes; ``h`` hidden size; widths split by TP):

    dense MLP   s (h residual + h input + gate_up (2 I/tp) + act (I/tp) + h output)
                (``MergedColumnParallelLinear`` gate_up -> ``SiluAndMul`` -> ``RowParallelLinear``;
                the residual stream is kept by the fused add + RMSNorm)
    MoE         s (h residual + h input + router E + k x max(2 I_e, h) + k x I_e + h shared output
                + h output) + 8 k (fp32 top-k weights, int32 ids)
                (``fused_experts``: ``intermediate_cache1``/``cache3`` share one buffer of
                k x max(N, K) per token, ``cache2`` is k x N/2; I_e is one expert's width on this
                GPU: whole under expert parallel, / (tp x dp) otherwise)
    attention   s (h residual + h input + q, k, v of this rank + attention output + h output);
                MLA: q (H/tp x qk), the latent (kv_lora + rope), the decompressed K/V
                (H/tp x (nope + v)), keys and values as the kernel sees them (H/tp x qk each,
                V padded to the QK width) and the output (H/tp x qk)

  and the sampler (``vllm/v1/sample/sampler.py``: bf16 logits, their fp32 copy, the softmax
  probabilities and the exponential noise of random sampling) holds
  ``rows x vocab x (2 + 4 + 4 + 4)`` bytes while the forward's output (tokens x h x s) lives on.
  The peak is the larger of the largest per-token step x tokens and the sampler's.

Checked against vLLM's own log (``tests/plan/test_engine_logs.py``): Llama-3.1-8B at 20000 and
29000 tokens, 2.07 and 2.99 GiB of activation peak.
"""

from __future__ import annotations

import numpy as np

from lcprof.cost.model import activation_bytes, kv_heads_per_gpu
from lcprof.errors import LcprofError
from lcprof.plan.parallel import Parallel
from lcprof.spec import LayerSpec, ModelSpec
from lcprof.units import dtype_bytes

#: Bytes per (row, vocab entry) the sampler holds: bf16 logits, fp32 logits, fp32 probs, fp32 noise.
SAMPLER_BYTES_PER_LOGIT = 2 + 4 + 4 + 4
#: fp32 top-k weights and int32 expert ids per token per routed expert.
TOPK_BYTES_PER_CHOICE = 4 + 4


def _layer_kinds(spec: ModelSpec, layers) -> list[LayerSpec]:
    kinds: dict[tuple, LayerSpec] = {}
    for i in layers:
        layer = spec.layers[i]
        kinds.setdefault((layer.attn, layer.window, layer.moe, layer.rope, layer.mixers, layer.mlp), layer)
    return list(kinds.values())


def fused_step_bytes_per_token(spec: ModelSpec, layer: LayerSpec, par: Parallel, act_dtype: str = "bf16") -> float:
    """The largest per-token live bytes of one layer's forward in the engines' fused layout."""
    s = dtype_bytes(act_dtype)
    h, Hr = spec.hidden_size, spec.n_heads // par.tp
    base = 2 * h  # residual stream + the normed input of the block
    steps = [mixer_step_elements(spec, kind, par) for kind in layer.mixers if kind != "attention"]
    if not layer.has_attention:
        attn = max(steps, default=0)
    elif spec.mla is None:
        kvh = kv_heads_per_gpu(spec, par.tp)
        attn = base + Hr * spec.head_dim + kvh * (spec.head_dim + spec.v_head_dim) + Hr * spec.v_head_dim + h
    else:
        m = spec.mla
        attn = (base + Hr * m.qk_head_dim + m.cache_dim + Hr * (m.qk_nope_head_dim + m.v_head_dim)
                + 3 * Hr * m.qk_head_dim + h)
    attn = max([attn] + steps)
    if not layer.mlp:
        return s * attn
    if spec.parallel_block and layer.mixers:  # Cohere 2: the attention output waits beside the MLP's input
        base = base + h
    gated = 2 if spec.mlp_gated else 1
    if layer.moe and spec.moe is not None:
        e = spec.moe
        width = e.expert_intermediate_size if par.expert_parallel else e.expert_intermediate_size / par.expert_shards
        mlp = (base + e.n_experts + e.n_active * (max(gated * width, h) + width) + (h if e.n_shared else 0) + h)
        extra = e.n_active * TOPK_BYTES_PER_CHOICE
    else:
        width = spec.intermediate_size / par.tp
        mlp = base + gated * width + width + h
        extra = 0
    return max(s * attn, s * mlp + extra)


def mixer_step_elements(spec: ModelSpec, kind: str, par: Parallel) -> int:
    """Elements per token live at a linear-time mixer's widest step on one TP rank, fused: the
    residual and normed input, the input projections' outputs (vLLM's column-parallel in_proj) and
    the block's output."""
    from lcprof.cost.kinds import per_rank

    m = per_rank(spec.mixer(kind), par.tp)
    h = spec.hidden_size
    width = sum(lin.d_out for lin in m.linears() if lin.d_in == h and lin.d_out != h)
    return 2 * h + width + h


def engine_activation_peak_bytes(spec: ModelSpec, tokens, rows, par: Parallel = Parallel(), *,
                                 act_dtype: str = "bf16", layers=None, last_stage: bool = True) -> np.ndarray:
    """Peak torch-allocator bytes of the engines' profile run on one GPU (module docstring), int64 over tokens.

    ``layers``: the layer indices this GPU runs (a pipeline stage; default all); ``last_stage``:
    whether it also runs the LM head and the sampler.
    """
    t = np.asarray(tokens, dtype=np.float64)
    if np.any(t <= 0):
        raise LcprofError("the profile run needs a positive number of tokens")
    layers = range(spec.n_layers) if layers is None else layers
    per_token = max(fused_step_bytes_per_token(spec, layer, par, act_dtype) for layer in _layer_kinds(spec, layers))
    forward = t * per_token
    if not last_stage:
        return np.ceil(forward).astype(np.int64)
    r = np.minimum(np.asarray(rows, dtype=np.float64), t)
    sampler = t * spec.hidden_size * dtype_bytes(act_dtype) + r * spec.vocab_size * SAMPLER_BYTES_PER_LOGIT
    return np.ceil(np.maximum(forward, sampler)).astype(np.int64)


def unfused_activation_peak_bytes(spec: ModelSpec, tokens, par: Parallel = Parallel(), *, act_dtype: str = "bf16",
                                  layers=None) -> np.ndarray:
    """Peak activation bytes of a prefill of ``tokens`` in lcprof's measured (transformers) layout,
    tiled attention, one TP rank: the largest single-layer peak over the layer kinds (layers run one
    after another and free their activations; ``cost.activation_bytes(tp=...)``). int64 over tokens.

    Heads and MLP widths split ``tp`` ways; routed experts are counted at the active width, so a
    MoE layer's experts split like a dense MLP (lcprof's dense-equivalent layer)."""
    n = np.atleast_1d(np.asarray(tokens, dtype=np.float64))
    layers = range(spec.n_layers) if layers is None else layers
    peak = np.zeros_like(n)
    for layer in _layer_kinds(spec, layers):
        a = activation_bytes(spec, n, batch=1, dtype=act_dtype, family="tiled", layer=layer, tp=par.tp)
        peak = np.maximum(peak, a)
    return np.ceil(peak).astype(np.int64)

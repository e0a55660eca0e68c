"""Weight bytes as a serving engine loads them: per tensor class, per quantization format, per GPU. No torch.

A model's weights are a list of **matrices** (one per linear layer, in the merged form vLLM and
SGLang load: q/k/v as one ``qkv`` matrix, gate and up as one ``gate_up``), plus vectors (norms,
biases) and the embeddings. Each matrix belongs to a **tensor class**:

    embedding, lm_head, attention, mixer (Mamba, Mamba-2, Gated DeltaNet, lightning projections),
    mlp (dense), experts (routed), shared_experts, router, norm (every vector: norms, biases, sinks,
    conv taps, A/D/dt)

and a :class:`WeightFormat` says which classes it stores quantized and how many bytes a matrix
shard of shape (d_out, d_in) takes, scales included (vectors stay in the plain dtype)::

    bf16   2 d_in d_out
    fp8    d_in d_out + 4 ceil(d_out/128) ceil(d_in/128)        fp32 scale per 128x128 block
    int8   d_in d_out + 4 d_out                                 fp32 scale per output channel
    int4   d_in d_out / 2 + 2 d_out ceil(d_in/128)              bf16 scale per group of 128
    nvfp4  d_in d_out / 2 + d_out ceil(d_in/16) + 8             e4m3 scale per 16, two fp32 scalars
    mxfp4  d_in d_out / 2 + d_out ceil(d_in/32)                 e8m0 scale per 32 (experts only)

Sources (what each format's checkpoints and the engines' loaders hold):
  * fp8: DeepSeek-V3's ``quantization_config`` (``weight_block_size: [128, 128]``, e4m3) and vLLM's
    ``Fp8LinearMethod`` block path (``weight_scale_inv`` of shape (ceil(out/128), ceil(in/128)), fp32);
  * int8: vLLM ``compressed_tensors_w8a8_int8`` channel strategy (``weight_scale`` [out, 1], fp32);
  * int4: vLLM ``compressed_tensors_wNa16`` (``weight_packed`` int32 [out, in/8], ``weight_scale``
    [out, in/group] in the activation dtype, group 128, symmetric: no zero points);
  * nvfp4: vLLM ``modelopt`` NVFP4 (``weight`` uint8 [out, in/2], ``weight_scale`` e4m3 [out, in/16],
    ``weight_scale_2`` and ``input_scale`` fp32 scalars);
  * mxfp4: vLLM ``Mxfp4Config`` (gpt-oss): only ``FusedMoE`` experts are quantized (uint8 blocks
    [.., in/2], e8m0 scales [.., in/32]); attention and dense layers stay unquantized.
Every format keeps the embedding, the LM head, the MoE router and the norms in the activation
dtype (bf16): the engines load them unquantized (``VocabParallelEmbedding``/``ParallelLMHead``
without a quant method; DeepSeek/Qwen routers are ``ReplicatedLinear(quant_config=None)``).

Sharding (vLLM/SGLang layout, one GPU of a replica): attention heads split ``tp`` ways (K/V
heads replicated when ``tp`` exceeds them); MLA's q_a and kv_a down-projections are replicated
(``ReplicatedLinear``), q_b/kv_b/o split; dense MLP width split ``tp``; routed experts either split
whole over ``expert_shards`` GPUs (expert parallel: E / shards experts each) or each expert's width
split ``expert_shards`` ways (tensor parallel over the MoE group); shared experts split ``tp``; the
router and norms replicated; the vocabulary (padded to a multiple of ``vocab_padding``, vLLM's
``DEFAULT_VOCAB_PADDING_SIZE = 64``) split ``tp`` ways (rounded up). A pipeline stage holds its own layers, the first
stage the embedding, the last the final norm and LM head (a tied LM head gets its own copy there).

Engine buffers loaded with the model (counted in vLLM's "Model loading took N GiB"):
  * the RoPE cos/sin cache, one per model: positions x rotary dims in the model dtype
    (``RotaryEmbedding._compute_cos_sin_cache``; positions = max_position_embeddings, x factor for
    linear/dynamic scaling, original x factor for YaRN, original + max for LongRoPE);
  * vLLM's MLA keeps bf16 copies of W_UK and W_UV when kv_b is quantized
    (``MLACommonImpl.process_weights_after_loading`` dequantizes kv_b_proj; unquantized, the
    copies are views).
Bytes are integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lcprof.cost.kinds.common import check_tp
from lcprof.cost.model import kv_heads_per_gpu
from lcprof.errors import LcprofError
from lcprof.spec import ModelSpec

TENSOR_CLASSES = ("embedding", "lm_head", "attention", "mixer", "mlp", "experts", "shared_experts", "router", "norm",
                  "buffers")

#: vLLM's VocabParallelEmbedding pads the vocabulary to a multiple of this (DEFAULT_VOCAB_PADDING_SIZE).
VOCAB_PADDING = 64

_LINEAR_CLASSES = ("attention", "mixer", "mlp", "experts", "shared_experts")


def _ceil(a: int, b: int) -> int:
    return -(-int(a) // int(b))


@dataclass(frozen=True)
class WeightFormat:
    """How a checkpoint stores its matrices: ``quantized`` classes in this format, the rest in
    ``plain_dtype`` (2 bytes for bf16/fp16, 4 for fp32); ``gemm_dtype`` is the rate its GEMMs run at."""

    name: str
    quantized: tuple[str, ...]
    gemm_dtype: str
    plain_bytes: int = 2
    note: str = ""

    def matrix_bytes(self, d_in: int, d_out: int, cls: str) -> int:
        """Bytes of one (d_out x d_in) matrix shard of tensor class ``cls``, scales included."""
        d_in, d_out = int(d_in), int(d_out)
        if d_in <= 0 or d_out <= 0:
            return 0
        if cls not in self.quantized or d_in == 1:  # vectors (biases, norms) are never quantized
            return self.plain_bytes * d_in * d_out
        n = self.name
        if n == "fp8":
            return d_in * d_out + 4 * _ceil(d_out, 128) * _ceil(d_in, 128)
        if n == "int8":
            return d_in * d_out + 4 * d_out
        if n == "int4":
            return _ceil(d_in * d_out, 2) + 2 * d_out * _ceil(d_in, 128)
        if n == "nvfp4":
            return _ceil(d_in * d_out, 2) + d_out * _ceil(d_in, 16) + 8
        if n == "mxfp4":
            return _ceil(d_in * d_out, 2) + d_out * _ceil(d_in, 32)
        raise LcprofError(f"weight format {n!r} has no quantized layout")  # pragma: no cover - table below


_QUANT = _LINEAR_CLASSES
WEIGHT_FORMATS: dict[str, WeightFormat] = {
    "fp32": WeightFormat("fp32", (), "fp32", plain_bytes=4),
    "fp16": WeightFormat("fp16", (), "fp16"),
    "bf16": WeightFormat("bf16", (), "bf16"),
    "fp8": WeightFormat("fp8", _QUANT, "fp8", note="W8A8 fp8 e4m3, 128x128 block scales"),
    "int8": WeightFormat("int8", _QUANT, "int8", note="W8A8 int8, per-channel scales"),
    "int4": WeightFormat("int4", _QUANT, "bf16", note="W4A16, group-128 scales; GEMMs dequantize to bf16"),
    "nvfp4": WeightFormat("nvfp4", _QUANT, "bf16",
                          note="NVFP4, e4m3 scale per 16; charged at the bf16 GEMM rate (no fp4 rate in the "
                               "GPU database: W4A16 as on Hopper, a lower bound on speed on Blackwell)"),
    "mxfp4": WeightFormat("mxfp4", ("experts",), "bf16",
                          note="MXFP4 routed experts only (vLLM Mxfp4Config); charged at the bf16 GEMM rate"),
}


def weight_format(name: str) -> WeightFormat:
    """The format named ``name``; raises LcprofError naming the accepted ones."""
    key = str(name).strip().lower()
    if key in ("bfloat16",):
        key = "bf16"
    if key not in WEIGHT_FORMATS:
        raise LcprofError(f"unknown weight format {name!r}; accepted: {', '.join(WEIGHT_FORMATS)}")
    return WEIGHT_FORMATS[key]


@dataclass(frozen=True)
class Sharding:
    """How one GPU's share of the weights is cut (see the module docstring).

    ``tp``: attention / dense tensor-parallel degree. ``expert_shards``: GPUs the routed experts
    are spread over (tp x attention-data-parallel ranks in vLLM and SGLang). ``expert_parallel``:
    True splits whole experts over them (EP), False splits every expert's width (TP over the MoE
    group). ``layers``: indices of the layers this GPU holds (a pipeline stage; None = all).
    ``first_stage``/``last_stage``: whether it holds the embedding / the final norm and LM head.
    """

    tp: int = 1
    expert_shards: int = 1
    expert_parallel: bool = False
    layers: tuple[int, ...] | None = None
    first_stage: bool = True
    last_stage: bool = True
    pipeline: bool = False  # more than one stage: a tied LM head needs its own copy on the last
    vocab_padding: int = 1

    def __post_init__(self) -> None:
        if self.tp <= 0 or self.expert_shards <= 0:
            raise LcprofError(f"shard counts must be positive, got tp={self.tp}, experts over {self.expert_shards}")


@dataclass(frozen=True)
class Matrix:
    """One weight tensor of a layer (a matrix shard, or a vector with d_in = 1) on one GPU."""

    name: str
    cls: str
    d_in: int
    d_out: int
    count: int = 1  # identical copies on this GPU (experts)


def _attention_matrices(spec: ModelSpec, layer, tp: int) -> list[Matrix]:
    """One attention layer's tensors on one GPU: projections (q/k/v merged), their biases, q/k norms,
    sinks, and a sparse layer's DSA indexer (replicated: vLLM builds it from ``ReplicatedLinear``)."""
    from lcprof.spec.params import attention_other_params

    h = spec.hidden_size
    out: list[Matrix] = []
    if spec.mla is None:
        d = spec.attn_dims(layer)
        Hr = check_tp(d.n_heads, tp, f"attention heads of {spec.name}")
        kvh = kv_heads_per_gpu(spec, tp, d)
        q_out = Hr * d.head_dim * (2 if spec.attn_output_gate else 1)  # an output gate doubles q_proj
        qkv_out = q_out + kvh * (d.head_dim + d.v_head_dim)
        out.append(Matrix("qkv", "attention", h, qkv_out))
        if spec.qkv_bias:
            out.append(Matrix("qkv_bias", "norm", 1, qkv_out))
        out.append(Matrix("o", "attention", Hr * d.v_head_dim, h))
        if spec.o_bias:
            out.append(Matrix("o_bias", "norm", 1, h))
        if spec.qk_norm == "head":  # one head_dim weight each, replicated
            out += [Matrix("q_norm", "norm", 1, d.head_dim), Matrix("k_norm", "norm", 1, d.head_dim)]
        elif spec.qk_norm == "full":  # over all heads: split with them
            out += [Matrix("q_norm", "norm", 1, Hr * d.head_dim), Matrix("k_norm", "norm", 1, kvh * d.head_dim)]
    else:
        m = spec.mla
        Hr = check_tp(spec.n_heads, tp, f"attention heads of {spec.name}")
        if m.q_lora_rank:
            out += [Matrix("q_a", "attention", h, m.q_lora_rank), Matrix("q_a_norm", "norm", 1, m.q_lora_rank),
                    Matrix("q_b", "attention", m.q_lora_rank, Hr * m.qk_head_dim)]
        else:
            out.append(Matrix("q", "attention", h, Hr * m.qk_head_dim))
        out += [Matrix("kv_a", "attention", h, m.cache_dim), Matrix("kv_a_norm", "norm", 1, m.kv_lora_rank),
                Matrix("kv_b", "attention", m.kv_lora_rank, Hr * (m.qk_nope_head_dim + m.v_head_dim)),
                Matrix("o", "attention", Hr * m.v_head_dim, h)]
    if layer.sinks:
        sinks = check_tp(spec.attn_dims(layer).n_heads, tp, f"attention heads of {spec.name}")
        out.append(Matrix("sinks", "norm", 1, sinks))
    if layer.attn == "sparse" and spec.indexer is not None:
        out += [Matrix(f"indexer.{lin.name}", "attention", lin.d_in, lin.d_out) for lin in spec.indexer.linears()]
        for k, v in attention_other_params(spec, layer).items():
            if k.startswith("indexer."):
                out.append(Matrix(k, "norm", 1, v))
    return out


#: Mixer projections sharded on their input (vLLM ``RowParallelLinear``); the rest split their output,
#: except the replicated ones (``ReplicatedLinear``: KDA's low-rank legs into head_dim, which TP does not split).
_ROW_PARALLEL = ("out_proj", "x_proj", "o_proj")
_REPLICATED_LINEARS = {("kda", "f_a_proj"), ("kda", "g_a_proj")}
#: Mixer vectors over one head's (or the low-rank) width, whole on every rank: Gated DeltaNet's gated
#: norm over head_v_dim, Jamba's dt/B/C RMSNorms. The others (conv taps, A, D, dt bias, Mamba-2's and
#: lightning's norms over all heads) split with the heads.
_REPLICATED_VECTORS = {("gated_deltanet", "norm"), ("kda", "o_norm"), ("mamba", "dt_layernorm"),
                       ("mamba", "b_layernorm"), ("mamba", "c_layernorm")}


def _mixer_matrices(spec: ModelSpec, layer, tp: int) -> list[Matrix]:
    """A layer's linear-time mixers (Mamba, Mamba-2, Gated DeltaNet, lightning) on one GPU, from the
    spec's own tensor lists (``lcprof.spec.mixers``): projections split ``tp`` ways (out_proj and
    x_proj on their input, the others on their output), the per-channel vectors (conv taps, A, D,
    dt bias, norms over all heads) split ``tp`` ways with them, per-head-width norms whole."""
    from lcprof.spec.model import MIXER_FIELDS

    out: list[Matrix] = []
    for kind in layer.mixers:
        if kind == "attention":
            continue
        mx = getattr(spec, MIXER_FIELDS[kind])
        for lin in mx.linears():
            what = f"{kind} {lin.name} width"
            if (kind, lin.name) in _REPLICATED_LINEARS:
                out.append(Matrix(f"{kind}.{lin.name}", "mixer", lin.d_in, lin.d_out))
            elif lin.name in _ROW_PARALLEL:
                d_in = check_tp(lin.d_in, tp, f"{what} of {spec.name}")
                out.append(Matrix(f"{kind}.{lin.name}", "mixer", d_in, lin.d_out))
                if lin.bias:
                    out.append(Matrix(f"{kind}.{lin.name}_bias", "norm", 1, lin.d_out))
            else:
                d_out = check_tp(lin.d_out, tp, f"{what} of {spec.name}")
                out.append(Matrix(f"{kind}.{lin.name}", "mixer", lin.d_in, d_out))
                if lin.bias:
                    out.append(Matrix(f"{kind}.{lin.name}_bias", "norm", 1, d_out))
        for k, v in mx.other_params().items():
            whole = (kind, k) in _REPLICATED_VECTORS
            size = v if whole else check_tp(v, tp, f"{kind} {k} size of {spec.name}")
            out.append(Matrix(f"{kind}.{k}", "norm", 1, size))
    return out


def _mlp_matrices(spec: ModelSpec, layer, sh: Sharding) -> list[Matrix]:
    if not layer.mlp:
        return []
    h = spec.hidden_size
    gated = 2 if spec.mlp_gated else 1
    if not (layer.moe and spec.moe is not None):
        wr = check_tp(spec.intermediate_size, sh.tp, f"MLP width of {spec.name}")
        out = [Matrix("gate_up", "mlp", h, gated * wr), Matrix("down", "mlp", wr, h)]
        if spec.mlp_bias:
            out += [Matrix("gate_up_bias", "norm", 1, gated * wr), Matrix("down_bias", "norm", 1, h)]
        return out
    e = spec.moe
    out = [Matrix("router", "router", h, e.n_experts)]
    if e.router_bias:
        out.append(Matrix("router_bias", "router", 1, e.n_experts))
    shards = sh.expert_shards
    if sh.expert_parallel:
        if e.n_experts % shards:
            raise LcprofError(f"expert parallel over {shards} GPUs does not divide {spec.name}'s "
                              f"{e.n_experts} routed experts")
        per, wr = e.n_experts // shards, e.expert_intermediate_size
    else:
        if e.expert_intermediate_size % shards:
            raise LcprofError(f"tensor parallel over {shards} GPUs does not divide {spec.name}'s expert "
                              f"width {e.expert_intermediate_size}")
        per, wr = e.n_experts, e.expert_intermediate_size // shards
    out += [Matrix("experts_gate_up", "experts", h, gated * wr, per), Matrix("experts_down", "experts", wr, h, per)]
    if e.expert_bias:  # gate/up biases split with the width, the down bias whole on every shard
        out += [Matrix("experts_gate_up_bias", "experts", 1, gated * wr, per),
                Matrix("experts_down_bias", "experts", 1, h, per)]
    if e.n_shared:
        s = e.n_shared * e.shared_intermediate_size
        sr = check_tp(s, sh.tp, f"shared-expert width of {spec.name}")
        out += [Matrix("shared_gate_up", "shared_experts", h, gated * sr),
                Matrix("shared_down", "shared_experts", sr, h)]
        if e.shared_gate:
            out.append(Matrix("shared_expert_gate", "router", h, 1))
    return out


def layer_matrices(spec: ModelSpec, layer_index: int, sh: Sharding) -> list[Matrix]:
    """The tensors of one decoder layer on one GPU (norms and biases as d_in = 1 vectors): its
    attention (if it attends), its linear-time mixers, its MLP (if it has one), its norms."""
    layer = spec.layers[int(layer_index)]
    norm_w = 2 * spec.hidden_size if spec.norm_bias else spec.hidden_size  # LayerNorm: weight and bias
    norms = [Matrix(f"norm{i}", "norm", 1, norm_w) for i in range(spec.norms_per_layer)]
    attn = _attention_matrices(spec, layer, sh.tp) if layer.has_attention else []
    return attn + _mixer_matrices(spec, layer, sh.tp) + _mlp_matrices(spec, layer, sh) + norms


def padded_vocab(spec: ModelSpec, padding: int) -> int:
    return _ceil(spec.vocab_size, padding) * int(padding)


def model_matrices(spec: ModelSpec, sh: Sharding) -> list[Matrix]:
    """Every tensor one GPU holds (its layers, plus embedding / LM head / final norm by stage)."""
    layers = range(spec.n_layers) if sh.layers is None else sh.layers
    out: list[Matrix] = []
    for i in layers:
        out += layer_matrices(spec, i, sh)
    rows = _ceil(padded_vocab(spec, sh.vocab_padding), sh.tp)  # vocabulary rows per rank
    if sh.first_stage:
        out.append(Matrix("embed_tokens", "embedding", spec.hidden_size, rows))
    if sh.last_stage:
        out.append(Matrix("final_norm", "norm", 1, 2 * spec.hidden_size if spec.norm_bias else spec.hidden_size))
        if not spec.tie_embeddings or (sh.pipeline and not sh.first_stage):
            out.append(Matrix("lm_head", "lm_head", spec.hidden_size, rows))
    return out


def matrix_params(m: Matrix) -> int:
    return m.count * m.d_in * m.d_out


def rope_cache_positions(spec: ModelSpec) -> int:
    """Positions of the RoPE cos/sin cache an engine builds (see the module docstring); 0 without RoPE."""
    r = spec.rope
    if r is None:
        return 0
    orig = r.original_max_position or spec.max_position_embeddings
    if r.type in ("linear", "dynamic"):
        return int(spec.max_position_embeddings * r.factor)
    if r.type == "yarn":
        return int(orig * r.factor)
    if r.type == "longrope":
        return int(orig + spec.max_position_embeddings)
    return int(spec.max_position_embeddings)


@dataclass(frozen=True)
class WeightBytes:
    """One GPU's weight bytes by tensor class (``by_class``), and their total."""

    by_class: dict = field(hash=False)
    total_bytes: int


def weight_bytes_per_gpu(spec: ModelSpec, fmt: WeightFormat | str, sh: Sharding = Sharding(), *,
                         engine_buffers: bool = False, mla_dequant_copies: bool = False) -> WeightBytes:
    """Bytes of the weights one GPU loads in ``fmt`` under ``sh``.

    ``engine_buffers`` adds the RoPE cos/sin cache (vLLM, SGLang); ``mla_dequant_copies`` adds
    vLLM's bf16 W_UK/W_UV copies of a quantized MLA kv_b (module docstring).
    """
    fmt = weight_format(fmt) if isinstance(fmt, str) else fmt
    by: dict[str, int] = {c: 0 for c in TENSOR_CLASSES}
    mats = model_matrices(spec, sh)
    for m in mats:
        by[m.cls] += m.count * fmt.matrix_bytes(m.d_in, m.d_out, m.cls)
    if engine_buffers and spec.rope is not None:
        rot = spec.mla.qk_rope_head_dim if spec.mla is not None else spec.rope.rotary_dim
        by["buffers"] += rope_cache_positions(spec) * rot * fmt.plain_bytes
    if mla_dequant_copies and spec.mla is not None and "attention" in fmt.quantized:
        kv_b = [m for m in mats if m.name == "kv_b"]
        by["buffers"] += sum(2 * m.d_in * m.d_out for m in kv_b)
    return WeightBytes(by_class=by, total_bytes=int(sum(by.values())))


def stage_layers(n_layers: int, pp: int) -> list[tuple[int, ...]]:
    """Layer indices of each pipeline stage, as vLLM partitions them (``vllm/distributed/utils.py``
    ``get_pp_indices``): n // pp each, the remainder added one by one from the second-to-last stage
    backwards (the first and last stages hold the embedding and the LM head)."""
    if pp <= 0 or pp > n_layers:
        raise LcprofError(f"pipeline parallel size {pp} must be in 1..{n_layers} (the model's layers)")
    parts = [n_layers // pp] * pp
    for i in range(2, n_layers % pp + 2):
        parts[-i] += 1
    out, start = [], 0
    for p in parts:
        out.append(tuple(range(start, start + p)))
        start += p
    return out


def total_params(spec: ModelSpec) -> int:
    """Parameters of the whole model counted from the tensors above (unpadded vocabulary, TP 1):
    an independent count to check against ``spec.param_counts``."""
    return sum(matrix_params(m) for m in model_matrices(spec, Sharding()))


# ----------------------------------------------------------------------------------------------
# Weight traffic per cost-model op, for a roofline whose weights are stored in another format
# ----------------------------------------------------------------------------------------------

def op_matrices(spec: ModelSpec, layer) -> dict[str, list[Matrix]]:
    """The weight matrices each op of ``lcprof.cost.ops.layer_ops`` reads in one layer (prefill
    form: MLA naive), unsharded; ``mlp/experts`` lists ONE expert. ``layer``: a ``LayerSpec``, or a
    bool for the model's first layer with (True) or without a MoE MLP."""
    from lcprof.spec.model import MIXER_FIELDS

    if isinstance(layer, bool):
        layer = next((x for x in spec.layers if x.moe == layer), spec.layers[0])
    h = spec.hidden_size
    out: dict[str, list[Matrix]] = {}
    if layer.has_attention and spec.mla is None:
        d = spec.attn_dims(layer)
        H = d.n_heads
        out["proj/q"] = [Matrix("q", "attention", h, H * d.head_dim * (2 if spec.attn_output_gate else 1))]
        out["proj/kv"] = [Matrix("kv", "attention", h, d.n_kv_heads * (d.head_dim + d.v_head_dim))]
        out["proj/o"] = [Matrix("o", "attention", H * d.v_head_dim, h)]
    elif layer.has_attention:
        m, H = spec.mla, spec.n_heads
        out["proj/q"] = ([Matrix("q_a", "attention", h, m.q_lora_rank),
                          Matrix("q_b", "attention", m.q_lora_rank, H * m.qk_head_dim)] if m.q_lora_rank
                         else [Matrix("q", "attention", h, H * m.qk_head_dim)])
        out["proj/kv_a"] = [Matrix("kv_a", "attention", h, m.cache_dim)]
        out["proj/kv_b"] = [Matrix("kv_b", "attention", m.kv_lora_rank, H * (m.qk_nope_head_dim + m.v_head_dim))]
        out["proj/o"] = [Matrix("o", "attention", H * m.v_head_dim, h)]
    if layer.has_attention and layer.attn == "sparse" and spec.indexer is not None:
        for lin in spec.indexer.linears():
            out[f"attn/indexer_{lin.name}"] = [Matrix(lin.name, "attention", lin.d_in, lin.d_out)]
    for kind in layer.mixers:
        if kind != "attention":
            for lin in getattr(spec, MIXER_FIELDS[kind]).linears():
                out.setdefault(f"mixer/{lin.name}", []).append(Matrix(lin.name, "mixer", lin.d_in, lin.d_out))
    if not layer.mlp:
        return out
    mats = 3 if spec.mlp_gated else 2
    if layer.moe and spec.moe is not None:
        e = spec.moe
        out["mlp/router"] = [Matrix("router", "router", h, e.n_experts)]
        out["mlp/experts"] = [Matrix("expert", "experts", h, e.expert_intermediate_size, mats)]
        if e.n_shared:
            out["mlp/shared"] = [Matrix("shared", "shared_experts", h, e.n_shared * e.shared_intermediate_size, mats)]
    else:
        if spec.mlp_gated:
            out["mlp/gate"] = [Matrix("gate", "mlp", h, spec.intermediate_size)]
        out["mlp/up"] = [Matrix("up", "mlp", h, spec.intermediate_size)]
        out["mlp/down"] = [Matrix("down", "mlp", spec.intermediate_size, h)]
    return out


def _format_bytes(fmt: WeightFormat, m: Matrix) -> int:
    """``m`` in ``fmt``; the (count) matrices of an expert or MLP are stored as gate_up + down."""
    if m.count == 1:
        return fmt.matrix_bytes(m.d_in, m.d_out, m.cls)
    gated = m.count - 1  # 3 matrices: gate_up (2 x width) + down; 2: up + down
    return fmt.matrix_bytes(m.d_in, gated * m.d_out, m.cls) + fmt.matrix_bytes(m.d_out, m.d_in, m.cls)


def op_weight_bytes_delta(spec: ModelSpec, fmt: WeightFormat, act_bytes: float, tokens) -> dict:
    """Per op name: (weights in ``fmt``) - (weights at ``act_bytes`` per element, as the cost model
    counts them), summed over the model's layers, for ``tokens`` tokens in the batch (the experts a
    batch touches: ``lcprof.cost.ops.experts_touched``). Arrays broadcast over tokens."""
    from lcprof.cost.ops import experts_touched

    t = np.asarray(tokens, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    counts: dict = {}
    for layer in spec.layers:  # layers of one shape share their matrices
        counts[layer] = counts.get(layer, 0) + 1
    for layer, count in counts.items():
        for op, ms in op_matrices(spec, layer).items():
            delta = float(sum(_format_bytes(fmt, m) - act_bytes * matrix_params(m) for m in ms))
            scale = experts_touched(spec.moe.n_experts, spec.moe.n_active, t) if op == "mlp/experts" else 1.0
            out[op] = out.get(op, 0.0) + count * delta * scale
    head = Matrix("lm_head", "lm_head", spec.hidden_size, spec.vocab_size)
    out["lm_head"] = fmt.matrix_bytes(head.d_in, head.d_out, head.cls) - act_bytes * matrix_params(head) + 0.0 * t
    return out

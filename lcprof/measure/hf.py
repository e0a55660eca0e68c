"""transformers as an implementation: its own decoder layers and model class, with lcprof's weights.

``HFModel(model, attn_implementation)`` builds the transformers causal-LM class of the spec's
``model_type`` from the spec's own config dict (``spec.config``, through ``AutoConfig.for_model``),
then copies the lcprof :class:`~lcprof.measure.model.Model`'s seeded weights into it, parameter by
parameter (:func:`weight_map`). Every transformers parameter must receive one: a parameter lcprof
does not model (Qwen3's q/k norms, Gemma-2's softcapping has none but changes the math) is refused
with one line, so the two implementations are known to compute the same function, which the
agreement checks (:func:`agree_model`, :func:`agree_layer`) then confirm in numbers.

Mapped model types (``SUPPORTED``): llama, mistral (sliding window), qwen2 (q/k/v bias, windowed
layers), phi3 (fused qkv and gate_up, LongRoPE), mixtral (routed MoE; transformers 5's fused expert
tensors or 4's per-expert w1/w2/w3), deepseek_v3 (MLA + MoE with shared experts), qwen3 (per-head
q/k RMSNorm), smollm3 (NoPE layers; attention_bias on q/k/v and o, mlp_bias), seed_oss (q/k/v biases,
attention_out_bias on o, mlp_bias), and the hybrids:

* qwen3_next -- Gated DeltaNet layers (``linear_attn``: in_proj_qkvz and in_proj_ba grouped per key
  head, :func:`_deltanet_map`), gated attention (one q_proj holding each head's query rows then its
  gate rows; q/k norms), MoE with a shared expert and its sigmoid gate; every RMSNorm but the
  DeltaNet's gated one is stored one-centred (``x * (1 + w)``: transformers' weight is lcprof's - 1);
* jamba -- Mamba-1 (``mamba``: lcprof's layouts, dt/B/C norms), NoPE attention, ``feed_forward``
  dense or routed (``router`` + ``experts``; top-k weights not renormalized);
* nemotron_h -- one ``norm`` + ``mixer`` block per layer: Mamba-2 (z | xBC | dt, grouped gated norm),
  NoPE attention, ReLU^2 MLP; its MoE block (``E``) is refused. transformers 5.2x clamps Mamba-2's
  dt from below at ``time_step_min`` (an init bound, 1e-3) in prefill only, not in its decode step;
  the reference Mamba-2 (mamba_ssm's ``dt_limit=(0, inf)``) and NVIDIA's own modeling code do not,
  nor does lcprof: the comparison sets the limit to (0, inf) (left in, the two differ by 6e-5 in
  prefill and 6e-4 in decode on the tiny config).

Decode from a random cache (:meth:`HFModel.decode_cache`, the sweep's transformers decode timing)
covers attention-only models; the hybrids' whole-model decode is compared after a prefill. Config fields
set for the comparison, each cost-neutral and each a place where lcprof's layer is simpler:
DeepSeek-V3's ``rope_interleave`` False (the interleaved RoPE layout is a permutation of the
weights), ``n_group = topk_group = 1`` (lcprof does not model group-limited routing) and a zero
score-correction bias; ``norm_topk_prob``, ``rms_norm_eps``, ``hidden_act``, ``head_dim``,
``rope_theta``, ``tie_word_embeddings`` as lcprof reads them (where a config leaves one out and
transformers' default for the model type differs from lcprof's -- Mixtral's rope_theta 1e6 --, the
comparison follows lcprof and the difference is the spec loader's to fix); ``pad_token_id`` None
when outside the vocabulary.

* minimax -- lightning attention (``self_attn``: qkv_proj, output_gate, out_proj and its norm) and
  softmax attention, every MLP routed (``mlp.gate``, ``mlp.experts``); each block adds its output to
  its *normed* input, residual x alpha + output x beta (``ModelSpec.post_norm_residual``,
  ``residual_factors``). transformers counts a decode step's position from its cache's first layer,
  a lightning layer that holds no keys (position 0, whatever the context): the step is given its
  position (``HFModel(..., start=n)``). transformers' MiniMax rotates the whole head_dim whatever
  ``partial_rotary_factor`` says, so the comparison's config sets none.

* gemma2 -- a norm before and after attention and the MLP (input_layernorm, post_attention_layernorm,
  pre_feedforward_layernorm, post_feedforward_layernorm; one-centred), embeddings times sqrt(hidden),
  the query scale query_pre_attn_scalar^-1/2, attention-logit and final-logit soft-capping.
  transformers applies the attention soft-capping in its eager attention only (its SDPA path drops
  it), so the comparison runs eager.

* granitemoehybrid -- Granite 4.0-H: Mamba-2 (``mamba``: Nemotron-H's layouts) or attention
  (``self_attn``, RoPE only with position_embedding_type "rope"), then the routed experts
  (``block_sparse_moe``: a softmax over the top-k logits, which is the renormalized top-k of the
  full softmax) plus ``shared_mlp``; the softmax scale attention_multiplier, each block's output
  times residual_multiplier, embeddings times embedding_multiplier, logits / logits_scaling.

* glm4_moe -- GLM-4.5/4.6/4.7: GQA with q/k/v biases, per-head q/k norms when use_qk_norm, RoPE on
  the first partial_rotary_factor of each head; DeepSeek-V3's MoE (sigmoid scores, shared experts,
  score-correction bias) from first_k_dense_replace on, with the same comparison settings as
  deepseek_v3 (``n_group = topk_group = 1``, a zero score-correction bias).

* kimi_linear -- Kimi Linear: KDA (``self_attn``: q/k/v_proj -- lcprof's one qkv weight --, the conv
  over q | k | v, ``forget_gate``'s f_a/f_b/dt_bias/A_log, b_proj, g_a/g_b, o_norm, o_proj) and MLA
  without RoPE (DeepSeek-V3's tensors), DeepSeek-V3's MoE from first_k_dense_replace on (sigmoid
  scores, moe_renormalize), with the deepseek_v3 comparison settings. transformers' KDA core and
  state run in float32 whatever the model's dtype. The MLA latent norms of transformers (and of
  DeepSeek's and Moonshot's code) keep RMSNorm's default epsilon 1e-6, as lcprof's layer does.

* gpt_oss -- gpt-oss: sliding and full layers with a sink logit per head (``self_attn.sinks``), biased
  q/k/v/o; every MLP routed (``mlp.router``, a biased Linear; a softmax over the top-k logits, which is
  the renormalized top-k of the full softmax) through biased experts whose gate and up columns are
  interleaved (:func:`_gpt_oss_moe_map`), the clamped SwiGLU. transformers has no SDPA path for it:
  eager only (refused in one line otherwise). A config without rope parameters gets YaRN x32, as
  transformers' GptOssConfig gives it.

* minimax_m2 -- MiniMax-M2: one RMSNorm over all of q and one over all of k (``q_norm``, ``k_norm``)
  before partial RoPE; every MLP routed (``block_sparse_moe``: sigmoid scores, the top-k renormalized;
  a zero score-correction bias for the comparison, as for deepseek_v3).

* olmo2, olmo3, exaone4 -- norms on each block's output (``post_attention_layernorm``,
  ``post_feedforward_layernorm``), none on its input; OLMo's q/k norms over all heads, EXAONE 4's per
  head; OLMo 3's and EXAONE 4's sliding layers (EXAONE 4's full layers without RoPE).

* cohere2 -- Command R7B / A: one LayerNorm (weight only) feeding attention and the MLP side by side,
  sliding layers with RoPE and global ones without, logits times logit_scale. transformers rotates
  adjacent pairs (GPT-J's layout): lcprof's q and k rows are permuted into it (:func:`_gptj_rows`).

* ministral3 -- Ministral 3: Mistral's layer with every query scaled after RoPE by Llama 4's
  per-position factor (the rope parameters' llama_4_scaling_beta).

* granite -- Granite 3.x: Llama's layer with Granite 4.0-H's muP scalars (softmax scale
  attention_multiplier, block outputs x residual_multiplier, embeddings x embedding_multiplier,
  logits / logits_scaling).

* glm, glm4 -- GLM-4: q/k/v biases, RoPE on the first partial_rotary_factor of each head in adjacent
  pairs (lcprof's q and k rows permuted into that layout, :func:`_gptj_rows` on the rotary dims),
  fused gate_up MLP; glm4 adds post_self_attn_layernorm and post_mlp_layernorm after the blocks.

* lfm2 -- LFM2: gated short convolutions (``conv``: in_proj B | C | x, the depthwise ``conv``, out_proj)
  and attention with per-head q/k norms (``self_attn``, its ``out_proj``); operator_norm, ffn_norm, the
  SwiGLU ``feed_forward`` (w1, w3, w2), the final ``embedding_norm``; lfm2_moe's routed layers a sigmoid
  router (``feed_forward.gate``; its expert_bias buffer zero) and fused experts.

* hunyuan_v1_dense -- HunYuan dense: per-head q/k RMSNorms (query_layernorm, key_layernorm) on the
  rotated q and k, NTK-alpha RoPE (a "dynamic" block with alpha: a fixed, larger base).

Not mapped, because lcprof's layer computes something else: Falcon-H1 (parallel mixers: no lcprof
layer), GPT-NeoX and Falcon (LayerNorm with biases; lcprof's layer runs RMSNorm), and every type not
listed.

Attention implementations (``ATTN_IMPLS``): ``eager``, ``sdpa``, ``flash_attention_2`` (when the
flash-attn package imports), named in results by the lcprof backend of the same kind
(:data:`BACKEND_OF`: eager, sdpa, flash-attn).

Decode (:meth:`HFModel.decode_cache`): transformers' default ``DynamicCache`` filled with random
keys and values of n tokens per layer (per-head decompressed K and V for MLA, as transformers
caches them); each step appends one token with ``torch.cat``, as ``generate`` does, so a timed run
of r steps spans contexts n .. n + r - 1.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import torch

from lcprof.errors import LcprofError
from lcprof.measure.layer import DecoderLayer, norm_eps, norm_topk
from lcprof.measure.model import Model
from lcprof.spec import ModelSpec

SUPPORTED = ("llama", "mistral", "qwen2", "phi3", "mixtral", "deepseek_v3", "qwen3", "qwen3_next", "jamba",
             "nemotron_h", "minimax", "gemma2", "granitemoehybrid", "glm4_moe", "kimi_linear", "smollm3", "seed_oss",
             "gpt_oss", "minimax_m2", "olmo2", "olmo3", "exaone4", "cohere2", "ministral3", "granite", "glm",
             "glm4", "hunyuan_v1_dense", "lfm2", "lfm2_moe")
#: model types whose norms transformers stores one-centred: ``x_normed * (1 + w)`` (lcprof: ``* w``)
ONE_CENTRED_NORMS = ("qwen3_next", "gemma2")
ATTN_IMPLS = ("eager", "sdpa", "flash_attention_2")
#: transformers' attention implementation -> the lcprof backend of the same kind (results' ``backend``)
BACKEND_OF = {"eager": "eager", "sdpa": "sdpa", "flash_attention_2": "flash-attn"}
IMPL_OF = {v: k for k, v in BACKEND_OF.items()}


def available() -> tuple[bool, str]:
    """(importable, version or why not)."""
    try:
        import transformers
    except Exception as exc:  # noqa: BLE001 - optional dependency
        return False, f"transformers is not installed ({type(exc).__name__}: {exc}); pip install 'lcprof[hf]'"
    return True, str(transformers.__version__)


def version() -> str | None:
    ok, v = available()
    return v if ok else None


def attn_impl_available(impl: str, device) -> tuple[bool, str]:
    """Whether transformers can run attention implementation ``impl`` on ``device``, and why not."""
    if impl not in ATTN_IMPLS:
        return False, f"unknown attention implementation {impl!r}; known: {', '.join(ATTN_IMPLS)}"
    if impl == "flash_attention_2":
        if torch.device(device).type != "cuda":
            return False, "flash_attention_2 needs a CUDA device"
        try:
            from transformers.utils import is_flash_attn_2_available
        except Exception as exc:  # noqa: BLE001
            return False, f"transformers cannot say: {exc}"
        if not is_flash_attn_2_available():
            return False, "the flash-attn package is not importable"
    return True, ""


def _require(spec: ModelSpec) -> None:
    ok, why = available()
    if not ok:
        raise LcprofError(why)
    if spec.model_type not in SUPPORTED:
        raise LcprofError(f"--impl transformers: model_type {spec.model_type!r} of {spec.name} is not mapped to "
                          f"lcprof's layer; mapped: {', '.join(SUPPORTED)}")


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------

def hf_config(spec: ModelSpec, attn_implementation: str = "eager"):
    """The transformers config of ``spec`` (its own config dict, the overrides in the module docstring)."""
    _require(spec)
    from transformers import AutoConfig

    # a deep copy: transformers' rope standardisation writes into the nested rope block it is given
    cfg: dict[str, Any] = {k: copy.deepcopy(v) for k, v in spec.config.items()
                           if k not in ("model_type", "architectures", "auto_map", "transformers_version",
                                        "torch_dtype", "dtype", "_name_or_path")}
    cfg["num_hidden_layers"] = spec.n_layers
    for key in ("layer_types", "layers_block_type", "hybrid_override_pattern"):  # a prefix of the schedule
        if isinstance(cfg.get(key), (list, str)):
            cfg[key] = cfg[key][:spec.n_layers]
    cfg["tie_word_embeddings"] = spec.tie_embeddings
    cfg["rms_norm_eps"] = norm_eps(spec)
    if spec.model_type == "nemotron_h":
        cfg["layer_norm_epsilon"] = norm_eps(spec)
    if spec.model_type in ("lfm2", "lfm2_moe"):
        cfg["norm_eps"] = norm_eps(spec)
    cfg["hidden_act"] = str(spec.config.get("hidden_act") or spec.config.get("hidden_activation") or "silu")
    if spec.mla is None and spec.model_type != "phi3":
        cfg["head_dim"] = spec.head_dim
    if spec.rope is not None and "rope_theta" not in cfg and "rope_parameters" not in cfg:
        cfg["rope_theta"] = spec.rope.theta  # e.g. Mixtral: transformers' default is 1e6, lcprof read 1e4
    pad = cfg.get("pad_token_id")
    if pad is not None and not 0 <= int(pad) < spec.vocab_size:
        cfg["pad_token_id"] = None
    elif "pad_token_id" not in cfg:
        cfg["pad_token_id"] = None  # Phi-3's default (32000) is outside a small vocabulary
    if spec.moe is not None and spec.model_type != "jamba":  # Jamba's router never renormalizes
        cfg["norm_topk_prob"] = norm_topk(spec)
    if spec.model_type == "deepseek_v3":
        cfg.update(rope_interleave=False, n_group=1, topk_group=1)
    if spec.model_type == "glm4_moe":
        cfg.update(n_group=1, topk_group=1)
    if spec.model_type == "kimi_linear":
        cfg.update(n_group=1, topk_group=1)
        lac = cfg.get("linear_attn_config")
        if isinstance(lac, dict):  # the 1-based lists cut to the layers built
            cfg["linear_attn_config"] = {k: ([i for i in v if i <= spec.n_layers] if k.endswith("_layers") else v)
                                         for k, v in lac.items()}
        cfg.pop("norm_topk_prob", None)
        cfg["moe_renormalize"] = norm_topk(spec)
    c = AutoConfig.for_model(spec.model_type, **cfg)
    c._attn_implementation = attn_implementation
    return c


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------

def _cat(*ts: torch.Tensor) -> torch.Tensor:
    return torch.cat([t.detach() for t in ts], dim=0)


def _layer_map(spec: ModelSpec, i: int, layer: DecoderLayer, names: set[str]) -> dict[str, torch.Tensor]:
    """transformers parameter name -> lcprof tensor for layer i (layouts chosen by the names present)."""
    p = f"model.layers.{i}."
    if spec.model_type == "nemotron_h":
        return _nemotron_layer_map(spec, p, layer, names)
    if spec.model_type == "jamba":
        return _jamba_layer_map(spec, p, layer, names)
    if spec.model_type == "granitemoehybrid":
        return _granite_layer_map(spec, p, layer, names)
    if spec.model_type in ("lfm2", "lfm2_moe"):
        return _lfm2_layer_map(spec, p, layer, names)
    if spec.model_type == "gemma2":  # a norm before and after each block ("sandwich")
        out = {p + "input_layernorm.weight": _norm_w(spec, layer.input_norm.weight),
               p + "post_attention_layernorm.weight": _norm_w(spec, layer.attn_out_norm.weight),
               p + "pre_feedforward_layernorm.weight": _norm_w(spec, layer.post_attn_norm.weight),
               p + "post_feedforward_layernorm.weight": _norm_w(spec, layer.mlp_out_norm.weight)}
        out.update(_attention_map(spec, p + "self_attn.", layer, names))
        out.update(_mlp_map(spec, p, layer, names))
        return out
    if spec.model_type in ("glm", "glm4"):  # adjacent-pair RoPE on each head's first rotary_dim dims
        out = {p + "input_layernorm.weight": layer.input_norm.weight,
               p + "post_attention_layernorm.weight": layer.post_attn_norm.weight}
        if spec.model_type == "glm4":  # and a norm after attention and after the MLP
            out.update({p + "post_self_attn_layernorm.weight": layer.attn_out_norm.weight,
                        p + "post_mlp_layernorm.weight": layer.mlp_out_norm.weight})
        attn = _attention_map(spec, p + "self_attn.", layer, names)
        for nm in ("q_proj", "k_proj"):
            for kind in ("weight", "bias"):
                key = f"{p}self_attn.{nm}.{kind}"
                if key in attn:
                    attn[key] = _gptj_rows(attn[key], spec.head_dim, spec.rope.rotary_dim)
        out.update(attn)
        out.update(_mlp_map(spec, p, layer, names))
        return out
    if spec.parallel_block:  # Cohere 2: one norm; q and k rows in GPT-J's rotary order (_gptj_rows)
        out = {p + "input_layernorm.weight": layer.input_norm.weight}
        attn = _attention_map(spec, p + "self_attn.", layer, names)
        for nm in ("q_proj", "k_proj"):
            for kind in ("weight", "bias"):
                key = f"{p}self_attn.{nm}.{kind}"
                if key in attn:
                    attn[key] = _gptj_rows(attn[key], spec.head_dim)
        out.update(attn)
        out.update(_mlp_map(spec, p, layer, names))
        return out
    if spec.output_norms:  # OLMo 2/3, EXAONE 4: a norm after attention and after the MLP, none before
        out = {p + "post_attention_layernorm.weight": layer.attn_out_norm.weight,
               p + "post_feedforward_layernorm.weight": layer.mlp_out_norm.weight}
        out.update(_attention_map(spec, p + "self_attn.", layer, names))
        out.update(_mlp_map(spec, p, layer, names))
        return out
    out = {p + "input_layernorm.weight": _norm_w(spec, layer.input_norm.weight),
           p + "post_attention_layernorm.weight": _norm_w(spec, layer.post_attn_norm.weight)}
    if layer.mixer_kind == "gated_deltanet":
        out.update(_deltanet_map(p + "linear_attn.", layer.mixer))
        out.update(_mlp_map(spec, p, layer, names))
        return out
    if layer.mixer_kind == "kda" and spec.model_type == "kimi_linear":  # KimiLinearDeltaAttention
        out.update(_kda_map(p + "self_attn.", layer.mixer))
        out.update(_mlp_map(spec, p, layer, names))
        return out
    if layer.mixer_kind == "lightning" and spec.model_type == "minimax":  # MiniMaxLightningAttention
        mx, a = layer.mixer, p + "self_attn."
        out.update({a + "qkv_proj.weight": mx.qkv_proj.weight, a + "output_gate.weight": mx.output_gate.weight,
                    a + "out_proj.weight": mx.out_proj.weight, a + "norm.weight": mx.norm_weight})
        out.update(_mlp_map(spec, p, layer, names))
        return out
    if layer.mixer is not None:
        raise LcprofError(f"--impl transformers: {spec.name} layer {i} is a {layer.mixer_kind} layer, which has no "
                          f"transformers mapping for model_type {spec.model_type!r}")
    out.update(_attention_map(spec, p + "self_attn.", layer, names))
    out.update(_mlp_map(spec, p, layer, names))
    return out


def _gptj_rows(w: torch.Tensor, head_dim: int, rotary_dim: int | None = None) -> torch.Tensor:
    """q/k projection rows (or biases) from lcprof's rotary layout -- dims i and i + r/2 of the first r =
    rotary_dim (default head_dim) rotate together -- to GPT-J's, where dims 2i and 2i + 1 do (Cohere; GLM
    on its first r dims): per head, row i goes to 2i and row i + r/2 to 2i + 1, the rows past r stay.
    q . k is unchanged by the same permutation of both, so the two models compute the same scores."""
    r = head_dim if rotary_dim is None else rotary_dim
    rest = w.shape[1:]
    heads = w.shape[0] // head_dim
    x = w.detach().reshape(heads, head_dim, *rest)
    rot = x[:, :r].reshape(heads, 2, r // 2, *rest).transpose(1, 2).reshape(heads, r, *rest)
    return torch.cat((rot, x[:, r:]), dim=1).reshape(w.shape)


def _norm_w(spec: ModelSpec, w: torch.Tensor) -> torch.Tensor:
    """An RMSNorm weight as transformers stores it for the model type (one-centred: w - 1)."""
    return w.detach() - 1.0 if spec.model_type in ONE_CENTRED_NORMS else w


def _attention_map(spec: ModelSpec, a: str, layer: DecoderLayer, names: set[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if hasattr(layer, "sinks"):  # gpt-oss: one sink logit per query head
        out[a + "sinks"] = layer.sinks
    if hasattr(layer, "q_norm"):  # Qwen3 / Qwen3-Next: per-head q and k RMSNorms (HunYuan's after RoPE)
        hunyuan = spec.model_type == "hunyuan_v1_dense"
        qn, kn = ("query_layernorm", "key_layernorm") if hunyuan else ("q_norm", "k_norm")
        out[a + qn + ".weight"] = _norm_w(spec, layer.q_norm.weight)
        out[a + kn + ".weight"] = _norm_w(spec, layer.k_norm.weight)
    if hasattr(layer, "q_gate"):  # Qwen3-Next: one q_proj, each head's query rows then its gate rows
        H, hd = spec.n_heads, spec.head_dim
        out[a + "q_proj.weight"] = torch.cat((layer.q_proj.weight.detach().view(H, hd, -1),
                                              layer.q_gate.weight.detach().view(H, hd, -1)), dim=1).reshape(2 * H * hd, -1)
        if layer.q_proj.bias is not None:
            out[a + "q_proj.bias"] = torch.cat((layer.q_proj.bias.detach().view(H, hd),
                                                layer.q_gate.bias.detach().view(H, hd)), dim=1).reshape(-1)
        for nm in ("k_proj", "v_proj", "o_proj"):
            mod = getattr(layer, nm)
            out[a + nm + ".weight"] = mod.weight
            if mod.bias is not None:
                out[a + nm + ".bias"] = mod.bias
        return out
    if spec.mla is not None:
        if spec.mla.q_lora_rank:
            out.update({a + "q_a_proj.weight": layer.q_a.weight, a + "q_a_layernorm.weight": layer.q_a_norm.weight,
                        a + "q_b_proj.weight": layer.q_b.weight})
        else:
            out[a + "q_proj.weight"] = layer.q_proj.weight
        out.update({a + "kv_a_proj_with_mqa.weight": layer.kv_a.weight,
                    a + "kv_a_layernorm.weight": layer.kv_a_norm.weight,
                    a + "kv_b_proj.weight": layer.kv_b.weight, a + "o_proj.weight": layer.o_proj.weight})
    elif a + "qkv_proj.weight" in names:  # Phi-3: one fused projection, q then k then v
        out[a + "qkv_proj.weight"] = _cat(layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight)
        out[a + "o_proj.weight"] = layer.o_proj.weight
    else:
        for nm in ("q_proj", "k_proj", "v_proj", "o_proj"):
            mod = getattr(layer, nm)
            out[a + nm + ".weight"] = mod.weight
            if mod.bias is not None:
                out[a + nm + ".bias"] = mod.bias
    return out


def _deltanet_map(g: str, mx) -> dict[str, torch.Tensor]:
    """Qwen3-Next's Gated DeltaNet: in_proj_qkvz and in_proj_ba grouped by key head (per key head h:
    q_h, k_h, then the values and gates of its r = Hv / Hk value heads; b then a of those heads);
    lcprof's are q | k | v | z and b | a, each over all heads. The conv (q | k | v channels), dt_bias,
    A_log (per value head) and the gated norm's weight are the same tensors."""
    d = mx.spec
    Hk, r, dk, dv = d.num_k_heads, d.num_v_heads // d.num_k_heads, d.head_k_dim, d.head_v_dim
    w = mx.in_proj_qkvz.weight.detach()
    kw, vw = Hk * dk, d.num_v_heads * dv
    q, k, v, z = w[:kw], w[kw:2 * kw], w[2 * kw:2 * kw + vw], w[2 * kw + vw:]
    qkvz = torch.cat((q.view(Hk, dk, -1), k.view(Hk, dk, -1), v.view(Hk, r * dv, -1), z.view(Hk, r * dv, -1)),
                     dim=1).reshape(w.shape)
    ba_w = mx.in_proj_ba.weight.detach()
    bw, aw = ba_w[:d.num_v_heads], ba_w[d.num_v_heads:]
    ba = torch.cat((bw.view(Hk, r, -1), aw.view(Hk, r, -1)), dim=1).reshape(ba_w.shape)
    return {g + "in_proj_qkvz.weight": qkvz, g + "in_proj_ba.weight": ba, g + "conv1d.weight": mx.conv_weight,
            g + "dt_bias": mx.dt_bias, g + "A_log": mx.A_log, g + "norm.weight": mx.norm_weight,
            g + "out_proj.weight": mx.out_proj.weight}


def _kda_map(a: str, mx) -> dict[str, torch.Tensor]:
    """Kimi Linear's KDA: lcprof's one qkv weight is transformers' q_proj | k_proj | v_proj; the conv
    over q | k | v channels, the decay's f_a/f_b/dt_bias/A_log (``forget_gate``, A_log as (1, 1, H, 1)),
    b_proj, the output gate's g_a/g_b, o_norm and o_proj are the same tensors."""
    w = mx.qkv_proj.weight.detach()
    q, k, v = w.chunk(3, dim=0)
    f = a + "forget_gate."
    return {a + "q_proj.weight": q, a + "k_proj.weight": k, a + "v_proj.weight": v,
            a + "conv1d.weight": mx.conv_weight, f + "f_a_proj.weight": mx.f_a_proj.weight,
            f + "f_b_proj.weight": mx.f_b_proj.weight, f + "dt_bias": mx.dt_bias,
            f + "A_log": mx.A_log.detach().view(1, 1, -1, 1), a + "b_proj.weight": mx.b_proj.weight,
            a + "g_a_proj.weight": mx.g_a_proj.weight, a + "g_b_proj.weight": mx.g_b_proj.weight,
            a + "o_norm.weight": mx.norm_weight, a + "o_proj.weight": mx.o_proj.weight}


def _linear(prefix: str, lin) -> dict[str, torch.Tensor]:
    out = {prefix + ".weight": lin.weight}
    if lin.bias is not None:
        out[prefix + ".bias"] = lin.bias
    return out


def _mamba1_map(g: str, mx) -> dict[str, torch.Tensor]:
    """Jamba's Mamba-1 mixer: the same tensors and layouts as lcprof's (in_proj x then z, conv1d
    (d_inner, 1, K), x_proj dt | B | C, dt_proj with its bias, A_log (d_inner, N), D, the dt/B/C norms)."""
    out = {g + "conv1d.weight": mx.conv_weight, g + "A_log": mx.A_log, g + "D": mx.D}
    if mx.conv_bias is not None:
        out[g + "conv1d.bias"] = mx.conv_bias
    for nm in ("in_proj", "x_proj", "dt_proj", "out_proj"):
        out.update(_linear(g + nm, getattr(mx, nm)))
    if hasattr(mx, "dt_norm"):
        out.update({g + "dt_layernorm.weight": mx.dt_norm, g + "b_layernorm.weight": mx.b_norm,
                    g + "c_layernorm.weight": mx.c_norm})
    return out


def _mamba2_map(g: str, mx) -> dict[str, torch.Tensor]:
    """Nemotron-H's Mamba-2 mixer: in_proj z | xBC | dt, conv1d over xBC (conv_dim, 1, K), dt_bias,
    A_log and D per head, the grouped gated norm's weight: lcprof's layouts."""
    out = {g + "conv1d.weight": mx.conv_weight, g + "dt_bias": mx.dt_bias, g + "A_log": mx.A_log, g + "D": mx.D}
    if mx.conv_bias is not None:
        out[g + "conv1d.bias"] = mx.conv_bias
    if mx.norm_weight is not None:
        out[g + "norm.weight"] = mx.norm_weight
    out.update(_linear(g + "in_proj", mx.in_proj))
    out.update(_linear(g + "out_proj", mx.out_proj))
    return out


def _jamba_layer_map(spec: ModelSpec, p: str, layer: DecoderLayer, names: set[str]) -> dict[str, torch.Tensor]:
    """Jamba: ``mamba`` or ``self_attn``, then ``feed_forward`` (dense, or ``router`` + ``experts``);
    its norms are ``input_layernorm`` and ``pre_ff_layernorm``."""
    out = {p + "input_layernorm.weight": layer.input_norm.weight, p + "pre_ff_layernorm.weight": layer.post_attn_norm.weight}
    if layer.mixer_kind == "mamba":
        out.update(_mamba1_map(p + "mamba.", layer.mixer))
    else:
        out.update(_attention_map(spec, p + "self_attn.", layer, names))
    f = p + "feed_forward."
    if not layer.is_moe:
        out.update(_dense_mlp_map(f, layer, names))
        return out
    if layer.moe_timing != "routed":
        raise LcprofError("transformers routes MoE tokens: build the lcprof model with moe_timing='routed'")
    out.update({f + "router.weight": layer.router.weight, f + "experts.gate_up_proj": layer.experts_gate_up,
                f + "experts.down_proj": layer.experts_down})
    return out


def _granite_layer_map(spec: ModelSpec, p: str, layer: DecoderLayer, names: set[str]) -> dict[str, torch.Tensor]:
    """Granite 4.0-H: ``mamba`` (Mamba-2, Nemotron-H's layouts) or ``self_attn``, then
    ``block_sparse_moe`` (``router``, fused ``experts``) plus ``shared_mlp`` (input_linear: gate
    rows then up rows; output_linear) -- or the shared MLP alone when there are no experts."""
    out = {p + "input_layernorm.weight": layer.input_norm.weight,
           p + "post_attention_layernorm.weight": layer.post_attn_norm.weight}
    if layer.mixer_kind == "mamba2":
        out.update(_mamba2_map(p + "mamba.", layer.mixer))
    else:
        out.update(_attention_map(spec, p + "self_attn.", layer, names))
    s = p + "shared_mlp."
    if layer.is_moe:
        if layer.moe_timing != "routed":
            raise LcprofError("transformers routes MoE tokens: build the lcprof model with moe_timing='routed'")
        m = p + "block_sparse_moe."
        out.update({m + "router.weight": layer.router.weight, m + "experts.gate_up_proj": layer.experts_gate_up,
                    m + "experts.down_proj": layer.experts_down})
    if spec.moe is None or spec.moe.n_shared:
        out.update({s + "input_linear.weight": _cat(layer.gate.weight, layer.up.weight),
                    s + "output_linear.weight": layer.down.weight})
    return out


def _lfm2_layer_map(spec: ModelSpec, p: str, layer: DecoderLayer, names: set[str]) -> dict[str, torch.Tensor]:
    """LFM2: ``operator_norm`` then the short conv (``conv``: in_proj, the depthwise ``conv``, out_proj) or
    attention (``self_attn`` with q_layernorm / k_layernorm and ``out_proj``), then ``ffn_norm`` and the SwiGLU
    ``feed_forward`` (w1 gate, w3 up, w2 down)."""
    out = {p + "operator_norm.weight": layer.input_norm.weight,
           p + "ffn_norm.weight": layer.post_attn_norm.weight}
    if layer.mixer_kind == "short_conv":
        mx, c = layer.mixer, p + "conv."
        out.update(_linear(c + "in_proj", mx.in_proj))
        out.update(_linear(c + "out_proj", mx.out_proj))
        out[c + "conv.weight"] = mx.conv_weight
        if mx.conv_bias is not None:
            out[c + "conv.bias"] = mx.conv_bias
    else:
        a = p + "self_attn."
        out.update({a + "q_proj.weight": layer.q_proj.weight, a + "k_proj.weight": layer.k_proj.weight,
                    a + "v_proj.weight": layer.v_proj.weight, a + "out_proj.weight": layer.o_proj.weight,
                    a + "q_layernorm.weight": layer.q_norm.weight, a + "k_layernorm.weight": layer.k_norm.weight})
    f = p + "feed_forward."
    if layer.is_moe:  # LFM2-MoE: the router (``gate``) and the fused experts; no shared expert
        if layer.moe_timing != "routed":
            raise LcprofError("transformers routes MoE tokens: build the lcprof model with moe_timing='routed'")
        out.update({f + "gate.weight": layer.router.weight, f + "experts.gate_up_proj": layer.experts_gate_up,
                    f + "experts.down_proj": layer.experts_down})
        return out
    out.update({f + "w1.weight": layer.gate.weight, f + "w3.weight": layer.up.weight,
                f + "w2.weight": layer.down.weight})
    return out


def _nemotron_layer_map(spec: ModelSpec, p: str, layer: DecoderLayer, names: set[str]) -> dict[str, torch.Tensor]:
    """Nemotron-H: one block per layer, ``norm`` then ``mixer`` (Mamba-2, attention or the ReLU^2 MLP)."""
    out = {p + "norm.weight": layer.input_norm.weight}
    m = p + "mixer."
    if layer.mixer_kind == "mamba2":
        out.update(_mamba2_map(m, layer.mixer))
    elif layer.lspec.has_attention:
        out.update(_attention_map(spec, m, layer, names))
    elif layer.is_moe:
        raise LcprofError(f"--impl transformers: {spec.name}: Nemotron-H's MoE blocks ('E') are not mapped")
    else:
        out.update({m + "up_proj.weight": layer.up.weight, m + "down_proj.weight": layer.down.weight})
    return out


def _dense_mlp_map(prefix: str, layer: DecoderLayer, names: set[str]) -> dict[str, torch.Tensor]:
    if prefix + "gate_up_proj.weight" in names:  # Phi-3: gate then up (and no biases)
        return {prefix + "gate_up_proj.weight": _cat(layer.gate.weight, layer.up.weight),
                prefix + "down_proj.weight": layer.down.weight}
    out: dict[str, torch.Tensor] = {}
    for hf_name, lin in (("gate_proj", getattr(layer, "gate", None)), ("up_proj", layer.up), ("down_proj", layer.down)):
        if lin is not None:  # mlp_bias: each projection's bias too
            out.update(_linear(prefix + hf_name, lin))
    return out


def _mlp_map(spec: ModelSpec, p: str, layer: DecoderLayer, names: set[str]) -> dict[str, torch.Tensor]:
    if not layer.is_moe:
        return _dense_mlp_map(p + "mlp.", layer, names)
    if layer.moe_timing != "routed":
        raise LcprofError("transformers routes MoE tokens: build the lcprof model with moe_timing='routed'")
    out: dict[str, torch.Tensor] = {}
    e = spec.moe
    if p + "mlp.router.weight" in names:  # gpt-oss
        return _gpt_oss_moe_map(p + "mlp.", layer, e.expert_intermediate_size)
    moe = p + "mlp." if (p + "mlp.gate.weight") in names else p + "block_sparse_moe."
    out[moe + "gate.weight"] = layer.router.weight
    if moe + "experts.gate_up_proj" in names:  # transformers 5: (E, 2I, h) and (E, h, I), gate first
        out[moe + "experts.gate_up_proj"] = layer.experts_gate_up
        out[moe + "experts.down_proj"] = layer.experts_down
    else:  # per-expert modules
        inter = e.expert_intermediate_size
        for x in range(e.n_experts):
            gu = layer.experts_gate_up[x]
            gate, up = gu[:inter], gu[inter:]
            if f"{moe}experts.{x}.w1.weight" in names:  # Mixtral: w1 gate, w3 up, w2 down
                out.update({f"{moe}experts.{x}.w1.weight": gate, f"{moe}experts.{x}.w3.weight": up,
                            f"{moe}experts.{x}.w2.weight": layer.experts_down[x]})
            else:
                out.update({f"{moe}experts.{x}.gate_proj.weight": gate, f"{moe}experts.{x}.up_proj.weight": up,
                            f"{moe}experts.{x}.down_proj.weight": layer.experts_down[x]})
    if e.n_shared:
        shared = moe + ("shared_expert." if moe + "shared_expert.up_proj.weight" in names else "shared_experts.")
        out.update(_dense_mlp_map(shared, layer, names))
        if hasattr(layer, "shared_gate"):  # Qwen2-MoE / Qwen3-Next: sigmoid(x W) scales the shared expert
            out[moe + "shared_expert_gate.weight"] = layer.shared_gate.weight
    return out


def _gpt_oss_moe_map(m: str, layer: DecoderLayer, inter: int) -> dict[str, torch.Tensor]:
    """gpt-oss's experts: ``gate_up_proj`` (E, h, 2I) multiplied from the right, its columns gate and up
    interleaved (gate_up[..., ::2] is the gate), its bias (E, 2I) likewise; ``down_proj`` (E, I, h); the
    router a biased Linear. lcprof's are (E, 2I, h) gate rows then up rows, and (E, h, I)."""
    gu, gub = layer.experts_gate_up.detach(), layer.experts_gate_up_bias.detach()
    n_exp, _, h = gu.shape
    # (E, I, 2, h): per expert row pairs (gate_i, up_i), then (E, 2I, h) interleaved, then (E, h, 2I)
    inter_w = torch.stack((gu[:, :inter], gu[:, inter:]), dim=2).reshape(n_exp, 2 * inter, h).transpose(1, 2)
    inter_b = torch.stack((gub[:, :inter], gub[:, inter:]), dim=2).reshape(n_exp, 2 * inter)
    return {m + "router.weight": layer.router.weight, m + "router.bias": layer.router.bias,
            m + "experts.gate_up_proj": inter_w.contiguous(), m + "experts.gate_up_proj_bias": inter_b,
            m + "experts.down_proj": layer.experts_down.detach().transpose(1, 2).contiguous(),
            m + "experts.down_proj_bias": layer.experts_down_bias}


def weight_map(model: Model, names: set[str]) -> dict[str, torch.Tensor]:
    """Every transformers parameter name -> the lcprof tensor it receives."""
    spec = model.spec
    embed, norm = {"nemotron_h": ("model.embeddings.weight", "model.norm_f.weight"),
                   "jamba": ("model.embed_tokens.weight", "model.final_layernorm.weight"),
                   "lfm2": ("model.embed_tokens.weight", "model.embedding_norm.weight"),
                   "lfm2_moe": ("model.embed_tokens.weight", "model.embedding_norm.weight")}.get(
        spec.model_type, ("model.embed_tokens.weight", "model.norm.weight"))
    out = {embed: model.embed.weight, norm: _norm_w(spec, model.norm.weight)}
    if not spec.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, DecoderLayer):
            raise LcprofError(f"layer {i} of {spec.name} is not an attention layer; no transformers mapping")
        out.update(_layer_map(spec, i, layer, names))
    return out


@torch.no_grad()
def copy_weights(model: Model, hf) -> None:
    """Copy lcprof's weights into the transformers model; refuse if any of its parameters is left over."""
    params = dict(hf.named_parameters())
    wm = weight_map(model, set(params))
    missing = [k for k in wm if k not in params]
    if missing:
        raise LcprofError(f"transformers' {type(hf).__name__} has no parameter {missing[0]!r} "
                          f"({len(missing)} unmatched); lcprof's mapping does not fit this transformers version")
    left = [k for k in params if k not in wm and not (spec_tied(model) and k == "lm_head.weight")]
    if left:
        raise LcprofError(f"transformers' {type(hf).__name__} has parameters lcprof's layer does not model: "
                          f"{', '.join(left[:4])}{' ...' if len(left) > 4 else ''}")
    for k, src in wm.items():
        dst = params[k]
        if tuple(dst.shape) != tuple(src.shape):
            raise LcprofError(f"shape of {k}: transformers {tuple(dst.shape)}, lcprof {tuple(src.shape)}")
        dst.copy_(src.detach().to(device=dst.device, dtype=dst.dtype))
    for name, buf in hf.named_buffers():
        # DeepSeek-V3's score correction, LFM2-MoE's expert bias: zero, as transformers builds them
        if name.endswith(("e_score_correction_bias", "expert_bias")):
            buf.zero_()


def spec_tied(model: Model) -> bool:
    return bool(model.spec.tie_embeddings)


# ----------------------------------------------------------------------------------------------
# The transformers model
# ----------------------------------------------------------------------------------------------

def kv_shapes(spec: ModelSpec, batch: int, n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of one layer's keys and values in transformers' cache, (batch, heads, n, dim)."""
    if spec.mla is not None:  # transformers caches MLA's decompressed per-head K and V
        return (batch, spec.n_heads, n, spec.mla.qk_head_dim), (batch, spec.n_heads, n, spec.mla.v_head_dim)
    return (batch, spec.n_kv_heads, n, spec.head_dim), (batch, spec.n_kv_heads, n, spec.v_head_dim)


def dynamic_cache_bytes(spec: ModelSpec, batch: int, n: int, dtype: str) -> int:
    """Bytes of transformers' DynamicCache at context n, plus the one-token-longer copy ``torch.cat``
    makes of the largest layer's keys and values at the next step."""
    from lcprof.units import dtype_bytes

    sa, sb = kv_shapes(spec, batch, 1)
    per_token = (sa[1] * sa[3] + sb[1] * sb[3]) * batch * dtype_bytes(dtype)
    tokens = [n if lspec.window is None else min(n, lspec.window) for lspec in spec.layers]
    return int(per_token * (sum(tokens) + max(tokens) + 1))


def _from_config(cfg, dtype: torch.dtype, device):
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        try:
            return AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        except TypeError:  # transformers 4: torch_dtype
            return AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype)


class HFModel:
    """transformers' causal LM of ``model.spec`` holding ``model``'s weights (see the module docstring)."""

    def __init__(self, model: Model, attn_implementation: str = "eager", *, device=None, dtype=None) -> None:
        p = next(model.parameters())
        device = torch.device(device or p.device)
        dtype = dtype or p.dtype
        self.spec = model.spec
        self.device, self.dtype = device, dtype
        self.config = hf_config(model.spec, "eager")
        self.hf = _from_config(self.config, dtype, device).eval()
        copy_weights(model, self.hf)
        for mod in self.hf.modules():  # see the module docstring: Mamba-2's dt is not clamped below
            if isinstance(getattr(mod, "time_step_limit", None), tuple):
                mod.time_step_limit = (0.0, float("inf"))
        if dtype == torch.float64 and hasattr(self.hf, "set_experts_implementation"):
            self.hf.set_experts_implementation("eager")  # torch's grouped_mm has no float64
        self.attn_implementation = "eager"
        self.set_attn_implementation(attn_implementation)

    def set_attn_implementation(self, impl: str) -> None:
        ok, why = attn_impl_available(impl, self.device)
        if not ok:
            raise LcprofError(why)
        if impl == "sdpa" and not getattr(self.hf, "_supports_sdpa", True):  # gpt-oss: its sinks need eager
            raise LcprofError(f"transformers' {type(self.hf).__name__} has no sdpa attention: use eager")
        setter = getattr(self.hf, "set_attn_implementation", None)
        if setter is not None:
            setter(impl)
        else:  # transformers 4: the attention interface reads the config on every call
            self.hf.config._attn_implementation = impl
        self.attn_implementation = impl

    @property
    def param_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.hf.parameters())

    # ----- calls ------------------------------------------------------------------------------------
    @functools.cached_property
    def _cache_kwarg(self) -> str:
        """transformers >= 5.2x names the model's cache argument ``cache``; before, ``past_key_values``."""
        import inspect

        return "cache" if "cache" in inspect.signature(type(self.hf.model).forward).parameters else "past_key_values"

    def _call(self, ids: torch.Tensor, cache=None, start: int | None = None):
        kwargs: dict = {"input_ids": ids, "use_cache": cache is not None}
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        if start is not None:  # the new tokens' positions, not the cache's count of its first layer's keys
            kwargs["position_ids"] = (torch.arange(ids.shape[1], device=ids.device) + int(start)).unsqueeze(0)
        try:
            return self.hf(**kwargs, logits_to_keep=1)
        except TypeError:  # transformers 4.4x
            return self.hf(**kwargs, num_logits_to_keep=1)

    def __call__(self, ids: torch.Tensor, cache=None, start: int | None = None) -> torch.Tensor:
        """Logits of the last position (batch, vocab): prefill, or one step appended to ``cache``.
        ``start``: the position of the first of ``ids`` (transformers counts the tokens its cache's
        first layer holds, which for MiniMax -- a lightning layer first, holding no keys -- is 0)."""
        return self._call(ids, cache, start).logits[:, -1, :]

    def prefill_cache(self, ids: torch.Tensor):
        """transformers' own cache after a prefill of ``ids`` (its default DynamicCache)."""
        out = self.hf(input_ids=ids, use_cache=True)
        return getattr(out, "past_key_values", None) or getattr(out, "cache", None)

    def _new_cache(self):
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.hf.config)
        except TypeError:  # transformers 4
            return DynamicCache()

    @torch.no_grad()
    def cache_shapes(self) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
        """layer -> (key shape, value shape) of what this transformers version caches per token (MLA: the
        latent and rope key in transformers 5, per-head K and V before), read off a 2-token prefill."""
        if getattr(self, "_cache_shapes", None) is None:
            cache = self._new_cache()
            shapes: dict = {}
            update = cache.update

            def record(k, v, layer_idx, *args, **kwargs):
                shapes.setdefault(int(layer_idx), (tuple(k.shape), tuple(v.shape)))
                return update(k, v, layer_idx, *args, **kwargs)

            cache.update = record
            self._call(torch.zeros(1, 2, dtype=torch.long, device=self.device), cache)
            self._cache_shapes = shapes
        return self._cache_shapes

    @torch.no_grad()
    def decode_cache(self, batch: int, n: int, *, generator: torch.Generator | None = None):
        """transformers' DynamicCache holding n random tokens per layer (unit variance, like a prefill of
        random tokens), filled through its own ``update``. Attention-only models: a mixer layer's
        state (conv window + recurrent state) is not filled this way, and is refused."""
        mixers = sorted({m for lyr in self.spec.layers for m in lyr.mixers if m != "attention"})
        if mixers:
            raise LcprofError(f"--impl transformers: decode from a random cache is mapped for attention-only models; "
                              f"{self.spec.name} has {'/'.join(mixers)} layers (its whole-model decode agrees after a "
                              "prefill: agree_model)")
        cache = self._new_cache()
        for i, (sk, sv) in sorted(self.cache_shapes().items()):
            k = torch.randn((batch, sk[1], n, sk[3]), generator=generator).to(device=self.device, dtype=self.dtype)
            v = torch.randn((batch, sv[1], n, sv[3]), generator=generator).to(device=self.device, dtype=self.dtype)
            cache.update(k, v, i)
        return cache

    # ----- one layer --------------------------------------------------------------------------------
    def layers(self):
        return self.hf.model.layers

    def capture_layer_call(self, layer_idx: int, ids: torch.Tensor, cache=None) -> tuple[tuple, dict]:
        """(args, kwargs) transformers' model passes to layer ``layer_idx`` in a forward over ``ids``
        (the mask, position embeddings and cache it builds itself); the forward stops there."""
        got: dict = {}

        class _Stop(Exception):
            pass

        def hook(_mod, args, kwargs):
            got["args"], got["kwargs"] = args, kwargs
            raise _Stop

        handle = self.layers()[layer_idx].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                self._call(ids, cache)
        except _Stop:
            pass
        finally:
            handle.remove()
        if "args" not in got:
            raise LcprofError(f"transformers' model never called layer {layer_idx}")
        return got["args"], got["kwargs"]

    def layer_fn(self, layer_idx: int, args: tuple, kwargs: dict, *, decode: bool = False):
        """A call of layer ``layer_idx`` with captured arguments, the hidden states replaceable.

        ``decode``: the attention mask is dropped -- one new token attends every key its cache holds
        (a global layer's whole context, a sliding layer's last W), and the cache grows by one per call.
        """
        layer = self.layers()[layer_idx]
        rest = args[1:]
        hidden = args[0] if args else kwargs.get("hidden_states")
        kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        if decode:
            kw["attention_mask"] = None

        def call(x: torch.Tensor | None = None):
            out = layer(hidden if x is None else x, *rest, **kw)
            return out[0] if isinstance(out, tuple) else out

        return call, hidden


# ----------------------------------------------------------------------------------------------
# Agreement: transformers and lcprof against one float64 reference
# ----------------------------------------------------------------------------------------------

def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    from lcprof.measure.check import rel_error

    return rel_error(out, ref)


def _verdict(err_lcprof: float, err_hf: float, dtype: str) -> tuple[bool, str]:
    """Each implementation's error against the float64 reference within the dtype's tolerance or at
    most twice the other's (STYLE: an implementation may be as inexact as PyTorch, not much more)."""
    from lcprof.measure.check import TOLERANCE

    tol = TOLERANCE[dtype]
    ok_hf = err_hf <= max(tol, 2.0 * err_lcprof)
    ok_lc = err_lcprof <= max(tol, 2.0 * err_hf)
    if ok_hf and ok_lc:
        return True, ""
    return False, (f"{dtype}: transformers rel. error {err_hf:.3g}, lcprof {err_lcprof:.3g} against float64 "
                   f"(tolerance {tol:g} or 2x the other)")


@torch.no_grad()
def _vary_norms(model: Model, seed: int) -> Model:
    """Every 1-D weight (the norms', seeded to 1) set to 1 + 0.3 N(0, 1), drawn by name: the compared models
    get the same values. With unit norms a norm mapped to the wrong slot, or applied before RoPE instead of
    after it, would compute the same function; with these it does not."""
    for name, p in model.named_parameters():
        if p.dim() == 1 and name.rsplit(".", 1)[-1] in ("weight", "norm_weight"):
            g = torch.Generator(device="cpu").manual_seed(seed * 7919 + sum(map(ord, name)) * 31 + len(name))
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


def _reference(spec: ModelSpec, *, seed: int, moe_timing: str, mla_form: str, device) -> Model:
    from lcprof.measure.check import reference_attention

    ref = Model(spec, seed=seed, moe_timing=moe_timing, mla_form=mla_form, dtype=torch.float64, device=device).eval()
    _vary_norms(ref, seed)
    ref.set_attention(reference_attention)
    return ref


@torch.no_grad()
def agree_model(spec: ModelSpec, n: int, *, dtype: str = "fp32", attn_implementation: str = "sdpa",
                phase: str = "prefill", seed: int = 0, device="cpu", batch: int = 1) -> dict:
    """Whole-model logits of lcprof and transformers (same weights, same tokens) against float64.

    prefill: logits of the last of n tokens; decode: a prefill of n tokens (each implementation
    its own cache) and one step at position n. Returns errors, the verdict and ``hf_vs_lcprof``
    (their distance from each other).
    """
    from lcprof.measure import backends as B

    tdt = B.torch_dtype(dtype)[0]
    moe = "routed" if spec.moe is not None else "dense-equivalent"
    form = "absorbed" if (phase == "decode" and spec.mla is not None) else "naive"
    g = torch.Generator(device="cpu").manual_seed(seed + 17)
    ids = torch.randint(0, spec.vocab_size, (batch, n + 1), generator=g).to(device)
    ref = _reference(spec, seed=seed, moe_timing=moe, mla_form="naive", device=device)
    ours = _vary_norms(Model(spec, seed=seed, moe_timing=moe, dtype=tdt, device=device).eval(), seed)
    ours.set_attention(functools.partial(B.get_backend(BACKEND_OF[attn_implementation])))
    theirs = HFModel(ours, attn_implementation, device=device, dtype=tdt)
    if phase == "prefill":
        r, o, t = ref(ids[:, :n]), ours(ids[:, :n]), theirs(ids[:, :n])
    else:
        caches = ref.prefill_caches(ids, n)
        ref.set_mla_form(form)
        r = ref(ids[:, n:], caches, start=n)
        caches = ours.prefill_caches(ids, n)
        ours.set_mla_form(form)
        o = ours(ids[:, n:], caches, start=n)
        t = theirs(ids[:, n:], theirs.prefill_cache(ids[:, :n]), start=n)
    e_lc, e_hf = _rel(o, r), _rel(t, r)
    ok, why = _verdict(e_lc, e_hf, dtype)
    return {"ok": ok, "reason": why, "lcprof_rel_err": e_lc, "transformers_rel_err": e_hf,
            "hf_vs_lcprof": _rel(t, o.to(t.dtype)), "dtype": dtype, "phase": phase, "n": n,
            "attn_implementation": attn_implementation}


@torch.no_grad()
def agree_layer(spec: ModelSpec, layer_idx: int, n: int, *, dtype: str = "fp32", attn_implementation: str = "sdpa",
                seed: int = 0, device="cpu", batch: int = 1) -> dict:
    """Layer ``layer_idx`` alone, prefill of n tokens: lcprof's DecoderLayer and transformers' decoder
    layer on the same hidden states (the ones transformers' model hands that layer), against the
    float64 lcprof layer with the reference attention."""
    from lcprof.measure import backends as B
    from lcprof.measure.check import reference_attention

    tdt = B.torch_dtype(dtype)[0]
    moe = "routed" if spec.moe is not None else "dense-equivalent"
    sub = spec.with_layers(spec.layers[:layer_idx + 1])
    ours = _vary_norms(Model(sub, seed=seed, moe_timing=moe, dtype=tdt, device=device).eval(), seed)
    ours.set_attention(B.get_backend(BACKEND_OF[attn_implementation]))
    theirs = HFModel(ours, attn_implementation, device=device, dtype=tdt)
    g = torch.Generator(device="cpu").manual_seed(seed + 29)
    ids = torch.randint(0, spec.vocab_size, (batch, n), generator=g).to(device)
    args, kwargs = theirs.capture_layer_call(layer_idx, ids)
    call, x = theirs.layer_fn(layer_idx, args, kwargs)
    t = call(x)
    o = ours.layers[layer_idx](x)
    ref = _vary_norms(Model(sub, seed=seed, moe_timing=moe, dtype=torch.float64, device=device).eval(), seed)
    ref.set_attention(reference_attention)
    ref_layer = ref.layers[layer_idx]
    if ref_layer.is_moe and ref_layer.moe_timing == "routed":
        ours.layers[layer_idx](x)  # the compared run's routing, as check.Checker does
        ref_layer.forced_routing = ours.layers[layer_idx].last_routing
    r = ref_layer(x.to(torch.float64))
    e_lc, e_hf = _rel(o, r), _rel(t, r)
    ok, why = _verdict(e_lc, e_hf, dtype)
    return {"ok": ok, "reason": why, "lcprof_rel_err": e_lc, "transformers_rel_err": e_hf,
            "hf_vs_lcprof": _rel(t, o.to(t.dtype)), "dtype": dtype, "phase": "prefill", "n": n,
            "layer": layer_idx, "attn_implementation": attn_implementation}

"""Attention variants that change cost: MLA ranks, q/k norms, output gates. No torch.

What the remaining variants cost (fields of ``ModelSpec``):

* ``qk_norm`` -- ``"head"``: one RMSNorm weight of head_dim shared by all heads, on q and on k
  (Qwen3, Gemma 3, Qwen3-Next): 2 x head_dim parameters per layer; ``"full"``: RMSNorm over the
  whole q and k widths (MiniMax-M2): (n_heads + n_kv_heads) x head_dim; ``"l2"``: L2 norm without
  weights (Llama 4, on its RoPE layers only): no parameters. Each is an elementwise pass over q and k
  (``ModelSpec.qk_norm_at`` says which a layer runs).
* ``attn_output_gate`` -- a sigmoid gate on the attention output computed from the input
  (Qwen3-Next, Qwen3.5): q_proj is twice as wide (n_heads x head_dim more outputs).
* ``attn_temperature_tuning`` -- Llama 4's NoPE layers multiply q by a temperature that grows with the
  position, log1p(floor((pos + 1) / floor_scale)) x attn_scale + 1: no parameters, one elementwise pass
  over q (in fp32 for fp16/bf16 in transformers, then cast back), and a few over the positions.
* ``LayerSpec.sinks`` -- one learned logit per head appended to each query's scores (gpt-oss):
  n_heads parameters per layer and one more softmax column per query.
* ``attn_logit_softcap`` -- Gemma 2's tanh soft-capping of the scores, c * tanh(s / c): three
  elementwise passes over the scores in eager attention (fused in tiled kernels that support it);
  no parameters. ``final_logit_softcap`` does the same over the vocabulary logits.
* ``query_pre_attn_scalar`` -- Gemma's query scale 1/sqrt(scalar) instead of 1/sqrt(head_dim):
  it replaces the usual scale, so it costs nothing; ``attn_scale`` (Granite 4's
  ``attention_multiplier``) gives the scale itself, at no cost either.
"""

from __future__ import annotations

from dataclasses import dataclass

from lcprof.errors import LcprofError

QK_NORMS = ("none", "head", "full", "l2")


@dataclass(frozen=True)
class MLASpec:
    """DeepSeek multi-head latent attention ranks."""

    q_lora_rank: int | None  # None: queries projected directly from the hidden state
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    def __post_init__(self) -> None:
        for nm in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            if getattr(self, nm) <= 0:
                raise LcprofError(f"MLA {nm} must be positive, got {getattr(self, nm)}")
        if self.q_lora_rank is not None and self.q_lora_rank <= 0:
            raise LcprofError(f"MLA q_lora_rank must be positive or null, got {self.q_lora_rank}")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def cache_dim(self) -> int:
        """Elements cached per token per layer: the latent plus the shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

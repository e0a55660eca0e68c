"""KV-cache formats: bytes one token adds to one layer's cache on one GPU, scales included. No torch.

The data bytes are the cost model's (``lcprof.cost.model.kv_bytes_per_token_by_layer``: K and V per
KV head on this rank, or MLA's latent + rope key, whole on every rank). On top, each engine stores
its quantization scales as follows:

==========  ==========================================  =========================================
kv dtype    vLLM (``--kv-cache-dtype``)                  SGLang (``--kv-cache-dtype``)
==========  ==========================================  =========================================
bf16/fp16   ``auto``: no scales                          ``auto``/``bfloat16``: no scales
fp8         ``fp8`` (e4m3): one fp32 scale per layer     ``fp8_e4m3``: one scale per layer
            for K and one for V, outside the pages
int8        ``int8_per_token_head``: + 2 fp32 scales     not supported
            (K, V) per token per KV head, in the page
int4        ``int4_per_token_head``: head_size/2 bytes   not supported
            of data + the same 2 fp32 scales
==========  ==========================================  =========================================

Sources: vLLM ``vllm/v1/kv_cache_interface.py`` ``AttentionSpec.page_size_bytes`` (commit
001cabc: "Per-token-head scales are stored in separate tensors ... carved from the raw KV cache
allocation so it must be budgeted here": ``2 * block_size * num_kv_heads * 4``) and
``MLAAttentionSpec.real_page_size_bytes`` (``block_size * head_size * dtype``: the latent is one
"head"); ``vllm/config/cache.py`` ``CacheDType``; SGLang ``model_runner.profile_max_num_token``
(``cell_size`` = heads x head_dim x layers x 2 x element size; MLA: (kv_lora_rank + rope dim) x
layers x element size) and its ``--kv-cache-dtype`` choices. Neither engine stores MLA's latent
in int8 or int4, so those are refused. ``none`` (lcprof's own accounting) follows vLLM's table.
Per-layer scalar scales (fp8) are a few bytes per layer and not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lcprof.cost.model import kv_bytes_per_token_by_layer, kv_heads_per_gpu, kv_tokens_by_layer
from lcprof.errors import LcprofError
from lcprof.spec import ModelSpec
from lcprof.units import dtype_name

KV_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8", "int4")

#: Bytes of the per-token-per-KV-head scales of vLLM's per-token-head formats (fp32 for K and for V).
PER_TOKEN_HEAD_SCALE_BYTES = 2 * 4

#: KV dtypes each engine stores (lcprof name -> the engine's --kv-cache-dtype value).
ENGINE_KV_DTYPES = {
    "vllm": {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp8": "fp8",
             "int8": "int8_per_token_head", "int4": "int4_per_token_head"},
    "sglang": {"bf16": "bfloat16", "fp16": "float16", "fp8": "fp8_e4m3"},
    "none": {d: d for d in KV_DTYPES},
}


@dataclass(frozen=True)
class KVFormat:
    """A KV dtype as an engine stores it."""

    dtype: str
    engine: str
    engine_name: str  # the engine's own --kv-cache-dtype spelling
    per_token_head_scales: bool


def kv_format(spec: ModelSpec, kv_dtype: str, engine: str = "vllm") -> KVFormat:
    """The format of ``kv_dtype`` on ``engine`` for ``spec``; refuses what the engine does not store."""
    d = dtype_name(kv_dtype, allowed=KV_DTYPES)
    table = ENGINE_KV_DTYPES.get(engine)
    if table is None:
        raise LcprofError(f"unknown engine {engine!r}; accepted: {', '.join(ENGINE_KV_DTYPES)}")
    if d not in table:
        raise LcprofError(f"{engine} has no {d} KV cache (its --kv-cache-dtype accepts the equivalents of "
                          f"{', '.join(table)}); use another --kv-dtype or --engine")
    if spec.mla is not None and d in ("int8", "int4"):
        raise LcprofError(f"{spec.name} caches MLA's latent, which no engine stores in {d}; use bf16 or fp8")
    return KVFormat(d, engine, table[d], per_token_head_scales=d in ("int8", "int4"))


def kv_bytes_per_token_per_layer(spec: ModelSpec, fmt: KVFormat, tp: int = 1) -> int:
    """Bytes one token adds to ONE layer's cache on one GPU: data plus per-token scales.

    Every attention layer caches the same width today (window caps apply to tokens, not to bytes);
    layers without attention cache none (their constant state is paged apart: ``memory``). 0 for a
    model without attention."""
    per_layer = kv_bytes_per_token_by_layer(spec, fmt.dtype, tp)
    attn = np.array([layer.has_attention for layer in spec.layers])
    if not attn.any():
        return 0
    per_layer = per_layer[attn]
    if not np.all(per_layer == per_layer[0]):  # pragma: no cover - every layer caches the same width today
        raise LcprofError(f"{spec.name}: layers cache different widths; uniform KV pages are not defined")
    data = float(per_layer[0])
    scales = kv_heads_per_gpu(spec, tp) * PER_TOKEN_HEAD_SCALE_BYTES if fmt.per_token_head_scales else 0
    total = data + scales
    if total != int(total):  # pragma: no cover - int4 K+V of an odd head size
        raise LcprofError(f"{spec.name}: {fmt.dtype} KV of one token is not a whole number of bytes")
    return int(total)


def kv_bytes_per_token(spec: ModelSpec, fmt: KVFormat, tp: int = 1, layers: int | None = None) -> int:
    """Bytes one token adds over ``layers`` layers (default: every attention layer) on one GPU, before
    window caps."""
    n = sum(1 for layer in spec.layers if layer.has_attention) if layers is None else int(layers)
    return n * kv_bytes_per_token_per_layer(spec, fmt, tp)


def kv_read_bytes(spec: ModelSpec, fmt: KVFormat, n, tp: int = 1, mask=None) -> np.ndarray:
    """KV bytes one decode step reads per request at context n (window- or ``mask``-capped per
    layer), one GPU."""
    tokens = np.sum(kv_tokens_by_layer(spec, n, mask), axis=0)
    return tokens * float(kv_bytes_per_token_per_layer(spec, fmt, tp))

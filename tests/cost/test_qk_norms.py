"""The q/k norms of every ``qk_norm`` kind are charged in the elementwise bytes, unfused and fused.

Qwen3's per-head RMSNorm was counted; MiniMax-M2's norm over all heads ("full") and Llama 4's
weightless L2 norm ("l2", on its RoPE layers only) were read from the config and then charged
nothing. Hand counts here; the unfused counts are also measured on transformers' own modules.
"""

from __future__ import annotations

import dataclasses

import pytest

from lcprof.cost.model import cost
from lcprof.spec import load_model


def _elementwise(spec, n, layer, elementwise="unfused", dtype="bf16"):
    return float(cost(spec, n, layer=layer, elementwise=elementwise, dtype=dtype).bytes["misc/elementwise"][0])


def _qk_norm_delta(spec, n, layer, **kw):
    """What the q/k norms add to ``layer``'s elementwise bytes: the spec against itself without them."""
    return _elementwise(spec, n, layer, **kw) - _elementwise(dataclasses.replace(spec, qk_norm="none"), n, layer, **kw)


def test_which_layers_run_a_qk_norm():
    scout = load_model("llama4-scout")  # every 4th layer is NoPE (3, 7, ...): no L2 norm there
    assert [scout.qk_norm_at(i) for i in range(5)] == ["l2", "l2", "l2", "none", "l2"]
    assert sum(scout.qk_norm_at(i) == "l2" for i in range(scout.n_layers)) == 36  # 48 layers, 12 NoPE
    assert load_model("minimax-m2.5").qk_norm_at(0) == "full"
    assert load_model("qwen3-8b").qk_norm_at(0) == "head"
    nemo = load_model("qwen3-next-80b-a3b")  # linear (Gated DeltaNet) layers have no attention to norm
    assert {nemo.qk_norm_at(i) for i in range(nemo.n_layers) if not nemo.layers[i].has_attention} == {"none"}


def test_llama4_l2_norm_unfused_by_hand():
    # Llama4TextL2Norm in bf16: x.float() (read 2, write 4), pow (4, 4), mean (read 4), x * rsqrt (read 4,
    # write 4), .type_as (read 4, write 2) = 32 B per element; per row of 128: the mean written (4),
    # + eps (4, 4), rsqrt (4, 4), read again by the product (4) = 24 B; no weight. Rows: 40 q heads and
    # 8 k heads per token.
    spec = load_model("llama4-scout")
    n = 32
    assert _qk_norm_delta(spec, n, 0) == n * (40 + 8) * (128 * 32 + 24) == 6_328_320
    assert _qk_norm_delta(spec, n, 3) == 0  # NoPE layer
    # fp32: no copies, the same five passes over the rows: 20 B per element, 24 per row; fp64: x.float()
    # copies down (read 8, write 4) and type_as back up (read 4, write 8), the passes in fp32
    assert _qk_norm_delta(spec, n, 0, dtype="fp32") == n * (40 + 8) * (128 * 20 + 24)
    assert _qk_norm_delta(spec, n, 0, dtype="fp64") == n * (40 + 8) * (128 * 44 + 24)


def test_minimax_full_norm_unfused_by_hand():
    # MiniMaxM2RMSNorm over all 48 x 128 q features and all 8 x 128 k features, bf16: copies (2 + 4,
    # 4 + 2), pow (8), mean (4), scale (8), times the weight (read 2, write 2) = 36 B per element; per row
    # (one per token per norm) 24 B; each weight read once (2 B x its width).
    spec = load_model("minimax-m2.5")
    n = 32
    q, k = 48 * 128, 8 * 128
    assert _qk_norm_delta(spec, n, 0) == n * (q * 36 + 24) + 2 * q + n * (k * 36 + 24) + 2 * k == 8_273_408


@pytest.mark.parametrize("name, layer, heads, kv_heads", [
    ("qwen3-8b", 0, 32, 8), ("minimax-m2.5", 0, 48, 8), ("llama4-scout", 0, 40, 8), ("llama4-scout", 3, 0, 0)])
def test_fused_qk_norm_bytes_by_hand(name, layer, heads, kv_heads):
    # vLLM: one norm kernel on q and one on k, each reads and writes its tensor once (bf16, head dim 128);
    # Llama 4's NoPE layers run none
    spec = load_model(name)
    n = 64
    assert _qk_norm_delta(spec, n, layer, elementwise="fused") == n * 2 * 2 * (heads + kv_heads) * 128


# -- measured on transformers' own modules (MovedBytes counts every elementwise op's reads and writes)

def _moved(fn, *tensors) -> int:
    from lcprof.measure.tensor_audit import MovedBytes

    with MovedBytes() as mb:
        fn(*tensors)
    return mb.total_bytes


@pytest.mark.parametrize("dtype", ["bf16", "fp32", "fp64"])
def test_l2_norm_bytes_match_transformers_llama4(dtype):
    torch = pytest.importorskip("torch")
    llama4 = pytest.importorskip("transformers.models.llama4.modeling_llama4")
    tdt = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}[dtype]
    n = 16
    norm = llama4.Llama4TextL2Norm(1e-5)
    q = torch.randn(1, n, 40, 128, dtype=tdt)  # as Llama4TextAttention norms them: (batch, n, heads, head_dim)
    k = torch.randn(1, n, 8, 128, dtype=tdt)
    measured = _moved(lambda a, b: (norm(a), norm(b)), q, k)
    assert _qk_norm_delta(load_model("llama4-scout"), n, 0, dtype=dtype) == measured


def test_full_norm_bytes_match_transformers_minimax_m2():
    torch = pytest.importorskip("torch")
    mm2 = pytest.importorskip("transformers.models.minimax_m2.modeling_minimax_m2")
    n = 16
    q_norm = mm2.MiniMaxM2RMSNorm(48 * 128).to(torch.bfloat16)
    k_norm = mm2.MiniMaxM2RMSNorm(8 * 128).to(torch.bfloat16)
    q = torch.randn(1, n, 48 * 128, dtype=torch.bfloat16)  # q_proj's output, normed before the head split
    k = torch.randn(1, n, 8 * 128, dtype=torch.bfloat16)
    with torch.no_grad():
        measured = _moved(lambda a, b: (q_norm(a), k_norm(b)), q, k)
    assert _qk_norm_delta(load_model("minimax-m2.5"), n, 0) == measured


# -- activation steps: the q/k norms' transients

def test_llama4_l2_norm_steps_by_hand():
    from lcprof.cost.model import activation_steps

    spec = load_model("llama4-scout")
    n = 16
    steps = activation_steps(spec, n, layer=0, dtype="bf16")
    # per token, bf16: x and the normed x (2 x 2 x 5120), q, k, v (2 x (5120 + 1024 + 1024)); the cos/sin
    # tables (n x 128 each, 2 B) live through the block. The L2 norm of q: 8 B per element of q (40 x 128)
    # on top; of k (8 x 128): the normed q (2 x 5120) alive beside the old one, and 8 B per element of k.
    qkv = 2 * 2 * 5120 + 2 * (5120 + 1024 + 1024)
    tables = 2 * n * 128 * 2
    assert float(steps["attn/q_norm"][0]) == n * (qkv + 8 * 5120) + tables == 1_220_608
    assert float(steps["attn/k_norm"][0]) == n * (qkv + 2 * 5120 + 8 * 1024) + tables == 860_160
    assert "attn/q_norm" not in activation_steps(spec, n, layer=3)  # NoPE layer: no norm
    # fp32: no copy up, one fp32 temporary per element (4 B)
    steps32 = activation_steps(spec, n, layer=0, dtype="fp32")
    assert float(steps32["attn/q_norm"][0]) == 2 * (n * (qkv + 2 * 5120) + tables)


def test_minimax_full_norm_steps_by_hand():
    from lcprof.cost.model import activation_steps

    spec = load_model("minimax-m2.5")  # 3072 wide, 48 q heads and 8 kv heads of 128, rotary 64 of 128
    n = 8
    steps = activation_steps(spec, n, layer=0, dtype="bf16")
    # the RMSNorm of all of q (48 x 128), as lcprof's measured layer runs an RMSNorm in bf16: the fp32 copy,
    # the square, then the scaled copy, the cast back and the weighted output live (4 + 4 + 2 + 2 B each)
    qkv = 2 * 2 * 3072 + 2 * (6144 + 1024 + 1024)
    tables = 2 * n * 64 * 2
    assert float(steps["attn/q_norm"][0]) == n * (qkv + 12 * 6144) + tables
    assert float(steps["attn/k_norm"][0]) == n * (qkv + 2 * 6144 + 12 * 1024) + tables


@pytest.mark.parametrize("dtype", ["bf16", "fp32", "fp64"])
def test_l2_norm_transient_matches_transformers_llama4(dtype):
    torch = pytest.importorskip("torch")
    llama4 = pytest.importorskip("transformers.models.llama4.modeling_llama4")
    from lcprof.cost.model import _l2_norm_extra
    from lcprof.measure.tensor_audit import LiveBytes

    tdt = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}[dtype]
    x = torch.randn(1, 16, 40, 128, dtype=tdt)
    with torch.no_grad(), LiveBytes() as lb:
        lb.track(x)
        llama4.Llama4TextL2Norm(1e-5)(x)
    s = x.element_size()
    # the fp32 mean of each row of 128 lives beside the peak in bf16 and fp32 (4 B a row, left out per
    # element as for every norm); in fp64 the peak is at the cast back, the mean gone
    rows = 16 * 40 if s < 8 else 0
    extra = lb.peak_bytes - x.numel() * s - 4 * rows
    assert extra == 16 * _l2_norm_extra(40 * 128, s) == 16 * 40 * 128 * {2: 8, 4: 4, 8: 12}[s]


# -- Llama 4's attention temperature (NoPE layers)

_TINY_LLAMA4 = dict(model_type="llama4_text", hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=64, intermediate_size_mlp=64,
                    vocab_size=128, no_rope_layers=[1, 1, 1, 0], use_qk_norm=False, attn_temperature_tuning=True)


def test_temperature_is_read_and_counted():
    from lcprof.errors import LcprofError
    from lcprof.spec.config import spec_from_config

    scout = load_model("llama4-scout")  # Meta's config says "attn_temperature_tuning": 4
    assert scout.attn_temperature_tuning and scout.query_temperature_at(3) and not scout.query_temperature_at(0)
    off = spec_from_config({**_TINY_LLAMA4, "attn_temperature_tuning": False}, name="t")
    assert not off.query_temperature_at(3)
    assert spec_from_config({**_TINY_LLAMA4, "attn_temperature_tuning": 0}, name="t").attn_temperature_tuning is False
    with pytest.raises(LcprofError, match="attn_temperature_tuning"):
        spec_from_config({**_TINY_LLAMA4, "attn_temperature_tuning": "yes"}, name="t")
    # absent: transformers' default (True)
    assert spec_from_config({k: v for k, v in _TINY_LLAMA4.items() if k != "attn_temperature_tuning"},
                            name="t").attn_temperature_tuning


def test_temperature_bytes_by_hand():
    spec = load_model("llama4-scout")
    plain = dataclasses.replace(spec, attn_temperature_tuning=False)
    n = 32

    def delta(**kw):
        return _elementwise(spec, n, 3, **kw) - _elementwise(plain, n, 3, **kw)
    # bf16, q of 40 x 128 per token: q x temperature promoted to fp32 (read 2, write 4), cast back (read 4,
    # write 2) = 12 B per element, the temperature read once per token (4 B); per position the int64
    # arange (8), + the cached length (8 + 8), the fp32 cast (8 + 4) and six fp32 passes (8 each)
    assert delta() == n * (40 * 128 * 12 + 4) + n * 84 == 1_968_896
    assert delta(dtype="fp32") == n * (40 * 128 * 8 + 4) + n * 84  # no cast back
    assert delta(elementwise="fused") == n * 2 * 2 * 40 * 128  # vLLM: q read and written once
    assert _elementwise(spec, n, 0) == _elementwise(plain, n, 0)  # RoPE layers run none


@pytest.mark.parametrize("dtype", ["bf16", "fp32", "fp64"])
def test_temperature_bytes_and_transient_match_transformers_llama4(dtype):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lcprof.cost.model import activation_steps
    from lcprof.measure.tensor_audit import MovedBytes
    from lcprof.spec.config import spec_from_config
    from transformers.models.llama4.modeling_llama4 import Llama4TextAttention

    tdt = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}[dtype]
    cfg = transformers.Llama4TextConfig(**{k: v for k, v in _TINY_LLAMA4.items() if k != "model_type"})
    cfg._attn_implementation = "eager"
    att = Llama4TextAttention(cfg, layer_idx=3).to(tdt)  # layer 3: NoPE
    x = torch.randn(2, 8, 64, dtype=tdt)
    moved = {}
    for on in (True, False):
        att.attn_temperature_tuning = on
        with torch.no_grad(), MovedBytes() as mb:
            att(x, position_embeddings=None, attention_mask=None)
        moved[on] = mb.total_bytes
    spec = spec_from_config(_TINY_LLAMA4, name="tiny-llama4")
    plain = dataclasses.replace(spec, attn_temperature_tuning=False)
    got = (float(cost(spec, 8, batch=2, layer=3, dtype=dtype).bytes["misc/elementwise"][0])
           - float(cost(plain, 8, batch=2, layer=3, dtype=dtype).bytes["misc/elementwise"][0]))
    assert got == moved[True] - moved[False]
    # the transient: q's product with its temperature (fp32) beside q, then the cast back beside it
    s = {"bf16": 2, "fp32": 4, "fp64": 8}[dtype]
    steps = activation_steps(spec, 8, batch=2, layer=3, dtype=dtype)
    assert "attn/q_temperature" not in activation_steps(plain, 8, batch=2, layer=3, dtype=dtype)
    q_elems = 2 * 8 * 4 * 16
    qkv = 2 * 8 * s * (64 + 64 + 4 * 16 + 2 * 2 * 16)  # x, the normed x, q, k, v
    assert float(steps["attn/q_temperature"][0]) == qkv + q_elems * ({2: 6, 4: 4, 8: 8}[s])

"""Whole hybrid layers (norm + linear-time mixer + MLP, MLP-only, MLP-less) built by ``DecoderLayer``
against independent references and the cost model, on tiny configs of Nemotron-H, Qwen3-Next,
Jamba and Falcon-Mamba (``support.tiny_models.TINY_HYBRID_CONFIGS``).

What is asserted, exactly:

* output: the layer (its chunked mixer) equals, in float64, the same layer whose mixer runs the
  token-by-token recurrence of :mod:`lcprof.measure.mixers.reference` (rel. error < 1e-12),
  prefill over several chunks and prefill-then-decode from the carried state; and Falcon-Mamba's
  layer equals x + recurrence(rmsnorm(x)) written out here;
* FLOPs: ``FlopCounterMode`` (mm/bmm/conv, 2 per multiply-add) == ``cost(...).flops['total']``
  EXACTLY, for prefill and decode, except that Gated DeltaNet's triangular solve is not seen by
  FlopCounterMode: there the difference is exactly ``mixer/solve`` = b Hv (dk + dv) sum l(l - 1),
  hand-computed below;
* memory: the peak of live tensor bytes (``LiveBytes``) == ``cost.activation_bytes`` to the byte,
  fp32 and bf16, prefill, decode from a state and prefill after a prefix;
* parameters: the layer's parameter count == the norms + mixer (``spec.params``) + MLP, by hand.
"""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from support.tiny_models import TINY_HYBRID_CONFIGS, tiny_hybrid_spec
from lcprof.cost.model import activation_bytes, activation_steps, cost
from lcprof.errors import LcprofError
from lcprof.measure import backends as B
from lcprof.measure.layer import DecoderLayer, check_buildable
from lcprof.measure.mixers import RECURRENT
from lcprof.measure.tensor_audit import LiveBytes, MovedBytes, mark
from lcprof.spec import LayerSpec

F64 = torch.float64
TORCH = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _buildable():
    out = []
    for name in TINY_HYBRID_CONFIGS:
        spec = tiny_hybrid_spec(name)
        for i, lyr in enumerate(spec.layers):
            try:
                check_buildable(spec, lyr)
            except LcprofError:
                continue
            out.append((name, i))
    return out


CASES = _buildable()
MIXER_CASES = [(n, i) for n, i in CASES if not tiny_hybrid_spec(n).layers[i].has_attention
               and tiny_hybrid_spec(n).layers[i].mixers]
NO_ATTN_CASES = [(n, i) for n, i in CASES if not tiny_hybrid_spec(n).layers[i].has_attention]


def test_every_kind_is_covered():
    kinds = {tiny_hybrid_spec(n).layers[i].kind + ("+mlp" if tiny_hybrid_spec(n).layers[i].mlp else "")
             for n, i in CASES}
    assert {"mamba2", "mlp+mlp", "gated_deltanet+mlp", "mamba+mlp", "mamba", "global"} <= kinds, kinds


def test_refused_kinds_say_which_layer():
    # Falcon-H1's parallel attention + Mamba-2 in one layer has no measured block
    base = tiny_hybrid_spec("nemotron-h")
    spec = base.with_layers((base.layers[0], LayerSpec(mixers=("attention", "mamba2"), mlp=False)))
    with pytest.raises(LcprofError, match=r"layer 1 is global\+mamba2 \(parallel token mixers attention\+mamba2\)"):
        DecoderLayer(spec, 1)


def _x(spec, b, n, seed=0, dtype=F64):
    return torch.randn(b, n, spec.hidden_size, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _n_multi_chunk(layer) -> int:
    chunk = getattr(layer.mixer, "chunk", None) or getattr(layer.mixer, "block", None) or 5
    return max(int(1.5 * chunk) + 2, 14)  # a full chunk and a partial one


@pytest.mark.parametrize("name,idx", MIXER_CASES)
def test_layer_equals_the_fp64_recurrence(name, idx):
    spec = tiny_hybrid_spec(name)
    lay = DecoderLayer(spec, idx, seed=2).to(F64).eval()
    ref = DecoderLayer(spec, idx, seed=2).to(F64).eval()
    ref.recurrent_reference = True
    n = _n_multi_chunk(lay)
    x = _x(spec, 2, n)
    with torch.no_grad():
        got, st = lay(x, return_kv=True)
        want, st_ref = ref(x, return_kv=True)
    assert want.abs().max().item() > 1e-2  # a real signal
    assert ((got - want).norm() / want.norm()).item() < 1e-12
    for got_st, want_st in ((st.ssm, st_ref.ssm), (st.conv, st_ref.conv)):
        assert (got_st is None) == (want_st is None)  # LFM2's short conv: a conv state only
        if want_st is not None:
            assert ((got_st - want_st).norm() / want_st.norm()).item() < 1e-12
    # prefill 7 tokens, then decode one token at a time from the carried state == the recurrence
    with torch.no_grad():
        y0, cur = lay(x[:, :7], return_kv=True)
        steps = []
        for t in range(7, 12):
            yt, cur = lay(x[:, t:t + 1], cur, return_kv=True)
            steps.append(yt)
        want12 = ref(x[:, :12])
    got12 = torch.cat([y0, *steps], 1)
    assert ((got12 - want12).norm() / want12.norm()).item() < 1e-12


def test_falcon_mamba_layer_is_residual_plus_mixer_of_the_normed_input():
    # Falcon-Mamba: out = x + mixer(rmsnorm(x)), no MLP; rmsnorm(x) = x / sqrt(mean(x^2) + eps), eps 1e-5
    spec = tiny_hybrid_spec("falcon-mamba")
    lay = DecoderLayer(spec, 1, seed=4).to(F64)
    x = _x(spec, 1, 9, seed=3)
    normed = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)
    with torch.no_grad():
        want = x + RECURRENT["mamba"](lay.mixer, normed)[0]
        got = lay(x)
    assert ((got - want).norm() / want.norm()).item() < 1e-12


def test_nemotron_mlp_only_layer_is_relu_squared():
    # Nemotron-H "-" layer: out = x + down(relu(up(rmsnorm(x)))^2), one norm, no token mixer
    spec = tiny_hybrid_spec("nemotron-h")
    lay = DecoderLayer(spec, 1, seed=1).to(F64)
    x = _x(spec, 2, 5, seed=5)
    normed = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)
    want = x + torch.relu(normed @ lay.up.weight.T).pow(2) @ lay.down.weight.T
    with torch.no_grad():
        assert torch.allclose(lay(x), want, rtol=1e-12, atol=1e-12)
    assert not hasattr(lay, "post_attn_norm")  # one norm in the layer


def test_parameters_by_hand():
    # Jamba layer 1: 2 RMSNorms (2 x 32) + Mamba-1 (spec.params) + router (32 x 4) + one gated MLP of
    # the dense-equivalent active width 2 x 48 (3 x 32 x 96)
    spec = tiny_hybrid_spec("jamba")
    m = spec.mixer("mamba")
    assert DecoderLayer.param_count(spec, 1) == 2 * 32 + m.params + 32 * 4 + 3 * 32 * 96
    # Nemotron-H layer 0: 1 RMSNorm + Mamba-2, no MLP; layer 1: 1 RMSNorm + up/down (2 x 32 x 48)
    spec = tiny_hybrid_spec("nemotron-h")
    assert DecoderLayer.param_count(spec, 0) == 32 + spec.mixer("mamba2").params
    assert DecoderLayer.param_count(spec, 1) == 32 + 2 * 32 * 48
    # Qwen3-Next layer 0: 2 norms + Gated DeltaNet + router (32 x 4) + shared gate (32 x 1) + gated MLP
    # of width 2 x 16 (routed) + 16 (shared) = 48
    spec = tiny_hybrid_spec("qwen3-next")
    assert DecoderLayer.param_count(spec, 0) == 2 * 32 + spec.mixer("gated_deltanet").params + 32 * 4 + 32 \
        + 3 * 32 * 48


# ----- FLOPs ---------------------------------------------------------------------------------------

def _counted(lay, x, state=None) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        lay(x, state)
    return fc.get_total_flops()


def _solve(c) -> float:
    """What FlopCounterMode does not see: the triangular solve, and KDA's pairs inside its diagonal
    sub-chunks (summed elementwise)."""
    return sum(float(np.asarray(c.flops.get(k, 0.0)).ravel()[0]) for k in ("mixer/solve", "mixer/kk_diag",
                                                                             "mixer/qk_diag"))


@pytest.mark.parametrize("name,idx", NO_ATTN_CASES)
@pytest.mark.parametrize("n", [13, 70])
def test_prefill_flops_equal_the_cost_model(name, idx, n):
    spec = tiny_hybrid_spec(name)
    lay = DecoderLayer(spec, idx).eval()
    c = cost(spec, n, layer=idx, batch=2, dtype="fp32", family="useful")
    assert _counted(lay, _x(spec, 2, n, dtype=torch.float32)) == int(c.flops["total"][0]) - int(_solve(c))


@pytest.mark.parametrize("name,idx", NO_ATTN_CASES)
def test_decode_flops_equal_the_cost_model(name, idx):
    spec = tiny_hybrid_spec(name)
    lay = DecoderLayer(spec, idx).eval()
    state = lay.random_cache(2, 51, generator=torch.Generator().manual_seed(0))
    c = cost(spec, 50, layer=idx, batch=2, dtype="fp32", phase="decode", family="useful")
    assert _solve(c) == 0  # one recurrent step: no chunk, no solve
    assert _counted(lay, _x(spec, 2, 1, dtype=torch.float32), state) == int(c.flops["total"][0])


def test_deltanet_solve_is_what_flop_counter_misses_by_hand():
    # Qwen3-Next tiny GDN: Hv = 4 value heads, dk = 8, dv = 6, batch 2, n = 70 in chunks of 64 (64, 6):
    # the unit-lower-triangular solve is b Hv (dk + dv) sum l(l - 1) = 2 * 4 * 14 * (64*63 + 6*5)
    spec = tiny_hybrid_spec("qwen3-next")
    lay = DecoderLayer(spec, 0).eval()
    c = cost(spec, 70, layer=0, batch=2, dtype="fp32")
    assert _solve(c) == 2 * 4 * 14 * (64 * 63 + 6 * 5) == 454_944
    assert int(c.flops["total"][0]) - _counted(lay, _x(spec, 2, 70, dtype=torch.float32)) == 454_944


# ----- live bytes ----------------------------------------------------------------------------------

def _traced_peak(lay, x, state) -> LiveBytes:
    with torch.no_grad():
        lay(x, state)  # the mixers' cached (l x l) masks are built once, as a model builds them once
    gc.collect()
    exclude = list(lay.parameters())
    if state is not None:
        exclude += [t for t in (state.conv, state.ssm) if t is not None]
    with torch.no_grad(), LiveBytes(exclude=exclude) as lb:
        lb.track(x)
        lay(x, state)
    return lb


@pytest.mark.parametrize("name,idx", NO_ATTN_CASES)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("n,b,prefix", [(13, 2, 0), (70, 1, 0), (1, 2, 9), (9, 1, 4)])
def test_activation_peak_equals_the_cost_model_to_the_byte(name, idx, dtype, n, b, prefix):
    B.clear_mask_cache()
    spec = tiny_hybrid_spec(name)
    lay = DecoderLayer(spec, idx).to(TORCH[dtype]).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, n, spec.hidden_size, generator=g).to(TORCH[dtype])
    state = None
    if prefix and lay.mixer is not None:
        with torch.no_grad():
            _, state = lay(torch.randn(b, prefix, spec.hidden_size, generator=g).to(TORCH[dtype]), return_kv=True)
    lb = _traced_peak(lay, x, state)
    pred = activation_bytes(spec, n, prefix=prefix, batch=b, dtype=dtype, layer=idx)
    assert int(pred[0]) == lb.peak_bytes, (lb.peak_step, lb.peak_tensors)
    # every step, not only the peak: the marked segments of the layer's run (input norm, the mixer's
    # own steps, the MLP, the residual) == cost.activation_steps, with the same names
    steps = activation_steps(spec, n, prefix=prefix, batch=b, dtype=dtype, layer=idx)
    assert {k: int(v[0]) for k, v in steps.items() if float(v[0]) != 0.0} == lb.steps
    assert lb.unmarked_bytes == 0


# ----- property: any Mamba-2 / Gated DeltaNet dims -------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from support.tiny_models import _BASE  # noqa: E402
from lcprof.spec import spec_from_config  # noqa: E402


@st.composite
def _hybrid_config(draw):
    hidden = draw(st.sampled_from([8, 16, 24]))
    if draw(st.booleans()):  # Nemotron-H Mamba-2 layer then an MLP-only layer
        groups = draw(st.sampled_from([1, 2]))
        cfg = dict(model_type="nemotron_h", hidden_size=hidden, num_hidden_layers=2, hybrid_override_pattern="M-",
                   num_attention_heads=2, num_key_value_heads=1, head_dim=4, intermediate_size=draw(st.integers(4, 20)),
                   mamba_num_heads=groups * draw(st.integers(1, 3)), mamba_head_dim=draw(st.integers(1, 6)),
                   ssm_state_size=draw(st.integers(1, 6)), n_groups=groups, conv_kernel=draw(st.integers(2, 4)),
                   chunk_size=draw(st.integers(2, 9)), expand=1, mlp_hidden_act="relu2", vocab_size=100)
    else:  # Qwen3-Next Gated DeltaNet with an MoE MLP
        hk = draw(st.integers(1, 2))
        cfg = dict(model_type="qwen3_next", hidden_size=hidden, num_hidden_layers=4, full_attention_interval=4,
                   num_attention_heads=2, num_key_value_heads=1, head_dim=4, intermediate_size=8,
                   linear_conv_kernel_dim=draw(st.integers(2, 4)), linear_key_head_dim=draw(st.integers(1, 6)),
                   linear_num_key_heads=hk, linear_num_value_heads=hk * draw(st.integers(1, 2)),
                   linear_value_head_dim=draw(st.integers(1, 6)), moe_intermediate_size=4,
                   shared_expert_intermediate_size=4, num_experts=3, num_experts_per_tok=2, decoder_sparse_step=1,
                   mlp_only_layers=[], partial_rotary_factor=0.5, **_BASE)
    return cfg


@settings(max_examples=30, deadline=None)
@given(cfg=_hybrid_config(), n=st.integers(1, 40), b=st.integers(1, 2), decode=st.booleans())
def test_property_flops_of_any_hybrid_layer_equal_the_cost_model(cfg, n, b, decode):
    # FlopCounterMode == cost - mixer/solve, for layer 0 (the mixer) and layer 1, prefill of n tokens
    # or one decode step after n
    spec = spec_from_config(dict(cfg), name="prop-hybrid")
    for idx in (0, 1):
        lay = DecoderLayer(spec, idx).eval()
        g = torch.Generator().manual_seed(n)
        state = lay.random_cache(b, n + 1, generator=g) if decode else None
        x = torch.randn(b, 1 if decode else n, spec.hidden_size, generator=g)
        c = cost(spec, n, layer=idx, batch=b, dtype="fp32", phase="decode" if decode else "prefill")
        assert _counted(lay, x, state) == int(c.flops["total"][0]) - int(_solve(c))


# ----- Qwen3-Next's gated attention layer ----------------------------------------------------------

def _attention_audit(spec, idx, *, n, family, dtype, slots):
    """(LiveBytes, MovedBytes) of the second call, RoPE tables and masks built once (as a model does)."""
    def flash_like(q, k, v, mask, scale, **_):  # what a tiled kernel allocates: output + fp32 LSE
        out = torch.zeros(q.shape[0], q.shape[1], q.shape[2], v.shape[-1], dtype=q.dtype)
        lse = torch.zeros(q.shape[0], q.shape[2], q.shape[1], dtype=torch.float32)
        mark("attn/kernel")
        del lse
        return out

    B.clear_mask_cache()
    lay = DecoderLayer(spec, idx, attention=flash_like if family == "tiled" else B.get_backend("eager"))
    lay = lay.to(TORCH[dtype]).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, n, spec.hidden_size, generator=g).to(TORCH[dtype])
    cache = None if slots is None else lay.random_cache(1, slots, generator=g)
    exclude = list(lay.parameters()) + ([] if cache is None else [cache.a, cache.b])
    with torch.no_grad():
        lay(x, cache)
    gc.collect()
    with torch.no_grad(), LiveBytes(exclude=exclude) as lb:
        lb.track(x)
        for tables in lay._rope_cache.values():
            for t in tables:
                lb.track(t, "rope tables")
        for mask in B._MASK_CACHE.values():
            lb.track(mask, "mask")
        lay(x, cache)
    with torch.no_grad(), MovedBytes() as mb:
        lay(x, cache)
    B.clear_mask_cache()
    return lb, mb


@pytest.mark.parametrize("family", ["tiled", "eager"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("n,slots", [(64, None), (1, 64), (16, 64)])
def test_gated_attention_layer_memory_and_traffic(family, dtype, n, slots):
    # Qwen3-Next layer 3: q, an output gate sigmoid(x W_g) per head element, attention, o * gate,
    # o_proj; then the MoE MLP with the shared expert's gate
    spec = tiny_hybrid_spec("qwen3-next")
    prefix = 0 if slots is None else slots - n
    lb, mb = _attention_audit(spec, 3, n=n, family=family, dtype=dtype, slots=slots)
    assert int(activation_bytes(spec, n, prefix=prefix, dtype=dtype, family=family, layer=3)[0]) == lb.peak_bytes, \
        (lb.peak_step, lb.peak_tensors)
    steps = activation_steps(spec, n, prefix=prefix, dtype=dtype, family=family, layer=3)
    assert {k: int(v[0]) for k, v in steps.items() if float(v[0]) != 0.0} == lb.steps
    c = cost(spec, n, prefix=prefix, layer=3, family=family, dtype=dtype)
    moved = float(c.bytes["misc/elementwise"][0]) + (float(c.bytes["attn/elementwise"][0]) if family == "eager" else 0)
    # to the byte: the attention gate's traffic (sigmoid: read + write, product: read 2 + write 1,
    # 5 x tokens x heads x v_dim elements) and the shared expert's gate (sigmoid of one logit per token,
    # read 1 + write 1, and the MLP output scaled in place, read h + 1 + write h: n (2 h + 3) elements)
    assert mb.total_bytes == int(moved)
    # without the shared gate's elementwise charge the count would be short by exactly that
    s = 4 if dtype == "fp32" else 2
    ungated = dataclasses.replace(spec, moe=dataclasses.replace(spec.moe, shared_gate=False))
    c0 = cost(ungated, n, prefix=prefix, layer=3, family=family, dtype=dtype)
    assert float(c.bytes["misc/elementwise"][0]) - float(c0.bytes["misc/elementwise"][0]) == \
        n * (2 * spec.hidden_size + 3) * s


def test_gated_attention_flops_equal_the_cost_model():
    spec = tiny_hybrid_spec("qwen3-next")
    lay = DecoderLayer(spec, 3, attention=B.eager_attention).eval()
    c = cost(spec, 40, layer=3, batch=2, dtype="fp32", family="eager")
    assert "proj/q" in c.flops  # counted doubled: q and its gate
    assert _counted(lay, _x(spec, 2, 40, dtype=torch.float32)) == int(c.flops["total"][0])


def test_q_k_norms_the_layer_does_not_build_are_refused():
    """Llama 4's L2 q/k norm is not an RMSNorm the measured layer has: refused in one line, never timed
    without it. MiniMax-M2's RMSNorm over all heads builds (test_full_width_qk_norm_*)."""
    from lcprof.measure.layer import check_buildable
    from lcprof.spec import load_model

    spec = load_model("llama4-scout")
    lyr = next(x for x in spec.layers if x.has_attention)
    with pytest.raises(LcprofError, match="q/k norm 'l2'"):
        check_buildable(spec, lyr)
    m2 = load_model("minimax-m2.5")
    check_buildable(m2, m2.layers[0])  # no error


def test_llama4_query_temperature_is_refused_on_nope_layers_only():
    """Maverick has no q/k norm, but its NoPE layers scale q by a temperature the measured layer lacks."""
    from lcprof.measure.layer import check_buildable
    from lcprof.spec import load_model

    spec = load_model("llama4-maverick")
    assert not spec.layers[3].rope and spec.layers[0].rope
    with pytest.raises(LcprofError, match="layer 3 .*query temperature"):
        check_buildable(spec, spec.layers[3])
    check_buildable(spec, spec.layers[0])

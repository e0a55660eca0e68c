"""The data model: LayerSpec (old constructor calls keep working), AttnDims via ModelSpec.attn_dims,
and each mixer spec's parameters and per-request state, by hand from transformers' module shapes."""

from __future__ import annotations

import pytest

from lcprof.errors import LcprofError
from lcprof.spec import (AttnDims, GatedDeltaNetSpec, IndexerSpec, LayerSpec, LightningSpec, Linear, Mamba2Spec,
                         MambaSpec, load_model)


def test_layerspec_back_compat_and_kinds():
    lyr = LayerSpec(attn="sliding", window=4096, moe=True)
    assert (lyr.mixers, lyr.mlp, lyr.has_attention, lyr.kind) == (("attention",), True, True, "sliding:4096")
    assert LayerSpec().kind == "global"
    mamba = LayerSpec(mixers=("mamba2",), mlp=False)
    assert mamba.attn == "none" and mamba.kind == "mamba2" and not mamba.has_attention
    assert LayerSpec(mixers=(), moe=True).kind == "mlp"
    assert LayerSpec(mixers=("attention", "mamba2")).kind == "global+mamba2"
    assert LayerSpec(attn="sparse", top_k=2048).kind == "sparse:top2048"


@pytest.mark.parametrize("kw", [
    dict(mixers=("mamba3",)), dict(mixers=("mamba2", "mamba2")), dict(attn="sliding"), dict(attn="sliding", window=0),
    dict(attn="global", window=8), dict(attn="sparse"), dict(attn="global", top_k=4), dict(mlp=False, moe=True),
    dict(mixers=("mamba2",), attn="sliding", window=8), dict(mixers=("mamba2",), sinks=True),
    dict(dims=AttnDims(8, 3, 64, 64)), dict(attn="none"),
])
def test_layerspec_refuses_inconsistent_layers(kw):
    with pytest.raises(LcprofError):
        LayerSpec(**kw)


def test_attn_dims_accessor():
    mimo = load_model("mimo-v2-flash")
    assert mimo.attn_dims(0) == AttnDims(64, 4, 192, 128)  # full layer: the model's shapes
    assert mimo.attn_dims(1) == AttnDims(64, 8, 192, 128)  # sliding layer: swa_* shapes
    assert load_model("deepseek-v3").attn_dims(0) == (128, 128, 192, 128)  # MLA: nope 128 + rope 64
    with pytest.raises(LcprofError, match="has no attention"):
        load_model("jamba-1.5-mini").attn_dims(0)
    with pytest.raises(LcprofError, match="out of range"):
        mimo.attn_dims(48)


def test_mamba1_jamba_shapes():
    # Jamba-1.5-Mini's mixer: h 4096, d_inner 8192, d_state 16, d_conv 4, dt_rank 256, conv bias, no proj bias
    m = MambaSpec(4096, 8192, 16, 4, 256, conv_bias=True, proj_bias=False, bcdt_norm="weighted")
    assert m.linears() == (Linear("in_proj", 4096, 16384), Linear("x_proj", 8192, 256 + 32),
                           Linear("dt_proj", 256, 8192, True), Linear("out_proj", 8192, 4096))
    # conv 8192 x 4 + bias 8192, A_log 8192 x 16, D 8192, norms over dt 256, B 16, C 16
    other = 8192 * 4 + 8192 + 8192 * 16 + 8192 + 256 + 16 + 16
    assert m.params == 4096 * 16384 + 8192 * 288 + (256 * 8192 + 8192) + 8192 * 4096 + other
    # state: conv (4 - 1) x 8192, SSM 8192 x 16
    assert m.state_elements() == {"conv": 3 * 8192, "ssm": 8192 * 16}
    assert MambaSpec(4096, 8192, 16, 4, 256, bcdt_norm="unweighted").params == m.params - (256 + 16 + 16)


def test_mamba2_nemotron_shapes():
    # Nemotron-H-56B: 256 heads x 64, d_state 256, 8 groups, conv 4
    m = Mamba2Spec(8192, 256, 64, 256, 8, 4, 128)
    d, conv_dim = 256 * 64, 256 * 64 + 2 * 8 * 256
    assert (m.d_inner, m.conv_dim) == (16384, 20480)
    assert m.linears()[0] == Linear("in_proj", 8192, d + conv_dim + 256)
    assert m.params == 8192 * (d + conv_dim + 256) + d * 8192 + conv_dim * 4 + conv_dim + 3 * 256 + d
    assert m.state_elements() == {"conv": 3 * conv_dim, "ssm": 256 * 64 * 256}
    with pytest.raises(LcprofError, match="groups"):
        Mamba2Spec(64, 6, 8, 16, 4, 4, 64)


def test_gated_deltanet_qwen3_next_shapes():
    g = GatedDeltaNetSpec(2048, 16, 32, 128, 128, 4)
    key, val = 16 * 128, 32 * 128
    assert [lin[:3] for lin in g.linears()] == [("in_proj_qkvz", 2048, 2 * key + 2 * val),
                                                ("in_proj_ba", 2048, 64), ("out_proj", val, 2048)]
    assert g.other_params() == {"conv1d.weight": (2 * key + val) * 4, "dt_bias": 32, "A_log": 32, "norm": 128}
    # state: conv 3 x 8192 channels; recurrent 32 value heads x 128 x 128
    assert g.state_elements() == {"conv": 3 * 8192, "recurrent": 32 * 128 * 128}
    with pytest.raises(LcprofError, match="multiple"):
        GatedDeltaNetSpec(2048, 16, 24, 128, 128, 4)


def test_lightning_and_indexer_shapes():
    lt = LightningSpec(6144, 64, 128)
    assert lt.params == 6144 * 3 * 8192 + 6144 * 8192 + 8192 * 6144 + 8192
    assert lt.state_elements() == {"kv": 64 * 128 * 128}
    ix = IndexerSpec(7168, 1536, 64, 128, 2048)
    assert ix.params == 1536 * 64 * 128 + 7168 * 128 + 7168 * 64 + 2 * 128
    assert ix.cache_elements_per_token == 128 and ix.state_elements() == {}


def test_model_spec_validates_mixers_against_specs():
    spec = load_model("qwen3-next-80b-a3b")
    assert spec.mixer("gated_deltanet").num_v_heads == 32
    assert spec.mixer_counts == {"gated_deltanet": 36, "attention": 12}
    with pytest.raises(LcprofError, match="no mamba2 layers"):
        spec.mixer("mamba2")
    with pytest.raises(LcprofError, match="no gated_deltanet spec"):
        spec.replace(gated_deltanet=None)

"""Granite 4.0-H (``granitemoehybrid``): Mamba-2 or NoPE attention, then routed experts plus a shared
MLP, and four muP scalars. Each scalar is read, built into lcprof's layer and model, and counted: the
residual multiplier is an elementwise op per block (bytes and live bytes held to the layer's ops to
the byte, and by hand); the logits' division is a pass over them; the softmax scale and the
embeddings' multiplier cost nothing per layer. transformers' own model is the oracle for the math
(tests/measure/test_transformers_impl.py, ``granitemoehybrid``).

transformers' GraniteMoeHybridDecoderLayer: ``hidden_states = residual + hidden_states *
self.residual_multiplier`` after the mixer and after the MLP; vLLM's GraniteMoeHybrid*DecoderLayer
runs the same two ops, then a plain RMSNorm (no fused add).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from support.tiny_models import TINY_HYBRID_CONFIGS, tiny_hybrid_spec
from test_tensor_audit import assert_steps_match, moved_bytes, predicted_moved, traced_peak
from lcprof.cost.model import activation_steps, cost
from lcprof.cost.ops import lm_head_op
from lcprof.errors import LcprofError
from lcprof.measure.layer import DecoderLayer
from lcprof.measure.model import Model
from lcprof.spec import spec_from_config


def _plain():
    return dataclasses.replace(tiny_hybrid_spec("granite"), residual_factors=None)


def test_the_config_is_read():
    spec = tiny_hybrid_spec("granite")
    assert spec.residual_factors == ((None, 0.5),) * 3 and spec.residual_products == 1
    assert spec.residual_factors_at(1) == ((None, 0.5), (None, 0.5))
    assert (spec.attn_scale, spec.embedding_multiplier, spec.logits_scaling) == (0.2, 3.0, 2.0)
    assert spec.rope is None and spec.layer_kinds == {"mamba2": 3, "global": 1}
    assert all(lyr.moe and lyr.mlp for lyr in spec.layers)
    assert (spec.moe.n_experts, spec.moe.n_active, spec.moe.n_shared, spec.moe.expert_intermediate_size,
            spec.moe.shared_intermediate_size, spec.moe.shared_gate) == (4, 2, 1, 16, 24, False)
    m = spec.mamba2  # d_inner = expand x hidden = 64 = 4 heads x 16
    assert (m.n_heads, m.head_dim, m.n_groups, m.d_state, m.chunk_size, m.norm, m.norm_before_gate) == \
        (4, 16, 2, 6, 16, True, False)
    base = TINY_HYBRID_CONFIGS["granite"]
    rope = spec_from_config(dict(base, position_embedding_type="rope"), name="t")
    assert rope.rope is not None and rope.rope.rotary_dim == 8 and all(lyr.rope for lyr in rope.layers)
    # no experts: the shared MLP alone, dense, of shared_intermediate_size
    dense = spec_from_config(dict(base, num_local_experts=0), name="t")
    assert dense.moe is None and dense.intermediate_size == 24 and not any(lyr.moe for lyr in dense.layers)
    for bad, field in ((dict(position_embedding_type="alibi"), "position_embedding_type"),
                       (dict(residual_multiplier=0), "residual_multiplier"),
                       (dict(logits_scaling="2"), "logits_scaling"),
                       (dict(layer_types=["mamba", "attention", "mamba", "moe"]), "layer_types"),
                       (dict(mamba_d_head=8), "mamba_n_heads x mamba_d_head"),
                       (dict(num_local_experts=0, shared_intermediate_size=0), "no MLP at all")):
        with pytest.raises(LcprofError, match=field):
            spec_from_config(dict(base, **bad), name="t")


def test_layer_scales_each_block_output_by_hand():
    spec = tiny_hybrid_spec("granite")
    lay = DecoderLayer(spec, 1, moe_timing="routed").to(torch.float64).eval()
    x = torch.randn(1, 20, spec.hidden_size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        got = lay(x)
        a, _ = lay._attention_block(lay.input_norm(x), None)
        mid = x + 0.5 * a
        want = mid + 0.5 * lay._mlp(lay.post_attn_norm(mid))
    assert torch.allclose(got, want, rtol=1e-13, atol=0)
    assert lay.scale == 0.2  # attention_multiplier, not head_dim 8's 8^-1/2


def test_model_scales_embeddings_and_logits():
    spec = tiny_hybrid_spec("granite")
    m = Model(spec, dtype=torch.float64, moe_timing="routed").eval()
    ids = torch.randint(0, 1000, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x = m.embed(ids) * 3.0
        for layer in m.layers:
            x = layer(x)
        want = m.lm_head(m.norm(x)[:, -1, :]) / 2.0
        assert torch.allclose(m(ids), want, rtol=1e-13, atol=0)
        assert torch.equal(m.embeddings(ids), m.embed(ids) * 3.0)


@pytest.mark.parametrize("scaled", [True, False])
@pytest.mark.parametrize("layer,family", [(0, "tiled"), (1, "tiled"), (1, "eager")])  # 0: Mamba-2
def test_every_step_and_the_traffic_match_the_layer_to_the_byte(scaled, layer, family):
    spec = tiny_hybrid_spec("granite") if scaled else _plain()
    for dtype in ("fp32", "bf16"):
        lb = traced_peak(spec, layer, n=20, family=family, dtype=dtype)
        assert_steps_match(spec, lb, 20, dtype=dtype, family=family, layer=layer)
    if layer == 1:  # the Mamba-2 mixer's own traffic is its mixer/* ops, not misc/elementwise
        mb = moved_bytes(spec, layer, n=20, family=family, dtype="fp32")
        assert predicted_moved(spec, layer, n=20, family=family, dtype="fp32") == mb.total_bytes


def test_residual_bytes_by_hand():
    # fp32 (s = 4), h = 32, n = 20 tokens, 2 blocks per layer. Unfused: output x 0.5 (read + write h)
    # before the add (read 2h, write h): 5h per block against a plain add's 3h, 2 blocks x 2 x s x n x h
    # = 10240 B more. Fused (vLLM): the product (2h), the add (3h), then RMSNorm alone (2h) = 7h per
    # block against fused add + RMSNorm's 4h: 2 x 3 x s x n x h = 15360 B more.
    def ew(spec, mode, layer):
        return float(cost(spec, 20, layer=layer, dtype="fp32", elementwise=mode).bytes["misc/elementwise"][0])
    for layer in (0, 1):
        assert ew(tiny_hybrid_spec("granite"), "unfused", layer) - ew(_plain(), "unfused", layer) == 2 * 2 * 4 * 20 * 32
        assert ew(tiny_hybrid_spec("granite"), "fused", layer) - ew(_plain(), "fused", layer) == 2 * 3 * 4 * 20 * 32


def test_residual_steps_by_hand():
    # one bf16 token (s = 2, h = 32) through the NoPE attention layer: the attention block's residual
    # add holds x, the output, the product and the sum: 4h; a plain add peaks inside the MLP's norm
    # instead (no step of its own)
    st = activation_steps(tiny_hybrid_spec("granite"), 1, dtype="bf16", layer=1)
    assert int(st["mix/residual"][0]) == 2 * 32 * 4
    assert "mix/residual" not in activation_steps(_plain(), 1, dtype="bf16", layer=1)


def test_logits_division_is_one_pass():
    # lm_head: 2 x h x V FLOPs per token; bytes: the weight once (2 B x 32 x 1000), the input (2 x 32),
    # the logits written (2 x 1000), then / 2 read + written (2 x 2 x 1000)
    spec = tiny_hybrid_spec("granite")
    op, plain = lm_head_op(spec, 1), lm_head_op(dataclasses.replace(spec, logits_scaling=None), 1)
    assert float(op.flops) == float(plain.flops) == 2 * 32 * 1000
    assert float(op.bytes) - float(plain.bytes) == 2 * 2 * 1000

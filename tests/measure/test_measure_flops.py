"""The real layer's FLOPs, counted by torch, equal the cost model's executed FLOPs for eager EXACTLY.

``torch.utils.flop_counter.FlopCounterMode`` counts 2 per multiply-add for mm / addmm / bmm (and
einsum, which lowers to bmm) and nothing for elementwise work; it counts 0 for SDPA on the CPU and
would ignore causal masking anyway, so the check uses the eager backend, which computes the full
n x n_k score rectangle -- exactly the cost model's ``family='eager'``.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lcprof.cost.model import cost
from lcprof.measure.backends import eager_attention
from lcprof.measure.layer import DecoderLayer


def counted_flops(layer: DecoderLayer, x: torch.Tensor, cache=None) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        layer(x, cache)
    return fc.get_total_flops()


CASES = [
    # (config, layer index, n, batch, what the case covers)
    ("mha", 0, 48, 1, "MHA"),
    ("gqa", 1, 40, 2, "GQA with bias, batch 2"),
    ("sliding", 0, 64, 1, "sliding window W=24 (n > W): eager still computes the full square"),
    ("chunked", 0, 40, 1, "chunked C=16"),
    ("moe", 0, 32, 1, "MoE, dense-equivalent: router + n_active experts"),
    ("mla", 1, 32, 1, "MLA naive + MoE with a shared expert: router + n_active + shared"),
    ("mla", 0, 32, 1, "MLA naive, dense MLP"),
    ("plain", 0, 33, 1, "plain (non-gated) MLP, partial rotary"),
]


@pytest.mark.parametrize("name,layer_idx,n,batch,what", CASES, ids=[c[4] for c in CASES])
def test_prefill_flops_equal_cost_model_eager(spec_of, name, layer_idx, n, batch, what):
    spec = spec_of(name)
    layer = DecoderLayer(spec, layer_idx, attention=eager_attention)
    x = torch.randn(batch, n, spec.hidden_size)
    expected = cost(spec, n, layer=layer_idx, family="eager", batch=batch, dtype="fp32").flops["total"][0]
    assert counted_flops(layer, x) == int(expected)


def test_mla_absorbed_flops_equal_cost_model(spec_of):
    spec = spec_of("mla")
    layer = DecoderLayer(spec, 0, attention=eager_attention, mla_form="absorbed")
    n = 24
    x = torch.randn(1, n, spec.hidden_size)
    expected = cost(spec, n, layer=0, family="eager", dtype="fp32", mla_form="absorbed").flops
    assert counted_flops(layer, x) == int(expected["total"][0])
    # and the absorbed form really does the absorbed work: no kv_b over the keys
    assert "proj/kv_b" not in expected and "proj/q_absorb" in expected


@pytest.mark.parametrize("name,layer_idx,mla_form", [("gqa", 0, None), ("sliding", 0, None),
                                                      ("mla", 1, "absorbed"), ("mla", 1, "naive")])
def test_decode_flops_equal_cost_model_eager(spec_of, name, layer_idx, mla_form):
    """One decode step at context n: query length 1 against n cached keys plus itself."""
    spec = spec_of(name)
    layer = DecoderLayer(spec, layer_idx, attention=eager_attention, mla_form=mla_form or "naive")
    n, batch = 50, 2
    x = torch.randn(batch, 1, spec.hidden_size)
    cache = layer.random_cache(batch, n + 1)
    expected = cost(spec, n, layer=layer_idx, family="eager", batch=batch, dtype="fp32", phase="decode",
                    mla_form=mla_form).flops["total"][0]
    assert counted_flops(layer, x, cache) == int(expected)


def test_moe_dense_equivalent_width_is_the_active_width(spec_of):
    spec = spec_of("mla")
    e = spec.moe
    layer = DecoderLayer(spec, 1, materialize=False)
    assert layer.mlp_width == e.n_active * e.expert_intermediate_size + e.n_shared * e.shared_intermediate_size
    assert layer.moe_timing == "dense-equivalent"
    assert DecoderLayer(spec, 0, materialize=False).moe_timing == "n/a"

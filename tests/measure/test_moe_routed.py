"""Routed MoE (``moe_timing='routed'``): real top-k routing over every expert, checked token by token.

The reference below is written independently of the layer: one token at a time, its router scores,
its top-k experts, each expert's gated MLP on that token alone, the weighted sum, plus the shared
experts -- in float64.
"""

from __future__ import annotations

import csv

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lcprof.cost.model import cost
from lcprof.measure import backends as B
from lcprof.measure.check import Checker
from lcprof.measure.layer import DecoderLayer
from lcprof.measure.sweep import run_sweep
from lcprof.measure.execution import Execution, SweepWorkload


def per_token_reference(layer: DecoderLayer, x: torch.Tensor) -> torch.Tensor:
    """The MoE block's output for x (tokens, h), token by token, in the layer's dtype."""
    e = layer.spec.moe
    out = torch.zeros_like(x)
    inter = e.expert_intermediate_size
    for t in range(x.shape[0]):
        xt = x[t]
        logits = (layer.router.weight @ xt).float()
        scores = torch.sigmoid(logits) if layer.sigmoid_scores else torch.softmax(logits, dim=-1)
        w, idx = torch.topk(scores, e.n_active)
        if layer.norm_topk:
            w = w / w.sum()
        w = w * layer.routed_scale
        for k in range(e.n_active):
            ex = int(idx[k])
            gu = layer.experts_gate_up[ex] @ xt
            y = layer.act(gu[:inter]) * gu[inter:] if layer.spec.mlp_gated else layer.act(gu)
            out[t] += w[k].to(x.dtype) * (layer.experts_down[ex] @ y)
        if e.n_shared:
            out[t] += layer._dense_mlp(xt[None])[0]
    return out


@pytest.mark.parametrize("name,layer_idx", [("moe", 0), ("mla", 1)])
def test_routed_moe_matches_the_per_token_reference(spec_of, name, layer_idx):
    spec = spec_of(name)
    layer = DecoderLayer(spec, layer_idx, moe_timing="routed").to(torch.float64)
    x = torch.randn(2, 12, spec.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        got = layer._mlp(x)
        want = per_token_reference(layer, x.reshape(-1, spec.hidden_size)).view_as(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # every token went to n_active distinct experts, and the choice is recorded
    assert layer.last_routing.shape == (24, spec.moe.n_active)
    assert all(len(set(r.tolist())) == spec.moe.n_active for r in layer.last_routing)


def test_routed_weights_follow_the_config(spec_of):
    spec = spec_of("moe")
    assert DecoderLayer(spec, 0, moe_timing="routed", materialize=False).norm_topk  # Mixtral default
    from lcprof.spec import load_model

    v2 = DecoderLayer(load_model("deepseek-v2-lite"), 1, moe_timing="routed", materialize=False)
    assert (v2.norm_topk, v2.routed_scale, v2.sigmoid_scores) == (False, 1.0, False)
    v3 = DecoderLayer(load_model("deepseek-v3"), 3, moe_timing="routed", materialize=False)
    assert (v3.norm_topk, v3.routed_scale, v3.sigmoid_scores) == (True, 2.5, True)


def test_routed_flops_equal_the_cost_model(spec_of):
    # the same FLOPs as the dense-equivalent form: router + n_active experts per token + shared
    for name, layer_idx in (("moe", 0), ("mla", 1)):
        spec = spec_of(name)
        layer = DecoderLayer(spec, layer_idx, attention=B.eager_attention, moe_timing="routed")
        x = torch.randn(1, 40, spec.hidden_size)
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            layer(x)
        want = cost(spec, 40, layer=layer_idx, family="eager", dtype="fp32").flops["total"][0]
        assert fc.get_total_flops() == int(want)


def test_routed_holds_every_expert(spec_of):
    spec = spec_of("mla")  # 8 experts of width 16, one shared expert of width 16, hidden 64, gated
    dense = DecoderLayer.param_count(spec, 1)
    routed = DecoderLayer.param_count(spec, 1, moe_timing="routed")
    e = spec.moe
    # dense-equivalent MLP: 3 x 64 x (2 x 16 + 16); routed: 8 experts x 3 x 64 x 16 + shared 3 x 64 x 16
    assert routed - dense == 3 * 64 * (e.n_experts * 16 + 16) - 3 * 64 * (e.n_active * 16 + 16)
    assert routed - dense == 3 * 64 * 16 * (8 - 2)


def test_forced_routing_replaces_the_top_k(spec_of):
    spec = spec_of("moe")
    layer = DecoderLayer(spec, 0, moe_timing="routed")
    x = torch.randn(1, 6, spec.hidden_size)
    forced = torch.tensor([[0, 1]] * 6)
    layer.forced_routing = forced
    with torch.inference_mode():
        layer._mlp(x)
    assert torch.equal(layer.last_routing, forced)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_routed_layer_passes_the_correctness_check(spec_of, dtype):
    spec = spec_of("mla")
    layer = DecoderLayer(spec, 1, moe_timing="routed").to(B.torch_dtype(dtype)[0])
    for phase in ("prefill", "decode"):
        res = Checker(layer, dtype=dtype, phase=phase).check("sdpa")
        assert res.ok, res.reason


def test_sweep_keeps_routed_and_dense_rows_apart(spec_of, tiny_config_path, tmp_path):
    cfg = tiny_config_path("moe")
    out = tmp_path / "moe.csv"
    run_sweep(SweepWorkload(str(cfg), "16,32", "sdpa", "fp32"), Execution(budget_s=0.01, min_reps=1), device="cpu", out=out)
    df = run_sweep(SweepWorkload(str(cfg), "16,32", "sdpa", "fp32", moe_timing="routed"), Execution(budget_s=0.01, min_reps=1), device="cpu", out=out, resume=True)
    assert list(df["moe_timing"]) == ["routed", "routed"] and set(df["status"]) == {"ok"}
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["moe_timing"], r["n"]) for r in rows) == [
        ("dense-equivalent", "16"), ("dense-equivalent", "32"), ("routed", "16"), ("routed", "32")]

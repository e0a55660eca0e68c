"""MiniMax's residuals: each block adds its output to its *normed* input (``postnorm``), as residual x
alpha + output x beta. Read from both config dialects, built into lcprof's layer, counted by the cost
model (bytes and live bytes to the byte against the layer's ops) and by hand.

transformers' MiniMaxDecoderLayer: ``hidden_states = self.input_layernorm(hidden_states); residual =
hidden_states; ...; hidden_states = residual * self.attn_alpha_factor + hidden_states *
self.attn_beta_factor`` (and the same around the MLP); vLLM's MiniMaxText01DecoderLayer follows
``postnorm`` and multiplies both terms whatever the factors.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from support.tiny_models import TINY_HYBRID_CONFIGS, tiny_hybrid_spec
from test_tensor_audit import assert_steps_match, moved_bytes, predicted_moved, traced_peak
from lcprof.cost.model import activation_steps, cost
from lcprof.errors import LcprofError
from lcprof.measure.layer import DecoderLayer
from lcprof.spec import load_model, spec_from_config


def _variants():
    spec = tiny_hybrid_spec("minimax")
    return {"post-norm": spec, "pre-norm": dataclasses.replace(spec, post_norm_residual=False),
            "plain": dataclasses.replace(spec, post_norm_residual=False, residual_factors=None),
            "post-norm, unscaled": dataclasses.replace(spec, residual_factors=None)}


def test_both_config_dialects_are_read():
    m1 = load_model("minimax-m1")  # MiniMax-M1's own config: layernorm_*_alpha 3.5566 (= (2 x 80)^0.25), postnorm
    a = (2 * 80) ** 0.25
    assert m1.post_norm_residual is True
    assert [f for pair in m1.residual_factors for f in pair] == pytest.approx([a, 1.0] * 3, rel=1e-15)
    tiny = tiny_hybrid_spec("minimax")  # transformers' minimax: always post-norm, *_factor names
    assert tiny.post_norm_residual is True and tiny.residual_factors == ((3.5, 1.0), (3.5, 1.0), (3.5, 0.5))
    assert tiny.residual_factors_at(2) == ((3.5, 1.0), (3.5, 0.5))  # softmax attention, then the MLP
    assert tiny.residual_factors_at(0) == ((3.5, 1.0), (3.5, 0.5))  # lightning (linear_attn_alpha_factor)
    cfg = json.loads(json.dumps(m1.config))
    assert spec_from_config({**cfg, "postnorm": False}, name="t").post_norm_residual is False
    with pytest.raises(LcprofError, match="layernorm_mlp_beta"):
        spec_from_config({**cfg, "layernorm_mlp_beta": "one"}, name="t")
    assert load_model("llama3-8b").residual_factors is None and not load_model("llama3-8b").post_norm_residual


def test_layer_adds_to_the_normed_input_with_its_factors():
    spec = tiny_hybrid_spec("minimax")
    lay = DecoderLayer(spec, 2).to(torch.float64).eval()
    x = torch.randn(1, 20, spec.hidden_size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        got = lay(x)
        h = lay.input_norm(x)
        a, _ = lay._attention_block(h, None)
        mid = 3.5 * h + 1.0 * a
        hn = lay.post_attn_norm(mid)
        want = 3.5 * hn + 0.5 * lay._mlp(hn)
    assert torch.allclose(got, want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("variant", ["post-norm", "pre-norm", "plain", "post-norm, unscaled"])
@pytest.mark.parametrize("layer,family", [(0, "tiled"), (2, "tiled"), (2, "eager")])  # 0: lightning
def test_every_step_and_the_traffic_match_the_layer_to_the_byte(variant, layer, family):
    spec = _variants()[variant]
    for dtype in ("fp32", "bf16"):
        lb = traced_peak(spec, layer, n=20, family=family, dtype=dtype)
        assert_steps_match(spec, lb, 20, dtype=dtype, family=family, layer=layer)
    if layer == 2:  # the lightning mixer's own traffic is its mixer/* ops, not misc/elementwise
        mb = moved_bytes(spec, layer, n=20, family=family, dtype="fp32")
        assert predicted_moved(spec, layer, n=20, family=family, dtype="fp32") == mb.total_bytes


def test_residual_bytes_by_hand():
    # layer 2, fp32 (s = 4), h = 32, n = 20 tokens. Unfused: residual x alpha (read + write h), output x
    # beta (the same), their sum (read 2h, write h) = 7h per block against a plain add's 3h: 2 blocks x
    # 4 x s x n x h = 20480 B more. Fused (vLLM's MiniMaxText01DecoderLayer): RMSNorm alone (2h) then
    # the same three ops (7h) = 9h per block against fused add + RMSNorm's 4h: 2 x 5 x s x n x h = 25600.
    v = _variants()

    def ew(spec, mode):
        return float(cost(spec, 20, layer=2, dtype="fp32", elementwise=mode).bytes["misc/elementwise"][0])
    assert ew(v["post-norm"], "unfused") - ew(v["plain"], "unfused") == 2 * 4 * 4 * 20 * 32
    assert ew(v["pre-norm"], "unfused") == ew(v["post-norm"], "unfused")  # which residual: the same traffic
    assert ew(v["post-norm"], "fused") - ew(v["plain"], "fused") == 2 * 5 * 4 * 20 * 32
    # post-norm alone: the add cannot be fused into the norm (its residual is the norm's output): the
    # norm (2h) and the add (3h) apart, 5h per block, 1h more than fused add + RMSNorm; unfused unchanged
    assert ew(v["post-norm, unscaled"], "fused") - ew(v["plain"], "fused") == 2 * 1 * 4 * 20 * 32
    assert ew(v["post-norm, unscaled"], "unfused") == ew(v["plain"], "unfused")


def test_residual_steps_by_hand():
    # one bf16 token (s = 2, h = 32; RoPE tables 2 x 2 x 8 B): the attention block's residual add holds
    # x, the output, the two products, their sum and (post-norm) the normed x: 6h; the MLP's holds x,
    # x + mix, the MLP output, the two products, the sum and the normed input: 7h. Pre-norm: 5h and 6h.
    rope = 2 * 2 * 8
    for variant, mix, mlp in (("post-norm", 6, 7), ("pre-norm", 5, 6)):
        st = activation_steps(_variants()[variant], 1, dtype="bf16", layer=2)
        assert int(st["mix/residual"][0]) == 2 * 32 * mix + rope
        assert int(st["residual"][0]) == 2 * 32 * mlp + rope
    post = activation_steps(_variants()["post-norm, unscaled"], 1, dtype="bf16", layer=2)  # + the normed x: 4h, 5h
    assert int(post["mix/residual"][0]) == 2 * 32 * 4 + rope and int(post["residual"][0]) == 2 * 32 * 5 + rope
    plain = activation_steps(_variants()["plain"], 1, dtype="bf16", layer=2)
    assert "mix/residual" not in plain and int(plain["residual"][0]) == 2 * 32 * 4 + rope


def test_lightning_layer_runs_the_configs_block():
    # block_size is read (16 here, MiniMax's default 256): the measured layer runs it, as the cost counts it
    spec = tiny_hybrid_spec("minimax")
    assert TINY_HYBRID_CONFIGS["minimax"]["block_size"] == 16
    assert DecoderLayer(spec, 0).mixer.block == 16

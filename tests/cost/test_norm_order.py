"""The RMSNorm's order of operations: Llama's (cast back, then times w in the input's dtype) or
Gemma's, Qwen3-Next's and Qwen3.5's "one-centred" one (times 1 + w in float32, the cast last).

In fp16/bf16 the weight product of the second runs in float32: 4 B more per element than Llama's
(read 4 + write 4 against read 2 + write 2). The counts are held to transformers' own
Gemma2RMSNorm by MovedBytes, per token (the difference of two token counts: the weight's own
width-sized ops, which transformers runs once per call, drop out).
"""

from __future__ import annotations

import dataclasses

import pytest

from lcprof.cost.model import cost
from lcprof.cost.ops import _norm_bytes
from lcprof.spec import load_model


def test_which_models_run_the_one_centred_norm():
    for name in ("gemma2-9b", "gemma3-27b", "qwen3-next-80b-a3b", "qwen3.5-27b", "qwen3.5-35b-a3b"):
        assert load_model(name).norm_one_centred, name
    for name in ("llama3-8b", "qwen3-8b", "mistral-7b", "deepseek-v3", "gpt-oss-20b", "minimax-m1"):
        assert not load_model(name).norm_one_centred, name


def test_norm_bytes_by_hand():
    # bf16 (s = 2), width 10, 3 tokens. Per element: copy up 2 + 4, square 8, mean 4, scale 8, copy
    # down 4 + 2, and the weight product: Llama's in bf16 (read 2, write 2 = 4), Gemma's in fp32 (8).
    # Per token: the mean written (4), + eps and rsqrt (read + write: 16), read by the scale (4) = 24.
    # The weight read once (2 x 10).
    assert int(_norm_bytes(10, 3, 2)) == 3 * (10 * 36 + 24) + 20
    assert int(_norm_bytes(10, 3, 2, one_centred=True)) == 3 * (10 * 40 + 24) + 20
    # fp32: no copies, both products in fp32: the same 28 per element
    assert int(_norm_bytes(10, 3, 4)) == int(_norm_bytes(10, 3, 4, one_centred=True)) == 3 * (10 * 28 + 24) + 40


def test_gemma2_layer_elementwise_bytes_by_hand():
    # Gemma-2-9B, bf16, n tokens: four norms per layer (before and after attention and the MLP) over
    # h = 3584, 4 B more per element each
    spec = load_model("gemma2-9b")
    llama_order = dataclasses.replace(spec, norm_one_centred=False)
    n = 16

    def ew(sp, dtype="bf16"):
        return float(cost(sp, n, layer=0, dtype=dtype).bytes["misc/elementwise"][0])
    assert ew(spec) - ew(llama_order) == 4 * n * 3584 * 4
    assert ew(spec, "fp32") == ew(llama_order, "fp32")
    # Gemma 3 also normalizes q and k per head (head_dim 128, 32 query and 16 K/V heads): 2 norms per
    # block over h = 5376 and the q and k norms over (32 + 16) x 128
    g3 = load_model("gemma3-27b")
    assert float(cost(g3, n, layer=0).bytes["misc/elementwise"][0]) - float(
        cost(dataclasses.replace(g3, norm_one_centred=False), n, layer=0).bytes["misc/elementwise"][0]) \
        == n * 4 * (4 * 5376 + (32 + 16) * 128)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_per_token_bytes_match_transformers_gemma2_rmsnorm(dtype):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.gemma2.modeling_gemma2 import Gemma2RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from lcprof.measure.tensor_audit import MovedBytes

    tdt, s = {"bf16": (torch.bfloat16, 2), "fp32": (torch.float32, 4)}[dtype]
    width = 48

    def per_token(norm):
        moved = []
        for tokens in (5, 9):
            x = torch.randn(tokens, width).to(tdt)
            with torch.no_grad(), MovedBytes() as mb:
                norm(x)
            moved.append(mb.total_bytes)
        return (moved[1] - moved[0]) / 4

    def model(one_centred):
        return (float(_norm_bytes(width, 9, s, one_centred)) - float(_norm_bytes(width, 5, s, one_centred))) / 4
    assert per_token(Gemma2RMSNorm(width).to(tdt)) == model(True)
    assert per_token(LlamaRMSNorm(width).to(tdt)) == model(False)

"""KV bytes, blocks and budgets checked against arithmetic written out from config values."""

import math

import numpy as np
import pytest

from lcprof.cost.model import kv_bytes_per_token, weight_bytes
from lcprof.plan.memory import (activation_reserve_bytes_per_gpu, blocks_per_request, kv_block_bytes_per_gpu,
                                kv_group_kinds, memory_budget, shared_prefix_blocks)
from lcprof.spec import load_model

from plan_hand import BF16, FP8, H100_MEMORY_BYTES, llama_params, tiled_activation_bytes


def test_mha_llama2_7b_kv_per_token_and_block_rounding():
    spec = load_model("llama2-7b")
    # 32 layers x 32 KV heads x (K 128 + V 128) x 2 bytes
    per_token = 32 * 32 * (128 + 128) * BF16
    assert per_token == 524288
    assert kv_bytes_per_token(spec, "bf16", 1) == per_token
    assert kv_block_bytes_per_gpu(spec, "bf16", tp=1, block_size=16) == 16 * per_token
    # TP=2 splits the 32 KV heads 16/16
    assert kv_block_bytes_per_gpu(spec, "bf16", tp=2, block_size=16) == 16 * per_token // 2
    # block rounding: 1000 tokens -> ceil(1000/16) = 63 blocks (62.5 rounded up), 1008 -> 63, 1009 -> 64
    assert list(blocks_per_request(spec, [1000, 1008, 1009, 16, 1], 16)) == [63, 63, 64, 1, 1]
    assert list(blocks_per_request(spec, [1000], 32)) == [32]  # ceil(1000/32) = 31.25 -> 32


def test_gqa_llama3_70b_tp_larger_than_kv_heads_replicates():
    spec = load_model("llama3-70b")
    # 64 query heads, 8 KV heads. TP=8: one KV head per GPU. TP=16: still one (each head on 2 GPUs).
    per_token_tp8 = 80 * (8 // 8) * (128 + 128) * BF16
    assert per_token_tp8 == 40960
    assert kv_bytes_per_token(spec, "bf16", 8) == per_token_tp8
    assert kv_bytes_per_token(spec, "bf16", 16) == per_token_tp8  # replicated, not halved
    assert kv_block_bytes_per_gpu(spec, "bf16", tp=16) == 16 * 40960
    # TP=2: 4 KV heads per GPU
    assert kv_bytes_per_token(spec, "bf16", 2) == 80 * 4 * 256 * BF16
    # weights at TP=16: everything split 16 ways except norms (replicated) and the K/V projections,
    # of which each GPU holds one KV head's share (1/8 of them, not 1/16)
    total = llama_params(8192, 28672, 128256, 80, 64, 8, 128)
    assert total == 70553706496
    kv_proj = 80 * 8192 * 8 * 256
    norms = 80 * 2 * 8192 + 8192
    expected = BF16 * ((total - norms - kv_proj) / 16 + kv_proj / 8 + norms)
    assert weight_bytes(spec, "bf16", 16) == round(expected)


def test_mla_deepseek_v2_lite_latent_not_split_by_tp():
    spec = load_model("deepseek-v2-lite")
    # 27 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes, one copy per layer
    per_token = 27 * (512 + 64) * BF16
    assert per_token == 31104
    for tp in (1, 2, 4, 8, 16):
        assert kv_bytes_per_token(spec, "bf16", tp) == per_token
    assert kv_block_bytes_per_gpu(spec, "fp8", tp=2) == 16 * 27 * 576 * FP8
    assert list(blocks_per_request(spec, [2048, 8192, 32768], 16)) == [128, 512, 2048]


def test_sliding_window_mistral_7b_holds_window_plus_one_block():
    spec = load_model("mistral-7b")
    (kind,) = kv_group_kinds(spec)
    assert (kind.kind, kind.window, kind.n_layers, kind.layers_per_group) == ("sliding", 4096, 32, 32)
    assert kv_block_bytes_per_gpu(spec, "bf16") == 16 * 32 * 8 * 256 * BF16
    w, b = 4096, 16
    cases = {
        1000: math.ceil(1000 / b),  # below the window: everything, rounded up
        4096: w // b,  # exactly the window
        4100: math.ceil(4100 / b) - (4100 - w) // b,  # 257: the window straddles a block edge
        32768: 32768 // b - (32768 - w) // b,  # 2048 - 1792 = 256: block-aligned, no slack
        32770: math.ceil(32770 / b) - (32770 - w) // b,  # 2049 - 1792 = 257
    }
    assert cases[4100] == 257 and cases[32768] == 256 and cases[32770] == 257
    got = blocks_per_request(spec, list(cases), b)
    assert list(got) == list(cases.values())
    # never more than ceil(W/B) + 1
    ns = np.arange(1, 70000, 97)
    assert blocks_per_request(spec, ns, b).max() <= w // b + 1


def test_alternating_gemma2_9b_two_groups_summed():
    spec = load_model("gemma2-9b")
    kinds = {k.label: k for k in kv_group_kinds(spec)}
    # 42 layers: even sliding (W=4096), odd global -> 21 + 21, one KV group of 21 layers each
    assert kinds["sliding:4096"].n_layers == 21 and kinds["global"].n_layers == 21
    assert kinds["global"].layers_per_group == 21 and kinds["global"].n_groups == 1
    per_layer = 8 * (256 + 256) * BF16  # 8 KV heads, head_dim 256
    assert kv_bytes_per_token(spec, "bf16") == 42 * per_layer
    assert kv_block_bytes_per_gpu(spec, "bf16") == 16 * 21 * per_layer
    # 32k: global 2048 blocks + sliding 256; 4k: 256 + 256; 32770: 2049 + 257
    assert list(blocks_per_request(spec, [32768, 4096, 32770], 16)) == [2048 + 256, 256 + 256, 2049 + 257]


def test_fp8_halves_block_bytes_and_doubles_pool():
    spec = load_model("llama3-70b")
    common = dict(memory_bytes=H100_MEMORY_BYTES, memory_utilization=0.9, dtype="bf16", tp=8, block_size=16,
                  largest_prefill_tokens=8192)
    a = memory_budget(spec, kv_dtype="bf16", **common)
    b = memory_budget(spec, kv_dtype="fp8", **common)
    assert b.kv_block_bytes_per_gpu == 16 * 80 * 1 * 256 * FP8
    assert a.kv_budget_bytes_per_gpu == b.kv_budget_bytes_per_gpu
    assert b.kv_pool_blocks == a.kv_budget_bytes_per_gpu // (16 * 80 * 256 * FP8)
    assert b.kv_pool_blocks in (2 * a.kv_pool_blocks, 2 * a.kv_pool_blocks + 1)


def test_vllm_style_block_count_by_hand_llama3_8b():
    """blocks = (memory x utilization - weights - activation reserve) // (block_size x KV bytes per token)."""
    spec = load_model("llama3-8b")
    h, inter, vocab, layers, heads, kvh, hd = 4096, 14336, 128256, 32, 32, 8, 128
    weights = BF16 * llama_params(h, inter, vocab, layers, heads, kvh, hd)
    assert weights == 2 * 8030261248
    act = tiled_activation_bytes(8192, h, heads, kvh, hd, inter)
    # the MLP step is the peak: cos/sin tables, x, x + attn, normed x, act(gate), up, product
    assert act == 8192 * (2 * 2 * 128 + 3 * 2 * 4096 + 3 * 2 * 14336) == 910_163_968
    usable = H100_MEMORY_BYTES * 9 // 10  # 0.9 x 80 GiB = 72 GiB exactly
    kv_per_token = layers * kvh * 2 * hd * BF16  # 131072
    expected_blocks = (usable - weights - act) // (16 * kv_per_token)
    assert expected_blocks == 28771  # 60,338,724,864 B / 2,097,152 B = 28771.75
    mb = memory_budget(spec, memory_bytes=H100_MEMORY_BYTES, memory_utilization=0.9, dtype="bf16",
                       kv_dtype="bf16", tp=1, block_size=16, largest_prefill_tokens=8192)
    assert mb.weights_bytes_per_gpu == weights
    assert mb.activation_reserve_bytes_per_gpu == act
    assert mb.kv_budget_bytes_per_gpu == usable - weights - act
    assert mb.kv_pool_blocks == expected_blocks


def test_activation_reserve_splits_heads_and_mlp_not_the_residual():
    spec = load_model("llama3-70b")
    one = tiled_activation_bytes(131072, 8192, 64, 8, 128, 28672)
    assert activation_reserve_bytes_per_gpu(spec, 131072, tp=1)[0] == one
    # TP 8, per token (bf16): the MLP step (tables 512 + x, x + attn, normed 3 x 2 x 8192 + act,
    # up, product on 28672 / 8 = 3584: 71,168 B) is now below the post-attention norm, whose fp32
    # temporaries span the whole hidden size on every rank: 512 + 2 x 2 x 8192 + 8192 x (2 x 2 + 8)
    eight = activation_reserve_bytes_per_gpu(spec, 131072, tp=8)[0]
    assert eight == tiled_activation_bytes(131072, 8192, 64, 8, 128, 28672, tp=8)
    assert eight == 131072 * max(512 + 3 * 2 * 8192 + 3 * 2 * 3584, 512 + 2 * 2 * 8192 + 8192 * 12)
    assert eight == 131072 * 131_584
    assert one / 8 < eight < one  # far from one eighth: the hidden-size tensors are whole on every rank


def test_shared_prefix_blocks_stored_once():
    spec = load_model("llama3-8b")
    # 1000-token prefix: floor(1000/16) = 62 full blocks shared; the partial 63rd is private
    assert shared_prefix_blocks(spec, 1000, 4096, 16) == 62
    assert blocks_per_request(spec, [4096], 16, prefix=1000)[0] == 256 - 62
    # sliding window: a 32k request no longer attends the prefix, so it shares nothing
    m = load_model("mistral-7b")
    assert blocks_per_request(m, [32768], 16, prefix=1000)[0] == 256
    assert blocks_per_request(m, [2048], 16, prefix=1000)[0] == 128 - 62


def test_budget_errors_say_how_much_is_missing():
    from lcprof.errors import LcprofError

    spec = load_model("llama3-70b")
    with pytest.raises(LcprofError, match=r"does not fit the GPUs.*missing \d+\.\d\d GiB per GPU"):
        memory_budget(spec, memory_bytes=H100_MEMORY_BYTES, memory_utilization=0.9, dtype="bf16", kv_dtype="bf16",
                      tp=1, block_size=16, largest_prefill_tokens=4096)
    small = load_model("llama3-8b")
    with pytest.raises(LcprofError, match=r"nothing left for KV.*short by \d+\.\d\d GiB"):
        memory_budget(small, memory_bytes=H100_MEMORY_BYTES, memory_utilization=0.2, dtype="bf16", kv_dtype="bf16",
                      tp=1, block_size=16, largest_prefill_tokens=131072)

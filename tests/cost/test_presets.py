"""Bundled presets against published numbers and hand arithmetic: parameters, KV cache, RoPE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lcprof.analytic import kv_table
from lcprof.cost.model import kv_bytes, kv_bytes_per_token, kv_heads_per_gpu
from lcprof.cost.rope import base_inv_freq, inv_freq, rope_summary, rope_table
from lcprof.errors import LcprofError
from lcprof.hardware import get_gpu
from lcprof.spec import list_presets, load_model, param_counts, spec_from_config

from support.hf_configs import llama_config

REQUIRED = ["phi3-mini-4k", "phi3-mini-128k", "llama2-7b", "llama3-8b", "llama3-70b", "llama3.1-8b",
            "llama3.1-70b", "mistral-7b", "qwen2.5-7b", "qwen2.5-7b-yarn", "gemma2-9b",
            "deepseek-v2-lite", "deepseek-v3", "llama4-scout"]

GIB = 1 << 30


def test_required_presets_and_aliases():
    names = list_presets()
    for nm in REQUIRED:
        assert nm in names
    assert load_model("phi3-4k") == load_model("phi3-mini-4k")
    assert load_model("phi3-128k") == load_model("phi3-mini-128k")
    assert load_model("PHI3-128K").name == "phi3-mini-128k"  # names are case-insensitive
    for nm in names:
        spec = load_model(nm)
        assert spec.source and spec.source.startswith("https://"), nm
        assert spec.published_params, nm


# ------------------------------------------------------------------------------------------------
# Parameter counts
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in REQUIRED if n != "llama4-scout"])
def test_param_count_within_1_percent_of_published(name):
    spec = load_model(name)
    total = param_counts(spec)["total_params"]
    assert abs(total / spec.published_params - 1) < 0.01, (name, total, spec.published_params)


HYBRID_AND_NEW = ["qwen3-8b", "qwen3-30b-a3b", "qwen3-235b-a22b", "qwen3-next-80b-a3b", "qwen3.5-27b", "qwen3.5-35b-a3b",
                  "qwen3.5-397b-a17b", "gemma3-27b", "gpt-oss-20b", "gpt-oss-120b", "mixtral-8x7b", "llama4-maverick",
                  "llama4-scout-instruct", "deepseek-v3.2", "kimi-k2", "glm-5", "minimax-m1", "minimax-m2.5",
                  "mimo-v2-flash", "jamba-1.5-mini", "nemotron-h-56b", "nemotron-3-nano", "falcon-mamba-7b",
                  "kimi-linear-48b", "smollm3-3b", "seed-oss-36b", "olmo3-7b", "command-r7b", "glm4-9b", "glm4-32b",
                  "granite-3.3-8b", "hunyuan-7b", "lfm2-1.2b", "lfm2-8b-a1b", "phi4-mini", "llama3.2-1b",
                  "llama3.2-3b", "gemma3-1b", "mistral-small-3.1", "qwen2.5-vl-7b", "mistral-nemo-12b", "qwen3-32b",
                  "qwen3-4b", "r1-distill-qwen-32b", "qwen3-coder-30b-a3b", "llama3.3-70b", "phi3.5-mini",
                  "gemma3-12b", "granite-4.0-h-small", "granite-4.0-h-tiny", "nemotron-nano-9b-v2"]
#: presets whose published total leaves the (untied) embedding and LM-head tables out: Kimi Linear's "48B"
#: is 48.37B without them, 49.12B with (its preset's published_params_source)
WITHOUT_EMBEDDINGS = {"kimi-linear-48b"}


def test_issue_12_presets_are_listed_and_near_their_published_totals():
    # Within 1.5% of the published total for every preset: the gaps above 1% are towers and rounding --
    # gemma3-27b (-1.4%: the SigLIP vision tower), llama4-scout(-instruct) (-1.1%: the vision encoder),
    # kimi-k2 (-1.3%: "1T" published as 1.04T, a rounded figure), each explained in its preset.
    names = list_presets()
    for nm in HYBRID_AND_NEW:
        assert nm in names, nm
    for nm in names:
        spec = load_model(nm)
        pc = param_counts(spec)
        total = pc["total_params"] - (pc["embedding_params"] + pc["lm_head_params"] if nm in WITHOUT_EMBEDDINGS else 0)
        assert abs(total / spec.published_params - 1) < 0.015, (nm, total, spec.published_params)


def test_llama4_scout_param_count():
    # The published 109B (model card: "17B (Activated) 109B (Total)") counts the vision encoder
    # and projector (~1.9B) that the text-only preset drops, so the text model is ~1.1% short of it;
    # allow 2% against 109e9 and require the shortfall to be on the low side.
    spec = load_model("llama4-scout")
    total = param_counts(spec)["total_params"]
    assert spec.published_params == 109e9
    assert abs(total / 109e9 - 1) < 0.02
    assert total < 109e9
    # active: 17B published (text model; the vision tower is not active for text tokens)
    assert abs(param_counts(spec)["active_params"] / 17e9 - 1) < 0.02


def test_deepseek_v3_active_params():
    # "#Total Params 671B, #Activated Params 37B" (DeepSeek-V3 README)
    pc = param_counts(load_model("deepseek-v3"))
    assert abs(pc["total_params"] / 671e9 - 1) < 0.01
    assert abs(pc["active_params"] / 37e9 - 1) < 0.02


def test_param_counts_by_hand():
    # llama2-7b: per layer 4*4096^2 (q,k,v,o) + 3*4096*11008 (gate, up, down) + 2*4096 (norms)
    #   = 67108864 + 135266304 + 8192 = 202383360; x32 = 6476267520
    #   + embeddings and lm_head 2*32000*4096 = 262144000 + final norm 4096 = 6738415616
    assert param_counts(load_model("llama2-7b"))["total_params"] == 6_738_415_616
    # mistral-7b: per layer 2*4096^2 (q,o) + 2*4096*1024 (k,v) + 3*4096*14336 + 2*4096
    #   = 33554432 + 8388608 + 176160768 + 8192 = 218112000; x32 = 6979584000
    #   + 2*32000*4096 + 4096 = 262148096 -> 7241732096
    assert param_counts(load_model("mistral-7b"))["total_params"] == 7_241_732_096
    # gemma2-9b: q 3584*4096 + k,v 2*3584*(8*256) + o 4096*3584 = 3*14680064 = 44040192;
    #   MLP 3*3584*14336 = 154140672; 4 norms 4*3584 = 14336 -> 198195200 per layer; x42 =
    #   8324198400; tied embedding 256000*3584 = 917504000; final norm 3584 -> 9241705984
    assert param_counts(load_model("gemma2-9b"))["total_params"] == 9_241_705_984
    # deepseek-v2-lite (MLA, no q LoRA): q 2048*16*192 = 6291456; kv_a 2048*(512+64) = 1179648;
    #   kv_a norm 512; kv_b 512*16*(128+128) = 2097152; o 16*128*2048 = 4194304
    #   -> 13763072 per layer, x27 = 371602944
    #   layer 0 dense MLP 3*2048*10944 = 67239936
    #   26 MoE layers: router 2048*64 = 131072, 64 experts 64*3*2048*1408 = 553648128,
    #   2 shared 2*3*2048*1408 = 17301504 -> 571080704 each, x26 = 14848098304
    #   norms 27*2*2048 + 2048 = 112640; embedding + lm_head 2*102400*2048 = 419430400
    #   total = 15706484224
    assert param_counts(load_model("deepseek-v2-lite"))["total_params"] == 15_706_484_224
    # qwen2.5-7b: q/k/v biases 3584 + 2*512 = 4608 per layer are counted (model card: 7.61B)
    assert param_counts(load_model("qwen2.5-7b"))["total_params"] == 7_615_616_512


# ------------------------------------------------------------------------------------------------
# KV cache bytes
# ------------------------------------------------------------------------------------------------

def test_kv_per_token_hand_values():
    # llama3-8b: 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 131072
    assert kv_bytes_per_token(load_model("llama3-8b")) == 32 * 8 * 128 * 2 * 2 == 131072
    # llama2-7b: 32 x 32 x 128 x 2 x 2 = 524288 = 0.5 MiB
    assert kv_bytes_per_token(load_model("llama2-7b")) == 32 * 32 * 128 * 2 * 2 == 512 * 1024
    # llama3-70b: 80 x 8 x 128 x 2 x 2 = 327680
    assert kv_bytes_per_token(load_model("llama3-70b")) == 80 * 8 * 128 * 2 * 2
    # qwen2.5-7b: 28 x 4 x 128 x 2 x 2 = 57344
    assert kv_bytes_per_token(load_model("qwen2.5-7b")) == 28 * 4 * 128 * 2 * 2
    # phi3-mini (MHA): 32 x 32 x 96 x 2 x 2 = 393216
    assert kv_bytes_per_token(load_model("phi3-128k")) == 32 * 32 * 96 * 2 * 2
    # deepseek-v2-lite (MLA): 27 layers x (512 latent + 64 rope) x 2 bytes = 31104
    assert kv_bytes_per_token(load_model("deepseek-v2-lite")) == 27 * (512 + 64) * 2 == 31104
    # deepseek-v3: 61 x 576 x 2 = 70272
    assert kv_bytes_per_token(load_model("deepseek-v3")) == 61 * 576 * 2


def test_llama2_7b_published_kv_table():
    # The commonly published figure: Llama-2-7B, fp16/bf16, 4096 tokens -> 2 GiB (0.5 MiB/token)
    spec = load_model("llama2-7b")
    assert int(kv_bytes(spec, 4096)[0]) == 2 * GIB
    df = kv_table("llama2-7b", "4k", dtype="bf16")
    assert df["kv_bytes"].tolist() == [2 * GIB]
    assert df["kv_gib"].tolist() == [2.0]
    assert df["kv_bytes_per_token"].tolist() == [512 * 1024]
    # batch 8 -> 16 GiB
    assert int(kv_bytes(spec, 4096, batch=8)[0]) == 16 * GIB


def test_mistral_sliding_window_caps_kv():
    spec = load_model("mistral-7b")
    # at n = 32k every layer holds only W = 4096 tokens:
    # 32 layers x 4096 tokens x 8 heads x 128 x 2 x 2 bytes = 536870912 = 0.5 GiB
    assert int(kv_bytes(spec, 32768)[0]) == 32 * 4096 * 8 * 128 * 2 * 2 == GIB // 2
    # below the window nothing is capped: n = 1000 -> 1000 x 131072
    assert int(kv_bytes(spec, 1000)[0]) == 1000 * 131072
    df = kv_table(spec, "32k")
    assert df["kv_bytes_uncapped"].tolist() == [32768 * 131072]  # 4 GiB
    assert df["window_saving"].tolist() == [1 - 4096 / 32768]  # 0.875


def test_gemma2_alternating_kv():
    spec = load_model("gemma2-9b")
    assert [layer.attn for layer in spec.layers[:4]] == ["sliding", "global", "sliding", "global"]
    per_layer_token = 8 * 256 * 2 * 2  # 8192 bytes
    # n = 32k: 21 sliding layers capped at 4096 + 21 global layers at 32768
    #   = 21*4096*8192 + 21*32768*8192 = 704643072 + 5637144576 = 6341787648
    expect = 21 * 4096 * per_layer_token + 21 * 32768 * per_layer_token
    assert expect == 6_341_787_648
    assert int(kv_bytes(spec, 32768)[0]) == expect
    # n = 4096: nothing capped yet -> 42 * 4096 * 8192
    assert int(kv_bytes(spec, 4096)[0]) == 42 * 4096 * per_layer_token


def test_deepseek_mla_kv():
    spec = load_model("deepseek-v2-lite")
    # 27 layers x 576 x 2 bytes x 32768 tokens = 1019215872
    assert int(kv_bytes(spec, 32768)[0]) == 27 * 576 * 2 * 32768 == 1_019_215_872


def test_llama4_scout_chunked_kv():
    spec = load_model("llama4-scout")
    assert spec.layer_kinds == {"chunked:8192": 36, "global": 12}
    per_layer_token = 8 * 128 * 2 * 2  # 4096 bytes
    # n = 128k = 16 whole chunks: chunked layers hold one chunk (8192), global layers all 131072
    #   (36*8192 + 12*131072) * 4096 = 1867776 * 4096 = 7650410496
    assert int(kv_bytes(spec, 131072)[0]) == (36 * 8192 + 12 * 131072) * per_layer_token
    # n = 8192: no cap reached, 48 * 8192 * 4096 = 1610612736
    assert int(kv_bytes(spec, 8192)[0]) == 48 * 8192 * per_layer_token
    # one more token cannot shrink the cache a sequence needs: at n = 8192 every chunked layer
    # held 8192 tokens, so the bytes needed to reach n = 8193 are at least that.
    assert int(kv_bytes(spec, 8193)[0]) >= int(kv_bytes(spec, 8192)[0])


def test_fp8_halves_bf16_for_every_preset():
    """Every preset without a DSA indexer (whose key cache is fp8 in every KV dtype: 132 bytes per token
    and layer, see tests/cost/test_hybrid_kinds.py)."""
    ns = [1000, 4096, 32768, 131072]
    for nm in list_presets():
        spec = load_model(nm)
        if spec.indexer is not None:
            n_sparse = sum(1 for lyr in spec.layers if lyr.attn == "sparse")
            fixed = n_sparse * 132  # the indexer's bytes per token, the same in fp8, bf16 and fp32
            assert kv_bytes_per_token(spec, "fp8") * 2 - fixed == kv_bytes_per_token(spec, "bf16"), nm
            assert kv_bytes_per_token(spec, "fp32") - fixed == 2 * (kv_bytes_per_token(spec, "bf16") - fixed), nm
            continue
        bf16 = kv_bytes(spec, ns, kv_dtype="bf16")
        assert np.array_equal(kv_bytes(spec, ns, kv_dtype="fp8") * 2, bf16), nm
        assert np.array_equal(kv_bytes(spec, ns, kv_dtype="fp32"), bf16 * 2), nm
        assert kv_bytes_per_token(spec, "fp8") * 2 == kv_bytes_per_token(spec, "bf16"), nm


def test_tensor_parallel_kv_sharding():
    spec = load_model("llama3-70b")  # 64 query heads, 8 KV heads
    assert [kv_heads_per_gpu(spec, tp) for tp in (1, 2, 4, 8, 16, 32, 64)] == [8, 4, 2, 1, 1, 1, 1]
    # TP 16 > 8 KV heads: every KV head is held by 2 GPUs, each GPU holds 1 head:
    # 80 layers x 1 head x 128 x 2 x 2 bytes = 40960 per token per GPU
    assert kv_bytes_per_token(spec, tp=16) == 80 * 1 * 128 * 2 * 2 == 40960
    assert kv_bytes_per_token(spec, tp=8) == 40960
    assert kv_bytes_per_token(spec, tp=2) == 80 * 4 * 128 * 2 * 2
    assert int(kv_bytes(spec, 8192, tp=16)[0]) == 8192 * 40960
    with pytest.raises(LcprofError):
        kv_heads_per_gpu(spec, 3)  # 64 heads are not divisible by 3
    # qwen2.5-7b: 28 heads / 4 KV heads; TP 4 -> 1 KV head per GPU; TP 8 does not divide 28 heads
    qwen = load_model("qwen2.5-7b")
    assert kv_bytes_per_token(qwen, tp=4) == 28 * 1 * 128 * 2 * 2
    with pytest.raises(LcprofError):
        kv_bytes_per_token(qwen, tp=8)
    # MLA: the latent is shared by all heads, so every TP rank holds the whole of it
    v3 = load_model("deepseek-v3")
    assert kv_bytes_per_token(v3, tp=8) == kv_bytes_per_token(v3, tp=1) == 61 * 576 * 2


# ------------------------------------------------------------------------------------------------
# RoPE
# ------------------------------------------------------------------------------------------------

def test_phi3_longrope():
    spec = load_model("phi3-128k")
    r = spec.rope
    assert r.type == "longrope" and r.rotary_dim == 96
    # scale s = 131072 / 4096 = 32; attention factor sqrt(1 + ln 32 / ln 4096) = sqrt(1 + 5/12)
    expect = math.sqrt(1 + math.log(32) / math.log(4096))
    assert expect == pytest.approx(math.sqrt(17 / 12), rel=1e-15)
    assert expect == pytest.approx(1.1902, abs=5e-5)
    freqs_long, att = inv_freq(r, 131072)
    assert att == pytest.approx(expect, rel=1e-12)
    base = [10000.0 ** (-2 * k / 96) for k in range(48)]
    # beyond the original 4096 tokens the long factors divide the base frequencies ...
    assert freqs_long[0] == pytest.approx(1.0 / 1.0700000524520874, rel=1e-12)
    assert freqs_long[47] == pytest.approx(base[47] / 64.76000213623047, rel=1e-12)
    # ... within it, the short factors
    freqs_short, _ = inv_freq(r, 4096)
    assert freqs_short[47] == pytest.approx(base[47] / 3.049999999999997, rel=1e-12)
    s = rope_summary(spec, 131072)
    assert s["logit_scale"] == pytest.approx(17 / 12, rel=1e-12)
    # the 4k model has no scaling at all
    f4, a4 = inv_freq(load_model("phi3-4k").rope, 4096)
    assert a4 == 1.0 and np.allclose(f4, base, rtol=1e-12)


def test_llama31_scaling_pairs():
    spec = load_model("llama3.1-8b")
    freqs, att = inv_freq(spec.rope, 131072)
    assert att == 1.0
    d, theta = 128, 500000.0
    base = [theta ** (-2 * k / d) for k in range(64)]
    wl = [2 * math.pi / b for b in base]
    # the rule: wavelength < 8192/4 = 2048 -> unchanged; > 8192/1 = 8192 -> divided by 8
    for k in range(64):
        if wl[k] < 8192 / 4:
            assert freqs[k] == pytest.approx(base[k], rel=1e-12), k
        elif wl[k] > 8192 / 1:
            assert freqs[k] == pytest.approx(base[k] / 8, rel=1e-12), k
    # hand checks:
    # pair 0: inv_freq 1, wavelength 2*pi -> unchanged
    assert freqs[0] == 1.0
    # pair 28: wavelength 2*pi*500000^(56/128) ~ 1956 < 2048 -> unchanged
    assert 1950 < wl[28] < 1960 and freqs[28] == pytest.approx(base[28], rel=1e-12)
    # pair 35: wavelength 2*pi*500000^(70/128) ~ 8219 > 8192 -> divided by 8
    assert 8210 < wl[35] < 8230 and freqs[35] == pytest.approx(base[35] / 8, rel=1e-12)
    # pair 32 lies between: inv_freq = 500000^-0.5 = 1/707.107, wavelength 4442.88;
    # smooth = (8192/4442.883 - 1) / (4 - 1) = 0.843848 / 3 = 0.281283;
    # scaled = ((1 - smooth)/8 + smooth) * base
    smooth = (8192 / wl[32] - 1) / 3
    assert smooth == pytest.approx(0.281283, abs=1e-6)
    assert freqs[32] == pytest.approx(((1 - smooth) / 8 + smooth) * base[32], rel=1e-12)
    assert base[32] / freqs[32] == pytest.approx(2.6945, abs=1e-4)
    # 35 pairs (0..34) complete a turn inside the original 8192 tokens
    assert rope_summary(spec, 131072)["pairs_full_turn_in_original"] == sum(w <= 8192 for w in wl) == 35


def test_qwen_yarn():
    spec = load_model("qwen2.5-7b-yarn")
    freqs, att = inv_freq(spec.rope, 131072)
    # no mscale in the config: attention factor 0.1 * ln(factor) + 1 = 0.1 * ln 4 + 1 = 1.138629
    assert att == pytest.approx(0.1 * math.log(4) + 1, rel=1e-12)
    assert att == pytest.approx(1.138629, abs=1e-6)
    d, theta, orig = 128, 1e6, 32768
    base = [theta ** (-2 * k / d) for k in range(64)]
    # correction range: low = floor(d ln(orig / (32 * 2 pi)) / (2 ln theta)) = floor(23.59) = 23
    #                   high = ceil(d ln(orig / (1 * 2 pi)) / (2 ln theta)) = ceil(39.65) = 40
    low = math.floor(d * math.log(orig / (32 * 2 * math.pi)) / (2 * math.log(theta)))
    high = math.ceil(d * math.log(orig / (1 * 2 * math.pi)) / (2 * math.log(theta)))
    assert (low, high) == (23, 40)
    for k in range(0, 24):  # high-frequency pairs keep their frequency
        assert freqs[k] == pytest.approx(base[k], rel=1e-12), k
    for k in range(40, 64):  # low-frequency pairs are interpolated by the factor 4
        assert freqs[k] == pytest.approx(base[k] / 4, rel=1e-12), k
    # pair 24: ramp 1/17 -> base * (16/17) + (base/4) * (1/17) = base * 65/68
    assert freqs[24] == pytest.approx(base[24] * 65 / 68, rel=1e-12)
    # deepseek-v2-lite: mscale == mscale_all_dim -> the YaRN attention factor cancels to 1
    assert inv_freq(load_model("deepseek-v2-lite").rope, 32768)[1] == pytest.approx(1.0, rel=1e-12)


def test_linear_and_dynamic_scaling():
    # head_dim 4 -> 2 pairs; base inv_freq = [1, 10000^(-2/4)] = [1, 0.01]
    lin = spec_from_config(llama_config(hidden=16, heads=4, kv_heads=4,
                                        rope_scaling={"type": "linear", "factor": 4.0}), name="lin")
    f, att = inv_freq(lin.rope, 1000)
    assert att == 1.0
    assert f.tolist() == pytest.approx([0.25, 0.0025], rel=1e-12)  # every frequency / 4
    tab = rope_table(lin, 1000)
    assert tab["stretch"].tolist() == pytest.approx([4.0, 4.0], rel=1e-12)
    # dynamic NTK, factor 2, trained length = max_position_embeddings = 100:
    # at n = 200: theta' = 10000 * (2*200/100 - (2-1)) ** (4/(4-2)) = 10000 * 3**2 = 90000
    #   -> inv_freq = [1, 90000^(-1/2)] = [1, 1/300]
    dyn = spec_from_config(llama_config(hidden=16, heads=4, kv_heads=4, max_pos=100,
                                        rope_scaling={"type": "dynamic", "factor": 2.0}), name="dyn")
    f, _ = inv_freq(dyn.rope, 200)
    assert f.tolist() == pytest.approx([1.0, 1 / 300], rel=1e-12)
    # at or below the trained length nothing changes
    f, _ = inv_freq(dyn.rope, 100)
    assert f.tolist() == pytest.approx([1.0, 0.01], rel=1e-12)


def test_rope_table_wavelengths():
    spec = load_model("llama3-8b")
    tab = rope_table(spec, 8192)
    assert len(tab) == 64
    for k in (0, 1, 31, 63):
        inv = 500000.0 ** (-2 * k / 128)
        assert tab["inv_freq_base"][k] == pytest.approx(inv, rel=1e-12)
        assert tab["wavelength_base_tokens"][k] == pytest.approx(2 * math.pi / inv, rel=1e-12)
    assert np.array_equal(base_inv_freq(500000.0, 128), tab["inv_freq_base"].to_numpy())


# ------------------------------------------------------------------------------------------------
# GPU database
# ------------------------------------------------------------------------------------------------

def test_gpu_database():
    h100 = get_gpu("h100-sxm")
    assert get_gpu("H100") == h100  # alias, case-insensitive
    assert h100.peak("bf16") == 989.4e12  # dense BF16, H100 SXM datasheet
    assert h100.hbm_bytes_per_s == 3.35e12
    for key in ("h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "b200", "l40s", "l4",
                "rtx4090", "mi300x"):
        g = get_gpu(key)
        assert g.source, key
        assert g.peak("bf16") > g.peak("fp32") > 0, key
    with pytest.raises(LcprofError, match="h100"):
        get_gpu("h1000")

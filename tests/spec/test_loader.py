"""The config loader's refusals, defaults and variants, through the CLI where the user meets them:
unknown model_type, fields lcprof does not understand (and --allow-unknown), layer kinds the cost
model does not price yet, bad values, multimodal wrappers, and the family variants (GPT-NeoX
rotary_pct, Falcon's KV heads, Falcon-H1's parallel layer). Hand-derived numbers throughout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from lcprof.cli import main
from lcprof.cost.model import cost, kv_bytes, kv_bytes_per_token
from lcprof.errors import LcprofError
from lcprof.spec import clear_cache, load_model, param_counts, spec_from_config

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"


def run(args):
    clear_cache()
    r = CliRunner().invoke(main, args, catch_exceptions=True)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(f"lcprof {' '.join(args)} raised {r.exception!r}") from r.exception
    return r


def refused(r, *must):
    """Exit 2 and exactly one line on stderr naming every string in ``must``; no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for m in must:
        assert m in lines[0], (m, lines[0])
    return lines[0]


def write(tmp_path, cfg, name="model"):
    p = tmp_path / name / "config.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(cfg))
    return p


LLAMA = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
         "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 8192}


# ------------------------------------------------------------------------------------------------
# refusals the issue names
# ------------------------------------------------------------------------------------------------

def test_unknown_model_type_is_refused(tmp_path):
    p = write(tmp_path, dict(LLAMA, model_type="zamba_hybrid"))
    refused(run(["kv", "--model", str(p), "--n", "4k"]), str(p), "zamba_hybrid", "unknown model_type")
    refused(run(["show", str(p)]), "zamba_hybrid")


def test_unknown_cost_bearing_field_is_refused_and_allow_unknown_warns(tmp_path):
    p = write(tmp_path, dict(LLAMA, num_sparse_heads=4, attention_window_pattern=[1, 2]))
    line = refused(run(["kv", "--model", str(p), "--n", "4k"]), str(p), "llama", "num_sparse_heads",
                   "attention_window_pattern", "--allow-unknown")
    assert "lcprof does not understand" in line
    r = run(["kv", "--model", str(p), "--n", "4k", "--allow-unknown", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert len(warn) == 1 and "num_sparse_heads" in warn[0] and "attention_window_pattern" in warn[0]
    # 4 layers x 2 KV heads x 32 x 2 (K, V) x 2 B = 1024 B per token
    assert json.loads(r.stdout)[0]["kv_bytes_per_token"] == 4 * 2 * 32 * 2 * 2
    # the next invocation is strict again
    refused(run(["kv", "--model", str(p), "--n", "4k"]), "num_sparse_heads")
    r = run(["show", str(p), "--allow-unknown", "--format", "json"])
    assert r.exit_code == 0 and "num_sparse_heads" in json.loads(r.stdout)[0]["ignored_fields"]


@pytest.mark.parametrize("args", [
    ["flops", "--model", "qwen3-next-80b-a3b", "--n", "4k"],
    ["flops", "--model", "jamba-1.5-mini", "--n", "4k", "--layer", "0"],
    ["layer", "--model", "nemotron-h-56b", "--n", "4k", "--layer", "1"],
    ["layer", "--model", "minimax-m1", "--n", "4k"],
    ["flops", "--model", "deepseek-v3.2", "--n", "4k"],
    ["flops", "--model", "falcon-mamba-7b", "--n", "4k"],
])
def test_hybrid_layer_kinds_are_priced_not_refused(args):
    # issue 14 prices the linear mixers, MLP-only layers and DSA sparse attention (lcprof.cost.kinds)
    r = run(args)
    assert r.exit_code == 0, r.stderr


def test_priced_layers_of_a_hybrid_still_cost():
    # Jamba's layer 4 is attention (no RoPE) with an MoE MLP: priced as usual
    spec = load_model("jamba-1.5-mini")
    c = cost(spec, 4096, layer=4)
    # q: 2 x 4096 tokens x 4096 x 4096 FLOPs
    assert c.flops["proj/q"][0] == 2 * 4096 * 4096 * 4096
    # the whole model: its 28 Mamba layers priced as Mamba (in_proj 2 x 4096 x 4096 x 16384 each)
    assert cost(spec, 4096).flops["mixer/in_proj"][0] == 28 * 2 * 4096 * 4096 * 2 * 8192


@pytest.mark.parametrize("mt,why", [("gpt2", "learned absolute position"), ("bloom", "ALiBi"), ("mpt", "ALiBi"),
                                    ("t5", "encoder-decoder"), ("bert", "encoder-only")])
def test_known_unsupported_model_types_are_refused_with_the_reason(tmp_path, mt, why):
    p = write(tmp_path, {"model_type": mt, "n_embd": 768})
    refused(run(["kv", "--model", str(p), "--n", "4k"]), mt, why)


def test_encoder_decoder_flag_is_refused(tmp_path):
    p = write(tmp_path, dict(LLAMA, is_encoder_decoder=True))
    refused(run(["show", str(p)]), "encoder-decoder")


def test_config_without_model_type_is_refused(tmp_path):
    cfg = dict(LLAMA)
    del cfg["model_type"]
    refused(run(["show", str(write(tmp_path, cfg))]), "no model_type")


# ------------------------------------------------------------------------------------------------
# values validated at load
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("num_attention_heads", 0), ("num_key_value_heads", 3), ("hidden_size", "4096"), ("hidden_size", 4096.5),
    ("num_hidden_layers", -2), ("intermediate_size", True), ("vocab_size", None), ("rope_theta", "1e4"),
    ("rope_theta", 0.5), ("attention_bias", "false"), ("attention_bias", 0), ("mlp_bias", "true"),
    ("sliding_window", 0), ("sliding_window", -4096), ("head_dim", 0), ("max_position_embeddings", 1e30),
])
def test_bad_values_are_refused_naming_the_field(tmp_path, field, value):
    p = write(tmp_path, dict(LLAMA, **{field: value}))
    line = refused(run(["kv", "--model", str(p), "--n", "4k"]), str(p))
    assert field in line or (field == "num_key_value_heads" and "KV heads" in line), line


def test_non_finite_values_are_refused(tmp_path):
    # Python's json writes and reads NaN / Infinity; a config carrying them is refused
    for field, value in (("rope_theta", math.nan), ("rope_theta", math.inf), ("hidden_size", math.inf)):
        p = tmp_path / f"{field}-{value}" / "config.json"
        p.parent.mkdir()
        p.write_text(json.dumps(dict(LLAMA, **{field: value})))
        refused(run(["kv", "--model", str(p), "--n", "4k"]), field)


@pytest.mark.parametrize("rope,what", [
    ({"rope_type": "llama3", "factor": 8.0}, "missing"),  # transformers' required keys
    ({"rope_type": "yarn"}, "factor"),
    ({"rope_type": "wild", "factor": 2.0}, "wild"),
    ({"rope_type": "linear", "factor": 0.0}, "factor"),
    ({"rope_type": "linear", "factor": 2.0, "extra_knob": 1}, "extra_knob"),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
      "original_max_position_embeddings": 8192}, "high_freq_factor"),
])
def test_rope_parameters_checked_as_transformers_checks_them(tmp_path, rope, what):
    p = write(tmp_path, dict(LLAMA, rope_scaling=rope))
    refused(run(["rope", "--model", str(p)]), what)


def test_llama3_equal_frequency_factors_are_accepted():
    # Llama-4-Scout-Instruct: low == high == 1.0 -- no smooth band: every pair whose wavelength exceeds
    # 8192 / 1.0 tokens is divided by the factor 16, the others kept
    r = run(["rope", "--model", "llama4-scout-instruct", "--n", "1M", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    assert "divide" not in r.stderr  # no numpy division warning leaks out


@pytest.mark.parametrize("factor", [0.0, -0.5, 2.0, 1.0001])
def test_partial_rotary_factor_outside_0_1_is_refused(tmp_path, factor):
    p = write(tmp_path, dict(LLAMA, model_type="phi3", partial_rotary_factor=factor))
    refused(run(["kv", "--model", str(p), "--n", "4k"]), "partial_rotary_factor")


# ------------------------------------------------------------------------------------------------
# defaults, wrappers, spellings
# ------------------------------------------------------------------------------------------------

def test_gemma3_published_config_loads_with_transformers_defaults():
    spec = load_model(str(CONFIGS / "google--gemma-3-27b-it" / "config.json"))
    # absent from the published file: vocab_size 262208, max positions 131072, rope_theta 1e6,
    # layer i global when (i + 1) % 6 == 0
    assert (spec.vocab_size, spec.max_position_embeddings, spec.rope.theta) == (262208, 131072, 1e6)
    assert [i for i, lyr in enumerate(spec.layers) if lyr.attn == "global"] == list(range(5, 62, 6))


def test_multimodal_wrapper_says_so(tmp_path):
    r = run(["show", "gemma3-27b", "--format", "json"])
    rec = json.loads(r.stdout)[0]
    assert rec["text_model_of"] == "gemma3" and "vision tower" in rec["notes"]


def test_moe_spellings():
    # num_local_experts (Mixtral), num_experts (Qwen3-MoE), n_routed_experts (DeepSeek) -> the same field
    assert load_model("mixtral-8x7b").moe.n_experts == 8
    assert load_model("qwen3-30b-a3b").moe.n_experts == 128
    assert load_model("deepseek-v3").moe.n_experts == 256
    # decoder_sparse_step and mlp_only_layers (Qwen): layer i MoE iff i not listed and (i + 1) % step == 0
    cfg = dict(LLAMA, model_type="qwen3_moe", num_hidden_layers=6, num_experts=4, num_experts_per_tok=2,
               moe_intermediate_size=64, decoder_sparse_step=2, mlp_only_layers=[3])
    assert [lyr.moe for lyr in spec_from_config(cfg).layers] == [False, True, False, False, False, True]
    # first_k_dense_replace / moe_layer_freq int and list (DeepSeek, MiMo)
    assert [lyr.moe for lyr in load_model("deepseek-v3").layers[:4]] == [False, False, False, True]
    assert [lyr.moe for lyr in load_model("mimo-v2-flash").layers[:2]] == [False, True]
    # expert_layer_period / offset (Jamba): every other layer from 1
    assert [lyr.moe for lyr in load_model("jamba-1.5-mini").layers[:4]] == [False, True, False, True]


def test_schedules():
    # attn_layer_period 8 / offset 4 (Jamba); hybrid_override_pattern (Nemotron-H); attn_type_list (MiniMax);
    # full_attention_interval (Qwen3-Next); hybrid_layer_pattern (MiMo-V2)
    assert [i for i, lyr in enumerate(load_model("jamba-1.5-mini").layers) if lyr.has_attention] == [4, 12, 20, 28]
    nem = load_model("nemotron-h-56b").layers
    assert [lyr.kind for lyr in nem[:9]] == ["mamba2", "mlp", "mamba2", "mlp", "mamba2", "mlp", "mamba2", "global",
                                              "mlp"]
    assert [i for i, lyr in enumerate(load_model("minimax-m1").layers) if lyr.has_attention] == list(range(7, 80, 8))
    assert [i for i, lyr in enumerate(load_model("qwen3-next-80b-a3b").layers) if lyr.has_attention] == \
        list(range(3, 48, 4))
    mimo = load_model("mimo-v2-flash").layers
    assert [i for i, lyr in enumerate(mimo) if lyr.attn == "global"] == [0, 5, 11, 17, 23, 29, 35, 41, 47]


# ------------------------------------------------------------------------------------------------
# family variants on their shapes (published config.json files not found verbatim; the shapes are
# those transformers' defaults state for these models -- see each test)
# ------------------------------------------------------------------------------------------------

def test_gpt_neox_20b_rotary_pct_and_layernorm_biases():
    # GPTNeoXConfig's defaults are GPT-NeoX-20B: vocab 50432, hidden 6144, 44 layers, 64 heads, MLP 24576,
    # rotary_pct 0.25, attention_bias true, untied embed_in / embed_out
    spec = spec_from_config({"model_type": "gpt_neox", "hidden_size": 6144, "num_hidden_layers": 44,
                             "num_attention_heads": 64, "intermediate_size": 24576, "vocab_size": 50432,
                             "rotary_pct": 0.25, "max_position_embeddings": 2048, "hidden_act": "gelu_fast"})
    assert spec.rope.rotary_dim == 24  # 0.25 x 96
    # KV: 44 x 64 heads x 96 x 4 B
    assert kv_bytes_per_token(spec) == 44 * 64 * 96 * 2 * 2
    # per layer: qkv 6144 x 18432 + 18432, dense 6144^2 + 6144, MLP 2 x 6144 x 24576 + 24576 + 6144,
    # two LayerNorms 2 x 2 x 6144; final LayerNorm; embed_in + embed_out
    layer = 6144 * 18432 + 18432 + 6144 ** 2 + 6144 + 2 * 6144 * 24576 + 24576 + 6144 + 4 * 6144
    total = 44 * layer + 2 * 6144 + 2 * 50432 * 6144
    assert param_counts(spec)["total_params"] == total
    assert abs(total / 20.55e9 - 1) < 0.002  # GPT-NeoX-20B paper: 20.55B


def test_falcon_multi_query_and_new_architecture():
    # Falcon-7B: multi_query -> one KV head: 32 x 1 x 64 x 4 = 8192 B per token (71 heads would be 71x)
    f7 = spec_from_config({"model_type": "falcon", "hidden_size": 4544, "num_hidden_layers": 32,
                           "num_attention_heads": 71, "multi_query": True, "parallel_attn": True, "bias": False,
                           "new_decoder_architecture": False, "vocab_size": 65024})
    assert kv_bytes_per_token(f7) == 32 * 1 * 64 * 2 * 2 == 8192
    # params: fused qkv 4544 x (71 + 2) x 64, dense 4544^2, MLP 2 x 4544 x 18176, one LayerNorm (w+b) per layer
    layer = 4544 * 73 * 64 + 4544 ** 2 + 2 * 4544 * 4 * 4544 + 2 * 4544
    total = 32 * layer + 2 * 4544 + 65024 * 4544  # tied embeddings
    assert param_counts(f7)["total_params"] == total
    assert abs(total / 6.92e9 - 1) < 0.005  # model card: 7B (6.92B)
    # Falcon-40B: new_decoder_architecture, num_kv_heads 8, two LayerNorms (ln_attn, ln_mlp)
    f40 = spec_from_config({"model_type": "falcon", "hidden_size": 8192, "num_hidden_layers": 60,
                            "num_attention_heads": 128, "num_kv_heads": 8, "new_decoder_architecture": True,
                            "vocab_size": 65024})
    assert kv_bytes_per_token(f40) == 60 * 8 * 64 * 2 * 2 == 122880
    layer = 8192 * (128 + 16) * 64 + 8192 ** 2 + 2 * 8192 * 4 * 8192 + 2 * 2 * 8192
    assert param_counts(f40)["total_params"] == 60 * layer + 2 * 8192 + 65024 * 8192
    with pytest.raises(LcprofError, match="alibi"):
        spec_from_config({"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 1,
                          "num_attention_heads": 4, "alibi": True})


def test_falcon_h1_parallel_attention_and_mamba2():
    # The shapes of transformers' doc table row "H1 0.5B" (36 layers, 1024 wide, 8 heads / 2 KV of 64,
    # 24 Mamba heads of 64, d_state 128); published config.json not found verbatim
    spec = spec_from_config({"model_type": "falcon_h1", "hidden_size": 1024, "num_hidden_layers": 36,
                             "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
                             "intermediate_size": 2048, "vocab_size": 32784, "max_position_embeddings": 16384,
                             "mamba_d_ssm": 1536, "mamba_n_heads": 24, "mamba_d_head": 64, "mamba_n_groups": 1,
                             "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_chunk_size": 128,
                             "mamba_rms_norm": False, "mamba_norm_before_gate": False, "rope_theta": 1e11,
                             "key_multiplier": 0.39, "ssm_multipliers": [0.35, 0.25, 0.35, 0.5, 0.35]})
    assert spec.layer_kinds == {"global+mamba2": 36}
    # every layer holds KV: 36 x 2 x 64 x 4 = 18432 B per token
    assert kv_bytes_per_token(spec) == 36 * 2 * 64 * 2 * 2
    attn = 1024 * 512 + 2 * 1024 * 128 + 512 * 1024
    conv_dim = 1536 + 2 * 1 * 128
    mamba = 1024 * (1536 + conv_dim + 24) + conv_dim * 4 + conv_dim + 3 * 24 + 1536 * 1024  # no gated norm
    mlp = 3 * 1024 * 2048
    total = 36 * (attn + mamba + mlp + 2 * 1024) + 1024 + 2 * 32784 * 1024
    assert param_counts(spec)["total_params"] == total
    # both mixers of each layer are priced: attention's q projection and Mamba-2's in_proj
    c = cost(spec, 1024)
    assert c.flops["proj/q"][0] == 36 * 2 * 1024 * 1024 * 512
    assert c.flops["mixer/in_proj"][0] == 36 * 2 * 1024 * 1024 * (1536 + conv_dim + 24)


def test_kv_of_non_attention_layers_is_zero():
    # KV is held only by attention layers; the constant state of the others is not KV
    spec = load_model("qwen3-next-80b-a3b")
    assert kv_bytes(spec, 1)[0] == 12 * 2 * 2 * 256 * 2
    assert kv_bytes(load_model("falcon-mamba-7b"), [1, 1 << 20]).tolist() == [0, 0]


def test_minimax_block_size_is_read_and_changes_the_lightning_cost(tmp_path):
    """MiniMax's ``block_size`` (transformers' MiniMaxConfig default 256) is the lightning kernel's
    block: intra-block pairs grow with it (about n x B / 2), so a 128-token block costs fewer FLOPs.
    Absent, it takes transformers' default; 0 is refused naming the field."""
    import json

    from lcprof.cost.model import cost
    from lcprof.errors import LcprofError
    from lcprof.spec import load_model

    src = Path(__file__).resolve().parents[1] / "data" / "configs" / "MiniMaxAI--MiniMax-M1" / "config.json"
    cfg = json.loads(src.read_text())
    assert "block_size" not in cfg
    default = load_model(str(src))
    assert default.lightning.block_size == 256
    (tmp_path / "b128").mkdir()
    (tmp_path / "b128" / "config.json").write_text(json.dumps(dict(cfg, block_size=128)))
    small = load_model(str(tmp_path / "b128" / "config.json"))
    assert small.lightning.block_size == 128
    layer = next(x for x in default.layers if "lightning" in x.mixers)
    f256 = cost(default, [65536.0], phase="prefill", dtype="bf16", family="tiled", layer=layer).flops
    f128 = cost(small, [65536.0], phase="prefill", dtype="bf16", family="tiled", layer=layer).flops
    assert float(f128["mixer/total"][0]) < float(f256["mixer/total"][0])
    (tmp_path / "b0").mkdir()
    (tmp_path / "b0" / "config.json").write_text(json.dumps(dict(cfg, block_size=0)))
    with pytest.raises(LcprofError, match="block_size"):
        load_model(str(tmp_path / "b0" / "config.json"))

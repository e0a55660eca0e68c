"""SmolLM3 and Seed-OSS configs: what each field changes, by hand, and what is refused (one line, the field
named). Shapes are tiny so every count is written out; the published checkpoints are in
test_published_configs.py."""

from __future__ import annotations

import subprocess
import sys
import json

import pytest

from lcprof.cost.model import kv_bytes
from lcprof.errors import LcprofError
from lcprof.spec import param_counts, spec_from_config

# hidden 64, 8 heads of 8, 2 KV heads, FFN 96, 4 layers, vocab 100
SMOL = dict(model_type="smollm3", hidden_size=64, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
            intermediate_size=96, vocab_size=100, max_position_embeddings=8192)
SEED = dict(SMOL, model_type="seed_oss", head_dim=8)


def spec(cfg, **kw):
    return spec_from_config(dict(cfg, **kw), name="t", where="t")


def test_smollm3_nope_layers_from_the_interval_or_the_list():
    assert [lyr.rope for lyr in spec(SMOL).layers] == [True, True, True, False]  # interval 4: layer 3
    assert [lyr.rope for lyr in spec(SMOL, no_rope_layer_interval=2).layers] == [True, False, True, False]
    # an explicit list wins over the interval (transformers builds the list only when none is given)
    assert [lyr.rope for lyr in spec(SMOL, no_rope_layers=[0, 1, 1, 1], no_rope_layer_interval=2).layers] == \
        [False, True, True, True]
    assert spec(SMOL).rope.theta == 2e6  # SmolLM3Config.default_theta when the config names none


def test_smollm3_sliding_window_applies_to_the_nope_layers():
    """use_sliding_window + sliding_window 16: layer 3 (NoPE) slides, layers 0-2 are global.
    KV per layer per token: 2 heads x 8 x (K, V) x 2 B = 64 B; at n = 100: 3 x 100 + 16 tokens."""
    s = spec(SMOL, use_sliding_window=True, sliding_window=16)
    assert [(lyr.attn, lyr.window) for lyr in s.layers] == [("global", None)] * 3 + [("sliding", 16)]
    assert int(kv_bytes(s, 100, kv_dtype="bf16")[0]) == (3 * 100 + 16) * 64
    # a window alone, without use_sliding_window, slides nothing (transformers' SmolLM3Config)
    assert {lyr.attn for lyr in spec(SMOL, sliding_window=16).layers} == {"global"}


def test_smollm3_biases_and_tied_embeddings():
    """attention_bias biases q, k, v and o: 64 + 16 + 16 + 64 per layer; mlp_bias the gate, up (96 each) and
    down (64) projections. Embeddings tied by default: one 100 x 64 table."""
    base = param_counts(spec(SMOL))["total_params"]
    layer = 2 * 64 * 64 + 2 * 64 * 16 + 3 * 64 * 96 + 2 * 64
    assert base == 4 * layer + 100 * 64 + 64
    assert param_counts(spec(SMOL, attention_bias=True))["total_params"] - base == 4 * (64 + 16 + 16 + 64)
    assert param_counts(spec(SMOL, mlp_bias=True))["total_params"] - base == 4 * (96 + 96 + 64)
    assert param_counts(spec(SMOL, tie_word_embeddings=False))["total_params"] - base == 100 * 64


def test_seed_oss_biases_apart():
    """q/k/v biased by default (64 + 16 + 16 per layer), o only with attention_out_bias (64), untied embeddings."""
    layer = 2 * 64 * 64 + 2 * 64 * 16 + 3 * 64 * 96 + 2 * 64
    s = spec(SEED)
    assert s.qkv_bias and not s.o_bias and {lyr.rope for lyr in s.layers} == {True}
    assert param_counts(s)["total_params"] == 4 * (layer + 96) + 2 * 100 * 64 + 64
    assert param_counts(spec(SEED, attention_out_bias=True))["total_params"] == 4 * (layer + 96 + 64) + 2 * 100 * 64 + 64
    assert param_counts(spec(SEED, attention_bias=False))["total_params"] == 4 * layer + 2 * 100 * 64 + 64


@pytest.mark.parametrize("cfg,fields,match", [
    (SMOL, dict(no_rope_layers=[1, 1, 0]), "no_rope_layers' has 3 entries for 4 layers"),
    (SMOL, dict(no_rope_layers=[1, 2, 1, 0]), "no_rope_layers"),
    (SMOL, dict(no_rope_layer_interval=0), "no_rope_layer_interval"),
    (SMOL, dict(layer_types=["full_attention"] * 3 + ["sliding_attention"], sliding_window=16),
     "use_sliding_window is false"),
    (SMOL, dict(use_sliding_window=True, layer_types=["full_attention"] * 3 + ["sliding_attention"]),
     "sliding_window is not set"),
    (SEED, dict(sliding_window=4096), "does not understand .*sliding_window"),
    (SEED, dict(head_dim=None, hidden_size=60), "not a multiple of num_attention_heads"),
])
def test_refused_in_one_line(cfg, fields, match):
    with pytest.raises(LcprofError, match=match):
        spec(cfg, **fields)


def test_cli_refuses_with_exit_2(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(SEED, sliding_window=4096)))
    proc = subprocess.run([sys.executable, "-m", "lcprof", "kv", "--model", str(path), "--n", "4096"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "sliding_window" in proc.stderr and "Traceback" not in proc.stderr


def test_show_lists_the_nope_layers():
    from lcprof.spec.describe import describe

    assert describe(spec(SMOL, no_rope_layer_interval=2))["nope_layers"] == "2 of 4: 1, 3"
    assert "nope_layers" not in describe(spec(SEED))  # every layer rotated: no row


def test_gpt_oss_without_rope_scaling_gets_transformers_yarn_default():
    """GptOssConfig.__post_init__: no rope parameters means YaRN, factor 32 from 4096 positions, untruncated
    (the published configs state the same block); theta 150000 (default_theta)."""
    cfg = dict(SMOL, model_type="gpt_oss", head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=16)
    r = spec(cfg).rope
    assert (r.type, r.factor, r.original_max_position, r.truncate, r.theta) == ("yarn", 32.0, 4096, False, 150000.0)
    assert spec(cfg, rope_scaling={"rope_type": "default"}).rope.type == "default"  # a stated block wins


def test_defaults_of_omitted_fields_are_transformers():
    """SeedOssConfig: head_dim 128 whatever hidden / heads says (64 / 8 = 8 here), 8 KV heads, rope_theta 1e4;
    SmolLM3Config: 4 KV heads; both: a field left out takes the class default, not the Llama one."""
    seed = {k: v for k, v in SEED.items() if k not in ("head_dim", "num_key_value_heads")}
    s = spec(seed)
    assert (s.head_dim, s.n_kv_heads, s.rope.theta) == (128, 8, 10000.0)
    smol = {k: v for k, v in SMOL.items() if k != "num_key_value_heads"}
    assert (spec(smol).n_kv_heads, spec(smol).head_dim) == (4, 8)

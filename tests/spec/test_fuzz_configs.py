"""Fuzzed config values through the CLI: every case is either refused (exit 2, one line, no
traceback) or answered correctly -- KV bytes and parameters equal to the formula evaluated on the
fuzzed config by the test itself."""

from __future__ import annotations

import json
import math

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcprof.cli import main
from lcprof.spec import clear_cache

SETTINGS = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

BASE = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 1 << 20,
        "rope_theta": 10000.0, "tie_word_embeddings": False}

FIELDS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
          "intermediate_size", "vocab_size", "max_position_embeddings", "rope_theta", "attention_bias",
          "sliding_window", "tie_word_embeddings", "rope_scaling", "mlp_bias", "brand_new_field"]

VALUES = st.one_of(
    st.integers(-3, 4096), st.sampled_from([0, 1, 2, 8, 64, 128, 1 << 40]),
    st.floats(allow_nan=True, allow_infinity=True, width=64), st.sampled_from([64.0, 4096.5, 1e30, -0.0]),
    st.text(max_size=4), st.sampled_from(["false", "true", "8", "1e4"]), st.booleans(), st.none(),
    st.lists(st.integers(0, 3), max_size=3), st.just({}),
    st.fixed_dictionaries({"rope_type": st.sampled_from(["linear", "dynamic", "yarn", "llama3", "ntk", "bogus"]),
                           "factor": st.one_of(st.floats(-2, 64), st.just(math.nan))}),
)


#: values a real config could carry, per field (half the fuzzed values come from here, so that many
#: cases are accepted and their numbers checked)
PLAUSIBLE = {
    "hidden_size": st.sampled_from([128, 256, 512, 768]), "num_hidden_layers": st.integers(1, 6),
    "num_attention_heads": st.sampled_from([1, 2, 4, 8, 16]), "num_key_value_heads": st.sampled_from([None, 1, 2, 4, 8]),
    "head_dim": st.sampled_from([None, 16, 32, 64, 128]), "intermediate_size": st.integers(1, 2048),
    "vocab_size": st.integers(1, 50000), "max_position_embeddings": st.sampled_from([4096, 1 << 20]),
    "rope_theta": st.floats(2.0, 1e7), "attention_bias": st.booleans(), "mlp_bias": st.booleans(),
    "sliding_window": st.sampled_from([None, 1, 7, 100, 4096, 1 << 21]), "tie_word_embeddings": st.booleans(),
    "rope_scaling": st.sampled_from([None, {"rope_type": "linear", "factor": 4.0}, {"type": "dynamic", "factor": 2.0},
                                     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}]),
    "brand_new_field": st.integers(),
}
CHANGES = st.lists(st.sampled_from(FIELDS).flatmap(lambda f: st.tuples(st.just(f), st.one_of(PLAUSIBLE[f], VALUES))),
                   min_size=1, max_size=3).map(dict)


def expected(cfg: dict, n: int):
    """(KV bytes at n, total params) of a llama config, by the formulas, from the config's own values."""
    h, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kvh = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or h // H
    w = cfg.get("sliding_window")
    tokens = min(n, w) if w else n
    kv = L * kvh * hd * 2 * 2 * tokens  # K and V, bf16
    inter, vocab = cfg["intermediate_size"], cfg["vocab_size"]
    bias = cfg.get("attention_bias") is True
    attn = h * H * hd + 2 * h * kvh * hd + H * hd * h + (H * hd + 2 * kvh * hd + h if bias else 0)
    mlp = 3 * h * inter + ((2 * inter + h) if cfg.get("mlp_bias") is True else 0)
    total = L * (attn + mlp + 2 * h) + h + vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return kv, total


def refused_or_right(tmp_path_factory, cfg: dict, expect) -> None:
    """`kv` and `show` on ``cfg``: both refuse it (exit 2, one line, no traceback), or both answer and their KV
    bytes at 4k and total parameters equal ``expect(cfg, 4096)``."""
    path = tmp_path_factory.mktemp("fuzz") / "config.json"
    path.write_text(json.dumps(cfg))  # NaN / Infinity are written as Python's json writes them
    clear_cache()
    runner = CliRunner()
    kv = runner.invoke(main, ["kv", "--model", str(path), "--n", "4k", "--format", "json"])
    show = runner.invoke(main, ["show", str(path), "--format", "json"])
    for r in (kv, show):
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        assert "Traceback" not in r.output
    assert kv.exit_code in (0, 2) and kv.exit_code == show.exit_code, (kv.stderr, show.stderr)
    if kv.exit_code == 2:
        assert len(kv.stderr.strip().splitlines()) == 1, kv.stderr
        assert len(show.stderr.strip().splitlines()) == 1, show.stderr
        return
    want_kv, want_total = expect(cfg, 4096)
    assert json.loads(kv.stdout)[0]["kv_bytes"] == want_kv, cfg
    assert json.loads(show.stdout)[0]["total_params"] == want_total, cfg


@SETTINGS
@given(changes=CHANGES)
def test_fuzzed_llama_config_is_refused_or_right(tmp_path_factory, changes):
    refused_or_right(tmp_path_factory, dict(BASE, **changes), expected)


HYBRID_FIELDS = ["linear_num_value_heads", "linear_num_key_heads", "linear_key_head_dim", "linear_conv_kernel_dim",
                 "full_attention_interval", "num_experts", "num_experts_per_tok", "decoder_sparse_step",
                 "partial_rotary_factor", "head_dim", "num_key_value_heads"]


@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(HYBRID_FIELDS), VALUES, min_size=1, max_size=2))
def test_fuzzed_hybrid_config_keeps_kv_in_attention_layers(tmp_path_factory, changes):
    from pathlib import Path

    base = json.loads((Path(__file__).resolve().parents[1] / "data" / "configs" /
                       "Qwen--Qwen3-Next-80B-A3B-Thinking" / "config.json").read_text())
    cfg = dict(base, **changes)
    path = tmp_path_factory.mktemp("fuzzh") / "config.json"
    path.write_text(json.dumps(cfg))
    clear_cache()
    r = CliRunner().invoke(main, ["kv", "--model", str(path), "--n", "4k", "--format", "json"])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code in (0, 2)
    if r.exit_code == 2:
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        return
    interval = cfg["full_attention_interval"]
    n_attn = sum(1 for i in range(48) if (i + 1) % interval == 0)
    kvh, hd = cfg["num_key_value_heads"], cfg["head_dim"]
    if kvh is None:  # null num_key_value_heads: one KV head per query head (transformers' default)
        kvh = cfg["num_attention_heads"]
    if hd is None:  # null head_dim: hidden_size / num_attention_heads, as the modeling code's fallback
        hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    assert json.loads(r.stdout)[0]["kv_bytes"] == n_attn * kvh * hd * 2 * 2 * 4096, cfg


LFM2_FIELDS = ["block_ff_dim", "intermediate_size", "block_multiple_of", "block_ffn_dim_multiplier",
               "block_auto_adjust_ff_dim", "conv_L_cache", "conv_bias", "full_attn_idxs", "tie_embedding",
               "num_key_value_heads", "hidden_size", "block_dim"]
LFM2_PLAUSIBLE = st.one_of(st.integers(1, 1024), st.sampled_from([None, True, False, 0.5, 1.0, 1.5, [0], [1, 3]]),
                           VALUES)


def _lfm2_expected(cfg: dict, n: int):
    """(KV bytes at n, total params) of an LFM2 config, written from transformers' Lfm2Config / Lfm2MLP /
    Lfm2ShortConv / Lfm2Attention, from the config's own values."""
    h, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kvh, hd = cfg.get("num_key_value_heads", 8), h // H
    idx = cfg.get("full_attn_idxs")
    attn_layers = set(range(L)) if idx is None else set(idx)
    inter = cfg["block_ff_dim"] if cfg.get("block_ff_dim") is not None else cfg["intermediate_size"]
    if cfg.get("block_auto_adjust_ff_dim", True):
        inter = int(2 * inter / 3)
        mult = cfg.get("block_ffn_dim_multiplier", 1.0)
        if mult is not None:
            step = cfg.get("block_multiple_of", 256)
            inter = step * ((int(mult * inter) + step - 1) // step)
    k, b = cfg.get("conv_L_cache", 3), 1 if cfg.get("conv_bias") else 0
    conv = h * 3 * h + h * h + h * k + b * (3 * h + h + h)
    attn = 2 * h * H * hd + 2 * h * kvh * hd + 2 * hd
    tie = cfg.get("tie_embedding", True)
    total = (len(attn_layers) * attn + (L - len(attn_layers)) * conv + L * (3 * h * inter + 2 * h) + h
             + cfg["vocab_size"] * h * (1 if tie else 2))
    return len(attn_layers) * kvh * hd * 2 * 2 * n, total


@settings(max_examples=120, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(LFM2_FIELDS), LFM2_PLAUSIBLE, min_size=1, max_size=3))
def test_fuzzed_lfm2_config_is_refused_or_right(tmp_path_factory, changes):
    base = {"model_type": "lfm2", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 384, "vocab_size": 1000, "max_position_embeddings": 8192,
            "full_attn_idxs": [1]}
    refused_or_right(tmp_path_factory, dict(base, **changes), _lfm2_expected)

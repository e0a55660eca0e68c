"""Every committed published config, read by transformers' own configuration class as well as by lcprof: the
layer schedule (which layers slide, with which window) and the KV heads must agree. transformers is the
independent reader here (its __post_init__ derivations: MiMo-V2-Flash's sliding_window = sliding_window_size
+ 1, Gemma's and gpt-oss's default patterns, SmolLM3's NoPE-sliding rule); lcprof's counts are built on it."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

from lcprof.spec import spec_from_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
#: model types transformers has no class for (remote code only)
REMOTE_ONLY = {"minimax_m1", "kimi_k2"}


def _load(name: str):
    """(the committed config, lcprof's spec of it); skipped for the model types transformers has no class for."""
    cfg = json.loads((CONFIGS / name / "config.json").read_text())
    if cfg["model_type"] in REMOTE_ONLY:
        pytest.skip(f"transformers has no {cfg['model_type']} class")
    return cfg, spec_from_config(cfg, name=name, where=name)


def _quietly(fn, *args):
    """fn(*args) with transformers' warnings and log lines about the configs' unused fields silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            return fn(*args)
        finally:
            logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()))
def test_schedule_and_kv_heads_agree_with_transformers(name):
    cfg, spec = _load(name)
    hf = _quietly(lambda: transformers.CONFIG_MAPPING[cfg["model_type"]](**cfg))
    text = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
    types, window = getattr(text, "layer_types", None), getattr(text, "sliding_window", None)
    attn = [(i, lyr) for i, lyr in enumerate(spec.layers) if lyr.has_attention]
    if types is not None:
        assert len(types) == spec.n_layers
        for i, lyr in attn:
            if types[i] == "sliding_attention":
                assert (lyr.attn, lyr.window) == ("sliding", window), (i, lyr)
            elif types[i] == "full_attention":
                assert lyr.attn in ("global", "sparse"), (i, lyr)  # sparse: DSA's indexed full layers
    elif window is not None:  # one window for every layer (Mistral, Phi-3); wider than the context: global
        for i, lyr in attn:
            assert (lyr.attn, lyr.window) == ("sliding", window) or \
                (lyr.attn == "global" and window >= spec.max_position_embeddings), (i, lyr)
    if attn and getattr(text, "num_key_value_heads", None) is not None:
        assert spec.n_kv_heads == text.num_key_value_heads


def _hf_params(cfg: dict) -> int:
    """transformers' own count: its causal-LM class built from the config on the meta device (no memory), every
    parameter summed once (tied tensors are one). A text model transformers has no causal-LM class for (Qwen3-VL's)
    is its base model plus the lm_head the wrapper adds unless tied."""
    import torch

    hf = transformers.CONFIG_MAPPING[cfg["model_type"]](**cfg)
    text = hf.get_text_config()  # the config itself for a text model; a wrapper's (nested or flat) text config
    with torch.device("meta"):
        try:
            model = transformers.AutoModelForCausalLM.from_config(text)
            extra = 0
        except ValueError:  # no causal-LM class for this text config
            model = transformers.AutoModel.from_config(text)
            extra = 0 if hf.tie_word_embeddings else text.vocab_size * text.hidden_size
    return sum(p.numel() for p in model.parameters()) + extra


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()))
def test_parameter_count_agrees_with_transformers(name):
    """lcprof's total parameters are exactly those of transformers' model built from the same config (what a
    checkpoint of it holds; multi-token-prediction layers are loaded by neither)."""
    from lcprof.spec import param_counts

    cfg, spec = _load(name)
    assert param_counts(spec)["total_params"] == _quietly(_hf_params, cfg)

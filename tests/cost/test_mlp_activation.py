"""The MLP activation is read from the config and its elementwise passes counted; an unknown one is refused.

``hidden_act`` was on the global list of fields that do not change cost, and the measured layer fell back
to SiLU for a name it did not know. Nemotron-H's squared ReLU is two passes (relu, then the square), so
its MLP's elementwise bytes were short by one read and one write of up(x) per element.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from support.tiny_models import TINY_HYBRID_CONFIGS
from lcprof.cost.model import cost
from lcprof.errors import LcprofError
from lcprof.spec import load_model, spec_from_config

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
_TINY_LLAMA = dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, intermediate_size=96, vocab_size=128, max_position_embeddings=4096)


def test_published_configs_name_their_activation():
    nemo = spec_from_config(json.loads((CONFIGS / "nvidia--Nemotron-H-56B-Base-8K" / "config.json").read_text()),
                            name="nemotron-h-56b")
    assert nemo.mlp_activation == "relu2"  # from mlp_hidden_act (its config has no hidden_act)
    assert load_model("gemma2-9b").mlp_activation == "gelu_pytorch_tanh"
    assert load_model("llama3.1-8b").mlp_activation == "silu"


def test_unknown_activation_is_refused_naming_the_field():
    with pytest.raises(LcprofError, match=r"field 'hidden_act' must be an MLP activation .*'quick_gelu'"):
        spec_from_config({**_TINY_LLAMA, "hidden_act": "quick_gelu"}, name="t")
    with pytest.raises(LcprofError, match="hidden_act"):
        spec_from_config({**_TINY_LLAMA, "hidden_act": 3}, name="t")
    with pytest.raises(LcprofError, match="MLP activation 'tanh'"):
        dataclasses.replace(load_model("llama3-8b"), mlp_activation="tanh")
    # absent: transformers' default for the model_type
    assert spec_from_config(_TINY_LLAMA, name="t").mlp_activation == "silu"
    assert spec_from_config({**_TINY_LLAMA, "hidden_act": "GELU"}, name="t").mlp_activation == "gelu"


def test_relu2_elementwise_bytes_by_hand():
    # Nemotron-H-56B's MLP-only layer ('-'), bf16, up width 32768: relu (read, write) and the square
    # (read, write) = 4 passes of 2 B per element of up(x); a one-pass activation would be 2
    spec = load_model("nemotron-h-56b")
    mlp = next(i for i, lyr in enumerate(spec.layers) if lyr.mlp and not lyr.mixers)
    assert spec.intermediate_size == 32768
    n = 16
    as_relu = dataclasses.replace(spec, mlp_activation="relu")

    def ew(sp, **kw):
        return float(cost(sp, n, layer=mlp, **kw).bytes["misc/elementwise"][0])
    assert ew(spec) - ew(as_relu) == n * 32768 * 2 * 2
    assert ew(spec, elementwise="fused") == ew(as_relu, elementwise="fused")  # one fused kernel either way


def test_shared_expert_gate_bytes_by_hand():
    # Qwen3-Next's shared expert is scaled by sigmoid(x W_g), one logit per token (hidden 2048, bf16):
    # unfused, sigmoid (read 1, write 1) and the product in place (read h + 1, write h) = 2h + 3 elements;
    # fused, one kernel reading the logit and the output and writing the output = 2h + 1
    spec = load_model("qwen3-next-80b-a3b")
    assert spec.hidden_size == 2048 and spec.moe.shared_gate
    ungated = dataclasses.replace(spec, moe=dataclasses.replace(spec.moe, shared_gate=False))
    n = 8

    def delta(**kw):
        return (float(cost(spec, n, layer=0, **kw).bytes["misc/elementwise"][0])
                - float(cost(ungated, n, layer=0, **kw).bytes["misc/elementwise"][0]))
    assert delta() == n * 2 * (2 * 2048 + 3)
    assert delta(elementwise="fused") == n * 2 * (2 * 2048 + 1)
    with pytest.raises(LcprofError, match="gate without a shared expert"):
        dataclasses.replace(spec.moe, n_shared=0)


def test_nemotron_h_without_the_field_takes_transformers_default():
    cfg = {k: v for k, v in TINY_HYBRID_CONFIGS["nemotron-h"].items() if k != "mlp_hidden_act"}
    assert spec_from_config(cfg, name="t").mlp_activation == "relu2"  # NemotronHConfig's mlp_hidden_act


def test_show_names_the_activation():
    from lcprof.spec import describe

    assert describe(load_model("nemotron-h-56b"))["mlp_activation"] == "relu2"
    assert describe(load_model("gemma3-27b"))["mlp_activation"] == "gelu_pytorch_tanh"


def test_the_measured_layer_builds_every_activation_the_cost_model_counts():
    pytest.importorskip("torch")
    from lcprof.measure.layer import _ACTS
    from lcprof.spec.layers import ACTIVATION_PASSES

    assert set(_ACTS) == set(ACTIVATION_PASSES)

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


# ----- gpt-oss's clamped SwiGLU --------------------------------------------------------------------

def test_gpt_oss_runs_its_clamped_swiglu_not_hidden_act():
    # its config says hidden_act "silu", but GptOssExperts._apply_gate clamps gate and up first
    for name in ("gpt-oss-20b", "gpt-oss-120b"):
        assert load_model(name).mlp_activation == "swiglu_oai"
    cfg = json.loads((CONFIGS / "openai--gpt-oss-20b" / "config.json").read_text())
    with pytest.raises(LcprofError, match="swiglu_limit"):
        spec_from_config({**cfg, "swiglu_limit": "seven"}, name="t")
    with pytest.raises(LcprofError, match="swiglu_oai.*layer 0's MLP is not gated"):
        dataclasses.replace(load_model("llama3-8b"), mlp_activation="swiglu_oai", mlp_gated=False)


def test_swiglu_oai_elementwise_bytes_by_hand():
    # gpt-oss-20b, bf16, n tokens: the active experts' summed width is 4 x 2880 = 11520. Clamp gate,
    # clamp up, x alpha, sigmoid (read + write each: 8), g x sigmoid (read 2, write 1: 3), up + 1 (2),
    # the product (3) = 16 elements per width element, against SiLU-and-mul's 2 + 3 = 5.
    spec = load_model("gpt-oss-20b")
    n = 8
    as_silu = dataclasses.replace(spec, mlp_activation="silu")

    def ew(sp, **kw):
        return float(cost(sp, n, layer=1, **kw).bytes["misc/elementwise"][0])
    assert ew(spec) - ew(as_silu) == n * 11520 * 2 * (16 - 5)
    assert ew(spec, elementwise="fused") == ew(as_silu, elementwise="fused")  # vLLM: one kernel, read 2 write 1


def test_swiglu_oai_live_bytes_by_hand():
    from lcprof.cost.model import activation_steps

    # the mlp/act step holds x, x + attention (2 h), the normed x (h), the router logits (32 experts)
    # and 7 width-sized tensors (gate, up, g, u, glu, u + 1, the product): bf16, one token
    spec = load_model("gpt-oss-20b")
    step = activation_steps(spec, 1, dtype="bf16", layer=1)["mlp/act"][0]
    assert int(step) == 2 * (3 * 2880 + 32 + 7 * 11520) + 2 * 64 * 2  # + the RoPE cos/sin of one position


def test_swiglu_oai_matches_transformers():
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    from lcprof.measure.layer import _activation
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    cfg = tr.GptOssConfig(hidden_size=8, intermediate_size=6, num_local_experts=2, swiglu_limit=1.5)
    experts = GptOssExperts(cfg)
    g = torch.Generator().manual_seed(0)
    gate, up = 3 * torch.randn(5, 6, generator=g, dtype=torch.float64), 3 * torch.randn(5, 6, generator=g, dtype=torch.float64)
    assert float(gate.max()) > 1.5 and float(up.min()) < -1.5  # both clamps bite
    inter = torch.stack((gate, up), dim=-1).reshape(5, 12)  # transformers interleaves gate and up columns
    theirs = experts._apply_gate(inter)
    spec = spec_from_config({**json.loads((CONFIGS / "openai--gpt-oss-20b" / "config.json").read_text()),
                             "swiglu_limit": 1.5}, name="t")
    ours = _activation(spec)(gate, up)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=0)

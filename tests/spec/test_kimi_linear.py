"""Kimi Linear (``kimi_linear``): the schedule read from the checkpoint's 1-based lists or from
transformers' own spelling, the refusals (RoPE in MLA, Kimi K3's gates and gated MLA, a schedule with
a gap), and KDA's state and weights under tensor parallelism, in hand-derived numbers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lcprof.cost.model import kv_bytes_per_token, state_bytes
from lcprof.errors import LcprofError
from lcprof.spec import param_counts, spec_from_config
from tests.spec.test_loader import refused, run, write

CONFIG = Path(__file__).resolve().parents[1] / "data" / "configs" / "moonshotai--Kimi-Linear-48B-A3B-Instruct"
PUBLISHED = json.loads((CONFIG / "config.json").read_text())


def cfg(**changes):
    out = copy.deepcopy(PUBLISHED)
    lac = changes.pop("linear_attn_config", None)
    if lac is not None:
        out["linear_attn_config"].update(lac)
    out.update(changes)
    return out


def test_transformers_spelling_gives_the_same_model():
    # a config transformers writes: layer_types (0-based, linear_attention / full_attention) and the
    # linear_* fields at the top level, max_position_embeddings instead of model_max_length
    tf = cfg()
    lac = tf.pop("linear_attn_config")
    full = {i - 1 for i in lac["full_attn_layers"]}
    tf.update(layer_types=["full_attention" if i in full else "linear_attention" for i in range(27)],
              linear_num_heads=32, linear_head_dim=128, linear_conv_kernel_dim=4,
              max_position_embeddings=tf.pop("model_max_length"))
    a, b = spec_from_config(PUBLISHED, name="ckpt"), spec_from_config(tf, name="tf")
    assert a.layers == b.layers and a.kda == b.kda and a.mla == b.mla and a.moe == b.moe
    assert param_counts(a) == param_counts(b)
    assert [i for i, lyr in enumerate(a.layers) if lyr.has_attention] == [3, 7, 11, 15, 19, 23, 26]


def test_tables_name_the_state_dtype_kda_keeps():
    # kv: the state bytes are the float32 recurrent state's, and the column says so; other hybrids' not
    from lcprof.analytic import kv_table

    kimi = kv_table("kimi-linear-48b", "4k").records()[0]
    assert kimi["state_dtype"] == "bf16 (KDA's recurrent: fp32)"
    assert kimi["state_bytes"] == 20 * (32 * 128 * 128 * 4 + 3 * 4096 * 3 * 2)
    assert kv_table("qwen3-next-80b-a3b", "4k").records()[0]["state_dtype"] == "bf16"
    assert kv_table("kimi-linear-48b", "4k", state_dtype="fp32").records()[0]["state_dtype"] == "fp32"


def test_a_smaller_kda_is_counted_from_its_own_fields():
    # 16 KDA heads of 64, conv 3: per KDA layer (h = 2304, w = 1024, d = 64)
    # 3 h w + 3 w 3 + h d + d w + w + 16 + h 16 + h d + d w + d + w h
    small = spec_from_config(cfg(linear_attn_config={"num_heads": 16, "head_dim": 64, "short_conv_kernel_size": 3}),
                             name="small")
    h, w, d = 2304, 1024, 64
    per = 3 * h * w + 3 * w * 3 + h * d + d * w + w + 16 + h * 16 + h * d + d * w + d + w * h
    assert param_counts(small)["mixer_params"] == 20 * per
    # state, bf16 model: 20 x (16 x 64 x 64 x 4 B (recurrent, fp32) + 3 x 1024 x 2 x 2 B (conv))
    assert state_bytes(small, dtype="bf16") == 20 * (16 * 64 * 64 * 4 + 3 * 1024 * 2 * 2)
    assert kv_bytes_per_token(small) == 8064  # the MLA layers unchanged


def test_tensor_parallel_splits_kda_heads_and_keeps_the_low_rank_legs_whole():
    # vLLM's KDA under TP: q/k/v, f_b, g_b, b_proj column-parallel, o_proj row-parallel, f_a and g_a
    # (ReplicatedLinear: hidden -> head_dim) and o_norm (head_dim) whole on every rank
    from lcprof.cost.weights import Sharding, layer_matrices

    spec = spec_from_config(PUBLISHED, name="kimi")
    # TP 4: 8 heads per rank: recurrent 8 x 128 x 128 (fp32), conv 3 x 4096 x 3 / 4 (bf16)
    assert state_bytes(spec, dtype="bf16", tp=4) == 20 * (8 * 128 * 128 * 4 + 3 * 4096 * 3 // 4 * 2)
    h, w, d = 2304, 4096, 128
    kda_layer = next(i for i, lyr in enumerate(spec.layers) if "kda" in lyr.mixers)
    mats = {m.name: m for m in layer_matrices(spec, kda_layer, Sharding(tp=4)) if m.name.startswith("kda.")}
    assert (mats["kda.f_a_proj"].d_in, mats["kda.f_a_proj"].d_out) == (h, d)  # replicated
    assert (mats["kda.g_a_proj"].d_in, mats["kda.g_a_proj"].d_out) == (h, d)
    assert (mats["kda.f_b_proj"].d_in, mats["kda.f_b_proj"].d_out) == (d, w // 4)  # column-parallel
    assert (mats["kda.b_proj"].d_in, mats["kda.b_proj"].d_out) == (h, 8)
    assert (mats["kda.o_proj"].d_in, mats["kda.o_proj"].d_out) == (w // 4, h)  # row-parallel
    assert mats["kda.o_norm"].d_out == d and mats["kda.dt_bias"].d_out == w // 4 and mats["kda.A_log"].d_out == 8
    whole = 2 * h * d + d
    split = 3 * h * w + 3 * w * 4 + d * w + w + 32 + h * 32 + d * w + w * h  # all divisible by 4
    assert sum(m.d_in * m.d_out for m in mats.values()) == whole + split // 4
    with pytest.raises(LcprofError, match="KDA heads"):
        state_bytes(spec, tp=3)
    # one rank's share of the mixer, as the cost model and the planner price it: 8 heads of 128
    from lcprof.cost.kinds import per_rank
    from lcprof.plan.activation import mixer_step_elements
    from lcprof.plan.parallel import Parallel
    from lcprof.spec import KimiDeltaSpec

    assert per_rank(spec.kda, 4) == KimiDeltaSpec(hidden_size=h, n_heads=8, head_dim=d, conv_kernel=4)
    # vLLM's widest KDA step per token on a rank: the residual and normed input (2h), the input
    # projections' outputs (q, k, v: 3 x 1024; f_a and g_a: 128 each, whole; beta: 8) and the output (h)
    assert mixer_step_elements(spec, "kda", Parallel(tp=4)) == 2 * h + 3 * 1024 + 128 + 128 + 8 + h == 10248


@pytest.mark.parametrize("changes,must", [
    (dict(mla_use_nope=False), "mla_use_nope"),
    (dict(mla_use_output_gate=True), "mla_use_output_gate"),
    (dict(linear_attn_config={"use_full_rank_gate": True}), "use_full_rank_gate"),
    (dict(linear_attn_config={"gate_lower_bound": -5.0}), "gate_lower_bound"),
    (dict(linear_attn_config={"kda_layers": [1, 2, 3, 5]}), "kda_layers"),
    (dict(linear_attn_config={"full_attn_layers": [4, 8, 12, 16, 20, 24, 27, 27]}), "once"),
    (dict(linear_attn_config={"full_attn_layers": "4,8"}), "full_attn_layers"),
    (dict(num_key_value_heads=8), "num_key_value_heads"),
    (dict(moe_router_activation_func="relu"), "moe_router_activation_func"),
    (dict(attn_res_block_size=12), "attn_res_block_size"),  # Kimi K3's attention residuals
    (dict(routed_expert_hidden_size=3584), "routed_expert_hidden_size"),  # Kimi K3's latent MoE
    (dict(hidden_act="situ"), "hidden_act"),
])
def test_what_changes_cost_and_is_not_counted_is_refused(tmp_path, changes, must):
    p = write(tmp_path, cfg(**changes))
    refused(run(["kv", "--model", str(p), "--n", "4k"]), must)


def test_layer_types_beside_the_lists_must_agree(tmp_path):
    # transformers builds its schedule from layer_types when given, vLLM from the 1-based lists
    full = {3, 7, 11, 15, 19, 23, 26}
    same = ["full_attention" if i in full else "linear_attention" for i in range(27)]
    assert spec_from_config(cfg(layer_types=same), name="same").layers == spec_from_config(PUBLISHED, name="p").layers
    other = ["full_attention" if i % 4 == 3 else "linear_attention" for i in range(27)]  # layer 26 KDA
    refused(run(["kv", "--model", str(write(tmp_path, cfg(layer_types=other))), "--n", "4k"]), "layer_types",
            "different schedules")


def test_a_config_without_a_schedule_is_refused(tmp_path):
    c = cfg()
    del c["linear_attn_config"]
    refused(run(["kv", "--model", str(write(tmp_path, c)), "--n", "4k"]), "kda_layers", "layer_types")


def test_k3_defaults_in_the_linear_block_are_accepted_when_inert():
    # a later revision of the file may state the gate options at their no-op values
    spec = spec_from_config(cfg(linear_attn_config={"gate_lower_bound": None, "use_full_rank_gate": False}),
                            name="k")
    assert param_counts(spec) == param_counts(spec_from_config(PUBLISHED, name="p"))

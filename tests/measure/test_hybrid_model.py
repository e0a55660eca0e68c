"""Whole hybrid models (Nemotron-H, Jamba, Falcon-Mamba tiny configs) end to end: every layer kind
from the one factory, decode from each layer's own cache (KV, mixer state, or none), the built
model against the spec's parameter count, the cost model's FLOPs and cache bytes, and
``lcprof model-sweep`` rows that are checked, written and resumed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

from support.tiny_models import TINY_HYBRID_CONFIGS, tiny_hybrid_spec
from lcprof.cli import main
from lcprof.cost.model import cost, kv_bytes, state_bytes
from lcprof.errors import LcprofError
from lcprof.measure.backends import eager_attention
from lcprof.measure.check import TOLERANCE, reference_attention, rel_error
from lcprof.measure.model import Model, layer_kind
from lcprof.measure.model_sweep import run_model_sweep
from lcprof.measure.execution import Execution, ModelWorkload
from lcprof.spec import LayerSpec, param_counts

HYBRIDS = ("nemotron-h", "jamba", "falcon-mamba", "qwen3-next")


def test_layer_kinds_of_a_schedule():
    spec = tiny_hybrid_spec("nemotron-h")  # "M-*-"
    assert [layer_kind(spec, i) for i in range(4)] == ["mamba2", "mlp", "attention", "mlp"]


@pytest.mark.parametrize("name", HYBRIDS)
def test_decode_step_from_the_prefill_caches_equals_a_longer_prefill(name):
    # float64, the mixers on their recurrence-checked chunked form: a step at position n from the
    # caches (KV of the attention layers, the states of the mixers) a prefill of n leaves gives the
    # logits of a prefill of n + 1
    spec = tiny_hybrid_spec(name)
    model = Model(spec, dtype=torch.float64).eval()
    model.set_attention(reference_attention)
    n = 23
    ids = torch.randint(0, spec.vocab_size, (2, n + 1), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(ids)
        step = model(ids[:, n:], model.prefill_caches(ids, n), start=n)
    assert rel_error(step, full) < 1e-12


@pytest.mark.parametrize("name", HYBRIDS[:3])  # Qwen3-Next: the measured layer has no q/k norms (2 x head_dim each)
def test_parameters_match_the_spec_count(name):
    spec = tiny_hybrid_spec(name)
    moe = "routed" if spec.moe is not None else "dense-equivalent"
    assert Model(spec, moe_timing=moe, materialize=False).param_count() == param_counts(spec)["total_params"]


@pytest.mark.parametrize("name", HYBRIDS)
def test_model_flops_equal_the_cost_model(name):
    # FlopCounterMode over the whole model (eager attention, dense-equivalent MoE) == cost(...) of every
    # layer + the LM head of the last position, exactly, less Gated DeltaNet's triangular solve
    # (FlopCounterMode does not count it; test_hybrid_layer checks it by hand)
    spec = tiny_hybrid_spec(name)
    model = Model(spec).eval()
    model.set_attention(eager_attention)
    ids = torch.randint(0, spec.vocab_size, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(ids)
    c = cost(spec, 40, dtype="fp32", family="eager", lm_head=True)
    solve = float(np.asarray(c.flops.get("mixer/solve", 0.0)).ravel()[0])
    assert fc.get_total_flops() == int(c.flops["total"][0]) - int(solve)


def test_decode_cache_bytes_are_kv_plus_state_by_hand():
    # tiny Nemotron-H at context n = 100, fp32: the attention layer holds 101 tokens x 2 KV heads x
    # (8 + 8) dims x 4 B = 12928 B; the Mamba-2 layer its state: conv (d_inner 32 + 2 groups x 6
    # states x 2 = 56 channels) x (4 - 1) + 4 heads x 8 x 6 = 168 + 192 = 360 elements x 4 B = 1440 B;
    # the MLP-only layers nothing
    spec = tiny_hybrid_spec("nemotron-h")
    meta = Model(spec, materialize=False)
    assert meta.decode_cache_bytes(1, 100, torch.float32) == 12928 + 1440
    assert int(kv_bytes(spec, 101, kv_dtype="fp32")[0]) == 12928
    assert state_bytes(spec, dtype="fp32") == 1440


def test_kda_decode_cache_keeps_the_recurrent_state_in_float32():
    # tiny Kimi Linear at context n = 100, bf16: the MLA layer holds 101 tokens x (16 latent + 4 rope) x 2 B
    # = 4040 B; each of the 3 KDA layers its conv window 3 x 32 channels x (4 - 1) x 2 B = 576 B and its
    # recurrent state 4 heads x 8 x 8 x 4 B = 1024 B (float32, as vLLM keeps it): 3 x 1600 = 4800 B
    spec = tiny_hybrid_spec("kimi-linear")
    meta = Model(spec, materialize=False)
    assert meta.decode_cache_bytes(1, 100, torch.bfloat16) == 4040 + 4800
    assert int(kv_bytes(spec, 101, kv_dtype="bf16")[0]) == 4040
    assert state_bytes(spec, dtype="bf16") == state_bytes(spec, dtype="bf16", state_dtype="bf16") == 4800


def test_a_refused_layer_is_named(tmp_path):
    base = tiny_hybrid_spec("nemotron-h")  # a Falcon-H1-style parallel layer in the schedule
    spec = base.with_layers(base.layers[:2] + (LayerSpec(mixers=("attention", "mamba2"), mlp=False),))
    with pytest.raises(LcprofError, match=r"layer 2 is a 'attention\+mamba2' layer, which has no measured"):
        Model(spec, materialize=False)


@pytest.mark.parametrize("name", HYBRIDS)
def test_model_sweep_end_to_end_and_resume(name, tmp_path):
    spec = tiny_hybrid_spec(name)
    out = tmp_path / "m.csv"
    work = ModelWorkload(spec, "16,32", phases="prefill,decode", backends="sdpa")
    fast = Execution(budget_s=0.005, min_reps=2, max_reps=2)
    df = run_model_sweep(work, fast, device="cpu", out=out)
    assert (df["status"] == "ok").all(), df[["phase", "n", "reason"]]
    assert (df["scope"] == "model").all() and (df["time_s"] > 0).all()
    assert (df["check_rel_err"] < TOLERANCE["fp32"]).all()  # every distinct kind against its fp64 reference
    pre = df[df["phase"] == "prefill"]
    for _, r in pre.iterrows():  # predicted FLOPs: the cost model's whole model with the LM head
        fam = r["executed_family"] if isinstance(r["executed_family"], str) and r["executed_family"] else "useful"
        c = cost(spec, int(r["n"]), dtype="fp32", family=fam, lm_head=True)
        assert r["predicted_flops"] == pytest.approx(float(c.flops["total"][0]), rel=1e-12)
    said = []
    again = run_model_sweep(work, fast, device="cpu", out=out, resume=True, progress=said.append)
    assert len(again) == 4 and any("4 of 4" in s for s in said)
    assert len(open(out).read().splitlines()) == 5  # header + 4 rows: nothing measured twice


def test_cli_model_sweep_on_a_hybrid(tmp_path):
    cfg = tmp_path / "tiny-jamba" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(TINY_HYBRID_CONFIGS["jamba"]))
    r = CliRunner().invoke(main, ["model-sweep", "--model", str(cfg), "--n", "16", "--device", "cpu",
                                  "--budget-s", "0.005", "--min-reps", "2", "--max-reps", "2",
                                  "--out", str(tmp_path / "m.csv"), "--format", "json"])
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    assert {x["phase"] for x in recs} == {"prefill", "decode"} and {x["status"] for x in recs} == {"ok"}
    assert all("mamba" in x["layers"] for x in recs)

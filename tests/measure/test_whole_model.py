"""Whole models (lcprof.measure.model, model_sweep): decode against window-sized caches equals a longer
prefill, parameter counts and cache bytes match independent counts, every tiny family runs end to end
through prefill and decode, rows resume, a model that does not fit is timed kind by kind."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from lcprof.cost.model import cost, kv_bytes
from lcprof.errors import LcprofError
from lcprof.measure.check import TOLERANCE, reference_attention, rel_error
from lcprof.measure.model import Model, decode_capacity, distinct_layers, register_layer_kind
from lcprof.measure.model_sweep import MODEL_COLUMNS, run_model_sweep
from lcprof.measure.execution import Execution, ModelWorkload
from lcprof.spec import LayerSpec, param_counts
from support.tiny_models import TINY_CONFIGS

FAMILIES = ("gqa", "sliding", "chunked", "moe", "mla", "longrope", "nope", "fullqk", "olmo", "exaone", "parallel", "qscale")  # hybrids: test_hybrid_model.py


def test_decode_capacity_hand_values():
    # global: the n cached tokens and itself
    assert decode_capacity(LayerSpec("global"), 10) == 11
    # sliding W=4: the last 4 keys including itself (positions 7..10); early on all n + 1
    assert decode_capacity(LayerSpec("sliding", 4), 10) == 4
    assert decode_capacity(LayerSpec("sliding", 4), 2) == 3
    # chunked C=16, position 35 is in chunk 2 (32..47): keys 32..35
    assert decode_capacity(LayerSpec("chunked", 16), 35) == 4
    assert decode_capacity(LayerSpec("chunked", 16), 32) == 1


@pytest.mark.parametrize("name", FAMILIES)
def test_decode_step_equals_longer_prefill(name, spec_of):
    """float64: one step at position n against the caches a prefill of n tokens leaves (window-sized
    for sliding and chunked layers, RoPE at the true position) gives the logits of a prefill of n + 1."""
    spec = spec_of(name)
    model = Model(spec, dtype=torch.float64).eval()
    model.set_attention(reference_attention)
    n = 40  # past the sliding window (24) and two chunks (16)
    ids = torch.randint(0, spec.vocab_size, (2, n + 1), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(ids)
        caches = model.prefill_caches(ids, n)
        if spec.mla is not None:
            model.set_mla_form("absorbed")
        step = model(ids[:, n:], caches, start=n)
    assert step.shape == (2, spec.vocab_size)
    assert rel_error(step, full) < 1e-12


@pytest.mark.parametrize("name", sorted(set(TINY_CONFIGS) - {"plain"}))
def test_parameters_match_the_spec_count(name, spec_of):
    """The built model holds exactly the parameters spec.param_counts counts from the config: o_proj's bias
    and gpt-oss's router and expert biases too ("sinks"). Not "plain" (GPT-NeoX): lcprof's layer runs
    RMSNorm for LayerNorm models, so it holds no norm biases (2 x 64 + 64 fewer)."""
    spec = spec_of(name)
    moe = "routed" if spec.moe is not None else "dense-equivalent"
    meta = Model(spec, moe_timing=moe, materialize=False)
    assert meta.param_count() == param_counts(spec)["total_params"]


def test_routed_moe_parameters_match_the_spec_count(spec_of):
    spec = spec_of("moe")
    assert Model(spec, moe_timing="routed", materialize=False).param_count() == param_counts(spec)["total_params"]


def test_decode_cache_bytes_hand_count(spec_of):
    """tiny-sliding: layer 0 sliding W=24, layer 1 global; 2 KV heads of 16 + 16 dims, fp32.

    context n=100: layer 0 holds min(101, 24) = 24 tokens, layer 1 101 tokens:
    (24 + 101) x 2 heads x 32 dims x 4 B = 32000 B -- the cost model's kv_bytes at 101 tokens too.
    """
    spec = spec_of("sliding")
    meta = Model(spec, materialize=False)
    assert meta.decode_cache_bytes(1, 100, torch.float32) == (24 + 101) * 2 * 32 * 4 == 32000
    assert int(kv_bytes(spec, 101, kv_dtype="fp32")[0]) == 32000


@pytest.mark.parametrize("name", FAMILIES)
def test_model_in_fp32_against_float64(name, spec_of):
    """The whole model with SDPA in fp32 against its float64 copy with the reference attention."""
    spec = spec_of(name)
    ref = Model(spec, dtype=torch.float64).eval()
    ref.set_attention(reference_attention)
    from lcprof.measure.backends import get_backend

    ours = Model(spec, dtype=torch.float32).eval()
    ours.set_attention(get_backend("sdpa"))
    ids = torch.randint(0, spec.vocab_size, (1, 48), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert rel_error(ours(ids), ref(ids)) < TOLERANCE["fp32"]


def test_device_init_draws_the_layer_rule(spec_of):
    """init='device' (the GPU path, here on the CPU): projections std 1/sqrt(fan_in), norms 1, biases 0.1."""
    spec = spec_of("gqa")  # q/k/v bias
    m = Model(spec, init="device")
    w = m.layers[0].up.weight  # (96, 64)
    assert abs(float(w.std()) * math.sqrt(64) - 1.0) < 0.05
    assert torch.all(m.layers[0].input_norm.weight == 1)
    assert abs(float(m.layers[0].q_proj.bias.std()) - 0.1) < 0.03
    assert abs(float(m.embed.weight.std()) - 1.0) < 0.02


def test_layer_kind_registry_fails_loudly(monkeypatch, spec_of):
    with pytest.raises(ValueError, match="registered twice"):
        register_layer_kind("attention", lambda *a, **k: None)
    import lcprof.measure.model as M

    monkeypatch.setattr(M, "layer_kind", lambda spec, i: "attention+mamba2")  # parallel mixers: no builder
    with pytest.raises(LcprofError, match=r"'attention\+mamba2' layer, which has no measured implementation"):
        M.build_layer(spec_of("gqa"), 0)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("name,backends", [(nm, "sdpa") for nm in FAMILIES] + [("sliding", "eager")])
def test_every_family_end_to_end(name, backends, spec_of, tmp_path):
    """Prefill and decode of the whole model: every point ok, checked, written."""
    spec = spec_of(name)
    out = tmp_path / "m.csv"
    df = run_model_sweep(ModelWorkload(spec, "32,64", phases="prefill,decode", backends=backends), Execution(budget_s=0.01, min_reps=2, max_reps=3), out=out)
    assert len(df) == 4
    assert (df["status"] == "ok").all(), df[["backend", "phase", "n", "reason"]]
    assert (df["time_s"] > 0).all() and (df["scope"] == "model").all()
    assert (df["check_rel_err"] < TOLERANCE["fp32"]).all()
    rows = _rows(out)
    assert list(rows[0]) == list(MODEL_COLUMNS) and len(rows) == 4
    # executed FLOPs: the distinct layers times their counts plus the LM head = the cost model's whole
    # model with lm_head, where every layer runs in one family
    one_family = df[(df["phase"] == "prefill") & (df["executed_family"] != "mixed")]
    for _, r in one_family.iterrows():
        c = cost(spec, int(r["n"]), phase="prefill", dtype="fp32", family=r["executed_family"], lm_head=True)
        assert r["predicted_flops"] == pytest.approx(float(c.flops["total"][0]), rel=1e-12)


def test_resume_runs_only_what_is_missing(spec_of, tmp_path):
    spec = spec_of("gqa")
    out = tmp_path / "m.csv"
    run_model_sweep(ModelWorkload(spec, "16", phases="prefill", backends="sdpa"), Execution(budget_s=0.01, min_reps=2), out=out)
    with pytest.raises(LcprofError, match="exists; pass --resume"):
        run_model_sweep(ModelWorkload(spec, "16", phases="prefill", backends="sdpa"), out=out)
    msgs = []
    df = run_model_sweep(ModelWorkload(spec, "16,32", phases="prefill", backends="sdpa"), Execution(budget_s=0.01, min_reps=2), out=out, resume=True, progress=msgs.append)
    assert "1 of 2 points already done" in msgs[0]
    assert sorted(df["n"]) == [16, 32] and len(_rows(out)) == 2
    # one implementation and target per file: layer 0's rows would share the model rows' point keys
    with pytest.raises(LcprofError, match="holds lcprof model rows and this sweep is lcprof layer:0"):
        run_model_sweep(ModelWorkload(spec, "16", phases="prefill", backends="sdpa", target="layer"), out=out, resume=True)


def test_a_model_that_does_not_fit_is_timed_kind_by_kind(spec_of, tmp_path):
    """Cap between one layer's and the whole model's prediction: one layer of each kind and the head
    are timed and summed by the schedule (tiny-sliding: one sliding and one global layer)."""
    spec = spec_of("sliding")
    for phase in ("prefill", "decode"):
        full = run_model_sweep(ModelWorkload(spec, "64", phases=phase, backends="sdpa"), Execution(budget_s=0.01, min_reps=2, check=False))
        need = int(full["predicted_mem_bytes"][0])
        df = run_model_sweep(ModelWorkload(spec, "64", phases=phase, backends="sdpa"), Execution(budget_s=0.01, min_reps=2, mem_cap_bytes=need - 1), out=tmp_path / f"{phase}.csv")
        assert df["scope"][0] == "kinds-scaled" and df["status"][0] == "ok", df["reason"][0]
        assert df["predicted_mem_bytes"][0] < need
        r = df.iloc[0]
        parts = [p.split("=") for p in r["scaled_parts"].split()]
        assert [p[0] for p in parts] == ["sliding:24x1", "globalx1", "headx1"]
        total = sum(int(lab.rsplit("x", 1)[1]) * float(t) for lab, t in parts)
        assert r["time_s"] == pytest.approx(total, rel=1e-12)
        assert "timed one layer of each kind" in r["reason"]
    tiny = run_model_sweep(ModelWorkload(spec, "64", phases="prefill", backends="sdpa"), Execution(mem_cap_bytes=1000, check=False))
    assert tiny["status"][0] == "skipped" and "one layer of each kind needs" in tiny["reason"][0]


def test_distinct_layers_follow_the_schedule(spec_of):
    assert distinct_layers(spec_of("sliding")) == [(0, 1), (1, 1)]
    assert distinct_layers(spec_of("gqa")) == [(0, 2)]
    # DeepSeek-style: layer 0 dense, layer 1 MoE
    assert distinct_layers(spec_of("mla")) == [(0, 1), (1, 1)]


def test_bad_input_is_refused_before_anything_runs(spec_of, tmp_path):
    spec = spec_of("gqa")
    for kwargs, msg in ((dict(target="layer:9"), "layer must be 0..1"), (dict(target="head"), "unknown target"),
                        (dict(phases="generate"), "unknown phase"), (dict(impl="vllm"), "unknown implementation"),
                        (dict(backends="nope"), "unknown backend"), (dict(dtypes="tf32"), "needs a CUDA device")):
        with pytest.raises(LcprofError, match=msg):
            run_model_sweep(ModelWorkload(spec, "16", **kwargs), out=tmp_path / "never.csv")
    assert not (tmp_path / "never.csv").exists()


def test_cli_model_sweep_and_compare(tiny_config_path, tmp_path):
    from click.testing import CliRunner

    from lcprof.cli import main

    cfg = tiny_config_path("sliding")
    out = tmp_path / "m.csv"
    r = CliRunner().invoke(main, ["model-sweep", "--model", str(cfg), "--n", "16,32", "--budget-s", "0.01",
                                  "--min-reps", "2", "--out", str(out), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert len(_rows(out)) == 4
    bad = CliRunner().invoke(main, ["model-sweep", "--model", str(cfg), "--n", "16", "--target", "layer:7",
                                    "--out", str(tmp_path / "b.csv")])
    assert bad.exit_code == 2 and "layer must be 0..1" in bad.output and "Traceback" not in bad.output
    cal = tmp_path / "cal.json"
    cal.write_text('{"key": "cpu", "name": "cpu", "peak_flops_per_s": {"fp32": 1e11}, '
                   '"hbm_bytes_per_s": 2e10, "memory_bytes": 8000000000}')
    c = CliRunner().invoke(main, ["compare", str(out), "--calibration", str(cal), "--format", "json"])
    assert c.exit_code == 0, c.output
    import json

    recs = json.loads(c.output)
    assert {r["metric"] for r in recs} == {"ttft", "tpot"} and len(recs) == 4
    for rec in recs:
        assert rec["ratio"] == pytest.approx(rec["time_s"] / rec["planner_s"])


def test_planner_tpot_is_the_memory_roofline_by_hand(spec_of):
    """A decode step on hardware with an enormous FLOP rate is (weights + KV) / bandwidth.

    tiny-gqa, fp32, context n=100: weights = (param_counts total - the embedding table) x 4 B (a
    decode step gathers one embedding row, it does not stream the table; the untied LM head is read
    whole); KV = 2 layers x 100 tokens x 2 heads x (8 + 8) dims x 4 B = 25600 B; bandwidth 1e10 B/s.
    """
    from lcprof.explain.compare_model import planner_times, rates_for
    from lcprof.hardware import Hardware

    spec = spec_of("gqa")
    hw = Hardware(key="x", name="x", peak_flops_per_s={"fp32": 1e30}, hbm_bytes_per_s=1e10, memory_bytes=1 << 40,
                  kind="calibration")
    assert not spec.tie_embeddings
    w = (param_counts(spec)["total_params"] - spec.vocab_size * spec.hidden_size) * 4
    kv = 2 * 100 * 2 * 16 * 4
    assert kv == 25600
    t = planner_times(spec, rates_for(calibration=hw), [100], phase="decode", dtype="fp32")
    assert t[0] == pytest.approx((w + kv) / 1e10, rel=1e-12)


def test_compare_ratio_against_a_known_time(spec_of):
    """Rows measured at exactly twice the planner's TTFT read ratio 2."""
    import pandas as pd

    from lcprof.explain.compare_model import compare_model_results, planner_times, rates_for
    from lcprof.hardware import Hardware

    spec = spec_of("gqa")
    hw = Hardware(key="x", name="x", peak_flops_per_s={"fp32": 1e11}, hbm_bytes_per_s=1e10, memory_bytes=1 << 40,
                  kind="calibration")
    ns = np.array([128, 256])
    t = 2 * planner_times(spec, rates_for(calibration=hw), ns, phase="prefill", dtype="fp32")
    df = pd.DataFrame({"model": spec.name, "impl": "lcprof", "backend": "sdpa", "dtype": "fp32", "device": "cpu",
                       "batch": 1, "n": ns, "time_s": t, "status": "ok", "phase": "prefill", "target": "model",
                       "scope": "model", "kind_families": "0:tiled"})
    res = compare_model_results(df, calibration=hw, specs={spec.name: spec})
    assert list(res["ratio"]) == pytest.approx([2.0, 2.0])
    assert (res["metric"] == "ttft").all() and (res["as_run_s"] > 0).all()

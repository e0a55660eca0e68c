"""The mixer sweep writes rows in the results schema as they complete, resumes, and fits."""

from __future__ import annotations

import csv
import dataclasses

import pytest

from lcprof.errors import LcprofError
from lcprof.explain.fit import fit_results
from lcprof.measure.mixer_sweep import sweep_mixer
from lcprof.spec import GatedDeltaNetSpec, load_model


def tiny_qwen_next():
    spec = load_model("qwen3-next-80b-a3b")
    gdn = GatedDeltaNetSpec(hidden_size=spec.hidden_size, num_k_heads=1, num_v_heads=2, head_k_dim=16, head_v_dim=16,
                            conv_kernel=4)
    return dataclasses.replace(spec, name="tiny-qwen-next", gated_deltanet=gdn)


def test_rows_schema_resume_and_fit(tmp_path):
    out = tmp_path / "r.csv"
    spec = tiny_qwen_next()
    lines = []
    sweep_mixer(spec, [8, 16, 32], out=out, budget_s=0.01, log=lines.append)
    sweep_mixer(spec, [8, 16, 32], out=out, budget_s=0.01, phase="decode", log=lines.append)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    for col in ("model", "backend", "dtype", "device", "batch", "n", "time_s", "status", "phase", "layer_kind"):
        assert all(r[col] != "" for r in rows), col
    assert {r["layer_kind"] for r in rows} == {"gated_deltanet"}
    assert float(rows[0]["check_rel_err"]) < 1e-5  # fp32 against the fp64 recurrence
    # predicted FLOPs are the cost model's: prefill grows with n, decode does not
    pre = [float(r["predicted_flops"]) for r in rows if r["phase"] == "prefill"]
    dec = {float(r["predicted_flops"]) for r in rows if r["phase"] == "decode"}
    assert pre[0] < pre[1] < pre[2] and len(dec) == 1
    sweep_mixer(spec, [8, 16, 32], out=out, budget_s=0.01, log=lines.append)  # resume: nothing new
    assert len(list(csv.DictReader(open(out)))) == 6 and sum("done already" in s for s in lines) == 3
    fit = fit_results(out)
    assert fit is not None


def test_refuses_a_model_without_mixers(tmp_path):
    with pytest.raises(LcprofError, match="no linear-time mixer"):
        sweep_mixer("llama3-8b", [8], out=tmp_path / "r.csv")

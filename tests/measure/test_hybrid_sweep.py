"""``lcprof sweep`` on hybrid layers, like attention layers: rows through ``lcprof.results`` (schema,
point key, lock, resume), correctness against the fp64 recurrence before timing, mixer backends
probed with the reason for a skip; then ``fit`` and ``compare`` on such rows (exponent near 1 for a
linear-time prefill, near 0 for its decode, and the output says why)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from support.tiny_models import TINY_HYBRID_CONFIGS
from lcprof.cli import main
from lcprof.cost.model import cost
from lcprof.errors import LcprofError
from lcprof.explain.fit import fit_results
from lcprof.explain.compare import compare_results
from lcprof.measure.mixers.mamba2 import Mamba2Mixer
from lcprof.measure.sweep import run_sweep
from lcprof.measure.execution import Execution, SweepWorkload
from lcprof.results import RESULT_COLUMNS, ResultsLock, ResultsLocked, point_key, read_results
from lcprof.spec import load_model

FAST = Execution(budget_s=0.005, min_reps=2, max_reps=2, max_attempts=1)  # with device="cpu" in every call
NS = "16,32,64"


@pytest.fixture
def hybrid_config(tmp_path):
    def write(name="nemotron-h"):
        path = tmp_path / f"tiny-{name}" / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(TINY_HYBRID_CONFIGS[name]))
        return str(path)

    return write


def test_mamba2_layer_rows_resume_and_key(hybrid_config, tmp_path):
    cfg, out = hybrid_config("nemotron-h"), tmp_path / "r.csv"
    said = []
    run_sweep(SweepWorkload(cfg, NS, None, "fp32", layer=0), FAST, out=out, progress=said.append, device="cpu")  # default backend: torch
    run_sweep(SweepWorkload(cfg, NS, "torch", "fp32", layer=0, phase="decode"), FAST, out=out, resume=True, progress=said.append, device="cpu")
    header = open(out).readline().strip().split(",")
    assert tuple(header) == RESULT_COLUMNS  # the one schema, written by lcprof.results
    df = read_results(out)
    assert len(df) == 6 and set(df["status"]) == {"ok"}
    assert set(df["layer_kind"]) == {"mamba2"} and set(df["backend"]) == {"torch"}
    assert (df["check_layer_rel_err"].astype(float) < 1e-5).all()  # fp32 vs the fp64 recurrence
    assert df["check_attn_rel_err"].isna().all()  # no attention in the layer
    pre = df[df["phase"] == "prefill"].sort_values("n")
    dec = df[df["phase"] == "decode"]
    spec = load_model(cfg)
    # predicted FLOPs are the cost model's for this layer: the chunked prefill, and one recurrent step
    for _, r in pre.iterrows():
        assert r["predicted_flops"] == float(cost(spec, r["n"], layer=0, dtype="fp32").flops["total"][0])
    assert dec["predicted_flops"].nunique() == 1 and dec["predicted_flops"].iloc[0] < pre["predicted_flops"].min()
    # resume: every point is done, nothing is measured or written again
    before = open(out).read()
    said.clear()
    run_sweep(SweepWorkload(cfg, NS, "torch", "fp32", layer=0), FAST, out=out, resume=True, progress=said.append, device="cpu")
    assert open(out).read() == before
    assert any("3 of 3 points already done" in s for s in said)
    # the point key tells the layers and phases apart
    assert len({point_key(r) for _, r in df.iterrows()}) == 6


def test_unavailable_mixer_backend_is_skipped_with_its_reason_and_is_another_point(hybrid_config, tmp_path):
    cfg, out = hybrid_config("qwen3-next"), tmp_path / "r.csv"
    df = run_sweep(SweepWorkload(cfg, "16,32", "torch,fla", "fp32", layer=0), FAST, out=out, device="cpu")
    fla = df[df["backend"] == "fla"]
    assert set(fla["status"]) == {"skipped"}
    assert all(r.startswith("mixer backend unavailable on cpu fp32:") for r in fla["reason"])
    assert set(df[df["backend"] == "torch"]["status"]) == {"ok"}
    assert set(df["layer_kind"]) == {"gated_deltanet"}
    keys = {point_key(r)[:2] for _, r in df.iterrows()}
    assert {k[1] for k in keys} == {"torch", "fla"}  # the mixer backend is part of the point key


def test_mlp_only_layer_is_measured_too(hybrid_config, tmp_path):
    df = run_sweep(SweepWorkload(hybrid_config("nemotron-h"), "16,32", None, "fp32", layer=1), FAST, out=tmp_path / "r.csv", device="cpu")
    assert set(df["status"]) == {"ok"} and set(df["layer_kind"]) == {"mlp"}


def test_a_wrong_mixer_is_caught_before_timing(hybrid_config, tmp_path, monkeypatch):
    orig = Mamba2Mixer.forward

    def off_by_one_percent(self, x, state=None, **kw):
        y, st = orig(self, x, state, **kw)
        return y * 1.01, st

    monkeypatch.setattr(Mamba2Mixer, "forward", off_by_one_percent)
    df = run_sweep(SweepWorkload(hybrid_config("nemotron-h"), "16", "torch", "fp32", layer=0), FAST, out=tmp_path / "r.csv", device="cpu")
    assert list(df["status"]) == ["error"]
    assert "mismatch vs float64 recurrence" in df["reason"].iloc[0]
    assert pd.isna(df["time_s"].iloc[0])  # not timed


@pytest.mark.parametrize("layer,backends,match", [
    (0, "eager", r"layer 0 is mamba2, not attention: 'eager' is an attention backend; use a mixer backend \(torch, mamba-ssm\)"),
    (0, "fla", r"mixer backend 'fla' does not run mamba2 layers"),
    (2, "torch", r"layer 2 is global \(attention\): 'torch' is a mixer backend"),
    (1, "mamba-ssm", r"layer 1 is MLP only: its one backend is torch"),
])
def test_a_backend_of_the_wrong_kind_is_refused(hybrid_config, tmp_path, layer, backends, match):
    out = tmp_path / "r.csv"
    with pytest.raises(LcprofError, match=match):
        run_sweep(SweepWorkload(hybrid_config("nemotron-h"), "16", backends, "fp32", layer=layer), FAST, out=out, device="cpu")
    assert not out.exists()


def test_the_lock_holds_for_hybrid_sweeps(hybrid_config, tmp_path):
    out = tmp_path / "r.csv"
    with ResultsLock(out):
        with pytest.raises(ResultsLocked, match="being written by another sweep"):
            run_sweep(SweepWorkload(hybrid_config("nemotron-h"), "16", None, "fp32", layer=0), FAST, out=out, device="cpu")


def test_cli_sweep_on_a_mixer_layer(hybrid_config, tmp_path):
    out = tmp_path / "r.csv"
    r = CliRunner().invoke(main, ["sweep", "--model", hybrid_config("jamba"), "--layer", "1", "--n", "16,32",
                                  "--device", "cpu", "--budget-s", "0.005", "--min-reps", "2", "--max-reps", "2",
                                  "--out", str(out), "--format", "json"])
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    assert [x["status"] for x in recs] == ["ok", "ok"] and {x["backend"] for x in recs} == {"torch"}
    bad = CliRunner().invoke(main, ["sweep", "--model", hybrid_config("jamba"), "--layer", "1", "--n", "16",
                                    "--backends", "sdpa", "--device", "cpu", "--out", str(tmp_path / "x.csv")])
    assert bad.exit_code == 2
    lines = [ln for ln in bad.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is an attention backend" in lines[0]


# ----- fit and compare on linear-time rows -------------------------------------------------------

RATE_FLOPS_PER_S = 2e11  # the synthetic device: 2e11 FLOP/s on every FLOP the cost model counts
FIXED_S = 1e-3


def _synthetic_rows(model, layer, ns, phase):
    """Rows of a device that runs the layer's counted FLOPs at a constant rate after a fixed cost."""
    spec = load_model(model)
    flops = cost(spec, np.asarray(ns, dtype=float), layer=layer, phase=phase, dtype="bf16").flops["total"]
    return [dict(model=model, backend="torch", dtype="bf16", device="cuda", batch=1, n=int(n), phase=phase,
                 layer=layer, time_s=FIXED_S + float(f) / RATE_FLOPS_PER_S, status="ok")
            for n, f in zip(ns, flops)]


@pytest.fixture
def linear_rows(tmp_path):
    ns = [1024, 2048, 4096, 8192, 16384]
    rows = (_synthetic_rows("nemotron-h-56b", 0, ns, "prefill") + _synthetic_rows("nemotron-h-56b", 0, ns, "decode")
            + _synthetic_rows("qwen3-next-80b-a3b", 0, ns, "prefill"))
    path = tmp_path / "linear.csv"
    pd.DataFrame(rows).to_csv(path, index=False)  # the eight basic columns + phase and layer
    return path


def test_fit_gives_exponent_near_one_and_says_why(linear_rows):
    res = fit_results(linear_rows)
    by = {(g.key["model"], g.key["phase"]): g for g in res.groups}
    for key in (("nemotron-h-56b", "prefill"), ("qwen3-next-80b-a3b", "prefill")):
        g = by[key]
        # t = 1 ms + linear FLOPs / rate: the counted FLOPs are linear in n (chunked: n²-like only
        # inside a chunk), so the exponent is 1 within 1%, and the cost-model fit recovers the rate
        assert abs(g.power_law.exponent - 1.0) < 0.01, g.power_law.exponent
        assert g.model.rate("matmul") == pytest.approx(RATE_FLOPS_PER_S, rel=1e-6)
        assert any("linear-time layer, expect an exponent near 1" in nt for nt in g.notes)
    dec = by[("nemotron-h-56b", "decode")]
    assert abs(dec.power_law.exponent) < 1e-9  # a decode step's FLOPs do not depend on the context
    assert any("state of constant size" in nt for nt in dec.notes)
    r = CliRunner().invoke(main, ["fit", str(linear_rows)])
    assert r.exit_code == 0, r.output
    assert "layer 0 is mamba2 (a linear-time mixer, no attention): linear-time layer" in r.output


def test_compare_predicts_linear_rows_and_says_why(linear_rows):
    res = compare_results(linear_rows, gpu="h100-sxm")
    rows = res.rows
    assert rows["predicted_time_s"].notna().all() and (rows["note"] == "").all()
    assert rows["why"].str.contains("linear-time|constant size").all()
    pre = res.exponents[(res.exponents["model"] == "qwen3-next-80b-a3b")]
    # measured local exponents near 1, and the FLOPs' own exponents beside them near 1 too
    assert (abs(pre["measured_local_exponent"] - 1) < 0.02).all()
    assert (abs(pre["flops_local_exponent"] - 1) < 0.02).all()
    r = CliRunner().invoke(main, ["compare", str(linear_rows), "--gpu", "h100-sxm"])
    assert r.exit_code == 0, r.output
    assert "linear-time layer" in r.output


def test_the_committed_cpu_hybrid_report_holds_its_exponents():
    # reports/cpu-hybrid-2026-12-02: the README's table is `lcprof fit` of the committed rows
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2] / "reports" / "cpu-hybrid-2026-12-02"
    df = read_results(root / "results.csv")
    assert set(df["status"]) == {"ok"} and len(df) == 16
    assert set(df["layer_kind"]) == {"mamba2", "gated_deltanet"}
    assert (df["check_layer_rel_err"].astype(float) < 1e-5).all()
    res = fit_results(root / "results.csv")
    got = {(g.key["model"], g.key["phase"]): round(g.power_law.exponent, 3) for g in res.groups}
    assert got == {("nemotron-3-nano", "prefill"): 1.024, ("nemotron-3-nano", "decode"): 0.012,
                   ("qwen3-next-80b-a3b", "prefill"): 1.119, ("qwen3-next-80b-a3b", "decode"): 0.091}
    readme = (root / "README.md").read_text()
    for k in got.values():
        assert f"**{k:.3f}**" in readme


def test_kda_layer_of_an_mla_model_has_no_mla_form(hybrid_config, tmp_path):
    # Kimi Linear: its KDA layers run no attention, so the MLA form (naive / absorbed) is not theirs --
    # blank in the rows and out of the group's name; its MLA layer keeps it
    cfg, out = hybrid_config("kimi-linear"), tmp_path / "r.csv"
    kda = run_sweep(SweepWorkload(cfg, "16,32", "torch", "fp32", layer=0), FAST, out=out, device="cpu")
    assert set(kda["status"]) == {"ok"} and set(kda["layer_kind"]) == {"kda"}
    assert kda["mla_form"].isna().all()
    assert (kda["check_layer_rel_err"].astype(float) < 1e-5).all()  # fp32 vs the fp64 recurrence
    mla = run_sweep(SweepWorkload(cfg, "16,32", "sdpa", "fp32", layer=2), FAST, out=tmp_path / "m.csv", device="cpu")
    assert set(mla["mla_form"]) == {"naive"}

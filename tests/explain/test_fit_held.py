"""A fit that holds the attention rate at a calibration's: the known part is subtracted, the other
rates are fitted, the held rate's own spread is charged in the interval, and a calibration that did
not measure the group's backend (or measured another device kind) leaves the rate fitted, saying so."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from lcprof.cli import main
from lcprof.explain.fit import CLASSES, HeldRate, fit_results, model_fit, work_by_class
from lcprof.hardware import Hardware, load_calibration
from lcprof.spec import load_model

N = np.array([128.0, 256.0, 512.0, 1024.0, 2048.0])
KW = dict(phase="prefill", batch=1, dtype="fp32", layer=0)
# the truth the synthetic times are made of: fixed 5 ms, matmul 80 GFLOP/s, attention 40 GFLOP/s,
# elementwise bytes 6 GB/s
FIXED, R_MM, R_ATT, R_MEM = 5e-3, 80e9, 40e9, 6e9


def _cal(backend="sdpa", rate=R_ATT, spread=0.10, device="cpu") -> Hardware:
    return Hardware(key="cal-test", name="test CPU", peak_flops_per_s={"fp32": 1e11}, hbm_bytes_per_s=1e10,
                    memory_bytes=1 << 34, kind="calibration", attention_flops_per_s={backend: {"fp32": rate}},
                    attention_spread={backend: {"fp32": spread}}, device=device)


def _times(spec, family, ns=N, r_att=R_ATT):
    x = work_by_class(spec, ns, family=family, attention_call=True, **KW)
    # t = fixed + matmul / R_mm + attention / R_att + bytes / R_mem (attention's own bytes priced by R_att)
    return FIXED + x[:, 1] / R_MM + x[:, 2] / r_att + x[:, 3] / R_MEM


def _rows(spec, backend, family, wiggle=None, r_att=R_ATT):
    t = _times(spec, family, r_att=r_att)
    if wiggle is not None:
        t = t * wiggle
    return pd.DataFrame({"model": "phi3-128k", "backend": backend, "dtype": "fp32", "device": "cpu", "batch": 1,
                         "n": N.astype(int), "time_s": t, "status": "ok", "executed_family": family})


def test_held_rate_gives_the_hand_computed_extrapolation():
    """Exact times: the held fit returns fixed + matmul/R_mm + attention/R_att + bytes/R_mem at 131072,
    the sum computed here from the counted work, and reports the held rate as the attention rate."""
    spec = load_model("phi3-128k")
    res = fit_results(_rows(spec, "sdpa", "tiled"), target=131072, rates=_cal())
    (g,) = res.groups
    x = work_by_class(spec, np.array([131072.0]), family="tiled", attention_call=True, **KW)[0]
    # phi3 layer 0 at 131072, tiled 128 x 128: attention = 4 * 96 * 32 * (1024 * 1025 / 2 tiles * 128^2) FLOPs
    assert x[2] == 4 * 96 * 32 * (1024 * 1025 // 2) * 128 * 128
    want = FIXED + x[1] / R_MM + x[2] / R_ATT + x[3] / R_MEM
    assert g.extrapolation["target_time_s"] == pytest.approx(want, rel=1e-6)
    assert g.model.kind == "cost model, attention rate held"
    assert g.model.rate("attention") == pytest.approx(R_ATT)
    # (the fixed seconds alone are not identifiable: the memory bytes hold the weights, a constant too)
    np.testing.assert_allclose(g.model.predict(N), _times(spec, "tiled"), rtol=1e-9)
    assert any("attention rate held at cal-test's sdpa fp32 rate" in n for n in g.notes)
    # the held class's share at the target is its seconds over the total
    share = g.model.shares(131072)["attention_share"][0]
    assert share == pytest.approx((x[2] / R_ATT) / want, rel=1e-6)


def test_a_wrong_held_rate_moves_the_extrapolation_by_its_attention_share():
    """Holding half the true rate doubles the attention seconds at the target (the fitted rest absorbs
    little: at n <= 2048 the attention is a small share), so the prediction rises by about that part."""
    spec = load_model("phi3-128k")
    rows = _rows(spec, "sdpa", "tiled")
    good = fit_results(rows, target=131072, rates=_cal()).groups[0].extrapolation["target_time_s"]
    slow = fit_results(rows, target=131072, rates=_cal(rate=R_ATT / 2)).groups[0].extrapolation["target_time_s"]
    x = work_by_class(spec, np.array([131072.0]), family="tiled", attention_call=True, **KW)[0]
    extra = x[2] / R_ATT  # the attention seconds added by halving its rate
    assert slow - good == pytest.approx(extra, rel=0.05)


def test_eager_held_rate_prices_its_score_passes():
    """For eager the calibrated rate times the whole attention call, so the memory class leaves out the
    attention's own elementwise bytes (and only those): the tiled family has none to leave out."""
    spec = load_model("phi3-128k")
    from lcprof.cost.model import cost

    ns = np.array([4096.0])
    c = cost(spec, ns, dtype="fp32", family="eager", layer=0)
    full = work_by_class(spec, ns, family="eager", **KW)[0]
    held = work_by_class(spec, ns, family="eager", attention_call=True, **KW)[0]
    # eager's scores, (32 heads, 4096, 4096) fp32 = 2 GiB, pass through memory several times
    assert full[3] - held[3] == pytest.approx(float(np.asarray(c.bytes["attn/elementwise"]).ravel()[0]))
    assert full[3] - held[3] > 4 * 32 * 4096 * 4096 * 4
    np.testing.assert_array_equal(full[:3], held[:3])
    tiled = work_by_class(spec, ns, family="tiled", **KW)[0]
    np.testing.assert_array_equal(tiled, work_by_class(spec, ns, family="tiled", attention_call=True, **KW)[0])
    res = fit_results(_rows(spec, "eager", "eager"), target=8192, rates=_cal("eager"))
    x = work_by_class(spec, np.array([8192.0]), family="eager", attention_call=True, **KW)[0]
    want = FIXED + x[1] / R_MM + x[2] / R_ATT + x[3] / R_MEM
    assert res.groups[0].extrapolation["target_time_s"] == pytest.approx(want, rel=1e-6)


def test_the_held_rates_spread_is_charged_in_the_interval():
    """Exact data, target inside the measured range (no drift term): the 95% interval's log half-width
    is z * spread * (attention share of the time) -- 1.959964 * 0.10 * share -- and nothing else."""
    spec = load_model("phi3-128k")
    res = fit_results(_rows(spec, "sdpa", "tiled"), target=2048, rates=_cal(spread=0.10))
    g = res.groups[0]
    share = g.model.shares(2048)["attention_share"][0]
    half = math.log(g.extrapolation["target_time_hi_s"] / g.extrapolation["target_time_s"])
    assert half == pytest.approx(stats.norm.ppf(0.975) * 0.10 * share, rel=1e-3)
    lo_half = math.log(g.extrapolation["target_time_s"] / g.extrapolation["target_time_lo_s"])
    assert lo_half == pytest.approx(half, rel=1e-9)
    zero = fit_results(_rows(spec, "sdpa", "tiled"), target=2048, rates=_cal(spread=0.0)).groups[0]
    assert zero.extrapolation["target_time_hi_s"] == pytest.approx(zero.extrapolation["target_time_s"], rel=1e-6)


def test_bootstrap_interval_keeps_the_held_part():
    """With noisy times the bootstrap refits the rest around the held part: its interval brackets the
    same prediction as the delta one, positive, and both hold the attention seconds fixed."""
    spec = load_model("phi3-128k")
    wiggle = np.array([1.03, 0.98, 1.01, 0.97, 1.02])
    rows = _rows(spec, "sdpa", "tiled", wiggle)
    d = fit_results(rows, target=131072, rates=_cal()).groups[0].extrapolation
    b = fit_results(rows, target=131072, rates=_cal(), interval="bootstrap", n_boot=200).groups[0].extrapolation
    assert d["target_time_s"] == b["target_time_s"]
    for e in (d, b):
        assert 0 < e["target_time_lo_s"] < e["target_time_s"] < e["target_time_hi_s"]
    x = work_by_class(spec, np.array([131072.0]), family="tiled", attention_call=True, **KW)[0]
    assert d["target_time_s"] > x[2] / R_ATT  # the held attention seconds are a floor of the prediction


def test_no_hold_without_the_backend_or_on_another_device():
    spec = load_model("phi3-128k")
    rows = _rows(spec, "sdpa", "tiled")
    other = fit_results(rows, target=131072, rates=_cal("eager")).groups[0]
    assert other.model.kind == "cost model"
    assert any("cal-test has no sdpa fp32 attention rate" in n for n in other.notes)
    gpu = fit_results(rows, target=131072, rates=_cal(device="cuda")).groups[0]
    assert gpu.model.kind == "cost model"
    assert any("the calibration measured cuda, these rows cpu" in n for n in gpu.notes)
    plain = fit_results(rows, target=131072).groups[0]
    assert other.extrapolation["target_time_s"] == plain.extrapolation["target_time_s"]


def test_model_fit_with_a_held_class_leaves_its_coefficient_at_zero():
    """The held class's design column is zeroed: NNLS cannot also fit it (no double count)."""
    spec = load_model("phi3-128k")
    design = lambda ns: work_by_class(spec, ns, family="tiled", attention_call=True, **KW)  # noqa: E731
    t = _times(spec, "tiled")
    held = HeldRate("attention", lambda ns: np.full(np.shape(ns), R_ATT), 0.0, "test")
    f = model_fit(N, t, design, CLASSES, held=held)
    assert f.fit.coef[CLASSES.index("attention")] == 0.0
    np.testing.assert_allclose(f.predict(N), t, rtol=1e-9)


def test_profile_spread_and_device_are_read(tmp_path):
    prof = {"key": "c", "name": "c", "kind": "calibration", "device": "cpu", "peak_flops_per_s": {"fp32": 1e11},
            "hbm_bytes_per_s": 1e10, "memory_bytes": 1 << 34,
            "attention_flops_per_s": {"sdpa": {"fp32": 4e10}},
            "attention_flops_per_s_by_n": {"sdpa": {"fp32": {"1024": 3e10, "4096": 4e10}}},
            "method": {"attention": {"sdpa/fp32/1024": {"spread": 0.02}, "sdpa/fp32/4096": {"spread": 0.07}}}}
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(prof))
    hw = load_calibration(p)
    assert hw.device == "cpu"
    assert hw.attention_spread == {"sdpa": {"fp32": 0.07}}  # the largest over the lengths
    prof["method"]["attention"]["sdpa/fp32/4096"]["spread"] = 1.5
    p.write_text(json.dumps(prof))
    with pytest.raises(Exception, match="spread must be a number in"):
        load_calibration(p)


def test_fit_cli_calibration_refuses_results_and_datasheet(tmp_path):
    spec = load_model("phi3-128k")
    f = tmp_path / "r.csv"
    _rows(spec, "sdpa", "tiled").to_csv(f, index=False)
    for bad in (str(f), "datasheet"):
        r = CliRunner().invoke(main, ["fit", str(f), "--calibration", bad])
        assert r.exit_code == 2
        assert "fit --calibration takes a profile from `lcprof calibrate`" in r.output
        assert "Traceback" not in r.output
    r = CliRunner().invoke(main, ["calibrate", "--out", str(tmp_path / "c.json"), "--attention-shape", "32"])
    assert r.exit_code == 2 and "HEADS,HEAD_DIM" in r.output


# ----- what the mutation run of the held fit found untested ----------------------------------------

def _noisy(spec, r_att=R_ATT):
    wiggle = np.array([1.04, 0.97, 1.02, 0.96, 1.03])
    return _rows(spec, "sdpa", "tiled", wiggle, r_att=r_att)


SLOW_ATT = 2e9  # an attention rate 20x lower: the held seconds are ~70% of the time at 2048


def test_exact_times_show_no_drift_when_the_back_tests_hold_the_rate():
    """Times made exactly from the counted work: every back-test (fit up to L_j, predict L_k) holding the
    same rate predicts exactly, so the drift estimate is 0 -- back-tests that forgot the held part would
    fit the attention seconds into the other classes and miss."""
    spec = load_model("phi3-128k")
    g = fit_results(_rows(spec, "sdpa", "tiled"), target=131072, rates=_cal()).groups[0]
    assert g.model.drift_tests > 0
    assert g.model.drift_var < 1e-12


def test_delta_interval_is_the_closed_form_with_the_held_part_in_the_time():
    """Noisy times, target inside the range: log half-width = sqrt((q se)^2 + (z spread share)^2) where
    se = sqrt(x0' Cov x0) / (x0 c + held seconds) -- the held seconds are part of the time se is
    relative to -- q the t quantile of the fit's dof, z the normal one."""
    spec = load_model("phi3-128k")
    g = fit_results(_noisy(spec), target=2048, rates=_cal(spread=0.10)).groups[0]
    m = g.model
    x0 = m.design(np.array([2048.0]))
    held = float(m.held(np.array([2048.0]))[0])
    mid = float((x0 @ m.fit.coef)[0]) + held
    se = math.sqrt(float(x0[0] @ m.fit.cov @ x0[0])) / mid
    q, z = stats.t.ppf(0.975, m.fit.dof), stats.norm.ppf(0.975)
    want = math.sqrt((q * se) ** 2 + (z * 0.10 * held / mid) ** 2)
    got = math.log(g.extrapolation["target_time_hi_s"] / g.extrapolation["target_time_s"])
    assert got == pytest.approx(want, rel=1e-9)
    assert g.extrapolation["target_time_s"] == pytest.approx(mid, rel=1e-12)


def test_bootstrap_refits_around_the_held_part():
    """Held seconds ~70% of the time, 4% noise: the residual bootstrap (each resample refitted with the
    held seconds held) gives the delta method's width within 15% at the largest measured n (a linear
    fit, so the two agree up to the bootstrap's own ~4% noise at 300 resamples). Refitting without the
    held part folds the attention into the other classes, whose fit then varies ~40% less."""
    spec = load_model("phi3-128k")
    rows = _noisy(spec, SLOW_ATT)
    cal = _cal(rate=SLOW_ATT, spread=0.0)
    g = fit_results(rows, target=2048, rates=cal).groups[0]
    assert g.model.shares(2048)["attention_share"][0] == pytest.approx(0.70, abs=0.05)
    b = fit_results(rows, target=2048, rates=cal, interval="bootstrap", n_boot=300).groups[0].extrapolation
    half_d = math.log(g.extrapolation["target_time_hi_s"] / g.extrapolation["target_time_s"])
    half_b = math.log(b["target_time_hi_s"] / b["target_time_s"])
    assert half_b / half_d == pytest.approx(1.0, abs=0.15)


def test_held_drift_is_the_back_tests_excess_error_per_log_length_squared():
    """The drift of a held fit, by the docstring's method of moments written out here: for each fit of
    the lengths up to L_j (at least 3 lengths, more than its active terms) and each longer L_k, the log
    error e of the prediction (held seconds included) and its noise v = se^2 + s^2 (se relative to the
    whole predicted time, held seconds included); tau^2 = max(0, sum(e^2 - v)) / sum(log^2(L_k / L_j))."""
    from lcprof.explain.fit import fit_linear

    spec = load_model("phi3-128k")
    # noise plus a slow-down growing with n (a rate that drifts), so that the back-tests miss
    rows = _rows(spec, "sdpa", "tiled", np.array([1.01, 0.99, 1.03, 1.10, 1.25]), r_att=SLOW_ATT)
    g = fit_results(rows, target=None, rates=_cal(rate=SLOW_ATT, spread=0.0)).groups[0]
    design = g.model.design
    held = lambda ns: g.model.held(np.asarray(ns, dtype=float))  # noqa: E731
    t = rows["time_s"].to_numpy(float)
    num = den = 0.0
    used = 0
    for j in range(len(N) - 1):
        if j + 1 < 3:
            continue
        f = fit_linear(design(N[:j + 1]), t[:j + 1], held(N[:j + 1]))
        if f.dof <= 0 or j + 1 <= int(np.sum(f.coef > 0)):
            continue
        for k in range(j + 1, len(N)):
            x0 = design(N[k:k + 1])
            pred = float((x0 @ f.coef)[0] + held(N[k:k + 1])[0])
            se2 = float(x0[0] @ f.cov @ x0[0]) / pred ** 2
            e = math.log(t[k] / pred)
            num += e * e - (se2 + f.s2)
            den += math.log(N[k] / N[j]) ** 2
            used += 1
    assert used == g.model.drift_tests > 0
    assert g.model.drift_var == pytest.approx(max(0.0, num) / den, rel=1e-9, abs=1e-15)
    assert g.model.drift_var > 0  # these times do not extrapolate within their noise


def test_interval_over_several_targets_is_each_targets_own():
    """The interval of [a, b] equals the intervals of a and of b taken one by one (delta and bootstrap)."""
    spec = load_model("phi3-128k")
    m = fit_results(_noisy(spec), target=None, rates=_cal()).groups[0].model
    both = np.array([1024.0, 65536.0])
    for method in ("delta", "bootstrap"):
        lo, hi = m.interval(both, method, n_boot=200, seed=3)
        for i, n in enumerate(both):
            lo1, hi1 = m.interval(np.array([n]), method, n_boot=200, seed=3)
            assert (lo[i], hi[i]) == pytest.approx((lo1[0], hi1[0]), rel=1e-12), (method, n)


def test_model_fit_refuses_a_zero_time_and_unequal_arrays():
    design = lambda ns: np.column_stack([np.ones_like(np.asarray(ns, dtype=float)), ns])  # noqa: E731
    with pytest.raises(Exception, match="a fit needs positive lengths and times"):
        model_fit(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 2.0]), design, ("fixed", "matmul"))
    with pytest.raises(Exception, match="a fit needs two 1-D arrays of the same, non-zero length"):
        model_fit(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0]), design, ("fixed", "matmul"))


def test_tf32_rows_get_the_cost_model_fit_on_fp32_storage():
    """A tf32 sweep is priced as fp32 storage (tf32 only changes the GEMM rate): its group gets the
    cost-model fit, with the fp32 design, not the polynomial fallback."""
    spec = load_model("phi3-128k")
    rows = _rows(spec, "sdpa", "tiled").assign(dtype="tf32")
    g = fit_results(rows, target=131072).groups[0]
    assert g.model.kind == "cost model"
    np.testing.assert_array_equal(g.model.design(N), work_by_class(spec, N, family="tiled", **KW))

"""Gaps the mutation run of lcprof/explain/fit.py showed (reports/mutation/fit.md), each closed with a
hand-derived value: closed forms of the weighted least squares, of OLS on log-log axes and of the
drift back-tests written out here from the textbook / docstring formulas, times made exactly from
known rates, and the summary, table, notes and noise figure of such fits."""

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lcprof.errors import LcprofError
from lcprof.explain.fit import (DRIFT_FLOOR, decompose, drift_variance, fit_linear, fit_results, fit_table,
                                group_design, linear_time_note, local_exponents, model_fit, noise_figure,
                                power_law_fit, trend_residuals, work_by_class)
from lcprof.spec import load_model

N = 2.0 ** np.arange(8, 14)  # 256 .. 8192
PHI3 = "phi3-mini-128k"
#: fixed s, 1/matmul FLOP/s, 1/attention FLOP/s, 1/memory B/s: the rates the synthetic times are made from
TRUTH = np.array([2e-4, 1 / 400e12, 1 / 300e12, 1 / 2.5e12])
KW = dict(phase="prefill", batch=1, dtype="bf16", family="tiled", layer=0)


def _rows(model, n, t, **cols):
    base = {"model": model, "backend": "sdpa", "dtype": "bf16", "device": "cuda", "batch": 1, "status": "ok"}
    base.update(cols)
    return pd.DataFrame({**base, "n": np.asarray(n).astype(np.int64), "time_s": np.asarray(t, dtype=float)})


def _phi3_exact(target=131072):
    """phi3 layer 0's counted work at the rates TRUTH: times without noise."""
    spec = load_model(PHI3)
    t = work_by_class(spec, N, **KW) @ TRUTH
    t0 = float((work_by_class(spec, [float(target)], **KW) @ TRUTH)[0])
    att0 = float(work_by_class(spec, [float(target)], **KW)[0, 2] * TRUTH[2])
    return _rows(PHI3, N, t, executed_family="tiled"), t0, att0


def _ols(x, y):
    """Textbook OLS y = a + b x: (a, b, s, sxx)."""
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    b = float(np.sum((x - xm) * (y - ym)) / sxx)
    a = float(ym - b * xm)
    s = math.sqrt(float(np.sum((y - a - b * x) ** 2)) / (len(x) - 2))
    return a, b, s, sxx


def _poly(ns):
    ns = np.asarray(ns, dtype=np.float64)
    return np.column_stack([np.ones_like(ns), ns, ns * ns])


# ----------------------------------------------------------------------------------------------
# Intervals against their closed forms
# ----------------------------------------------------------------------------------------------

NOISY = np.array([1.03, 0.97, 1.01, 0.98, 1.04, 0.99])  # fixed multiplicative "noise" on the six lengths


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_decomposition_interval_is_the_delta_method_closed_form(level):
    """mid * exp(+-q se), se = sqrt(x0' s^2 (A'A)^-1 x0) / mid, A = x / t, q = t_{(1+level)/2, m-3}."""
    c = np.array([0.02, 1.6e-4, 1.5e-8])
    t = (_poly(N) @ c) * NOISY
    d = decompose(N, t, level)
    assert np.all(d.coefficients > 0)  # all three terms active: dof = 6 - 3
    x0 = _poly([65536.0])
    a = _poly(N) / t[:, None]
    r = (_poly(N) @ d.coefficients - t) / t
    s2 = float(np.sum(r ** 2)) / 3
    mid = float((x0 @ d.coefficients)[0])
    se = math.sqrt(float((x0 @ (s2 * np.linalg.inv(a.T @ a)) @ x0.T)[0, 0])) / mid
    q = stats.t.ppf(0.5 + level / 2, 3)
    lo, hi = d.interval(65536)
    assert lo[0] == pytest.approx(mid * math.exp(-q * se), rel=1e-6)
    assert hi[0] == pytest.approx(mid * math.exp(q * se), rel=1e-6)


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_power_law_interval_is_the_ols_closed_form(level):
    """log t0 +- q s sqrt(1/m + (x0 - xbar)^2 / Sxx) at a target, q = t_{(1+level)/2, m-2}; the
    exponent's interval b +- q s / sqrt(Sxx)."""
    t = 3e-6 * N ** 1.5 * NOISY
    f = power_law_fit(N, t, level)
    x, y = np.log(N), np.log(t)
    a, b, s, sxx = _ols(x, y)
    q = stats.t.ppf(0.5 + level / 2, len(N) - 2)
    assert f.exponent_lo == pytest.approx(b - q * s / math.sqrt(sxx), rel=1e-10)
    assert f.exponent_hi == pytest.approx(b + q * s / math.sqrt(sxx), rel=1e-10)
    x0 = math.log(131072.0)
    se = s * math.sqrt(1 / len(N) + (x0 - x.mean()) ** 2 / sxx)
    lo, hi = f.interval(np.array([131072.0]))
    assert lo[0] == pytest.approx(math.exp(a + b * x0 - q * se), rel=1e-9)
    assert hi[0] == pytest.approx(math.exp(a + b * x0 + q * se), rel=1e-9)


def test_one_degree_of_freedom_still_gives_an_interval():
    """4 lengths, 3 active terms: dof 1, q = t_{0.975, 1} = 12.706; at the largest n (no drift term)
    the half-width is q * se with se the delta-method relative error."""
    n = N[:4]
    c = np.array([0.02, 1.6e-4, 1.5e-8])
    t = (_poly(n) @ c) * np.array([1.03, 0.97, 1.02, 0.99])
    f = model_fit(n, t, _poly)
    assert f.fit.dof == 1
    a = _poly(n) / t[:, None]
    r = (_poly(n) @ f.fit.coef - t) / t
    x0 = _poly([n[-1]])
    mid = float((x0 @ f.fit.coef)[0])
    se = math.sqrt(float((x0 @ (float(np.sum(r ** 2)) * np.linalg.inv(a.T @ a)) @ x0.T)[0, 0])) / mid
    lo, hi = f.interval(n[-1])
    assert hi[0] == pytest.approx(mid * math.exp(12.706204736174705 * se), rel=1e-6)
    assert lo[0] == pytest.approx(mid * math.exp(-12.706204736174705 * se), rel=1e-6)


def test_a_two_point_power_law_has_no_interval_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = power_law_fit([128, 256], [1.0, 2.0])
    assert f.dof == 0 and f.exponent == pytest.approx(1.0)
    assert math.isnan(f.exponent_lo) and math.isnan(f.exponent_hi) and math.isnan(f.residual_std_log)


def test_relative_error_of_a_zero_prediction_is_nan_without_a_warning():
    f = fit_linear(_poly(N), _poly(N) @ np.array([0.02, 1.6e-4, 1.5e-8]) * NOISY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        se = f.rel_se(np.zeros((1, 3)))  # a design row of no work: 0 / 0
    assert np.isnan(se[0])


def test_bootstrap_with_too_few_resamples_is_nan():
    d = decompose(N, (_poly(N) @ np.array([0.02, 1.6e-4, 1.5e-8])) * NOISY)
    lo, hi = d.interval(np.array([65536.0, 131072.0]), "bootstrap", n_boot=1)  # one resample: no spread
    assert lo.shape == (2,) and np.all(np.isnan(lo)) and np.all(np.isnan(hi))


def test_fit_results_bootstrap_is_reproducible_from_its_seed():
    c = np.array([0.02, 1.6e-4, 1.5e-8])
    df = _rows("not-a-model", N, (_poly(N) @ c) * NOISY)
    a = fit_results(df, interval="bootstrap", n_boot=40, seed=7).groups[0]
    b = fit_results(df, interval="bootstrap", n_boot=40, seed=7).groups[0]
    lo, hi = a.model.interval(131072, "bootstrap", n_boot=40, seed=7)
    assert a.extrapolation["target_time_lo_s"] == b.extrapolation["target_time_lo_s"] == lo[0]
    assert a.extrapolation["target_time_hi_s"] == b.extrapolation["target_time_hi_s"] == hi[0]


def _drift_by_hand(n, t):
    """The docstring's back-tests for one rate (design [n]), written out: from the rows up to each
    L_j (at least 3 lengths), c = S1 / S2 with S1 = sum(n/t), S2 = sum((n/t)^2) (weighted least
    squares, one column), s^2 = sum(r^2) / (rows - 1), Var(c) = s^2 / S2; for each longer L_k,
    e = log(median t at L_k / (c L_k)), v = L_k^2 Var(c) / (c L_k)^2 + s^2 / (rows at L_k);
    tau^2 = max(0, sum(e^2 - v)) / sum(log^2(L_k / L_j))."""
    lengths = np.unique(n)
    num = den = 0.0
    used = 0
    for j in range(2, len(lengths) - 1):
        sel = n <= lengths[j]
        w = n[sel] / t[sel]
        c = w.sum() / (w ** 2).sum()
        s2 = float(np.sum((c * w - 1) ** 2)) / (sel.sum() - 1)
        var_c = s2 / (w ** 2).sum()
        for k in range(j + 1, len(lengths)):
            at = n == lengths[k]
            pred = c * lengths[k]
            e = math.log(float(np.median(t[at])) / pred)
            v = lengths[k] ** 2 * var_c / pred ** 2 + s2 / at.sum()
            num += e * e - v
            den += math.log(lengths[k] / lengths[j]) ** 2
            used += 1
    return max(0.0, num) / den, used


def _one_rate(ns):
    return np.asarray(ns, dtype=float)[:, None]


def test_drift_variance_is_the_method_of_moments_over_back_tests():
    """One rate fitted to t = n^2: every back-test from the lengths up to L_j misses each longer L_k."""
    n = np.array([1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
    tau2, tests = drift_variance(n, n ** 2, _one_rate)
    want, used = _drift_by_hand(n, n ** 2)
    assert tests == used == 6
    assert tau2 == pytest.approx(want, rel=1e-9) and tau2 > 0
    # two rows per length (5% apart): the noise term divides s^2 by the rows at L_k
    n2 = np.repeat(n, 2)
    t2 = n2 ** 2 * np.tile([0.95, 1.05], len(n))
    tau2, tests = drift_variance(n2, t2, _one_rate)
    want, used = _drift_by_hand(n2, t2)
    assert tests == used == 6
    assert tau2 == pytest.approx(want, rel=1e-9) and tau2 > 0


def test_bootstrap_interval_is_the_residual_bootstrap_written_out():
    """One rate fitted to noisy t = 1e-6 n: the bootstrap of the docstring written out (log residuals
    centred and inflated by sqrt(m / dof), resampled onto the fitted curve with the seeded generator,
    the rate refitted in closed form); at the largest n (no drift term) the interval is
    mid * exp(+-q * sd(log predictions)). The default seed is 0."""
    n = N
    t = 1e-6 * n * NOISY
    f = model_fit(n, t, _one_rate)
    w = n / t
    c = w.sum() / (w ** 2).sum()
    fitted = c * n
    res = np.log(t / fitted)
    res = (res - res.mean()) * math.sqrt(len(n) / (len(n) - 1))
    rng = np.random.default_rng(0)
    logs = []
    for _ in range(200):
        wb = n / (fitted * np.exp(rng.choice(res, size=len(n), replace=True)))
        logs.append(math.log(wb.sum() / (wb ** 2).sum() * n[-1]))
    half = stats.t.ppf(0.975, len(n) - 1) * np.std(logs, ddof=1)
    lo, hi = f.interval(n[-1], "bootstrap", n_boot=200)
    assert lo[0] == pytest.approx(c * n[-1] * math.exp(-half), rel=1e-9)
    assert hi[0] == pytest.approx(c * n[-1] * math.exp(half), rel=1e-9)


def test_decomposition_bootstrap_is_reproducible_from_its_seed():
    d = decompose(N, (_poly(N) @ np.array([0.02, 1.6e-4, 1.5e-8])) * NOISY)
    a = d.interval(131072, "bootstrap", n_boot=30, seed=5)
    b = d.interval(131072, "bootstrap", n_boot=30, seed=5)
    assert a[0][0] == b[0][0] and a[1][0] == b[1][0]
    assert d.interval(131072, "bootstrap", n_boot=30, seed=6)[0][0] != a[0][0]


def test_without_degrees_of_freedom_the_intervals_are_nan_one_per_target():
    """3 lengths, 3 active terms: an exact fit with no dof; every interval is nan, shaped as the targets."""
    n = N[:3]
    t = _poly(n) @ np.array([0.02, 1.6e-4, 1.5e-8])
    targets = np.array([1e4, 1e5])
    d = decompose(n, t)
    f = model_fit(n, t, _poly)
    assert d.dof == 0 and f.fit.dof == 0
    for lo, hi in (d.interval(targets), f.interval(targets), f.interval(targets, "bootstrap", n_boot=20)):
        assert lo.shape == hi.shape == (2,) and np.all(np.isnan(lo)) and np.all(np.isnan(hi))


def test_a_model_that_counts_no_work_has_a_nan_bootstrap_interval_per_target():
    """A design of zeros (no work at any n): nothing to fit, fitted times 0; the bootstrap gives up
    with one nan per target (two targets here, three design columns)."""
    f = model_fit(N, np.ones(len(N)), lambda ns: np.zeros((len(np.atleast_1d(ns)), 3)))
    assert np.all(f.fit.coef == 0)
    lo, hi = f.interval(np.array([1e4, 1e5]), "bootstrap", n_boot=20)
    assert lo.shape == hi.shape == (2,) and np.all(np.isnan(lo)) and np.all(np.isnan(hi))


# ----------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------

def test_a_length_of_one_token_is_a_valid_length():
    n = np.array([1.0, 2.0, 4.0, 8.0])
    c = np.array([0.5, 0.25, 0.125])
    d = decompose(n, _poly(n) @ c)
    np.testing.assert_allclose(d.coefficients, c, rtol=1e-8)
    f = model_fit(n, _poly(n) @ c, _poly)
    np.testing.assert_allclose(f.predict(n), _poly(n) @ c, rtol=1e-8)


@pytest.mark.parametrize("bad_n", [0.0, -1.0])
def test_non_positive_lengths_are_refused_with_the_reason(bad_n):
    n = np.array([bad_n, 2.0, 4.0, 8.0])
    with pytest.raises(LcprofError, match="decompose needs positive lengths and times"):
        decompose(n, np.ones(4))
    with pytest.raises(LcprofError, match="a fit needs positive lengths and times"):
        model_fit(n, np.ones(4), _poly)


def test_one_distinct_length_is_no_power_law():
    with pytest.raises(LcprofError, match="a power law needs at least two distinct lengths"):
        power_law_fit([512, 512, 512], [1.0, 1.1, 0.9])


@pytest.mark.parametrize("n,t", [([128, 256, 512], [1.0, 0.0, 2.0]), ([128, 256, 512], [1.0, -1.0, 2.0]),
                                 ([0, 256, 512], [1.0, 1.5, 2.0])])
def test_power_law_refuses_non_positive_lengths_and_times(n, t):
    with pytest.raises(LcprofError, match="power_law_fit needs positive lengths and times"):
        power_law_fit(n, t)


def test_power_law_refuses_arrays_of_different_lengths():
    with pytest.raises(LcprofError, match="power_law_fit needs two 1-D arrays of the same length"):
        power_law_fit([128, 256], [1.0, 2.0, 3.0])


# ----------------------------------------------------------------------------------------------
# Local exponents
# ----------------------------------------------------------------------------------------------

def test_local_exponents_at_lengths_past_2_to_the_32():
    """n up to 2**53 is a valid results key; n_mid = sqrt(2^32 * 2^33) = 2^32.5 (no integer overflow)."""
    loc = local_exponents([2 ** 32, 2 ** 33], [1.0, 4.0])
    assert loc["n_mid"].iloc[0] == pytest.approx(2.0 ** 32.5, rel=1e-12)
    assert loc["local_exponent"].iloc[0] == pytest.approx(2.0)


# ----------------------------------------------------------------------------------------------
# The cost-model design and notes of a group
# ----------------------------------------------------------------------------------------------

def test_work_by_class_counts_each_sequence_of_a_batch():
    """Prefill of 2 sequences is twice the FLOPs of one (each sequence attends only to itself)."""
    spec = load_model(PHI3)
    one = work_by_class(spec, N, **KW)
    kw2 = dict(KW, batch=2)
    two = work_by_class(spec, N, **kw2)
    np.testing.assert_allclose(two[:, 1:3], 2 * one[:, 1:3], rtol=1e-12)
    np.testing.assert_array_equal(two[:, 0], 1.0)


def test_group_design_follows_the_key():
    spec = load_model(PHI3)
    rows = _rows(PHI3, N, np.ones(len(N)), executed_family="tiled")
    key = {"model": PHI3, "dtype": "bf16", "phase": "prefill", "batch": 2, "layer": 0, "mla_form": "",
           "elementwise": "fused"}
    design, why = group_design(key, rows)
    assert why == ""
    np.testing.assert_array_equal(design(N), work_by_class(spec, N, **dict(KW, batch=2), elementwise="fused"))
    # a key that names only the model and dtype takes the results-file defaults (batch 1, prefill,
    # layer 0, unfused elementwise ops)
    design, why = group_design({"model": PHI3, "dtype": "bf16"}, rows)
    np.testing.assert_array_equal(design(N), work_by_class(spec, N, **KW, elementwise="unfused"))
    assert not np.array_equal(work_by_class(spec, N, **KW, elementwise="unfused"),
                              work_by_class(spec, N, **KW, elementwise="fused"))


def test_group_design_passes_the_mla_form():
    spec = load_model("deepseek-v2-lite")
    rows = _rows("deepseek-v2-lite", N, np.ones(len(N)), executed_family="tiled")
    key = {"model": "deepseek-v2-lite", "dtype": "bf16", "phase": "prefill", "batch": 1, "layer": 0,
           "mla_form": "absorbed", "elementwise": "unfused"}
    design, _ = group_design(key, rows)
    absorbed = work_by_class(spec, N, **KW, mla_form="absorbed")
    naive = work_by_class(spec, N, **KW, mla_form="naive")
    assert not np.allclose(absorbed[:, 2], naive[:, 2])
    np.testing.assert_array_equal(design(N), absorbed)


def test_mixed_executed_families_get_no_cost_model_fit():
    rows = _rows(PHI3, N, np.ones(len(N)), executed_family=["eager", "tiled"] * 3)
    design, why = group_design({"model": PHI3, "dtype": "bf16"}, rows)
    assert design is None
    assert why == "no cost-model fit: the rows' executed attention family is unknown or mixed"


def test_an_unknown_backend_is_fitted_by_the_cost_model_only_where_there_is_no_attention():
    """nemotron-h-56b: layer 0 is Mamba-2, layer 7 attention. With a backend lcprof does not know,
    the attention family is unknown: the Mamba layer does not care (cost-model fit), the attention
    layer falls back to the polynomial."""
    t = 1e-3 * N
    mamba = fit_results(_rows("nemotron-h-56b", N, t, backend="mystery", layer=0), target=None).groups[0]
    attn = fit_results(_rows("nemotron-h-56b", N, t, backend="mystery", layer=7), target=None).groups[0]
    assert mamba.model.kind == "cost model"
    assert attn.model.kind == "polynomial"
    assert any("executed attention family is unknown or mixed" in nt for nt in attn.notes)


def test_notes_of_layers_without_attention():
    spec = load_model("nemotron-h-56b")
    assert spec.layers[0].kind == "mamba2" and spec.layers[1].kind == "mlp" and spec.layers[7].has_attention
    assert linear_time_note(spec, 0) == ("layer 0 is mamba2 (a linear-time mixer, no attention): linear-time "
                                         "layer, expect an exponent near 1 (no n² term)")
    assert linear_time_note(spec, 0, "decode") == ("layer 0 is mamba2 (a linear-time mixer, no attention): a "
                                                   "decode step reads a state of constant size, expect an "
                                                   "exponent near 0")
    assert linear_time_note(spec, 1) == "layer 1 is MLP-only: linear-time layer, expect an exponent near 1 (no n² term)"
    assert linear_time_note(spec, 1, "decode").startswith("layer 1 is MLP-only: a decode step reads")
    assert linear_time_note(spec, 7) == "" and linear_time_note(spec, spec.n_layers) == ""
    # and the table says why
    tab = fit_table(fit_results(_rows("nemotron-h-56b", N, 1e-3 * N, layer=1), target=None))
    assert tab["why"].iloc[0] == "layer 1 is MLP-only: linear-time layer, expect an exponent near 1 (no n² term)"


# ----------------------------------------------------------------------------------------------
# Whole results: summary, points, table, the far-target note
# ----------------------------------------------------------------------------------------------

def test_exact_cost_model_times_summary_and_table():
    """Times made exactly from phi3's counted work at known rates: the attention rate comes back, the
    extrapolation to 131072 is the true time, its interval is the drift floor's closed form
    t0 exp(+-z tau ln 16) (no noise, no back-test drift), and the table shows them in its units."""
    df, t0, att0 = _phi3_exact()
    res = fit_results(df, min_n=256, max_n=8192, target=131072)
    assert res.min_n == 256 and res.max_n == 8192 and res.target_n == 131072
    g = res.groups[0]
    s = g.summary()
    assert s["fit"] == "cost model"
    assert s["fixed_s"] == pytest.approx(2e-4, rel=1e-3)
    assert s["attention_flops_per_s"] == pytest.approx(300e12, rel=1e-3)
    assert s["rms_rel_residual"] == pytest.approx(0.0, abs=1e-9)
    assert s["target_time_s"] == pytest.approx(t0, rel=1e-6)
    assert s["target_quadratic_share"] == pytest.approx(att0 / t0, rel=1e-4)
    half = stats.norm.ppf(0.975) * DRIFT_FLOOR * math.log(16.0)
    assert s["target_time_lo_s"] == pytest.approx(t0 * math.exp(-half), rel=1e-5)
    assert s["target_time_hi_s"] == pytest.approx(t0 * math.exp(half), rel=1e-5)
    # the power law beside it: OLS of log t on log n, extrapolated
    a, b, sd, sxx = _ols(np.log(N), np.log(df["time_s"].to_numpy()))
    assert s["exponent"] == pytest.approx(b, rel=1e-10)
    assert s["powerlaw_target_time_s"] == pytest.approx(math.exp(a + b * math.log(131072)), rel=1e-9)
    assert s["powerlaw_rms_log_residual"] == pytest.approx(sd * math.sqrt((len(N) - 2) / len(N)), rel=1e-9)
    pts = g.points
    pl_pred = np.exp(a + b * np.log(N))
    np.testing.assert_allclose(pts["powerlaw_residual_rel"], df["time_s"].to_numpy() / pl_pred - 1, rtol=1e-9)
    np.testing.assert_allclose(pts["residual_rel"], 0.0, atol=1e-9)

    tab = fit_table(res)
    assert list(tab.columns) == ["group", "n_range", "fit", "exponent", "exponent_95", "fixed_s",
                                 "matmul_tflops_per_s", "attention_tflops_per_s", "memory_gb_per_s",
                                 "rms_rel_residual", "time_s_at_131072", "time_95_s",
                                 "attention_share_at_target", "excluded_rows"]
    row = tab.iloc[0]
    assert row["n_range"] == "256..8192"
    assert row["attention_tflops_per_s"] == pytest.approx(300.0, rel=1e-3)
    assert row["time_s_at_131072"] == pytest.approx(t0, rel=1e-6)
    assert row["attention_share_at_target"] == pytest.approx(att0 / t0, rel=1e-4)
    lo, hi = map(float, re.fullmatch(r"\[(.*), (.*)\]", row["time_95_s"]).groups())
    assert lo == pytest.approx(t0 * math.exp(-half), rel=1e-3) and hi == pytest.approx(t0 * math.exp(half), rel=1e-3)
    q = stats.t.ppf(0.975, len(N) - 2)
    assert row["exponent_95"] == f"[{b - q * sd / math.sqrt(sxx):.3f}, {b + q * sd / math.sqrt(sxx):.3f}]"


def test_polynomial_coefficients_in_the_summary():
    c = (0.02, 1.6e-3, 1.5e-7)
    n = N
    df = _rows("not-a-model", n, c[0] + c[1] * n + c[2] * n ** 2)
    s = fit_results(df, target=None).groups[0].summary()
    assert s["fit"] == "polynomial"
    assert s["c0_s"] == pytest.approx(c[0], rel=1e-7)
    assert s["c1_s_per_token"] == pytest.approx(c[1], rel=1e-7)
    assert s["n_star"] == pytest.approx(c[1] / c[2], rel=1e-6)
    assert s["rms_rel_residual"] == pytest.approx(0.0, abs=1e-9)


def test_a_group_without_fits_reports_nan_and_an_empty_range():
    """One length: no power law, no model (every fitted figure nan, not None); a fit range that
    leaves out every length: no n range."""
    s = fit_results(_rows("m", [512], [1.0]), target=None).groups[0].summary()
    for k in ("exponent", "exponent_lo", "fixed_s", "attention_flops_per_s", "c0_s", "rms_rel_residual",
              "powerlaw_rms_log_residual", "quadratic_share_at_n_max"):
        assert isinstance(s[k], float) and math.isnan(s[k]), k
    tab = fit_table(fit_results(_rows("m", N, 1e-3 * N), min_n=100000, target=None))
    assert tab["n_range"].iloc[0] == ""


def test_the_far_target_note_starts_past_four_times_the_largest_fitted_n():
    df = _rows("not-a-model", N, (_poly(N) @ np.array([0.02, 1.6e-4, 1.5e-8])) * NOISY)

    def far(target):
        return [nt for nt in fit_results(df, target=target).groups[0].notes if nt.startswith("target is")]

    assert far(4 * 8192) == []
    assert far(4 * 8192 + 1) and far(4 * 8192 + 1)[0].startswith("target is 4x the largest fitted n")
    assert far(131072)[0].startswith("target is 16x the largest fitted n")


# ----------------------------------------------------------------------------------------------
# Trend residuals and the noise figure
# ----------------------------------------------------------------------------------------------

def test_trend_residuals_of_exact_cost_model_times_are_zero():
    df, _, _ = _phi3_exact()
    r = trend_residuals(df)
    assert r.shape == (len(N),)
    np.testing.assert_allclose(r, 0.0, atol=1e-9)
    # a time 10% off in a sweep of ten lengths pulls the fit only a little: its residual stays near +10%
    n10 = 2.0 ** np.arange(8, 18)
    t10 = work_by_class(load_model(PHI3), n10, **KW) @ TRUTH
    t10[4] *= 1.10
    r10 = trend_residuals(_rows(PHI3, n10, t10, executed_family="tiled"))
    assert 0.05 < r10[4] < 0.11 and np.all(np.abs(np.delete(r10, 4)) < 0.05)
    assert trend_residuals(df.iloc[:3]) is None  # fewer than 4 lengths
    assert trend_residuals(df.assign(model="not-a-model")) is None


def test_noise_figure_of_a_sweep():
    """Spreads (p90 - p10) / median of 0.1, 0.2, 0.3 (median 0.2); other processes took 10%, 30%, 50%
    of the CPUs (median 30%); exact cost-model times (trend rms 0)."""
    df = _phi3_exact()[0]
    t = df["time_s"].to_numpy()
    spread = np.array([0.1, 0.2, 0.3, 0.2, 0.2, 0.2])
    df["time_p10_s"] = t * (1 - spread / 2)
    df["time_p90_s"] = t * (1 + spread / 2)
    df["other_cpu_frac"] = [0.1, 0.3, 0.5, 0.3, 0.3, 0.3]
    out = noise_figure(df)
    assert out["points"] == 6
    assert out["spread_median"] == pytest.approx(0.2, rel=1e-9)
    assert out["other_cpu_frac_median"] == pytest.approx(0.3, rel=1e-12)
    assert out["trend_rms"] == pytest.approx(0.0, abs=1e-9)
    assert out["text"] == ("6 ok points; within-point spread (p90-p10)/median 20.0% (median); rms residual "
                           "against the cost-model fits 0.0%; other processes took 30% of the CPUs (median)")
    # a file without those columns says only what it can
    bare = noise_figure(df.drop(columns=["time_p10_s", "time_p90_s", "other_cpu_frac"]))
    assert math.isnan(bare["spread_median"]) and math.isnan(bare["other_cpu_frac_median"])
    assert bare["text"] == "6 ok points; rms residual against the cost-model fits 0.0%"

"""The cost-model fit: rates from the work lcprof.cost counts, intervals in log space that cover at
their stated rate (checked two-sided against the closed form), drift beyond the measured range, and
the committed H100 sweep extrapolated from n <= 32768 to the measured 131072."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lcprof.explain.fit import (CLASSES, DRIFT_FLOOR, fit_linear, fit_results, model_fit, work_by_class)
from lcprof.spec import load_model

REPO = Path(__file__).resolve().parents[2]
H100 = REPO / "reports" / "h100-measure" / "phi3-128k-h100.csv"
N = 2.0 ** np.arange(8, 14)  # 256 .. 8192


def _design(ns):
    # a closed-form case: [1, n, n^2] as the "work" of three classes
    ns = np.asarray(ns, dtype=np.float64)
    return np.column_stack([np.ones_like(ns), ns, ns * ns])


def test_rates_are_recovered_from_the_work_the_cost_model_counts():
    """Times made from phi3 layer 0's counted work at known rates give those rates back exactly."""
    spec = load_model("phi3-128k")
    kw = dict(phase="prefill", batch=1, dtype="bf16", family="tiled", layer=0)
    x = work_by_class(spec, N, **kw)
    truth = np.array([2e-4, 1 / 400e12, 1 / 300e12, 1 / 2.5e12])  # fixed s, 1/matmul, 1/attention, 1/bytes
    t = x @ truth
    f = model_fit(N, t, lambda ns: work_by_class(spec, ns, **kw))
    np.testing.assert_allclose(f.predict(N), t, rtol=1e-6)
    assert f.rate("attention") == pytest.approx(300e12, rel=1e-3)
    # matmul FLOPs and elementwise bytes both grow as n: only their sum is identifiable, and it is kept
    per_token = lambda r_mm, r_mem: x[-1, 1] / r_mm + x[-1, 3] / r_mem  # noqa: E731
    got = x[-1, 1] * f.fit.coef[1] + x[-1, 3] * f.fit.coef[3]
    assert got == pytest.approx(per_token(400e12, 2.5e12), rel=1e-4)
    # the classes are what the cost model counts: attention = QK^T + PV executed FLOPs
    from lcprof.cost.model import cost

    c = cost(spec, N, dtype="bf16", family="tiled", layer=0)
    np.testing.assert_allclose(x[:, CLASSES.index("attention")], c.flops["attn/qk"] + c.flops["attn/pv"])
    np.testing.assert_allclose(x[:, 1] + x[:, 2], c.flops["total"])


def test_in_range_interval_covers_at_95_percent_two_sided_and_has_the_closed_form_width():
    """t = (x c) * (1 + 3% normal noise). At the largest measured n (no extrapolation term) the 95%
    interval must cover the true mean in 92..98% of 400 seeds, and its median log half-width must be
    the closed form q * sigma * sqrt(x0' (A'A)^-1 x0) / mu0 (A = x / mu) within 15%: an interval that
    is too narrow, too wide, or scaled wrongly (the covariance unscaling inverted) fails."""
    c = np.array([0.02, 1.6e-4, 1.5e-8])
    sigma = 0.03
    x = _design(N)
    mu = x @ c
    x0 = _design([N[-1]])
    mu0 = float((x0 @ c)[0])
    a = x / mu[:, None]
    closed = stats.t.ppf(0.975, len(N) - 3) * sigma * math.sqrt(float((x0 @ np.linalg.inv(a.T @ a) @ x0.T)[0, 0])) / mu0
    covered, halves = 0, []
    for seed in range(400):
        rng = np.random.default_rng(seed)
        t = mu * (1.0 + rng.normal(0.0, sigma, len(N)))
        f = model_fit(N, t, _design)
        lo, hi = f.interval(N[-1])
        assert 0 < lo[0] < hi[0]
        covered += lo[0] <= mu0 <= hi[0]
        halves.append(math.log(hi[0] / lo[0]) / 2)
    assert 0.92 <= covered / 400 <= 0.98
    assert np.median(halves) == pytest.approx(closed, rel=0.15)


def test_beyond_the_range_the_drift_is_added_in_log_space():
    """Noise-free data: the interval at 4x the largest n is exactly t0 * exp(+-z * tau * ln 4),
    tau = DRIFT_FLOOR = 0.07 / ln 2 (7% per doubling); inside the range it is a point."""
    c = np.array([0.02, 1.6e-4, 1.5e-8])
    n = np.concatenate([N, N])  # repeated lengths keep dof > 0
    t = _design(n) @ c
    f = model_fit(n, t, _design)
    assert f.drift_per_log_n == pytest.approx(0.07 / math.log(2.0), rel=1e-12) == DRIFT_FLOOR
    target = 4 * N[-1]
    t0 = float((_design([target]) @ c)[0])
    lo, hi = f.interval(target)
    half = 1.959963984540054 * 0.1009886 * math.log(4.0)  # z_0.975 * (0.07 / ln 2) * ln 4
    assert lo[0] == pytest.approx(t0 * math.exp(-half), rel=1e-5)
    assert hi[0] == pytest.approx(t0 * math.exp(half), rel=1e-5)
    lo_in, hi_in = f.interval(N[-1])
    assert hi_in[0] / lo_in[0] == pytest.approx(1.0, abs=1e-6)


def test_back_tests_widen_the_interval_when_the_rate_drifts():
    """A rate that keeps rising with n (t = n^1.6 fitted by [1, n, n^2]) misses its own longer
    lengths; the drift from back-tests exceeds the floor."""
    n = 2.0 ** np.arange(7, 14)
    t = 1e-6 * n ** 1.6
    f = model_fit(n, t, _design)
    assert f.drift_tests >= 3
    assert f.drift_per_log_n > DRIFT_FLOOR


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-4, 10.0), min_size=5, max_size=5), st.sampled_from(["delta", "bootstrap"]))
def test_interval_never_contains_a_non_positive_time(times, method):
    n = np.array([128.0, 256, 512, 1024, 2048])
    f = model_fit(n, np.asarray(times), _design)
    lo, hi = f.interval(np.array([4096.0, 131072.0]), method, n_boot=50)
    pred = f.predict(np.array([4096.0, 131072.0]))
    ok = np.isfinite(lo)
    assert np.all(lo[ok] > 0) and np.all(lo[ok] <= pred[ok]) and np.all(pred[ok] <= hi[ok])


def test_covariance_is_unscaled_from_the_conditioned_columns():
    """Cov(c) = s^2 (A'A)^-1 in the coefficients' own units, whatever the column scaling."""
    rng = np.random.default_rng(3)
    c = np.array([0.02, 1.6e-4, 1.5e-8])
    x = _design(N)
    t = (x @ c) * (1 + rng.normal(0, 0.02, len(N)))
    f = fit_linear(x, t)
    a = x / t[:, None]
    expect = f.s2 * np.linalg.inv(a.T @ a)
    np.testing.assert_allclose(f.cov, expect, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# The committed H100 sweep
# ----------------------------------------------------------------------------------------------

def test_h100_fit_to_32k_brackets_each_measured_131072_time():
    """Fit n = 2048..32768 of reports/h100-measure/phi3-128k-h100.csv, extrapolate to 131072.

    Every backend measured at 131072 lies inside its 95% interval. SDPA-flash (-8%) and SDPA
    memory-efficient fp32 (-2%) are within 10%. Two are not, and cannot be from n <= 32768 with
    rates that hold over n: SDPA-cuDNN's attention rate is flat at 506-508 TFLOP/s from 8k to 32k
    and falls to 486 at 64k and 410 at 128k (one head's K and V, 512 B per token, outgrow the H100's
    50 MB L2 past 64k), so the fit is 15% low; our striped-ring kernel's rate is still rising at
    32k (blocks of n/4 tokens), so it is 42% high -- its back-tests see that and widen its interval.
    """
    res = fit_results(H100, min_n=2048, max_n=32768, target=131072)
    s = res.summary.set_index("backend")
    df = pd.read_csv(H100)
    meas = df[(df["n"] == 131072) & (df["status"] == "ok")].set_index("backend")["time_s"]
    assert set(meas.index) == {"sdpa-efficient", "sdpa-flash", "sdpa-cudnn", "striped-ring"}
    err = {}
    for backend, m in meas.items():
        row = s.loc[backend]
        assert row["fit"] == "cost model"
        assert row["target_time_lo_s"] <= m <= row["target_time_hi_s"], backend
        assert row["target_time_lo_s"] > 0
        err[backend] = row["target_time_s"] / m - 1
    assert abs(err["sdpa-flash"]) < 0.10 and abs(err["sdpa-efficient"]) < 0.10
    assert err["sdpa-cudnn"] == pytest.approx(-0.154, abs=0.01)
    assert err["striped-ring"] == pytest.approx(0.423, abs=0.02)
    # the fitted rates are the kernels' own: flash ~353 and cuDNN ~511 TFLOP/s of attention
    assert s.loc["sdpa-flash", "attention_flops_per_s"] == pytest.approx(353e12, rel=0.03)
    assert s.loc["sdpa-cudnn", "attention_flops_per_s"] == pytest.approx(511e12, rel=0.03)


def test_interval_of_wildly_noisy_times_stays_positive_and_finite():
    # the falsifying example hypothesis found: noise so large that exp(-half) underflowed to 0
    n = np.array([128.0, 256, 512, 1024, 2048])
    f = model_fit(n, np.array([1.0, 3.0, 0.03125, 0.03125, 4.0]), _design)
    for method in ("delta", "bootstrap"):
        lo, hi = f.interval(np.array([4096.0, 131072.0]), method, n_boot=50)
        pred = f.predict(np.array([4096.0, 131072.0]))
        ok = np.isfinite(lo)
        assert np.all(lo[ok] > 0) and np.all(lo[ok] <= pred[ok]) and np.all(np.isfinite(hi[ok]))
        # capped at a factor 1e300 either way
        assert np.all(hi[ok] / pred[ok] <= 1.0000001e300)

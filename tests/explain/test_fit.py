"""Scaling fits recover known exponents and coefficients; intervals cover at their stated rate."""

import json

import numpy as np
import pandas as pd
import pytest

from lcprof.errors import LcprofError
from lcprof.explain.fit import decompose, fit_results, group_label, local_exponents, power_law_fit, read_results

N = 2.0 ** np.arange(7, 13)  # 128 .. 4096


def test_power_law_interval_covers_true_exponent_at_about_95_percent():
    """t = 3 n^1.5 with 5% log-normal noise, 200 seeds: the 95% interval covers 1.5 in >= 90% of them."""
    covered = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        t = 3.0 * N ** 1.5 * np.exp(rng.normal(0.0, 0.05, N.size))
        f = power_law_fit(N, t)
        assert f.exponent_lo < f.exponent < f.exponent_hi
        covered += f.exponent_lo <= 1.5 <= f.exponent_hi
    assert covered / 200 >= 0.90


@pytest.mark.parametrize("b", [1.0, 1.37, 2.0])
def test_power_law_noiseless_is_exact(b):
    f = power_law_fit(N, 0.5 * N ** b)
    assert f.exponent == pytest.approx(b, abs=1e-12)
    assert f.prefactor_s == pytest.approx(0.5, rel=1e-10)
    assert f.exponent_hi - f.exponent_lo == pytest.approx(0.0, abs=1e-9)


def test_local_exponents_between_consecutive_lengths():
    t = 1e-3 * N + 1e-7 * N ** 2
    loc = local_exponents(N, t)
    assert list(loc["n_lo"]) == list(N[:-1].astype(int)) and list(loc["n_hi"]) == list(N[1:].astype(int))
    expected = np.log(t[1:] / t[:-1]) / np.log(2.0)
    np.testing.assert_allclose(loc["local_exponent"], expected, rtol=1e-12)
    assert np.all(np.diff(loc["local_exponent"]) > 0)  # the quadratic term takes over
    pure = local_exponents(N, 7.0 * N ** 2)
    np.testing.assert_allclose(pure["local_exponent"], 2.0, rtol=1e-12)


def test_local_exponents_use_the_median_of_repeated_lengths():
    n = np.array([100, 100, 100, 200, 200, 200])
    t = np.array([1.0, 1.1, 50.0, 4.0, 4.4, 0.01])  # outliers on both sides
    loc = local_exponents(n, t)
    assert loc["local_exponent"].iloc[0] == pytest.approx(np.log(4.0 / 1.1) / np.log(2.0))


@pytest.mark.parametrize("c", [(0.02, 1.6e-3, 1.5e-7), (0.0, 2e-6, 5.5e-11), (1e-3, 0.0, 3e-9), (5e-2, 1e-4, 0.0)])
def test_decomposition_noiseless_recovers_coefficients(c):
    n = np.array([128, 256, 512, 1024, 2048, 4096, 8192], dtype=float)
    t = c[0] + c[1] * n + c[2] * n ** 2
    d = decompose(n, t)
    np.testing.assert_allclose(d.coefficients, c, rtol=1e-7, atol=1e-12 * max(c))
    assert d.rms_rel_residual < 1e-9
    if c[2] == 0:
        assert d.n_star is None
    else:
        assert d.n_star == pytest.approx(c[1] / c[2], rel=1e-6, abs=1e-6)
    share = d.shares(n)["quadratic_share"]
    np.testing.assert_allclose(share, c[2] * n ** 2 / t, rtol=1e-7, atol=1e-12)


def test_decomposition_with_noise_and_its_extrapolation_interval():
    """2% noise: coefficients within tolerance; the delta-method 95% interval at 131072 covers the truth
    in >= 90% of 100 seeds (it is exact for the unconstrained weighted fit)."""
    c = np.array([0.02, 1.6e-3, 1.5e-7])
    target = 131072
    truth = c[0] + c[1] * target + c[2] * target ** 2
    covered = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        t = (c[0] + c[1] * N + c[2] * N ** 2) * np.exp(rng.normal(0.0, 0.02, N.size))
        d = decompose(N, t)
        assert np.all(d.coefficients >= 0)
        lo, hi = d.interval(target, "delta")
        covered += lo[0] <= truth <= hi[0]
        if seed == 0:
            assert d.c1_s_per_token == pytest.approx(c[1], rel=0.05)
            assert d.c2_s_per_token2 == pytest.approx(c[2], rel=0.25)
            blo, bhi = d.interval(target, "bootstrap", n_boot=200, seed=1)
            assert blo[0] < d.predict(target)[0] < bhi[0]
    assert covered / 100 >= 0.90


def _synthetic_rows(seed=0, backends=("eager", "sdpa")):
    rng = np.random.default_rng(seed)
    rows = []
    for backend, c2 in zip(backends, (1.5e-7, 7e-8)):
        for n in (128, 256, 512, 1024, 2048):
            t = (0.01 + 1.5e-3 * n + c2 * n * n) * np.exp(rng.normal(0, 0.01))
            rows.append({"model": "phi3-mini-128k", "backend": backend, "dtype": "fp32", "device": "cpu",
                         "batch": 1, "n": n, "time_s": t, "status": "ok"})
        rows.append({"model": "phi3-mini-128k", "backend": backend, "dtype": "fp32", "device": "cpu", "batch": 1,
                     "n": 65536, "time_s": float("nan"), "status": "oom"})
    return rows


def test_fit_results_groups_counts_excluded_and_extrapolates(write_results):
    path = write_results(_synthetic_rows())
    res = fit_results(path, target="128k")
    assert res.excluded_rows == 2 and res.excluded_by_status == {"oom": 2}
    s = res.summary.set_index("backend")
    assert set(s.index) == {"eager", "sdpa"}
    assert (s["excluded_rows"] == 1).all()
    assert (s["target_n"] == 131072).all()
    assert (s["target_time_lo_s"] < s["target_time_s"]).all() and (s["target_time_s"] < s["target_time_hi_s"]).all()
    assert s.loc["eager", "c2_s_per_token2"] > s.loc["sdpa", "c2_s_per_token2"]
    pts = res.points
    assert len(pts) == 10 and pts["residual_rel"].abs().max() < 0.05
    assert set(pts.columns) >= {"local_exponent", "fitted_time_s", "residual_rel", "quadratic_share", "in_fit"}


def test_fit_range_limits_the_fit_but_not_the_points(write_results):
    path = write_results(_synthetic_rows())
    res = fit_results(path, min_n="256", max_n="1k", target=None)
    s = res.summary
    assert (s["n_min"] == 256).all() and (s["n_max"] == 1024).all() and (s["n_lengths"] == 3).all()
    assert len(res.points) == 10 and res.points["in_fit"].sum() == 6
    assert "target_time_s" not in s.columns


def test_eight_column_file_is_accepted(data_dir):
    df = pd.read_csv(data_dir / "eight-columns.csv")
    assert list(df.columns) == ["model", "backend", "dtype", "device", "batch", "n", "time_s", "status"]
    res = fit_results(data_dir / "eight-columns.csv")
    assert len(res.groups) == 1 and res.excluded_rows == 0
    g = res.groups[0]
    assert g.key["phase"] == "prefill" and g.key["layer"] == 0
    assert 1.0 < g.power_law.exponent < 2.0


def test_jsonl_is_accepted(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _synthetic_rows()) + "\n")
    assert len(read_results(path)) == 12
    assert len(fit_results(path).groups) == 2


def test_missing_columns_are_named(write_results):
    path = write_results([{"model": "x", "n": 1, "time_s": 1.0}])
    with pytest.raises(LcprofError, match="backend, dtype, device, batch, status"):
        read_results(path)


def test_no_ok_rows_is_an_error(write_results):
    rows = [dict(r, status="oom") for r in _synthetic_rows()]
    with pytest.raises(LcprofError, match="no rows with status ok"):
        fit_results(write_results(rows))


def test_fit_cli_json_and_points(cli, data_dir):
    r = cli("fit", data_dir / "phi3-cpu-small.csv", "--min-n", "256", "--format", "json")
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    assert {rec["backend"] for rec in recs} == {"eager", "sdpa"}
    assert all(rec["model"] == "phi3-mini-128k" and rec["dtype"] == "fp32" and rec["n_min"] == 256 for rec in recs)
    assert "left out 2 row(s)" in r.stderr
    r = cli("fit", data_dir / "phi3-cpu-small.csv", "--points", "--format", "csv", "--target", "none")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].startswith("model,backend,dtype,device,batch,phase,layer,moe_timing,mla_form,ranks,cuda_graph,flush_l2,elementwise,n,")
    r = cli("fit", data_dir / "phi3-cpu-small.csv")
    assert r.exit_code == 0 and "exponent_95" in r.stdout


def test_groups_with_few_lengths_are_reported_not_fatal(write_results):
    rows = [{"model": "m", "backend": b, "dtype": "fp32", "device": "cpu", "batch": 1, "n": n, "time_s": 1e-3 * n,
             "status": "ok"} for b, ns in (("one", [128]), ("two", [128, 256]), ("three", [128, 256, 512]))
            for n in ns]
    s = fit_results(write_results(rows)).summary.set_index("backend")
    assert np.isnan(s.loc["one", "exponent"]) and "no power law" in s.loc["one", "note"]
    assert s.loc["two", "exponent"] == pytest.approx(1.0) and np.isnan(s.loc["two", "exponent_lo"])
    assert np.isnan(s.loc["two", "target_time_s"]) and "no c0 + c1 n + c2 n" in s.loc["two", "note"]
    assert s.loc["three", "c1_s_per_token"] == pytest.approx(1e-3) and pd.isna(s.loc["three", "n_star"])


def test_routed_and_dense_moe_rows_are_separate_groups():
    # the same model, backend and lengths, timed two ways: two fits, never one mixed group
    rows = pd.DataFrame({
        "model": "m", "backend": "sdpa", "dtype": "fp32", "device": "cpu", "batch": 1, "status": "ok",
        "n": [128, 256, 512, 128, 256, 512],
        "time_s": [1.0, 2.0, 4.0, 3.0, 6.0, 12.0],
        "moe_timing": ["dense-equivalent"] * 3 + ["routed"] * 3,
    })
    res = fit_results(rows, target=None)
    assert len(res.groups) == 2
    by_timing = {g.key["moe_timing"]: g for g in res.groups}
    assert by_timing["routed"].summary()["exponent"] == pytest.approx(1.0)
    assert group_label(by_timing["routed"].key).endswith("(MoE routed)")
    # a file without the column (or with "n/a", which pandas reads as NaN) is one dense group
    plain = fit_results(rows.drop(columns="moe_timing").iloc[:3], target=None)
    assert [g.key["moe_timing"] for g in plain.groups] == ["n/a"]

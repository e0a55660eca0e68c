"""Times from a calibration profile (carried whole: per-backend attention rates) or a fitted results table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lcprof.plan import plan

from support.plan_hand import causal_tiled_pairs

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")

ROOT = Path(__file__).resolve().parents[2]
#: The committed H100 calibration with measured attention-kernel rates (lcprof calibrate, 2026-11-22).
H100_CAL = ROOT / "reports" / "h100-calibration-2026-11-22" / "calibration.json"


def _cal():
    return json.loads(H100_CAL.read_text())


@pytest.mark.parametrize("backend", ["sdpa-flash", "sdpa-cudnn"])
def test_planner_attention_equals_compares_per_backend_charge(backend):
    """llama3.1-8b at n = 131072 on the committed H100 calibration: the planner charges each layer's
    attention exactly what ``lcprof compare`` charges a measured row of that backend at that n --
    both equal the hand count (32 heads x 128 dims, QK and PV, over the causal tiles, 2 FLOPs per
    multiply-add) at the backend's calibrated rate."""
    from lcprof.explain.compare import compare_results

    n = 131072
    rate = _cal()["attention_flops_per_s"][backend]["bf16"]
    attn_flops = 2 * 2 * 32 * causal_tiled_pairs(n) * 128  # per layer
    hand = attn_flops / rate
    r = plan("llama3.1-8b", long=n, short="4k", calibration=str(H100_CAL), attention_backend=backend).record
    assert r["attention_rate"] == f"calibrated {backend} bf16"
    assert r["attention_long_s"] == pytest.approx(32 * hand, rel=1e-12)
    rows = pd.DataFrame({"model": ["llama3.1-8b"], "backend": [backend], "dtype": ["bf16"], "device": ["cuda"],
                         "batch": [1], "n": [n], "time_s": [1.0], "status": ["ok"]})
    c = compare_results(rows, calibration=str(H100_CAL)).rows.iloc[0]
    gemm = _cal()["peak_flops_per_s"]["bf16"]
    compare_attention_s = c["predicted_compute_s"] - (c["executed_flops"] - attn_flops) / gemm
    assert compare_attention_s == pytest.approx(hand, rel=1e-9)
    assert r["attention_long_s"] == pytest.approx(32 * compare_attention_s, rel=1e-9)


def test_calibrated_ttft_is_slower_than_the_gemm_peak_charge():
    """Issue 13: the same H100 profile predicted 9.67 s for a 128k llama3.1-8b prefill with attention at
    the GEMM rate; at the measured kernel rates the attention alone takes 32 x FLOPs / rate."""
    flash = plan("llama3.1-8b", long="128k", short="4k", calibration=str(H100_CAL), attention_backend="sdpa-flash").record
    cudnn = plan("llama3.1-8b", long="128k", short="4k", calibration=str(H100_CAL), attention_backend="sdpa-cudnn").record
    gemm = plan("llama3.1-8b", long="128k", short="4k", calibration=str(H100_CAL), attention_backend="none-such").record
    assert gemm["attention_rate"].startswith("bf16 GEMM peak (calibration has no none-such")
    assert gemm["prefill_long_s"] < cudnn["prefill_long_s"] < flash["prefill_long_s"]
    per_layer = 2 * 2 * 32 * causal_tiled_pairs(131072) * 128
    c = _cal()
    assert flash["attention_long_s"] - cudnn["attention_long_s"] == pytest.approx(
        32 * per_layer * (1 / c["attention_flops_per_s"]["sdpa-flash"]["bf16"]
                          - 1 / c["attention_flops_per_s"]["sdpa-cudnn"]["bf16"]), rel=1e-9)


def test_calibration_replaces_rates_not_memory(tmp_path):
    cal = {"key": "my-h100", "name": "measured", "peak_flops_per_s": {"bf16": 989.4e12 / 2, "fp32": 30e12},
           "hbm_bytes_per_s": 3.35e12 / 2, "memory_bytes": 1}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    a = plan("llama3.1-8b", long="32k", short="4k", calibration="datasheet").record
    b = plan("llama3.1-8b", long="32k", short="4k", calibration=str(path)).record
    assert b["max_concurrent_short"] == a["max_concurrent_short"]  # memory from the GPU entry
    assert b["kv_pool_blocks"] == a["kv_pool_blocks"]
    # every op at half the rate; the all-reduce-free TP 1 prefill and decode double
    assert b["prefill_long_s"] == pytest.approx(2 * a["prefill_long_s"])
    assert b["decode_step_short_s"] == pytest.approx(2 * a["decode_step_short_s"])
    assert "calibration" in b["rates_source"]


def test_fitted_table_drives_prefill(tmp_path):
    # one layer of llama3.1-8b measured on a GPU: t(n) = 1e-4 + 2e-8 n + 3e-13 n^2 exactly
    n = np.array([1024, 2048, 4096, 8192, 16384, 32768])
    t = 1e-4 + 2e-8 * n + 3e-13 * n * n
    df = pd.DataFrame({"model": "llama3.1-8b", "backend": "sdpa", "dtype": "bf16", "device": "cuda", "batch": 1,
                       "n": n, "time_s": t, "status": "ok"})
    path = tmp_path / "results.csv"
    df.to_csv(path, index=False)
    r = plan("llama3.1-8b", long="32k", short="4k", fit=str(path), chunk=0, calibration="datasheet").record
    layer = lambda m: 1e-4 + 2e-8 * m + 3e-13 * m * m  # noqa: E731
    # 32 layers x the fitted layer, plus the lm_head for the last token: memory-bound, its bf16 weights
    # (vocab 128256 x hidden 4096 x 2 bytes) read once at 3.35 TB/s
    head = (128256 * 4096 * 2 + 4096 * 2 + 128256 * 2) / 3.35e12
    assert r["prefill_long_s"] == pytest.approx(32 * layer(32768) + head, rel=1e-6)
    assert r["prefill_short_s"] == pytest.approx(32 * layer(4096) + head, rel=1e-6)
    assert "fitted" in r["rates_source"]


#: The profile bundled with lcprof for h100-sxm (from the committed 2026-11-22 calibration).
BUNDLED = ROOT / "lcprof" / "data" / "profiles" / "h100-sxm.json"


def test_plan_charges_the_best_profile_at_hand_labelled():
    """Issue 13: one rates object. Without --calibration the planner takes what `lcprof.rates` picks for
    the GPU (the bundled H100 profile), says so, keeps the GPU's memory, and takes the datasheet peak
    only for the dtypes the profile did not measure (fp8), saying that too."""
    prof = json.loads(BUNDLED.read_text())
    r = plan("llama3.1-70b", gpus=8, tp=8, long="128k", short="4k").record
    assert "calibration bundled h100-sxm.json" in r["rates_source"]
    assert r["gpu"] == "h100-sxm"
    d = plan("llama3.1-70b", gpus=8, tp=8, long="128k", short="4k", calibration="datasheet").record
    assert r["kv_pool_blocks"] == d["kv_pool_blocks"]  # memory is the GPU's, not the profile's
    # a lone 4k request's decode step is memory-bound: the same bytes at the profile's bandwidth, the
    # all-reduces (NVLink, from the GPU entry) unchanged
    ar = 80 * 2 * (2 * (7 / 8) * 1 * 8192 * 2) / 450e9
    assert (r["decode_step_short_s"] - ar) * prof["hbm_bytes_per_s"] == pytest.approx(
        (d["decode_step_short_s"] - ar) * 3.35e12, rel=1e-12)
    f = plan("llama3.1-8b", long="32k", short="4k", weights="fp8").record
    assert "fp8" in f["rates_source"] and "datasheet (not measured)" in f["rates_source"]


@pytest.mark.parametrize("backend", ["sdpa-flash", "sdpa-cudnn"])
def test_planner_ttft_on_the_bundled_profile_equals_compares_per_backend_charge(backend):
    """Issue 13 must-show: llama3.1-8b, a lone 32k request on one H100 with the bundled profile: the
    planner's TTFT charges every layer's attention what `lcprof compare` charges a measured row of that
    backend at that n (hand: 32 heads x 128 dims, QK and PV over the causal tiles, 2 FLOPs per
    multiply-add, at the backend's calibrated rate), so TTFT(flash) - TTFT(cudnn) is 32 x the
    difference of compare's two charges."""
    from lcprof.explain.compare import compare_results

    n = 32768
    prof = json.loads(BUNDLED.read_text())
    attn_flops = 2 * 2 * 32 * causal_tiled_pairs(n) * 128
    kw = dict(long=n, short="4k", engine="none", chunk=0)

    def compare_attention_s(b):
        rows = pd.DataFrame({"model": ["llama3.1-8b"], "backend": [b], "dtype": ["bf16"], "device": ["cuda"],
                             "batch": [1], "n": [n], "time_s": [1.0], "status": ["ok"]})
        c = compare_results(rows, gpu="h100-sxm").rows.iloc[0]
        return c["predicted_compute_s"] - (c["executed_flops"] - attn_flops) / prof["peak_flops_per_s"]["bf16"]

    mine = compare_attention_s(backend)
    assert mine == pytest.approx(attn_flops / prof["attention_flops_per_s"][backend]["bf16"], rel=1e-9)
    r = plan("llama3.1-8b", attention_backend=backend, **kw).record
    assert r["attention_rate"] == f"calibrated {backend} bf16"
    assert r["attention_long_s"] == pytest.approx(32 * mine, rel=1e-9)
    other = "sdpa-cudnn" if backend == "sdpa-flash" else "sdpa-flash"
    o = plan("llama3.1-8b", attention_backend=other, **kw).record
    assert r["prefill_long_unchunked_s"] - o["prefill_long_unchunked_s"] == pytest.approx(
        32 * (mine - compare_attention_s(other)), rel=1e-9)

"""A calibration that measured an attention backend's own rate charges QK^T and PV at that rate."""

import json

import numpy as np
import pytest

from lcprof.explain.compare import compare_results
from lcprof.cost.model import cost, roofline
from lcprof.hardware import Hardware, load_calibration
from lcprof.spec import spec_from_config

TINY = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
        "num_key_value_heads": 4, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 1 << 20}


def _hw(attn=None):
    # bandwidth so high that every op is compute-bound: times are FLOPs / rate exactly
    return Hardware(key="t", name="t", peak_flops_per_s={"bf16": 1e12}, hbm_bytes_per_s=1e30,
                    memory_bytes=1 << 40, attention_flops_per_s=attn or {})


def test_roofline_uses_the_backends_attention_rate():
    spec = spec_from_config(TINY, name="tiny")
    n = 4096
    c = cost(spec, n, layer=0, family="tiled", dtype="bf16")
    attn = float(c.flops["attn/total"][0])
    rest = float(c.flops["total"][0]) - attn
    # hand: causal tiles of 128 at n=4096: 32 query tiles, tile t sees t+1 key tiles -> 528 tiles
    assert float(c.flops["attn/qk"][0]) == 2 * 4 * 528 * 128 * 128 * 16
    plain = roofline(c, _hw(), backend="sdpa-flash")
    assert float(plain["total"][0]) == pytest.approx((attn + rest) / 1e12, rel=1e-12)
    cal = roofline(c, _hw({"sdpa-flash": {"bf16": 0.25e12}}), backend="sdpa-flash")
    assert float(cal["total"][0]) == pytest.approx(rest / 1e12 + attn / 0.25e12, rel=1e-12)
    # another backend, or no backend named, keeps the GEMM peak for attention
    other = roofline(c, _hw({"sdpa-flash": {"bf16": 0.25e12}}), backend="sdpa-cudnn")
    assert float(other["total"][0]) == pytest.approx((attn + rest) / 1e12, rel=1e-12)


def test_load_calibration_reads_attention_rates_and_compare_uses_them(tmp_path):
    prof = {"key": "cal", "name": "cal", "peak_flops_per_s": {"bf16": 1e12}, "hbm_bytes_per_s": 1e30,
            "memory_bytes": 1 << 40, "attention_flops_per_s": {"sdpa-flash": {"bf16": 0.5e12}}}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(prof))
    hw = load_calibration(path)
    assert hw.attention_peak("sdpa-flash", "bf16") == 0.5e12 and hw.attention_peak("sdpa-flash", "fp32") is None
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    import pandas as pd

    rows = pd.DataFrame([{"model": str(cfg), "backend": "sdpa-flash", "dtype": "bf16", "device": "cuda",
                          "batch": 1, "n": 4096, "time_s": 1.0, "status": "ok"}])
    res = compare_results(rows, calibration=str(path))
    spec = spec_from_config(TINY, name="tiny")
    c = cost(spec, 4096, layer=0, family="tiled", dtype="bf16")
    attn = float(c.flops["attn/total"][0])
    expect = (float(c.flops["total"][0]) - attn) / 1e12 + attn / 0.5e12
    assert float(res.rows["predicted_time_s"].iloc[0]) == pytest.approx(expect, rel=1e-12)
    assert float(res.rows["predicted_compute_s"].iloc[0]) == pytest.approx(expect, rel=1e-12)
    assert np.isfinite(res.rows["ratio"].iloc[0])


def test_attention_rate_interpolates_in_log_n_between_measured_lengths(tmp_path):
    # measured at 4096 (0.5 TFLOP/s) and 16384 (0.25): 8192 is halfway in log n -> 0.375;
    # below 4096 and above 16384 the nearest measurement holds
    prof = {"key": "cal", "name": "cal", "peak_flops_per_s": {"bf16": 1e12}, "hbm_bytes_per_s": 1e30,
            "memory_bytes": 1 << 40, "attention_flops_per_s": {"sdpa-flash": {"bf16": 0.5e12}},
            "attention_flops_per_s_by_n": {"sdpa-flash": {"bf16": {"4096": 0.5e12, "16384": 0.25e12}}}}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(prof))
    hw = load_calibration(path)
    np.testing.assert_allclose(hw.attention_rate("sdpa-flash", "bf16", [2048, 4096, 8192, 16384, 65536]),
                               [0.5e12, 0.5e12, 0.375e12, 0.25e12, 0.25e12], rtol=1e-12)
    assert hw.attention_rate("sdpa-cudnn", "bf16", [8192]) is None
    # one length only: the single rate at every n
    single = _hw({"sdpa-flash": {"bf16": 0.3e12}})
    np.testing.assert_allclose(single.attention_rate("sdpa-flash", "bf16", [1024, 131072]), [0.3e12, 0.3e12])
    # the roofline charges each n's attention at that n's rate
    spec = spec_from_config(TINY, name="tiny")
    ns = [2048, 8192, 65536]
    c = cost(spec, ns, layer=0, family="tiled", dtype="bf16")
    attn = np.asarray(c.flops["attn/total"])
    rest = np.asarray(c.flops["total"]) - attn
    t = roofline(c, hw, backend="sdpa-flash")
    np.testing.assert_allclose(t["total"], rest / 1e12 + attn / np.array([0.5e12, 0.375e12, 0.25e12]), rtol=1e-12)

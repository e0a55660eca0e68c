"""A calibration that measured an attention backend's own rate charges QK^T and PV at that rate."""

import json

import numpy as np
import pytest

from lcprof.compare import compare_results
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

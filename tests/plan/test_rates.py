"""Times from a calibration profile or a fitted results table instead of the datasheet roofline."""

import json

import numpy as np
import pandas as pd
import pytest

from lcprof.plan import plan

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")


def test_calibration_replaces_rates_not_memory(tmp_path):
    cal = {"key": "my-h100", "name": "measured", "peak_flops_per_s": {"bf16": 989.4e12 / 2, "fp32": 30e12},
           "hbm_bytes_per_s": 3.35e12 / 2, "memory_bytes": 1}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    a = plan("llama3-8b", long="32k", short="4k").record
    b = plan("llama3-8b", long="32k", short="4k", calibration=str(path)).record
    assert b["max_concurrent_short"] == a["max_concurrent_short"]  # memory from the GPU entry
    assert b["prefill_long_s"] == pytest.approx(2 * a["prefill_long_s"])  # every op at half the rate
    assert b["decode_step_short_s"] == pytest.approx(2 * a["decode_step_short_s"])
    assert "calibration" in b["rates_source"]


def test_fitted_table_drives_prefill(tmp_path):
    # one layer of llama3-8b measured on a GPU: t(n) = 1e-4 + 2e-8 n + 3e-13 n^2 exactly
    n = np.array([1024, 2048, 4096, 8192, 16384, 32768])
    t = 1e-4 + 2e-8 * n + 3e-13 * n * n
    df = pd.DataFrame({"model": "llama3-8b", "backend": "sdpa", "dtype": "bf16", "device": "cuda", "batch": 1,
                       "n": n, "time_s": t, "status": "ok"})
    path = tmp_path / "results.csv"
    df.to_csv(path, index=False)
    r = plan("llama3-8b", long="32k", short="4k", fit=str(path)).record
    layer = lambda m: 1e-4 + 2e-8 * m + 3e-13 * m * m  # noqa: E731
    # 32 layers x the fitted layer, plus the lm_head for the last token: memory-bound, its bf16 weights
    # (vocab 128256 x hidden 4096 x 2 bytes) read once at 3.35 TB/s
    head = (128256 * 4096 * 2 + 4096 * 2 + 128256 * 2) / 3.35e12
    assert r["prefill_long_s"] == pytest.approx(32 * layer(32768) + head, rel=1e-6)
    assert r["prefill_short_s"] == pytest.approx(32 * layer(4096) + head, rel=1e-6)
    assert "fitted" in r["rates_source"]

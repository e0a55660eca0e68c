"""The sweep's memory prediction against the peaks the H100 measured (reports/h100-measure/).

tests/data/h100-phi3-128k-peaks.csv holds the prefill rows of phi3-128k-h100.csv (torch 2.11,
``torch.cuda.max_memory_allocated``, layer 0, batch 1). That sweep ran the layer as it was on
2026-11-22, which kept the normed input ``h``, the attention output ``a`` and the new K/V alive
through the MLP (freed since, as transformers frees them). The test adds exactly those tensors back
to the MLP-side steps and asks for the measured peak to the 0.1%: weights, rotated inputs,
activations by step, and cuBLAS's 32 MiB workspace.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lcprof.cost.model import activation_steps
from lcprof.measure import backends as B
from lcprof.measure.sweep import CUDA_WORKSPACE_BYTES, _mask_for, predict_point_memory
from lcprof.spec import load_model

ROWS = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "h100-phi3-128k-peaks.csv")
# phi3-mini layer: q, k, v, o 3072 x 3072 each; gate, up, down 3072 x 8192 each; two norms
LAYER_PARAMS = 4 * 3072 * 3072 + 3 * 3072 * 8192 + 2 * 3072
assert LAYER_PARAMS == 113_252_352


def _predicted_as_measured_then(row) -> int:
    spec = load_model("phi3-128k")
    s = 4 if row["dtype"] == "fp32" else 2
    n = int(row["n"])
    backend = B.get_backend(row["backend"])
    plan, _ = backend.plan(_mask_for(spec, 0, n, n), "prefill")
    mem = predict_point_memory(spec, 0, n, plan=plan, batch=1, dtype=row["dtype"],
                               phase="prefill", input_sets=int(row["input_sets"]),
                               workspace_bytes=CUDA_WORKSPACE_BYTES)
    assert mem["weight_bytes"] == s * LAYER_PARAMS
    family = "eager" if backend.family == "eager" else "tiled"
    steps = activation_steps(spec, n, dtype=row["dtype"], family=family)
    held = s * n * (2 * spec.hidden_size + spec.n_kv_heads * (spec.head_dim + spec.v_head_dim))
    then = max(float(v[0]) + (held if k.startswith(("mlp/", "residual")) else 0) for k, v in steps.items())
    assert mem["activation_bytes"] == int(max(float(v[0]) for v in steps.values()))
    return int(mem["total_bytes"] - mem["activation_bytes"] + then)


# From 512 tokens on; below, the allocator's rounding of small blocks and first-call workspaces
# (cuDNN's and our kernel's first point, n = 128) are a visible share of a ~0.3 GiB peak.
EXACT = ROWS[(ROWS.backend != "sdpa-math") & (ROWS.n >= 512)]


@pytest.mark.parametrize("i", list(EXACT.index))
def test_predicted_peak_matches_h100(i):
    row = ROWS.loc[i]
    then = _predicted_as_measured_then(row)
    assert row["peak_mem_bytes"] == pytest.approx(then, rel=1e-3), (row["backend"], row["n"])


def test_tiled_long_n_is_the_mlp_step_and_eager_the_scores():
    # at 131072 the tiled peak is the MLP (act(gate), up, product), for eager at 16384 the scores
    spec = load_model("phi3-128k")
    tiled = activation_steps(spec, 131072, dtype="bf16", family="tiled")
    assert max(tiled, key=lambda k: float(tiled[k][0])) == "mlp/act"
    eager = activation_steps(spec, 16384, dtype="fp32", family="eager")
    assert max(eager, key=lambda k: float(eager[k][0])) == "attn/pv"


def test_sdpa_math_is_a_lower_bound():
    # SDPA's math path decomposes differently from transformers' eager: it holds more per (query,
    # key) pair (13% over at 16384). The prediction is eager's and stays below, never above.
    rows = ROWS[(ROWS.backend == "sdpa-math") & (ROWS.n >= 1024)]
    assert len(rows) == 5
    for _, row in rows.iterrows():
        then = _predicted_as_measured_then(row)
        assert then <= row["peak_mem_bytes"] <= 1.15 * then

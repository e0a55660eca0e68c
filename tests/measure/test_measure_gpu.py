"""GPU checks of the measurement layer; run on a GPU machine with ``pytest -m gpu tests/measure``.

Every SDPA backend and eager match the float64 reference on CUDA in bf16 and fp32 (where the
kernel exists for that dtype), a short sweep runs end to end, and the CUDA-event timer agrees with
a synchronized wall clock. Skips cleanly without CUDA.
"""

from __future__ import annotations

import csv
import time

import pytest
import torch

from lcprof.measure import backends as B
from lcprof.measure.check import TOLERANCE, Checker, reference_attention, rel_error
from lcprof.measure.layer import DecoderLayer
from lcprof.measure.sweep import run_sweep
from lcprof.measure.execution import Execution, SweepWorkload
from lcprof.measure.timer import measure
from lcprof.spec import load_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

GPU_BACKENDS = ["eager", "sdpa", "sdpa-math", "sdpa-efficient", "sdpa-flash", "sdpa-cudnn", "flash-attn"]


def _require(name, dtype):
    ok, why = B.get_backend(name).probe("cuda", dtype)
    if not ok:
        pytest.skip(f"{name} unavailable on cuda {dtype}: {why}")


@pytest.mark.parametrize("dtype_name", ["bf16", "fp32"])
@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_attention_matches_reference_on_cuda(name, dtype_name):
    dtype = B.torch_dtype(dtype_name)[0]
    _require(name, dtype)
    backend = B.get_backend(name)
    g = torch.Generator().manual_seed(0)
    for kind, w, n_q, n_k in [("global", None, 256, 256), ("sliding", 64, 256, 256), ("global", None, 1, 257)]:
        mask = B.AttnMask(kind, n_q, n_k, w)
        plan, _ = backend.plan(mask, "prefill" if n_q == n_k else "decode")
        if plan is None:
            continue
        q = torch.randn(2, n_q, 8, 64, generator=g).to("cuda", dtype)
        k = torch.randn(2, n_k, 2, 64, generator=g).to("cuda", dtype)
        v = torch.randn(2, n_k, 2, 64, generator=g).to("cuda", dtype)
        try:
            out = backend(q, k, v, mask, 0.125)
        except RuntimeError as exc:  # a forced kernel that does not take this mask/shape
            if "No available kernel" in str(exc) or "No viable backend" in str(exc):
                continue
            raise
        err = rel_error(out, reference_attention(q, k, v, mask, 0.125))
        assert err <= TOLERANCE[dtype_name], (kind, err)


_CHECKERS: dict = {}


def _checker(dtype_name):
    """One real Llama-3-8B layer (GQA 32/8) per dtype on the GPU, its float64 reference computed once."""
    if dtype_name not in _CHECKERS:
        from lcprof.spec import load_model

        layer = DecoderLayer(load_model("llama3-8b"), 0).to("cuda", B.torch_dtype(dtype_name)[0])
        _CHECKERS[dtype_name] = Checker(layer, dtype=dtype_name, n_check=128)
    return _CHECKERS[dtype_name]


@pytest.mark.parametrize("dtype_name", ["bf16", "fp32"])
@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_layer_matches_reference_on_cuda(name, dtype_name):
    _require(name, B.torch_dtype(dtype_name)[0])
    res = _checker(dtype_name).check(name)
    assert res.ok, res


def test_short_sweep_runs_on_cuda(tmp_path):
    out = tmp_path / "gpu.csv"
    df = run_sweep(SweepWorkload("phi3-128k", "128..512", "sdpa,eager", "bf16"), Execution(budget_s=0.05), device="cuda", out=out)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(df) == 6
    assert {r["status"] for r in rows} == {"ok"}
    assert all(r["clock"] == "cuda_event" and r["gpu_name"] for r in rows)
    assert all(int(r["peak_mem_bytes"]) > 0 and r["peak_mem_source"] == "cuda_max_allocated" for r in rows)


def test_decode_sweep_runs_on_cuda():
    df = run_sweep(SweepWorkload("llama3-8b", "1k,4k", "sdpa,eager", "bf16", phase="decode"), Execution(budget_s=0.05), device="cuda")
    assert set(df["status"]) == {"ok"}


def test_cuda_graph_decode_replays_the_same_step_without_host_overhead():
    # one decode step of a llama3-8b layer against 4k cached tokens: the graph replays the same
    # arithmetic (same output) and takes less time than the eager call, which is host-bound
    layer = DecoderLayer(load_model("llama3-8b"), 0).to(device="cuda", dtype=torch.bfloat16).eval()
    layer.attention = B.get_backend("sdpa")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 4096, generator=g).to(device="cuda", dtype=torch.bfloat16)
    cache = layer.random_cache(1, 4097, generator=g, dtype=torch.bfloat16, device="cuda")
    outs = []
    with torch.inference_mode():
        eager = measure(lambda inp: layer(*inp), [(x, cache)], device="cuda", budget_s=0.2, min_reps=20)
        graphed = measure(lambda inp: outs.append(layer(*inp)), [(x, cache)], device="cuda", budget_s=0.2,
                          min_reps=20, cuda_graph=True)
        assert graphed.clock == "cuda_graph" and graphed.note == ""
        ref = layer(x, cache)
    torch.cuda.synchronize()
    torch.testing.assert_close(outs[-1], ref)  # the captured output buffer holds the last replay's result
    assert graphed.median_s < eager.median_s


def test_decode_sweep_with_cuda_graphs(tmp_path):
    out = tmp_path / "dec.csv"
    df = run_sweep(SweepWorkload("llama3-8b", "1k,4k", "sdpa", "bf16", phase="decode"), Execution(budget_s=0.05, cuda_graph=True), device="cuda", out=out)
    assert set(df["status"]) == {"ok"} and set(df["clock"]) == {"cuda_graph"}


def test_cuda_event_timer_agrees_with_a_synchronized_wall_clock():
    a = torch.randn(4096, 4096, device="cuda")
    m = measure(lambda x: x @ x, [a], device="cuda", budget_s=0.2, min_reps=10)
    assert m.clock == "cuda_event" and m.repeats >= 10 and m.median_s > 0
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / 10
    assert 0.5 < m.median_s / wall < 1.5


def test_layer_measure_puts_the_roofline_next_to_the_measurement():
    from lcprof.measure.api import measure_layer_vs_predicted

    df = measure_layer_vs_predicted("phi3-128k", 4096, backend="sdpa", dtypes=["bf16", "fp32"], device="cuda",
                                    gpu="h100-sxm", budget_s=0.1)
    assert list(df["status"]) == ["ok", "ok"]
    assert (df["predicted_time_s"] > 0).all() and (df["ratio"] > 0).all()
    assert (df["ratio"] == df["time_s"] / df["predicted_time_s"]).all()


def test_tf32_sweep_passes_its_tolerance():
    df = run_sweep(SweepWorkload("phi3-128k", "1024", "sdpa-efficient,eager", "tf32"), Execution(budget_s=0.05), device="cuda")
    assert set(df["status"]) == {"ok"}, df[["backend", "status", "reason"]]
    assert (df["check_layer_rel_err"] <= 3e-3).all()
    assert not torch.backends.cuda.matmul.allow_tf32  # restored after the sweep

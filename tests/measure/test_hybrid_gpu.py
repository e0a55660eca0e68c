"""Hybrid layers on a CUDA GPU (pytest -m gpu; skipped without CUDA, and per backend when its package
does not import): the whole layer on every mixer backend that runs -- torch, fla (Gated DeltaNet),
mamba-ssm (Mamba-1 / Mamba-2) -- against the float64 token-by-token recurrence on the CPU, prefill
over several chunks and one decode step from the state; and ``lcprof sweep`` rows on the device."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from lcprof.measure.check import TOLERANCE, Checker  # noqa: E402
from lcprof.measure.layer import DecoderLayer  # noqa: E402
from lcprof.measure.mixer_backends import probe_mixer_backend  # noqa: E402
from lcprof.measure.sweep import run_sweep  # noqa: E402
from lcprof.measure.execution import Execution, SweepWorkload  # noqa: E402
from lcprof.spec import load_model  # noqa: E402

# (preset, layer, mixer backend): Qwen3-Next's Gated DeltaNet (+ MoE MLP), Nemotron-3-Nano's Mamba-2,
# Jamba-1.5-mini's Mamba-1 (+ MoE MLP)
CASES = [("qwen3-next-80b-a3b", 0, "torch"), ("qwen3-next-80b-a3b", 0, "fla"),
         ("nemotron-3-nano", 0, "torch"), ("nemotron-3-nano", 0, "mamba-ssm"),
         ("jamba-1.5-mini", 1, "torch"), ("jamba-1.5-mini", 1, "mamba-ssm")]


@pytest.mark.parametrize("model,layer,backend", CASES, ids=[f"{m}-{b}" for m, _, b in CASES])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_layer_on_each_backend_against_the_fp64_recurrence(model, layer, backend, phase, dtype):
    torch_dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    ok, why = probe_mixer_backend(backend, "cuda", torch_dt)
    if not ok:
        pytest.skip(f"{backend}: {why}")
    spec = load_model(model)
    lay = DecoderLayer(spec, layer).to(device="cuda", dtype=torch_dt).eval()
    res = Checker(lay, dtype=dtype, phase=phase, batch=1).check(backend)
    assert res.ok, res.reason
    assert res.layer_rel_err <= max(TOLERANCE[dtype], 2 * (res.eager_layer_rel_err or 0.0))


def test_sweep_rows_on_the_device(tmp_path):
    df = run_sweep(SweepWorkload("qwen3-next-80b-a3b", "1k,2k", "torch,fla", "bf16", layer=0), Execution(budget_s=0.05, min_reps=2, max_reps=5), device="cuda", out=tmp_path / "r.csv")
    assert set(df["status"]) <= {"ok", "skipped"}
    assert (df[df["backend"] == "torch"]["status"] == "ok").all()
    assert df[df["status"] == "skipped"]["reason"].str.startswith("mixer backend unavailable").all()

"""Whole models on a CUDA GPU (pytest -m gpu; skipped without CUDA): device-drawn weights, decode as
CUDA-graph replays, transformers' SDPA and flash_attention_2 against lcprof, the memory pre-flight
against the measured peak."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from lcprof.measure.check import TOLERANCE, reference_attention, rel_error  # noqa: E402
from lcprof.measure.model import Model  # noqa: E402
from lcprof.spec import spec_from_config  # noqa: E402

SMALL = dict(model_type="llama", hidden_size=1024, num_hidden_layers=4, num_attention_heads=16,
             num_key_value_heads=4, intermediate_size=2816, vocab_size=32000, max_position_embeddings=32768,
             rms_norm_eps=1e-5, rope_theta=500000.0)
SLIDING = dict(SMALL, model_type="mistral", sliding_window=512, head_dim=64)


def _spec(cfg, name):
    return spec_from_config(dict(cfg), name=name)


@pytest.mark.parametrize("cfg", [SMALL, SLIDING], ids=["global", "sliding"])
def test_decode_on_device_equals_longer_prefill(cfg):
    spec = _spec(cfg, "gpu-small")
    model = Model(spec, init="device", device="cuda", dtype=torch.float32).eval()
    from lcprof.measure.backends import get_backend

    model.set_attention(get_backend("sdpa"))
    n = 1500  # past the window
    ids = torch.randint(0, spec.vocab_size, (1, n + 1), device="cuda")
    with torch.no_grad():
        full = model(ids)
        step = model(ids[:, n:], model.prefill_caches(ids, n), start=n)
    assert rel_error(step, full) < 10 * TOLERANCE["fp32"]


def test_decode_sweep_uses_cuda_graphs(tmp_path):
    from lcprof.measure.model_sweep import run_model_sweep
    from lcprof.measure.execution import Execution, ModelWorkload

    df = run_model_sweep(ModelWorkload(_spec(SMALL, "gpu-small"), "4k", phases="decode", backends="sdpa", dtypes="bf16"), Execution(cuda_graph=True, budget_s=0.2), device="cuda", out=tmp_path / "d.csv")
    assert df["status"][0] == "ok", df["reason"][0]
    assert df["clock"][0] == "cuda_graph"


def test_prefill_memory_preflight_against_the_measured_peak(tmp_path):
    """The pre-flight (weights + the largest layer's activations + logits + workspace) against
    torch.cuda.max_memory_allocated of the whole-model prefill."""
    from lcprof.measure.model_sweep import run_model_sweep

    df = run_model_sweep(ModelWorkload(_spec(SMALL, "gpu-small"), "8k,16k", phases="prefill", backends="sdpa", dtypes="bf16"), Execution(budget_s=0.2), device="cuda", out=tmp_path / "p.csv")
    assert (df["status"] == "ok").all(), df["reason"].tolist()
    ratio = df["peak_mem_bytes"] / df["predicted_mem_bytes"]
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio.tolist()


@pytest.mark.parametrize("impl", ["sdpa", "flash_attention_2"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_transformers_agrees_on_the_gpu(impl, phase):
    pytest.importorskip("transformers")
    from lcprof.measure.hf import agree_model, attn_impl_available

    ok, why = attn_impl_available(impl, "cuda")
    if not ok:
        pytest.skip(why)
    r = agree_model(_spec(SLIDING, "gpu-sliding"), 700, dtype="bf16", attn_implementation=impl, phase=phase,
                    device="cuda")
    assert r["ok"], r["reason"]


def test_fp32_whole_model_against_float64_on_device():
    spec = _spec(SMALL, "gpu-small")
    ref = Model(spec, dtype=torch.float64, device="cuda").eval()
    ref.set_attention(reference_attention)
    ours = Model(spec, dtype=torch.float32, device="cuda").eval()
    from lcprof.measure.backends import get_backend

    ours.set_attention(get_backend("sdpa"))
    ids = torch.randint(0, spec.vocab_size, (1, 256), device="cuda")
    with torch.no_grad():
        assert rel_error(ours(ids), ref(ids)) < TOLERANCE["tf32"]

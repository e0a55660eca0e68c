"""Backends: the registry fails loudly, masks count what the cost model counts, and every backend
available on the CPU matches the float64 reference on every mask it can run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lcprof.cost import masks as cost_masks
from lcprof.errors import LcprofError
from lcprof.measure import backends as B
from lcprof.measure.check import TOLERANCE, reference_attention, rel_error

EXPECTED = ["eager", "sdpa", "sdpa-math", "sdpa-efficient", "sdpa-flash", "sdpa-cudnn", "flash-attn", "striped-ring",
            "striped-ring-flash", "striped-ring-cudnn", "striped-ring-efficient"]


def test_registry_lists_every_backend():
    assert B.names() == EXPECTED


def test_registry_refuses_unknown_and_duplicate_names():
    with pytest.raises(LcprofError, match="unknown backend 'nope'.*eager, sdpa"):
        B.get_backend("nope")
    with pytest.raises(ValueError, match="registered twice"):
        B.register(B.Backend("eager", B.eager_attention, lambda d, t: (True, "")))


def test_unavailable_backends_say_why():
    for name in ("sdpa-efficient", "sdpa-cudnn", "flash-attn"):
        ok, reason = B.get_backend(name).probe("cpu", torch.float32)
        assert not ok and reason
    ok, reason = B.get_backend("eager").probe("cpu", torch.float32)
    assert ok


def brute_force_allowed(kind, n_q, n_k, w):
    out = np.zeros((n_q, n_k), dtype=bool)
    for i in range(n_q):
        p = i + n_k - n_q
        for j in range(n_k):
            if kind == "full":
                out[i, j] = True
            elif kind == "global":
                out[i, j] = j <= p
            elif kind == "sliding":
                out[i, j] = p - w < j <= p
            else:
                out[i, j] = j <= p and j // w == p // w
    return out


@pytest.mark.parametrize("kind,w", [("global", None), ("sliding", 5), ("chunked", 4), ("full", None)])
@pytest.mark.parametrize("n_q,n_k", [(13, 13), (1, 13), (4, 13)])
def test_mask_matches_brute_force_and_cost_model_counts(kind, w, n_q, n_k):
    m = B.AttnMask(kind, n_q, n_k, w)
    dense = m.dense().numpy()
    assert (dense == brute_force_allowed(kind, n_q, n_k, w)).all()
    assert (m.effective().dense().numpy() == dense).all()
    pairs = cost_masks.attended_pairs(kind, n_q, n_k - n_q, w)
    assert dense.sum() == int(pairs)


def test_window_covering_all_keys_is_causal_and_decode_global_is_full():
    assert B.AttnMask("sliding", 100, 100, 262144).effective().kind == "global"
    assert B.AttnMask("chunked", 8, 8, 8).effective().kind == "global"
    assert B.AttnMask("global", 1, 9).effective().kind == "full"
    assert B.AttnMask("sliding", 1, 9, 4).effective().kind == "sliding"


def test_plans_say_how_each_mask_runs():
    sdpa, eager, ring = B.get_backend("sdpa"), B.get_backend("eager"), B.get_backend("striped-ring")
    glob, slide = B.AttnMask("global", 64, 64), B.AttnMask("sliding", 64, 64, 16)
    assert sdpa.plan(glob)[0] == B.Plan("native", "tiled")
    assert sdpa.plan(slide)[0] == B.Plan("explicit", "eager")  # explicit mask: full square executed
    assert eager.plan(slide)[0].executed_family == "eager"
    plan, why = ring.plan(slide)
    assert plan is None and "sliding" in why
    plan, why = ring.plan(B.AttnMask("global", 1, 65), "decode")
    assert plan is None and "decode" in why


def _cpu_available(name, dtype):
    ok, _ = B.get_backend(name).probe("cpu", dtype)
    return ok


MASKS = [("global", None, 64, 64), ("sliding", 24, 64, 64), ("chunked", 16, 64, 64),
         ("global", None, 1, 65), ("sliding", 24, 1, 65), ("chunked", 16, 1, 65)]


@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
@pytest.mark.parametrize("name", EXPECTED)
def test_every_cpu_backend_matches_float64_reference(name, dtype_name):
    dtype = B.torch_dtype(dtype_name)[0]
    if not _cpu_available(name, dtype):
        pytest.skip(f"{name} unavailable on cpu: {B.get_backend(name).probe('cpu', dtype)[1]}")
    backend = B.get_backend(name)
    g = torch.Generator().manual_seed(0)
    ran = 0
    for (kind, w, n_q, n_k), (heads, kvh) in itertools.product(MASKS, [(4, 4), (8, 2)]):
        mask = B.AttnMask(kind, n_q, n_k, w)
        phase = "prefill" if n_q == n_k else "decode"
        plan, _ = backend.plan(mask, phase)
        if plan is None:
            continue
        q = torch.randn(2, n_q, heads, 32, generator=g).to(dtype)
        k = torch.randn(2, n_k, kvh, 32, generator=g).to(dtype)
        v = torch.randn(2, n_k, kvh, 32, generator=g).to(dtype)
        with torch.inference_mode():
            out = backend(q, k, v, mask, 32 ** -0.5, ranks=2)
        assert out.shape == (2, n_q, heads, 32) and out.dtype == dtype
        err = rel_error(out, reference_attention(q, k, v, mask, 32 ** -0.5))
        assert err <= TOLERANCE[dtype_name], (kind, n_q, n_k, heads, kvh, err)
        ran += 1
    assert ran > 0


@pytest.mark.parametrize("name", ["eager", "sdpa", "sdpa-math"])
def test_value_dim_may_differ_from_query_dim(name):
    """MLA attends with v_dim != qk_dim; eager and SDPA's math path handle it (flash kernels do not,
    and a sweep then records status error from the correctness check)."""
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 40, 4, 24, generator=g), torch.randn(1, 40, 1, 24, generator=g)
    v = torch.randn(1, 40, 1, 16, generator=g)
    mask = B.AttnMask("global", 40, 40)
    out = B.get_backend(name)(q, k, v, mask, 0.2)
    assert rel_error(out, reference_attention(q, k, v, mask, 0.2)) <= TOLERANCE["fp32"]


def test_sdpa_auto_kernel_names_the_cpu_choice():
    mask = B.AttnMask("global", 64, 64)
    # equal head dims: the CPU flash kernel; MLA-like unequal q/k and v dims: only math can run them
    assert B.sdpa_auto_kernel("cpu", torch.float32, heads=8, kv_heads=2, qk_dim=64, v_dim=64, mask=mask) \
        == "flash_attention"
    assert B.sdpa_auto_kernel("cpu", torch.float32, heads=8, kv_heads=8, qk_dim=192, v_dim=128, mask=mask) == "math"


def test_sweep_records_that_auto_sdpa_ran_math(tmp_path):
    # deepseek-v2-lite's MLA (q/k 192, v 128) on the CPU: SDPA falls back to math, which stores the
    # scores; the row says so and its memory prediction is eager's
    from lcprof.measure.sweep import run_sweep
    from lcprof.measure.execution import Execution, SweepWorkload

    df = run_sweep(SweepWorkload("deepseek-v2-lite", "128", "sdpa", "fp32"), Execution(budget_s=0.01, min_reps=1, mem_cap_bytes=1 << 40, check=False), device="cpu")
    row = df.iloc[0]
    assert row["status"] == "ok" and row["executed_family"] == "eager"
    from lcprof.cost.model import cost
    from lcprof.spec import load_model

    eager = cost(load_model("deepseek-v2-lite"), 128, layer=0, family="eager", dtype="fp32").flops["total"][0]
    assert float(row["predicted_flops"]) == float(eager)

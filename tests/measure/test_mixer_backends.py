"""Mixer backends: probes that say why not, refusals, and (on a GPU) every kernel backend against
the float64 recurrence.

On the CPU: the torch backend runs every kind; fla and mamba-ssm report a one-line reason (not
importable here, or CUDA only) and ``lcprof backends`` lists them. With ``pytest -m gpu`` on a
GPU machine the kernel-backed layers (bf16) are compared with the fp64 token-by-token recurrence
on the same weights, prefill and decode, within bf16's error of the torch layer's own.
"""

from __future__ import annotations

import pytest
import torch

from lcprof.errors import LcprofError
from lcprof.measure.backends import backends_table
from lcprof.measure.mixer_backends import MIXER_BACKENDS, get_mixer_backend, probe_mixer_backend
from lcprof.measure.mixers import RECURRENT, build_mixer
from lcprof.spec import GatedDeltaNetSpec, Mamba2Spec, MambaSpec


def test_cpu_probes_give_one_line_reasons():
    for name, b in MIXER_BACKENDS.items():
        ok, reason = probe_mixer_backend(name, "cpu", torch.float32)
        assert reason and "\n" not in reason
        if name == "torch":
            assert ok
        else:  # CUDA-only kernels: not importable here, or refused on the CPU
            assert not ok and ("not importable" in reason or "CUDA only" in reason)


def test_backends_table_lists_the_mixer_backends():
    rows = backends_table("cpu", [torch.float32])
    mixer = {r["backend"]: r for r in rows if r["family"] == "mixer"}
    assert set(mixer) == {"torch", "fla", "mamba-ssm"}
    assert "gated_deltanet" in mixer["fla"]["description"]


def test_unknown_or_mismatched_backend_is_refused():
    with pytest.raises(LcprofError, match="known: torch, fla, mamba-ssm"):
        get_mixer_backend("triton")
    spec = Mamba2Spec(hidden_size=16, n_heads=2, head_dim=8, d_state=4, n_groups=1, d_conv=4, chunk_size=8)
    with pytest.raises(LcprofError, match="does not run mamba2"):
        build_mixer(spec, backend="fla")


GPU_CASES = [
    ("fla", GatedDeltaNetSpec(hidden_size=256, num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64,
                              conv_kernel=4)),
    ("mamba-ssm", Mamba2Spec(hidden_size=256, n_heads=8, head_dim=64, d_state=64, n_groups=2, d_conv=4,
                             chunk_size=64)),
    ("mamba-ssm", MambaSpec(hidden_size=128, d_inner=256, d_state=16, d_conv=4, dt_rank=8)),
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend,spec", GPU_CASES, ids=[f"{b}-{s.kind}" for b, s in GPU_CASES])
def test_kernel_backends_match_the_recurrence(backend, spec):
    ok, why = probe_mixer_backend(backend, "cuda", torch.bfloat16)
    if not ok:
        pytest.skip(f"{backend}: {why}")
    ref_layer = build_mixer(spec, seed=5).to(torch.float64)
    x = torch.randn(2, 200, spec.hidden_size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        ref, _, _ = RECURRENT[spec.kind](ref_layer, x)
        errs = {}
        for name in ("torch", backend):
            layer = build_mixer(spec, seed=5, backend=name).to("cuda", torch.bfloat16)
            y, st = layer(x[:, :199].to("cuda", torch.bfloat16))
            y1, _ = layer(x[:, 199:].to("cuda", torch.bfloat16), st)  # decode from the carried state
            got = torch.cat([y, y1], 1).double().cpu()
            errs[name] = ((got - ref).norm() / ref.norm()).item()
    assert errs[backend] < max(2 * errs["torch"], 1e-2), errs

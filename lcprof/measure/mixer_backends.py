"""Backends of the mixer layers: lcprof's torch reference and the Triton/CUDA kernels engines run.

    torch       lcprof.measure.mixers: chunked products and the recurrent step in plain torch
                (CPU and GPU); every kind
    fla         flash-linear-attention's Triton kernels: ``chunk_gated_delta_rule`` (prefill) and
                ``fused_recurrent_gated_delta_rule`` (decode); Gated DeltaNet; CUDA only
    mamba-ssm   state-spaces/mamba's kernels: ``mamba_chunk_scan_combined`` (Mamba-2 prefill),
                ``selective_scan_fn`` (Mamba-1 prefill from a zero state), ``selective_state_update``
                (decode, both); CUDA only

A kernel backend replaces only the recurrent core (between the conv and the gated norm): the
projections, conv and norm are the torch layer's own, so FLOPs and activation counts outside the
core are unchanged. Each probe says why a backend cannot run here (import error, no CUDA) and never
raises. ``mixer_backends_table`` is what ``lcprof backends`` lists below the attention backends.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from lcprof.errors import LcprofError


@dataclass(frozen=True)
class MixerBackend:
    name: str
    kinds: tuple[str, ...]
    modules: tuple[str, ...] = ()  # what must import
    cuda_only: bool = False
    description: str = ""
    probe_fn: Callable | None = field(default=None, repr=False)


MIXER_BACKENDS: dict[str, MixerBackend] = {
    "torch": MixerBackend("torch", ("mamba", "mamba2", "gated_deltanet", "kda", "lightning", "short_conv"),
                          description="lcprof's chunked torch reference (CPU and GPU)"),
    "fla": MixerBackend("fla", ("gated_deltanet",), ("fla.ops.gated_delta_rule",), True,
                        "flash-linear-attention Triton kernels (chunk / fused_recurrent gated delta rule)"),
    "mamba-ssm": MixerBackend("mamba-ssm", ("mamba", "mamba2"),
                              ("mamba_ssm.ops.triton.ssd_combined", "mamba_ssm.ops.selective_scan_interface",
                               "mamba_ssm.ops.triton.selective_state_update"), True,
                              "state-spaces/mamba kernels (SSD chunk scan, selective scan, state update)"),
}

_PROBES: dict[tuple, tuple[bool, str]] = {}


def get_mixer_backend(name: str, kind: str | None = None) -> MixerBackend:
    b = MIXER_BACKENDS.get(name)
    if b is None:
        raise LcprofError(f"unknown mixer backend {name!r}; known: {', '.join(MIXER_BACKENDS)}")
    if kind is not None and kind not in b.kinds:
        raise LcprofError(f"mixer backend {name!r} does not run {kind} layers (it runs {', '.join(b.kinds)})")
    return b


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {' '.join(text[0].split()) if text else ''}".strip().rstrip(":")


def probe_mixer_backend(name: str, device, dtype: torch.dtype) -> tuple[bool, str]:
    """(available, reason) for a mixer backend on (device, dtype); cached; never raises."""
    b = get_mixer_backend(name)
    dev = torch.device(device)
    key = (name, str(dev), dtype)
    if key in _PROBES:
        return _PROBES[key]
    result = (True, f"{dev.type}: lcprof torch layers")
    for mod in b.modules:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - ImportError or a broken build
            result = (False, f"not importable ({mod}: {_one_line(exc)})")
            break
    else:
        if b.cuda_only and dev.type != "cuda":
            result = (False, f"{name} runs Triton/CUDA kernels: CUDA only")
        elif b.cuda_only:
            result = _probe_by_running(b, dev, dtype)
    _PROBES[key] = result
    return result


def _probe_by_running(b: MixerBackend, dev: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    from lcprof.measure.mixers import build_mixer
    from lcprof.spec import GatedDeltaNetSpec, Mamba2Spec

    spec = (GatedDeltaNetSpec(hidden_size=64, num_k_heads=2, num_v_heads=2, head_k_dim=64, head_v_dim=64,
                              conv_kernel=4) if b.name == "fla" else
            Mamba2Spec(hidden_size=64, n_heads=2, head_dim=64, d_state=64, n_groups=1, d_conv=4, chunk_size=64))
    try:
        layer = build_mixer(spec, backend=b.name).to(device=dev, dtype=dtype)
        with torch.no_grad():
            out, _ = layer(torch.randn(1, 128, 64, device=dev, dtype=dtype))
        if not torch.isfinite(out).all():
            return False, "tiny probe call returned non-finite values"
    except Exception as exc:  # noqa: BLE001 - a probe reports, it does not fail
        return False, _one_line(exc)
    return True, f"{dev.type} {str(dtype).replace('torch.', '')}: ran"


def mixer_backends_table(device, dtypes: list[torch.dtype]) -> list[dict]:
    """One record per (mixer backend, dtype), in the attention table's columns."""
    from lcprof.measure.backends import DTYPE_NAMES

    rows = []
    for name, b in MIXER_BACKENDS.items():
        for dt in dtypes:
            ok, reason = probe_mixer_backend(name, device, dt)
            rows.append({"backend": name, "dtype": DTYPE_NAMES.get(dt, str(dt)), "device": str(torch.device(device)),
                         "available": ok, "reason": reason, "family": "mixer", "native_masks": "",
                         "explicit_mask": False, "decode": True,
                         "description": f"{b.description}; layers: {', '.join(b.kinds)}"})
    return rows


# ----------------------------------------------------------------------------------------------
# Kernel cores (imported lazily by the layers; shapes in the layers' token-major layout)
# ----------------------------------------------------------------------------------------------

def fla_gated_delta(q, k, v, g, beta, state, scale: float, step: bool):
    """q, k (b, m, Hv, dk) before the l2 norm (the kernel normalizes), v (b, m, Hv, dv), g and beta
    (b, m, Hv) float32, state (b, Hv, dk, dv) float32 -> (o (b, m, Hv, dv), final state)."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

    fn = fused_recurrent_gated_delta_rule if step else chunk_gated_delta_rule
    o, final = fn(q, k, v, g=g, beta=beta, scale=scale, initial_state=state, output_final_state=True,
                  use_qk_l2norm_in_kernel=True)
    return o, final


def mamba_ssm_ssd(x, dt, A, B, C, D, state, chunk: int):
    """x (b, m, H, P), dt (b, m, H) after softplus, A, D (H,), B, C (b, m, G, N), state (b, H, P, N)
    -> (y (b, m, H, P), final state)."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    y, final = mamba_chunk_scan_combined(x, dt, A, B, C, chunk, D=D, z=None, dt_bias=None, initial_states=state,
                                         dt_softplus=False, return_final_states=True)
    return y, final


def mamba_ssm_state_update(state, x, dt, A, B, C, D):
    """One token in place on ``state``: Mamba-2 (state (b, H, P, N), x (b, H, P), dt (b, H),
    A, D (H,), B, C (b, G, N)) or Mamba-1 (state (b, d, N), x, dt (b, d), A (d, N), D (d,),
    B, C (b, N)). Returns y shaped like x."""
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update

    if state.dim() == 4:  # Mamba-2: per-head scalars tied over head_dim and d_state
        H, P, N = state.shape[1:]
        dt = dt[..., None].expand(*dt.shape, P)
        A = A[:, None, None].expand(H, P, N)
        D = D[:, None].expand(H, P)
    return selective_state_update(state, x, dt, A, B, C, D=D, z=None, dt_bias=None, dt_softplus=False)


def mamba_ssm_scan(u, delta, A, B, C, D):
    """Mamba-1 prefill from a zero state: u, delta (b, d, m), A (d, N), B, C (b, N, m), D (d,)
    -> (y (b, d, m), last state (b, d, N)). ``selective_scan_fn`` takes no initial state."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    y, last = selective_scan_fn(u, delta, A, B, C, D=D, z=None, delta_bias=None, delta_softplus=False,
                                return_last_state=True)
    return y, last

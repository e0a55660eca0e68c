"""`lcprof ring`: the analytic ring-attention report for a model (no torch).

Per layer, for the contiguous and the striped layout on ``gpus`` devices joined by ``link``:
exact causal load imbalance, per-step compute and communication time (roofline on the GPU's
peak for the dtype), exposed communication, the fewest tokens per device that hide the
transfer, and memory per device including the two K/V buffers of double buffering.
"""

from __future__ import annotations

from lcprof.cost import ring as ringcost
from lcprof.cost.ops import attention_dims
from lcprof.errors import LcprofError
from lcprof.hardware import link_bandwidth
from lcprof.analytic import load
from lcprof.table import Table
from lcprof.units import dtype_bytes, dtype_name, parse_token_list


def ring_shapes(spec) -> tuple[int, int, int, int]:
    """(heads, kv_heads, qk_dim, v_dim) of the attention the ring runs.

    From :func:`lcprof.cost.ops.attention_dims`, the one source of attention dims, in MLA's
    naive form (K and V decompressed per query head: DeepSeek-V3 has qk_dim 192 = 128 + 64
    rope, v_dim 128); a ring passes K/V blocks, so it cannot run the absorbed form's latent.
    """
    if not spec.has_attention:
        raise LcprofError(f"{spec.name} has no attention layers: there is nothing for ring attention to split")
    kv_heads, qk_dim, v_dim = attention_dims(spec, "naive")
    return spec.n_heads, kv_heads, qk_dim, v_dim


#: The ring model counts (query, key) pairs and FLOPs in 64-bit integers (lcprof.cost.ring).
INT64_MAX = (1 << 63) - 1


def check_ring_bounds(n: int, gpus: int, heads: int, head_dim: int, batch: int = 1) -> None:
    """Refuse a ring whose pair or FLOP counts would not fit the ring model's 64-bit integers."""
    # Any rank's executed pairs in one step are at most the full square n x n (tiles included).
    flops_per_pair = 4 * head_dim * heads * batch  # q.k and p.v, 2 FLOPs per multiply-add, every head
    if n * n * flops_per_pair > INT64_MAX:
        n_max = 1
        while (2 * n_max) ** 2 * flops_per_pair <= INT64_MAX:
            n_max *= 2
        raise LcprofError(f"n={n} is beyond what lcprof ring counts exactly in 64-bit integers for this "
                          f"model (largest power of two: n={n_max}); use a smaller n or batch")


def ring_report(model, n, *, gpus: int = 8, link: str = "nvlink4", gpu: str = "h100-sxm", dtype: str = "bf16",
                tile: int = 128, batch: int = 1, calibration=None) -> tuple[Table, Table]:
    """(summary per layout, per-step table per layout) for one layer of ``model`` at length n.

    Compute runs at the striped-ring kernel's calibrated attention rate (at the tokens per device)
    when the rates (``lcprof.rates.resolve_rates(gpu, calibration)``) have one, else the GEMM peak;
    the ``rates`` column says which."""
    spec = load(model)
    ns = parse_token_list(n)
    if len(ns) != 1:
        raise LcprofError("lcprof ring takes one n")
    n_tok = ns[0]
    if gpus < 1:
        raise LcprofError(f"--gpus must be >= 1, got {gpus}")
    if n_tok < gpus:
        raise LcprofError(f"n={n_tok} is smaller than the number of GPUs ({gpus})")
    from lcprof.rates import resolve_rates

    rates = resolve_rates(gpu, calibration)
    hw = rates.hardware
    bw = link_bandwidth(link)
    d = dtype_name(dtype, allowed=("bf16", "fp16", "fp32", "fp8"))
    peak = hw.peak(d)
    kernel = hw.attention_rate("striped-ring", d, [n_tok / gpus])
    label = rates.label
    if kernel is not None:
        peak = float(kernel[0])
        label += "; attention at the striped-ring kernel's measured rate"
    heads, kv_heads, qk_dim, v_dim = ring_shapes(spec)
    check_ring_bounds(n_tok, gpus, heads, max(qk_dim, v_dim), batch)
    global_layers = sum(1 for layer in spec.layers if layer.attn == "global")
    rows, steps = [], []
    for layout in ("contiguous", "striped"):
        imb = ringcost.load_imbalance(n_tok, gpus, layout)
        m = ringcost.ring_step_model(n_tok, gpus, heads, kv_heads, qk_dim, dtype_bytes(d), peak, bw,
                                     layout, tile=tile, batch=batch, v_head_dim=v_dim)
        rec = {"model": spec.name, "n": n_tok, "dtype": d, "gpu": hw.key, "gpus": gpus, "link": str(link),
               "link_bytes_per_s": bw, "layout": layout, "load_imbalance": imb.imbalance, "rates": label,
               "compute_flops_per_s": peak}
        rec.update({k: v for k, v in m.summary().items() if k not in ("n", "world", "layout")})
        rec["attention_time_all_global_layers_s"] = m.total_time_s * global_layers
        rec["global_layers"] = global_layers
        rows.append(rec)
        for r in m.records():
            steps.append({"model": spec.name, **r})
    return Table.from_records(rows), Table.from_records(steps)

"""`lcprof ring`: the analytic ring-attention report for a model (no torch).

Per layer, for the contiguous and the striped layout on ``gpus`` devices joined by ``link``:
exact causal load imbalance, per-step compute and communication time (roofline on the GPU's
peak for the dtype), exposed communication, the fewest tokens per device that hide the
transfer, and memory per device including the two K/V buffers of double buffering.
"""

from __future__ import annotations

from lcprof.cost import ring as ringcost
from lcprof.errors import LcprofError
from lcprof.hardware import get_gpu, link_bandwidth
from lcprof.analytic import load
from lcprof.table import Table
from lcprof.units import dtype_bytes, dtype_name, parse_token_list


def ring_shapes(spec) -> tuple[int, int, int]:
    """(heads, kv_heads, head_dim) of the attention the ring runs (MLA: decompressed, naive form)."""
    if spec.mla is not None:
        return spec.n_heads, spec.n_heads, spec.head_dim
    return spec.n_heads, spec.n_kv_heads, spec.head_dim


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
                tile: int = 128, batch: int = 1) -> tuple[Table, Table]:
    """(summary per layout, per-step table per layout) for one layer of ``model`` at length n."""
    spec = load(model)
    ns = parse_token_list(n)
    if len(ns) != 1:
        raise LcprofError("lcprof ring takes one n")
    n_tok = ns[0]
    if gpus < 1:
        raise LcprofError(f"--gpus must be >= 1, got {gpus}")
    if n_tok < gpus:
        raise LcprofError(f"n={n_tok} is smaller than the number of GPUs ({gpus})")
    hw = get_gpu(gpu)
    bw = link_bandwidth(link)
    d = dtype_name(dtype, allowed=("bf16", "fp16", "fp32", "fp8"))
    peak = hw.peak(d)
    heads, kv_heads, head_dim = ring_shapes(spec)
    check_ring_bounds(n_tok, gpus, heads, head_dim, batch)
    global_layers = sum(1 for layer in spec.layers if layer.attn == "global")
    rows, steps = [], []
    for layout in ("contiguous", "striped"):
        imb = ringcost.load_imbalance(n_tok, gpus, layout)
        m = ringcost.ring_step_model(n_tok, gpus, heads, kv_heads, head_dim, dtype_bytes(d), peak, bw,
                                     layout, tile=tile, batch=batch)
        rec = {"model": spec.name, "n": n_tok, "dtype": d, "gpu": hw.key, "gpus": gpus, "link": str(link),
               "link_bytes_per_s": bw, "layout": layout, "load_imbalance": imb.imbalance}
        rec.update({k: v for k, v in m.summary().items() if k not in ("n", "world", "layout")})
        rec["attention_time_all_global_layers_s"] = m.total_time_s * global_layers
        rec["global_layers"] = global_layers
        rows.append(rec)
        for r in m.records():
            steps.append({"model": spec.name, **r})
    return Table.from_records(rows), Table.from_records(steps)

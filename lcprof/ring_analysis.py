"""`lcprof ring`: the analytic ring-attention report for a model (no torch).

Per layer, for the contiguous and the striped layout on ``gpus`` devices joined by ``link``:
exact causal load imbalance, per-step compute and communication time (roofline on the GPU's
peak for the dtype), exposed communication, the fewest tokens per device that hide the
transfer, and memory per device including the two K/V buffers of double buffering.
"""

from __future__ import annotations

import pandas as pd

from lcprof.cost import ring as ringcost
from lcprof.errors import LcprofError
from lcprof.hardware import get_gpu, link_bandwidth
from lcprof.spec import load_model
from lcprof.units import dtype_bytes, dtype_name, parse_token_list


def ring_shapes(spec) -> tuple[int, int, int]:
    """(heads, kv_heads, head_dim) of the attention the ring runs (MLA: decompressed, naive form)."""
    if not spec.has_attention:
        raise LcprofError(f"{spec.name} has no attention layers: there is nothing for ring attention to split")
    if spec.mla is not None:
        return spec.n_heads, spec.n_heads, spec.head_dim
    return spec.n_heads, spec.n_kv_heads, spec.head_dim


def ring_report(model, n, *, gpus: int = 8, link: str = "nvlink4", gpu: str = "h100-sxm", dtype: str = "bf16",
                tile: int = 128, batch: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per layout, per-step table per layout) for one layer of ``model`` at length n."""
    spec = load_model(model)
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
    summary = pd.DataFrame(rows)
    return summary, pd.DataFrame(steps)

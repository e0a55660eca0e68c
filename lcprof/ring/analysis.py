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


def ring_shapes(spec, layer=None) -> tuple[int, int, int, int]:
    """(heads, kv_heads, qk_dim, v_dim) of the attention the ring runs in ``layer`` (default: the
    model's attention shapes).

    From :func:`lcprof.cost.ops.attention_dims`, the one source of attention dims, in MLA's
    naive form (K and V decompressed per query head: DeepSeek-V3 has qk_dim 192 = 128 + 64
    rope, v_dim 128); a ring passes K/V blocks, so it cannot run the absorbed form's latent.
    """
    if not spec.has_attention:
        raise LcprofError(f"{spec.name} has no attention layers: there is nothing for ring attention to split")
    kv_heads, qk_dim, v_dim = attention_dims(spec, "naive", layer)
    heads = spec.n_heads if (spec.mla is not None or layer is None) else spec.attn_dims(layer).n_heads
    return heads, kv_heads, qk_dim, v_dim


def check_ringable(spec) -> None:
    """Refuse, in one line, a model with sparse top-k (DSA) layers: which ring step holds a query's
    selected keys depends on the indexer's scores, so a step's work is data-dependent."""
    sparse = [i for i, lyr in enumerate(spec.layers) if lyr.attn == "sparse"]
    if sparse:
        k = spec.layers[sparse[0]].top_k
        raise LcprofError(f"{spec.name}: {len(sparse)} of its {spec.n_layers} layers are sparse top-{k} attention "
                          f"(DSA): each query's {k} keys are picked by the indexer's scores from any rank, so how much "
                          "of a ring step's block is computed depends on the data; lcprof ring prices dense causal "
                          "attention only")


def layer_groups(spec) -> tuple[dict, dict, dict, int]:
    """(ringed, windowed, mixers, mlp_only): global attention layers by their dims (a LayerSpec
    of each -> count), sliding/chunked attention layers by (mask, window, dims), linear-time mixers
    by kind, and the number of layers that run no token mixer."""
    ringed: dict = {}
    windowed: dict = {}
    mixers: dict = {}
    mlp_only = 0
    for lyr in spec.layers:
        if not lyr.mixers:
            mlp_only += 1
        for kind in lyr.mixers:
            if kind != "attention":
                mixers[kind] = mixers.get(kind, 0) + 1
        if not lyr.has_attention:
            continue
        key = (lyr.attn, lyr.window, ring_shapes(spec, lyr))
        target = ringed if lyr.attn == "global" else windowed
        if key not in target:
            target[key] = [lyr, 0]
        target[key][1] += 1
    return ({k: tuple(v) for k, v in ringed.items()}, {k: tuple(v) for k, v in windowed.items()}, mixers,
            mlp_only)


def _other_layers(spec, n_tok, gpus, windowed, mixers, mlp_only, *, dtype, batch, peak, bw) -> list[dict]:
    """One record per group of layers the ring does not run: what each needs instead."""
    from lcprof.cost import context_parallel as cp
    from lcprof.cost.kinds import LABELS

    out = []
    base = {"model": spec.name, "n": n_tok, "gpus": gpus, "dtype": dtype}
    for kind, count in mixers.items():
        rec = cp.state_pass(spec.mixer(kind), n_tok, gpus, dtype=dtype, batch=batch, peak_flops_per_s=peak,
                            link_bytes_per_s=bw)
        out.append({**base, "layer_kind": LABELS.get(kind, kind), "layers": count,
                    "needs": f"its state passed rank to rank once per layer: {gpus - 1} sequential hops of "
                             f"{rec['state_bytes_per_hop']} bytes (rank r waits for rank r-1: no faster than one device)",
                    "sequential": True, **rec,
                    "time_all_layers_s": count * rec["sequential_time_per_layer_s"]})
    for (attn, window, _dims), (lyr, count) in windowed.items():
        rec = cp.window_halo(spec, lyr, n_tok, gpus, dtype_bytes=dtype_bytes(dtype), batch=batch,
                             peak_flops_per_s=peak, link_bytes_per_s=bw)
        label = f"{attn} attention ({'window' if attn == 'sliding' else 'chunk'} {window})"
        out.append({**base, "layer_kind": label, "layers": count,
                    "needs": f"a halo of {rec['halo_tokens_max']} tokens' K/V from the ranks before (contiguous "
                             "layout), once, all ranks at once; no ring",
                    "sequential": False, **rec, "time_all_layers_s": count * rec["time_per_layer_s"]})
    if mlp_only:
        out.append({**base, "layer_kind": "MLP only", "layers": mlp_only,
                    "needs": "nothing: per-token work, no tokens cross ranks", "sequential": False,
                    "time_all_layers_s": 0.0})
    return out


def ring_report(model, n, *, gpus: int = 8, link: str = "nvlink4", gpu: str = "h100-sxm", dtype: str = "bf16",
                tile: int = 128, batch: int = 1, calibration=None) -> tuple[Table, Table, Table]:
    """(summary per layout and ringed layer shape, per-step table, the other layers' needs) for
    ``model`` at length n.

    The ring runs only the global (full causal) attention layers, each with its own dims; the
    summary has one row per layout and distinct attention shape, with ``layers`` of that shape and
    their ``attention_time_layers_s``. Linear-time mixers, sliding/chunked attention and MLP-only
    layers are described in the third table (:mod:`lcprof.cost.context_parallel`). Sparse (DSA)
    layers are refused (:func:`check_ringable`).

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
    ringcost.tokens_per_device(n_tok, gpus)  # refuses n and G beyond what the ring model counts
    check_ringable(spec)
    ringed, windowed, mixers, mlp_only = layer_groups(spec)
    if not ringed and not windowed:
        raise LcprofError(f"{spec.name} has no attention layers ({len(spec.layers)} layers: "
                          f"{_schedule(spec)}): there is nothing for ring attention to split")
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
    rows, steps = [], []
    for (_attn, _w, (heads, kv_heads, qk_dim, v_dim)), (_lyr, count) in ringed.items():
        for layout in ("contiguous", "striped"):
            imb = ringcost.load_imbalance(n_tok, gpus, layout)
            m = ringcost.ring_step_model(n_tok, gpus, heads, kv_heads, qk_dim, dtype_bytes(d), peak, bw,
                                         layout, tile=tile, batch=batch, v_head_dim=v_dim)
            rec = {"model": spec.name, "n": n_tok, "dtype": d, "gpu": hw.key, "gpus": gpus, "link": str(link),
                   "link_bytes_per_s": bw, "layout": layout, "load_imbalance": imb.imbalance, "rates": label,
                   "compute_flops_per_s": peak, "layers": count, "model_layers": spec.n_layers,
                   "heads": heads, "kv_heads": kv_heads, "head_dim": qk_dim, "v_head_dim": v_dim}
            rec.update({k: v for k, v in m.summary().items() if k not in ("n", "world", "layout")})
            rec["attention_time_layers_s"] = m.total_time_s * count
            rows.append(rec)
            for r in m.records():
                steps.append({"model": spec.name, "layers": count, **r})
    others = _other_layers(spec, n_tok, gpus, windowed, mixers, mlp_only, dtype=d, batch=batch, peak=hw.peak(d),
                           bw=bw)
    return Table.from_records(rows), Table.from_records(steps), Table.from_records(others)


def _schedule(spec) -> str:
    from lcprof.cost.kinds import schedule_summary

    return schedule_summary(spec)

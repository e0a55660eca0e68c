"""What-if grid: long length x KV dtype x TP degree x memory utilization, vectorized. No torch.

Everything that depends on one axis is computed once per value of that axis (prefill roofline
once per unique length, weights once per TP, block bytes once per (KV dtype, TP)); the scenarios
are then one numpy broadcast over the (long, kv_dtype, tp, memory_utilization) grid. The same
formulas as ``lcprof.plan.capacity.plan`` (see there and ``lcprof.plan.memory``/``compute``);
a test checks the grid against ``plan`` scenario by scenario.

Rows whose TP cannot shard the heads (or does not split ``gpus`` into whole replicas) get ``status = invalid`` and a
``reason``; rows that do not fit get ``does_not_fit`` (weights exceed usable memory),
``no_kv_room`` (weights + activation reserve exceed it) or ``long_does_not_fit`` (the KV pool
holds less than one long request). Numeric columns of such rows are zero or NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lcprof.cost.model import kv_bytes_per_token, weight_bytes
from lcprof.plan.compute import (Rates, allreduce_s, decode_parts, decode_weight_read_bytes, prefill_1gpu_s,
                                 resolve_rates)
from lcprof.plan.inputs import KV_DTYPES, WEIGHT_DTYPES, parse_dtype_list, tp_problem
from lcprof.plan.memory import (GIB, activation_reserve_bytes_per_gpu, blocks_per_request,
                                kv_block_bytes_per_gpu)
from lcprof.spec import ModelSpec, load_model
from lcprof.units import dtype_name, parse_token_list, parse_tokens

STATUS_CODES = ("ok", "invalid", "does_not_fit", "no_kv_room", "long_does_not_fit")

#: Columns the table view of the grid prints.
TABLE_COLUMNS = ["long_n", "kv_dtype", "tp", "memory_utilization", "status", "kv_budget_bytes_per_gpu",
                 "max_concurrent_long", "max_concurrent_short", "max_concurrent_short_deployment",
                 "displacement_kv", "prefill_long_s", "displacement_prefill", "ttft_short_behind_long_s", "reason"]


def grid_arrays(spec: ModelSpec, rates: Rates, *, longs, short: int, kv_dtypes, tps, memory_utilizations,
                dtype: str = "bf16", block_size: int = 16, chunk: int | None = None, gpus: int | None = None
                ) -> dict[str, np.ndarray]:
    """The grid as arrays of shape (len(longs), len(kv_dtypes), len(tps), len(memory_utilizations)).

    Returns a dict of broadcastable arrays (plus ``status_code`` and the axes ``long_n``,
    ``kv_dtype``, ``tp``, ``memory_utilization``); ``grid_frame`` flattens it to one row per scenario.
    """
    L = np.asarray(longs, dtype=np.int64)[:, None, None, None]  # (N, 1, 1, 1)
    T = np.asarray(tps, dtype=np.int64)[None, None, :, None]  # (1, 1, T, 1)
    U = np.asarray(memory_utilizations, dtype=np.float64)[None, None, None, :]  # (1, 1, 1, U)
    n_l, n_d, n_t = L.shape[0], len(kv_dtypes), T.shape[2]
    hw = rates.hw

    # --- per TP: validity and weights ----------------------------------------------------------
    problems = [tp_problem(spec, int(t)) for t in tps]
    if gpus is not None:
        # --gpus smaller than tp: the scenario is one replica of tp GPUs (what a what-if over TP
        # degrees asks); --gpus larger but not a multiple of tp cannot be split into replicas.
        problems = [p or (f"tp={t} does not divide --gpus {gpus} into whole replicas"
                          if gpus > t and gpus % t else None) for p, t in zip(problems, tps)]
    valid_t = np.array([p is None for p in problems])[None, None, :, None]
    w_t = np.array([weight_bytes(spec, dtype, int(t)) if p is None else 0 for p, t in zip(problems, tps)],
                   dtype=np.int64)[None, None, :, None]
    # --- per (kv dtype, TP): block bytes -----------------------------------------------------------
    bb = np.ones((1, n_d, n_t, 1), dtype=np.int64)
    kv_tok = np.zeros((1, n_d, n_t, 1), dtype=np.float64)
    for i, d in enumerate(kv_dtypes):
        for j, t in enumerate(tps):
            if problems[j] is None:
                bb[0, i, j, 0] = kv_block_bytes_per_gpu(spec, d, int(t), block_size)
    # --- per long length: blocks, activation reserve, prefill roofline --------------------------
    longs_1d = L[:, 0, 0, 0]
    uniq, inv = np.unique(np.concatenate([longs_1d, [short]]), return_inverse=True)
    b_all = blocks_per_request(spec, uniq, block_size)
    b_long = b_all[inv[:n_l]][:, None, None, None]
    b_short = int(b_all[inv[-1]])
    reserve_tokens = np.minimum(longs_1d, chunk) if chunk else longs_1d
    act = np.zeros((n_l, 1, n_t, 1), dtype=np.int64)  # (N, 1, T, 1): one TP rank's share
    for j, t in enumerate(tps):
        if problems[j] is None:
            act[:, 0, j, 0] = activation_reserve_bytes_per_gpu(spec, reserve_tokens, dtype=dtype, tp=int(t))
    t1_all = prefill_1gpu_s(spec, rates, uniq, dtype=dtype)  # one roofline per unique length
    t1_long = t1_all[inv[:n_l]][:, None, None, None]
    t1_short = float(t1_all[inv[-1]])
    link = rates.link_bytes_per_s
    ar_long = allreduce_s(spec, L, T, link, dtype) if link else np.zeros((n_l, 1, n_t, 1))
    ar_short = allreduce_s(spec, short, T, link, dtype) if link else np.zeros((1, 1, n_t, 1))
    prefill_long = t1_long / T + ar_long  # (N, 1, T, 1)
    prefill_short = t1_short / T + ar_short  # (1, 1, T, 1)

    # --- the scenarios -----------------------------------------------------------------------------
    usable = np.floor(hw.memory_bytes * U).astype(np.int64)  # (1, 1, 1, U)
    budget = usable - w_t - act  # (N, 1, T, U)
    pool = np.where(budget > 0, budget // bb, 0)  # (N, D, T, U)
    c_long = pool // b_long
    c_short = pool // b_short
    lost = np.where(pool >= b_long, c_short - np.maximum(pool - b_long, 0) // b_short, c_short)

    # decode step with the pool full of short requests (per GPU)
    f_s1, _ = decode_parts(spec, [short], tp=1, dtype=dtype, kv_dtype="bf16")
    kv_s = np.zeros((1, n_d, n_t, 1))
    for i, d in enumerate(kv_dtypes):
        for j, t in enumerate(tps):
            if problems[j] is None:
                kv_s[0, i, j, 0] = decode_parts(spec, [short], tp=int(t), dtype=dtype, kv_dtype=d)[1][0]
                kv_tok[0, i, j, 0] = kv_bytes_per_token(spec, d, int(t))
    batch = np.maximum(c_short, 1)
    w_read = decode_weight_read_bytes(spec, w_t, batch, dtype=dtype, tp=T)
    step_mem = (w_read + batch * kv_s) / hw.hbm_bytes_per_s
    step_comp = batch * float(f_s1[0]) / T / hw.peak(dtype)
    ar_dec = allreduce_s(spec, batch, T, link, dtype) if link else 0.0
    tpot_full = np.maximum(step_mem, step_comp) + ar_dec

    code = np.zeros(np.broadcast_shapes(pool.shape, U.shape, L.shape), dtype=np.int8)
    code = np.where(pool < b_long, 4, code)
    code = np.where(budget <= 0, 3, code)
    code = np.where(w_t > usable, 2, code)
    code = np.where(~valid_t | (L < short), 1, code)
    ok = code == 0
    return {
        "long_n": L, "kv_dtype_index": np.arange(n_d)[None, :, None, None], "tp": T, "memory_utilization": U,
        "status_code": code, "replicas": np.maximum(gpus // T, 1) if gpus is not None else np.ones_like(T),
        "weights_bytes_per_gpu": np.where(valid_t, w_t, 0), "activation_reserve_bytes_per_gpu": np.where(valid_t, act, 0),
        "kv_budget_bytes_per_gpu": np.where(valid_t, budget, 0), "kv_block_bytes_per_gpu": np.where(valid_t, bb, 0),
        "kv_bytes_per_token_per_gpu": np.where(valid_t, kv_tok, 0).astype(np.int64),
        "kv_pool_blocks": np.where(valid_t, pool, 0), "kv_blocks_long": b_long, "kv_blocks_short": b_short,
        "max_concurrent_long": np.where(valid_t, c_long, 0), "max_concurrent_short": np.where(valid_t, c_short, 0),
        "short_requests_lost_per_long": np.where(valid_t, lost, 0),
        "displacement_kv": b_long / b_short,
        "prefill_long_s": np.where(valid_t, prefill_long, np.nan),
        "prefill_short_s": np.where(valid_t, prefill_short, np.nan),
        "displacement_prefill": np.where(valid_t, prefill_long / prefill_short, np.nan),
        "ttft_short_behind_long_s": np.where(valid_t, prefill_long + prefill_short, np.nan),
        "tpot_full_short_s": np.where(ok | (code == 4), tpot_full, np.nan),
        "_problems": np.array([p or "" for p in problems], dtype=object),
        "_usable": usable,
    }


def grid_frame(arrs: dict, *, spec: ModelSpec, gpu: str, gpus: int | None, kv_dtypes, dtype: str, short: int,
               block_size: int) -> pd.DataFrame:
    """Flatten ``grid_arrays`` to one row per scenario (long-major order)."""
    shape = arrs["status_code"].shape
    flat = {k: np.broadcast_to(v, shape).ravel() for k, v in arrs.items() if not k.startswith("_")}
    code = flat.pop("status_code")
    n = code.size
    df = pd.DataFrame({"model": np.full(n, spec.name, dtype=object), "gpu": gpu,
                       "gpus": flat["tp"] * flat["replicas"],
                       "tp": flat.pop("tp"), "replicas": flat.pop("replicas"), "dtype": dtype,
                       "kv_dtype": np.asarray(kv_dtypes, dtype=object)[flat.pop("kv_dtype_index")],
                       "memory_utilization": flat.pop("memory_utilization"), "block_size": block_size,
                       "long_n": flat.pop("long_n"), "short_n": short,
                       "status": np.asarray(STATUS_CODES, dtype=object)[code], "reason": ""})
    for k, v in flat.items():
        df[k] = v
    df["max_concurrent_short_deployment"] = df["max_concurrent_short"] * df["replicas"]
    df["max_concurrent_long_deployment"] = df["max_concurrent_long"] * df["replicas"]
    # reasons, only for the rows that need one (string ops per status, not per row)
    if (code != 0).any():
        reason = df["reason"].to_numpy(dtype=object).copy()
        t_idx = np.broadcast_to(np.arange(shape[2])[None, None, :, None], shape).ravel()
        usable = pd.Series(np.broadcast_to(arrs["_usable"], shape).ravel() / GIB)
        gib_of = (lambda col, m: (df.loc[m, col] / GIB).map("{:.2f}".format))
        m = code == 1
        if m.any():
            probs = arrs["_problems"][t_idx[m]]
            longer = (f"long shorter than short ({short} tokens)")
            reason[m] = np.where(probs == "", longer, probs)
        m = code == 2
        if m.any():
            over = (df.loc[m, "weights_bytes_per_gpu"].to_numpy() / GIB - usable[m].to_numpy())
            reason[m] = ("weights " + gib_of("weights_bytes_per_gpu", m) + " GiB per GPU exceed usable "
                         + usable[m].map("{:.2f}".format).to_numpy() + " GiB by "
                         + pd.Series(over).map("{:.2f}".format).to_numpy() + " GiB").to_numpy()
        m = code == 3
        if m.any():
            reason[m] = ("nothing left for KV: short by "
                         + (-df.loc[m, "kv_budget_bytes_per_gpu"] / GIB).map("{:.2f}".format) + " GiB per GPU").to_numpy()
        m = code == 4
        if m.any():
            reason[m] = ("one long request needs " + df.loc[m, "kv_blocks_long"].astype(str) + " KV blocks; the pool holds "
                         + df.loc[m, "kv_pool_blocks"].astype(str)).to_numpy()
        df["reason"] = reason
    return df


def capacity_grid(model: str | ModelSpec, *, gpu: str = "h100-sxm", gpus: int | None = None, tps=(1,),
                  dtype: str = "bf16", kv_dtypes=("bf16",), memory_utilizations=(0.9,), block_size: int = 16,
                  longs=("128k",), short="4k", chunk=None, calibration: str | None = None) -> pd.DataFrame:
    """One row per (long length, KV dtype, TP, memory utilization) scenario; see the module docstring.

    ``gpus`` None: each scenario is one replica of ``tp`` GPUs; otherwise a fixed deployment.
    """
    spec = load_model(model)
    from lcprof.cost.model import refuse_state  # the planner does not charge mixer state yet (issue 14)

    refuse_state(spec, "lcprof plan")
    dtype = dtype_name(dtype, allowed=WEIGHT_DTYPES)
    kv_dtypes = parse_dtype_list(kv_dtypes, KV_DTYPES)
    longs = parse_token_list(list(longs) if isinstance(longs, (list, tuple, np.ndarray)) else longs)
    short_n = parse_tokens(short)
    chunk_n = parse_tokens(chunk) if chunk not in (None, 0, "0") else None
    rates = resolve_rates(gpu, calibration)
    arrs = grid_arrays(spec, rates, longs=longs, short=short_n, kv_dtypes=kv_dtypes, tps=list(tps),
                       memory_utilizations=list(memory_utilizations), dtype=dtype, block_size=block_size,
                       chunk=chunk_n, gpus=gpus)
    return grid_frame(arrs, spec=spec, gpu=rates.hw.key, gpus=gpus, kv_dtypes=kv_dtypes, dtype=dtype,
                      short=short_n, block_size=block_size)

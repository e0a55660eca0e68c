"""What-if grid: long length x KV dtype x parallel layout x memory utilization, vectorized. No torch.

The grid is computed by the planner's own functions (no second copy of a formula): for each
(layout, KV dtype) the memory stage's pieces (``memory.kv_layout``, ``stage_weights``,
``stage_activation_bytes``, ``pool_blocks``, ``engines``) run once over arrays of long lengths x
utilizations; capacity uses ``capacity.concurrency`` / ``short_requests_lost``; prefill times come
from ONE ``compute.prefill_parts`` call over every chunk of every length, combined per layout by
``compute.combine_prefill`` + ``comm_s`` + ``pipelined_s`` -- what ``plan`` calls one length at a time;
decode from ``compute.decode_step_s``.

Layouts are every (tp, dp, ep, pp) of the given lists (``ep`` 1 or tp x dp). Rows whose layout or
dtype is not valid get ``status = invalid`` and a ``reason``; otherwise ``does_not_fit`` (weights
exceed what the engine may use), ``no_kv_room`` (nothing left for KV), ``engine_refuses`` (vLLM would
not start: one max_model_len request does not fit), ``too_long`` (longer than the engine's
max_model_len) or ``long_does_not_fit`` (the pool holds less than one long request). Numeric
columns of such rows are zero or NaN.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from lcprof.errors import LcprofError
from lcprof.plan import engines as E
from lcprof.plan.capacity import concurrency, short_requests_lost
from lcprof.plan.compute import (Rates, chunk_schedule, combine_prefill, comm_s, decode_parts, decode_step_s,
                                 deployment_rates, prefill_parts)
from lcprof.plan.engines import EngineSettings
from lcprof.plan.kvformat import KV_DTYPES
from lcprof.plan.memory import (deployment_layout, heaviest_stage, kv_cache_tokens, pool_blocks,
                                stage_activation_bytes, stage_weights)
from lcprof.plan.parallel import Parallel, parallel_problem
from lcprof.plan.scenario import Deployment, build_mask, build_precision
from lcprof.plan.inputs import parse_dtype_list
from lcprof.spec import ModelSpec, load_model
from lcprof.units import parse_token_list, parse_tokens

STATUS_CODES = ("ok", "invalid", "does_not_fit", "no_kv_room", "engine_refuses", "too_long", "long_does_not_fit")
_CODE = {s: i for i, s in enumerate(STATUS_CODES)}

#: Columns the table view of the grid prints.
TABLE_COLUMNS = ["long_n", "kv_dtype", "layout", "memory_utilization", "status", "kv_budget_bytes_per_gpu",
                 "kv_cache_tokens", "max_concurrent_long", "max_concurrent_short", "max_concurrent_short_deployment",
                 "displacement_kv", "prefill_long_s", "displacement_prefill", "ttft_short_behind_long_s", "reason"]


def layouts(tps=(1,), dps=(1,), eps=(1,), pps=(1,)) -> list[Parallel]:
    """Every (tp, dp, ep, pp) combination, in that order."""
    return [Parallel(int(t), int(d), int(e), int(p)) for t, d, e, p in itertools.product(tps, dps, eps, pps)]


def _lengths_schedule(lengths, chunk: int | None):
    """The distinct (size, start) prefill pieces of every length's chunks and of every unchunked
    length (chunks of different lengths coincide: (chunk, j x chunk) is in every longer one), with,
    per length, the indices of its chunks (``members``) and of its unchunked piece (``whole``)."""
    pieces: dict[tuple[int, int], int] = {}
    members, whole = [], []
    for n in lengths:
        if chunk and chunk < n:
            sizes, starts = chunk_schedule(int(n), int(chunk))
        else:
            sizes, starts = np.array([n]), np.array([0])
        members.append(np.array([pieces.setdefault((int(a), int(b)), len(pieces)) for a, b in zip(sizes, starts)]))
        whole.append(pieces.setdefault((int(n), 0), len(pieces)))
    keys = np.array(list(pieces), dtype=np.int64)
    return keys[:, 0], keys[:, 1], members, np.array(whole)


def grid_arrays(spec: ModelSpec, rates: Rates, *, longs, short: int, kv_dtypes, layouts: list[Parallel],
                memory_utilizations=None, weights: str = "bf16", attn_dtype: str | None = None,
                settings: EngineSettings = EngineSettings(), gpus: int | None = None, state_dtype: str | None = None,
                mask=None) -> dict[str, np.ndarray]:
    """The grid as arrays of shape (len(longs), len(kv_dtypes), len(layouts), len(utilizations)).

    ``memory_utilizations`` None: each layout's engine default (one column). Returns a dict of
    arrays (plus ``status_code``, ``reason_code`` into ``_reasons`` and the axes); ``grid_frame``
    flattens it."""
    longs = np.asarray(longs, dtype=np.int64)
    n_l, n_d, n_p = len(longs), len(kv_dtypes), len(layouts)
    utils = None if memory_utilizations is None else np.asarray(memory_utilizations, dtype=np.float64)
    n_u = 1 if utils is None else len(utils)
    shape = (n_l, n_d, n_p, n_u)
    f = {k: np.zeros(shape) for k in ("memory_utilization", "requested_bytes_per_gpu", "weights_bytes_per_gpu",
                                      "activation_bytes_per_gpu", "kv_budget_bytes_per_gpu", "kv_block_bytes_per_gpu",
                                      "kv_bytes_per_token_per_gpu", "kv_pool_blocks", "kv_cache_tokens",
                                      "max_num_seqs", "kv_blocks_long", "kv_blocks_short", "max_concurrent_long",
                                      "max_concurrent_short", "short_requests_lost_per_long", "replicas")}
    for k in ("prefill_long_s", "prefill_short_s", "prefill_long_unchunked_s", "ttft_short_behind_long_s",
              "tpot_full_short_s"):
        f[k] = np.full(shape, np.nan)
    code = np.zeros(shape, dtype=np.int8)
    reason = np.zeros(shape, dtype=np.int32)  # index into ``reasons``
    reasons: dict[str, int] = {"": 0}

    def rid(text: str) -> int:
        return reasons.setdefault(text, len(reasons))

    lengths = np.unique(np.concatenate([longs, [short]]))
    inv = {int(n): i for i, n in enumerate(lengths)}
    prepared = None  # (chunk, piece sizes, starts, chunk members, offsets, unchunked pieces, parts)
    cache: dict = {}
    for j, par in enumerate(layouts):
        eff_gpus = gpus if gpus is not None and gpus >= par.gpus_per_replica else None
        problem = parallel_problem(spec, par, eff_gpus)
        for i, kvd in enumerate(kv_dtypes):
            if problem is None:
                try:
                    prec = build_precision(spec, settings.engine, weights, kvd, attn_dtype, state_dtype)
                    lim = E.resolve_limits(settings, spec, rates.device, tp=par.tp, dp=par.dp, pp=par.pp)
                except LcprofError as exc:
                    code[:, i, j, :], reason[:, i, j, :] = _CODE["invalid"], rid(str(exc))
                    continue
            else:
                code[:, i, j, :], reason[:, i, j, :] = _CODE["invalid"], rid(problem)
                continue
            dep = Deployment(spec=spec, rates=rates, par=par, gpus=eff_gpus or par.gpus_per_replica, precision=prec,
                             limits=lim, mask=build_mask(mask))
            if prepared is None:
                chunk = lim.chunk_tokens
                sizes, starts, members, whole = _lengths_schedule(lengths, chunk)
                flat_members = np.concatenate(members)
                offsets = np.cumsum([0] + [len(m) for m in members[:-1]])
                prepared = (chunk, sizes, starts, flat_members, offsets, whole,
                            prefill_parts(spec, rates, prec, sizes, starts, mask=dep.mask))
            elif lim.chunk_tokens != prepared[0]:  # pragma: no cover - the chunk is a per-engine constant
                raise LcprofError("the grid needs one prefill chunk for every layout")
            _fill(f, code, reason, rid, cache, (slice(None), i, j), dep, longs, short, utils, prepared, inv)
    f["status_code"] = code
    f["reason_code"] = reason
    f["_reasons"] = np.array(list(reasons), dtype=object)
    f["long_n"] = longs[:, None, None, None] + np.zeros(shape, dtype=np.int64)
    f["kv_dtype_index"] = np.arange(n_d)[None, :, None, None] + np.zeros(shape, dtype=np.int64)
    f["layout_index"] = np.arange(n_p)[None, None, :, None] + np.zeros(shape, dtype=np.int64)
    return f


def _fill(f, code, reason, rid, cache, at, dep: Deployment, longs, short, utils, prepared, inv) -> None:
    """Fill the grid cells ``at`` (all longs x all utils of one layout and KV dtype)."""
    spec, lim, par = dep.spec, dep.limits, dep.par
    chunk, sizes, starts, flat_members, offsets, whole, parts = prepared
    lay = deployment_layout(dep)
    key = (par, lim.engine)
    if key not in cache:  # what does not depend on the KV dtype, once per layout
        weights = stage_weights(spec, dep)
        if lim.engine == "none":
            tokens = np.minimum(longs, chunk) if chunk else longs
        else:
            tokens = np.full(len(longs), lim.max_num_batched_tokens)
        cache[key] = (weights, stage_activation_bytes(spec, dep, tokens[:, None]))
    weights, acts = cache[key]
    heaviest = heaviest_stage(weights)
    U = (np.array([lim.memory_utilization]) if utils is None else utils)[None, :]
    pool, budget, stage = pool_blocks(dep, lay, weights, acts, util=U)
    requested = E.requested_bytes(lim, U) + np.zeros(pool.shape)
    b_long = lay.blocks_per_request(longs)[:, None]
    b_short = int(lay.blocks_per_request([short])[0])
    kv_tokens = kv_cache_tokens(lay, lim, pool)
    if lim.engine == "vllm":
        seqs = np.full(pool.shape, lim.max_num_seqs)
        need = lay.vllm_blocks_at_max_len(lim.max_model_len, lim.max_num_batched_tokens)
    elif lim.engine == "sglang":
        seqs = (np.full(pool.shape, lim.max_num_seqs) if lim.max_num_seqs is not None
                else E.sglang_max_running_requests(kv_tokens, lim.max_model_len))
        need = 0
    else:
        seqs = None if lim.max_num_seqs is None else np.full(pool.shape, lim.max_num_seqs)
        need = 0
    c_long = concurrency(pool, b_long, seqs)
    c_short = concurrency(pool, b_short, seqs)
    lost = short_requests_lost(pool, b_long, b_short, seqs)

    # prefill of every length on this layout (the plan's functions, one length at a time there)
    link, act = dep.rates.link_bytes_per_s, dep.precision.act_dtype
    t_all = combine_prefill(parts, par) + comm_s(spec, par, sizes, link, act)
    t_chunks = t_all[flat_members]
    sums = np.add.reduceat(t_chunks, offsets)
    maxs = np.maximum.reduceat(t_chunks, offsets)
    engine_t = sums / par.pp + (par.pp - 1) * maxs / par.pp
    unchunked = t_all[whole]
    il = np.array([inv[int(n)] for n in longs])
    t_long, t_long_u, t_short = engine_t[il], unchunked[il], engine_t[inv[int(short)]]
    chunked_long = np.array([bool(chunk) and chunk < n for n in longs])
    wait = np.where(chunked_long, maxs[il] / par.pp, t_long_u)

    # decode with the pool full of short requests
    dp_ = decode_parts(dep, [short])
    batch = np.maximum(c_short, 1)
    tpot = decode_step_s(dep, heaviest, flops_per_gpu=batch * float(dp_.flops_per_gpu[0]),
                         kv_read_bytes_per_gpu=batch * float(dp_.kv_read_bytes_per_gpu[0]), batch=batch)

    c = np.zeros(pool.shape, dtype=np.int8)
    c = np.where(pool < b_long, _CODE["long_does_not_fit"], c)
    if lim.max_model_len is not None:
        c = np.where((longs > lim.max_model_len)[:, None], _CODE["too_long"], c)
    if need:
        c = np.where(pool < need, _CODE["engine_refuses"], c)
    c = np.where(budget <= 0, _CODE["no_kv_room"], c)
    if lim.kv_memory_bytes is None:
        c = np.where(heaviest.total_bytes > requested, _CODE["does_not_fit"], c)
    c = np.where((longs < short)[:, None], _CODE["invalid"], c)
    code[at] = c
    r = np.zeros(pool.shape, dtype=np.int32)
    for status, text in (("long_does_not_fit", "one long request needs more KV blocks than the pool holds"),
                         ("too_long", f"longer than {lim.engine}'s max_model_len ({lim.max_model_len})"),
                         ("engine_refuses", f"vLLM would not start: one {lim.max_model_len}-token request "
                                            "does not fit the KV cache"),
                         ("no_kv_room", "nothing left for KV after weights and activation"),
                         ("invalid", f"long shorter than short ({short} tokens)"),
                         ("does_not_fit", f"weights ({heaviest.total_bytes / E.GIB:.2f} GiB per GPU) exceed "
                                          "what the engine may use")):
        hit = c == _CODE[status]
        if hit.any():
            r = np.where(hit, rid(text), r)
    reason[at] = r
    ok = c == 0
    fits = ok | (c == _CODE["long_does_not_fit"])
    f["memory_utilization"][at] = U + np.zeros(pool.shape)
    f["requested_bytes_per_gpu"][at] = requested
    f["weights_bytes_per_gpu"][at] = np.array([w.total_bytes for w in weights])[stage]
    f["activation_bytes_per_gpu"][at] = np.choose(stage, [a + np.zeros(pool.shape) for a in acts])
    f["kv_budget_bytes_per_gpu"][at] = budget
    f["kv_block_bytes_per_gpu"][at] = lay.block_bytes_per_gpu
    f["kv_bytes_per_token_per_gpu"][at] = lay.kv_bytes_per_token_per_gpu()
    f["kv_pool_blocks"][at] = np.where(budget > 0, pool, 0)
    f["kv_cache_tokens"][at] = np.where(budget > 0, kv_tokens, 0)
    f["max_num_seqs"][at] = 0 if seqs is None else seqs
    f["kv_blocks_long"][at] = b_long + np.zeros(pool.shape)
    f["kv_blocks_short"][at] = b_short
    f["max_concurrent_long"][at] = np.where(fits, c_long, 0)
    f["max_concurrent_short"][at] = np.where(fits, c_short, 0)
    f["short_requests_lost_per_long"][at] = np.where(fits, lost, 0)
    f["replicas"][at] = max(dep.replicas, 1)
    f["prefill_long_s"][at] = t_long[:, None] + np.zeros(pool.shape)
    f["prefill_long_unchunked_s"][at] = t_long_u[:, None] + np.zeros(pool.shape)
    f["prefill_short_s"][at] = t_short
    f["ttft_short_behind_long_s"][at] = (wait + t_short)[:, None] + np.zeros(pool.shape)
    f["tpot_full_short_s"][at] = np.where(fits, tpot, np.nan)


def grid_frame(arrs: dict, *, spec: ModelSpec, gpu: str, layouts: list[Parallel], kv_dtypes, weights: str,
               engine: str, short: int) -> pd.DataFrame:
    """Flatten ``grid_arrays`` to one row per scenario (long-major order); string columns are categoricals."""
    shape = arrs["status_code"].shape
    flat = {k: np.asarray(v).ravel() for k, v in arrs.items() if not k.startswith("_")}
    code = flat.pop("status_code").astype(np.int64)
    n = code.size
    li = flat.pop("layout_index")
    per_layout = {k: np.array([getattr(p, k) for p in layouts])[li] for k in ("tp", "dp", "ep", "pp")}
    reasons = list(arrs["_reasons"])
    reason_codes = flat.pop("reason_code")
    df = pd.DataFrame({
        "model": pd.Categorical.from_codes(np.zeros(n, dtype=np.int64), [spec.name]),
        "gpu": gpu, "engine": engine, "weights": weights, "dtype": weights, **per_layout,
        "layout": pd.Categorical.from_codes(li, [p.label for p in layouts]),
        "kv_dtype": pd.Categorical.from_codes(flat.pop("kv_dtype_index"), list(kv_dtypes)),
        "long_n": flat.pop("long_n"), "short_n": short,
        "status": pd.Categorical.from_codes(code, list(STATUS_CODES)),
        "reason": pd.Categorical.from_codes(reason_codes, reasons),
    })
    replicas = flat["replicas"].astype(np.int64)
    df["gpus"] = np.array([p.gpus_per_replica for p in layouts])[li] * replicas
    for k, v in flat.items():
        df[k] = v.astype(np.int64) if k not in ("memory_utilization",) and not k.endswith("_s") else v
    df["displacement_kv"] = df["kv_blocks_long"] / df["kv_blocks_short"]
    df["displacement_prefill"] = df["prefill_long_s"] / df["prefill_short_s"]
    dp_ranks = per_layout["dp"] * replicas
    df["max_concurrent_short_deployment"] = df["max_concurrent_short"] * dp_ranks
    df["max_concurrent_long_deployment"] = df["max_concurrent_long"] * dp_ranks
    assert len(df) == int(np.prod(shape))
    return df


def capacity_grid(model: str | ModelSpec, *, gpu: str = "h100-sxm", gpus: int | None = None, tps=(1,), dps=(1,),
                  eps=(1,), pps=(1,), weights: str = "bf16", kv_dtypes=("bf16",), attn_dtype: str | None = None,
                  memory_utilizations=None, longs=("128k",), short="4k", calibration: str | None = None,
                  attention_backend: str | None = None, state_dtype: str | None = None, mask=None,
                  **engine) -> pd.DataFrame:
    """One row per (long length, KV dtype, layout, memory utilization) scenario (module docstring).

    ``gpus`` None: each scenario is one replica; otherwise a fixed deployment (a layout larger than
    ``gpus`` is one replica of its own size). ``engine`` keywords are EngineSettings fields
    (``chunk`` is max_num_batched_tokens; ``chunk=0`` turns chunked prefill off)."""
    spec = load_model(model)
    kv_dtypes = parse_dtype_list(kv_dtypes, KV_DTYPES)
    longs = parse_token_list(list(longs) if isinstance(longs, (list, tuple, np.ndarray)) else longs)
    short_n = parse_tokens(short)
    chunk = engine.pop("chunk", None)
    if chunk is not None:
        if chunk in (0, "0"):
            engine["chunked"] = False
        else:
            engine["max_num_batched_tokens"] = parse_tokens(chunk)
    settings = EngineSettings(**engine)
    rates = deployment_rates(gpu, calibration, attention_backend=attention_backend)
    lays = layouts(tps, dps, eps, pps)
    arrs = grid_arrays(spec, rates, longs=longs, short=short_n, kv_dtypes=kv_dtypes, layouts=lays,
                       memory_utilizations=memory_utilizations, weights=weights, attn_dtype=attn_dtype,
                       settings=settings, gpus=gpus, state_dtype=state_dtype, mask=mask)
    return grid_frame(arrs, spec=spec, gpu=rates.device.key, layouts=lays, kv_dtypes=kv_dtypes, weights=weights,
                      engine=settings.engine, short=short_n)

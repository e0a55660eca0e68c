"""``plan``: what one long request displaces on a serving deployment, and what to allow it. No torch.

Deployment: ``gpus`` GPUs run ``gpus / tp`` data-parallel replicas of ``tp`` tensor-parallel ranks.
Every number is per GPU (``_per_gpu``), per replica (plain) or for the whole deployment
(``_deployment``). A request's length is its whole context: prompt plus the tokens it generates;
its prefill is timed at that length (the conservative case of a prompt that long).

Memory (per GPU)::

    usable       = memory x memory_utilization
    kv_budget    = usable - weights_per_gpu - activation_reserve_per_gpu
    pool_blocks  = floor(kv_budget / block_bytes_per_gpu)            (vLLM's num_gpu_blocks)
    concurrency  = floor((pool_blocks - shared prefix blocks) / blocks_per_request)
    displacement_kv = blocks(long) / blocks(short)     (bytes ratio; blocks are all one size)

(KV groups, blocks and windows: ``lcprof.plan.memory``; times: ``lcprof.plan.compute``.)

Recommendations (given a TTFT target, optionally a TPOT target):

* ``longest_n_meeting_ttft``: the longest context whose own (unchunked) prefill meets the TTFT;
* ``longest_long_keeping_short_ttft``: the longest long request a short one can wait behind
  (unchunked: t(long) + t(short) <= TTFT; chunked: t(last chunk of long) + t(short) <= TTFT);
* ``long_prefill_time_share_max``: with long prefills interleaved with short ones, a short request
  waits at most one long step (a chunk, or the whole long prefill without chunking) and then runs
  at the remaining share of prefill compute, so ``t_wait + t_short / (1 - f) <= TTFT`` gives
  ``f_max = 1 - t_short / (TTFT - t_wait)`` (0 when even f = 0 misses the target);
* ``long_request_share_max``: the share of requests that may be long when long prefills take f_max
  of prefill time: ``r = (f/t_long) / (f/t_long + (1-f)/t_short)``;
* ``long_kv_pool_share_max``: the share of the KV pool those requests then hold, assuming long and
  short requests stay resident equally long (same number of output tokens):
  ``r b_long / (r b_long + (1-r) b_short)``;
* ``kv_quota_bytes_per_long_request_per_gpu``: the block-rounded KV of a request at
  min(long, longest_n_meeting_ttft) -- a longer one cannot meet the TTFT anyway;
  ``kv_quota_bytes_long_class_per_gpu`` = long_kv_pool_share_max x the KV pool;
* TPOT: ``max_decode_batch_short_tpot``, the largest batch of short requests whose decode step
  meets the TPOT target, and whether the full pool meets it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lcprof.cost.model import kv_bytes_per_token
from lcprof.errors import LcprofError
from lcprof.plan.compute import (chunked_prefill_s, decode_parts, decode_step_s, last_chunk_s,
                                 prefill_s, resolve_rates)
from lcprof.plan.inputs import (KV_DTYPES, WEIGHT_DTYPES, check_tp, parse_mix, parse_seconds)
from lcprof.plan.memory import (blocks_held_by_kind, blocks_per_request, first_held_position, kv_group_kinds,
                                memory_budget, shared_prefix_blocks)
from lcprof.spec import ModelSpec, load_model
from lcprof.units import dtype_name, fmt_tokens, parse_tokens

#: Upper end of the longest-context searches (tokens).
SEARCH_LIMIT = 1 << 24

#: Titles and keys of the record, in display order.
SECTIONS: list[tuple[str, list[str]]] = [
    ("Deployment", ["model", "gpu", "gpus", "tp", "replicas", "dtype", "kv_dtype", "memory_utilization",
                    "block_size", "long_n", "short_n", "prefix_n", "chunk_n", "ttft_target_s", "tpot_target_s",
                    "rates_source"]),
    ("Memory per GPU", ["gpu_memory_bytes", "usable_bytes_per_gpu", "weights_bytes_per_gpu",
                        "activation_reserve_bytes_per_gpu", "activation_reserve_tokens", "kv_budget_bytes_per_gpu",
                        "kv_bytes_per_token_per_gpu", "kv_block_bytes_per_gpu"]),
    ("KV pool per replica", ["kv_groups", "kv_layers_per_group", "kv_pool_blocks", "shared_prefix_blocks",
                             "max_resident_tokens", "kv_blocks_long", "kv_blocks_short", "kv_bytes_long_per_gpu",
                             "kv_bytes_short_per_gpu", "max_concurrent_long", "max_concurrent_short",
                             "max_concurrent_long_deployment", "max_concurrent_short_deployment",
                             "displacement_kv", "short_requests_lost_per_long"]),
    ("Compute per replica", ["prefill_long_s", "prefill_short_s", "displacement_prefill", "prefill_long_chunked_s",
                             "chunk_max_s", "ttft_short_alone_s", "ttft_short_behind_long_s",
                             "ttft_short_behind_long_chunked_s", "ttft_inflation", "ttft_inflation_chunked",
                             "decode_step_short_s", "decode_step_long_s", "decode_batch",
                             "tpot_full_short_s", "tpot_with_one_long_s"]),
    ("Recommendations", ["longest_n_meeting_ttft", "longest_long_keeping_short_ttft",
                         "longest_long_keeping_short_ttft_chunked", "long_prefill_time_share_max",
                         "long_request_share_max", "long_kv_pool_share_max",
                         "kv_quota_bytes_per_long_request_per_gpu", "kv_quota_bytes_long_class_per_gpu",
                         "max_decode_batch_short_tpot", "tpot_met_full_pool"]),
    ("Mix", ["mix", "mix_expected_kv_blocks_per_request", "mix_expected_kv_bytes_per_request_per_gpu",
             "max_concurrent_mix", "max_concurrent_mix_deployment", "mix_long_request_share",
             "mix_long_prefill_time_share", "mix_long_kv_pool_share", "tpot_full_mix_s", "mix_meets_ttft_share"]),
]

NOTES = [
    "Bytes are exact integers; GiB = 2^30 bytes. Rates are decimal (TFLOP/s = 1e12, GB/s = 1e9).",
    "KV groups: layers of one attention kind cut into groups of gcd(layers per kind) layers; a block holds "
    "block_size tokens of every layer of one group, on every TP rank. Sliding layers hold min(n, W) tokens "
    "plus at most one block of slack (blocks wholly outside the window are freed); chunked layers the current chunk.",
    "Activation reserve: peak activation bytes of the largest prefill chunk (tiled attention), divided by TP "
    "(approximation: ranks also hold the full-width residual).",
    "Prefill: roofline of executed FLOPs and bytes (tiled attention, lm_head for the last token) split evenly "
    "over TP ranks, plus 2 ring all-reduces of the activations per layer over the GPU's interconnect; "
    "per-collective latency not modelled.",
    "Decode step: max((weights + resident KV) / HBM bandwidth, FLOPs / peak) + all-reduces; TPOT = one step. "
    "MoE: only the routed experts a batch can visit are read.",
    "TTFT behind a long prefill: worst case (the short request arrives just after the long one starts). "
    "With chunked prefill the scheduler caps the long request at one chunk per step.",
    "Long-request shares assume long and short requests generate the same number of output tokens.",
]


@dataclass
class CapacityPlan:
    """A capacity plan: ``record`` is one flat dict with unit-suffixed keys (JSON/CSV rows);
    ``groups`` the per-KV-group block table, ``mix`` the per-length mix table (or None),
    ``decode`` decode time per token vs resident context."""

    record: dict
    groups: pd.DataFrame
    mix: pd.DataFrame | None
    decode: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    inputs: dict = field(default_factory=dict, repr=False)

    def sections(self) -> list[tuple[str, dict]]:
        """(title, {key: value}) in display order, skipping keys that do not apply."""
        out = []
        for title, keys in SECTIONS:
            part = {k: self.record[k] for k in keys if k in self.record and self.record[k] is not None}
            if part:
                out.append((title, part))
        return out


def _search_max_n(ok, lo: int = 1, hi: int = SEARCH_LIMIT) -> int | None:
    """Largest integer n in [lo, hi] with ok(n) True, for ok monotone (True then False). None if ok(lo) fails."""
    if not ok(lo):
        return None
    if ok(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _group_table(spec: ModelSpec, lengths: dict[str, int], block_size: int, prefix: int, block_bytes: int) -> pd.DataFrame:
    rows = []
    for k in kv_group_kinds(spec):
        for label, n in lengths.items():
            n_arr = np.array([n])
            first = int(first_held_position(k.kind, k.window, n_arr)[0])
            blocks = int(blocks_held_by_kind(k.kind, k.window, n_arr, block_size, prefix)[0])
            rows.append({
                "request": label, "n": n, "kind": k.label, "layers": k.n_layers, "groups": k.n_groups,
                "layers_per_group": k.layers_per_group, "tokens_held": n - first,
                "blocks_per_group": blocks, "blocks": blocks * k.n_groups,
                "kv_bytes_per_gpu": blocks * k.n_groups * block_bytes,
            })
    return pd.DataFrame(rows)


def plan(model: str | ModelSpec, *, gpu: str = "h100-sxm", gpus: int | None = None, tp: int = 1,
         dtype: str = "bf16", kv_dtype: str = "bf16", memory_utilization: float = 0.9, block_size: int = 16,
         long=None, short=None, mix=None, ttft=None, tpot=None, prefix=0, chunk=None,
         decode_batch: int | None = None, calibration: str | None = None, fit: str | None = None) -> CapacityPlan:
    """Plan one deployment for a long and a short request length (or a mix of lengths).

    Lengths accept token syntax (``128k``); ``mix`` is ``"2k:0.8,8k:0.15,32k:0.05"`` or a list of
    (length, share); ``ttft``/``tpot`` are seconds or ``"2s"``/``"50ms"``. Raises LcprofError on bad
    input: TP that does not shard the heads, a GPU count that is not a multiple of TP, a model
    that does not fit, nothing left for KV, a long length below the short one.
    """
    spec = load_model(model)
    from lcprof.cost.model import refuse_state  # the planner does not charge mixer state yet (issue 14)

    refuse_state(spec, "lcprof plan")
    dtype = dtype_name(dtype, allowed=WEIGHT_DTYPES)
    kv_dtype = dtype_name(kv_dtype, allowed=KV_DTYPES)
    tp = int(tp)
    check_tp(spec, tp)
    gpus = tp if gpus is None else int(gpus)
    if gpus <= 0 or gpus % tp:
        raise LcprofError(f"--gpus {gpus} is not a multiple of --tp {tp}; replicas need tp GPUs each")
    replicas = gpus // tp
    if not 0 < memory_utilization <= 1:
        raise LcprofError(f"memory utilization must be in (0, 1], got {memory_utilization}")
    if block_size <= 0:
        raise LcprofError(f"block size must be a positive number of tokens, got {block_size}")
    mix_items = parse_mix(mix) if mix is not None else []
    long_n = parse_tokens(long) if long is not None else (mix_items[-1][0] if mix_items else None)
    short_n = parse_tokens(short) if short is not None else (mix_items[0][0] if mix_items else None)
    if long_n is None or short_n is None:
        raise LcprofError("give --long and --short request lengths, or a --mix of lengths")
    if long_n < short_n:
        raise LcprofError(f"--long {fmt_tokens(long_n)} is shorter than --short {fmt_tokens(short_n)}; "
                          "the long request must be at least as long as the short one")
    prefix_n = 0 if prefix in (None, 0, "0") else parse_tokens(prefix)
    shortest = min([short_n] + [n for n, _ in mix_items])
    if prefix_n >= shortest:
        raise LcprofError(f"--prefix {prefix_n} must be shorter than the shortest request ({shortest} tokens)")
    chunk_n = parse_tokens(chunk) if chunk not in (None, 0, "0") else None
    ttft_s = parse_seconds(ttft, "TTFT target")
    tpot_s = parse_seconds(tpot, "TPOT target")
    rates = resolve_rates(gpu, calibration, fit, spec=spec, dtype=dtype)
    hw = rates.hw
    over = max(long_n, *(n for n, _ in mix_items)) if mix_items else long_n
    warned: list[str] = []

    def warn(msg: str) -> None:
        warned.append(msg)
        warnings.warn(msg, stacklevel=3)

    if over > spec.max_position_embeddings:
        warn(f"{fmt_tokens(over)} tokens exceeds {spec.name}'s max_position_embeddings "
             f"({spec.max_position_embeddings}); planned anyway")

    # ----- memory ---------------------------------------------------------------------------
    longest_new = over - prefix_n
    reserve_tokens = min(chunk_n, longest_new) if chunk_n else longest_new
    mb = memory_budget(spec, memory_bytes=hw.memory_bytes, memory_utilization=memory_utilization, dtype=dtype,
                       kv_dtype=kv_dtype, tp=tp, block_size=block_size, largest_prefill_tokens=reserve_tokens)
    kinds = kv_group_kinds(spec)
    n_groups_total = sum(k.n_groups for k in kinds)
    shared = shared_prefix_blocks(spec, prefix_n, shortest, block_size)
    pool = mb.kv_pool_blocks - shared
    if pool <= 0:
        raise LcprofError(f"nothing left for KV after the shared prefix: {mb.kv_pool_blocks} blocks in the pool, "
                          f"{shared} taken by the {prefix_n}-token prefix")
    b_long, b_short = (int(x) for x in blocks_per_request(spec, [long_n, short_n], block_size, prefix_n))
    c_long, c_short = pool // b_long, pool // b_short
    if c_long == 0:
        warn(f"one {fmt_tokens(long_n)}-token request needs {b_long} KV blocks but the pool holds {pool}; "
             "it does not fit at all")
    lost = c_short - (pool - b_long) // b_short if b_long <= pool else c_short
    bb = mb.kv_block_bytes_per_gpu

    rec: dict = {
        "model": spec.name, "gpu": hw.key, "gpus": gpus, "tp": tp, "replicas": replicas, "dtype": dtype,
        "kv_dtype": kv_dtype, "memory_utilization": memory_utilization, "block_size": block_size,
        "long_n": long_n, "short_n": short_n, "prefix_n": prefix_n, "chunk_n": chunk_n,
        "ttft_target_s": ttft_s, "tpot_target_s": tpot_s, "rates_source": rates.source,
        "gpu_memory_bytes": mb.gpu_memory_bytes, "usable_bytes_per_gpu": mb.usable_bytes_per_gpu,
        "weights_bytes_per_gpu": mb.weights_bytes_per_gpu,
        "activation_reserve_bytes_per_gpu": mb.activation_reserve_bytes_per_gpu,
        "activation_reserve_tokens": reserve_tokens,
        "kv_budget_bytes_per_gpu": mb.kv_budget_bytes_per_gpu,
        "kv_bytes_per_token_per_gpu": kv_bytes_per_token(spec, kv_dtype, tp),
        "kv_block_bytes_per_gpu": bb,
        "kv_groups": n_groups_total, "kv_layers_per_group": kinds[0].layers_per_group,
        "kv_pool_blocks": mb.kv_pool_blocks, "shared_prefix_blocks": shared,
        "max_resident_tokens": mb.kv_pool_blocks * block_size // n_groups_total,
        "kv_blocks_long": b_long, "kv_blocks_short": b_short,
        "kv_bytes_long_per_gpu": b_long * bb, "kv_bytes_short_per_gpu": b_short * bb,
        "max_concurrent_long": c_long, "max_concurrent_short": c_short,
        "max_concurrent_long_deployment": c_long * replicas, "max_concurrent_short_deployment": c_short * replicas,
        "displacement_kv": b_long / b_short, "short_requests_lost_per_long": lost,
    }

    # ----- compute ----------------------------------------------------------------------------
    def pf(n_total, chunked: bool = False) -> float:
        new = int(n_total) - prefix_n
        if chunked and chunk_n and chunk_n < new:
            return chunked_prefill_s(spec, rates, new, chunk_n, prefix_n, tp=tp, dtype=dtype)[0]
        return float(prefill_s(spec, rates, [new], prefix_n, tp=tp, dtype=dtype)[0])

    t_long, t_short = pf(long_n), pf(short_n)
    rec.update({"prefill_long_s": t_long, "prefill_short_s": t_short, "displacement_prefill": t_long / t_short})
    t_short_own = t_short
    t_wait = t_long
    if chunk_n:
        total, t_chunk = chunked_prefill_s(spec, rates, long_n - prefix_n, chunk_n, prefix_n, tp=tp, dtype=dtype)
        t_short_own = pf(short_n, chunked=True)
        t_wait = t_chunk
        rec.update({"prefill_long_chunked_s": total, "chunk_max_s": t_chunk,
                    "ttft_short_behind_long_chunked_s": t_chunk + t_short_own,
                    "ttft_inflation_chunked": (t_chunk + t_short_own) / t_short})
    rec.update({"ttft_short_alone_s": t_short, "ttft_short_behind_long_s": t_long + t_short,
                "ttft_inflation": (t_long + t_short) / t_short})

    f_l, kv_l = (float(x[0]) for x in decode_parts(spec, [long_n], tp=tp, dtype=dtype, kv_dtype=kv_dtype))
    f_s, kv_s = (float(x[0]) for x in decode_parts(spec, [short_n], tp=tp, dtype=dtype, kv_dtype=kv_dtype))
    w = mb.weights_bytes_per_gpu

    def step(n_long: int | np.ndarray, n_short: int | np.ndarray) -> np.ndarray:
        n_long, n_short = np.asarray(n_long, dtype=np.float64), np.asarray(n_short, dtype=np.float64)
        return decode_step_s(spec, rates, weights_bytes_per_gpu=w, flops_per_gpu=n_long * f_l + n_short * f_s,
                             kv_read_bytes_per_gpu=n_long * kv_l + n_short * kv_s, batch=n_long + n_short,
                             tp=tp, dtype=dtype)

    batch = int(decode_batch) if decode_batch else max(c_short, 1)
    rec.update({"decode_step_short_s": float(step(0, 1)), "decode_step_long_s": float(step(1, 0)),
                "decode_batch": batch, "tpot_full_short_s": float(step(0, batch))})
    if b_long <= pool:
        rec["tpot_with_one_long_s"] = float(step(1, max(0, min(batch, c_short) - lost)))

    # ----- recommendations ---------------------------------------------------------------------
    limit = max(SEARCH_LIMIT, long_n)
    if ttft_s is not None:
        rec["longest_n_meeting_ttft"] = _search_max_n(lambda n: pf(n) <= ttft_s, prefix_n + 1, limit)
        rec["longest_long_keeping_short_ttft"] = _search_max_n(lambda n: pf(n) + t_short <= ttft_s, short_n, limit)
        if chunk_n:
            rec["longest_long_keeping_short_ttft_chunked"] = _search_max_n(
                lambda n: float(last_chunk_s(spec, rates, n - prefix_n, chunk_n, tp=tp, dtype=dtype)) + t_short_own
                <= ttft_s, short_n, limit)
        room = ttft_s - t_wait
        f = 0.0 if room <= t_short_own else 1.0 - t_short_own / room
        r = 0.0 if f == 0 else (f / t_long) / (f / t_long + (1 - f) / t_short)
        kv_share = r * b_long / (r * b_long + (1 - r) * b_short)
        n_quota = min(long_n, rec["longest_n_meeting_ttft"] or 0)
        quota = int(blocks_per_request(spec, [n_quota], block_size, prefix_n)[0]) * bb if n_quota > prefix_n else 0
        rec.update({"long_prefill_time_share_max": f, "long_request_share_max": r, "long_kv_pool_share_max": kv_share,
                    "kv_quota_bytes_per_long_request_per_gpu": quota,
                    "kv_quota_bytes_long_class_per_gpu": int(kv_share * pool * bb)})
    if tpot_s is not None:
        bs = np.arange(1, max(c_short, 1) + 1)
        ok = step(0, bs) <= tpot_s
        rec["max_decode_batch_short_tpot"] = int(bs[ok].max()) if ok.any() else 0
        rec["tpot_met_full_pool"] = bool(step(0, max(c_short, 1)) <= tpot_s)

    # ----- mix ----------------------------------------------------------------------------------
    mix_df = None
    if mix_items:
        ns = np.array([n for n, _ in mix_items])
        shares = np.array([s for _, s in mix_items])
        blocks = blocks_per_request(spec, ns, block_size, prefix_n)
        times = np.array([pf(n) for n in ns])
        fl, kv = decode_parts(spec, ns, tp=tp, dtype=dtype, kv_dtype=kv_dtype)
        e_blocks = float(np.sum(shares * blocks))
        c_mix = int(math.floor(pool / e_blocks))
        is_long = ns >= long_n
        mix_df = pd.DataFrame({"n": ns, "share": shares, "kv_blocks": blocks, "kv_bytes_per_gpu": blocks * bb,
                               "prefill_s": times, "max_concurrent_alone": pool // blocks,
                               "long_class": is_long})
        t_share = float(np.sum(shares[is_long] * times[is_long]) / np.sum(shares * times))
        rec.update({
            "mix": ",".join(f"{fmt_tokens(n)}:{s:g}" for n, s in mix_items),
            "mix_expected_kv_blocks_per_request": e_blocks,
            "mix_expected_kv_bytes_per_request_per_gpu": e_blocks * bb,
            "max_concurrent_mix": c_mix, "max_concurrent_mix_deployment": c_mix * replicas,
            "mix_long_request_share": float(np.sum(shares[is_long])),
            "mix_long_prefill_time_share": t_share,
            "mix_long_kv_pool_share": float(np.sum(shares[is_long] * blocks[is_long]) / e_blocks),
            "tpot_full_mix_s": float(decode_step_s(
                spec, rates, weights_bytes_per_gpu=w, flops_per_gpu=c_mix * float(np.sum(shares * fl)),
                kv_read_bytes_per_gpu=c_mix * float(np.sum(shares * kv)), batch=c_mix, tp=tp, dtype=dtype)),
        })
        if ttft_s is not None:
            rec["mix_meets_ttft_share"] = bool(t_share <= rec["long_prefill_time_share_max"])

    # ----- decode vs resident context ------------------------------------------------------------
    ctx = np.unique(np.concatenate([2 ** np.arange(10, int(np.log2(max(long_n, 1024))) + 1), [short_n, long_n]]))
    ctx = ctx[ctx > prefix_n]
    fl, kv = decode_parts(spec, ctx, tp=tp, dtype=dtype, kv_dtype=kv_dtype)
    conc = pool // blocks_per_request(spec, ctx, block_size, prefix_n)
    full = decode_step_s(spec, rates, weights_bytes_per_gpu=w, flops_per_gpu=conc * fl,
                         kv_read_bytes_per_gpu=conc * kv, batch=np.maximum(conc, 1), tp=tp, dtype=dtype)
    decode_df = pd.DataFrame({
        "n": ctx, "kv_read_bytes_per_gpu": kv.astype(np.int64),
        "decode_step_batch1_s": decode_step_s(spec, rates, weights_bytes_per_gpu=w, flops_per_gpu=fl,
                                              kv_read_bytes_per_gpu=kv, batch=1, tp=tp, dtype=dtype),
        "max_concurrent": conc, "tpot_full_pool_s": np.where(conc > 0, full, np.nan),
    })

    groups = _group_table(spec, {"long": long_n, "short": short_n}, block_size, prefix_n, bb)
    inputs = dict(spec=spec, rates=rates, gpu=gpu, gpus=gpus, tp=tp, dtype=dtype, kv_dtype=kv_dtype,
                  memory_utilization=memory_utilization, block_size=block_size, long_n=long_n, short_n=short_n,
                  prefix_n=prefix_n, chunk_n=chunk_n, ttft_s=ttft_s, tpot_s=tpot_s, reserve_tokens=reserve_tokens)
    return CapacityPlan(record=rec, groups=groups, mix=mix_df, decode=decode_df, notes=list(NOTES), inputs=inputs,
                        warnings=warned)


def plans(model, *, kv_dtypes=("bf16",), **kwargs) -> list[CapacityPlan]:
    """One plan per KV dtype (everything else equal)."""
    return [plan(model, kv_dtype=d, **kwargs) for d in kv_dtypes]


def plans_table(ps: list[CapacityPlan]) -> pd.DataFrame:
    """One flat row per plan (what ``--format json/csv`` prints)."""
    return pd.DataFrame([p.record for p in ps])

"""``plan``: what one long request displaces on a serving deployment, and what to allow it. No torch.

A plan runs four stages on a :class:`~lcprof.plan.scenario.Deployment` and a
:class:`~lcprof.plan.scenario.Workload`:

1. **memory** (``lcprof.plan.memory.memory_stage``): the engine's accounting -- weights as loaded,
   the profile run's activation, non-torch memory, the KV budget, the paged pool, and what the
   engine logs at startup ("GPU KV cache size", "Maximum concurrency ...");
2. **capacity** (:func:`capacity_stage`): blocks per request, concurrency (capped at the engine's
   max_num_seqs), what one long request displaces::

       blocks(n)    = attention blocks of n tokens + state pages    (hybrids: one page per state group)
       pool         = kv_pool_blocks - shared prefix blocks          (one KV pool: one attention-DP rank)
       concurrency  = min(floor(pool / blocks_per_request), max_num_seqs)
       displacement_kv = blocks(long) / blocks(short)

3. **compute** (:func:`compute_stage`): prefill (chunked as the engine does, and unchunked), the
   TTFT of a short request behind a long one, decode steps (``lcprof.plan.compute``);
4. **recommendations** and **mix** (:func:`recommendation_stage`, :func:`mix_stage`):

* ``longest_n_meeting_ttft``: the longest context whose own prefill meets the TTFT;
* ``longest_long_keeping_short_ttft``: the longest long request a short one can wait behind
  (unchunked: t(long) + t(short) <= TTFT; chunked: t(last chunk of long) + t(short) <= TTFT);
* ``long_prefill_time_share_max``: a short request waits at most one long step and then runs at the
  remaining share of prefill compute, so ``t_wait + t_short / (1 - f) <= TTFT`` gives
  ``f_max = 1 - t_short / (TTFT - t_wait)`` (0 when even f = 0 misses the target);
* ``long_request_share_max``: ``r = (f/t_long) / (f/t_long + (1-f)/t_short)``;
* ``long_kv_pool_share_max``: ``r b_long / (r b_long + (1-r) b_short)`` (long and short requests
  resident equally long);
* ``kv_quota_bytes_per_long_request_per_gpu``: the block-rounded KV of a request at
  min(long, longest_n_meeting_ttft); ``kv_quota_bytes_long_class_per_gpu`` = the pool share above;
* TPOT: ``max_decode_batch_short_tpot`` and whether the full pool meets the target;
* mix: expected blocks per request, concurrency in requests of the mix, its prefill-time and KV shares.

Numbers are per GPU (``_per_gpu``), per KV pool (one attention-DP rank; plain), per replica
(``_replica``) or for the deployment (``_deployment``). A request's length is its whole context
(prompt + output); its prefill is timed at that length.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lcprof.cost.kinds import state_dtype_label
from lcprof.cost.model import state_bytes
from lcprof.errors import LcprofError
from lcprof.plan.compute import (attention_rate_source, chunk_wait_s, chunked_prefill_s, decode_parts,
                                 decode_step_s, last_chunk_s, prefill_parts, prefill_s)
from lcprof.plan.engines import EngineSettings
from lcprof.plan.memory import MemoryStage, memory_stage
from lcprof.plan.scenario import Deployment, Workload, build_deployment, build_workload
from lcprof.plan.inputs import parse_memory_bytes
from lcprof.units import fmt_tokens, parse_tokens

#: Upper end of the longest-context searches (tokens).
SEARCH_LIMIT = 1 << 24

#: Titles and keys of the record, in display order.
SECTIONS: list[tuple[str, list[str]]] = [
    ("Deployment", ["model", "gpu", "gpus", "tp", "dp", "ep", "pp", "replicas", "engine", "weights", "gemm_dtype",
                    "kv_dtype", "engine_kv_cache_dtype", "attn_dtype", "state_dtype", "mask", "attention_rate",
                    "memory_utilization", "block_size", "mamba_cache_mode", "max_num_seqs", "max_num_batched_tokens", "chunked", "max_model_len", "long_n",
                    "short_n", "prefix_n", "ttft_target_s", "tpot_target_s", "rates_source"]),
    ("Memory per GPU (the engine's accounting)", [
        "gpu_memory_bytes", "requested_bytes_per_gpu", "weights_bytes_per_gpu", "activation_bytes_per_gpu",
        "activation_tokens", "non_torch_bytes_per_gpu", "cuda_graph_bytes_per_gpu", "kv_budget_bytes_per_gpu",
        "kv_bytes_per_token_per_gpu", "kv_block_bytes_per_gpu", "kv_pool_blocks", "kv_cache_tokens",
        "max_concurrency_at_max_model_len", "binding_stage"]),
    ("Weights per GPU by tensor class", [
        "weights_embedding_bytes_per_gpu", "weights_attention_bytes_per_gpu", "weights_mlp_bytes_per_gpu",
        "weights_experts_bytes_per_gpu", "weights_shared_experts_bytes_per_gpu", "weights_router_bytes_per_gpu",
        "weights_norm_bytes_per_gpu", "weights_lm_head_bytes_per_gpu", "weights_buffers_bytes_per_gpu"]),
    ("KV pool (one attention-DP rank)", [
        "kv_groups", "kv_layers_per_group", "state_groups", "state_page_bytes_per_gpu", "state_pages_per_request",
        "state_bytes_per_request_per_gpu", "shared_prefix_blocks", "kv_blocks_long", "kv_blocks_short",
        "kv_bytes_long_per_gpu", "kv_bytes_short_per_gpu", "kv_limited_concurrent_long",
        "kv_limited_concurrent_short", "max_concurrent_long", "max_concurrent_short",
        "max_concurrent_long_deployment", "max_concurrent_short_deployment", "displacement_kv",
        "short_requests_lost_per_long"]),
    ("Compute per replica", [
        "prefill_long_s", "prefill_long_unchunked_s", "prefill_short_s", "displacement_prefill",
        "attention_long_s", "chunk_max_s", "prefill_bubble_share", "ttft_short_alone_s",
        "ttft_short_behind_long_s", "ttft_short_behind_long_unchunked_s", "ttft_inflation", "decode_step_short_s",
        "decode_step_long_s", "decode_batch", "tpot_full_short_s", "tpot_with_one_long_s"]),
    ("Recommendations", ["longest_n_meeting_ttft", "longest_long_keeping_short_ttft", "long_prefill_time_share_max",
                         "long_request_share_max", "long_kv_pool_share_max",
                         "kv_quota_bytes_per_long_request_per_gpu", "kv_quota_bytes_long_class_per_gpu",
                         "max_decode_batch_short_tpot", "tpot_met_full_pool"]),
    ("Mix", ["mix", "mix_expected_kv_blocks_per_request", "mix_expected_kv_bytes_per_request_per_gpu",
             "kv_limited_concurrent_mix", "max_concurrent_mix", "max_concurrent_mix_deployment",
             "mix_long_request_share", "mix_long_prefill_time_share", "mix_long_kv_pool_share", "tpot_full_mix_s",
             "mix_meets_ttft_share"]),
]

NOTES = [
    "Bytes are exact integers; GiB = 2^30 bytes. Rates are decimal (TFLOP/s = 1e12, GB/s = 1e9).",
    "Memory follows the chosen engine's own accounting (lcprof/plan/engines.py, cited to the engine's source): "
    "vLLM subtracts weights, the profile run's activation peak at max_num_batched_tokens (one TP rank: heads and "
    "widths split, hidden-size tensors whole; plus the sampler's logits) and non-torch memory from "
    "total x gpu_memory_utilization; SGLang sizes its pool as free memory x mem_fraction_static - weights "
    "(activations and CUDA graphs live in the reserve); none is lcprof's own (usable - weights - the unfused "
    "activation of the largest prefill chunk).",
    "KV groups: layers of one attention kind cut into groups (vLLM: the smallest kind's count, padded); a block "
    "holds block_size tokens of every layer of one group on every TP rank. Sliding layers hold min(n, W) tokens "
    "plus at most one block of slack; chunked layers the current chunk. MLA's latent is cached whole on every "
    "TP rank; with attention data parallel each DP rank has its own pool.",
    "Hybrid models: each linear-time mixer layer holds a constant state per request (conv state in the "
    "activations' dtype, recurrent state in the state dtype), paged as vLLM's hybrid allocator pages it: the "
    "attention block size is raised until one attention page holds one state page, the state page is padded to "
    "it, and a request holds one state page per state group (two with --mamba-cache-mode align) plus its "
    "attention blocks; displacement and concurrency count both.",
    "Concurrency is capped at the engine's max_num_seqs (per attention-DP rank).",
    "Prefill: roofline of executed FLOPs and bytes per op (tiled attention at the attention dtype's rate -- the "
    "calibrated backend's when a calibration has one; GEMMs at the weight format's rate, weight traffic in that "
    "format), split over TP (attention, dense, shared experts) and TP x DP (routed experts), plus TP all-reduces, "
    "EP all-to-all and PP stage sends over the GPU's interconnect; per-collective latency not modelled.",
    "Decode step: max((weights read + KV read) / HBM bandwidth, FLOPs / peak) + collectives; only the routed "
    "experts the batch can visit are read; TPOT = one step.",
    "TTFT behind a long prefill: worst case (the short request arrives just after the long one starts). With "
    "chunked prefill (the engines' default) it waits at most one chunk.",
    "Long-request shares assume long and short requests generate the same number of output tokens.",
]


@dataclass
class CapacityPlan:
    """A capacity plan: ``record`` is one flat dict with unit-suffixed keys (JSON/CSV rows);
    ``groups`` the per-KV-group block table, ``mix`` the per-length mix table (or None), ``decode``
    decode time per token vs resident context; ``startup_log`` what the engine would log."""

    record: dict
    groups: pd.DataFrame
    mix: pd.DataFrame | None
    decode: pd.DataFrame
    startup_log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    deployment: Deployment | None = field(default=None, repr=False)
    workload: Workload | None = field(default=None, repr=False)
    memory: MemoryStage | None = field(default=None, repr=False)

    def sections(self) -> list[tuple[str, dict]]:
        """(title, {key: value}) in display order, skipping keys that do not apply."""
        out = []
        for title, keys in SECTIONS:
            part = {k: self.record[k] for k in keys if k in self.record and self.record[k] is not None}
            if part:
                out.append((title, part))
        return out

    def json_record(self) -> dict:
        """The record with every section: the flat keys plus the startup log and the three tables."""
        rec = dict(self.record)
        rec["startup_log"] = list(self.startup_log)
        rec["kv_groups_table"] = self.groups.to_dict(orient="records")
        rec["mix_table"] = None if self.mix is None else self.mix.to_dict(orient="records")
        rec["decode_table"] = self.decode.to_dict(orient="records")
        rec["warnings"] = list(self.warnings)
        return rec


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


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CapacityStage:
    """Blocks and concurrency of one KV pool (one attention-DP rank)."""

    shared_prefix_blocks: int
    pool: int
    blocks_long: int
    blocks_short: int
    kv_concurrent_long: int
    kv_concurrent_short: int
    concurrent_long: int
    concurrent_short: int
    lost_per_long: int


def _cap(n: int, cap: int | None) -> int:
    return n if cap is None else min(n, cap)


def concurrency(pool, blocks, seqs=None) -> np.ndarray:
    """Requests of ``blocks`` blocks a pool of ``pool`` blocks holds, capped at ``seqs`` (None: no cap).
    Broadcasts over arrays (the grid) and takes scalars (a plan)."""
    c = np.asarray(pool, dtype=np.int64) // np.asarray(blocks, dtype=np.int64)
    return c if seqs is None else np.minimum(c, np.asarray(seqs, dtype=np.int64))


def short_requests_lost(pool, b_long, b_short, seqs=None) -> np.ndarray:
    """Short requests one resident long request displaces: concurrency of short ones without it minus
    with it (all of them when the long one does not fit). Broadcasts over arrays."""
    pool, b_long = np.asarray(pool, dtype=np.int64), np.asarray(b_long, dtype=np.int64)
    alone = concurrency(pool, b_short, seqs)
    with_long = concurrency(np.maximum(pool - b_long, 0), b_short, None if seqs is None else np.asarray(seqs) - 1)
    return np.where(b_long <= pool, alone - with_long, alone)


def capacity_stage(dep: Deployment, work: Workload, mem: MemoryStage) -> CapacityStage:
    lay = mem.layout
    shared = lay.shared_prefix_blocks(work.prefix_n, work.shortest)
    pool = mem.kv_pool_blocks - shared
    if pool <= 0:
        raise LcprofError(f"nothing left for KV after the shared prefix: {mem.kv_pool_blocks} blocks in the pool, "
                          f"{shared} taken by the {work.prefix_n}-token prefix")
    b_long, b_short = (int(x) for x in lay.blocks_per_request([work.long_n, work.short_n], work.prefix_n))
    seqs = mem.max_num_seqs
    return CapacityStage(shared, pool, b_long, b_short, int(concurrency(pool, b_long)), int(concurrency(pool, b_short)),
                         int(concurrency(pool, b_long, seqs)), int(concurrency(pool, b_short, seqs)),
                         int(short_requests_lost(pool, b_long, b_short, seqs)))


@dataclass(frozen=True)
class ComputeStage:
    """Prefill and decode times of one replica."""

    prefill_long_s: float  # as the engine runs it (chunked when it chunks)
    prefill_long_unchunked_s: float
    prefill_short_s: float
    prefill_short_unchunked_s: float
    chunk_max_s: float | None
    attention_long_s: float
    bubble_share: float
    ttft_behind_long_s: float
    ttft_behind_long_unchunked_s: float
    decode_step_short_s: float
    decode_step_long_s: float
    decode_batch: int
    tpot_full_short_s: float
    tpot_with_one_long_s: float | None


class _Timer:
    """Prefill of a context (new tokens after the shared prefix) on the deployment, chunked or not."""

    def __init__(self, dep: Deployment, work: Workload):
        self.dep, self.work = dep, work
        self.chunk = dep.limits.chunk_tokens

    def unchunked(self, n_total) -> float:
        p = self.work.prefix_n
        return float(prefill_s(self.dep, [int(n_total) - p], p)[0])

    def engine(self, n_total) -> float:
        p = self.work.prefix_n
        return chunked_prefill_s(self.dep, int(n_total) - p, self.chunk, p)[0]


def decode_stepper(dep: Deployment, work: Workload, mem: MemoryStage):
    """step(n_long, n_short): one decode step with that many long and short requests resident."""
    parts = decode_parts(dep, [work.long_n, work.short_n])
    f_l, f_s = (float(x) for x in parts.flops_per_gpu)
    kv_l, kv_s = (float(x) for x in parts.kv_read_bytes_per_gpu)

    def step(n_long, n_short) -> np.ndarray:
        n_long, n_short = np.asarray(n_long, dtype=np.float64), np.asarray(n_short, dtype=np.float64)
        return decode_step_s(dep, mem.decode_weights, flops_per_gpu=n_long * f_l + n_short * f_s,
                             kv_read_bytes_per_gpu=n_long * kv_l + n_short * kv_s, batch=n_long + n_short)

    return step


def compute_stage(dep: Deployment, work: Workload, mem: MemoryStage, cap: CapacityStage) -> ComputeStage:
    tm = _Timer(dep, work)
    p = work.prefix_n
    t_long_u, t_short_u = tm.unchunked(work.long_n), tm.unchunked(work.short_n)
    t_long, t_short = tm.engine(work.long_n), tm.engine(work.short_n)
    chunk_max = None
    wait = t_long_u
    bubble = (dep.par.pp - 1) / dep.par.pp if dep.par.pp > 1 else 0.0
    if tm.chunk and tm.chunk < work.long_n - p:
        total, chunk_max = chunked_prefill_s(dep, work.long_n - p, tm.chunk, p)
        wait = chunk_wait_s(dep, chunk_max)
        bubble = (dep.par.pp - 1) * chunk_max / dep.par.pp / total
    parts = prefill_parts(dep.spec, dep.rates, dep.precision, [work.long_n - p], p, mask=dep.mask)
    attention = float(parts.attention[0] / dep.par.tp)
    step = decode_stepper(dep, work, mem)
    batch = work.decode_batch or max(cap.concurrent_short, 1)
    with_long = None
    if cap.blocks_long <= cap.pool:
        with_long = float(step(1, max(0, min(batch, cap.concurrent_short) - cap.lost_per_long)))
    return ComputeStage(prefill_long_s=t_long, prefill_long_unchunked_s=t_long_u, prefill_short_s=t_short,
                        prefill_short_unchunked_s=t_short_u, chunk_max_s=chunk_max, attention_long_s=attention,
                        bubble_share=float(bubble), ttft_behind_long_s=wait + t_short,
                        ttft_behind_long_unchunked_s=t_long_u + t_short_u,
                        decode_step_short_s=float(step(0, 1)), decode_step_long_s=float(step(1, 0)),
                        decode_batch=int(batch), tpot_full_short_s=float(step(0, batch)),
                        tpot_with_one_long_s=with_long)


def recommendation_stage(dep: Deployment, work: Workload, mem: MemoryStage, cap: CapacityStage,
                         comp: ComputeStage) -> dict:
    out: dict = {}
    step = decode_stepper(dep, work, mem)
    tm = _Timer(dep, work)
    limit = max(SEARCH_LIMIT, work.long_n)
    if dep.limits.max_model_len is not None:
        limit = dep.limits.max_model_len
    p = work.prefix_n
    if work.ttft_s is not None:
        ttft = work.ttft_s
        t_short = comp.prefill_short_s
        out["longest_n_meeting_ttft"] = _search_max_n(lambda n: tm.engine(n) <= ttft, p + 1, limit)
        if tm.chunk:
            out["longest_long_keeping_short_ttft"] = _search_max_n(
                lambda n: chunk_wait_s(dep, float(last_chunk_s(dep, n - p, min(tm.chunk, n - p)))) + t_short <= ttft,
                work.short_n, limit)
        else:
            out["longest_long_keeping_short_ttft"] = _search_max_n(lambda n: tm.unchunked(n) + t_short <= ttft,
                                                                   work.short_n, limit)
        room = ttft - (comp.ttft_behind_long_s - t_short)
        f = 0.0 if room <= t_short else 1.0 - t_short / room
        t_long = comp.prefill_long_s
        r = 0.0 if f == 0 else (f / t_long) / (f / t_long + (1 - f) / t_short)
        kv_share = r * cap.blocks_long / (r * cap.blocks_long + (1 - r) * cap.blocks_short)
        n_quota = min(work.long_n, out["longest_n_meeting_ttft"] or 0)
        bb = mem.layout.block_bytes_per_gpu
        quota = int(mem.layout.blocks_per_request([n_quota], p)[0]) * bb if n_quota > p else 0
        out.update({"long_prefill_time_share_max": f, "long_request_share_max": r, "long_kv_pool_share_max": kv_share,
                    "kv_quota_bytes_per_long_request_per_gpu": quota,
                    "kv_quota_bytes_long_class_per_gpu": int(kv_share * cap.pool * bb)})
    if work.tpot_s is not None:
        bs = np.arange(1, max(cap.concurrent_short, 1) + 1)
        ok = step(0, bs) <= work.tpot_s
        out["max_decode_batch_short_tpot"] = int(bs[ok].max()) if ok.any() else 0
        out["tpot_met_full_pool"] = bool(step(0, max(cap.concurrent_short, 1)) <= work.tpot_s)
    return out


def mix_stage(dep: Deployment, work: Workload, mem: MemoryStage, cap: CapacityStage, recs: dict
              ) -> tuple[dict, pd.DataFrame | None]:
    if not work.mix:
        return {}, None
    tm = _Timer(dep, work)
    p = work.prefix_n
    ns = np.array([n for n, _ in work.mix])
    shares = np.array([s for _, s in work.mix])
    blocks = mem.layout.blocks_per_request(ns, p)
    times = np.array([tm.engine(n) for n in ns])
    parts = decode_parts(dep, ns)
    e_blocks = float(np.sum(shares * blocks))
    kv_mix = int(math.floor(cap.pool / e_blocks))
    c_mix = _cap(kv_mix, mem.max_num_seqs)
    is_long = ns >= work.long_n
    bb = mem.layout.block_bytes_per_gpu
    table = pd.DataFrame({"n": ns, "share": shares, "kv_blocks": blocks, "kv_bytes_per_gpu": blocks * bb,
                          "prefill_s": times, "max_concurrent_alone": np.array([_cap(int(x), mem.max_num_seqs)
                                                                                for x in cap.pool // blocks]),
                          "long_class": is_long})
    t_share = float(np.sum(shares[is_long] * times[is_long]) / np.sum(shares * times))
    per_rank = dep.par.dp * dep.replicas
    rec = {
        "mix": ",".join(f"{fmt_tokens(n)}:{s:g}" for n, s in work.mix),
        "mix_expected_kv_blocks_per_request": e_blocks,
        "mix_expected_kv_bytes_per_request_per_gpu": e_blocks * bb,
        "kv_limited_concurrent_mix": kv_mix, "max_concurrent_mix": c_mix,
        "max_concurrent_mix_deployment": c_mix * per_rank,
        "mix_long_request_share": float(np.sum(shares[is_long])),
        "mix_long_prefill_time_share": t_share,
        "mix_long_kv_pool_share": float(np.sum(shares[is_long] * blocks[is_long]) / e_blocks),
        "tpot_full_mix_s": float(decode_step_s(
            dep, mem.decode_weights, flops_per_gpu=c_mix * float(np.sum(shares * parts.flops_per_gpu)),
            kv_read_bytes_per_gpu=c_mix * float(np.sum(shares * parts.kv_read_bytes_per_gpu)), batch=c_mix)),
    }
    if "long_prefill_time_share_max" in recs:
        rec["mix_meets_ttft_share"] = bool(t_share <= recs["long_prefill_time_share_max"])
    return rec, table


def decode_table(dep: Deployment, work: Workload, mem: MemoryStage, cap: CapacityStage) -> pd.DataFrame:
    """Decode time per token vs resident context: one request alone, and the pool full of them."""
    ctx = np.unique(np.concatenate([2 ** np.arange(10, int(np.log2(max(work.long_n, 1024))) + 1),
                                    [work.short_n, work.long_n]]))
    ctx = ctx[ctx > work.prefix_n]
    parts = decode_parts(dep, ctx)
    conc = np.array([_cap(int(c), mem.max_num_seqs)
                     for c in cap.pool // mem.layout.blocks_per_request(ctx, work.prefix_n)])
    full = decode_step_s(dep, mem.decode_weights, flops_per_gpu=conc * parts.flops_per_gpu,
                         kv_read_bytes_per_gpu=conc * parts.kv_read_bytes_per_gpu, batch=np.maximum(conc, 1))
    return pd.DataFrame({
        "n": ctx, "kv_read_bytes_per_gpu": parts.kv_read_bytes_per_gpu.astype(np.int64),
        "decode_step_batch1_s": decode_step_s(dep, mem.decode_weights, flops_per_gpu=parts.flops_per_gpu,
                                              kv_read_bytes_per_gpu=parts.kv_read_bytes_per_gpu, batch=1),
        "max_concurrent": conc, "tpot_full_pool_s": np.where(conc > 0, full, np.nan),
    })


def group_table(mem: MemoryStage, lengths: dict[str, int], prefix: int) -> pd.DataFrame:
    lay = mem.layout
    rows = []
    for k in lay.groups:
        for label, n in lengths.items():
            n_arr = np.array([n])
            first = int(k.first_held_position(n_arr)[0])
            blocks = int(k.blocks_held(n_arr, lay.block_size, prefix)[0])
            rows.append({
                "request": label, "n": n, "kind": k.label, "layers": k.n_layers, "groups": k.n_groups,
                "layers_per_group": k.layers_per_group, "tokens_held": n - first,
                "blocks_per_group": blocks, "blocks": blocks * k.n_groups,
                "kv_bytes_per_gpu": blocks * k.n_groups * lay.block_bytes_per_gpu,
            })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------

def _check_lengths(dep: Deployment, work: Workload, warn) -> None:
    spec, lim = dep.spec, dep.limits
    over = work.longest
    if lim.max_model_len is not None and over > lim.max_model_len:
        raise LcprofError(f"{fmt_tokens(over)} tokens exceeds {lim.engine}'s max_model_len for {spec.name} "
                          f"({lim.max_model_len}, {lim.sources.get('max_model_len')}); the engine would reject it: "
                          f"pass --max-model-len (and mind the model's max_position_embeddings, "
                          f"{spec.max_position_embeddings})")
    if over > spec.max_position_embeddings:
        warn(f"{fmt_tokens(over)} tokens exceeds {spec.name}'s max_position_embeddings "
             f"({spec.max_position_embeddings}); planned anyway")


def plan_deployment(dep: Deployment, work: Workload) -> CapacityPlan:
    """The four stages on one deployment and workload (module docstring)."""
    warned: list[str] = []

    def warn(msg: str) -> None:
        warned.append(msg)
        warnings.warn(msg, stacklevel=3)

    _check_lengths(dep, work, warn)
    mem = memory_stage(dep.spec, dep, work.longest - work.prefix_n)
    for m in mem.warnings:
        warn(m)
    cap = capacity_stage(dep, work, mem)
    if cap.kv_concurrent_long == 0:
        warn(f"one {fmt_tokens(work.long_n)}-token request needs {cap.blocks_long} KV blocks but the pool holds "
             f"{cap.pool}; it does not fit at all")
    comp = compute_stage(dep, work, mem, cap)
    recs = recommendation_stage(dep, work, mem, cap, comp)
    mix_rec, mix_df = mix_stage(dep, work, mem, cap, recs)
    if dep.precision.weights.name in ("nvfp4", "mxfp4") and "B200" in dep.rates.device.name.upper():
        warn(f"{dep.rates.device.name} runs {dep.precision.weights.name} GEMMs on FP4 tensor cores; the GPU database has "
             "no fp4 peak, so they are charged at the bf16 rate (a lower bound on speed)")
    record = _record(dep, work, mem, cap, comp, recs, mix_rec)
    groups = group_table(mem, {"long": work.long_n, "short": work.short_n}, work.prefix_n)
    return CapacityPlan(record=record, groups=groups, mix=mix_df, decode=decode_table(dep, work, mem, cap),
                        startup_log=list(mem.startup_log), notes=list(NOTES), warnings=warned, deployment=dep,
                        workload=work, memory=mem)


def _record(dep, work, mem, cap, comp, recs, mix_rec) -> dict:
    lim, par, prec, spec = dep.limits, dep.par, dep.precision, dep.spec
    per_rank = par.dp * dep.replicas
    bb = mem.layout.block_bytes_per_gpu
    lay = mem.layout
    rec: dict = {
        "model": spec.name, "gpu": dep.rates.device.key, "gpus": dep.gpus, "tp": par.tp, "dp": par.dp, "ep": par.ep,
        "pp": par.pp, "replicas": dep.replicas, "engine": lim.engine, "weights": prec.weights.name,
        "gemm_dtype": prec.gemm_dtype, "dtype": prec.weights.name, "kv_dtype": prec.kv.dtype,
        "engine_kv_cache_dtype": prec.kv.engine_name, "attn_dtype": prec.attn_dtype,
        "state_dtype": state_dtype_label(spec, prec.state_dtype) if lay.state_page_bytes else None,
        "mask": dep.mask.text() if dep.mask is not None else None,
        "attention_rate": attention_rate_source(dep.rates, prec.attn_dtype),
        "memory_utilization": lim.memory_utilization, "block_size": lay.block_size,
        "mamba_cache_mode": lim.mamba_cache_mode if lay.state_page_bytes and lim.engine == "vllm" else None,
        "max_num_seqs": mem.max_num_seqs, "max_num_batched_tokens": lim.max_num_batched_tokens,
        "chunked": lim.max_num_batched_tokens is not None and lim.max_num_batched_tokens < work.longest,
        "max_model_len": lim.max_model_len, "long_n": work.long_n, "short_n": work.short_n,
        "prefix_n": work.prefix_n, "ttft_target_s": work.ttft_s, "tpot_target_s": work.tpot_s,
        "rates_source": dep.rates.source,
        "gpu_memory_bytes": lim.gpu_memory_bytes, "requested_bytes_per_gpu": mem.requested_bytes_per_gpu,
        "weights_bytes_per_gpu": mem.weights_bytes_per_gpu, "activation_bytes_per_gpu": mem.activation_bytes_per_gpu,
        "activation_tokens": mem.activation_tokens, "non_torch_bytes_per_gpu": lim.non_torch_bytes,
        "cuda_graph_bytes_per_gpu": lim.cuda_graph_bytes, "kv_budget_bytes_per_gpu": mem.kv_budget_bytes_per_gpu,
        "kv_bytes_per_token_per_gpu": lay.kv_bytes_per_token_per_gpu(mem.stage),
        "kv_block_bytes_per_gpu": bb, "kv_pool_blocks": mem.kv_pool_blocks, "kv_cache_tokens": mem.kv_cache_tokens,
        "max_concurrency_at_max_model_len": mem.max_concurrency_at_max_len,
        "binding_stage": mem.stage if par.pp > 1 else None,
    }
    for cls, v in mem.weights.by_class.items():
        rec[f"weights_{cls}_bytes_per_gpu"] = int(v)
    rec.update({
        "kv_groups": lay.n_groups, "kv_layers_per_group": lay.groups[0].layers_per_group,
        "state_groups": lay.n_state_groups if lay.state_page_bytes else None,
        "state_page_bytes_per_gpu": lay.state_page_bytes or None,
        "state_pages_per_request": lay.state_pages_per_request if lay.state_page_bytes else None,
        "state_bytes_per_request_per_gpu": (int(state_bytes(spec, dtype=prec.act_dtype, state_dtype=prec.state_dtype,
                                                            tp=par.tp)) if lay.state_page_bytes else None),
        "shared_prefix_blocks": cap.shared_prefix_blocks, "kv_blocks_long": cap.blocks_long,
        "kv_blocks_short": cap.blocks_short, "kv_bytes_long_per_gpu": cap.blocks_long * bb,
        "kv_bytes_short_per_gpu": cap.blocks_short * bb, "kv_limited_concurrent_long": cap.kv_concurrent_long,
        "kv_limited_concurrent_short": cap.kv_concurrent_short, "max_concurrent_long": cap.concurrent_long,
        "max_concurrent_short": cap.concurrent_short,
        "max_concurrent_long_deployment": cap.concurrent_long * per_rank,
        "max_concurrent_short_deployment": cap.concurrent_short * per_rank,
        "displacement_kv": cap.blocks_long / cap.blocks_short, "short_requests_lost_per_long": cap.lost_per_long,
        "prefill_long_s": comp.prefill_long_s, "prefill_long_unchunked_s": comp.prefill_long_unchunked_s,
        "prefill_short_s": comp.prefill_short_s, "displacement_prefill": comp.prefill_long_s / comp.prefill_short_s,
        "attention_long_s": comp.attention_long_s, "chunk_max_s": comp.chunk_max_s,
        "prefill_bubble_share": comp.bubble_share if par.pp > 1 else None,
        "ttft_short_alone_s": comp.prefill_short_s, "ttft_short_behind_long_s": comp.ttft_behind_long_s,
        "ttft_short_behind_long_unchunked_s": comp.ttft_behind_long_unchunked_s,
        "ttft_inflation": comp.ttft_behind_long_s / comp.prefill_short_s,
        "decode_step_short_s": comp.decode_step_short_s, "decode_step_long_s": comp.decode_step_long_s,
        "decode_batch": comp.decode_batch, "tpot_full_short_s": comp.tpot_full_short_s,
        "tpot_with_one_long_s": comp.tpot_with_one_long_s,
    })
    rec.update(recs)
    rec.update(mix_rec)
    return rec


ENGINE_KEYS = ("engine", "memory_utilization", "block_size", "max_num_seqs", "max_num_batched_tokens", "chunked",
               "max_model_len", "kv_memory_bytes", "gpu_memory_bytes", "non_torch_bytes", "cuda_graph_bytes",
               "mamba_cache_mode")


def plan(model, *, gpu: str = "h100-sxm", gpus: int | None = None, tp: int = 1, dp: int = 1, ep: int = 1,
         pp: int = 1, weights: str | None = None, dtype: str | None = None, kv_dtype: str = "bf16",
         attn_dtype: str | None = None, attention_backend: str | None = None, long=None, short=None, mix=None,
         ttft=None, tpot=None, prefix=0, chunk=None, decode_batch: int | None = None,
         calibration: str | None = None, fit: str | None = None, state_dtype: str | None = None, mask=None,
         **engine) -> CapacityPlan:
    """Plan one deployment for a long and a short request length (or a mix of lengths).

    Keyword API over :func:`plan_deployment`: ``engine`` keywords are :class:`EngineSettings`
    fields (``engine="vllm"|"sglang"|"none"``, ``memory_utilization``, ``max_num_seqs``, ...);
    ``chunk`` is ``max_num_batched_tokens`` (``chunk=0`` turns chunked prefill off); ``dtype`` is an
    alias of ``weights``; ``state_dtype`` the mixers' recurrent-state dtype (default the config's);
    ``mask`` a ``--mask`` what-if on every attention layer. Raises LcprofError on bad input.
    """
    unknown = set(engine) - set(ENGINE_KEYS)
    if unknown:
        raise LcprofError(f"unknown plan option(s) {', '.join(sorted(unknown))}")
    if weights is not None and dtype is not None and weights != dtype:
        raise LcprofError("give --weights or its alias --dtype, not both")
    if chunk is not None:
        if engine.get("max_num_batched_tokens") is not None:
            raise LcprofError("give --chunk or --max-num-batched-tokens, not both")
        if chunk in (0, "0"):
            engine["chunked"] = False
        else:
            engine["max_num_batched_tokens"] = parse_tokens(chunk)
    for key in ("max_model_len", "max_num_batched_tokens"):
        if isinstance(engine.get(key), str):
            engine[key] = parse_tokens(engine[key])
    for key in ("kv_memory_bytes", "gpu_memory_bytes", "non_torch_bytes", "cuda_graph_bytes"):
        if isinstance(engine.get(key), str):
            engine[key] = parse_memory_bytes(engine[key], f"--{key.replace('_bytes', '').replace('_', '-')}")
    settings = EngineSettings(**engine)
    dep = build_deployment(model, gpu=gpu, gpus=gpus, tp=tp, dp=dp, ep=ep, pp=pp, weights=weights or dtype or "bf16",
                           kv_dtype=kv_dtype, attn_dtype=attn_dtype, engine=settings, calibration=calibration,
                           fit=fit, attention_backend=attention_backend, state_dtype=state_dtype, mask=mask)
    work = build_workload(long, short, mix, prefix, ttft, tpot, decode_batch)
    return plan_deployment(dep, work)


def plans(model, *, kv_dtypes=("bf16",), **kwargs) -> list[CapacityPlan]:
    """One plan per KV dtype (everything else equal)."""
    return [plan(model, kv_dtype=d, **kwargs) for d in kv_dtypes]


def plans_table(ps: list[CapacityPlan]) -> pd.DataFrame:
    """One flat row per plan (what ``--format csv`` prints)."""
    return pd.DataFrame([p.record for p in ps])


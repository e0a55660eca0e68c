"""Analytic cost of causal ring attention (pure numpy, no torch).

A sequence of ``n`` tokens is split over ``world`` (= G) devices. Each device
keeps its query shard and, over G steps, sees every key/value shard once: at
step ``t`` rank ``r`` holds the K/V block that originated on rank
``(r - t) mod G`` while it sends its current block to ``r + 1`` and receives
the next one from ``r - 1``.

Layouts (global token index -> rank), shown for n = 8, G = 2::

    contiguous   rank 0: 0 1 2 3      rank 1: 4 5 6 7      (offset r*m, stride 1)
    striped      rank 0: 0 2 4 6      rank 1: 1 3 5 7      (offset r,   stride G)

where ``m = ceil(n / G)`` is the number of tokens per device. A local token
``i`` of rank ``r`` sits at global position ``offset + i * stride``.

Mask convention (causal): query at position p may attend key at position s
iff ``s <= p``. The diagonal is included, so causal attention over n tokens
attends n(n+1)/2 pairs per head.

Padding: when G does not divide n the sequence is padded to ``G * m`` tokens
by appending pad tokens at the END of the global sequence (positions
n .. G*m-1). Under the causal mask a real query (p < n) only attends keys
with s <= p < n, so it never attends a pad key; pad queries are computed and
discarded. Pair counts below count real (query, key) pairs only.

FLOPs count 2 per multiply-add. One allowed (q, k) pair costs
``2 * qk_dim`` FLOPs for q.k and ``2 * v_dim`` for p.v, i.e.
``2 * (qk_dim + v_dim)`` per head (``4 * head_dim`` when K and V have the same
head dim; MLA's naive form has qk_dim 192 and v_dim 128 for DeepSeek-V3). The
dims of a model come from :func:`lcprof.cost.ops.attention_dims`, the one
source of attention dims; this module takes them as numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lcprof.errors import LcprofError

LAYOUTS = ("striped", "contiguous")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise LcprofError(f"unknown ring layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


#: Largest n the ring model counts: (query, key) pairs are int64 tables whose total, n(n+1)/2,
#: must stay below 2**63 (n = 2**32 gives 2**63 + 2**31). FLOPs, bytes and times are Python ints or
#: float64 computed from those counts, so nothing else bounds n.
MAX_RING_TOKENS = (1 << 32) - 1
INT64_MAX = (1 << 63) - 1
from lcprof.units import MAX_RING_GPUS  # noqa: E402  (the largest ring; defined with the other input limits)


def _check_n_world(n: int, world: int) -> None:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise LcprofError(f"n must be a positive integer number of tokens, got {n!r}")
    if isinstance(world, bool) or int(world) != world or world < 1:
        raise LcprofError(f"world must be a positive integer number of devices, got {world!r}")
    if n > MAX_RING_TOKENS:
        raise LcprofError(f"n={int(n)} is beyond what the ring model counts exactly: its (query, key) pairs are "
                          f"64-bit integers, total n(n+1)/2, so n <= {MAX_RING_TOKENS}")
    if world > MAX_RING_GPUS:
        raise LcprofError(f"a ring of {int(world)} devices is beyond the ring model's (steps x ranks) tables: "
                          f"at most {MAX_RING_GPUS} devices")
    m = -(-int(n) // int(world))
    if m * m > INT64_MAX:  # a block's executed pairs, at most m^2, are one int64 entry
        raise LcprofError(f"n={int(n)} on {int(world)} device(s) is {m} tokens per device, beyond what the ring "
                          f"model counts exactly in 64-bit integers (a block's m^2 pairs): use more devices")


def tokens_per_device(n: int, world: int) -> int:
    """Tokens each device holds, m = ceil(n / world) (pad tokens included)."""
    _check_n_world(n, world)
    return -(-int(n) // int(world))


def block_positions(layout: str, rank: int, world: int, n_local: int) -> tuple[int, int]:
    """(offset, stride) of rank ``rank``'s tokens: local token i is at offset + i*stride."""
    _check_layout(layout)
    if not 0 <= rank < world:
        raise LcprofError(f"rank {rank} out of range for world {world}")
    if layout == "striped":
        return int(rank), int(world)
    return int(rank) * int(n_local), 1


def source_ranks(world: int) -> np.ndarray:
    """(steps, ranks) array: the rank whose K/V block rank r holds at step t, (r - t) mod G."""
    t = np.arange(world)[:, None]
    r = np.arange(world)[None, :]
    return (r - t) % world


def _real_queries(n: int, world: int, layout: str) -> np.ndarray:
    """(ranks,) number of real (non-pad) tokens on each rank."""
    m = tokens_per_device(n, world)
    r = np.arange(world, dtype=np.int64)
    if layout == "striped":
        # local i is real iff r + i*G < n  ->  i < ceil((n - r) / G)
        return np.maximum(0, -(-(n - r) // world))
    return np.clip(n - r * m, 0, m)


def pair_counts(n: int, world: int, layout: str) -> np.ndarray:
    """Allowed causal (query, key) pairs rank r computes at step t, per head.

    Returns an int64 array of shape (steps, ranks) = (G, G). Closed form, exact;
    only real tokens are counted. Let q_r be rank r's number of real tokens and
    s = (r - t) mod G the source of the K/V block:

    striped     s <= r: local query i sees keys j <= i      -> q_r (q_r + 1) / 2
                s >  r: local query i sees keys j <= i - 1  -> q_r (q_r - 1) / 2
    contiguous  s <  r: every key                           -> q_r * m
                s == r: the diagonal block                  -> q_r (q_r + 1) / 2
                s >  r: fully masked                        -> 0

    The total is n(n+1)/2 for both layouts.
    """
    _check_layout(layout)
    _check_n_world(n, world)
    n, world = int(n), int(world)
    m = tokens_per_device(n, world)
    q = _real_queries(n, world, layout)[None, :]  # (1, ranks)
    r = np.arange(world, dtype=np.int64)[None, :]
    t = np.arange(world, dtype=np.int64)[:, None]  # (steps, 1)
    # s = (r - t) mod G without the modulo: s <= r iff t <= r, s == r iff t == 0
    tri_incl = q * (q + 1) // 2
    if layout == "striped":
        tri_excl = q * (q - 1) // 2
        counts = np.where(t <= r, tri_incl, tri_excl)
    else:
        counts = np.where(t == 0, tri_incl, np.where(t <= r, q * m, 0))
    counts = np.asarray(counts, dtype=np.int64)
    assert int(counts.sum()) == n * (n + 1) // 2, "ring pair count does not sum to n(n+1)/2"
    return counts


def _executed_block_pairs(m: int, tile: int) -> dict[str, int]:
    """Pairs a tiled kernel executes on one m x m block, by where the key block sits (exact ints).

    Query tile row a (a = 0 .. T-1, T = ceil(m / tile); every row holds ``tile`` queries except the
    last, which holds L = m - (T - 1) tile) runs k_a key tiles, min(m, k_a tile) keys:

    ``diag``  the rank's own block, or a striped block from a rank s <= r (key j at or before query
              j): k_a = a + 1, so  tile^2 T (T - 1) / 2 + L m;
    ``above`` a striped block from s > r (key j just after query j): the same for tile >= 2, except
              that a one-row last tile (L = 1) runs T - 1 key tiles; for tile = 1 the strict
              lower triangle m (m - 1) / 2;
    ``full``  a contiguous block from s < r: m^2;  ``none`` from s > r: 0.
    """
    T = -(-m // tile)
    L = m - (T - 1) * tile
    full_rows = tile * tile * T * (T - 1) // 2  # rows 0..T-2: tile queries x (a + 1) tile keys
    diag = full_rows + L * m
    if tile == 1:
        above = m * (m - 1) // 2
    else:
        above = full_rows + L * (min(m, (T - 1) * tile) if L == 1 else m)
    return {"diag": diag, "above": above, "full": m * m, "none": 0}


def executed_pair_counts(n: int, world: int, layout: str, tile: int = 128) -> np.ndarray:
    """(Query, key) pairs a tiled kernel executes: rank r, step t, per head.

    The local block (m queries x m keys, pad tokens included) is cut into
    ``tile x tile`` tiles (edge tiles smaller); a tile is skipped only when it
    is fully masked, i.e. its smallest key position exceeds its largest query
    position. Returns int64 (steps, ranks). Every block is one of the four kinds of
    :func:`_executed_block_pairs` (closed forms), chosen by the source rank s = (r - t) mod G:
    striped s <= r ``diag``, s > r ``above``; contiguous s < r ``full``, s == r ``diag``, s > r ``none``.
    """
    _check_layout(layout)
    _check_n_world(n, world)
    if isinstance(tile, bool) or int(tile) != tile or tile < 1:
        raise LcprofError(f"tile must be a positive integer, got {tile!r}")
    m = tokens_per_device(n, world)
    kinds = _executed_block_pairs(m, int(tile))
    r = np.arange(world, dtype=np.int64)[None, :]
    t = np.arange(world, dtype=np.int64)[:, None]  # s <= r iff t <= r; s == r iff t == 0
    if layout == "striped":
        out = np.where(t <= r, kinds["diag"], kinds["above"])
    else:
        out = np.where(t == 0, kinds["diag"], np.where(t <= r, kinds["full"], kinds["none"]))
    return np.asarray(out, dtype=np.int64)


@dataclass(frozen=True)
class LoadImbalance:
    """How unevenly causal work is spread over ranks in a step-synchronous ring.

    ``imbalance`` = sum_t max_r pairs[t, r] / (total_pairs / G): the ring's
    attention time relative to a perfect split (1.0 is perfect).
    """

    n: int
    world: int
    layout: str
    imbalance: float
    total_pairs: int
    pairs: np.ndarray  # (steps, ranks)
    step_max_pairs: np.ndarray  # (steps,)
    step_mean_pairs: np.ndarray  # (steps,)
    step_imbalance: np.ndarray  # (steps,) max / mean

    def records(self) -> list[dict]:
        return [
            {
                "n": self.n,
                "world": self.world,
                "layout": self.layout,
                "step": t,
                "max_pairs": int(self.step_max_pairs[t]),
                "mean_pairs": float(self.step_mean_pairs[t]),
                "step_imbalance": float(self.step_imbalance[t]),
            }
            for t in range(self.world)
        ]


def load_imbalance(n: int, world: int, layout: str) -> LoadImbalance:
    """Load imbalance of a causal ring; see :class:`LoadImbalance`.

    For G | n with m = n/G tokens per device the closed forms are::

        contiguous  (2Gm - m + 1) / (Gm + 1)   -> (2G - 1) / G  for large m
        striped     G (m + 1) / (Gm + 1)       -> 1             for large m
    """
    pairs = pair_counts(n, world, layout)
    total = int(pairs.sum())
    step_max = pairs.max(axis=1)
    step_mean = pairs.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        step_ratio = np.where(step_mean > 0, step_max / np.where(step_mean > 0, step_mean, 1), np.nan)
    imbalance = float(step_max.sum()) / (total / world)
    return LoadImbalance(
        n=int(n),
        world=int(world),
        layout=layout,
        imbalance=imbalance,
        total_pairs=total,
        pairs=pairs,
        step_max_pairs=step_max,
        step_mean_pairs=step_mean,
        step_imbalance=step_ratio,
    )


def overlap_min_tokens_per_device(
    heads: int,
    kv_heads: int,
    dtype_bytes: float,
    peak_flops_per_s: float,
    link_bytes_per_s: float,
    pairs_fraction: float = 1.0,
) -> float:
    """Fewest tokens per device L for which one step's compute hides its transfer.

    compute = 2 h (d_qk + d_v) L^2 f / peak   (f = fraction of the L x L block computed)
    comm    = L h_kv (d_qk + d_v) bytes / bw   (K and V of L tokens)
    compute >= comm  <=>  L >= h_kv * bytes * peak / (2 * h * bw * f)

    The head dims (d_qk + d_v appears on both sides) and batch cancel. f = 1 is a full (unmasked) block, which bounds
    the steady state of the contiguous layout; a striped step is ~half a block
    (f -> 1/2), so it needs twice the tokens.
    """
    if not 0 < pairs_fraction <= 1:
        raise LcprofError(f"pairs_fraction must be in (0, 1], got {pairs_fraction!r}")
    return kv_heads * dtype_bytes * peak_flops_per_s / (2.0 * heads * link_bytes_per_s * pairs_fraction)


def _int_array(values) -> np.ndarray:
    """A 1-D array of exact Python ints (object dtype): FLOPs and bytes that may pass 2**63."""
    vals = list(values)
    out = np.empty(len(vals), dtype=object)
    out[:] = vals
    return out


@dataclass(frozen=True)
class RingStepModel:
    """Per-step roofline model of a double-buffered causal ring.

    Per step t (arrays of length G): the slowest rank's FLOPs and compute time,
    the K/V transfer that runs concurrently (the block needed at step t+1; none
    at the last step), and the exposed (un-hidden) part of that transfer.
    ``step_time_s = max(compute_time_s, comm_time_s)``. Compute time uses
    executed FLOPs (what a tiled kernel runs); useful FLOPs are also given.
    """

    n: int
    world: int
    layout: str
    batch: int
    heads: int
    kv_heads: int
    head_dim: int  # of q and k
    v_head_dim: int  # of v (and of the output)
    dtype_bytes: float
    tile: int
    peak_flops_per_s: float
    link_bytes_per_s: float
    tokens_per_device: int
    pad_tokens: int
    useful_flops: np.ndarray  # (steps,) slowest rank, exact Python ints
    executed_flops: np.ndarray  # (steps,) slowest rank, exact Python ints
    useful_compute_time_s: np.ndarray
    compute_time_s: np.ndarray
    comm_bytes: np.ndarray  # (steps,) exact Python ints
    comm_time_s: np.ndarray
    exposed_comm_time_s: np.ndarray
    step_time_s: np.ndarray
    total_time_s: float
    total_compute_time_s: float
    total_comm_time_s: float
    total_exposed_comm_time_s: float
    overlap_min_tokens_per_device: int  # full block (f = 1)
    overlap_min_tokens_per_device_layout: int  # this layout's steady-state block fraction
    overlap_min_n: int  # world * overlap_min_tokens_per_device
    comm_hidden: bool  # every transfer hidden behind compute
    memory_bytes_per_device: int
    memory_breakdown_bytes: dict = field(default_factory=dict)

    def records(self) -> list[dict]:
        base = {
            "n": self.n,
            "world": self.world,
            "layout": self.layout,
            "batch": self.batch,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "v_head_dim": self.v_head_dim,
            "tokens_per_device": self.tokens_per_device,
        }
        return [
            {
                **base,
                "step": t,
                "useful_flops": int(self.useful_flops[t]),
                "executed_flops": int(self.executed_flops[t]),
                "useful_compute_time_s": float(self.useful_compute_time_s[t]),
                "compute_time_s": float(self.compute_time_s[t]),
                "comm_bytes": int(self.comm_bytes[t]),
                "comm_time_s": float(self.comm_time_s[t]),
                "exposed_comm_time_s": float(self.exposed_comm_time_s[t]),
                "step_time_s": float(self.step_time_s[t]),
            }
            for t in range(self.world)
        ]

    def summary(self) -> dict:
        return {
            "n": self.n,
            "world": self.world,
            "layout": self.layout,
            "flops_per_pair_per_head": 2 * (self.head_dim + self.v_head_dim),
            "total_time_s": self.total_time_s,
            "total_compute_time_s": self.total_compute_time_s,
            "total_comm_time_s": self.total_comm_time_s,
            "total_exposed_comm_time_s": self.total_exposed_comm_time_s,
            "overlap_min_tokens_per_device": self.overlap_min_tokens_per_device,
            "overlap_min_tokens_per_device_layout": self.overlap_min_tokens_per_device_layout,
            "overlap_min_n": self.overlap_min_n,
            "comm_hidden": self.comm_hidden,
            "memory_bytes_per_device": self.memory_bytes_per_device,
            **{f"memory_{k}": v for k, v in self.memory_breakdown_bytes.items()},
        }


def ring_memory_bytes(
    n: int, world: int, heads: int, kv_heads: int, head_dim: int, dtype_bytes: float, batch: int = 1,
    *, v_head_dim: int | None = None,
) -> dict:
    """Per-device memory of the ring, in bytes, by component plus ``total_bytes``.

    q shard (``head_dim``), k shard (``head_dim``) and v shard (``v_head_dim``,
    default ``head_dim``), out (``v_head_dim``), lse (fp32), and two extra K/V
    buffers for double buffering (the block being computed on and the one being
    received). Not included: the torch runtime's fp32 merge accumulator
    (m * heads * v_head_dim * 4 bytes) and the kernel's temporaries.
    """
    dv = head_dim if v_head_dim is None else v_head_dim
    m = tokens_per_device(n, world)
    b = int(batch)
    parts = {
        "q_bytes": _nbytes(b * m * heads * head_dim, dtype_bytes),
        "kv_bytes": _nbytes(b * m * kv_heads * (head_dim + dv), dtype_bytes),  # K and V
        "out_bytes": _nbytes(b * m * heads * dv, dtype_bytes),
        "lse_bytes": b * heads * m * 4,
    }
    parts["kv_buffers_bytes"] = 2 * parts["kv_bytes"]
    parts["total_bytes"] = sum(parts.values())
    return parts


def _nbytes(elements: int, dtype_bytes: float) -> int:
    """Bytes of ``elements`` values of ``dtype_bytes`` each, exact (Python ints) for whole-byte dtypes."""
    if float(dtype_bytes).is_integer():
        return int(elements) * int(dtype_bytes)
    return int(round(int(elements) * float(dtype_bytes)))


def ring_step_model(
    n: int,
    world: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    dtype_bytes: float,
    peak_flops_per_s: float,
    link_bytes_per_s: float,
    layout: str,
    tile: int = 128,
    batch: int = 1,
    *,
    v_head_dim: int | None = None,
) -> RingStepModel:
    """Roofline time per ring step; see :class:`RingStepModel`.

    ``head_dim`` is the q/k head dim, ``v_head_dim`` that of v (default
    ``head_dim``); take both from :func:`lcprof.cost.ops.attention_dims`.

    useful FLOPs   = 2 * (head_dim + v_head_dim) * heads * batch * max_r pairs[t, r]
    executed FLOPs = 2 * (head_dim + v_head_dim) * heads * batch * max_r executed_pairs[t, r]
    comm bytes     = m * kv_heads * (head_dim + v_head_dim) * dtype_bytes * batch  (K and V; steps 0..G-2)
    """
    if heads % kv_heads:
        raise LcprofError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    if peak_flops_per_s <= 0 or link_bytes_per_s <= 0:
        raise LcprofError("peak_flops_per_s and link_bytes_per_s must be positive")
    dv = head_dim if v_head_dim is None else int(v_head_dim)
    if head_dim < 1 or dv < 1:
        raise LcprofError(f"head dims must be >= 1, got head_dim={head_dim}, v_head_dim={dv}")
    m = tokens_per_device(n, world)
    flops_per_pair = 2 * int(head_dim) + 2 * dv  # q.k and p.v, 2 FLOPs per multiply-add
    per_pair = flops_per_pair * int(heads) * int(batch)

    # Python ints: exact at any n and batch (pair counts are int64 below 2**63; their product with
    # per_pair is not bounded by 64 bits). Times are float64.
    useful = _int_array(int(c) * per_pair for c in pair_counts(n, world, layout).max(axis=1))
    executed = _int_array(int(c) * per_pair for c in executed_pair_counts(n, world, layout, tile).max(axis=1))
    useful_t = np.array([float(f) for f in useful]) / peak_flops_per_s
    compute_t = np.array([float(f) for f in executed]) / peak_flops_per_s

    block_bytes = _nbytes(int(batch) * m * int(kv_heads) * (int(head_dim) + dv), dtype_bytes)  # K and V
    comm_bytes = _int_array([block_bytes] * (world - 1) + [0])  # last step: nothing left to receive
    comm_t = np.array([float(c) for c in comm_bytes]) / link_bytes_per_s
    exposed = np.maximum(0.0, comm_t - compute_t)
    step_t = compute_t + exposed

    l_full = overlap_min_tokens_per_device(heads, kv_heads, dtype_bytes, peak_flops_per_s, link_bytes_per_s, 1.0)
    # Steady-state block fraction: contiguous slowest rank computes full blocks;
    # striped steps are ~half blocks.
    f_layout = 1.0 if layout == "contiguous" else 0.5
    l_layout = overlap_min_tokens_per_device(
        heads, kv_heads, dtype_bytes, peak_flops_per_s, link_bytes_per_s, f_layout
    )
    mem = ring_memory_bytes(n, world, heads, kv_heads, head_dim, dtype_bytes, batch, v_head_dim=dv)
    return RingStepModel(
        n=int(n),
        world=int(world),
        layout=layout,
        batch=int(batch),
        heads=int(heads),
        kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        v_head_dim=dv,
        dtype_bytes=dtype_bytes,
        tile=int(tile),
        peak_flops_per_s=float(peak_flops_per_s),
        link_bytes_per_s=float(link_bytes_per_s),
        tokens_per_device=m,
        pad_tokens=m * world - int(n),
        useful_flops=useful,
        executed_flops=executed,
        useful_compute_time_s=useful_t,
        compute_time_s=compute_t,
        comm_bytes=comm_bytes,
        comm_time_s=comm_t,
        exposed_comm_time_s=exposed,
        step_time_s=step_t,
        total_time_s=float(step_t.sum()),
        total_compute_time_s=float(compute_t.sum()),
        total_comm_time_s=float(comm_t.sum()),
        total_exposed_comm_time_s=float(exposed.sum()),
        overlap_min_tokens_per_device=int(math.ceil(l_full)),
        overlap_min_tokens_per_device_layout=int(math.ceil(l_layout)),
        overlap_min_n=int(world) * int(math.ceil(l_full)),
        comm_hidden=bool(np.all(exposed == 0)),
        memory_bytes_per_device=mem["total_bytes"],
        memory_breakdown_bytes={k: v for k, v in mem.items() if k != "total_bytes"},
    )

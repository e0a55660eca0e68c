"""Ring attention simulated in one process: G virtual ranks on one device.

At step t (0 .. G-1) virtual rank r holds the K/V block that started on rank
(r - t) mod G, attends its query shard to it with the right global positions
(see :mod:`lcprof.ring.block`), and merges the partial result into its
running (out, lse). After G steps every rank has seen every K/V block, and the
merged output equals full attention. Causal blocks that are fully masked (the
contiguous layout's "future" blocks) are skipped, as a real ring does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from lcprof.ring.block import block_attention, block_fully_masked, resolve_impl
from lcprof.ring.merge import merge_attention
from lcprof.ring.partition import partition, positions, unpartition


@dataclass(frozen=True)
class RingSimStats:
    """Per step, per virtual rank: (steps, ranks) arrays."""

    layout: str
    world: int
    n: int
    n_pad: int
    impl: str
    step_time_s: np.ndarray  # wall time of the block attention + merge
    pair_counts: np.ndarray  # allowed real (query, key) pairs, per batch element and head
    skipped: np.ndarray  # fully masked block, not computed


def count_block_pairs(
    q_offset: int, q_stride: int, k_offset: int, k_stride: int, n_local: int, n_real: int, causal: bool = True
) -> int:
    """Allowed (query, key) pairs of one block, counting only positions < n_real."""
    i = np.arange(n_local, dtype=np.int64)
    pos_q = q_offset + i * q_stride
    n_real_keys = int(np.count_nonzero(k_offset + i * k_stride < n_real))
    if causal:
        seen = np.where(pos_q >= k_offset, (pos_q - k_offset) // k_stride + 1, 0)
        seen = np.minimum(seen, n_real_keys)
    else:
        seen = np.full(n_local, n_real_keys)
    return int(seen[pos_q < n_real].sum())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ring_attention_simulated(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    world: int,
    layout: str = "striped",
    causal: bool = True,
    impl: str = "auto",
    return_step_times: bool = False,
    *,
    softmax_scale: float | None = None,
    pad: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, RingSimStats]:
    """Full attention computed as a G-rank ring, simulated on q's device.

    q (batch, n, heads, head_dim), k/v (batch, n, kv_heads, head_dim).
    Returns out (batch, n, heads, head_dim) in the original token order and
    q's dtype; with ``return_step_times`` also a :class:`RingSimStats` (each
    block is then timed with a device sync around it).

    Lengths not divisible by ``world`` are padded at the end (``pad=True``,
    causal only: non-causal attention would attend the pad keys) or rejected
    with a ValueError (``pad=False``).
    """
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"q has {q.shape[1]} tokens but k/v have {k.shape[1]}; the ring needs equal lengths")
    n = q.shape[1]
    if not causal and n % world and pad:
        raise ValueError(
            f"non-causal ring attention with n={n} not divisible by world={world} would attend pad keys; "
            "use a length divisible by world"
        )
    impl_name, _ = resolve_impl(impl, q)
    q_parts, n_pad = partition(q, world, layout, dim=1, pad=pad)
    k_parts, _ = partition(k, world, layout, dim=1, pad=pad)
    v_parts, _ = partition(v, world, layout, dim=1, pad=pad)
    m = q_parts[0].shape[1]

    acc: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * world
    times = np.zeros((world, world))
    pairs = np.zeros((world, world), dtype=np.int64)
    skipped = np.zeros((world, world), dtype=bool)
    for t in range(world):
        for r in range(world):
            src = (r - t) % world
            q_off, q_st = positions(layout, r, world, m)
            k_off, k_st = positions(layout, src, world, m)
            if return_step_times:
                pairs[t, r] = count_block_pairs(q_off, q_st, k_off, k_st, m, n, causal)
            if block_fully_masked(q_off, q_st, m, k_off, causal):
                skipped[t, r] = True
                continue
            if return_step_times:
                _sync(q.device)
                start = time.perf_counter()
            out, lse = block_attention(
                q_parts[r],
                k_parts[src],
                v_parts[src],
                q_offset=q_off,
                q_stride=q_st,
                k_offset=k_off,
                k_stride=k_st,
                causal=causal,
                softmax_scale=softmax_scale,
                impl=impl_name,
            )
            if acc[r] is None:
                acc[r] = (out.to(torch.float64 if out.dtype == torch.float64 else torch.float32), lse)
            else:
                acc[r] = merge_attention(acc[r][0], acc[r][1], out, lse)
            if return_step_times:
                _sync(q.device)
                times[t, r] = time.perf_counter() - start

    # step 0 is each rank's own (diagonal) block, never fully masked, so acc is filled
    outs = [a[0].to(q.dtype) for a in acc]  # each (batch, m, heads, head_dim)
    result = unpartition(outs, layout, dim=1, n_pad=n_pad)  # (batch, n, heads, head_dim)
    if not return_step_times:
        return result
    stats = RingSimStats(
        layout=layout,
        world=world,
        n=n,
        n_pad=n_pad,
        impl=impl_name,
        step_time_s=times,
        pair_counts=pairs,
        skipped=skipped,
    )
    return result, stats

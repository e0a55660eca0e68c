"""What the layers a ring does not run need under context parallelism (pure math, no torch).

A ring (:mod:`lcprof.cost.ring`) splits a sequence of n tokens over G devices and passes K/V blocks
around so that every causal (query, key) pair of a *global* attention layer is computed once. The
other layers of a hybrid model hold the same token split but need something else:

* a **linear-time mixer** (Mamba-1, Mamba-2, Gated DeltaNet, KDA, lightning attention) carries a state
  from token to token. Rank r's tokens follow rank r-1's, so rank r starts its chunk from the
  state rank r-1 ends with: the state (the recurrent state and the conv window of the last
  ``kernel - 1`` inputs, ``lcprof.cost.kinds`` ``state_bytes``) is passed rank to rank once per
  layer, G-1 hops, and the hops are **sequential** -- rank r cannot start before rank r-1 is done::

      rank 0 [chunk 0] -S0-> rank 1 [chunk 1] -S1-> ... -S(G-2)-> rank G-1 [chunk G-1]

  time per layer = sum over ranks of its chunk's compute + (G-1) x (state bytes / link bandwidth).
  (A parallel-scan variant that runs the chunks at once from a zero state and corrects the outputs
  afterwards is not modelled.)
* a **sliding-window** (W) or **chunked** (C) attention layer with the contiguous layout needs only
  a halo: the K/V of the keys its first queries see on earlier ranks -- min(W - 1, r m) tokens for
  a window, (r m) mod C for chunks that start before rank r's first token -- exchanged once, all
  ranks at once; each rank then computes its own queries' pairs (exact, ``lcprof.cost.ops``).
* an **MLP-only** layer is per token: nothing crosses ranks.

FLOPs count 2 per multiply-add; compute times are roofline at ``peak_flops_per_s``.
"""

from __future__ import annotations

import numpy as np

from lcprof.cost.kinds import mixer_ops, mixer_state_bytes
from lcprof.cost.ops import attention_dims, layer_pairs
from lcprof.cost.ring import _check_n_world, _nbytes, tokens_per_device
from lcprof.errors import LcprofError

__all__ = ["contiguous_real_tokens", "state_pass", "window_halo"]


def contiguous_real_tokens(n: int, world: int) -> list[int]:
    """Real (non-pad) tokens on each rank of the contiguous layout: min(m, n - r m) clipped at 0."""
    m = tokens_per_device(n, world)
    return [max(0, min(m, int(n) - r * m)) for r in range(int(world))]


def _positive_rates(peak_flops_per_s: float, link_bytes_per_s: float) -> None:
    if not (peak_flops_per_s > 0 and link_bytes_per_s > 0):
        raise LcprofError("peak_flops_per_s and link_bytes_per_s must be positive")


def state_pass(mixer, n: int, world: int, *, dtype: str = "bf16", state_dtype: str | None = None, batch: int = 1,
               peak_flops_per_s: float, link_bytes_per_s: float) -> dict:
    """One linear-time mixer layer over G ranks, contiguous split, state passed rank to rank.

    state_bytes_per_hop   = batch x the mixer's state bytes (recurrent + conv window)
    hops_per_layer        = G - 1, sequential
    local_flops[r]        = the mixer's executed FLOPs for rank r's real tokens (chunked form)
    sequential_time_s     = sum_r local_flops[r] / peak + (G - 1) x state_bytes_per_hop / bw
    """
    _check_n_world(n, world)
    _positive_rates(peak_flops_per_s, link_bytes_per_s)
    hop_bytes = int(batch) * int(mixer_state_bytes(mixer, dtype, state_dtype=state_dtype))
    per_rank = contiguous_real_tokens(n, world)
    flops_of: dict[int, float] = {0: 0.0}
    for q in set(per_rank) - {0}:
        ops = mixer_ops(mixer, np.asarray([float(q)]), 0, batch=batch, dtype=dtype, state_dtype=state_dtype)
        flops_of[q] = float(sum(float(op.flops[0]) for op in ops))
    local = [flops_of[q] for q in per_rank]
    hops = int(world) - 1
    hop_s = hop_bytes / link_bytes_per_s
    compute_s = sum(local) / peak_flops_per_s
    return {
        "state_bytes_per_hop": hop_bytes,
        "hops_per_layer": hops,
        "hop_time_s": hop_s,
        "local_flops_max": max(local),
        "local_compute_time_max_s": max(local) / peak_flops_per_s,
        "sequential_compute_time_s": compute_s,
        "sequential_time_per_layer_s": compute_s + hops * hop_s,
    }


def window_halo(spec, layer, n: int, world: int, *, dtype_bytes: float, batch: int = 1, peak_flops_per_s: float,
                link_bytes_per_s: float) -> dict:
    """One sliding-window or chunked attention layer over G ranks, contiguous split, with a halo.

    halo_tokens[r] = min(W - 1, r m) (window W) or (r m) mod C (chunk C)
    halo_bytes     = batch x max_r halo_tokens[r] x kv_heads x (qk_dim + v_dim) x dtype bytes (K and V)
    pairs[r]       = the layer's causal pairs of rank r's real queries after the r m tokens before them
    time_per_layer = halo_bytes / bw + max_r pairs[r] x 2 (qk_dim + v_dim) x heads x batch / peak
    """
    _check_n_world(n, world)
    _positive_rates(peak_flops_per_s, link_bytes_per_s)
    if layer.attn not in ("sliding", "chunked"):
        raise LcprofError(f"a halo is the need of sliding-window or chunked attention, not {layer.attn!r}")
    m = tokens_per_device(n, world)
    w = int(layer.window)
    starts = [r * m for r in range(int(world))]
    halo = [min(w - 1, s) if layer.attn == "sliding" else s % w for s in starts]
    kv_heads, qk_dim, v_dim = attention_dims(spec, "naive", layer)
    heads = spec.attn_dims(layer).n_heads if spec.mla is None else spec.n_heads
    real = contiguous_real_tokens(n, world)
    pairs = layer_pairs(spec, layer, np.asarray(real, dtype=np.float64), np.asarray(starts, dtype=np.float64))
    pairs = [int(round(float(p))) for p in np.atleast_1d(pairs)]  # per query head, exact below 2**53
    flops_per_pair = 2 * qk_dim + 2 * v_dim
    slowest_flops = max(pairs) * flops_per_pair * heads * int(batch)
    halo_bytes = _nbytes(int(batch) * max(halo) * kv_heads * (qk_dim + v_dim), dtype_bytes)
    compute_s = slowest_flops / peak_flops_per_s
    comm_s = halo_bytes / link_bytes_per_s
    return {
        "halo_tokens_max": max(halo),
        "halo_bytes": halo_bytes,
        "hops_per_layer": 1 if max(halo) > 0 else 0,
        "pairs_per_head_max": max(pairs),
        "local_flops_max": slowest_flops,
        "local_compute_time_max_s": compute_s,
        "halo_time_s": comm_s,
        "time_per_layer_s": compute_s + comm_s,
    }

"""Ring attention over a real ``torch.distributed`` process group.

Each process holds its own shard of q, k, v (layout "striped" or
"contiguous", see :mod:`lcprof.ring.partition`). At each of the G steps a
rank posts the send of its current K/V block to rank + 1 and the receive of
the next block from rank - 1, computes block attention on the current block
while the transfer is in flight, waits, merges, and swaps its two K/V buffers
(double buffering: one being computed on, one being received into)::

    step t:  isend(kv_cur -> r+1), irecv(kv_next <- r-1)
             out_t, lse_t = attn(q, kv_cur)        # overlaps the transfer
             wait; merge; swap(kv_cur, kv_next)

Backend: nccl for CUDA tensors, gloo for CPU tensors
(:func:`backend_for_device`). Process groups are initialized from ``env://``
so ``torchrun`` works; a one-process ring outside torchrun uses an in-memory
store (no port).

Failure: setup and every collective time out after ``timeout_s`` (default
:data:`DEFAULT_TIMEOUT_S`, or ``$LCPROF_DIST_TIMEOUT_S``; gloo's own default
is 30 minutes). A failed rank destroys its process group and raises
:class:`lcprof.errors.LcprofRuntimeError` (one line, naming the rank). Under
torchrun each worker asks the kernel to end it when its launcher dies, so a
killed torchrun leaves no rank behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from lcprof.cost.ring import pair_counts, tokens_per_device
from lcprof.errors import LcprofError, LcprofRuntimeError
from lcprof.procs import die_with_parent, under_torchrun
from lcprof.ring.block import block_attention, block_fully_masked, resolve_impl
from lcprof.ring.merge import merge_attention
from lcprof.ring.partition import positions

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}

#: Seconds a process-group setup or a collective may take before it fails (gloo's default: 1800).
DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "LCPROF_DIST_TIMEOUT_S"


def dist_timeout_s(timeout_s: float | None = None) -> float:
    """The timeout to use: ``timeout_s``, else ``$LCPROF_DIST_TIMEOUT_S``, else DEFAULT_TIMEOUT_S."""
    if timeout_s is None:
        text = os.environ.get(TIMEOUT_ENV)
        if text is None or not text.strip():
            return DEFAULT_TIMEOUT_S
        try:
            timeout_s = float(text)
        except ValueError:
            raise LcprofError(f"${TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise LcprofError(f"distributed timeout must be a positive, finite number of seconds, got {timeout_s!r}")
    return float(timeout_s)


def _is_distributed_failure(exc: BaseException) -> bool:
    """A failure of the process group itself (timeout, a peer gone), not a bug in the computation."""
    if isinstance(exc, (dist.DistError, TimeoutError, ConnectionError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        w in text for w in ("gloo", "nccl", "timed out", "timeout", "connection", "peer", "socket", "store"))


@dataclass(frozen=True)
class RingRankStats:
    """This rank's per-step timings, arrays of length G (steps)."""

    rank: int
    world: int
    layout: str
    impl: str
    compute_time_s: np.ndarray  # block attention + merge
    wait_time_s: np.ndarray  # waiting for the K/V transfer after compute
    skipped: np.ndarray  # fully masked block, not computed


def backend_for_device(device: torch.device | str) -> str:
    """'nccl' for CUDA devices, 'gloo' otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_ring_process_group(device: torch.device | str | None = None, *, timeout_s: float | None = None
                            ) -> torch.device:
    """Initialize the default process group if needed: from env:// (torchrun), or, for a
    one-process ring with no MASTER_ADDR, on an in-memory store (no port to collide on).

    ``device`` None means cuda:LOCAL_RANK when CUDA is available, else cpu. Setup and every
    collective of the group time out after :func:`dist_timeout_s` seconds.
    Returns the device this rank should use.
    """
    timeout = timedelta(seconds=dist_timeout_s(timeout_s))
    if device is None:
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        else:
            device = torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1 and "MASTER_ADDR" not in os.environ:
            dist.init_process_group(backend=backend_for_device(device), store=dist.HashStore(), rank=0,
                                    world_size=1, timeout=timeout, **kwargs)
        else:
            dist.init_process_group(backend=backend_for_device(device), init_method="env://", timeout=timeout,
                                    **kwargs)
    return device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peer(group, group_rank: int) -> int:
    return group_rank if group is None else dist.get_global_rank(group, group_rank)


def ring_attention_distributed(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    layout: str = "striped",
    causal: bool = True,
    impl: str = "auto",
    softmax_scale: float | None = None,
    group=None,
    return_step_times: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, RingRankStats]:
    """This rank's slice of full attention, computed with a K/V ring.

    q (batch, m, heads, head_dim), k/v (batch, m, kv_heads, head_dim): this
    rank's shard (every rank the same m; pad the global sequence at the end,
    see :mod:`lcprof.ring.partition`). Returns out (batch, m, heads, head_dim)
    for this rank's queries, in q's dtype; with ``return_step_times`` also a
    :class:`RingRankStats` (timed with device syncs, so slightly less overlap).
    """
    if not dist.is_initialized():
        raise RuntimeError("ring_attention_distributed needs an initialized process group")
    backend = dist.get_backend(group)
    if backend == "nccl" and not q.is_cuda:
        raise ValueError("the nccl backend needs CUDA tensors; use gloo for CPU tensors")
    if k.shape != v.shape or q.shape[1] != k.shape[1]:
        raise ValueError(f"shard shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    impl_name, _ = resolve_impl(impl, q)
    m = q.shape[1]
    send_to = _peer(group, (rank + 1) % world)
    recv_from = _peer(group, (rank - 1) % world)
    q_off, q_st = positions(layout, rank, world, m)

    kv_cur = torch.stack([k, v])  # (2, batch, m, kv_heads, head_dim)
    kv_next = torch.empty_like(kv_cur)
    acc_out = acc_lse = None
    compute_s = np.zeros(world)
    wait_s = np.zeros(world)
    skipped = np.zeros(world, dtype=bool)
    for t in range(world):
        src = (rank - t) % world
        reqs = []
        if t < world - 1:
            ops = [
                dist.P2POp(dist.isend, kv_cur, send_to, group),
                dist.P2POp(dist.irecv, kv_next, recv_from, group),
            ]
            reqs = dist.batch_isend_irecv(ops)
        start = time.perf_counter()
        k_off, k_st = positions(layout, src, world, m)
        if block_fully_masked(q_off, q_st, m, k_off, causal):
            skipped[t] = True
        else:
            out, lse = block_attention(
                q,
                kv_cur[0],
                kv_cur[1],
                q_offset=q_off,
                q_stride=q_st,
                k_offset=k_off,
                k_stride=k_st,
                causal=causal,
                softmax_scale=softmax_scale,
                impl=impl_name,
            )
            if acc_out is None:
                acc_out = out.to(torch.float64 if out.dtype == torch.float64 else torch.float32)
                acc_lse = lse
            else:
                acc_out, acc_lse = merge_attention(acc_out, acc_lse, out, lse)
        if return_step_times:
            _sync(q.device)
        mid = time.perf_counter()
        for req in reqs:
            req.wait()
        if return_step_times:
            _sync(q.device)
        end = time.perf_counter()
        compute_s[t] = mid - start
        wait_s[t] = end - mid
        kv_cur, kv_next = kv_next, kv_cur

    # step 0 is the rank's own diagonal block, never fully masked
    out = acc_out.to(q.dtype)
    if not return_step_times:
        return out
    return out, RingRankStats(
        rank=rank, world=world, layout=layout, impl=impl_name, compute_time_s=compute_s, wait_time_s=wait_s,
        skipped=skipped,
    )


def _resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, d in DTYPES.items() if d == dtype)


def measure_distributed_ring(
    n: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    dtype,
    layout: str,
    repeats: int,
    *,
    batch: int = 1,
    causal: bool = True,
    impl: str = "auto",
    warmup: int = 1,
    seed: int = 0,
    group=None,
) -> dict:
    """Time the distributed ring; call inside an initialized process group on every rank.

    Each rank builds random shards of m = ceil(n/G) tokens on its device
    (cuda:current for nccl, cpu for gloo), runs ``warmup`` untimed rings and
    ``repeats`` timed ones. Per-rank raw samples are gathered to every rank
    (all_gather_object), so rank 0 holds them all. Returns a flat-ish dict of
    plain Python values (JSON-ready)::

        compute_time_s[rank][repeat][step], wait_time_s[rank][repeat][step],
        total_time_s[rank][repeat]             raw samples
        compute_time_median_s[step][rank], wait_time_median_s[step][rank]
        step_time_median_s[step]               max_r median(compute + wait)
        total_time_median_s                    max_r median(total)
        pairs[step][rank]                      allowed pairs per head (analytic)
    """
    if not dist.is_initialized():
        raise RuntimeError("measure_distributed_ring needs an initialized process group")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch_dtype = _resolve_dtype(dtype)
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    backend = dist.get_backend(group)
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    m = tokens_per_device(n, world)

    gen = torch.Generator(device="cpu").manual_seed(seed * 100003 + rank)
    q = torch.randn(batch, m, heads, head_dim, generator=gen).to(device=device, dtype=torch_dtype)
    k = torch.randn(batch, m, kv_heads, head_dim, generator=gen).to(device=device, dtype=torch_dtype)
    v = torch.randn(batch, m, kv_heads, head_dim, generator=gen).to(device=device, dtype=torch_dtype)
    impl_name, impl_reason = resolve_impl(impl, q)

    def one(timed: bool):
        dist.barrier(group)
        _sync(device)
        start = time.perf_counter()
        _, stats = ring_attention_distributed(
            q, k, v, layout=layout, causal=causal, impl=impl_name, group=group, return_step_times=True
        )
        _sync(device)
        return time.perf_counter() - start, stats

    for _ in range(warmup):
        one(False)
    local = {"compute": [], "wait": [], "total": []}
    for _ in range(repeats):
        total, stats = one(True)
        local["compute"].append(stats.compute_time_s.tolist())
        local["wait"].append(stats.wait_time_s.tolist())
        local["total"].append(total)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, local, group=group)

    compute = np.array([g["compute"] for g in gathered])  # (ranks, repeats, steps)
    wait = np.array([g["wait"] for g in gathered])  # (ranks, repeats, steps)
    total = np.array([g["total"] for g in gathered])  # (ranks, repeats)
    compute_med = np.median(compute, axis=1).T  # (steps, ranks)
    wait_med = np.median(wait, axis=1).T  # (steps, ranks)
    step_med = np.median(compute + wait, axis=1).T.max(axis=1)  # (steps,)
    return {
        "n": int(n),
        "batch": int(batch),
        "heads": int(heads),
        "kv_heads": int(kv_heads),
        "head_dim": int(head_dim),
        "dtype": _dtype_name(torch_dtype),
        "layout": layout,
        "causal": bool(causal),
        "world": int(world),
        "tokens_per_device": int(m),
        "n_pad": int(m * world - n),
        "repeats": int(repeats),
        "warmup": int(warmup),
        "backend": backend,
        "device": device.type if device.type != "cuda" else torch.cuda.get_device_name(device),
        "impl": impl_name,
        "impl_reason": impl_reason,
        "compute_time_s": compute.tolist(),
        "wait_time_s": wait.tolist(),
        "total_time_s": total.tolist(),
        "compute_time_median_s": compute_med.tolist(),
        "wait_time_median_s": wait_med.tolist(),
        "step_time_median_s": step_med.tolist(),
        "total_time_median_s": float(np.median(total, axis=1).max()),
        "pairs": pair_counts(n, world, layout).tolist() if causal else None,
    }


@contextlib.contextmanager
def ring_process_group(device: torch.device | str | None = None, *, timeout_s: float | None = None):
    """The process group for a measurement, as a context: initialized if needed (see
    :func:`init_ring_process_group`), destroyed on exit (also on failure) if this context created it.

    Yields this rank's device. A distributed failure inside -- setup not done within ``timeout_s``,
    a collective timing out, a peer gone -- raises :class:`LcprofRuntimeError` naming the rank.

    Create the group once and run every measurement in it: under torchrun a second default group
    in the same process reuses the first one's keys in the agent's store (destroy_process_group
    resets the group counter), and its gloo connections can then wait forever on a stale address.
    """
    if under_torchrun():
        die_with_parent()
    rank = os.environ.get("RANK", "0")
    created = not dist.is_initialized()
    try:
        try:
            dev = init_ring_process_group(device, timeout_s=timeout_s)
        except Exception as exc:
            if _is_distributed_failure(exc):
                raise LcprofRuntimeError(f"ring rank {rank}: process-group setup failed within "
                                         f"{dist_timeout_s(timeout_s):g} s: {_first_line(exc)}") from exc
            raise
        yield dev
    except Exception as exc:
        if _is_distributed_failure(exc) and not isinstance(exc, LcprofRuntimeError):
            raise LcprofRuntimeError(f"ring rank {rank}: a collective failed: {_first_line(exc)}") from exc
        raise
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def run_ring_layouts(
    n: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    dtype="bf16",
    layouts=("contiguous", "striped"),
    repeats: int = 10,
    *,
    batch: int = 1,
    causal: bool = True,
    impl: str = "auto",
    warmup: int = 2,
    seed: int = 0,
    timeout_s: float | None = None,
) -> list[dict] | None:
    """Entry point for one ``torchrun`` worker: one process group, every layout measured in it.

    Uses cuda:LOCAL_RANK + nccl when CUDA is available, else cpu + gloo. Returns one
    :func:`measure_distributed_ring` dict per layout on rank 0, None elsewhere. Failures: see
    :func:`ring_process_group`.
    """
    with ring_process_group(timeout_s=timeout_s):
        results = [measure_distributed_ring(n, heads, kv_heads, head_dim, dtype, lay, repeats, batch=batch,
                                            causal=causal, impl=impl, warmup=warmup, seed=seed)
                   for lay in layouts]
        return results if dist.get_rank() == 0 else None


def run_ring_worker(
    n: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    dtype="bf16",
    layout: str = "striped",
    repeats: int = 10,
    *,
    batch: int = 1,
    causal: bool = True,
    impl: str = "auto",
    warmup: int = 2,
    seed: int = 0,
    timeout_s: float | None = None,
) -> dict | None:
    """One layout: :func:`run_ring_layouts` with ``layouts=(layout,)``; its dict on rank 0, else None."""
    res = run_ring_layouts(n, heads, kv_heads, head_dim, dtype, (layout,), repeats, batch=batch, causal=causal,
                           impl=impl, warmup=warmup, seed=seed, timeout_s=timeout_s)
    return None if res is None else res[0]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"

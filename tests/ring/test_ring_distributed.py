"""A real gloo ring: G processes on the CPU, spawned by the test."""

import json
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lcprof.ring.partition import partition, unpartition

N_TOKENS = 30  # not divisible by 4: exercises the padding path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(n):
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(2, n, 4, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(2, n, 2, 8, generator=gen, dtype=torch.float64)
    v = torch.randn(2, n, 2, 8, generator=gen, dtype=torch.float64)
    return q, k, v


def _worker(rank, world, port, layout, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from lcprof.ring.distributed import measure_distributed_ring, ring_attention_distributed

    dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=60))
    try:
        q, k, v = _inputs(N_TOKENS)  # every rank builds the same global tensors, keeps its shard
        q_local = partition(q, world, layout)[0][rank]
        k_local = partition(k, world, layout)[0][rank]
        v_local = partition(v, world, layout)[0][rank]
        out, stats = ring_attention_distributed(
            q_local, k_local, v_local, layout=layout, impl="torch", return_step_times=True
        )
        torch.save(out, os.path.join(out_dir, f"out{rank}.pt"))
        assert stats.compute_time_s.shape == (world,)
        result = measure_distributed_ring(16, 2, 1, 8, "fp32", layout, repeats=2, warmup=1)
        if rank == 0:
            with open(os.path.join(out_dir, "measure.json"), "w") as f:
                json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world,layout", [(2, "striped"), (4, "striped"), (4, "contiguous")])
def test_gloo_ring_equals_full_causal(world, layout, tmp_path, full_attention):
    mp.spawn(_worker, args=(world, _free_port(), layout, str(tmp_path)), nprocs=world, join=True)
    q, k, v = _inputs(N_TOKENS)
    parts = [torch.load(tmp_path / f"out{r}.pt") for r in range(world)]
    n_pad = partition(q, world, layout)[1]
    out = unpartition(parts, layout, dim=1, n_pad=n_pad)
    torch.testing.assert_close(out, full_attention(q, k, v), rtol=1e-11, atol=1e-12)

    result = json.loads((tmp_path / "measure.json").read_text())
    assert result["world"] == world and result["backend"] == "gloo" and result["impl"] == "torch"
    assert len(result["compute_time_s"]) == world  # gathered from every rank
    assert len(result["compute_time_s"][0]) == 2 and len(result["compute_time_s"][0][0]) == world
    assert len(result["step_time_median_s"]) == world
    assert sum(map(sum, result["pairs"])) == 16 * 17 // 2
    assert all(t >= 0 for rank in result["wait_time_s"] for rep in rank for t in rep)


def test_requires_process_group():
    from lcprof.ring.distributed import ring_attention_distributed

    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    x = torch.zeros(1, 4, 2, 8)
    with pytest.raises(RuntimeError, match="initialized process group"):
        ring_attention_distributed(x, x, x)


# ------------------------------------------------------------------------------------------------
# Failure: timeouts on setup and on collectives, the group destroyed, one line naming the rank
# ------------------------------------------------------------------------------------------------

def test_dist_timeout_from_argument_env_and_default(monkeypatch):
    from lcprof.errors import LcprofError
    from lcprof.ring.distributed import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, dist_timeout_s

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert dist_timeout_s() == DEFAULT_TIMEOUT_S == 300.0  # not gloo's 1800 s
    monkeypatch.setenv(TIMEOUT_ENV, "12.5")
    assert dist_timeout_s() == 12.5
    assert dist_timeout_s(3) == 3.0  # the argument wins
    for bad in ("nan", "inf", "-1", "0", "soon"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(LcprofError, match=TIMEOUT_ENV if bad == "soon" else "positive, finite"):
            dist_timeout_s()


def _lonely_rank(rank, port, out_dir):
    """Rank 0 of a 2-rank group whose rank 1 never comes: setup must give up after the timeout."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="2")
    from lcprof.errors import LcprofRuntimeError
    from lcprof.ring.distributed import run_ring_worker

    import time
    start = time.monotonic()
    try:
        run_ring_worker(16, 2, 1, 8, dtype="fp32", layout="striped", repeats=1, warmup=0, timeout_s=3)
        msg = "no error"
    except LcprofRuntimeError as exc:
        msg = str(exc)
    with open(os.path.join(out_dir, "lonely.json"), "w") as f:
        json.dump({"msg": msg, "seconds": time.monotonic() - start, "initialized": dist.is_initialized()}, f)


def test_setup_times_out_and_says_which_rank(tmp_path):
    mp.spawn(_lonely_rank, args=(_free_port(), str(tmp_path)), nprocs=1, join=True)
    res = json.loads((tmp_path / "lonely.json").read_text())
    assert res["msg"].startswith("ring rank 0: process-group setup failed within 3 s"), res
    assert res["seconds"] < 60, res  # seconds, not gloo's 30 minutes
    assert res["initialized"] is False


def _crashing_peer(rank, world, port, out_dir):
    """Rank 1 dies right after the group is up; rank 0's collectives must fail, not wait forever."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from lcprof.errors import LcprofRuntimeError
    from lcprof.ring import distributed as D

    if rank == 1:
        D.init_ring_process_group(timeout_s=20)
        os._exit(0)  # a crash: no goodbye, no destroy
    import time
    start = time.monotonic()
    try:
        D.run_ring_worker(4096, 4, 2, 32, dtype="fp32", layout="striped", repeats=1000, warmup=0, timeout_s=20)
        msg = "no error"
    except LcprofRuntimeError as exc:
        msg = str(exc)
    with open(os.path.join(out_dir, "crash.json"), "w") as f:
        json.dump({"msg": msg, "seconds": time.monotonic() - start, "initialized": dist.is_initialized()}, f)


def test_peer_crash_fails_the_ring_and_destroys_the_group(tmp_path):
    ctx = mp.start_processes(_crashing_peer, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    while not ctx.join(timeout=120):
        pass
    res = json.loads((tmp_path / "crash.json").read_text())
    assert res["msg"].startswith("ring rank 0: "), res  # one line, naming the rank
    assert "\n" not in res["msg"]
    assert res["seconds"] < 100, res
    assert res["initialized"] is False  # the group was destroyed on the way out

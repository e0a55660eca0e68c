"""`lcprof ring`: the analytic report through the CLI, and a real 2-process gloo ring under torchrun."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lcprof.cli import main

TINY = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096}


def test_ring_json_imbalance_exact():
    res = CliRunner().invoke(main, ["ring", "--model", "llama3-8b", "--n", "1M", "--gpus", "8",
                                    "--link", "nvlink4", "--format", "json"])
    assert res.exit_code == 0, res.output
    recs = {r["layout"]: r for r in json.loads(res.output)}
    n, g = 1 << 20, 8
    m = n // g
    # contiguous: slowest rank at every step is the last one; sum_t max = G*m(m+1)/2 + ... exact form:
    assert recs["contiguous"]["load_imbalance"] == pytest.approx((2 * g * m - m + 1) / (g * m + 1), rel=1e-12)
    assert recs["striped"]["load_imbalance"] == pytest.approx(g * (m + 1) / (g * m + 1), rel=1e-12)
    # comm per step: K and V of m tokens, 8 KV heads x 128 dims, bf16, over 450e9 B/s, G-1 transfers
    per_step = 2 * m * 8 * 128 * 2 / 450e9
    assert recs["striped"]["total_comm_time_s"] == pytest.approx(per_step * (g - 1), rel=1e-12)
    # overlap: L >= kv_heads * bytes * peak / (2 * heads * bw) for a full block (H100 bf16 989.4e12 dense)
    assert recs["contiguous"]["overlap_min_tokens_per_device"] == pytest.approx(
        8 * 2 * 989.4e12 / (2 * 32 * 450e9), abs=1)


def test_ring_bad_link_one_line():
    proc = subprocess.run([sys.executable, "-m", "lcprof", "ring", "--model", "llama3-8b", "--n", "1M",
                           "--link", "nvlink9"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown link 'nvlink9'" in lines[0] and "nvlink4" in lines[0]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_ring_measure_under_torchrun(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    env = {k: v for k, v in os.environ.items()
           if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    for attempt in range(2):  # a port picked free can be taken before torchrun binds it: retry once
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                 "--master-addr", "127.0.0.1", "--master-port", str(port),
                 "-m", "lcprof", "ring", "--model", str(cfg), "-n", "256", "--measure", "--repeats", "2",
                 "--format", "json"],
                capture_output=True, text=True, timeout=60, env=env)
        except subprocess.TimeoutExpired as exc:
            proc = exc
            continue
        if proc.returncode == 0:
            break
    assert not isinstance(proc, subprocess.TimeoutExpired), f"torchrun timed out twice: {proc.stderr!r:.3000}"
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = json.loads(proc.stdout[proc.stdout.index("["):])
    assert {r["layout"] for r in recs} == {"contiguous", "striped"}
    for r in recs:
        assert r["world"] == 2 and r["backend"] == "gloo" and r["tokens_per_device"] == 128
        assert r["total_time_median_s"] > 0

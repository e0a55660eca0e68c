"""`lcprof ring`: the analytic report through the CLI, and a real 2-process gloo ring under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from lcprof.cli import main

TINY = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY))
    return path


def test_ring_json_imbalance_exact():
    res = CliRunner().invoke(main, ["ring", "--model", "llama3-8b", "--n", "1M", "--gpus", "8",
                                    "--link", "nvlink4", "--calibration", "datasheet", "--format", "json"])
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


TAG = "LCPROF_TEST_TAG"


def tagged_processes(tag: str) -> list[str]:
    """Live processes (not zombies) whose environment carries ``LCPROF_TEST_TAG=tag``: 'pid state cmdline'.

    torchrun starts each rank in a session of its own, so a rank is found by its environment, which
    it inherits, not by its session or parent (an orphan's parent is init).
    """
    needle = f"{TAG}={tag}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle not in (d / "environ").read_bytes().split(b"\0"):
                continue
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                out.append(f"{d.name} {state} {cmd[:300]}")
        except (OSError, IndexError):
            continue
    return out


def kill_tagged(tag: str) -> None:
    for p in tagged_processes(tag):
        try:
            os.kill(int(p.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(tag: str, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    left = tagged_processes(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = tagged_processes(tag)
    return left


def run_torchrun(args, *, timeout_s, env):
    """torchrun with a tag in its environment: on timeout every tagged process (agent and ranks) is
    killed. Returns (returncode or None on timeout, stdout, stderr, processes left after 10 s)."""
    tag = env[TAG]
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        # Where was everyone? Python's faulthandler (PYTHONFAULTHANDLER) prints every thread's stack
        # on SIGABRT, into the stderr collected here; then everything tagged is killed.
        stuck = tagged_processes(tag)
        for p in stuck:
            try:
                os.kill(int(p.split()[0]), signal.SIGABRT)
            except ProcessLookupError:
                pass
        time.sleep(3)
        kill_tagged(tag)
        out, err = proc.communicate()
        err = f"processes at the timeout: {stuck}\n{err}"
        code = None
    left = wait_gone(tag, 10)  # ranks still shutting down get a moment, then count as leaked
    kill_tagged(tag)
    return code, out, err, left


def _torchrun_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    # LOGLEVEL=INFO: torchrun logs its rendezvous and worker starts, so a failure's stderr says how far it got
    env.update({"OMP_NUM_THREADS": "1", "LCPROF_DIST_TIMEOUT_S": "120", "PYTHONFAULTHANDLER": "1", "LOGLEVEL": "INFO",
                TAG: os.environ.get(TAG) or uuid.uuid4().hex, **extra})
    return env


TORCHRUN_TIMEOUT_S = 400  # torch imports three times over; a loaded 2-core box has taken 40 s


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to check for leaked processes")
def test_ring_measure_under_torchrun(tmp_path):
    """A real 2-rank gloo ring under torchrun: right numbers, and no process left behind.

    One attempt, no retry: ``--standalone`` lets torchrun pick its own free port (no race with a
    port picked here), so a failure is a real one, and its stderr is in the message. Each rank
    gives up after LCPROF_DIST_TIMEOUT_S if its peers or the store vanish.
    """
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    args = ["--standalone", "--nnodes", "1", "--nproc-per-node", "2",
            "-m", "lcprof", "ring", "--model", str(cfg), "-n", "256", "--measure", "--repeats", "2", "--format", "json"]
    code, out, err, left = run_torchrun(args, timeout_s=TORCHRUN_TIMEOUT_S, env=_torchrun_env())
    assert left == [], f"torchrun left processes behind: {left}"
    assert code is not None, f"torchrun timed out after {TORCHRUN_TIMEOUT_S} s; its stderr: {err[-12000:]}"
    assert code == 0, f"torchrun exit {code}; its stderr: {err[-6000:]}"
    recs = json.loads(out[out.index("["):])
    assert {r["layout"] for r in recs} == {"contiguous", "striped"}
    for r in recs:
        assert r["world"] == 2 and r["backend"] == "gloo" and r["tokens_per_device"] == 128
        assert r["total_time_median_s"] > 0


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to check for leaked processes")
def test_killed_torchrun_leaves_no_rank(tmp_path):
    """kill -9 of torchrun's agent alone: its ranks die with it (PR_SET_PDEATHSIG), they do not
    wait on the dead agent's store until a timeout."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    env = _torchrun_env(LCPROF_DIST_TIMEOUT_S="600")
    tag = env[TAG]
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
         "-m", "lcprof", "ring", "--model", str(cfg), "-n", "4096", "--measure", "--repeats", "100000",
         "--format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + TORCHRUN_TIMEOUT_S
        ranks = []
        while time.monotonic() < deadline:  # both ranks past their start (torch loaded)
            ranks = [p for p in tagged_processes(tag) if int(p.split()[0]) != proc.pid]
            if len(ranks) == 2 and all(_loaded_torch(int(p.split()[0])) for p in ranks):
                break
            time.sleep(0.5)
        assert len(ranks) == 2, tagged_processes(tag)
        os.kill(proc.pid, signal.SIGKILL)  # the agent only
        proc.wait()
        left = wait_gone(tag, 30)
        assert left == [], f"ranks outlived their killed torchrun: {left}"
    finally:
        kill_tagged(tag)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _loaded_torch(pid: int) -> bool:
    """The rank has loaded torch, so it is past die_with_parent (the ring command calls it first)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_ring_measure_one_process_without_torchrun(tiny_config):
    """No torchrun: a one-rank ring on an in-memory store (no port), the numbers of a whole-sequence block."""
    res = CliRunner().invoke(main, ["ring", "--model", str(tiny_config), "-n", "64", "--measure", "--repeats", "1",
                                    "--layout", "striped", "--dtype", "fp32", "--format", "json"])
    assert res.exit_code == 0, res.output
    (rec,) = json.loads(res.stdout)
    assert rec["world"] == 1 and rec["tokens_per_device"] == 64 and rec["backend"] == "gloo"
    assert rec["total_time_median_s"] > 0


def test_ring_measure_refuses_bad_input_before_torch():
    assert_one_line(["ring", "--model", "llama3-8b", "-n", "64", "--measure", "--dtype", "fp8"], "fp8")
    assert_one_line(["ring", "--model", "llama3-8b", "-n", "64", "--measure", "--timeout-s", "nan"], "nan")
    assert_one_line(["ring", "--model", "llama3-8b", "-n", "64", "--measure", "--timeout-s", "0"], "timeout")


def assert_one_line(args, text):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], res.stderr

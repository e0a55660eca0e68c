"""One writer per results file: a second sweep on a locked file exits 2 naming the holder; a
resumed sweep keys points by the whole point key (a new MLA form is a new point)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from lcprof.errors import LcprofError
from lcprof.measure.sweep import run_sweep
from lcprof.measure.execution import Execution, SweepWorkload
from lcprof.results import ResultsLock, ResultsLocked, lock_path, point_key

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = Execution(budget_s=0.01, min_reps=2, max_reps=3)  # with device="cpu" in every call

HOLDER = """
import sys, time
from lcprof.results import ResultsLock
lock = ResultsLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _holder(path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_sweep_on_a_locked_file_exits_2_naming_the_holder(tiny_config_path, tmp_path):
    out = tmp_path / "r.csv"
    holder = _holder(out)
    try:
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        r = subprocess.run([sys.executable, "-m", "lcprof", "sweep", "--model", str(tiny_config_path("gqa")),
                            "--n", "32", "--backends", "eager", "--device", "cpu", "--out", str(out)],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, r.stderr
        assert f"pid {holder.pid} on {socket.gethostname()}, started 20" in lines[0]
        assert "being written by another sweep" in lines[0]
        assert not out.exists()  # the refused sweep wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: the kernel dropped its lock, the next writer gets it
    with ResultsLock(out) as lock:
        info = json.loads(lock_path(out).read_text())
        assert info["pid"] == os.getpid()
        with pytest.raises(ResultsLocked):  # and holds it against a second one in this process
            ResultsLock(out).acquire()


def test_lock_file_names_holder_and_is_emptied_on_release(tmp_path):
    out = tmp_path / "x.csv"
    lock = ResultsLock(out).acquire()
    info = json.loads(lock_path(out).read_text())
    assert set(info) == {"pid", "host", "start"} and info["pid"] == os.getpid()
    lock.release()
    assert lock_path(out).read_text() == ""
    ResultsLock(out).acquire().release()  # free again


def test_resume_with_another_mla_form_measures_the_new_point(spec_of, tmp_path):
    spec = spec_of("mla")
    out = tmp_path / "mla.csv"
    run_sweep(SweepWorkload(spec, "32", "eager", "fp32", mla_form="naive"), FAST, out=out, device="cpu")
    df = run_sweep(SweepWorkload(spec, "32", "eager", "fp32", mla_form="absorbed"), FAST, out=out, resume=True, device="cpu")
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["mla_form"] for r in rows) == ["absorbed", "naive"]
    assert all(r["status"] == "ok" for r in rows)
    assert list(df["mla_form"]) == ["absorbed"]  # this sweep's point, measured, not the naive row
    # and resuming the same form again measures nothing new
    run_sweep(SweepWorkload(spec, "32", "eager", "fp32", mla_form="absorbed"), FAST, out=out, resume=True, device="cpu")
    with open(out, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_point_key_reads_old_files_with_their_defaults():
    old = {"model": "m", "backend": "eager", "dtype": "FP32", "device": "cpu", "batch": "1.0", "n": "128"}
    assert point_key(old) == ("m", "eager", "fp32", "cpu", "1", "128", "prefill", "0", "n/a", "", "", "false",
                              "false", "unfused")
    new = dict(old, mla_form="absorbed", ranks=4.0, cuda_graph=True, phase="decode")
    k = point_key(new)
    assert k[6] == "decode" and k[9] == "absorbed" and k[10] == "4" and k[11] == "true"


def test_locked_sweep_raises_lcprof_error_in_process(spec_of, tmp_path):
    out = tmp_path / "r.csv"
    with ResultsLock(out):
        with pytest.raises(LcprofError, match="being written by another sweep"):
            run_sweep(SweepWorkload(spec_of("mha"), "32", "eager", "fp32"), FAST, out=out, device="cpu")


def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path):
    """--out under /proc (or through a file) fails in one line, with no progress line before it."""
    import subprocess
    import sys

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out, cmd in (("/proc/lcprof-test/x.csv", ["sweep", "--model", "phi3-mini-4k", "--n", "64", "--device", "cpu"]),
                     (str(blocker / "sub" / "x.csv"),
                      ["model-sweep", "--model", "phi3-mini-4k", "--n", "64", "--device", "cpu"])):
        res = subprocess.run([sys.executable, "-m", "lcprof", *cmd, "--out", out], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 2, (cmd, res.stderr)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("lcprof: error: cannot create folder"), (cmd, lines)

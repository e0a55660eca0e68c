"""The measuring commands: backends, sweep (killed with SIGKILL and resumed), layer --measure, and
user mistakes as one line with exit code 2."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from lcprof.cli import main
from lcprof.measure.sweep import KEY_COLUMNS, RESULT_COLUMNS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args):
    return CliRunner().invoke(main, list(args))


def error_lines(result):
    text = (result.stderr if hasattr(result, "stderr") else "") or result.output
    return [ln for ln in text.splitlines() if ln.strip()]


def test_backends_lists_every_backend_with_a_reason():
    r = run_cli("backends", "--device", "cpu", "--format", "json")
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    names = {x["backend"] for x in recs}
    assert {"eager", "sdpa", "sdpa-math", "sdpa-efficient", "sdpa-flash", "sdpa-cudnn", "flash-attn",
            "striped-ring"} <= names
    assert all(x["reason"] for x in recs)
    assert {x["dtype"] for x in recs} == {"fp32", "bf16"}
    by = {(x["backend"], x["dtype"]): x for x in recs}
    assert by[("eager", "fp32")]["available"] is True
    assert by[("sdpa-cudnn", "fp32")]["available"] is False


@pytest.mark.parametrize("args,needle", [
    (["sweep", "--model", "MODEL", "--n", "64", "--backends", "eager,warp-drive", "--out", "OUT"], "unknown backend 'warp-drive'"),
    (["sweep", "--model", "MODEL", "--n", "64", "--device", "tpu", "--out", "OUT"], "unknown device 'tpu'"),
    (["sweep", "--model", "MODEL", "--n", "64", "--dtype", "fp64", "--out", "OUT"], "unknown dtype"),
    (["sweep", "--model", "MODEL", "--n", "64", "--mem-cap", "lots", "--out", "OUT"], "malformed byte count"),
    (["sweep", "--model", "no-such-model", "--n", "64", "--out", "OUT"], "unknown model"),
    (["backends", "--device", "gpu0"], "unknown device"),
])
def test_user_mistakes_exit_2_with_one_line(tiny_config_path, tmp_path, args, needle):
    model, out = str(tiny_config_path("gqa")), str(tmp_path / "o.csv")
    args = [model if a == "MODEL" else out if a == "OUT" else a for a in args]
    r = run_cli(*args)
    assert r.exit_code == 2
    lines = error_lines(r)
    assert len(lines) == 1 and lines[0].startswith("lcprof: error:") and needle in lines[0], lines
    assert not os.path.exists(out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda_exits_2(tiny_config_path, tmp_path):
    r = run_cli("sweep", "--model", str(tiny_config_path("gqa")), "--n", "64", "--device", "cuda",
                "--out", str(tmp_path / "o.csv"))
    assert r.exit_code == 2
    lines = error_lines(r)
    assert len(lines) == 1 and "CUDA is not available" in lines[0]


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_sweep_killed_with_sigkill_loses_nothing_and_resume_completes(tiny_config_path, tmp_path):
    model = str(tiny_config_path("gqa"))
    out = tmp_path / "sweep.csv"
    ns = "64,128,256,512,1024,2048"
    cmd = [sys.executable, "-m", "lcprof", "sweep", "--model", model, "--n", ns, "--backends", "eager,sdpa",
           "--dtype", "fp32", "--device", "cpu", "--budget-s", "0.4", "--min-reps", "3", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if out.exists() and len(out.read_text().splitlines()) >= 3:  # header + 2 rows
                break
            if proc.poll() is not None:
                pytest.fail(f"sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    before = _rows(out)
    assert before[0] == list(RESULT_COLUMNS)
    done_before = before[1:]
    assert 2 <= len(done_before) < 12, "killed mid-way"
    for r in done_before:  # every completed row is whole
        assert len(r) == len(RESULT_COLUMNS)
        assert r[RESULT_COLUMNS.index("status")] == "ok"

    r = run_cli("sweep", "--model", model, "--n", ns, "--backends", "eager,sdpa", "--dtype", "fp32",
                "--device", "cpu", "--budget-s", "0.01", "--min-reps", "2", "--max-reps", "3",
                "--out", str(out), "--resume", "--format", "json")
    assert r.exit_code == 0, r.output
    after = _rows(out)
    assert after[0] == before[0]
    assert after[1:1 + len(done_before)] == done_before  # nothing completed was lost or rewritten
    key_idx = [RESULT_COLUMNS.index(c) for c in KEY_COLUMNS]
    keys = [tuple(row[i] for i in key_idx) for row in after[1:]]
    assert len(keys) == len(set(keys)) == 12  # complete, no duplicates
    assert len(json.loads(r.stdout)) == 12


def test_layer_measure_prints_measured_next_to_predicted(tiny_config_path):
    r = run_cli("layer", "--model", str(tiny_config_path("gqa")), "--n", "128", "--measure", "--backend", "sdpa",
                "--dtype", "fp32", "--device", "cpu", "--format", "json")
    assert r.exit_code == 0, r.output
    measured = [x for x in json.loads(r.stdout) if x.get("section") == "measured"]
    assert len(measured) == 1
    m = measured[0]
    assert m["status"] == "ok" and m["time_s"] > 0 and m["predicted_flops"] > 0
    assert m["achieved_flops_per_s"] == pytest.approx(m["predicted_flops"] / m["time_s"])
    assert m["predicted_time_s"] is None and "no CPU roofline" in m["prediction"]


def test_import_lcprof_cli_does_not_import_torch():
    code = "import sys, lcprof.cli; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

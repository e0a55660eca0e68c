"""bench/kernel_bench.py runs end to end on the CPU (its smoke mode), so that a GPU session does
not spend device time on a Python error; the ring arithmetic of its CSV is checked by hand."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_smoke_run_and_ring_arithmetic(tmp_path):
    out = tmp_path / "kb.csv"
    L, heads, D = 64, 2, 64
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "kernel_bench.py"), "--device", "cpu", "--out", str(out),
         "--lengths", str(L), "--head-dims", str(D), "--kv-heads", "1", "--heads", str(heads), "--groups", "1,2",
         "--ring-groups", "2", "--reps", "2", "--budget-s", "0.001"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Full striped ring" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    by = {}
    for r in rows:
        by.setdefault((r["section"], r["backend"], r["layout"], r["step"], r["G"]), r)
    # the kernel is not there on the CPU: recorded as skipped with a reason, never as a number
    sk = by[("kernel", "striped_kernel_sm90", "striped", "diag", "1")]
    assert sk["status"] == "skipped" and sk["reason"] and sk["time_s"] == ""
    cudnn = by[("kernel", "composed_cudnn", "striped", "diag", "1")]
    assert cudnn["status"] == "skipped" and "CUDA" in cudnn["reason"]
    # composed_flash: diagonal step (causal, L(L+1)/2 pairs) and strict step (L(L-1)/2 pairs)
    diag = by[("kernel", "composed_flash", "striped", "diag", "1")]
    strict = by[("kernel", "composed_flash", "striped", "offdiag", "2")]
    assert diag["status"] == strict["status"] == "ok"
    assert int(diag["allowed_pairs"]) == L * (L + 1) // 2 == 2080
    assert int(strict["allowed_pairs"]) == L * (L - 1) // 2 == 2016
    assert int(diag["useful_flops"]) == 4 * D * heads * 2080  # QK^T and PV, 2 FLOPs per multiply-add
    # ring G=2: step 0 both ranks diagonal, step 1 rank 0 strict and rank 1 diagonal
    ring = by[("ring_total", "composed_flash", "striped", "all", "2")]
    t_diag, t_strict = float(diag["time_s"]), float(strict["time_s"])
    assert float(ring["time_s"]) == pytest.approx(t_diag + max(t_diag, t_strict), rel=1e-12)
    n = 2 * L
    assert int(ring["allowed_pairs"]) == n * (n + 1) // 2 // 2  # per-GPU share of 128 * 129 / 2
    for r in rows:
        assert r["status"] in ("ok", "skipped", "error")
        assert r["status"] != "ok" or float(r["time_s"]) > 0

"""User mistakes exit 2 with one line on stderr; the explain modules never import torch."""

import subprocess
import sys

import pytest

BASIC = "model,backend,dtype,device,batch,n,time_s,status\n"


@pytest.mark.parametrize("cmd", [["fit"], ["compare", "--gpu", "h100"], ["report", "--out", "REP"]])
def test_missing_file(cli, tmp_path, cmd):
    args = [c if c != "REP" else tmp_path / "rep" for c in cmd]
    r = cli(*args[:1], tmp_path / "nope.csv", *args[1:])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "no such file" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize("cmd", [["fit"], ["compare", "--gpu", "h100"]])
def test_missing_columns(cli, tmp_path, cmd):
    p = tmp_path / "r.csv"
    p.write_text("model,n,time_s\nphi3-mini-128k,128,0.1\n")
    r = cli(cmd[0], p, *cmd[1:])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "missing column(s) backend, dtype, device, batch, status" in r.stderr


@pytest.mark.parametrize("cmd", [["fit"], ["compare", "--gpu", "h100"], ["report", "--out", "REP"]])
def test_no_ok_rows(cli, tmp_path, cmd):
    p = tmp_path / "r.csv"
    p.write_text(BASIC + "phi3-mini-128k,eager,fp32,cpu,1,131072,,oom\nphi3-mini-128k,eager,fp32,cpu,1,65536,,skipped\n")
    args = [c if c != "REP" else tmp_path / "rep" for c in cmd]
    r = cli(args[0], p, *args[1:])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "no rows with status ok" in r.stderr and "oom: 1" in r.stderr


def test_other_mistakes(cli, tmp_path, data_dir):
    f = data_dir / "phi3-cpu-small.csv"
    for args, needle in [
        (["compare", f], "--calibration"),
        (["compare", f, "--gpu", "h1000"], "unknown GPU"),
        (["compare", f, "--calibration", tmp_path / "none.json"], "no such file"),
        (["fit", f, "--min-n", "eight"], "malformed token count"),
        (["fit", f, "--min-n", "4k", "--max-n", "1k"], "below --min-n"),
    ]:
        r = cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.count("\n") == 1 and needle in r.stderr, (args, r.stderr)
    bad = tmp_path / "bad.csv"
    bad.write_text(BASIC + "phi3-mini-128k,eager,fp32,cpu,1,lots,0.1,ok\n")
    r = cli("fit", bad)
    assert r.exit_code == 2 and "'n' holds a non-number" in r.stderr


def test_explain_modules_do_not_import_torch():
    code = ("import sys, lcprof.cli, lcprof.cli.explain, lcprof.explain.fit, lcprof.explain.compare, lcprof.explain.report, "
            "lcprof.results, lcprof.rates; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

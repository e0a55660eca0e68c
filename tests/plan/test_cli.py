"""``lcprof plan`` through click: outputs, JSON keys, reports, and one-line errors with exit code 2."""

import json

import pytest
from click.testing import CliRunner

from lcprof.cli import main

BASE = ["plan", "--model", "llama3-70b", "--gpu", "h100-sxm", "--gpus", "8", "--tp", "8", "--long", "128k", "--short", "4k"]


def run(args):
    return CliRunner().invoke(main, args)


def test_table_output():
    res = run(BASE)
    assert res.exit_code == 0, res.output
    assert "displacement_kv" in res.output and "max_concurrent_short" in res.output
    assert "GiB" in res.output


def test_json_keys_name_what_they_hold():
    res = run(BASE + ["--kv-dtype", "bf16,fp8", "--format", "json", "--ttft", "2s", "--chunk", "8k"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)
    assert [r["kv_dtype"] for r in recs] == ["bf16", "fp8"]
    for key in ("model", "long_n", "short_n", "dtype", "displacement_kv", "displacement_prefill",
                "kv_bytes_per_token_per_gpu", "weights_bytes_per_gpu", "kv_budget_bytes_per_gpu",
                "max_concurrent_short", "ttft_short_behind_long_s", "ttft_short_behind_long_chunked_s",
                "kv_quota_bytes_per_long_request_per_gpu", "long_kv_pool_share_max"):
        assert key in recs[0], key
    assert recs[1]["max_concurrent_short"] >= 2 * recs[0]["max_concurrent_short"]


def test_csv_and_mix():
    res = run(["plan", "--model", "deepseek-v2-lite", "--gpus", "1", "--long", "32k",
               "--mix", "2k:0.8,8k:0.15,32k:0.05", "--ttft", "2s", "--format", "csv"])
    assert res.exit_code == 0, res.output
    header = res.stdout.splitlines()[0].split(",")
    assert "max_concurrent_mix" in header and "mix_expected_kv_blocks_per_request" in header


def test_what_if_grid_json():
    res = run(["plan", "--model", "llama3-8b", "--what-if", "--long", "8k..1M", "--kv-dtype", "bf16,fp8",
               "--tp", "1,2,4,8", "--format", "json"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)
    assert len(recs) == 8 * 2 * 4
    assert {r["status"] for r in recs} <= {"ok", "no_kv_room", "long_does_not_fit"}
    res = run(["plan", "--model", "llama3-8b", "--what-if", "--long", "8k", "--tp", "1,3"])
    assert res.exit_code == 0 and "invalid" in res.output and "does not divide" in res.output


def test_report(tmp_path):
    out = tmp_path / "rep"
    res = run(BASE + ["--kv-dtype", "bf16,fp8", "--chunk", "8k", "--report", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "README.md").read_text()
    assert "lcprof plan --model llama3-70b" in md and "--kv-dtype bf16,fp8" in md
    for png in ("concurrency_vs_context.png", "displacement_vs_long.png", "ttft_vs_chunk.png"):
        assert (out / png).stat().st_size > 1000
        assert png in md
    assert json.loads((out / "plan.json").read_text())[1]["kv_dtype"] == "fp8"


@pytest.mark.parametrize("args,match", [
    (["--model", "llama3-70b", "--tp", "3", "--gpus", "3", "--long", "128k", "--short", "4k"], "TP=3 does not divide"),
    (["--model", "llama3-70b", "--gpus", "1", "--long", "128k", "--short", "4k"], r"does not fit the GPUs.*missing [\d.]+ GiB"),
    (["--model", "llama3-8b", "--long", "2k", "--short", "4k"], "shorter than --short"),
    (["--model", "llama3-8b", "--long", "128k", "--short", "4k", "--mem-util", "0.2"], r"nothing left for KV.*short by [\d.]+ GiB"),
    (["--model", "llama3-8b", "--mix", "2k:0.8,8k:0.15"], "must sum to 1"),
    (["--model", "llama3-8b", "--long", "8k", "--short", "4k", "--ttft", "fast"], "malformed TTFT"),
    (["--model", "llama3-8b", "--long", "8k", "--short", "4k", "--tp", "1,2"], "need --what-if"),
    (["--model", "llama3-8b", "--long", "8k", "--short", "4k", "--kv-dtype", "fp4"], "unknown dtype"),
])
def test_bad_input_one_line_exit_2(args, match):
    import re

    res = run(["plan"] + args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("lcprof: error")]
    assert len(lines) == 1 and re.search(match, lines[0]), res.stderr
    assert "Traceback" not in res.output

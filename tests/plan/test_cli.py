"""``lcprof plan`` through click: outputs, JSON sections, reports, and one-line errors with exit code 2."""

import json
import re

import pytest
from click.testing import CliRunner

from lcprof.cli import main

BASE = ["plan", "--model", "llama3.1-70b", "--gpu", "h100-sxm", "--gpus", "8", "--tp", "8", "--long", "128k",
        "--short", "4k"]


def run(args):
    return CliRunner().invoke(main, args)


def test_table_starts_with_what_the_engine_logs():
    res = run(BASE)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "vllm startup (bf16 KV):"
    assert re.fullmatch(r"  Available KV cache memory: \d+\.\d\d GiB", lines[2])
    assert re.fullmatch(r"  GPU KV cache size: [\d,]+ tokens", lines[3])
    assert lines[4] == "  Maximum concurrency for 131,072 tokens per request: " + lines[4].split(": ")[1]
    assert "displacement_kv" in res.output and "max_concurrent_short" in res.output and "GiB" in res.output


def test_json_carries_every_section():
    res = run(BASE + ["--kv-dtype", "bf16,fp8", "--format", "json", "--ttft", "2s", "--chunk", "8k",
                      "--mix", "4k:0.9,128k:0.1"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)
    assert [r["kv_dtype"] for r in recs] == ["bf16", "fp8"]
    from lcprof.plan.capacity import SECTIONS

    for title, keys in SECTIONS:
        present = [k for k in keys if k in recs[0]]
        assert present, title
    for key in ("startup_log", "kv_groups_table", "mix_table", "decode_table", "warnings", "model", "dtype",
                "long_n", "kv_cache_tokens", "max_concurrency_at_max_model_len", "weights_experts_bytes_per_gpu"):
        assert key in recs[0], key
    assert recs[0]["startup_log"][2].startswith("GPU KV cache size:")
    assert recs[1]["kv_pool_blocks"] >= 2 * recs[0]["kv_pool_blocks"]
    assert recs[0]["mix_table"][1]["n"] == 131072


def test_csv_mix_and_engines():
    res = run(["plan", "--model", "deepseek-v2-lite", "--gpus", "1", "--long", "32k",
               "--mix", "2k:0.8,8k:0.15,32k:0.05", "--ttft", "2s", "--format", "csv"])
    assert res.exit_code == 0, res.output
    header = res.stdout.splitlines()[0].split(",")
    assert "max_concurrent_mix" in header and "mix_expected_kv_blocks_per_request" in header
    for engine, line in (("sglang", "KV Cache is allocated. #tokens: "), ("none", None)):
        res = run(["plan", "--model", "llama3.1-8b", "--long", "32k", "--short", "4k", "--engine", engine])
        assert res.exit_code == 0, res.output
        if line:
            assert line in res.output
        else:
            assert "startup" not in res.output.splitlines()[0]


def test_logged_kv_memory_and_quantized_weights():
    res = run(["plan", "--model", "llama3.1-8b", "--long", "32k", "--short", "4k", "--kv-memory", "20GiB",
               "--format", "json"])
    rec = json.loads(res.stdout)[0]
    assert rec["kv_budget_bytes_per_gpu"] == 20 << 30 and rec["kv_pool_blocks"] == 10240
    res = run(["plan", "--model", "deepseek-v3", "--gpu", "h200", "--gpus", "8", "--tp", "8", "--weights", "fp8",
               "--long", "32k", "--short", "4k", "--format", "json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)[0]
    assert (rec["weights"], rec["gemm_dtype"], rec["attn_dtype"], rec["block_size"]) == ("fp8", "fp8", "bf16", 64)


def test_what_if_grid_json_spans_layouts():
    res = run(["plan", "--model", "llama3.1-8b", "--what-if", "--long", "8k..1M", "--kv-dtype", "bf16,fp8",
               "--tp", "1,2,4,8", "--format", "json"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)
    assert len(recs) == 8 * 2 * 4
    assert {r["status"] for r in recs} <= {"ok", "too_long", "long_does_not_fit", "engine_refuses"}
    res = run(["plan", "--model", "deepseek-v2-lite", "--what-if", "--long", "8k", "--tp", "1,2", "--dp", "1,2",
               "--ep", "1,2,4", "--pp", "1,3"])
    assert res.exit_code == 0, res.output
    assert "TP1 DP2 EP2" in res.output and "PP3" in res.output and "invalid" in res.output
    res = run(["plan", "--model", "llama3.1-8b", "--what-if", "--long", "8k", "--tp", "1,3"])
    assert res.exit_code == 0 and "invalid" in res.output and "does not divide" in res.output


def test_report(tmp_path):
    out = tmp_path / "rep"
    res = run(BASE + ["--kv-dtype", "bf16,fp8", "--chunk", "8k", "--report", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "README.md").read_text()
    assert "lcprof plan --model llama3.1-70b" in md and "--kv-dtype bf16,fp8" in md
    assert "What vllm would log at startup" in md and "GPU KV cache size" in md
    for png in ("concurrency_vs_context.png", "displacement_vs_long.png", "ttft_vs_chunk.png"):
        assert (out / png).stat().st_size > 1000
        assert png in md
    assert json.loads((out / "plan.json").read_text())[1]["kv_dtype"] == "fp8"


@pytest.mark.parametrize("args,match", [
    (["--model", "llama3.1-70b", "--tp", "3", "--gpus", "3", "--long", "128k", "--short", "4k"], "TP=3 does not divide"),
    (["--model", "llama3.1-70b", "--gpus", "1", "--long", "128k", "--short", "4k"],
     r"does not fit the GPUs.*missing [\d.]+ GiB"),
    (["--model", "llama3.1-8b", "--long", "2k", "--short", "4k"], "shorter than --short"),
    (["--model", "llama3.1-8b", "--long", "128k", "--short", "4k", "--mem-util", "0.2"],
     r"nothing left for KV.*short by [\d.]+ GiB"),
    (["--model", "llama3.1-8b", "--mix", "2k:0.8,8k:0.15"], "must sum to 1"),
    (["--model", "llama3.1-8b", "--long", "8k", "--short", "4k", "--ttft", "fast"], "malformed TTFT"),
    (["--model", "llama3.1-8b", "--long", "8k", "--short", "4k", "--tp", "1,2"], "need --what-if"),
    (["--model", "llama3.1-8b", "--long", "8k", "--short", "4k", "--kv-dtype", "fp4"], "unknown dtype"),
    (["--model", "llama3.1-8b", "--long", "8k", "--short", "4k", "--weights", "fp6"], "unknown weight format"),
    (["--model", "llama3.1-8b", "--long", "8k", "--short", "4k", "--kv-memory", "lots"], "malformed --kv-memory"),
    (["--model", "llama3.1-8b", "--long", "8k", "--short", "4k", "--no-chunk", "--chunk", "8k"], "contradict"),
    (["--model", "llama3.1-8b", "--long", "1M", "--short", "4k"], "exceeds vllm's max_model_len"),
    (["--model", "llama3.1-8b", "--long", "8k", "--short", "4k", "--engine", "sglang", "--kv-dtype", "int4"],
     "sglang has no int4"),
])
def test_bad_input_one_line_exit_2(args, match):
    res = run(["plan"] + args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("lcprof: error")]
    assert len(lines) == 1 and re.search(match, lines[0]), res.stderr
    assert "Traceback" not in res.output

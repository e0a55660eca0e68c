"""The analytic CLI: formats, real numbers in its output, user errors, warnings, and no torch.

In-process runs use click's CliRunner on ``lcprof.cli.main`` (stderr kept separate); where the
real exit code and stream contents matter, a subprocess runs ``python -m lcprof``.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from lcprof.cli import main
from lcprof.spec import MODELS_DIR

GIB = 1 << 30


def run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    # A crash inside a command shows up as a non-SystemExit exception: never acceptable.
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"lcprof {' '.join(args)} raised {result.exception!r}") from result.exception
    return result


def run_json(args):
    r = run([*args, "--format", "json"])
    assert r.exit_code == 0, r.stderr
    recs = json.loads(r.stdout)
    assert isinstance(recs, list) and recs
    for rec in recs:
        assert isinstance(rec, dict)
        for k, v in rec.items():
            assert not isinstance(v, (dict, list)), f"{args}: {k} is nested: {v!r}"
    return recs


def assert_usage_error(result, *must_contain):
    """Exit code 2, exactly one line on stderr naming the problem, no traceback anywhere."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for text in must_contain:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def write_config(folder: Path, preset: str = "llama3.1-8b", drop=(), **changes) -> Path:
    """A user's config.json: a preset's HF fields (our _lcprof block removed), optionally edited."""
    cfg = json.loads((MODELS_DIR / f"{preset}.json").read_text())
    cfg.pop("_lcprof")
    for key in drop:
        cfg.pop(key)
    cfg.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(cfg))
    return path


# ------------------------------------------------------------------------------------------------
# Every analytic command, every format
# ------------------------------------------------------------------------------------------------

COMMANDS = {
    "models": (["models"], ["model"]),
    "show": (["show", "llama3-8b"], ["model"]),
    "kv": (["kv", "--model", "llama3-70b", "--n", "8k,32k,128k,1M", "--dtype", "bf16"],
           ["model", "n", "dtype"]),
    "flops": (["flops", "--model", "mistral-7b", "--n", "4k..16k"], ["model", "n", "dtype"]),
    "rope": (["rope", "--model", "phi3-128k", "--n", "128k"], ["model", "n"]),
    "rope-pairs": (["rope", "--model", "phi3-128k", "--n", "128k", "--pairs"], ["model", "n"]),
    "diff": (["diff", "phi3-4k", "phi3-128k"], []),
    "layer": (["layer", "--model", "phi3-128k", "--n", "131072"], ["model", "n"]),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_formats(name):
    args, keys = COMMANDS[name]
    table = run(args)
    assert table.exit_code == 0, table.stderr
    assert table.stdout.strip()
    recs = run_json(args)
    for rec in recs:
        for k in keys:
            assert k in rec, (name, k, rec)
    c = run([*args, "--format", "csv"])
    assert c.exit_code == 0, c.stderr
    rows = list(csv.DictReader(io.StringIO(c.stdout)))
    assert len(rows) == len(recs)
    for k in keys:
        assert k in rows[0]
    if name == "kv":
        # 32k, 128k and 1M exceed llama3-70b's 8192 positions: computed, with one warning line
        assert "warning" in table.stderr and len(table.stderr.strip().splitlines()) == 1
    else:
        assert table.stderr == "" and c.stderr == ""


def test_models_output_numbers():
    recs = {r["model"]: r for r in run_json(["models"])}
    assert recs["llama3-8b"]["kv_bytes_per_token_bf16"] == 131072
    assert recs["llama3-8b"]["total_params"] == 8_030_261_248
    assert recs["deepseek-v2-lite"]["kv_bytes_per_token_bf16"] == 27 * 576 * 2


def test_show_output_numbers():
    (rec,) = run_json(["show", "phi3-4k"])  # alias
    assert rec["model"] == "phi3-mini-4k"
    assert rec["total_params"] == 3_821_079_552
    assert (rec["n_layers"], rec["n_heads"], rec["n_kv_heads"], rec["head_dim"]) == (32, 32, 32, 96)


def test_kv_output_numbers():
    recs = run_json(["kv", "--model", "llama3-70b", "--n", "8k,32k,128k,1M", "--dtype", "bf16"])
    # llama3-70b: 80 x 8 x 128 x 2 x 2 = 327680 bytes per token
    assert [r["n"] for r in recs] == [8192, 32768, 131072, 1048576]
    assert [r["kv_bytes"] for r in recs] == [n * 327680 for n in (8192, 32768, 131072, 1048576)]
    assert recs[2]["kv_gib"] == 40.0  # 131072 * 327680 = 40 GiB
    assert {r["dtype"] for r in recs} == {"bf16"}
    fp8 = run_json(["kv", "--model", "llama3-70b", "--n", "128k", "--dtype", "fp8", "--tp", "8"])
    # fp8, TP 8: 80 x 1 x 128 x 2 x 1 = 20480 bytes per token per GPU -> 2.5 GiB
    assert fp8[0]["kv_bytes"] == 131072 * 20480 and fp8[0]["kv_gib"] == 2.5


def test_flops_output_numbers():
    recs = run_json(["flops", "--model", "mistral-7b", "--n", "4k..16k"])
    assert [r["n"] for r in recs] == [4096, 8192, 16384]
    # attention (QK^T + PV) = 32 layers x 2 ops x 2 FLOPs x 32 heads x 128 x pairs
    # pairs, W = 4096: n <= W -> n(n+1)/2; beyond: 4096*4097/2 + (n - 4096) * 4096
    for r in recs:
        n = r["n"]
        pairs = n * (n + 1) // 2 if n <= 4096 else 4096 * 4097 // 2 + (n - 4096) * 4096
        assert r["attn_total_flops"] == 32 * 2 * 2 * 32 * 128 * pairs
        assert r["executed_eager_flops"] >= r["executed_tiled_flops"] >= r["total_flops"]
        assert r["phase"] == "prefill" and r["dtype"] == "bf16"
    # decode: one token after n cached: pairs = min(n + 1, 4096)
    dec = run_json(["flops", "--model", "mistral-7b", "--n", "1000,8k", "--phase", "decode"])
    assert [r["attn_total_flops"] for r in dec] == [32 * 4 * 32 * 128 * 1001, 32 * 4 * 32 * 128 * 4096]


def test_rope_output_numbers():
    (rec,) = run_json(["rope", "--model", "phi3-128k", "--n", "128k"])
    assert rec["n"] == 131072 and rec["rope_type"] == "longrope"
    assert rec["attention_factor"] == pytest.approx((17 / 12) ** 0.5, rel=1e-12)  # sqrt(1+ln32/ln4096)
    assert rec["pairs"] == 48


def test_layer_output_numbers():
    recs = run_json(["layer", "--model", "phi3-128k", "--n", "131072"])
    (summary,) = [r for r in recs if r["section"] == "summary"]
    assert summary["causal_pairs"] == 131072 * 131073 / 2
    assert summary["full_square_pairs"] == 131072 ** 2
    # n*: 2*3072*(3072 + 6144 + 3072 + 3*8192) / (4*32*96/2) - 1 = 226492416 / 6144 - 1 = 36863
    assert summary["n_star_layer"] == 36863
    # whole model KV at 128k, one per --dtype (default fp32,bf16):
    #   32 layers x 32 KV heads x 96 x 2 (K, V) x 2 bytes x 131072 = 48 GiB in bf16, 96 GiB in fp32
    assert summary["kv_bytes_model_bf16"] == 32 * 32 * 96 * 2 * 2 * 131072 == 48 * GIB
    assert summary["kv_bytes_model_fp32"] == 32 * 32 * 96 * 2 * 4 * 131072 == 96 * GIB
    assert summary["kv_dtype"] == "fp32,bf16" and summary["kv_dtype_source"] == "--dtype"
    flops = {r["op"]: r for r in recs if r["section"] == "flops"}
    # one layer's attention: 2 ops x 2 x 32 heads x 96 x pairs (useful); eager the full square
    assert flops["attn/total"]["useful_flops"] == 2 * 2 * 32 * 96 * (131072 * 131073 // 2)
    assert flops["attn/total"]["executed_eager_flops"] == 2 * 2 * 32 * 96 * 131072 ** 2
    # tiled 128 x 128 on a causal square of 1024 x 1024 tiles: 1024*1025/2 tiles of 128*128 pairs
    assert flops["attn/total"]["executed_tiled_flops"] == 2 * 2 * 32 * 96 * (1024 * 1025 // 2) * 128 * 128


def test_layer_table_mentions_the_essentials():
    r = run(["layer", "--model", "phi3-128k", "--n", "131072"])
    assert r.exit_code == 0
    for text in ("phi3-mini-128k", "36863", "attn/qk", "h100-sxm", "kv_cache/model"):
        assert text in r.stdout, text


# ------------------------------------------------------------------------------------------------
# User mistakes: exit 2, one line, no traceback
# ------------------------------------------------------------------------------------------------

def test_unknown_model_suggests_close_names():
    line = assert_usage_error(run(["kv", "--model", "llama3-8bb", "--n", "4k"]), "llama3-8bb")
    assert "llama3-8b" in line.replace("'llama3-8bb'", "")
    assert_usage_error(run(["show", "mistral-7c"]), "mistral-7b")
    assert_usage_error(run(["diff", "phi3-4k", "phi3-129k"]), "phi3-128k")
    assert_usage_error(run(["layer", "--model", "gemma2-9c", "--n", "4k"]), "gemma2-9b")


@pytest.mark.parametrize("bad", ["12x", "0", "-5", "1.3", "4k..1k", "4k,,8k", "k"])
def test_bad_token_counts(bad):
    assert_usage_error(run(["kv", "--model", "llama3-8b", "--n", bad]), bad)
    assert_usage_error(run(["flops", "--model", "llama3-8b", "--n", bad]), bad)


def test_layer_wants_one_n():
    assert_usage_error(run(["layer", "--model", "llama3-8b", "--n", "4k,8k"]))


def test_unreadable_config_paths(tmp_path):
    missing = tmp_path / "nowhere" / "config.json"
    assert_usage_error(run(["kv", "--model", str(missing), "--n", "4k"]), str(missing))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert_usage_error(run(["kv", "--model", str(empty_dir), "--n", "4k"]), "config.json")


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                                   "intermediate_size", "max_position_embeddings"])
def test_config_missing_field_names_it(tmp_path, field):
    path = write_config(tmp_path / f"no-{field}", drop=[field])
    assert_usage_error(run(["kv", "--model", str(path), "--n", "4k"]), field)


def test_invalid_configs(tmp_path):
    bad_json = tmp_path / "bad" / "config.json"
    bad_json.parent.mkdir()
    bad_json.write_text('{"hidden_size": 4096,')
    assert_usage_error(run(["kv", "--model", str(bad_json), "--n", "4k"]), "JSON")
    array = tmp_path / "array.json"
    array.write_text("[1, 2]")
    assert_usage_error(run(["show", str(array)]))
    # 32 query heads are not a multiple of 5 KV heads
    odd = write_config(tmp_path / "odd", num_key_value_heads=5)
    assert_usage_error(run(["kv", "--model", str(odd), "--n", "4k"]), "KV heads")
    # a count that is not an integer
    frac = write_config(tmp_path / "frac", hidden_size=4096.5)
    assert_usage_error(run(["kv", "--model", str(frac), "--n", "4k"]), "hidden_size")


def test_unknown_gpu_and_dtype():
    assert_usage_error(run(["layer", "--model", "llama3-8b", "--n", "4k", "--gpu", "h1000"]), "h1000", "h100")
    assert_usage_error(run(["kv", "--model", "llama3-8b", "--n", "4k", "--dtype", "fp7"]), "fp7", "bf16")
    assert_usage_error(run(["layer", "--model", "llama3-8b", "--n", "4k", "--dtype", "fp7"]), "fp7")
    assert_usage_error(run(["layer", "--model", "llama3-8b", "--n", "4k", "--kv-dtype", "fp7"]), "fp7")
    assert_usage_error(run(["kv", "--model", "llama3-8b", "--n", "4k", "--format", "xml"]), "xml")


def test_bad_tp_and_layer():
    assert_usage_error(run(["kv", "--model", "llama3-70b", "--n", "4k", "--tp", "3"]), "3")
    assert_usage_error(run(["flops", "--model", "llama3-8b", "--n", "4k", "--layer", "32"]), "32")
    assert_usage_error(run(["layer", "--model", "llama3-8b", "--n", "4k", "--layer", "32"]), "32")


# ------------------------------------------------------------------------------------------------
# Beyond max positions: computed, with a warning
# ------------------------------------------------------------------------------------------------

def test_beyond_max_positions_warns():
    r = run(["kv", "--model", "llama3-8b", "--n", "64k", "--format", "json"])
    assert r.exit_code == 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "65536" in lines[0] and "8192" in lines[0]
    assert json.loads(r.stdout)[0]["kv_bytes"] == 65536 * 131072
    for args in (["flops", "--model", "phi3-4k", "--n", "8k"], ["rope", "--model", "llama2-7b", "--n", "16k"],
                 ["layer", "--model", "llama2-7b", "--n", "16k"]):
        r = run(args)
        assert r.exit_code == 0, (args, r.stderr)
        assert "warning" in r.stderr, args


# ------------------------------------------------------------------------------------------------
# A user's own config.json (file or folder)
# ------------------------------------------------------------------------------------------------

def test_user_config_file_and_folder(tmp_path):
    path = write_config(tmp_path / "my-model")  # llama3.1-8b shapes, 131072 positions
    for model in (str(path), str(path.parent)):
        r = run(["kv", "--model", model, "--n", "32k", "--format", "json"])
        assert r.exit_code == 0, r.stderr
        assert r.stderr == ""
        (rec,) = json.loads(r.stdout)
        assert rec["n"] == 32768
        assert rec["kv_bytes"] == 32768 * 131072 == 4 * GIB
        assert rec["model"] == "my-model"
    # table form, as the README example types it
    r = run(["kv", "--model", str(path), "--n", "32k"])
    assert r.exit_code == 0 and "4294967296" in r.stdout


def test_diff_keeps_both_models_values(tmp_path):
    # Two user folders that happen to share a name ("model") but differ in KV heads: the diff
    # must still show both values (8 and 4), not one of them.
    a = write_config(tmp_path / "a" / "model", preset="llama3-8b")
    b = write_config(tmp_path / "b" / "model", preset="llama3-8b", num_key_value_heads=4)
    recs = run_json(["diff", str(a.parent), str(b.parent)])
    (row,) = [r for r in recs if r["field"] == "n_kv_heads"]
    values = sorted(str(v) for k, v in row.items() if k not in ("section", "field", "effect"))
    assert values == ["4", "8"], row
    (raw,) = [r for r in recs if r["field"] == "num_key_value_heads"]  # the raw config field, named as in the file
    assert raw["section"] == "config"


def test_diff_names_what_changes():
    recs = run_json(["diff", "phi3-4k", "phi3-128k"])
    fields = {r["field"] for r in recs}
    assert {"max_position_embeddings", "rope.type"} <= fields
    (row,) = [r for r in recs if r["field"] == "max_position_embeddings" and r["section"] == "spec"]
    assert row["phi3-mini-4k"] == "4096" and row["phi3-mini-128k"] == "131072"


def test_diff_lists_raw_config_fields_first():
    recs = run_json(["diff", "phi3-4k", "phi3-128k"])
    sections = [r["section"] for r in recs]
    # config rows, then the derived spec rows, then the cost rows: each section in one block, in that order
    assert sections == sorted(sections, key=["config", "spec", "cost"].index)
    raw = {r["field"]: r for r in recs if r["section"] == "config"}
    # the three fields of the two config.json files that change what the model does
    assert {"max_position_embeddings", "rope_scaling", "sliding_window"} <= set(raw)
    assert raw["sliding_window"]["phi3-mini-4k"] == "2047" and raw["sliding_window"]["phi3-mini-128k"] == "262144"
    assert raw["rope_scaling"]["phi3-mini-4k"] == "null"
    assert "<48 values>" in raw["rope_scaling"]["phi3-mini-128k"]  # long_factor/short_factor summarised
    assert "sliding" in raw["sliding_window"]["effect"]
    table = run(["diff", "phi3-4k", "phi3-128k"])
    assert table.exit_code == 0
    assert table.stdout.index("sliding_window") < table.stdout.index("kv_bytes_per_token_bf16")


# ------------------------------------------------------------------------------------------------
# Real processes
# ------------------------------------------------------------------------------------------------

def lcprof_process(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "lcprof", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_process_usage_error_exit_code():
    p = lcprof_process("kv", "--model", "llama3-8bb", "--n", "4k")
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "llama3-8b" in p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_process_warning_exit_zero():
    p = lcprof_process("kv", "--model", "llama3-8b", "--n", "64k", "--format", "json")
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0]
    assert json.loads(p.stdout)[0]["kv_bytes"] == 65536 * 131072


NO_TORCH_SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys

    attempts = []

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                attempts.append(name)
            return None

    sys.meta_path.insert(0, NoTorch())
    import lcprof.cli

    COMMANDS = [
        ["models"], ["show", "phi3-128k"], ["kv", "--model", "llama3-70b", "--n", "8k,128k"],
        ["flops", "--model", "mistral-7b", "--n", "4k..16k"], ["rope", "--model", "phi3-128k", "--n", "128k"],
        ["diff", "phi3-4k", "phi3-128k"], ["layer", "--model", "phi3-128k", "--n", "131072"],
        ["layer", "--model", "deepseek-v2-lite", "--n", "32k", "--format", "json"],
    ]
    codes = []
    for args in COMMANDS:
        out = io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out):
            try:
                lcprof.cli.main(args, standalone_mode=False)
            except SystemExit as exc:
                code = exc.code
        codes.append([args[0], code, len(out.getvalue())])
    print(json.dumps({"codes": codes, "attempts": attempts, "torch_loaded": "torch" in sys.modules}))
""")


def test_analytic_commands_never_import_torch():
    p = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    for name, code, size in res["codes"]:
        assert code in (0, None), (name, code, p.stderr)
        assert size > 0, name
    assert res["attempts"] == [], res["attempts"]
    assert res["torch_loaded"] is False


def test_layer_elementwise_choice():
    unfused = run_json(["layer", "--model", "phi3-128k", "--n", "128k", "--dtype", "bf16", "--format", "json"])
    fused = run_json(["layer", "--model", "phi3-128k", "--n", "128k", "--dtype", "bf16", "--format", "json",
                      "--elementwise", "fused"])
    pick = lambda recs: [r for r in recs if r.get("section") == "timing" and r.get("family") == "tiled"][0]
    assert pick(fused)["time_s"] < pick(unfused)["time_s"]
    assert pick(fused)["executed_flops"] == pick(unfused)["executed_flops"]

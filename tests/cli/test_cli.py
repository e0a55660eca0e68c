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
from lcprof.errors import LcprofError
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


def test_diff_names_the_elementwise_fields(tmp_path):
    # the q/k norm, Llama 4's query temperature and the MLP activation change elementwise bytes: a
    # config that flips them shows the raw field with its effect, then the derived spec row
    text = {**json.loads((MODELS_DIR / "llama4-scout.json").read_text())["text_config"], "model_type": "llama4_text"}
    a, b = tmp_path / "a" / "config.json", tmp_path / "b" / "config.json"
    for path, cfg in ((a, text), (b, {**text, "use_qk_norm": False, "attn_temperature_tuning": False,
                                      "hidden_act": "gelu"})):
        path.parent.mkdir()
        path.write_text(json.dumps(cfg))
    recs = run_json(["diff", str(a), str(b)])
    spec = {r["field"]: r for r in recs if r["section"] == "spec"}
    raw = {r["field"]: r for r in recs if r["section"] == "config"}
    assert {"qk_norm", "attn_temperature_tuning", "mlp_activation"} <= set(spec)
    assert sorted(v for k, v in spec["qk_norm"].items() if k not in ("section", "field", "effect")) == ["l2", "none"]
    assert "elementwise" in raw["attn_temperature_tuning"]["effect"] and "activation" in raw["hidden_act"]["effect"]


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


NO_HEAVY_SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys

    HEAVY = ("torch", "pandas", "matplotlib", "scipy", "tabulate")
    attempts = []

    class NoHeavy:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                attempts.append(name)
            return None

    sys.meta_path.insert(0, NoHeavy())
    import lcprof.cli

    COMMANDS = [
        ["models"], ["gpus"], ["show", "phi3-128k"], ["kv", "--model", "llama3-70b", "--n", "8k,128k"],
        ["flops", "--model", "mistral-7b", "--n", "4k..16k"], ["rope", "--model", "phi3-128k", "--n", "128k"],
        ["rope", "--model", "phi3-128k", "--pairs", "--format", "csv"],
        ["diff", "phi3-4k", "phi3-128k"], ["layer", "--model", "phi3-128k", "--n", "131072"],
        ["layer", "--model", "deepseek-v2-lite", "--n", "32k", "--format", "json"],
        ["ring", "--model", "llama3-8b", "--n", "1M", "--steps"], ["ring", "--model", "llama3-8b", "--n", "1M",
        "--format", "csv"], ["kv", "--model", "nope-model", "--n", "4k"],
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
        codes.append([args, code, len(out.getvalue())])
    print(json.dumps({"codes": codes, "attempts": attempts,
                      "loaded": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)}))
""")


def test_analytic_commands_never_import_torch_or_pandas():
    """The analytic path imports none of torch, pandas, matplotlib, scipy or tabulate (speed: importing
    pandas alone takes longer than the whole answer should; bench/cli_speed.py measures the times)."""
    p = subprocess.run([sys.executable, "-c", NO_HEAVY_SCRIPT], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    for args, code, size in res["codes"]:
        if args[-1] == "4k":  # the unknown model: one error line, still nothing heavy
            assert code == 2, args
            continue
        assert code in (0, None), (args, code, p.stderr)
        assert size > 0, args
    assert res["attempts"] == [], res["attempts"]
    assert res["loaded"] == []


def test_layer_elementwise_choice():
    unfused = run_json(["layer", "--model", "phi3-128k", "--n", "128k", "--dtype", "bf16", "--format", "json"])
    fused = run_json(["layer", "--model", "phi3-128k", "--n", "128k", "--dtype", "bf16", "--format", "json",
                      "--elementwise", "fused"])
    pick = lambda recs: [r for r in recs if r.get("section") == "timing" and r.get("family") == "tiled"][0]
    assert pick(fused)["time_s"] < pick(unfused)["time_s"]
    assert pick(fused)["executed_flops"] == pick(unfused)["executed_flops"]


# ------------------------------------------------------------------------------------------------
# Output contracts (issue 19): every table in JSON/CSV, KV dtype, missing options, help, gpus
# ------------------------------------------------------------------------------------------------

def test_layer_kv_dtype_follows_dtype_unless_kv_dtype_says():
    recs = run_json(["layer", "--model", "phi3-128k", "--n", "131072", "--dtype", "fp32"])
    kv = {(r["item"], r["dtype"]): r["bytes"] for r in recs if r["section"] == "memory" and r["item"].startswith("kv")}
    # 32 layers x 32 KV heads x 96 dims x 2 (K and V) x 4 bytes x 131072 tokens = 96 GiB
    assert kv == {("kv_cache/model", "fp32"): 32 * 32 * 96 * 2 * 4 * 131072, ("kv_cache/layer", "fp32"): 3 * GIB}
    assert kv[("kv_cache/model", "fp32")] == 96 * GIB
    (summary,) = [r for r in recs if r["section"] == "summary"]
    assert summary["kv_dtype"] == "fp32" and summary["kv_dtype_source"] == "--dtype"
    # tf32 computes on fp32 storage: its KV cache is fp32 too
    tf32 = run_json(["layer", "--model", "phi3-128k", "--n", "131072", "--dtype", "tf32"])
    assert [r["dtype"] for r in tf32 if r["section"] == "memory" and r["item"] == "kv_cache/model"] == ["fp32"]
    # --kv-dtype wins for every compute dtype: fp8, 1 byte -> 24 GiB
    fp8 = run_json(["layer", "--model", "phi3-128k", "--n", "131072", "--dtype", "fp32,bf16", "--kv-dtype", "fp8"])
    rows = [(r["dtype"], r["bytes"]) for r in fp8 if r["section"] == "memory" and r["item"] == "kv_cache/model"]
    assert rows == [("fp8", 32 * 32 * 96 * 2 * 1 * 131072)] and rows[0][1] == 24 * GIB
    (s8,) = [r for r in fp8 if r["section"] == "summary"]
    assert s8["kv_dtype_source"] == "--kv-dtype" and s8["kv_bytes_model_fp8"] == 24 * GIB
    # and the table's header says which
    head = run(["layer", "--model", "phi3-128k", "--n", "131072", "--dtype", "fp32"]).stdout.splitlines()[0]
    assert "KV cache in each --dtype (fp32)" in head
    head = run(["layer", "--model", "phi3-128k", "--n", "131072", "--kv-dtype", "fp8"]).stdout.splitlines()[0]
    assert "KV cache in fp8 (--kv-dtype)" in head


def test_layer_row_that_cannot_be_computed_says_why():
    recs = run_json(["layer", "--model", "llama3-8b", "--n", "4k", "--gpu", "a100", "--dtype", "bf16,fp8"])
    timing = [r for r in recs if r["section"] == "timing"]
    assert [(r["dtype"], r["family"], r["status"]) for r in timing] == [
        ("bf16", "eager", "ok"), ("bf16", "tiled", "ok"), ("fp8", "eager", "not computed"),
        ("fp8", "tiled", "not computed")]
    for r in timing[2:]:
        assert "no fp8 peak" in r["reason"] and r["time_s"] is None
    table = run(["layer", "--model", "llama3-8b", "--n", "4k", "--gpu", "a100", "--dtype", "bf16,fp8"]).stdout
    assert "not computed" in table and "no fp8 peak" in table
    # the bundled H100 calibration measured no fp8 GEMM: its fp8 rows say so ...
    cal = run(["layer", "--model", "llama3-8b", "--n", "4k", "--gpu", "h100", "--dtype", "bf16,fp8"]).stdout
    assert "not computed" in cal and "has no fp8 peak rate" in cal
    # ... and on the datasheet (an fp8 peak) every row is computed; the table carries no status column
    ok = run(["layer", "--model", "llama3-8b", "--n", "4k", "--gpu", "h100", "--dtype", "bf16,fp8",
              "--calibration", "datasheet"]).stdout
    assert "not computed" not in ok and "reason" not in ok and "datasheet" in ok


def test_missing_required_option_says_so():
    line = assert_usage_error(run(["layer", "--model", "llama3-8b"]), "Missing option '--n'")
    assert "None" not in line
    assert_usage_error(run(["kv", "--n", "4k"]), "Missing option '--model'")
    assert_usage_error(run(["ring", "--model", "llama3-8b"]), "Missing option")


def _all_commands():
    import click

    ctx = click.Context(main)
    return [(name, main.get_command(ctx, name)) for name in main.list_commands(ctx)]


def test_every_command_and_option_has_help():
    import click

    missing = []
    for name, cmd in _all_commands():
        if not (cmd.help or "").strip():
            missing.append(f"{name}: no command help")
        for p in cmd.params:
            if isinstance(p, click.Option) and not (p.help or "").strip():
                missing.append(f"{name} {'/'.join(p.opts)}")
    assert missing == [], missing
    assert len(_all_commands()) >= 15  # every module's commands are registered


def test_gpus_lists_the_database():
    recs = run_json(["gpus"])
    gpus = {r["gpu"]: r for r in recs if r["section"] == "gpu"}
    links = {r["link"]: r for r in recs if r["section"] == "link"}
    db = json.loads((Path(__file__).resolve().parents[2] / "lcprof" / "data" / "gpus.json").read_text())
    assert set(gpus) == set(db["gpus"]) and set(links) == set(db["links"])
    h100 = gpus["h100-sxm"]
    # H100 SXM datasheet: 989.4 dense BF16 TFLOP/s, 3.35 TB/s, 80 GiB; NVLink 4 at 450 GB/s one way
    assert h100["peak_bf16_flops_per_s"] == 989.4e12 and h100["hbm_bytes_per_s"] == 3.35e12
    assert h100["memory_bytes"] == 80 * GIB and h100["memory_gib"] == 80
    assert "h100" in h100["aliases"].split(",")
    assert links["nvlink4"]["bytes_per_s"] == 450e9
    assert gpus["a100-80gb"]["peak_fp8_flops_per_s"] is None  # no fp8 on Ampere
    table = run(["gpus"]).stdout
    assert "h100-sxm" in table and "nvlink4" in table


def test_json_and_csv_carry_every_table():
    # rope --pairs prints the summary and the per-pair table: JSON has both, tagged
    recs = run_json(["rope", "--model", "phi3-128k", "--n", "128k", "--pairs"])
    assert [r["section"] for r in recs] == ["summary"] + ["pairs"] * 48
    assert recs[0]["pairs"] == 48 and [r["pair"] for r in recs[1:]] == list(range(48))
    # ring --steps: the summary (both layouts) and 8 steps per layout
    recs = run_json(["ring", "--model", "llama3-8b", "--n", "1M", "--gpus", "8", "--steps"])
    assert [r["section"] for r in recs] == ["summary"] * 2 + ["steps"] * 16
    c = run(["ring", "--model", "llama3-8b", "--n", "1M", "--gpus", "8", "--steps", "--format", "csv"])
    assert len(list(csv.DictReader(io.StringIO(c.stdout)))) == 18
    # layer: each of its three tables and the summary
    recs = run_json(["layer", "--model", "phi3-128k", "--n", "131072"])
    assert {r["section"] for r in recs} == {"flops", "memory", "timing", "summary"}
    # the 12 op rows the table prints: proj/q, proj/kv, attn/qk, attn/pv, proj/o, mlp/gate, mlp/up, mlp/down,
    # misc/elementwise, attn/total, mixer/total, total
    assert len([r for r in recs if r["section"] == "flops"]) == 12


def test_layout_filter_keeps_one_layout():
    recs = run_json(["ring", "--model", "llama3-8b", "--n", "1M", "--layout", "striped", "--steps"])
    assert {r["layout"] for r in recs} == {"striped"} and len(recs) == 1 + 8


# ------------------------------------------------------------------------------------------------
# No overflow: exact Python integers, or a refusal naming the bound
# ------------------------------------------------------------------------------------------------

def test_kv_batch_beyond_the_bound_is_refused():
    line = assert_usage_error(run(["kv", "--model", "llama3-8b", "--n", "4k", "--batch", "1000000000000"]),
                              "--batch")
    assert "1048576" in line  # the bound


def test_kv_bytes_exact_near_the_limit():
    # llama3-70b, bf16: 327680 bytes per token; 16M tokens x batch 1024 = 5.6e15 bytes, below 2**53: exact
    (rec,) = run_json(["kv", "--model", "llama3-70b", "--n", "16M", "--batch", "1024"])
    assert rec["kv_bytes"] == 327680 * (16 << 20) * 1024 == rec["kv_bytes_uncapped"]
    assert rec["window_saving"] == 0.0
    # beyond 2**53 bytes the count is refused, not wrapped
    assert_usage_error(run(["kv", "--model", "llama3-70b", "--n", "1M", "--batch", "1048576"]), "2**53")


def test_ring_beyond_int64_counts_is_refused():
    line = assert_usage_error(run(["ring", "--model", "llama3-8b", "--n", "4G"]), "64-bit")
    assert "n=" in line
    # the largest accepted n for llama3-8b: useful FLOPs of one step exact and positive
    # one rank (G=1), causal: n(n+1)/2 pairs x 4 x 128 head dims x 32 heads, n = 16M
    recs = run_json(["ring", "--model", "llama3-8b", "--n", "16M", "--gpus", "1", "--steps"])
    n = 16 << 20
    (step,) = [r for r in recs if r["section"] == "steps" and r["layout"] == "striped"]
    assert step["useful_flops"] == n * (n + 1) // 2 * 4 * 128 * 32 > 0


@pytest.mark.parametrize("link", ["-1", "0", "nan", "inf", "-inf", "1e309"])
def test_ring_link_must_be_positive_and_finite(link):
    assert_usage_error(run(["ring", "--model", "llama3-8b", "--n", "1M", "--link", link]), "--link")


@pytest.mark.parametrize("args", [
    ["ring", "--model", "llama3-8b", "--n", "1M", "--gpus", "2049"],
    ["layer", "--model", "llama3-8b", "--n", "16G"],
    ["flops", "--model", "llama3-8b", "--n", "4k", "--tile", "0"],
    ["kv", "--model", "llama3-8b", "--n", "4k", "--tp", "-1"],
    ["flops", "--model", "llama3-8b", "--n", "4k", "--layer", "-1"],
    ["layer", "--model", "llama3-8b", "--n", "4k", "--dtype", ",,"],
    ["layer", "--model", "llama3-8b", "--n", "4k", "--kv-dtype", "tf32"],
    ["diff", "phi3-4k", "phi3-128k", "--n", "4k,8k"],
    ["rope", "--model", "phi3-128k", "--n", "4k,8k"],
    ["kv", "--model", "llama3-8b", "--n", "9" * 400],
])
def test_bounds_and_malformed_values_one_line(args):
    assert_usage_error(run(args))


# ------------------------------------------------------------------------------------------------
# Files and streams: one line each
# ------------------------------------------------------------------------------------------------

def test_deeply_nested_config_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    assert_usage_error(run(["kv", "--model", str(deep), "--n", "4k"]), "deep.json")
    assert_usage_error(run(["show", str(deep)]))


def test_config_values_lcprof_cannot_compute_with_are_refused(tmp_path):
    big = write_config(tmp_path / "big", vocab_size=2 ** 70)
    assert_usage_error(run(["show", str(big)]), "vocab_size", "2147483648")
    nan = write_config(tmp_path / "nan", hidden_size=float("nan"))
    assert_usage_error(run(["kv", "--model", str(nan), "--n", "4k"]), str(nan))


def test_output_stream_full_one_line():
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "lcprof", "models", "--format", "json"], stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], p.stderr


def test_calibration_file_errors_one_line(tmp_path):
    from lcprof.errors import LcprofError
    from lcprof.hardware import load_calibration

    cal = json.loads((Path(__file__).resolve().parents[2] / "tests" / "data" / "h100-calibration.json").read_text())
    cases = {
        "deep.json": "[" * 100000 + "]" * 100000,
        "list.json": "[1, 2]",
        "nan.json": json.dumps({**cal, "hbm_bytes_per_s": float("nan")}),
        "neg.json": json.dumps({**cal, "peak_flops_per_s": {"bf16": -1}}),
        "zero.json": json.dumps({**cal, "memory_bytes": 0}),
        "str.json": json.dumps({**cal, "peak_flops_per_s": "fast"}),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(LcprofError, match=name):
            load_calibration(tmp_path / name)
    with pytest.raises(LcprofError, match="folder"):
        load_calibration(tmp_path)
    assert load_calibration(Path(__file__).resolve().parents[2] / "tests" / "data" / "h100-calibration.json")


def test_output_path_types(tmp_path):
    from lcprof.cli.options import OutputDir, OutputFile

    (tmp_path / "file.txt").write_text("x")
    ok = str(tmp_path / "out.csv")
    assert OutputFile().parse(ok) == ok
    for bad, why in ((tmp_path, "is a folder"), (tmp_path / "missing" / "dir" / "out.csv", "does not exist"),
                     (tmp_path / "file.txt" / "out.csv", "is a file"), ("/proc/lcprof-x/out.csv", "does not exist"),
                     ("", "empty")):
        with pytest.raises(LcprofError, match=why):
            OutputFile().parse(str(bad))
    assert OutputDir().parse(str(tmp_path / "new")) == str(tmp_path / "new")  # created by the command
    for bad, why in ((tmp_path / "file.txt", "is a file"), (tmp_path / "a" / "b", "does not exist")):
        with pytest.raises(LcprofError, match=why):
            OutputDir().parse(str(bad))


def test_a_command_module_that_fails_to_import_fails_loudly():
    script = textwrap.dedent("""
        import sys
        class Broken:
            def find_spec(self, name, path=None, target=None):
                if name == "lcprof.cli.plan":
                    raise ImportError("simulated breakage")
                return None
        sys.meta_path.insert(0, Broken())
        from lcprof.cli import main
        main(sys.argv[1:])
    """)
    # the broken module's command (and the command list, which names every command) fails, naming it
    for args in (["plan", "--help"], ["--help"]):
        p = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
        assert p.returncode != 0, args
        assert "lcprof.cli.plan failed to import" in p.stderr and "simulated breakage" in p.stderr
    # commands of other modules are not touched by it
    p = subprocess.run([sys.executable, "-c", script, "kv", "--model", "llama3-8b", "--n", "4k"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and "kv" in p.stdout.lower()


def test_lazy_command_map_matches_each_modules_commands():
    """LAZY_COMMANDS names exactly the commands each module defines, none shadowing an inline one."""
    import importlib

    from lcprof.cli import LAZY_COMMANDS

    by_module: dict[str, set[str]] = {}
    for name, mod in LAZY_COMMANDS.items():
        by_module.setdefault(mod, set()).add(name)
    for mod, names in by_module.items():
        assert {c.name for c in importlib.import_module(mod).COMMANDS} == names, mod
    inline = {n for n in main.commands if n not in LAZY_COMMANDS}
    assert inline >= {"models", "gpus", "show", "kv", "flops", "rope", "diff", "layer"}


LAZY_SCRIPT = textwrap.dedent("""
    import io, json, sys, contextlib
    from lcprof.cli import main
    out, code = io.StringIO(), None
    with contextlib.redirect_stdout(out):
        try:
            main(sys.argv[1:])
        except SystemExit as exc:
            code = exc.code
    print(json.dumps({"code": code, "loaded": sorted(m for m in sys.modules if m.startswith(("lcprof.cli.", "numpy")))}))
""")


@pytest.mark.parametrize("args, loaded, numpy", [
    (["gpus"], ["lcprof.cli.options"], False),  # no numpy, no other command module
    (["kv", "--model", "llama3-8b", "--n", "4k"], ["lcprof.cli.options"], True),
    (["plan", "--help"], ["lcprof.cli.options", "lcprof.cli.plan"], False),
])
def test_a_command_loads_only_its_own_module(args, loaded, numpy):
    p = subprocess.run([sys.executable, "-c", LAZY_SCRIPT, *args], capture_output=True, text=True, timeout=120)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["code"] in (0, None), p.stderr
    cli_modules = [m for m in res["loaded"] if m.startswith("lcprof.cli.")]
    assert cli_modules == loaded
    assert ("numpy" in res["loaded"]) == numpy

#!/usr/bin/env python3
"""CLI fuzz: about 1,000 lcprof invocations with bad or odd input, each judged.

    python3 scripts/fuzz_cli.py                       # ~1,000 cases, every command, report on stdout
    python3 scripts/fuzz_cli.py --out reports/fuzz/fuzz.txt --jobs 2
    python3 scripts/fuzz_cli.py --commands kv,layer --cases 200 --seed 3

A case is one argument list. It runs in a forked child of this process, which has already imported
lcprof (and, when a command needs them, pandas and torch), so a case costs milliseconds, not an
interpreter start; ``--subprocess`` runs ``python -m lcprof`` instead. Each child gets its own
process group (killed whole on timeout), /dev/null as stdin and a memory limit.

Verdicts:
  ok            exit 0 with sane numbers, or exit 2 with exactly one ``lcprof: error:`` line
  traceback     a Python traceback on stdout/stderr (the last frame and exception are kept)
  hang          still running after the case's timeout
  multi-line    exit 2 (or 1) but not exactly one error line
  bad-exit      any other exit status (a signal, 1 without one error line, ...)
  nonsense      exit 0 but an output number is impossible: negative bytes/FLOPs/seconds/tokens,
                infinite, wrapped past 2**63, a share outside [0, 1], a required figure missing,
                executed FLOPs below useful ones, a ring imbalance below 1

Cases: a fixed list of hostile inputs (the ones issue 19 found, and more), plus random ones: a valid
invocation of a command with one to three options replaced by a value from a hostile pool (NaN,
infinity, huge, negative, empty, malformed token counts, odd paths: a folder, through a file,
missing folders, /dev/full, /proc) or a random valid one, and hostile files (deeply nested JSON,
NaN and negative config values, broken results and calibration files).

The module is also imported by tests/cli/test_fuzz.py (``judge``, ``HOSTILE``, ``make_files``).
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import math
import os
import random
import re
import resource
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------
# Value pools
# ----------------------------------------------------------------------------------------------

HOSTILE = [
    "", " ", "0", "-0", "-1", "1", "2", "0.5", "1.5", "-1.5", "nan", "NaN", "-nan", "inf", "-inf", "Infinity",
    "1e309", "-1e309", "1e-309", "1e999", "1e3", "1e10", "0x10", "0b11", "1_000", "4k", "4K", "128k", "1M", "4G",
    "16G", "17G", "1T", "4096.0", "4k,", ",", ",,", "..", "4k..", "..4k", "8k..4k", "1..1", "1..17G", "k", "M", "abc",
    "\u00e4", "\U0001f4a5", "9" * 400, "1" + "0" * 30, "1000000000000", "9223372036854775807", "9223372036854775808",
    "18446744073709551617", "2147483648", "4294967296", "-9223372036854775809", "%s", "{}", "[]", "null", "None",
    "true", "\t4k", "4k\n", "4k ", "1,2,3", "4k;8k", "4k 8k", "--n", "-", "1e", "e3", ".5", "5.", "+5", "\u0664",
]
TOKEN_GOOD = ["128", "256", "1k", "4k", "8192", "32k", "128k", "131072", "1M", "4k,8k", "128..2048", "1k,4k..16k"]
MODELS = ["llama3-8b", "llama3-70b", "mistral-7b", "phi3-128k", "phi3-4k", "gemma2-9b", "deepseek-v2-lite",
          "deepseek-v3", "llama4-scout", "qwen2.5-7b-yarn", "llama2-7b"]
BAD_MODELS = ["llama3-8bb", "", " ", "/", ".", "..", "/dev/null", "/proc/self/status", "x" * 300, "{tmp}",
              "{tmp}/missing/config.json", "{tmp}/empty.json", "{tmp}/deep.json", "{tmp}/array.json",
              "{tmp}/binary.json", "{tmp}/file.txt/config.json", "{tmp}/emptydir"]
GPUS = ["h100-sxm", "h100", "a100", "a100-40gb", "b200", "l4", "mi300x", "h200"]
DTYPES = ["fp32", "bf16", "fp16", "fp8", "int8", "tf32", "float16", "bfloat16", "fp7", "int4", "fp64", "BF16"]
OUT_PATHS = ["{tmp}/out/ok.csv", "{tmp}/missing/dir/out.csv", "{tmp}/file.txt/out.csv", "{tmp}", "/dev/full",
             "/proc/lcprof-fuzz/out.csv", "/proc/self/status", "", "/", "{tmp}/out/"]
OUT_DIRS = ["{tmp}/out/report", "{tmp}/missing/dir/report", "{tmp}/file.txt/report", "{tmp}/file.txt",
            "/dev/full", "/proc/lcprof-fuzz", "", "/proc/self"]

# Config fields and hostile values (config-value validation is the config work's; the fuzz reports).
CONFIG_FIELDS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "vocab_size", "max_position_embeddings", "head_dim", "rope_theta",
                 "sliding_window", "rope_scaling", "tie_word_embeddings"]
CONFIG_VALUES = [float("nan"), float("inf"), float("-inf"), -1, 0, 1e30, 2 ** 70, "12", None, True, [], {}, 0.5,
                 {"rope_type": "yarn", "factor": float("nan")}, {"rope_type": "linear", "factor": -2}]


def _json_text(obj) -> str:
    return json.dumps(obj, allow_nan=True)


def make_files(tmp: Path) -> dict[str, str]:
    """Write the hostile input files under ``tmp``; returns {name: path}."""
    tmp = Path(tmp)
    (tmp / "out").mkdir(parents=True, exist_ok=True)
    (tmp / "emptydir").mkdir(exist_ok=True)
    (tmp / "file.txt").write_text("a file, not a folder\n")
    (tmp / "empty.json").write_text("")
    (tmp / "array.json").write_text("[1, 2]")
    (tmp / "binary.json").write_bytes(bytes(range(256)) * 4)
    (tmp / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    (tmp / "deep-object.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    base = json.loads((ROOT / "lcprof" / "data" / "models" / "llama3.1-8b.json").read_text())
    base.pop("_lcprof", None)
    files = {"tmp": str(tmp)}
    for f in CONFIG_FIELDS:
        for i, v in enumerate(CONFIG_VALUES):
            d = tmp / "cfg" / f"{f}-{i}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "config.json").write_text(_json_text({**base, f: v}))
            files[f"cfg:{f}-{i}"] = str(d / "config.json")
    tiny = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 4096}
    (tmp / "tiny").mkdir(exist_ok=True)
    (tmp / "tiny" / "config.json").write_text(json.dumps(tiny))
    files["tiny"] = str(tmp / "tiny" / "config.json")
    # results files
    good = (ROOT / "tests" / "data" / "phi3-cpu-small.csv").read_text()
    eight = (ROOT / "tests" / "data" / "eight-columns.csv").read_text()
    head = eight.splitlines()[0]
    rows = {
        "good": good,
        "eight": eight,
        "header-only": head + "\n",
        "empty": "",
        "negative-n": head + "\n" + "\n".join(f"m,b,fp32,cpu,1,{-n},0.1,ok" for n in (128, 256, 512)) + "\n",
        "zero-n": head + "\n" + "\n".join(f"m,b,fp32,cpu,1,0,{t},ok" for t in (0.1, 0.2, 0.3)) + "\n",
        "nan-time": head + "\n" + "\n".join(f"m,b,fp32,cpu,1,{n},nan,ok" for n in (128, 256, 512)) + "\n",
        "inf-time": head + "\n" + "\n".join(f"m,b,fp32,cpu,1,{n},inf,ok" for n in (128, 256, 512)) + "\n",
        "negative-time": head + "\n" + "\n".join(f"llama3-8b,sdpa,fp32,cpu,1,{n},-0.5,ok" for n in (128, 256, 512))
        + "\n",
        "zero-time": head + "\n" + "\n".join(f"llama3-8b,sdpa,fp32,cpu,1,{n},0,ok" for n in (128, 256, 512)) + "\n",
        "huge-n": head + "\n" + "\n".join(f"llama3-8b,sdpa,fp32,cpu,1,{n},1.0,ok" for n in ("1e30", "1e31", "1e32"))
        + "\n",
        "int64-n": head + "\n" + "\n".join(f"llama3-8b,sdpa,fp32,cpu,1,{n},1.0,ok"
                                           for n in (2 ** 63, 2 ** 64, 2 ** 65)) + "\n",
        "text-n": head + "\n" + "\n".join(f"llama3-8b,sdpa,fp32,cpu,1,{n},1.0,ok" for n in ("a", "b", "c")) + "\n",
        "unknown-model": head + "\n" + "\n".join(f"nomodel,sdpa,fp32,cpu,1,{n},1.0,ok" for n in (128, 256, 512))
        + "\n",
        "missing-cols": "model,n\nllama3-8b,128\n",
        "one-row": head + "\nllama3-8b,sdpa,fp32,cpu,1,128,0.1,ok\n",
        "dup-header": head + "\n" + head + "\n" + eight.split("\n", 1)[1],
        "binary": None,
    }
    for name, text in rows.items():
        p = tmp / "results" / f"{name}.csv"
        p.parent.mkdir(exist_ok=True)
        if text is None:
            p.write_bytes(bytes(range(256)) * 8)
        else:
            p.write_text(text)
        files[f"csv:{name}"] = str(p)
    calib = json.loads((ROOT / "tests" / "data" / "h100-calibration.json").read_text())
    cal_variants = {
        "good": calib,
        "nan-peak": {**calib, "peak_flops_per_s": {"bf16": float("nan")}},
        "neg-hbm": {**calib, "hbm_bytes_per_s": -1.0},
        "zero-mem": {**calib, "memory_bytes": 0},
        "inf-mem": {**calib, "memory_bytes": float("inf")},
        "missing": {k: v for k, v in calib.items() if k != "hbm_bytes_per_s"},
        "list": [1, 2],
        "str-peaks": {**calib, "peak_flops_per_s": "fast"},
        "attn-nan": {**calib, "attention_flops_per_s": {"sdpa-flash": {"bf16": float("nan")}}},
        "attn-by-n-bad": {**calib, "attention_flops_per_s_by_n": {"sdpa-flash": {"bf16": {"x": 1e12}}}},
    }
    for name, obj in cal_variants.items():
        p = tmp / "calib" / f"{name}.json"
        p.parent.mkdir(exist_ok=True)
        p.write_text(_json_text(obj))
        files[f"cal:{name}"] = str(p)
    files["cal:deep"] = str(tmp / "deep.json")
    return files


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

#: Commands whose modules the robustness work owns (the others' findings are reported, not fixed).
OWNED = ("models", "gpus", "show", "kv", "flops", "rope", "diff", "layer", "ring")
#: Seconds a case may take before it counts as a hang, by command (torch and plotting start slowly).
TIMEOUT_S = {"calibrate": 240.0, "sweep": 60.0, "report": 90.0, "backends": 60.0}
NEEDS_TORCH = ("sweep", "calibrate", "backends")


def fixed_cases() -> list[list[str]]:
    """Hand-written hostile inputs: the ones issue 19 found, and their neighbours."""
    c = [
        ["kv", "--model", "llama3-8b", "--n", "4k", "--batch", "1000000000000", "--format", "json"],
        ["kv", "--model", "llama3-8b", "--n", "1M", "--batch", "1048576", "--format", "json"],
        ["kv", "--model", "llama3-70b", "--n", "16G", "--dtype", "fp32", "--format", "json"],
        ["ring", "--model", "llama3-8b", "--n", "4G", "--format", "json"],
        ["ring", "--model", "llama3-8b", "--n", "64M", "--gpus", "1", "--format", "json"],
        ["ring", "--model", "llama3-8b", "--n", "16M", "--gpus", "1", "--format", "json", "--steps"],
        ["ring", "--model", "llama3-8b", "--n", "1M", "--link", "-1"],
        ["ring", "--model", "llama3-8b", "--n", "1M", "--link", "nan"],
        ["ring", "--model", "llama3-8b", "--n", "1M", "--link", "inf"],
        ["ring", "--model", "llama3-8b", "--n", "1M", "--link", "0"],
        ["ring", "--model", "llama3-8b", "--n", "1M", "--gpus", "100000"],
        ["ring", "--model", "deepseek-v3", "--n", "128k", "--gpus", "128", "--format", "json"],
        ["ring", "--model", "deepseek-v3", "--n", "128k", "--gpus", "129"],
        ["layer", "--model", "llama3-8b"],
        ["layer", "--model", "llama3-8b", "--n", "4k", "--gpu", "a100", "--dtype", "bf16,fp8", "--format", "json"],
        ["layer", "--model", "phi3-128k", "--n", "131072", "--dtype", "fp32", "--format", "json"],
        ["layer", "--model", "phi3-128k", "--n", "16G", "--batch", "1048576", "--format", "json"],
        ["layer", "--model", "llama3-8b", "--n", "4k", "--dtype", ""],
        ["layer", "--model", "llama3-8b", "--n", "4k", "--dtype", ",,"],
        ["flops", "--model", "llama3-8b", "--n", "16G", "--batch", "1048576", "--format", "json"],
        ["flops", "--model", "llama3-8b", "--n", "4k", "--layer", "-1"],
        ["flops", "--model", "llama3-8b", "--n", "4k", "--prefix", "16G", "--format", "json"],
        ["diff", "phi3-4k", "phi3-128k", "--format", "json"],
        ["diff", "phi3-4k", "phi3-128k", "--n", "4k,8k"],
        ["rope", "--model", "phi3-128k", "--n", "4k,8k"],
        ["rope", "--model", "phi3-128k", "--n", "16G", "--pairs", "--format", "json"],
        ["show", "{tmp}/deep.json"],
        ["show", "{tmp}/deep-object.json"],
        ["kv", "--model", "{tmp}/deep.json", "--n", "4k"],
        ["kv", "--model", "{tmp}/binary.json", "--n", "4k"],
        ["gpus", "--format", "json"],
        ["models", "--format", "csv"],
        ["sweep", "--model", "{tiny}", "--n", "64", "--budget-s", "nan", "--out", "{tmp}/out/nan.csv"],
        ["sweep", "--model", "{tiny}", "--n", "64", "--budget-s", "inf", "--out", "{tmp}/out/inf.csv"],
        ["sweep", "--model", "{tiny}", "--n", "64", "--budget-s", "0.02", "--device", "cpu", "--out", "/dev/full"],
        ["sweep", "--model", "{tiny}", "--n", "64", "--budget-s", "0.02", "--device", "cpu",
         "--out", "{tmp}/file.txt/x.csv"],
        ["sweep", "--model", "{tiny}", "--n", "64", "--budget-s", "0.02", "--device", "cpu",
         "--out", "/proc/lcprof-fuzz/x.csv"],
        ["sweep", "--model", "{tiny}", "--n", "64", "--budget-s", "0.02", "--device", "cpu", "--out", "{tmp}"],
        ["sweep", "--model", "{tiny}", "--n", "64", "--budget-s", "0.02", "--device", "cpu",
         "--out", "{tmp}/missing/deep/x.csv"],
        ["compare", "{csv:negative-n}", "--gpu", "h100", "--format", "json"],
        ["compare", "{csv:negative-time}", "--gpu", "h100", "--format", "json"],
        ["compare", "{csv:zero-time}", "--gpu", "h100", "--format", "json"],
        ["compare", "{csv:int64-n}", "--gpu", "h100", "--format", "json"],
        ["fit", "{csv:nan-time}", "--format", "json"],
        ["fit", "{csv:good}", "--target", "nan"],
        ["fit", "{csv:good}", "--min-n", "-1"],
        ["plan", "--model", "llama3-8b", "--long", "128k", "--calibration", "{cal:deep}"],
        ["plan", "--model", "llama3-8b", "--long", "128k", "--calibration", "{cal:nan-peak}"],
        ["plan", "--model", "llama3-8b", "--long", "128k", "--mem-util", "nan"],
        ["plan", "--model", "llama3-8b", "--long", "128k", "--ttft", "nan"],
        ["plan", "--model", "llama3-8b", "--long", "128k", "--report", "/dev/full"],
        ["plan", "--model", "llama3-8b", "--long", "128k", "--report", "{tmp}/file.txt"],
        ["report", "{csv:good}", "--out", "{tmp}/file.txt"],
        ["report", "{csv:good}", "--out", "/proc/lcprof-fuzz"],
    ]
    for f in CONFIG_FIELDS:
        for i in range(len(CONFIG_VALUES)):
            c.append(["kv", "--model", f"{{cfg:{f}-{i}}}", "--n", "4k", "--format", "json"])
    return c


@dataclass
class Command:
    """How to build a valid invocation of one command, option by option, and which values to try."""

    name: str
    positional: list = field(default_factory=list)  # [(pool_good, pool_bad)]
    options: dict = field(default_factory=dict)  # "--opt": (good values, bad values) ; flags: (None, None)
    required: tuple = ()
    weight: float = 1.0
    formats: bool = True


def _p(*values):
    return list(values)


def command_specs() -> list[Command]:
    tok_bad = HOSTILE
    model_good, model_bad = MODELS, BAD_MODELS + ["{cfg}"] * 12
    return [
        Command("models", weight=0.3),
        Command("gpus", weight=0.3),
        Command("show", positional=[(model_good, model_bad)], weight=0.6),
        Command("kv", options={"--model": (model_good, model_bad), "--n": (TOKEN_GOOD, tok_bad),
                               "--dtype": (DTYPES[:5], DTYPES + HOSTILE[:20]),
                               "--batch": (_p("1", "8", "64"), HOSTILE), "--tp": (_p("1", "2", "8"), HOSTILE)},
                required=("--model", "--n"), weight=1.5),
        Command("flops", options={"--model": (model_good, model_bad), "--n": (TOKEN_GOOD, tok_bad),
                                  "--phase": (_p("prefill", "decode"), _p("", "Decode", "x")),
                                  "--prefix": (_p("0", "4k", "128k"), HOSTILE),
                                  "--batch": (_p("1", "4"), HOSTILE), "--layer": (_p("0", "1", "5"), HOSTILE),
                                  "--tile": (_p("64", "128", "256"), HOSTILE), "--lm-head": (None, None)},
                required=("--model", "--n"), weight=1.5),
        Command("rope", options={"--model": (model_good, model_bad), "--n": (_p("4k", "128k", "1M"), tok_bad),
                                 "--pairs": (None, None)}, required=("--model",)),
        Command("diff", positional=[(model_good, model_bad), (model_good, model_bad)],
                options={"--n": (_p("4k", "128k"), tok_bad)}),
        Command("layer", options={"--model": (model_good, model_bad), "--n": (_p("4k", "32k", "131072"), tok_bad),
                                  "--gpu": (GPUS, HOSTILE[:30] + ["h1000"]),
                                  "--dtype": (_p("fp32", "bf16", "fp32,bf16", "tf32,fp16", "bf16,fp8"),
                                              DTYPES + HOSTILE[:30]),
                                  "--layer": (_p("0", "1"), HOSTILE), "--tile": (_p("64", "128"), HOSTILE),
                                  "--batch": (_p("1", "4"), HOSTILE),
                                  "--kv-dtype": (_p("fp8", "bf16", "fp32"), DTYPES + HOSTILE[:20]),
                                  "--elementwise": (_p("fused", "unfused"), _p("", "x"))},
                required=("--model", "--n"), weight=2.0),
        Command("ring", options={"--model": (model_good, model_bad), "--n": (_p("64k", "1M", "128k"), tok_bad),
                                 "--gpus": (_p("2", "4", "8", "16"), HOSTILE),
                                 "--link": (_p("nvlink4", "pcie5", "ib-ndr", "4.5e11"), HOSTILE + ["nvlink9"]),
                                 "--gpu": (GPUS, HOSTILE[:30]), "--dtype": (_p("bf16", "fp32", "fp8"), DTYPES + HOSTILE[:20]),
                                 "--tile": (_p("64", "128"), HOSTILE), "--steps": (None, None),
                                 "--layout": (_p("striped", "contiguous", "both"), _p("", "x"))},
                required=("--model", "--n"), weight=2.0),
        Command("plan", options={"--model": (model_good, model_bad), "--gpu": (GPUS, HOSTILE[:30]),
                                 "--gpus": (_p("1", "8"), HOSTILE), "--tp": (_p("1", "2", "8"), HOSTILE),
                                 "--kv-dtype": (_p("bf16", "fp8", "bf16,fp8"), DTYPES + HOSTILE[:20]),
                                 "--mem-util": (_p("0.9", "0.5"), HOSTILE), "--block-size": (_p("16", "32"), HOSTILE),
                                 "--long": (_p("32k", "128k"), tok_bad), "--short": (_p("4k", "2k"), tok_bad),
                                 "--ttft": (_p("2s", "500ms"), HOSTILE), "--tpot": (_p("50ms",), HOSTILE),
                                 "--prefix": (_p("0", "1k"), tok_bad), "--chunk": (_p("8k",), tok_bad),
                                 "--decode-batch": (_p("8", "64"), HOSTILE),
                                 "--calibration": (_p("{cal:good}"), _p("{cal:nan-peak}", "{cal:neg-hbm}",
                                                   "{cal:missing}", "{cal:list}", "{cal:deep}", "{tmp}",
                                                   "{tmp}/none.json", "{cal:zero-mem}", "{cal:inf-mem}",
                                                   "{cal:str-peaks}", "{cal:attn-nan}", "{cal:attn-by-n-bad}"))},
                required=("--model", "--long"), weight=2.0),
        Command("fit", positional=[(_p("{csv:good}", "{csv:eight}"), [f"{{csv:{k}}}" for k in CSV_BAD])],
                options={"--min-n": (_p("256",), tok_bad), "--max-n": (_p("2k",), tok_bad),
                         "--target": (_p("128k", "none", "1M"), HOSTILE),
                         "--interval": (_p("delta", "bootstrap"), _p("", "x")), "--points": (None, None)},
                weight=1.0),
        Command("compare", positional=[(_p("{csv:good}", "{csv:eight}"), [f"{{csv:{k}}}" for k in CSV_BAD])],
                options={"--gpu": (GPUS, HOSTILE[:30]),
                         "--calibration": (_p("{cal:good}"), _p("{cal:nan-peak}", "{cal:deep}", "{cal:list}",
                                                                "{cal:missing}", "{tmp}")),
                         "--exponents": (None, None)}, weight=1.0),
        Command("report", positional=[(_p("{csv:good}",), [f"{{csv:{k}}}" for k in CSV_BAD])],
                options={"--out": (_p("{tmp}/out/report"), OUT_DIRS), "--gpu": (GPUS, HOSTILE[:20]),
                         "--target": (_p("128k", "none"), HOSTILE[:30])},
                required=("--out",), weight=0.15),
        Command("sweep", options={"--model": (_p("{tiny}"), model_bad), "--n": (_p("32", "64", "32..64"), tok_bad),
                                  "--backends": (_p("sdpa", "eager"), _p("", "x", "sdpa,", "flash-attn")),
                                  "--dtype": (_p("fp32",), DTYPES + HOSTILE[:10]), "--device": (_p("cpu",), _p("", "gpu", "cuda:99")),
                                  "--budget-s": (_p("0.01", "0.02"), HOSTILE),
                                  "--min-reps": (_p("1", "2"), HOSTILE), "--max-reps": (_p("3",), HOSTILE),
                                  "--mem-cap": (_p("8GiB",), HOSTILE), "--batch": (_p("1",), HOSTILE),
                                  "--out": (_p("{tmp}/out/sweep-{i}.csv"), OUT_PATHS)},
                required=("--model", "--n", "--out", "--device", "--budget-s"), weight=0.35, formats=False),
        Command("backends", options={"--device": (_p("cpu",), _p("", "gpu", "cuda:99", "cpu:1")),
                                     "--dtype": (_p("fp32", "fp32,bf16"), DTYPES + HOSTILE[:10])}, weight=0.1),
    ]


CSV_BAD = ["header-only", "empty", "negative-n", "zero-n", "nan-time", "inf-time", "negative-time", "zero-time",
           "huge-n", "int64-n", "text-n", "unknown-model", "missing-cols", "one-row", "dup-header", "binary"]


def random_cases(rng: random.Random, count: int, commands: list[Command]) -> list[list[str]]:
    weights = [c.weight for c in commands]
    out = []
    for i in range(count):
        c = rng.choices(commands, weights)[0]
        args = [c.name]
        n_bad = rng.choice([0, 1, 1, 1, 2, 2, 3])
        names = list(c.options)
        bad = set(rng.sample(names + [f"#{k}" for k in range(len(c.positional))], min(n_bad, len(names) + len(c.positional))))
        for k, (good, badpool) in enumerate(c.positional):
            args.append(rng.choice(badpool if f"#{k}" in bad else good))
        for name in names:
            good, badpool = c.options[name]
            if good is None:  # a flag
                if rng.random() < 0.4:
                    args.append(name)
                continue
            if name in bad:
                args += [name, rng.choice(badpool)]
            elif name in c.required or rng.random() < 0.35:
                args += [name, rng.choice(good)]
        if rng.random() < 0.03:  # an option given twice, or an unknown one
            args += rng.choice([["--n", "4k"], ["--bogus", "1"], ["--format"], ["extra-arg"]])
        if c.formats:
            args += ["--format", rng.choices(["json", "table", "csv", "xml", ""], [60, 20, 17, 2, 1])[0]]
        out.append([a.replace("{i}", str(i)) for a in args])
    return out


def expand(args: list[str], files: dict[str, str], rng: random.Random) -> list[str]:
    cfg_keys = [k for k in files if k.startswith("cfg:")]

    def sub(a: str) -> str:
        if a == "{cfg}":
            return files[rng.choice(cfg_keys)]
        return re.sub(r"\{([a-z]+(?::[\w.-]+)?)\}", lambda m: files.get(m.group(1), m.group(0)), a)

    return [sub(a) for a in args]


# ----------------------------------------------------------------------------------------------
# Judging one result
# ----------------------------------------------------------------------------------------------

UNIT_SUFFIXES = ("_bytes", "_flops", "_s", "_per_s", "_tokens", "_gib", "_pairs")
COUNT_KEYS = {"n", "batch", "tp", "gpus", "world", "layers", "pairs", "repeats", "tokens_per_device", "tile"}
MAY_BE_NEGATIVE = ("residual", "difference", "exponent", "delta", "log", "slope", "intercept", "c0", "c1", "c2",
                   "coef", "lo", "error", "err")
SHARE_KEYS = ("_share", "window_saving", "_fraction", "utilization")
#: Figures a record of these commands must carry as finite numbers.
REQUIRED = {
    "kv": ("n", "kv_bytes", "kv_bytes_per_token", "kv_gib", "kv_bytes_uncapped", "window_saving"),
    "flops": ("n", "total_flops", "attn_total_flops", "executed_eager_flops", "executed_tiled_flops"),
}


def _numbers(rec: dict):
    for k, v in rec.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            yield k, v
        elif isinstance(v, str) and v.strip().lower() in ("inf", "-inf", "nan", "infinity", "-infinity"):
            yield k, float(v)


def nonsense(command: str, recs: list[dict]) -> str | None:
    """Why these records are impossible, or None."""
    for rec in recs:
        if rec.get("section") == "config":  # `diff` quotes the raw config.json values as they are
            continue
        status = str(rec.get("status") or "ok")
        for k, v in _numbers(rec):
            kl = k.lower()
            if isinstance(v, float) and not math.isfinite(v):
                return f"{k}={v}"
            if isinstance(v, int) and abs(v) >= 2 ** 63:
                return f"{k}={v} (past 2**63)"
            unit = kl.endswith(UNIT_SUFFIXES) or kl in COUNT_KEYS
            if unit and v < 0 and not any(w in kl for w in MAY_BE_NEGATIVE):
                return f"{k}={v} (negative)"
            if any(kl.endswith(s) for s in SHARE_KEYS) and not -1e-9 <= v <= 1 + 1e-9 and "over" not in kl:
                return f"{k}={v} (a share outside [0, 1])"
        if status == "ok":
            for k in REQUIRED.get(command, ()):
                if k in rec and not isinstance(rec[k], (int, float)):
                    return f"{k} missing ({rec[k]!r})"
        if command == "flops":
            u, e, t = rec.get("total_flops"), rec.get("executed_eager_flops"), rec.get("executed_tiled_flops")
            if all(isinstance(x, (int, float)) for x in (u, e, t)) and not e >= t * (1 - 1e-12) >= u * (1 - 1e-9):
                return f"executed below useful: eager {e}, tiled {t}, useful {u}"
        if command == "ring" and rec.get("section") == "summary":
            imb = rec.get("load_imbalance")
            if isinstance(imb, (int, float)) and imb < 1 - 1e-12:
                return f"load_imbalance={imb} < 1"
        if command == "ring" and rec.get("section") == "steps":
            u, e = rec.get("useful_flops"), rec.get("executed_flops")
            if isinstance(u, (int, float)) and isinstance(e, (int, float)) and e < u:
                return f"executed_flops {e} < useful_flops {u}"
        if command == "layer" and rec.get("section") == "timing" and status == "ok":
            if not (isinstance(rec.get("time_s"), (int, float)) and rec["time_s"] > 0):
                return f"timing row without a positive time_s: {rec.get('time_s')!r}"
    return None


def parse_records(stdout: str, fmt: str) -> list[dict] | None:
    if fmt == "json":
        i = stdout.find("[")
        if i < 0:
            return None
        try:
            return json.loads(stdout[i:])
        except ValueError:
            return None
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(stdout)))
        out = []
        for r in rows:
            rec = {}
            for k, v in r.items():
                if k is None:
                    continue
                try:
                    rec[k] = int(v)
                except (TypeError, ValueError):
                    try:
                        rec[k] = float(v)
                    except (TypeError, ValueError):
                        rec[k] = v
            out.append(rec)
        return out
    return None


TRACEBACK = "Traceback (most recent call last)"


def last_frame(text: str) -> str:
    """'file:line in fn: ExceptionType: message' of the last traceback in ``text``."""
    i = text.rfind(TRACEBACK)
    tb = text[i:].splitlines()
    frames = [ln.strip() for ln in tb if ln.strip().startswith("File ")]
    exc = next((ln.strip() for ln in reversed(tb) if ln.strip() and not ln.startswith(" ")
                and not ln.startswith(TRACEBACK)), "")
    where = ""
    if frames:
        m = re.match(r'File "([^"]+)", line (\d+), in (\S+)', frames[-1])
        if m:
            path = m.group(1)
            for marker in ("/lcprof/", "/site-packages/"):
                if marker in path:
                    path = path[path.index(marker) + 1:]
                    break
            where = f"{path}:{m.group(2)} in {m.group(3)}"
    return f"{where}: {exc[:200]}"


def judge(args: list[str], code: int | None, stdout: str, stderr: str, timed_out: bool = False) -> tuple[str, str]:
    """(verdict, detail) of one run; see the module docstring for the verdicts."""
    if timed_out:
        return "hang", ""
    if TRACEBACK in stderr or TRACEBACK in stdout:
        return "traceback", last_frame(stderr if TRACEBACK in stderr else stdout)
    # stderr may carry warnings and progress ("lcprof: warning: ...", "lcprof: sweep: ..."); an error is
    # exactly one "lcprof: error:" line, and nothing else that is not lcprof's own
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    error_lines = [ln for ln in lines if ln.startswith("lcprof: error:")]
    errors = error_lines + [ln for ln in lines if not ln.startswith("lcprof: ")]
    if code == 0:
        command = args[0] if args else ""
        fmt = "table"
        if "--format" in args:
            j = len(args) - 1 - args[::-1].index("--format")
            fmt = args[j + 1] if j + 1 < len(args) else "table"
        recs = parse_records(stdout, fmt)
        if fmt in ("json", "csv") and recs is None and stdout.strip():
            return "nonsense", f"unparsable {fmt} output"
        if recs is not None:
            why = nonsense(command, [r for r in recs if isinstance(r, dict)])
            if why:
                return "nonsense", why
        elif re.search(r"(?<![\w.])(-?inf|nan)(?![\w.])", stdout, re.I):
            return "nonsense", "inf/nan in the table"
        return "ok", ""
    if code in (1, 2):
        if len(error_lines) == 1 and len(errors) == 1:
            return "ok", ""
        if code == 1 and not stderr.strip():
            return "bad-exit", "exit 1 without a message"
        return "multi-line", " | ".join(ln[:100] for ln in stderr.strip().splitlines()[:3])
    return "bad-exit", f"exit {code}: {stderr.strip()[-200:]}"


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------

@dataclass
class Result:
    args: list
    verdict: str
    detail: str
    code: int | None
    seconds: float
    stderr_tail: str


def _child(args: list[str], out_fd: int, err_fd: int, mem_limit_bytes: int) -> None:  # pragma: no cover - forked
    os.setpgrp()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (mem_limit_bytes, mem_limit_bytes))
    except (ValueError, OSError):
        pass
    code = 0
    try:
        import lcprof.cli

        lcprof.cli.main(args=args, prog_name="lcprof", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what a user would see: the traceback
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(code)


def run_cases(cases: list[list[str]], *, jobs: int = 2, subprocess_mode: bool = False, default_timeout_s: float = 30.0,
              mem_limit_bytes: int = 8 << 30, progress=None) -> list[Result]:
    """Run every case, ``jobs`` at a time; returns one Result per case, in order."""
    results: list[Result | None] = [None] * len(cases)
    pending = list(range(len(cases)))
    running: dict[int, tuple] = {}
    tmpdir = Path(tempfile.mkdtemp(prefix="lcprof-fuzz-io-"))
    done = 0
    while pending or running:
        while pending and len(running) < jobs:
            i = pending.pop(0)
            args = cases[i]
            out_p, err_p = tmpdir / f"{i}.out", tmpdir / f"{i}.err"
            out_f, err_f = open(out_p, "wb"), open(err_p, "wb")
            timeout = TIMEOUT_S.get(args[0] if args else "", default_timeout_s)
            start = time.monotonic()
            if subprocess_mode:
                proc = subprocess.Popen([sys.executable, "-m", "lcprof", *args], stdin=subprocess.DEVNULL,
                                        stdout=out_f, stderr=err_f, start_new_session=True, cwd=str(ROOT))
                pid = proc.pid
            else:
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(args, out_f.fileno(), err_f.fileno(), mem_limit_bytes)
                proc = None
            running[i] = (pid, proc, start, timeout, out_f, err_f, out_p, err_p)
        time.sleep(0.005)
        for i in list(running):
            pid, proc, start, timeout, out_f, err_f, out_p, err_p = running[i]
            if proc is not None:
                status = proc.poll()
                finished = status is not None
            else:
                wpid, wstatus = os.waitpid(pid, os.WNOHANG)
                finished = wpid == pid
                status = (os.waitstatus_to_exitcode(wstatus) if finished else None)
            elapsed = time.monotonic() - start
            timed_out = not finished and elapsed > timeout
            if not finished and not timed_out:
                continue
            if timed_out:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if proc is not None:
                    proc.wait()
                else:
                    os.waitpid(pid, 0)
            else:  # the case's own children (torchrun ranks, ...) go with it
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            out_f.close()
            err_f.close()
            stdout = out_p.read_bytes().decode("utf-8", "replace")
            stderr = err_p.read_bytes().decode("utf-8", "replace")
            out_p.unlink()
            err_p.unlink()
            verdict, detail = judge(cases[i], status, stdout, stderr, timed_out)
            results[i] = Result(cases[i], verdict, detail, status, elapsed, stderr.strip()[-300:])
            del running[i]
            done += 1
            if progress:
                progress(done, len(cases), results[i])
    try:
        tmpdir.rmdir()
    except OSError:
        pass
    return results  # type: ignore[return-value]


def summarize(results: list[Result], *, seconds: float, seed: int, argv: list[str]) -> str:
    by_cmd: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in results:
        by_cmd[r.args[0] if r.args else "(none)"][r.verdict] += 1
    verdicts = ["ok", "traceback", "hang", "nonsense", "multi-line", "bad-exit"]
    lines = [f"lcprof CLI fuzz: {len(results)} cases, seed {seed}, {seconds:.0f} s wall "
             f"({time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})",
             f"command line: {shlex.join(argv)}", ""]
    header = f"{'command':<10}" + "".join(f"{v:>11}" for v in ["cases", *verdicts]) + "  owned"
    lines.append(header)
    lines.append("-" * len(header))
    total = collections.Counter()
    owned = collections.Counter()
    for cmd in sorted(by_cmd):
        c = by_cmd[cmd]
        total.update(c)
        if cmd in OWNED:
            owned.update(c)
        lines.append(f"{cmd:<10}{sum(c.values()):>11}" + "".join(f"{c[v]:>11}" for v in verdicts)
                     + ("  yes" if cmd in OWNED else ""))
    lines.append("-" * len(header))
    for label, c in (("all", total), ("owned", owned)):
        lines.append(f"{label:<10}{sum(c.values()):>11}" + "".join(f"{c[v]:>11}" for v in verdicts))
    bad = [r for r in results if r.verdict != "ok"]
    if bad:
        lines += ["", "Findings, grouped by cause (command, verdict, detail), with one example each:"]
        groups: dict[tuple, list[Result]] = collections.defaultdict(list)
        for r in bad:
            groups[(r.args[0], r.verdict, re.sub(r"\d+", "N", r.detail)[:160])].append(r)
        for (cmd, verdict, detail), rs in sorted(groups.items()):
            ex = rs[0]
            lines.append(f"- {cmd} {verdict} x{len(rs)}: {rs[0].detail[:200]}")
            lines.append(f"    lcprof {shlex.join(ex.args)[:400]}")
    slow = sorted(results, key=lambda r: -r.seconds)[:5]
    lines += ["", "Slowest cases:"] + [f"  {r.seconds:6.1f} s  {r.verdict:<9} lcprof {shlex.join(r.args)[:200]}"
                                      for r in slow]
    return "\n".join(lines) + "\n"


def build_cases(count: int, seed: int, commands: list[str] | None, files: dict[str, str]) -> list[list[str]]:
    rng = random.Random(seed)
    specs = [c for c in command_specs() if not commands or c.name in commands]
    fixed = [c for c in fixed_cases() if not commands or c[0] in commands]
    n_random = max(0, count - len(fixed))
    cases = fixed + random_cases(rng, n_random, specs)
    return [expand(c, files, rng) for c in cases]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="total cases (the fixed list included)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once")
    ap.add_argument("--timeout-s", type=float, default=30.0, help="default seconds before a case is a hang")
    ap.add_argument("--commands", default=None, help="comma-separated commands (default: all)")
    ap.add_argument("--subprocess", action="store_true", help="run `python -m lcprof` per case instead of forking")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    commands = [c.strip() for c in a.commands.split(",")] if a.commands else None
    with tempfile.TemporaryDirectory(prefix="lcprof-fuzz-") as tmp:
        files = make_files(Path(tmp))
        cases = build_cases(a.cases, a.seed, commands, files)
        if not a.subprocess:  # import once, before forking: every case then starts warm
            import lcprof.cli  # noqa: F401
            import lcprof.analytic  # noqa: F401
            names = {c[0] for c in cases}
            if names & {"plan", "fit", "compare", "report"}:
                import pandas  # noqa: F401
            if names & {"report"}:
                import matplotlib
                matplotlib.use("Agg")
                import matplotlib.pyplot  # noqa: F401
            if names & set(NEEDS_TORCH):
                import torch  # noqa: F401
        start = time.monotonic()

        def progress(done, total, r):
            if not a.quiet and (r.verdict != "ok" or done % 100 == 0):
                print(f"[{done}/{total}] {r.verdict:<10} {r.seconds:5.1f}s lcprof {shlex.join(r.args)[:160]}"
                      + (f"\n      {r.detail[:200]}" if r.detail else ""), file=sys.stderr, flush=True)

        results = run_cases(cases, jobs=a.jobs, subprocess_mode=a.subprocess, default_timeout_s=a.timeout_s,
                            progress=progress)
        text = summarize(results, seconds=time.monotonic() - start, seed=a.seed,
                         argv=["scripts/fuzz_cli.py", *(argv if argv is not None else sys.argv[1:])])
        text = text.replace(tmp, "$TMP")
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    owned_bad = [r for r in results if r.args and r.args[0] in OWNED and r.verdict != "ok"]
    return 1 if owned_bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""CLI fuzz, fast subset: hostile inputs and hypothesis-chosen option values for the analytic commands.

Every run must end in one of two ways: exit 0 with sane numbers, or exit 2 with exactly one
``lcprof: error:`` line -- never a traceback, a hang or an impossible number. The judge and the
hostile values are scripts/fuzz_cli.py's (the full ~1,000-case run, reports/fuzz/); here they run
in-process with click's CliRunner, so the subset takes seconds.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcprof.cli import main

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("fuzz_cli", ROOT / "scripts" / "fuzz_cli.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("fuzz_cli", fuzz)  # dataclasses look their module up
_spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return fuzz.make_files(tmp_path_factory.mktemp("hostile"))


def invoke(args: list[str]) -> tuple[str, str]:
    """Run lcprof in-process; (verdict, detail) by the fuzz's judge."""
    res = CliRunner().invoke(main, args, catch_exceptions=True)
    stderr = res.stderr
    code = res.exit_code
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        stderr += "".join(traceback.format_exception(res.exception))
        code = 1
    return fuzz.judge(args, code, res.stdout, stderr)


def assert_ok(args):
    verdict, detail = invoke(args)
    assert verdict == "ok", (verdict, detail, args)


# ------------------------------------------------------------------------------------------------
# The judge itself: it must catch what it is for
# ------------------------------------------------------------------------------------------------

def test_judge_catches_each_kind_of_failure():
    tb = 'Traceback (most recent call last):\n  File "/x/lcprof/units.py", line 3, in f\nValueError: boom\n'
    assert fuzz.judge(["kv"], 1, "", tb) == ("traceback", "lcprof/units.py:3 in f: ValueError: boom")
    assert fuzz.judge(["kv"], None, "", "", timed_out=True)[0] == "hang"
    assert fuzz.judge(["kv"], 2, "", "lcprof: error: a\nlcprof: error: b\n")[0] == "multi-line"
    assert fuzz.judge(["kv"], 2, "", "lcprof: error: bad --n\n")[0] == "ok"
    assert fuzz.judge(["kv"], 2, "", "lcprof: warning: w\nlcprof: error: bad --n\n")[0] == "ok"
    assert fuzz.judge(["kv"], -9, "", "")[0] == "bad-exit"
    neg = json.dumps([{"n": 4096, "kv_bytes": -9223372036854775808}])
    assert fuzz.judge(["kv", "--format", "json"], 0, neg, "")[0] == "nonsense"
    share = json.dumps([{"n": 4096, "kv_bytes": 1, "window_saving": 5.8}])
    assert fuzz.judge(["kv", "--format", "json"], 0, share, "")[0] == "nonsense"
    wrapped = json.dumps([{"n": 2 ** 64}])
    assert fuzz.judge(["kv", "--format", "json"], 0, wrapped, "")[0] == "nonsense"
    inf = json.dumps([{"time_s": "inf"}])
    assert fuzz.judge(["layer", "--format", "json"], 0, inf, "")[0] == "nonsense"
    ring = json.dumps([{"section": "summary", "load_imbalance": 0.5}])
    assert fuzz.judge(["ring", "--format", "json"], 0, ring, "")[0] == "nonsense"
    flops = json.dumps([{"n": 1, "total_flops": 10.0, "executed_eager_flops": 5.0, "executed_tiled_flops": 5.0}])
    assert fuzz.judge(["flops", "--format", "json"], 0, flops, "")[0] == "nonsense"
    assert fuzz.judge(["kv"], 0, "n  kv_bytes\n4096  nan\n", "")[0] == "nonsense"
    assert fuzz.judge(["kv", "--format", "json"], 0, json.dumps([{"n": 4096, "kv_bytes": 1}]), "")[0] == "ok"


# ------------------------------------------------------------------------------------------------
# The fixed hostile list (issue 19's findings and neighbours), commands owned here
# ------------------------------------------------------------------------------------------------

OWNED_FIXED = [c for c in fuzz.fixed_cases() if c[0] in fuzz.OWNED]


@pytest.mark.parametrize("case", OWNED_FIXED, ids=lambda c: " ".join(c)[:80])
def test_fixed_hostile_case(case, files):
    assert_ok(fuzz.expand(case, files, __import__("random").Random(0)))


# ------------------------------------------------------------------------------------------------
# Hypothesis over option values
# ------------------------------------------------------------------------------------------------

def _numbers_as_text():
    return st.one_of(
        st.integers(min_value=-(2 ** 70), max_value=2 ** 70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(fuzz.HOSTILE),
        st.text(alphabet="0123456789kKmMgG.,-+e ", min_size=0, max_size=12),
    )


VALUE = st.one_of(_numbers_as_text(), st.text(max_size=8))

KV_OPTIONS = {"--n": fuzz.TOKEN_GOOD, "--dtype": fuzz.DTYPES[:5], "--batch": ["1", "8"], "--tp": ["1", "8"]}
FLOPS_OPTIONS = {"--n": fuzz.TOKEN_GOOD, "--prefix": ["0", "1k"], "--batch": ["1", "2"], "--layer": ["0", "3"],
                 "--tile": ["64", "128"], "--phase": ["prefill", "decode"]}
LAYER_OPTIONS = {"--n": ["4k", "32k"], "--gpu": fuzz.GPUS, "--dtype": ["fp32", "bf16,fp8", "tf32"],
                 "--kv-dtype": ["fp8", "bf16"], "--batch": ["1", "4"], "--tile": ["128"], "--layer": ["0", "1"]}
RING_OPTIONS = {"--n": ["64k", "1M"], "--gpus": ["2", "8"], "--link": ["nvlink4", "4e11"], "--gpu": fuzz.GPUS,
                "--dtype": ["bf16", "fp8"], "--tile": ["64", "128"], "--layout": ["striped", "both"]}
ROPE_OPTIONS = {"--n": ["4k", "128k"]}


def _case(command, options, model=True):
    """A valid invocation of ``command`` with some options replaced by arbitrary text."""
    @st.composite
    def build(draw):
        args = [command]
        if model:
            args += ["--model", draw(st.sampled_from(fuzz.MODELS))]
        for name, good in options.items():
            choice = draw(st.sampled_from(["good", "good", "bad", "absent"]))
            if choice == "good" or (choice == "absent" and name == "--n" and command != "rope"):
                args += [name, draw(st.sampled_from(good))]
            elif choice == "bad":
                args += [name, draw(VALUE)]
        args += ["--format", draw(st.sampled_from(["json", "csv", "table"]))]
        return args
    return build()


FUZZ_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                         derandomize=True)


@FUZZ_SETTINGS
@given(_case("kv", KV_OPTIONS))
def test_fuzz_kv(args):
    assert_ok(args)


@FUZZ_SETTINGS
@given(_case("flops", FLOPS_OPTIONS))
def test_fuzz_flops(args):
    assert_ok(args)


@FUZZ_SETTINGS
@given(_case("layer", LAYER_OPTIONS))
def test_fuzz_layer(args):
    assert_ok(args)


@FUZZ_SETTINGS
@given(_case("ring", RING_OPTIONS))
def test_fuzz_ring(args):
    assert_ok(args)


@FUZZ_SETTINGS
@given(_case("rope", ROPE_OPTIONS))
def test_fuzz_rope(args):
    assert_ok(args)


@FUZZ_SETTINGS
@given(st.sampled_from(fuzz.MODELS + fuzz.BAD_MODELS[:8]), st.sampled_from(fuzz.MODELS), st.one_of(st.none(), VALUE))
def test_fuzz_show_and_diff(a, b, n):
    assert_ok(["show", a, "--format", "json"])
    assert_ok(["diff", a, b, "--format", "json", *([] if n is None else ["--n", n])])


# ------------------------------------------------------------------------------------------------
# Hypothesis over config.json values: refused in one line or answered with sane numbers
# ------------------------------------------------------------------------------------------------

_COUNTER = itertools.count()
CONFIG_VALUE = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                         st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                              max_size=2))


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(fuzz.CONFIG_FIELDS), CONFIG_VALUE)
def test_fuzz_config_values_never_traceback(tmp_path, field, value):
    base = json.loads((ROOT / "lcprof" / "data" / "models" / "llama3.1-8b.json").read_text())
    base.pop("_lcprof")
    folder = tmp_path / f"cfg{next(_COUNTER)}"  # a new path each example: specs are cached by path
    folder.mkdir()
    path = folder / "config.json"
    path.write_text(json.dumps({**base, field: value}, allow_nan=True))
    for args in (["kv", "--model", str(path), "--n", "4k"], ["layer", "--model", str(path), "--n", "4k"]):
        verdict, detail = invoke([*args, "--format", "json"])
        # Values the config parser accepts are its responsibility (reported in reports/fuzz/); here:
        # never a traceback or a hang, whatever the value.
        assert verdict not in ("traceback", "hang", "multi-line", "bad-exit"), (verdict, detail, field, value)


# ------------------------------------------------------------------------------------------------
# The full script runs, and finds nothing in the commands owned here (a small sample)
# ------------------------------------------------------------------------------------------------

def test_fuzz_script_small_run(tmp_path):
    out = tmp_path / "fuzz.txt"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz_cli.py"), "--cases", "120", "--seed", "5",
                        "--commands", ",".join(fuzz.OWNED), "--quiet", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=str(ROOT))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    text = out.read_text()
    owned = next(ln for ln in text.splitlines() if ln.startswith("owned"))
    cases, ok, *bad = [int(x) for x in owned.split()[1:]]
    assert cases >= 120 and ok == cases and sum(bad) == 0, text  # the fixed list, then random cases up to 120

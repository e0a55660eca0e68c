"""Sweeps: rows as they complete, never rounded; pre-flight skips; OOM, errors and mismatches are
recorded and the sweep goes on; resume completes without duplicates."""

from __future__ import annotations

import dataclasses
import csv

import pytest
import torch

from lcprof.errors import LcprofError
from lcprof.measure import backends as B
from lcprof.measure.sweep import KEY_COLUMNS, RESULT_COLUMNS, read_done, run_sweep
from lcprof.measure.execution import Execution, SweepWorkload

FAST = Execution(budget_s=0.01, min_reps=2, max_reps=5)  # with device="cpu" in every call


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def fake_backends():
    """Fakes that behave like eager on the correctness check (n = 64) and misbehave above it."""
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

    def oom_above_64(q, k, v, mask, scale, **kw):
        if q.shape[1] > 64:
            raise oom_type("CUDA out of memory. Tried to allocate 1.00 TiB (injected)")
        return B.eager_attention(q, k, v, mask, scale)

    def boom_above_64(q, k, v, mask, scale, **kw):
        if q.shape[1] > 64:
            raise RuntimeError("boom (injected)")
        return B.eager_attention(q, k, v, mask, scale)

    def slightly_wrong(q, k, v, mask, scale, **kw):
        return B.eager_attention(q, k, v, mask, scale) * 1.01

    ok = lambda d, t: (True, "fake")  # noqa: E731
    fakes = [B.Backend("fake-oom", oom_above_64, ok, native_masks=B.MASK_KINDS),
             B.Backend("fake-boom", boom_above_64, ok, native_masks=B.MASK_KINDS),
             B.Backend("fake-wrong", slightly_wrong, ok, native_masks=B.MASK_KINDS)]
    for f in fakes:
        B.register(f)
    yield [f.name for f in fakes]
    for f in fakes:
        B.unregister(f.name)


def test_rows_are_written_with_the_schema_and_never_rounded(spec_of, tmp_path):
    out = tmp_path / "r.csv"
    df = run_sweep(SweepWorkload(spec_of("gqa"), "32,64", "eager,sdpa", "fp32"), FAST, out=out, device="cpu")
    rows = read_rows(out)
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for r in rows:
        samples = sorted(float(s) for s in r["samples_s"].split())
        assert len(samples) == int(r["repeats"])
        assert float(r["time_p10_s"]) <= float(r["time_s"]) <= float(r["time_p90_s"])
        assert float(r["time_s"]) == pytest.approx(float(torch.tensor(samples, dtype=torch.float64).median())
                                                  if len(samples) % 2 else sum(samples[len(samples) // 2 - 1:
                                                                                       len(samples) // 2 + 1]) / 2,
                                                  rel=0, abs=0)
        assert float(r["achieved_flops_per_s"]) == float(r["predicted_flops"]) / float(r["time_s"])
        assert r["torch_version"] == torch.__version__ and r["lcprof_version"] and r["timestamp"]
    assert len(df) == 4 and set(df["backend"]) == {"eager", "sdpa"}
    # sdpa runs the causal mask natively (tiled FLOPs); eager executes the full square
    by = {r["backend"]: r for r in rows if r["n"] == "64"}
    assert by["sdpa"]["executed_family"] == "tiled" and by["eager"]["executed_family"] == "eager"
    assert float(by["eager"]["predicted_flops"]) >= float(by["sdpa"]["predicted_flops"])


def test_mem_cap_skips_points_predicted_not_to_fit(spec_of, tmp_path):
    """eager's scores grow as n^2: under a cap it is skipped at the larger n while sdpa still runs."""
    out = tmp_path / "r.csv"
    run_sweep(SweepWorkload(spec_of("gqa"), "64,1024", "eager,sdpa", "fp32"), dataclasses.replace(FAST, mem_cap_bytes=4_000_000), out=out, device="cpu")
    rows = {(r["backend"], r["n"]): r for r in read_rows(out)}
    assert rows[("eager", "64")]["status"] == "ok"
    assert rows[("eager", "1024")]["status"] == "skipped"
    assert "predicted memory" in rows[("eager", "1024")]["reason"]
    assert int(rows[("eager", "1024")]["predicted_mem_bytes"]) > 4_000_000
    assert rows[("sdpa", "1024")]["status"] == "ok"


def test_oom_error_and_mismatch_are_recorded_and_the_sweep_goes_on(spec_of, tmp_path, fake_backends):
    out = tmp_path / "r.csv"
    df = run_sweep(SweepWorkload(spec_of("mha"), "64,128", ["fake-oom", "fake-boom", "fake-wrong", "sdpa"], "fp32"), FAST, out=out, device="cpu")
    rows = {(r["backend"], r["n"]): r for r in read_rows(out)}
    assert rows[("fake-oom", "64")]["status"] == "ok"
    assert rows[("fake-oom", "128")]["status"] == "oom"
    assert "out of memory" in rows[("fake-oom", "128")]["reason"]
    assert rows[("fake-boom", "128")]["status"] == "error"
    assert "boom" in rows[("fake-boom", "128")]["reason"]
    for n in ("64", "128"):
        wrong = rows[("fake-wrong", n)]
        assert wrong["status"] == "error" and "mismatch" in wrong["reason"]
        assert wrong["time_s"] == ""  # never a time for a wrong result
        assert float(wrong["check_layer_rel_err"]) > 1e-3
    assert rows[("sdpa", "128")]["status"] == "ok"  # the sweep went on
    assert len(df) == 8


def test_resume_skips_done_rows_reruns_errors_and_never_duplicates(spec_of, tmp_path, fake_backends):
    out = tmp_path / "r.csv"
    spec = spec_of("mha")
    run_sweep(SweepWorkload(spec, "32", "eager,fake-wrong", "fp32"), FAST, out=out, device="cpu")
    first = read_rows(out)
    assert {r["backend"]: r["status"] for r in first} == {"eager": "ok", "fake-wrong": "error"}
    with pytest.raises(LcprofError, match="exists; pass --resume"):
        run_sweep(SweepWorkload(spec, "32,64", "eager", "fp32"), FAST, out=out, device="cpu")
    df = run_sweep(SweepWorkload(spec, "32,64", "eager,fake-wrong", "fp32"), FAST, out=out, resume=True, device="cpu")
    rows = read_rows(out)
    keys = [tuple(r[c] for c in KEY_COLUMNS) for r in rows]
    assert len(keys) == len(set(keys)) == 4
    done_first = [r for r in first if r["status"] == "ok"]
    assert rows[0] == done_first[0]  # the done row is kept as it was
    assert sum(r["status"] == "error" for r in rows) == 2  # both fake-wrong rows (re-run), once each
    assert len(df) == 4


def test_resume_drops_a_torn_last_line_and_refuses_foreign_files(spec_of, tmp_path):
    out = tmp_path / "r.csv"
    spec = spec_of("mha")
    run_sweep(SweepWorkload(spec, "32", "eager", "fp32"), FAST, out=out, device="cpu")
    text = out.read_text()
    out.write_text(text + text.splitlines()[1][:25])  # a kill mid-line
    assert len(read_done(out)) == 1
    assert out.read_text() == text
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("model,n,time_s\nx,1,2\n")
    with pytest.raises(LcprofError, match="cannot resume"):
        run_sweep(SweepWorkload(spec, "32", "eager", "fp32"), FAST, out=foreign, resume=True, device="cpu")


def test_decode_phase_rows(spec_of, tmp_path):
    out = tmp_path / "d.csv"
    df = run_sweep(SweepWorkload(spec_of("sliding"), "16,64", "eager,sdpa,striped-ring", "fp32", phase="decode"), FAST, out=out, device="cpu")
    rows = {(r["backend"], r["n"]): r for r in read_rows(out)}
    assert {r["phase"] for r in rows.values()} == {"decode"}
    assert rows[("eager", "64")]["status"] == "ok"
    assert rows[("sdpa", "16")]["effective_mask"] == "global" or rows[("sdpa", "16")]["effective_mask"] == "full"
    assert rows[("sdpa", "64")]["effective_mask"] == "sliding"  # W=24 < 65 keys: the window bites
    assert rows[("sdpa", "64")]["mask_mode"] == "explicit"
    assert rows[("striped-ring", "64")]["status"] == "skipped"
    assert len(df) == 6


def test_bad_input_raises_before_anything_runs(spec_of, tmp_path):
    spec = spec_of("mha")
    out = tmp_path / "never.csv"
    for kwargs, match in [
        (dict(backends="eager,nope"), "unknown backend 'nope'"),
        (dict(dtypes="fp8"), "unknown dtype"),
        (dict(device="tpu"), "unknown device"),
        (dict(dtypes="tf32"), "tf32 needs a CUDA device"),
        (dict(ns="abc"), "malformed token"),
        (dict(layer=9), "out of range"),
    ]:
        device = kwargs.pop("device", "cpu")
        work = dict(model=spec, ns="32", backends="eager", dtypes="fp32") | kwargs
        with pytest.raises(LcprofError, match=match):
            run_sweep(SweepWorkload(**work), FAST, device=device, out=out)
    assert not out.exists()

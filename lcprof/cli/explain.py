"""CLI commands that explain measurements: fit, calibrate, compare, report.

Registered by ``lcprof.cli`` through ``COMMANDS``. Thin: each parses, calls one library function
(``lcprof.explain.fit``, ``lcprof.measure.calibrate``, ``lcprof.explain.compare``, ``lcprof.explain.report``) and renders. Only
``calibrate`` imports torch, inside the command.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from lcprof.cli.options import FORMAT_OPTION
from lcprof.errors import LcprofError

RESULTS_ARG = click.argument("files", nargs=-1, required=True, metavar="FILE...")
GPU_OPTION = click.option("--gpu", default=None, help="Predict on a GPU from the database (see data/gpus.json).")
CALIBRATION_OPTION = click.option("--calibration", default=None, metavar="PROFILE.json",
                                  help="Predict on a profile written by `lcprof calibrate`.")
RANGE_OPTIONS = [
    click.option("--min-n", default=None, help="Smallest n used by the fits (e.g. 8k)."),
    click.option("--max-n", default=None, help="Largest n used by the fits."),
    click.option("--target", default="131072", show_default=True,
                 help="Length to extrapolate to (e.g. 128k, 1M); 'none' for no extrapolation."),
    click.option("--interval", type=click.Choice(["delta", "bootstrap"]), default="delta", show_default=True,
                 help="How the extrapolation's 95% interval is computed."),
]


def _with(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


def _emit(obj, fmt, title=None):
    from lcprof.render import render

    click.echo(render(obj, fmt, title))


def _target(text):
    return None if text is None or str(text).strip().lower() in ("none", "", "0") else text


def _note_excluded(what, count, by_status):
    if count:
        detail = ", ".join(f"{k}: {v}" for k, v in by_status.items())
        click.echo(f"lcprof: {what}: left out {count} row(s) whose status is not ok ({detail})", err=True)


def _attention_shape(text: str) -> tuple[int, int]:
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(p.isdigit() and 0 < int(p) <= 1 << 16 for p in parts):
        raise click.BadParameter(f"{text!r}: give two positive whole numbers, HEADS,HEAD_DIM (e.g. 32,128)",
                                 param_hint="'--attention-shape'")
    return int(parts[0]), int(parts[1])


@click.command()
@RESULTS_ARG
@_with(RANGE_OPTIONS)
@click.option("--points", is_flag=True, help="JSON/CSV: one record per (group, n) instead of one per group.")
@click.option("--calibration", default=None, metavar="PROFILE.json",
              help="A profile from `lcprof calibrate`: each group's attention rate is held at the profile's "
                   "rate for its backend and dtype (measured on the same device kind) instead of fitted.")
@FORMAT_OPTION
def fit(files, min_n, max_n, target, interval, points, calibration, fmt):
    """Scaling fits: power-law exponent with a 95% interval, local exponents, t = c0 + c1 n + c2 n², extrapolation."""
    from lcprof.explain.fit import fit_results, fit_table

    rates = None
    if calibration is not None:
        from lcprof.rates import resolve_rates

        if str(calibration).lower().endswith((".csv", ".jsonl", ".ndjson")) or str(calibration).lower() == "datasheet":
            raise LcprofError(f"fit --calibration takes a profile from `lcprof calibrate`, not {calibration!r} "
                              "(rates fitted from a sweep or a datasheet would not be a measurement to hold)")
        rates = resolve_rates(None, calibration).hardware
    res = fit_results(list(files), min_n=min_n, max_n=max_n, target=_target(target), interval=interval, rates=rates)
    _note_excluded("fit", res.excluded_rows, res.excluded_by_status)
    if fmt != "table":
        _emit(res.points if points else res.summary, fmt)
        return
    _emit(fit_table(res), "table", "Fits per group (exponent: OLS on log-log, 95% t-interval; "
                                   f"extrapolation interval: {interval})")
    click.echo()
    p = res.points
    cols = ["model", "backend", "dtype", "device", "n", "time_s", "local_exponent", "fitted_time_s", "residual_rel",
            "quadratic_share", "in_fit"]
    _emit(p[cols], "table", "Per length: median time, local exponent, fit, relative residual, quadratic share")


@click.command()
@click.option("--out", "out", required=True, metavar="PROFILE.json", help="Where to write the profile.")
@click.option("--device", default=None, help="cuda or cpu (default: cuda if available).")
@click.option("--quick", is_flag=True, help="Smaller problems, 2 rounds, shorter budgets (a smoke test; "
              "the rates are less trustworthy).")
@click.option("--dtype", "dtypes", default=None, help="Comma-separated dtypes (default: fp32,tf32,bf16,fp16 on "
                                                      "CUDA; fp32,bf16 on the CPU).")
@click.option("--attention-n", default=None,
              help="Lengths to measure each attention backend at (e.g. 16k,64k,128k; default 16k on CUDA, 4k on "
                   "the CPU, a quarter with --quick); predictions interpolate between them.")
@click.option("--attention-shape", default="32,128", show_default=True, metavar="HEADS,HEAD_DIM",
              help="Query heads and head dim of the attention inputs (e.g. a model's own: phi3-128k is 32,96).")
@click.option("--keep-best", is_flag=True,
              help="If --out holds a profile of this device, keep each rate's best of it and this measurement "
                   "(a shared machine only slows a measurement down; the profile lists every calibration merged).")
@FORMAT_OPTION
def calibrate(out, device, quick, dtypes, attention_n, attention_shape, keep_best, fmt):
    """Measure this device's best sustained matmul FLOP/s per dtype, copy bandwidth and attention
    rates (CUDA kernels; eager and sdpa on the CPU) over several rounds; save a profile for --calibration."""
    from lcprof.measure.calibrate import calibrate as run_calibration  # imports torch
    from lcprof.measure.calibrate import merge_best, profile_table, read_profile, save_profile
    from lcprof.units import dtype_name

    dt = None
    if dtypes:
        dt = [dtype_name(d, allowed=("fp32", "tf32", "bf16", "fp16")) for d in dtypes.split(",") if d.strip()]
    lengths = None
    if attention_n:
        from lcprof.units import parse_token_list

        lengths = parse_token_list(attention_n)
    shape = _attention_shape(attention_shape)
    old = read_profile(out) if keep_best and Path(out).is_file() else None
    profile = run_calibration(device, quick=quick, dtypes=dt, attention_n=lengths, attention_shape=shape)
    if old is not None:
        profile = merge_best(old, profile)
    path = save_profile(profile, out)
    _emit(profile_table(profile), fmt, f"{profile['name']}: measured ceilings" if fmt == "table" else None)
    if fmt == "table":
        click.echo(f"wrote {path}")
    else:
        click.echo(f"lcprof: calibrate: wrote {path}", err=True)


@click.command()
@RESULTS_ARG
@GPU_OPTION
@CALIBRATION_OPTION
@click.option("--exponents", is_flag=True, help="JSON/CSV: the local-exponent table instead of the rows.")
@FORMAT_OPTION
def compare(files, gpu, calibration, exponents, fmt):
    """Per measured row: roofline prediction, ratio, achieved TFLOP/s and % of peak; local exponents."""
    from lcprof.explain.compare import compare_results, compare_table
    from lcprof.cli.model import compare_model_files, is_model_file

    if is_model_file(files):  # whole-model rows (lcprof model-sweep): TTFT/TPOT vs the planner
        return compare_model_files(files, gpu, calibration, fmt)

    res = compare_results(list(files), gpu=gpu, calibration=calibration)
    _note_excluded("compare", res.excluded_rows, res.excluded_by_status)
    if fmt != "table":
        _emit(res.exponents if exponents else res.rows, fmt)
        return
    hw = res.hardware
    _emit(compare_table(res), "table", f"Measured vs predicted per layer on {hw.name} "
                                       f"({'calibration' if hw.kind == 'calibration' else 'datasheet'})")
    if len(res.exponents):
        click.echo()
        keys = ["model", "backend", "dtype", "device"]
        if (res.exponents["moe_timing"] == "routed").any():
            keys.append("moe_timing")
        cols = keys + ["n_lo", "n_hi", "measured_local_exponent", "predicted_local_exponent",
                       "flops_local_exponent", "difference"]
        _emit(res.exponents[cols], "table", "Local exponents, measured vs predicted")
    if res.over_peak_rows:
        click.echo(f"lcprof: compare: {res.over_peak_rows} row(s) OVER PEAK (see the over_peak column)", err=True)


@click.command()
@RESULTS_ARG
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Folder for report.md, report.html and plots.")
@GPU_OPTION
@CALIBRATION_OPTION
@_with(RANGE_OPTIONS)
@click.option("--plan", default=None, metavar="PLAN.md", help="A planner table to include (default: DIR/plan.md if present).")
@click.option("--title", default=None, help="Report title.")
@FORMAT_OPTION
def report(files, out_dir, gpu, calibration, min_n, max_n, target, interval, plan, title, fmt):
    """Markdown + HTML report with plots: time vs n with fits, local exponents, ratios, KV memory, tables."""
    from lcprof.explain.report import build_report

    ctx = click.get_current_context()
    argv = ["lcprof", ctx.info_name, *files, "--out", out_dir]
    for name, val in (("--gpu", gpu), ("--calibration", calibration), ("--min-n", min_n), ("--max-n", max_n),
                      ("--plan", plan), ("--title", title)):
        if val is not None:
            argv += [name, str(val)]
    if target != "131072":
        argv += ["--target", str(target)]
    if interval != "delta":
        argv += ["--interval", interval]
    rep = build_report(list(files), out_dir, gpu=gpu, calibration=calibration, target=_target(target), min_n=min_n,
                       max_n=max_n, interval=interval, plan=plan, command_line=shlex.join(argv), title=title)
    _note_excluded("report", rep.fit.excluded_rows, rep.fit.excluded_by_status)
    if fmt == "table":
        _emit(rep.summary(), "table", "Summary")
        click.echo(f"wrote {rep.markdown_path} and {rep.html_path} ({len(rep.images)} plots)")
    else:
        _emit(rep.summary(), fmt)
        click.echo(f"lcprof: report: wrote {rep.markdown_path} and {rep.html_path}", err=True)


COMMANDS = [fit, calibrate, compare, report]

__all__ = ["COMMANDS"]
